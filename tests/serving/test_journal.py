"""A replica killed with SIGKILL loses none of the rows it answered: the journal (real processes, no Ray)."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import textwrap
from collections import Counter
from pathlib import Path

from raysys.serving.journal import Journal, orphaned, read_segment
from raysys.storage import Storage
from tests.serving.test_prediction_log import answer_requests, logged, new_log, spilled_files

REPO = Path(__file__).resolve().parents[2]


def killed_replica(tmp_path: Path, ids: list[str], flush_rows: int) -> int:
    """A process that answers ``ids`` into a prediction log, flushing every ``flush_rows``, then is SIGKILLed."""
    script = textwrap.dedent(f"""
        import asyncio, os, signal
        from raysys.storage import Storage
        from tests.serving.test_prediction_log import answer_requests, new_log
        from pathlib import Path

        async def serve():
            log = new_log(Storage.open({str(tmp_path)!r}), Path({str(tmp_path)!r}),
                          flush_rows={flush_rows}, flush_s=3600)
            await answer_requests(log, {ids!r}, pause_s=0.02)
            os.kill(os.getpid(), signal.SIGKILL)  # no close, no last flush

        asyncio.run(serve())
    """)
    return subprocess.run([sys.executable, "-c", script], cwd=REPO, check=False, timeout=120).returncode


def deliver_as_a_new_replica(storage: Storage, tmp_path: Path) -> None:
    async def starts_and_gets_no_request():
        fresh = new_log(storage, tmp_path)
        fresh.resume()  # what the replica's health check does
        for _ in range(200):
            if not orphaned(fresh.journal.root):
                break
            await asyncio.sleep(0.05)
        await fresh.close()

    asyncio.run(starts_and_gets_no_request())


def test_rows_a_killed_replica_answered_are_delivered_by_the_next_one_exactly_once(tmp_path):
    storage = Storage.open(str(tmp_path))
    ids = [f"r{i}" for i in range(25)]
    assert killed_replica(tmp_path, ids, flush_rows=10) == -9
    before = logged(storage)
    assert 0 < sum(before.values()) < len(ids)  # full batches landed; the buffer died with the process

    deliver_as_a_new_replica(storage, tmp_path)
    assert logged(storage) == Counter({request_id: 1 for request_id in ids})
    assert not list((tmp_path / "spill").rglob("*.journal")) and spilled_files(tmp_path) == []


def test_a_record_cut_short_by_the_kill_is_skipped_and_a_living_log_is_left_alone(tmp_path):
    storage = Storage.open(str(tmp_path))

    async def buffer_three_and_keep_living():
        alive = new_log(storage, tmp_path, flush_rows=100, flush_s=3600)
        await answer_requests(alive, ["a1", "a2", "a3"], pause_s=0.0)
        return alive

    alive = asyncio.run(buffer_three_and_keep_living())
    assert orphaned(alive.journal.root) == []  # its process (this one) runs: not replayed
    (segment,) = alive.journal.root.glob("*.journal")
    with open(segment, "ab") as stream:
        stream.write((500).to_bytes(8, "little") + b"cut")  # a write the kill interrupted
    assert len(read_segment(segment)[0]) == 3

    dead = Journal(alive.journal.root, "deadbeef0000")
    (alive.journal.root / "deadbeef0000.owner").write_text('{"pid": 999999999, "host": "x"}')
    assert orphaned(dead.root) == []  # a marker from another host (or unreadable) is never taken
