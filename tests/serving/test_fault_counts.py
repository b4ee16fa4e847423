"""Serving fault counts, their reports and the shadow bound (pure asyncio and a local storage root, no Ray)."""

from __future__ import annotations

import asyncio
import logging

from raysys.serving.faults import (
    FaultCounters,
    FaultReporter,
    RateLimitedLog,
    describe,
    fault_rows,
    read_fault_counts,
    total,
)
from raysys.serving.server import BoundedTasks
from raysys.storage import Storage


def test_a_failure_is_logged_with_its_stack_at_most_once_a_minute_per_key(caplog):
    now = [0.0]
    log = RateLimitedLog(logging.getLogger("raysys.test"), interval_s=60, clock=lambda: now[0])
    error = ValueError("bad weights")
    with caplog.at_level(logging.WARNING, logger="raysys.test"):
        assert log.failure(("v2", "challenger"), "v2 failed", error)
        assert not log.failure(("v2", "challenger"), "v2 failed", error)
        assert not log.failure(("v2", "challenger"), "v2 failed", error)
        assert log.failure(("v3", "shadow"), "v3 failed", error)  # another version: its own budget
        now[0] = 61.0
        assert log.failure(("v2", "challenger"), "v2 failed", error)
    messages = [r.getMessage() for r in caplog.records]
    assert messages == ["v2 failed", "v3 failed", "v2 failed (2 more since the last report)"]
    assert all(r.exc_info and r.exc_info[1] is error for r in caplog.records)


def test_an_error_is_described_in_one_short_line():
    assert describe(ValueError("x" * 5000 + "\nsecret")).startswith("ValueError: xxx")
    assert len(describe(ValueError("x" * 5000))) < 250 and "\n" not in describe(ValueError("a\nb"))
    assert describe(KeyError()) == "KeyError"


def test_replica_reports_sum_per_version_and_role_with_the_latest_error():
    first, second = FaultCounters("replica-a"), FaultCounters("replica-b")
    for _ in range(3):
        first.count(2, "challenger", "requests")
    first.count(2, "challenger", "failures", ValueError("old"))
    second.count(2, "challenger", "requests")
    second.count(2, "challenger", "failures", ValueError("new"))
    second.count(1, "champion", "requests")
    second.count(3, "shadow", "dropped")
    a, b = first.snapshot(), second.snapshot()
    assert not first.changed and a["replica"] == "replica-a" and a["started_at"]
    summed = total([{**b, "prediction_log": {"written_rows": 5}}, {**a, "prediction_log": {"written_rows": 2}}])
    assert summed["replicas"] == 2 and summed["updated_at"] == b["updated_at"]
    assert summed["versions"] == {"1": {"champion": {"requests": 1}},
                                  "2": {"challenger": {"requests": 4, "failures": 2, "last_error": "ValueError: new"}},
                                  "3": {"shadow": {"dropped": 1}}}
    assert summed["prediction_log"] == {"written_rows": 7}
    assert fault_rows(summed) == [["v1", "champion", 1, 0, 0, ""],
                                  ["v2", "challenger", 4, 2, 0, "ValueError: new"],
                                  ["v3", "shadow", 0, 0, 1, ""]]


def test_the_reporter_writes_the_counts_off_the_request_path_and_once_more_on_close(tmp_path):
    storage = Storage.open(str(tmp_path))
    written = {"written_rows": 0}
    reporter = FaultReporter(storage, "app", "replica-a", interval_s=0.05, extra=lambda: dict(written))

    async def serve():
        reporter.count(1, "champion", "requests")
        reporter.failed(2, "challenger", RuntimeError("boom"))
        for _ in range(100):
            if storage.exists("serving", "app", "replicas", "replica-a.json"):
                break
            await asyncio.sleep(0.05)
        first = read_fault_counts(storage, "app")
        reporter.count(2, "shadow", "dropped")
        written["written_rows"] = 7
        await reporter.close()
        return first

    first = asyncio.run(serve())
    assert first["versions"]["2"]["challenger"] == {"failures": 1, "last_error": "RuntimeError: boom"}
    last = read_fault_counts(storage, "app")
    assert last["replicas"] == 1 and last["versions"]["2"]["shadow"] == {"dropped": 1}
    assert last["prediction_log"] == {"written_rows": 7}


def test_an_unreadable_report_is_skipped_not_fatal(tmp_path):
    storage = Storage.open(str(tmp_path))
    counters = FaultCounters("good")
    counters.count(1, "champion", "requests")
    storage.write_json(counters.snapshot(), "serving", "app", "replicas", "good.json")
    storage.write_bytes(b"{half a rep", "serving", "app", "replicas", "torn.json")
    assert read_fault_counts(storage, "app")["versions"] == {"1": {"champion": {"requests": 1}}}
    assert read_fault_counts(storage, "none") == {"replicas": 0, "updated_at": None, "versions": {},
                                                  "prediction_log": {}}


def test_shadows_above_the_bound_are_refused_and_the_running_ones_are_kept():
    async def run():
        release = asyncio.Event()
        finished = []

        async def shadow(n: int) -> None:
            await release.wait()
            finished.append(n)

        tasks = BoundedTasks(limit=2)
        started = [tasks.start(lambda n=n: shadow(n)) for n in range(4)]
        assert started == [True, True, False, False] and len(tasks.running) == 2
        release.set()
        await tasks.wait(timeout_s=5)
        assert sorted(finished) == [0, 1] and not tasks.running
        assert tasks.start(lambda: shadow(9))  # room again once they are done
        await tasks.wait(timeout_s=5)
        return finished

    assert asyncio.run(run()) == [0, 1, 9]


def test_wait_returns_after_its_timeout_when_a_shadow_hangs():
    async def run():
        tasks = BoundedTasks(limit=3)
        tasks.start(lambda: asyncio.sleep(3600))
        await tasks.wait(timeout_s=0.05)
        return len(tasks.running)

    assert asyncio.run(run()) == 1
