"""The prediction log: every answer (and every shadow answer) as rows of Parquet, off the request path.

Replicas :meth:`PredictionLog.add` the request's frame and answer to an in-memory buffer (no
work beyond an append); a background task turns them into rows and writes one Parquet file when
the buffer holds ``flush_rows`` rows or is ``flush_s`` old. Files land
under ``logs/predictions/<model>/date=YYYY-MM-DD/`` (atomic writes), where the monitoring layer
reads them with :func:`read_prediction_log`.
"""

from __future__ import annotations

import asyncio
import io
import logging
import time
import uuid
from datetime import datetime
from typing import Any

import pandas as pd

from raysys.storage import Storage

LOG_DIR = "logs/predictions"
logger = logging.getLogger(__name__)


def prediction_rows(frame: pd.DataFrame, answer: dict[str, Any], *, request_id: str, version: int, role: str,
                    latency_ms: float, key: str | None, at: datetime) -> list[dict[str, Any]]:
    """One log row per record: its raw inputs plus ``_``-prefixed facts about the answer."""
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
        self.pending: list[tuple[pd.DataFrame, dict[str, Any], dict[str, Any]]] = []
        self.pending_rows = 0
        self.written = 0
        self._task: asyncio.Task | None = None

    def add(self, frame: pd.DataFrame, answer: dict[str, Any], **facts: Any) -> None:
        """Queue one answered request (an append, nothing more); the flusher starts on first use."""
        self.pending.append((frame, answer, facts))
        self.pending_rows += len(frame)
        if self._task is None or self._task.done():
            self._task = asyncio.get_running_loop().create_task(self._flush_forever())

    async def _flush_forever(self) -> None:
        started = time.monotonic()
        while self.pending:
            await asyncio.sleep(0.05)
            if self.pending_rows >= self.flush_rows or time.monotonic() - started >= self.flush_s:
                await asyncio.to_thread(self.write, self._take())
                started = time.monotonic()

    def _take(self) -> list[dict[str, Any]]:
        pending, self.pending, self.pending_rows = self.pending, [], 0
        return [row for frame, answer, facts in pending for row in prediction_rows(frame, answer, **facts)]

    def flush(self) -> None:
        """Write whatever is buffered now (replica shutdown)."""
        self.write(self._take())

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
