"""Incremental reads of the prediction log (pure: real log files on a local storage root, no Ray).

Files are made as a replica's prediction log makes them: :func:`prediction_frame` rows as Parquet,
``Storage.write_bytes`` into ``logs/predictions/<model>/date=<first row's day>/``, named
``part-<ms>-<log id>-<seq>.parquet``.
"""

from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone

import pandas as pd
import pytest

from raysys.monitoring.logreader import PREDICTIONS, LogCursor, log_files, read_new
from raysys.serving import payloads
from raysys.serving.prediction_log import LOG_DIR, prediction_frame
from raysys.storage import Storage

SIGNATURE = {"tenure": "float", "plan": "string"}
DAY = datetime(2026, 10, 1, 12, 0, tzinfo=timezone.utc)
DIRECTORY = f"{PREDICTIONS}/churn"


def entry(request_id: str, at: datetime, records: int = 1, role: str = "answer"):
    rows, _ = payloads.parse_records({"records": [{"tenure": 1.0, "plan": "pro"}] * records}, SIGNATURE, 100)
    answer = {"predictions": ["1"] * records, "probabilities": [[0.2, 0.8]] * records, "classes": [0, 1]}
    facts = {"request_id": request_id, "version": 1, "role": role, "latency_ms": 2.0, "key": None, "at": at}
    return rows, answer, facts


def encode(entries: list) -> tuple[str, bytes]:
    """A batch's partition and Parquet bytes, as the prediction log encodes them."""
    frame = prediction_frame(entries)
    return f"date={frame['_time'].iloc[0]:%Y-%m-%d}", frame.to_parquet(index=False)


def write_batch(storage: Storage, log_id: str, seq: int, at: datetime, ids: list[str]) -> str:
    """One batch as a replica names and writes it; its file name."""
    name = f"part-{int(at.timestamp() * 1000)}-{log_id}-{seq:06d}.parquet"
    partition, data = encode([entry(i, at) for i in ids])
    storage.write_bytes(data, LOG_DIR, "churn", partition, name)
    return name


@pytest.fixture
def storage(tmp_path) -> Storage:
    return Storage.open(str(tmp_path / "root"))


def ids(frame: pd.DataFrame) -> list[str]:
    return frame["_request_id"].tolist() if len(frame) else []


def test_each_file_is_read_once_oldest_first_across_calls(storage):
    write_batch(storage, "aaaa", 1, DAY + timedelta(seconds=2), ["r3"])
    write_batch(storage, "aaaa", 0, DAY, ["r1", "r2"])
    frame, cursor = read_new(storage, DIRECTORY, LogCursor())
    assert ids(frame) == ["r1", "r2", "r3"]
    assert {"_time", "_model_version", "_probabilities", "_input_flags", "tenure"} <= set(frame.columns)
    again, cursor = read_new(storage, DIRECTORY, cursor)
    assert again.empty
    write_batch(storage, "bbbb", 0, DAY + timedelta(seconds=5), ["r4"])
    newer, cursor = read_new(storage, DIRECTORY, cursor)
    assert ids(newer) == ["r4"] and cursor.files == 3 and cursor.rows == 4


def test_a_spilled_batch_landing_late_with_its_old_name_is_read_exactly_once(storage):
    write_batch(storage, "aaaa", 0, DAY, ["r1"])
    write_batch(storage, "aaaa", 2, DAY + timedelta(seconds=20), ["r3"])
    write_batch(storage, "bbbb", 0, DAY + timedelta(seconds=30), ["r4"])
    first, cursor = read_new(storage, DIRECTORY, LogCursor())
    assert ids(first) == ["r1", "r3", "r4"]
    # batch 1 of replica aaaa was spilled and is delivered now, under the name it got at 12:00:10
    late = write_batch(storage, "aaaa", 1, DAY + timedelta(seconds=10), ["r2"])
    assert late < "part-" + str(int((DAY + timedelta(seconds=30)).timestamp() * 1000))
    second, cursor = read_new(storage, DIRECTORY, cursor)
    assert ids(second) == ["r2"]
    # a retried write replaces the same file: still read once
    write_batch(storage, "aaaa", 1, DAY + timedelta(seconds=10), ["r2"])
    third, cursor = read_new(storage, DIRECTORY, cursor)
    assert third.empty
    assert cursor.to_dict()["logs"]["aaaa"]["seqs"] == [[0, 2]]  # the hole closed: one range


def test_a_late_batch_in_the_previous_days_partition_is_still_read(storage):
    evening = DAY.replace(hour=23, minute=59)
    write_batch(storage, "aaaa", 0, evening, ["r1"])
    write_batch(storage, "aaaa", 2, evening + timedelta(hours=3), ["r3"])  # next day
    _, cursor = read_new(storage, DIRECTORY, LogCursor())
    write_batch(storage, "aaaa", 1, evening + timedelta(seconds=30), ["r2"])  # lands in date=2026-10-01
    late, cursor = read_new(storage, DIRECTORY, cursor)
    assert ids(late) == ["r2"]


def test_temporary_and_partly_written_files_are_never_read(storage):
    day = storage.path(LOG_DIR, "churn", "date=2026-10-01")
    write_batch(storage, "aaaa", 0, DAY, ["r1"])
    name = f"part-{int(DAY.timestamp() * 1000) + 5}-aaaa-000001.parquet"
    partition, data = encode([entry("r2", DAY)])
    # what Storage.write_bytes leaves while writing (and after a crash), and a spill's hidden temp
    with open(f"{day}/{name}.tmp-0123abcd", "wb") as stream:
        stream.write(data[: len(data) // 2])
    with open(f"{day}/.{name}.tmp-4567", "wb") as stream:
        stream.write(data)
    first, cursor = read_new(storage, DIRECTORY, LogCursor())
    assert ids(first) == ["r1"] and cursor.bad_files == 0
    storage.write_bytes(data, LOG_DIR, "churn", partition, name)  # the write completes
    second, cursor = read_new(storage, DIRECTORY, cursor)
    assert ids(second) == ["r2"]


def test_a_file_that_is_not_parquet_is_skipped_once_and_counted(storage):
    write_batch(storage, "aaaa", 0, DAY, ["r1"])
    storage.write_bytes(b"not parquet", LOG_DIR, "churn", "date=2026-10-01",
                        f"part-{int(DAY.timestamp() * 1000) + 1}-zzzz-000000.parquet")
    frame, cursor = read_new(storage, DIRECTORY, LogCursor())
    assert ids(frame) == ["r1"] and cursor.bad_files == 1 and "zzzz" in cursor.bad[0]
    _, cursor = read_new(storage, DIRECTORY, cursor)
    assert cursor.bad_files == 1


def test_the_cursor_stays_small_and_lists_only_recent_partitions_as_the_log_grows(storage):
    seq = 0
    for day in range(40):
        for batch in range(5):
            at = DAY + timedelta(days=day, minutes=batch)
            write_batch(storage, f"log{day // 10}", seq, at, [f"r{seq}"])
            seq += 1
    frame, cursor = read_new(storage, DIRECTORY, LogCursor())
    assert ids(frame) == [f"r{i}" for i in range(200)]
    state = json.dumps(cursor.to_dict())
    assert len(state) < 400 and list(cursor.logs) == ["log3"]  # older log ids are done with
    listed = {partition for partition, _ in log_files(storage, DIRECTORY, cursor.first_day(86400))}
    assert listed == {"date=2026-11-07", "date=2026-11-08", "date=2026-11-09"}
    write_batch(storage, "log3", seq, DAY + timedelta(days=39, hours=5), ["new"])
    newer, cursor = read_new(storage, DIRECTORY, cursor)
    assert ids(newer) == ["new"]


def test_the_cursor_survives_json_and_a_reader_far_behind_reads_in_bounded_steps(storage):
    for seq in range(6):
        write_batch(storage, "aaaa", seq, DAY + timedelta(seconds=seq), [f"r{seq}a", f"r{seq}b"])
    seen, cursor = [], LogCursor()
    for _ in range(10):
        frame, cursor = read_new(storage, DIRECTORY, LogCursor.from_dict(json.loads(json.dumps(cursor.to_dict()))),
                                 max_rows=3)
        assert len(frame) <= 4  # stops after the file that reaches max_rows
        seen += ids(frame)
    assert seen == [f"r{seq}{part}" for seq in range(6) for part in "ab"]


def test_shadow_rows_and_multi_record_requests_come_back_as_written(storage):
    name = f"part-{int(DAY.timestamp() * 1000)}-aaaa-000000.parquet"
    partition, data = encode([entry("r1", DAY, records=3), entry("r1", DAY, records=3, role="shadow")])
    storage.write_bytes(data, LOG_DIR, "churn", partition, name)
    frame, _ = read_new(storage, DIRECTORY, None)
    assert frame["_row"].tolist() == [0, 1, 2, 0, 1, 2]
    assert frame["_role"].tolist() == ["answer"] * 3 + ["shadow"] * 3


def test_files_whose_rows_are_older_than_their_name_are_read_as_they_come(storage):
    # bulk feedback imported today for requests of an earlier day: named now, partitioned by _time
    now, cursor = datetime.now(timezone.utc), LogCursor()
    for seq, batch in enumerate([["r1"], ["r2"]]):
        partition, data = encode([entry(i, DAY) for i in batch])
        name = f"part-{int((now + timedelta(seconds=seq)).timestamp() * 1000)}-bulk-{seq:06d}.parquet"
        storage.write_bytes(data, LOG_DIR, "churn", partition, name)
        frame, cursor = read_new(storage, DIRECTORY, cursor)
        assert ids(frame) == batch
