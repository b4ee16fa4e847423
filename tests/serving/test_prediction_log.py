"""The prediction log's rows, files and durability (pure pandas, pyarrow filesystems, no Ray).

Storage faults come from a real pyarrow filesystem (``PyFileSystem`` over the local disk) whose
writes fail, land and then fail, or are slow, for as long as a test says.
"""

from __future__ import annotations

import asyncio
import re
import time
from collections import Counter
from datetime import datetime, timezone

import numpy as np
import pyarrow as pa
import pyarrow.fs as pafs
import pytest

from raysys.serving import payloads
from raysys.serving.prediction_log import (
    PredictionLog,
    prediction_frame,
    read_prediction_log,
    retried,
)
from raysys.storage import Storage

SIGNATURE = {"tenure": "float", "plan": "string"}
AT = datetime(2026, 11, 28, 12, 0, tzinfo=timezone.utc)


def entry(records: list[dict], version: int, role: str = "answer", request_id: str = "r1"):
    rows, _ = payloads.parse_records({"records": records}, SIGNATURE, 100)
    answer = {"predictions": [f"p{i}" for i in range(rows.count)],
              "probabilities": [[0.25, 0.75]] * rows.count, "classes": ["a", "b"]}
    facts = {"request_id": request_id, "version": version, "role": role, "latency_ms": 1.5, "key": None, "at": AT}
    return rows, answer, facts


def test_one_log_row_per_record_with_its_inputs_and_answer():
    frame = prediction_frame([entry([{"tenure": 1.0, "plan": "pro"}, {"tenure": None, "plan": "free"}], 3),
                              entry([{"tenure": 7.0, "plan": "pro"}], 4, role="shadow", request_id="r2")])
    assert frame["plan"].tolist() == ["pro", "free", "pro"]
    assert frame["_request_id"].tolist() == ["r1", "r1", "r2"] and frame["_row"].tolist() == [0, 1, 0]
    assert frame["_model_version"].tolist() == [3, 3, 4] and frame["_role"].tolist() == ["answer", "answer", "shadow"]
    assert frame["_prediction"].tolist() == ["p0", "p1", "p0"] and frame["_probabilities"][2] == [0.25, 0.75]
    assert (frame["_time"] == AT).all() and frame["tenure"].isna().tolist() == [False, True, False]


def test_the_input_rules_a_record_broke_are_a_string_column():
    flagged = entry([{"tenure": 1.0, "plan": "pro"}, {"tenure": 900.0, "plan": "pro"}], 1)
    # what the input checks attach to parsed rows: one string per record, "" when no rule broke
    object.__setattr__(flagged[0], "flags", np.array(["", "tenure:max"], dtype=object))
    frame = prediction_frame([flagged, entry([{"tenure": 2.0, "plan": "free"}], 1, request_id="r2")])
    assert frame["_input_flags"].tolist() == ["", "tenure:max", ""]


def test_retried_pauses_longer_each_time_and_returns_the_last_error():
    pauses, calls = [], []

    def fails_twice() -> None:
        calls.append(1)
        if len(calls) <= 2:
            raise OSError(f"attempt {len(calls)}")

    assert retried(fails_twice, attempts=3, backoff_s=0.5, sleep=pauses.append) is None
    assert len(calls) == 3 and pauses == [0.5, 1.0]
    calls.clear()
    error = retried(fails_twice, attempts=2, backoff_s=0.5, sleep=pauses.append)
    assert isinstance(error, OSError) and str(error) == "attempt 2"


class _LandsThenFails:
    """A written stream whose close fails after the data is there (an upload reset on its answer)."""

    def __init__(self, stream):
        self.stream, self.closed = stream, False

    def write(self, data):
        return self.stream.write(data)

    def writable(self):
        return True

    def readable(self):
        return False

    def seekable(self):
        return False

    def flush(self):
        pass

    def tell(self):
        return self.stream.tell()

    def close(self):
        if not self.closed:
            self.closed = True
            self.stream.close()
            raise OSError("connection reset after the upload")


class FlakyFileSystem(pafs.FileSystemHandler):
    """The local filesystem, but its next ``fail_writes`` writes fail (``landed``: after writing)."""

    def __init__(self, fail_writes: int = 0, landed: bool = False, slow_s: float = 0.0):
        self.local = pafs.LocalFileSystem()
        self.fail_writes, self.landed, self.slow_s = fail_writes, landed, slow_s

    def open_output_stream(self, path, metadata):
        time.sleep(self.slow_s)
        if self.fail_writes > 0:
            self.fail_writes -= 1
            if self.landed:
                return pa.PythonFile(_LandsThenFails(self.local.open_output_stream(path)), mode="w")
            raise OSError("storage unavailable")
        return self.local.open_output_stream(path)

    def get_type_name(self):
        return "flaky"

    def normalize_path(self, path):
        return path

    def get_file_info(self, paths):
        return self.local.get_file_info(paths)

    def get_file_info_selector(self, selector):
        return self.local.get_file_info(selector)

    def create_dir(self, path, recursive):
        self.local.create_dir(path, recursive=recursive)

    def delete_dir(self, path):
        self.local.delete_dir(path)

    def delete_dir_contents(self, path, missing_dir_ok=False):
        self.local.delete_dir_contents(path, missing_dir_ok=missing_dir_ok)

    def delete_root_dir_contents(self):
        raise OSError("not in a test")

    def delete_file(self, path):
        self.local.delete_file(path)

    def move(self, src, dest):
        self.local.move(src, dest)

    def copy_file(self, src, dest):
        self.local.copy_file(src, dest)

    def open_input_stream(self, path):
        return self.local.open_input_stream(path)

    def open_input_file(self, path):
        return self.local.open_input_file(path)

    def open_append_stream(self, path, metadata):
        return self.local.open_append_stream(path)


def flaky_storage(tmp_path, **faults) -> tuple[Storage, FlakyFileSystem]:
    handler = FlakyFileSystem(**faults)
    root = tmp_path / "store"
    root.mkdir(exist_ok=True)
    return Storage(uri=f"flaky://{root}", fs=pafs.PyFileSystem(handler), base=str(root)), handler


def new_log(storage: Storage, tmp_path, **options) -> PredictionLog:
    settings = {"flush_rows": 3, "flush_s": 0.2, "spill_dir": str(tmp_path / "spill"), "backoff_s": 0.01,
                **options}
    return PredictionLog(storage, "churn", **settings)


async def answer_requests(log: PredictionLog, ids: list[str], pause_s: float = 0.01) -> None:
    for request_id in ids:
        rows, answer, facts = entry([{"tenure": 1.0, "plan": "pro"}], 1, request_id=request_id)
        log.add(rows, answer, **facts)
        await asyncio.sleep(pause_s)


def logged(storage: Storage) -> Counter:
    """How many log rows each request id has (one record per request here)."""
    frame = read_prediction_log(storage, "churn")
    return Counter(frame["_request_id"]) if not frame.empty else Counter()


def spilled_files(tmp_path) -> list:
    return sorted((tmp_path / "spill").rglob("part-*.parquet"))


def test_flush_writes_parquet_that_reads_back(tmp_path):
    storage = Storage.open(str(tmp_path))
    log = PredictionLog(storage, "churn", flush_rows=2, flush_s=60, spill_dir=str(tmp_path / "spill"))

    async def serve_two_requests():
        rows, answer, facts = entry([{"tenure": 1.0, "plan": "pro"}], 1)
        log.add(rows, answer, **facts)
        log.add(rows, answer, **{**facts, "request_id": "r2"})
        for _ in range(200):  # the buffer is full: the flusher writes it without waiting flush_s
            if log.written == 2:
                break
            await asyncio.sleep(0.05)

    asyncio.run(serve_two_requests())
    read = read_prediction_log(storage, "churn")
    assert read["_request_id"].tolist() == ["r1", "r2"] and log.written == 2
    day = tmp_path / "logs" / "predictions" / "churn" / "date=2026-11-28"
    assert [p.name for p in day.parent.iterdir()] == ["date=2026-11-28"]
    assert all(re.fullmatch(rf"part-\d+-{log.log_id}-\d{{6}}\.parquet", p.name) for p in day.iterdir())


@pytest.mark.parametrize("landed", [False, True], ids=["writes-fail", "writes-land-then-fail"])
def test_storage_that_fails_for_a_while_loses_no_request_and_logs_none_twice(tmp_path, landed):
    storage, _ = flaky_storage(tmp_path, fail_writes=7, landed=landed)
    log = new_log(storage, tmp_path, attempts=2)
    ids = [f"r{i}" for i in range(40)]

    async def serve():
        await answer_requests(log, ids)
        await log.close()

    asyncio.run(serve())
    assert logged(storage) == Counter({request_id: 1 for request_id in ids})
    stats = log.stats()
    assert stats["spilled_rows"] > 0 and stats["lost_rows"] == 0  # some batches went by the local disk
    assert spilled_files(tmp_path) == []  # … and were delivered from there


def test_shutdown_waits_for_the_write_in_flight(tmp_path):
    storage, _ = flaky_storage(tmp_path, slow_s=0.5)
    log = new_log(storage, tmp_path, flush_rows=1)

    async def serve():
        await answer_requests(log, ["r1"], pause_s=0.2)  # its write is on its way to storage now
        await log.close()
        return logged(storage)  # as the replica process exits

    assert asyncio.run(serve()) == Counter({"r1": 1})


def test_a_full_buffer_spills_to_local_disk_and_memory_stays_bounded(tmp_path):
    storage, handler = flaky_storage(tmp_path, fail_writes=10**9)  # storage down
    log = new_log(storage, tmp_path, flush_rows=1000, flush_s=60, max_pending_rows=5)
    ids = [f"r{i}" for i in range(12)]

    async def serve():
        buffered = []
        for request_id in ids:
            await answer_requests(log, [request_id], pause_s=0.0)
            buffered.append(log.pending_rows)
        for _ in range(200):
            if len(spilled_files(tmp_path)) == 2:
                break
            await asyncio.sleep(0.05)
        assert max(buffered) < 5 and len(spilled_files(tmp_path)) == 2
        handler.fail_writes = 0  # storage is back
        await log.close()

    asyncio.run(serve())
    assert logged(storage) == Counter({request_id: 1 for request_id in ids})
    assert log.stats() == {"written_rows": 12, "spilled_rows": 10, "lost_rows": 0}
    assert spilled_files(tmp_path) == []


def test_a_new_replica_delivers_what_a_dead_one_spilled_on_its_node(tmp_path):
    storage, handler = flaky_storage(tmp_path, fail_writes=10**9)
    ids = ["r1", "r2", "r3"]

    async def dies_with_storage_down():
        dead = new_log(storage, tmp_path, flush_rows=1, flush_s=0.05, attempts=1)
        await answer_requests(dead, ids, pause_s=0.0)
        for _ in range(200):
            if dead.stats()["spilled_rows"] == 3:
                return
            await asyncio.sleep(0.05)

    asyncio.run(dies_with_storage_down())  # its loop ends: no close, no further flush
    assert logged(storage) == Counter() and len(spilled_files(tmp_path)) >= 1
    handler.fail_writes = 0

    async def starts_and_gets_no_request():
        fresh = new_log(storage, tmp_path)
        fresh.resume()  # what the replica's health check does
        for _ in range(200):
            if not spilled_files(tmp_path):
                break
            await asyncio.sleep(0.05)

    asyncio.run(starts_and_gets_no_request())
    assert logged(storage) == Counter({request_id: 1 for request_id in ids})
    assert spilled_files(tmp_path) == []
