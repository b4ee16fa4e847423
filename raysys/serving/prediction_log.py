"""The prediction log: every answer (and every shadow answer) as rows of Parquet, off the request path.

Replicas :meth:`PredictionLog.add` the request's parsed rows and answer to an in-memory buffer (an
append, no I/O); a background task turns them into one Parquet file when the buffer holds
``flush_rows`` rows or is ``flush_s`` old. Files land under
``logs/predictions/<model>/date=YYYY-MM-DD/`` (atomic writes), where the monitoring layer reads
them with :func:`read_prediction_log`.

Nothing answered is lost and nothing is logged twice:

- a batch is named once, when it leaves the buffer (``part-<ms>-<log id>-<sequence>.parquet``), so
  a retried write, or a later delivery of a write that failed after it had landed, replaces the
  same file: every answered request is in the log exactly once;
- a failed write is retried (``WRITE_ATTEMPTS``, with backoff), then the batch is spilled to the
  replica's local disk (``serve.prediction_log.spill_dir``, default ``<tmp>/raysys-spill-<user>``;
  one folder per storage root and model, private to the user). Every later flush delivers spilled
  batches first, and a replica starting on the same node delivers what a dead one left there
  (on its first flush, or at its first health check when no request comes);
- when the buffer reaches ``max_pending_rows`` (storage slow or down), it is spilled at once, so
  memory stays bounded;
- :meth:`PredictionLog.close` (graceful replica shutdown) waits for the write in flight and writes
  the rest.

- every entry is also appended to a local journal segment (:mod:`raysys.serving.journal`) before
  the request is answered, so a replica that is killed, not stopped, loses nothing either: a
  replica starting on the same node delivers what the dead one's buffer held.

Rows that neither storage nor the local disk took are counted as ``lost_rows`` (reported with the
serving faults, see :mod:`raysys.serving.faults`).

The machinery is :class:`DurableLog`, a directory and a frame builder; :class:`PredictionLog` is
one, the feedback log (:mod:`raysys.serving.feedback`, ``logs/feedback/``) another.
"""

from __future__ import annotations

import asyncio
import getpass
import hashlib
import io
import itertools
import logging
import os
import tempfile
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from raysys.serving.faults import RateLimitedLog, describe
from raysys.serving.journal import Journal, batch_name, orphaned, read_segment
from raysys.serving.payloads import Rows
from raysys.storage import Storage

LOG_DIR = "logs/predictions"
WRITE_ATTEMPTS = 3
BACKOFF_S = 0.2  # before the 2nd attempt; doubled before each next one
TICK_S = 0.05
Entry = tuple[Rows, dict[str, Any], dict[str, Any]]
FrameBuilder = Callable[[list[Any]], pd.DataFrame]  # a batch's entries → its log rows (with ``_time``)
logger = logging.getLogger(__name__)


def prediction_frame(entries: list[Entry]) -> pd.DataFrame:
    """Log rows of answered requests: each record's raw inputs plus ``_``-prefixed facts.

    ``entries`` are ``(rows, answer, facts)`` with facts ``request_id, version, role,
    latency_ms, key, at``; built column by column (no per-row Python work beyond the answer lists).
    ``_input_flags`` holds the input rules each record broke ("" for none), ``_decision`` the action of
    the decision rules ("" when the deployment has none).
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
    frame["_input_flags"] = [flag for rows, _, _ in entries for flag in _flags(rows)]
    frame["_decision"] = [d for (_, answer, _), n in zip(entries, counts)
                          for d in (answer.get("decisions") or [""] * n)]
    return frame


def _flags(rows: Rows) -> list[str]:
    flags = getattr(rows, "flags", None)  # set by the input checks; None: no rule broken
    return [""] * rows.count if flags is None else [str(flag) for flag in flags]


def retried(action: Callable[[], None], attempts: int, backoff_s: float,
            sleep: Callable[[float], None] = time.sleep) -> Exception | None:
    """Run ``action`` up to ``attempts`` times, pausing ``backoff_s``, then twice as long…; its last error."""
    error: Exception | None = None
    for attempt in range(attempts):
        if attempt:
            sleep(backoff_s * 2 ** (attempt - 1))
        try:
            action()
            return None
        except Exception as failed:  # noqa: BLE001 - any storage error is worth another try
            error = failed
    return error


@dataclass(frozen=True)
class Encoded:
    """One Parquet file of log rows and its place under ``<log directory>/<model>/``."""

    parts: tuple[str, str]  # ("date=YYYY-MM-DD", "part-….parquet")
    data: bytes
    rows: int


@dataclass(frozen=True)
class Batch:
    """Log rows that left the buffer together, with the file name they keep until written."""

    name: str
    entries: list[Any]
    rows: int  # how many log rows the entries make

    def encode(self, frame: FrameBuilder) -> Encoded:
        """The batch as a Parquet file in the partition of its first row's day."""
        table = frame(self.entries)
        buffer = io.BytesIO()
        table.to_parquet(buffer, index=False)
        day = table["_time"].iloc[0].strftime("%Y-%m-%d")
        return Encoded((f"date={day}", self.name), buffer.getvalue(), len(table))


def spill_root(storage: Storage, model: str, spill_dir: str | None = None, directory: str = LOG_DIR) -> Path:
    """Where a replica keeps batches storage refused: local disk, per user, storage root, log and model."""
    base = (Path(spill_dir).expanduser() if spill_dir
            else Path(tempfile.gettempdir()) / f"raysys-spill-{getpass.getuser()}")
    return base / hashlib.sha256(storage.uri.encode()).hexdigest()[:12] / Path(directory).name / model


class SpillDir:
    """Batches that storage refused, as Parquet files on local disk until a flush delivers them."""

    def __init__(self, root: Path):
        self.root = root

    def put(self, encoded: Encoded) -> None:
        """Keep a batch: written to a temporary name, synced, renamed (a crash leaves all or none)."""
        target = self.root.joinpath(*encoded.parts)
        for directory in reversed([target.parent, *target.parent.parents]):
            if not directory.is_dir():  # private: the rows hold what clients sent
                directory.mkdir(mode=0o700, exist_ok=True)
        temporary = target.with_name(f".{target.name}.tmp-{uuid.uuid4().hex}")
        with open(temporary, "wb") as stream:
            stream.write(encoded.data)
            stream.flush()
            os.fsync(stream.fileno())
        os.replace(temporary, target)

    def files(self) -> list[Path]:
        """The spilled batches, oldest first."""
        return sorted(self.root.glob("date=*/part-*.parquet"), key=lambda path: path.name)

    def has_files(self) -> bool:
        """Whether any batch waits here."""
        return next(iter(self.root.glob("date=*/part-*.parquet")), None) is not None

    @staticmethod
    def read(path: Path) -> Encoded | None:
        """A spilled batch, or None when another replica on this node has delivered it meanwhile."""
        import pyarrow.parquet as pq

        try:
            data = path.read_bytes()
        except FileNotFoundError:
            return None
        rows = pq.ParquetFile(io.BytesIO(data)).metadata.num_rows
        return Encoded((path.parent.name, path.name), data, rows)


class DurableLog:
    """A buffer of log rows that a background task writes to Parquet files under
    ``<directory>/<model>/``, spilling what fails; ``frame`` turns a batch's entries into rows."""

    def __init__(self, storage: Storage, directory: str, model: str, frame: FrameBuilder, flush_rows: int,
                 flush_s: float, max_pending_rows: int = 100_000, spill_dir: str | None = None,
                 attempts: int = WRITE_ATTEMPTS, backoff_s: float = BACKOFF_S, label: str = "log"):
        self.storage, self.directory, self.model, self.frame, self.label = storage, directory, model, frame, label
        self.flush_rows, self.flush_s, self.max_pending_rows = flush_rows, flush_s, max_pending_rows
        self.attempts, self.backoff_s = attempts, backoff_s
        self.spill = SpillDir(spill_root(storage, model, spill_dir, directory))
        self.log_id = uuid.uuid4().hex[:12]
        self.pending: list[Any] = []
        self.pending_rows = 0
        self.counts = {"written_rows": 0, "spilled_rows": 0, "lost_rows": 0}
        self.failures = RateLimitedLog(logger)
        self.journal = Journal(self.spill.root / "journal", self.log_id)
        self._next_name: str | None = None  # the file name of the batch the buffer holds
        self._sequence = itertools.count()
        self._lock = threading.Lock()  # counts change in writer threads
        self._spill_waiting = self.spill.has_files() or bool(orphaned(self.journal.root))  # delivered first
        self._flusher: asyncio.Task | None = None
        self._spilling: set[asyncio.Task] = set()
        self._closing = False

    @property
    def written(self) -> int:
        """Rows this log has written to storage (its own and spilled ones it delivered)."""
        return self.counts["written_rows"]

    def stats(self) -> dict[str, int]:
        """Rows written, spilled to local disk and lost so far (cumulative)."""
        with self._lock:
            return dict(self.counts)

    def append(self, entry: Any, rows: int) -> None:
        """Queue an entry that makes ``rows`` log rows (an append and a journal write); the flusher starts on first use."""
        self._journal(entry, rows)
        self.pending.append(entry)
        self.pending_rows += rows
        if self.pending_rows >= self.max_pending_rows:  # storage is not keeping up: spill now
            task = asyncio.get_running_loop().create_task(asyncio.to_thread(self._spill_batch, self._take()))
            self._spilling.add(task)
            task.add_done_callback(self._spilling.discard)
        self._ensure_flusher()

    def resume(self) -> None:
        """Start the flusher if batches (or a dead replica's journal) wait on local disk (a health check calls this)."""
        self._spill_waiting = self._spill_waiting or self.spill.has_files() or bool(orphaned(self.journal.root))
        if self.pending or self._spill_waiting:
            self._ensure_flusher()

    async def close(self) -> None:
        """Graceful shutdown: wait for the write in flight, then deliver spilled batches and the rest."""
        self._closing = True
        if self._flusher is not None:
            await self._flusher
        if self._spilling:
            await asyncio.gather(*self._spilling)
        self._spill_waiting = True  # whatever this or a dead replica spilled goes first
        await asyncio.to_thread(self._flush, self._take())
        self.journal.close()

    # ------------------------------------------------------------------ background work

    def _ensure_flusher(self) -> None:
        if not self._closing and (self._flusher is None or self._flusher.done()):
            self._flusher = asyncio.get_running_loop().create_task(self._flush_forever())

    async def _flush_forever(self) -> None:
        started = time.monotonic()
        while not self._closing and (self.pending or self._spill_waiting):
            await asyncio.sleep(TICK_S)
            if self.pending_rows >= self.flush_rows or time.monotonic() - started >= self.flush_s:
                await asyncio.to_thread(self._flush, self._take())
                started = time.monotonic()

    def _journal(self, entry: Any, rows: int) -> None:
        """Journal an entry; a local disk that refuses is logged (the entry is still buffered)."""
        try:
            self._next_name = self._next_name or self._new_name()
            if self.journal.name != self._next_name:
                self.journal.open(self._next_name)
            self.journal.append(entry, rows)
        except OSError as error:
            self.failures.failure("journal", f"{self.label}: could not journal a batch in {self.journal.root} "
                                             f"({describe(error)}); a kill of this replica would lose it", error)

    def _take(self) -> Batch | None:
        if not self.pending:
            return None
        entries, rows, self.pending, self.pending_rows = self.pending, self.pending_rows, [], 0
        name, self._next_name = self._next_name or self._new_name(), None
        self.journal.seal()
        return Batch(name, entries, rows)

    def _new_name(self) -> str:
        return f"part-{int(time.time() * 1000)}-{self.log_id}-{next(self._sequence):06d}.parquet"

    def _flush(self, batch: Batch | None) -> None:
        """(Thread) Spilled batches first, then ``batch``; what cannot be written is spilled."""
        delivered = self._deliver_spilled() if self._spill_waiting else True
        encoded = self._encode(batch) if batch is not None else None
        if encoded is not None and (delivered and self._write(encoded)
                                    or self._keep(encoded)):  # storage failing: spilled ones land first
            self.journal.discard(batch.name)

    def _spill_batch(self, batch: Batch | None) -> None:
        encoded = self._encode(batch) if batch is not None else None
        if encoded is not None and self._keep(encoded):
            self.journal.discard(batch.name)

    def _deliver_spilled(self) -> bool:
        self._spill_waiting = False  # set again by any batch spilled from now on
        self._replay_journals()
        for path in self.spill.files():
            encoded = SpillDir.read(path)
            if encoded is None:
                continue
            if not self._write(encoded):
                self._spill_waiting = True
                return False
            path.unlink(missing_ok=True)
        return True

    def _replay_journals(self) -> None:
        """The batches of logs whose replica died: written (or spilled) under the names they would have had."""
        for segment in orphaned(self.journal.root):
            try:
                entries, rows = read_segment(segment)
            except FileNotFoundError:
                continue  # another replica on this node delivered it
            except Exception as error:  # noqa: BLE001 - a damaged segment must not stop the log
                segment.rename(segment.with_suffix(".damaged"))
                self.failures.failure("replay", f"{self.label}: a journal segment could not be read ({describe(error)});"
                                                f" kept as {segment.with_suffix('.damaged')}", error, logging.ERROR)
                continue
            encoded = self._encode(Batch(batch_name(segment), entries, rows)) if entries else None
            if encoded is None or self._write(encoded) or self._keep(encoded):
                segment.unlink(missing_ok=True)

    def _encode(self, batch: Batch) -> Encoded | None:
        try:
            return batch.encode(self.frame)
        except Exception as error:  # noqa: BLE001 - a bug here must not take serving down
            self._count("lost_rows", batch.rows)
            self.failures.failure("encode", f"{self.label}: lost {batch.rows} rows that could not be "
                                            f"encoded ({describe(error)})", error, logging.ERROR)
            return None

    def _write(self, encoded: Encoded) -> bool:
        def write() -> None:
            self.storage.write_bytes(encoded.data, self.directory, self.model, *encoded.parts)

        error = retried(write, self.attempts, self.backoff_s)
        if error is None:
            self._count("written_rows", encoded.rows)
            return True
        self.failures.failure("write", f"{self.label}: storage refused {encoded.rows} rows "
                                       f"{self.attempts} times ({describe(error)}); keeping them in "
                                       f"{self.spill.root} until it takes them", error)
        return False

    def _keep(self, encoded: Encoded) -> bool:
        """Spill a batch to local disk; False (and counted lost) when the disk refuses it too."""
        try:
            self.spill.put(encoded)
        except OSError as error:
            self._count("lost_rows", encoded.rows)
            self.failures.failure("spill", f"{self.label}: lost {encoded.rows} rows: neither storage nor "
                                           f"{self.spill.root} took them ({describe(error)})", error,
                                  logging.ERROR)
            return False
        self._count("spilled_rows", encoded.rows)
        self._spill_waiting = True
        return True

    def _count(self, name: str, rows: int) -> None:
        with self._lock:
            self.counts[name] += rows


class PredictionLog(DurableLog):
    """The prediction log of a replica: answered requests → ``logs/predictions/<model>/``."""

    def __init__(self, storage: Storage, model: str, flush_rows: int, flush_s: float,
                 max_pending_rows: int = 100_000, spill_dir: str | None = None,
                 attempts: int = WRITE_ATTEMPTS, backoff_s: float = BACKOFF_S):
        super().__init__(storage, LOG_DIR, model, prediction_frame, flush_rows, flush_s, max_pending_rows,
                         spill_dir, attempts, backoff_s, label="prediction log")

    def add(self, rows: Rows, answer: dict[str, Any], **facts: Any) -> None:
        """Queue one answered request (an append, no I/O); the flusher starts on first use."""
        self.append((rows, answer, facts), rows.count)


def read_prediction_log(storage: Storage, model: str) -> pd.DataFrame:
    """Every logged prediction of a model (small logs; the monitoring layer reads them incrementally)."""
    return read_log(storage, LOG_DIR, model)


def read_log(storage: Storage, directory: str, model: str) -> pd.DataFrame:
    """Every row a :class:`DurableLog` wrote under ``<directory>/<model>/``, oldest file first."""
    import pyarrow.fs as pafs

    selector = pafs.FileSelector(storage.path(directory, model), recursive=True, allow_not_found=True)
    files = sorted(i.path for i in storage.fs.get_file_info(selector)
                   if i.type == pafs.FileType.File and i.path.endswith(".parquet"))
    frames = [pd.read_parquet(storage.fs.open_input_file(path)) for path in files]
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()
