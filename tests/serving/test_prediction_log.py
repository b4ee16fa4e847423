"""The prediction log's rows and files (pure pandas and a local storage root, no Ray)."""

from __future__ import annotations

import asyncio
from datetime import datetime, timezone

from raysys.serving import payloads
from raysys.serving.prediction_log import PredictionLog, prediction_frame, read_prediction_log
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


def test_flush_writes_parquet_that_reads_back(tmp_path):
    storage = Storage.open(str(tmp_path))
    log = PredictionLog(storage, "churn", flush_rows=2, flush_s=60)

    async def serve_two_requests():
        rows, answer, facts = entry([{"tenure": 1.0, "plan": "pro"}], 1)
        log.add(rows, answer, **facts)
        log.add(rows, answer, **{**facts, "request_id": "r2"})
        await asyncio.wait_for(log._task, timeout=10)  # the flusher exits once the buffer is written

    asyncio.run(serve_two_requests())
    read = read_prediction_log(storage, "churn")
    assert read["_request_id"].tolist() == ["r1", "r2"] and log.written == 2
    assert [p.name for p in (tmp_path / "logs" / "predictions" / "churn").iterdir()] == ["date=2026-11-28"]
