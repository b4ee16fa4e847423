"""Fixtures of the monitoring tests: log files as serving writes them (the served model is tests/conftest.py::served)."""

from __future__ import annotations

import time
import uuid

import pandas as pd


def write_log_part(rs, directory: str, frame: pd.DataFrame, seq: int = 0, log_id: str | None = None) -> str:
    """One log file in the layout serving writes (``logs/<dir>/<model>/date=…/part-<ms>-<id>-<seq>.parquet``)."""
    day = pd.Timestamp(frame["_time"].iloc[0]).strftime("%Y-%m-%d")
    name = f"part-{int(time.time() * 1000)}-{log_id or uuid.uuid4().hex[:8]}-{seq}.parquet"
    path = f"logs/{directory}/{rs.models.name}/date={day}/{name}"
    rs.storage.fs.create_dir(rs.storage.path(path.rsplit("/", 1)[0]), recursive=True)
    frame.to_parquet(rs.storage.path(path), filesystem=rs.storage.fs)
    return path


def answered(rs, rows: pd.DataFrame, version: int, at: pd.Timestamp | None = None) -> pd.DataFrame:
    """Prediction-log rows for ``rows`` answered by ``version`` (the real model's answers)."""
    model = rs.models.load(str(version))
    inputs = rows[model.state.input_columns].reset_index(drop=True)
    output = model.predict(inputs)
    ids = [f"req-{uuid.uuid4().hex}" for _ in range(len(inputs))]
    return inputs.assign(
        _time=at if at is not None else pd.Timestamp.now(tz="UTC"), _request_id=ids, _model_version=version,
        _role="answer", _latency_ms=2.0, _key=None, _row=0, _prediction=[str(v) for v in model.labels(output)],
        _probabilities=[[1 - p, p] for p in output], _input_flags="")


def labels_for(log: pd.DataFrame, labels: pd.Series) -> pd.DataFrame:
    """Feedback rows (``_request_id``, ``_row``, ``_label``, ``_time``, ``_source``) for logged requests."""
    return pd.DataFrame({"_request_id": log["_request_id"].to_numpy(), "_row": 0,
                         "_label": labels.astype(str).to_numpy(), "_time": pd.Timestamp.now(tz="UTC"),
                         "_source": "bulk"})
