"""Incremental reads of the prediction log and the feedback log: each file once, oldest first.

Both logs are Parquet files ``<directory>/date=YYYY-MM-DD/part-<ms>-<log id>-<seq>.parquet``
(:mod:`raysys.serving.prediction_log`): a batch gets its name once, when it leaves a replica's
buffer, so a retried or redelivered write replaces the same file with the same rows; a file is
written under a temporary name and renamed (object stores publish a PUT whole), so a reader never
sees half of one. Each log id numbers its batches ``0, 1, 2, …``.

:func:`read_new` returns the rows of the files its :class:`LogCursor` has not seen, in file-name
order (time order), and the advanced cursor. The cursor stays small however long the log grows:

- per log id, the *ranges* of sequence numbers read (one range ``[0, n]`` when every batch landed
  in order; a hole is a batch still on its way — a spilled batch that a replica delivers later
  keeps its original name and time stamp, and is read when it lands, exactly once);
- the newest time stamp read (``newest_ms``) and the newest partition read. Only partitions
  from the day of ``newest_ms - late_s`` (or of the newest partition ``- late_s``, if older),
  minus one day since a batch lands in its first row's day, are listed, so the listing cost
  follows the recent log, not all history. A batch landing more than ``late_s`` behind the newest
  file read, in a partition no longer listed, is not read;
- log ids with nothing in the listed partitions any more are dropped; files whose names do not
  follow the pattern are remembered by name per partition, until the partition leaves the range.

Temporary files (``*.tmp-…``, hidden names) are never read. A file that is not valid Parquet is
skipped once and counted (``bad_files``); a storage error propagates (the caller retries later).
"""

from __future__ import annotations

import bisect
import re
import time
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta, timezone
from typing import Any

import pandas as pd
import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from raysys.storage import Storage

PREDICTIONS = "logs/predictions"
FEEDBACK = "logs/feedback"
LATE_S = 86400.0  # a batch may land this long behind the newest file read and still be read
PARTITION = re.compile(r"^date=(\d{4}-\d{2}-\d{2})$")
NAME = re.compile(r"^part-(\d+)-([0-9A-Za-z]+)-(\d+)\.parquet$")
BAD_KEPT = 20  # names of unreadable files kept in the cursor


@dataclass
class LogCursor:
    """What a reader has read of one log directory: small, JSON-able, monotone."""

    newest_ms: int | None = None  # time stamp of the newest file read
    newest_partition: str | None = None  # the newest date= partition a file was read from
    logs: dict[str, dict[str, Any]] = field(default_factory=dict)  # id -> {"ms", "seqs": [[lo, hi]]}
    others: dict[str, list[str]] = field(default_factory=dict)  # partition -> unpatterned names read
    files: int = 0
    rows: int = 0
    bad_files: int = 0
    bad: list[str] = field(default_factory=list)  # newest unreadable file names

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON form."""
        return {"newest_ms": self.newest_ms, "newest_partition": self.newest_partition,
                "files": self.files, "rows": self.rows,
                "bad_files": self.bad_files, "bad": list(self.bad),
                "logs": {key: {"ms": v["ms"], "seqs": [list(r) for r in v["seqs"]]}
                         for key, v in self.logs.items()},
                "others": {key: list(names) for key, names in self.others.items()}}

    @classmethod
    def from_dict(cls, data: dict[str, Any] | None) -> LogCursor:
        """Read :meth:`to_dict`'s form back (None: a fresh cursor)."""
        if not data:
            return cls()
        return cls(newest_ms=data.get("newest_ms"), newest_partition=data.get("newest_partition"),
                   files=data.get("files", 0),
                   rows=data.get("rows", 0), bad_files=data.get("bad_files", 0),
                   bad=list(data.get("bad", [])),
                   logs={key: {"ms": int(v["ms"]), "seqs": [list(r) for r in v["seqs"]]}
                         for key, v in data.get("logs", {}).items()},
                   others={key: list(names) for key, names in data.get("others", {}).items()})

    def seen(self, partition: str, name: str) -> bool:
        """Whether the file ``partition/name`` was read (or skipped as unreadable) before."""
        parsed = NAME.match(name)
        if parsed is None:
            return name in self.others.get(partition, ())
        entry = self.logs.get(parsed.group(2))
        return entry is not None and _contains(entry["seqs"], int(parsed.group(3)))

    def mark(self, partition: str, name: str) -> None:
        """Remember the file ``partition/name`` as read."""
        self.newest_partition = max(self.newest_partition or partition, partition)
        parsed = NAME.match(name)
        if parsed is None:
            self.others.setdefault(partition, []).append(name)
            return
        ms, log_id, seq = int(parsed.group(1)), parsed.group(2), int(parsed.group(3))
        entry = self.logs.setdefault(log_id, {"ms": ms, "seqs": []})
        entry["ms"] = max(entry["ms"], ms)
        _insert(entry["seqs"], seq)
        self.newest_ms = ms if self.newest_ms is None else max(self.newest_ms, ms)

    def first_day(self, late_s: float) -> date | None:
        """The oldest partition day still listed (None: list every partition).

        ``late_s`` before the newest file's stamp, or before the newest partition read if that is
        older (rows whose ``_time`` lags the write, such as bulk feedback of an earlier day); a
        stamp from a replica whose clock runs ahead counts no later than this machine's now.
        """
        if self.newest_ms is None or self.newest_partition is None:
            return None
        newest_s = min(self.newest_ms / 1000, time.time())
        floor = datetime.fromtimestamp(newest_s - late_s, tz=timezone.utc).date()
        partition = _day(self.newest_partition)
        lagging = (datetime(partition.year, partition.month, partition.day) - timedelta(seconds=late_s)).date()
        return min(floor, lagging) - timedelta(days=1)

    def prune(self, first_day: date | None) -> None:
        """Forget log ids and names that can only be in partitions before ``first_day``."""
        if first_day is None:
            return
        start_ms = int(datetime(first_day.year, first_day.month, first_day.day,
                                tzinfo=timezone.utc).timestamp() * 1000)
        self.logs = {key: v for key, v in self.logs.items() if v["ms"] >= start_ms}
        self.others = {key: v for key, v in self.others.items() if _day(key) >= first_day}


def _contains(ranges: list[list[int]], value: int) -> bool:
    at = bisect.bisect_right(ranges, [value, float("inf")]) - 1
    return at >= 0 and ranges[at][0] <= value <= ranges[at][1]


def _insert(ranges: list[list[int]], value: int) -> None:
    """Add ``value`` to sorted, disjoint, non-adjacent inclusive ranges (merging neighbours)."""
    if _contains(ranges, value):
        return
    at = bisect.bisect_left(ranges, [value, value])
    joins_left = at > 0 and ranges[at - 1][1] == value - 1
    joins_right = at < len(ranges) and ranges[at][0] == value + 1
    if joins_left and joins_right:
        ranges[at - 1][1] = ranges[at][1]
        del ranges[at]
    elif joins_left:
        ranges[at - 1][1] = value
    elif joins_right:
        ranges[at][0] = value
    else:
        ranges.insert(at, [value, value])


def _day(partition: str) -> date:
    return date.fromisoformat(partition[len("date="):])


def log_files(storage: Storage, directory: str, first_day: date | None) -> list[tuple[str, str]]:
    """``(partition, file name)`` of the published Parquet files from ``first_day`` on."""
    found = []
    for partition in storage.list_dirs(directory):
        if PARTITION.match(partition) is None:
            continue
        if first_day is not None and _day(partition) < first_day:
            continue
        selector = pafs.FileSelector(storage.path(directory, partition), allow_not_found=True)
        for info in storage.fs.get_file_info(selector):
            name = info.base_name
            if (info.type == pafs.FileType.File and name.endswith(".parquet")
                    and not name.startswith(".")):
                found.append((partition, name))
    return found


def read_new(storage: Storage, directory: str, cursor: LogCursor | None = None,
             max_rows: int | None = None, late_s: float = LATE_S) -> tuple[pd.DataFrame, LogCursor]:
    """Rows of the files under ``directory`` not read before, oldest first, and the new cursor.

    ``max_rows`` stops after the file that reaches it (the rest comes next call), bounding
    memory when a reader is far behind. The given cursor is not changed.
    """
    cursor = LogCursor.from_dict(cursor.to_dict() if cursor else None)
    first_day = cursor.first_day(late_s)
    new = sorted((name, partition) for partition, name in log_files(storage, directory, first_day)
                 if not cursor.seen(partition, name))
    tables: list[pa.Table] = []
    rows = 0
    for name, partition in new:
        if max_rows is not None and rows >= max_rows:
            break
        table = _read(storage, directory, partition, name)
        if table is None:
            cursor.bad_files += 1
            cursor.bad = [*cursor.bad, f"{partition}/{name}"][-BAD_KEPT:]
        else:
            tables.append(table)
            rows += table.num_rows
            cursor.files += 1
        cursor.mark(partition, name)
    cursor.rows += rows
    cursor.prune(cursor.first_day(late_s))
    return _frame(tables), cursor


def _read(storage: Storage, directory: str, partition: str, name: str) -> pa.Table | None:
    """One file's rows; None when it is not valid Parquet."""
    try:
        with storage.fs.open_input_file(storage.path(directory, partition, name)) as source:
            return pq.read_table(source)
    except pa.ArrowInvalid:
        return None


def _frame(tables: list[pa.Table]) -> pd.DataFrame:
    if not tables:
        return pd.DataFrame()
    try:
        table = pa.concat_tables(tables, promote_options="permissive")
    except (pa.ArrowInvalid, pa.ArrowTypeError):  # files whose columns disagree beyond promotion
        return pd.concat([t.to_pandas() for t in tables], ignore_index=True)
    return table.to_pandas()
