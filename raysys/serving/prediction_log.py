"""The prediction log: every answer (and every shadow answer) as rows of Parquet, off the request path.

Replicas :meth:`PredictionLog.add` rows to an in-memory buffer (no I/O); a background task writes
the buffer as one Parquet file when it holds ``flush_rows`` rows or is ``flush_s`` old. Files land
under ``logs/predictions/<model>/date=YYYY-MM-DD/`` (atomic writes), where the monitoring layer
reads them with :func:`read_prediction_log`.
"""

from __future__ import annotations

import asyncio
import io
import logging
import time
import uuid
from datetime import datetime, timezone
from typing import Any

import pandas as pd

from raysys.storage import Storage

LOG_DIR = "logs/predictions"
logger = logging.getLogger(__name__)


def prediction_rows(frame: pd.DataFrame, answer: dict[str, Any], *, request_id: str, version: int, role: str,
                    latency_ms: float, key: str | None) -> list[dict[str, Any]]:
    """One log row per record: its raw inputs plus ``_``-prefixed facts about the answer."""
    at = datetime.now(timezone.utc)
    inputs = frame.to_dict(orient="records")
    probabilities = answer["probabilities"] or [None] * len(inputs)
    return [{**row, "_time": at, "_request_id": request_id, "_row": index, "_model_version": version,
             "_role": role, "_latency_ms": latency_ms, "_key": key, "_prediction": str(prediction),
             "_probabilities": probs}
            for index, (row, prediction, probs) in enumerate(zip(inputs, answer["predictions"], probabilities))]


class PredictionLog:
    """A buffer of log rows that a background task flushes to Parquet files."""

    def __init__(self, storage: Storage, model: str, flush_rows: int, flush_s: float):
        self.storage, self.model = storage, model
        self.flush_rows, self.flush_s = flush_rows, flush_s
        self.rows: list[dict[str, Any]] = []
        self.written = 0
        self._task: asyncio.Task | None = None

    def add(self, rows: list[dict[str, Any]]) -> None:
        """Queue rows (no I/O here); the flusher task starts on first use."""
        self.rows.extend(rows)
        if self._task is None or self._task.done():
            self._task = asyncio.get_running_loop().create_task(self._flush_forever())

    async def _flush_forever(self) -> None:
        started = time.monotonic()
        while self.rows:
            await asyncio.sleep(0.05)
            if len(self.rows) >= self.flush_rows or time.monotonic() - started >= self.flush_s:
                rows, self.rows = self.rows, []
                await asyncio.to_thread(self.write, rows)
                started = time.monotonic()

    def flush(self) -> None:
        """Write whatever is buffered now (replica shutdown)."""
        rows, self.rows = self.rows, []
        self.write(rows)

    def write(self, rows: list[dict[str, Any]]) -> None:
        """One Parquet file of rows; errors are logged, never raised into serving."""
        if not rows:
            return
        try:
            frame = pd.DataFrame(rows)
            buffer = io.BytesIO()
            frame.to_parquet(buffer, index=False)
            day = rows[0]["_time"].strftime("%Y-%m-%d")
            name = f"part-{int(time.time() * 1000)}-{uuid.uuid4().hex[:8]}.parquet"
            self.storage.write_bytes(buffer.getvalue(), LOG_DIR, self.model, f"date={day}", name)
            self.written += len(rows)
        except Exception:  # the log must never take serving down
            logger.exception("prediction log: could not write %d rows", len(rows))


def read_prediction_log(storage: Storage, model: str) -> pd.DataFrame:
    """Every logged row of a model (small logs; the monitoring layer reads it with Ray Data)."""
    import pyarrow.fs as pafs

    selector = pafs.FileSelector(storage.path(LOG_DIR, model), recursive=True, allow_not_found=True)
    files = sorted(i.path for i in storage.fs.get_file_info(selector)
                   if i.type == pafs.FileType.File and i.path.endswith(".parquet"))
    frames = [pd.read_parquet(storage.fs.open_input_file(path)) for path in files]
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()
