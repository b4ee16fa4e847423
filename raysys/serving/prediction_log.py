"""The prediction log: every answer (and every shadow answer) as rows of Parquet, off the request path.

Replicas :meth:`PredictionLog.add` the request's parsed rows and answer to an in-memory buffer (no
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
from typing import Any

import pandas as pd

from raysys.serving.payloads import Rows
from raysys.storage import Storage

LOG_DIR = "logs/predictions"
logger = logging.getLogger(__name__)


def prediction_frame(entries: list[tuple[Rows, dict[str, Any], dict[str, Any]]]) -> pd.DataFrame:
    """Log rows of answered requests: each record's raw inputs plus ``_``-prefixed facts.

    ``entries`` are ``(rows, answer, facts)`` with facts ``request_id, version, role,
    latency_ms, key, at``; built column by column (no per-row Python work beyond the answer lists).
    """
    counts = [rows.count for rows, _, _ in entries]
    names = entries[0][0].columns.keys()
    if all(rows.columns.keys() == names for rows, _, _ in entries):
        frame = Rows.concat([rows for rows, _, _ in entries]).frame()
    else:  # versions with different inputs answered in one flush
        frame = pd.concat([rows.frame() for rows, _, _ in entries], ignore_index=True)

    def repeat(fact: str) -> list[Any]:
        return [value for (_, _, facts), n in zip(entries, counts) for value in [facts[fact]] * n]

    frame["_time"] = pd.to_datetime(repeat("at"), utc=True)
    for fact, column in (("request_id", "_request_id"), ("version", "_model_version"), ("role", "_role"),
                         ("latency_ms", "_latency_ms"), ("key", "_key")):
        frame[column] = repeat(fact)
    frame["_row"] = [index for n in counts for index in range(n)]
    frame["_prediction"] = [str(p) for _, answer, _ in entries for p in answer["predictions"]]
    frame["_probabilities"] = [p for (_, answer, _), n in zip(entries, counts)
                               for p in (answer["probabilities"] or [None] * n)]
    return frame


class PredictionLog:
    """A buffer of log rows that a background task flushes to Parquet files."""

    def __init__(self, storage: Storage, model: str, flush_rows: int, flush_s: float):
        self.storage, self.model = storage, model
        self.flush_rows, self.flush_s = flush_rows, flush_s
        self.pending: list[tuple[Rows, dict[str, Any], dict[str, Any]]] = []
        self.pending_rows = 0
        self.written = 0
        self._task: asyncio.Task | None = None

    def add(self, rows: Rows, answer: dict[str, Any], **facts: Any) -> None:
        """Queue one answered request (an append, nothing more); the flusher starts on first use."""
        self.pending.append((rows, answer, facts))
        self.pending_rows += rows.count
        if self._task is None or self._task.done():
            self._task = asyncio.get_running_loop().create_task(self._flush_forever())

    async def _flush_forever(self) -> None:
        started = time.monotonic()
        while self.pending:
            await asyncio.sleep(0.05)
            if self.pending_rows >= self.flush_rows or time.monotonic() - started >= self.flush_s:
                await asyncio.to_thread(self.write, self._take())
                started = time.monotonic()

    def _take(self) -> list[tuple[Rows, dict[str, Any], dict[str, Any]]]:
        pending, self.pending, self.pending_rows = self.pending, [], 0
        return pending

    def flush(self) -> None:
        """Write whatever is buffered now (replica shutdown)."""
        self.write(self._take())

    def write(self, entries: list[tuple[Rows, dict[str, Any], dict[str, Any]]]) -> None:
        """One Parquet file of the entries' rows; errors are logged, never raised into serving."""
        if not entries:
            return
        try:
            frame = prediction_frame(entries)
            buffer = io.BytesIO()
            frame.to_parquet(buffer, index=False)
            day = entries[0][2]["at"].strftime("%Y-%m-%d")
            name = f"part-{int(time.time() * 1000)}-{uuid.uuid4().hex[:8]}.parquet"
            self.storage.write_bytes(buffer.getvalue(), LOG_DIR, self.model, f"date={day}", name)
            self.written += len(frame)
        except Exception:  # the log must never take serving down
            logger.exception("prediction log: could not write %d requests", len(entries))


def read_prediction_log(storage: Storage, model: str) -> pd.DataFrame:
    """Every logged row of a model (small logs; the monitoring layer reads it with Ray Data)."""
    import pyarrow.fs as pafs

    selector = pafs.FileSelector(storage.path(LOG_DIR, model), recursive=True, allow_not_found=True)
    files = sorted(i.path for i in storage.fs.get_file_info(selector)
                   if i.type == pafs.FileType.File and i.path.endswith(".parquet"))
    frames = [pd.read_parquet(storage.fs.open_input_file(path)) for path in files]
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()
