"""A log buffer's local journal: rows a replica has answered survive the replica being killed.

:class:`~raysys.serving.prediction_log.DurableLog` keeps rows in memory until a flush writes them.
Each entry is also appended to a journal segment on the node's local disk (one unbuffered
``write``: in the kernel's page cache at once, so a SIGKILL of the process loses nothing; only
the machine going down would). One segment holds one batch and is named after the file the batch
will have in storage, so a replayed batch replaces the same file: still exactly once. A segment is
deleted once its batch is in storage or spilled.

A replica that starts on the same node finds the segments of logs whose process is gone (an
owner marker with pid and process start, as :mod:`raysys.staging` writes) and delivers them with
its first flush. A record cut short by the kill was not answered yet (entries are journaled
before the answer is returned) and is skipped.

Segments are pickles in the user's private spill folder (mode 0700), read only by that user's
replicas.
"""

from __future__ import annotations

import json
import pickle
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from raysys.staging import owner_record, owner_status

SUFFIX = ".journal"
LENGTH_BYTES = 8


class Journal:
    """The segments of one log (``log_id``) under ``root``: open one per batch, append, discard."""

    def __init__(self, root: Path, log_id: str):
        self.root, self.log_id = root, log_id
        self.stream = None
        self.name: str | None = None

    def open(self, name: str) -> None:
        """Start the segment of the batch that will be stored as ``name``."""
        if not self.root.is_dir():
            self.root.mkdir(mode=0o700, parents=True, exist_ok=True)
        marker = self.root / f"{self.log_id}.owner"
        if not marker.exists():
            marker.write_text(json.dumps(owner_record()))
        self.stream = open(self.root / f"{self.log_id}--{name}{SUFFIX}", "ab", buffering=0)  # noqa: SIM115 - kept open across appends
        self.name = name

    def append(self, entry: Any, rows: int) -> None:
        """Journal one entry (one ``write`` call: length-prefixed pickle)."""
        data = pickle.dumps((entry, rows), protocol=pickle.HIGHEST_PROTOCOL)
        self.stream.write(len(data).to_bytes(LENGTH_BYTES, "little") + data)

    def seal(self) -> str | None:
        """Close the open segment (its batch left the buffer); its batch name."""
        name, self.name = self.name, None
        if self.stream is not None:
            self.stream.close()
            self.stream = None
        return name

    def discard(self, name: str) -> None:
        """Delete a batch's segment: the batch is in storage or spilled."""
        (self.root / f"{self.log_id}--{name}{SUFFIX}").unlink(missing_ok=True)

    def close(self) -> None:
        """Seal and remove this log's owner marker (graceful shutdown, every batch delivered)."""
        self.seal()
        if not any(self.root.glob(f"{self.log_id}--*{SUFFIX}")):
            (self.root / f"{self.log_id}.owner").unlink(missing_ok=True)


def orphaned(root: Path) -> list[Path]:
    """Segments whose log's process is gone (their batches were never delivered), oldest first."""
    if not root.is_dir():
        return []
    found = []
    for marker in root.glob("*.owner"):
        try:
            record = json.loads(marker.read_text())
        except (OSError, ValueError):
            record = None
        if owner_status(record) != "gone":
            continue
        segments = list(root.glob(f"{marker.stem}--*{SUFFIX}"))
        found.extend(segments)
        if not segments:
            marker.unlink(missing_ok=True)
    return sorted(found, key=lambda path: batch_name(path))


def batch_name(segment: Path) -> str:
    """The storage file name of a segment's batch."""
    return segment.name.split("--", 1)[1][: -len(SUFFIX)]


def read_segment(segment: Path) -> tuple[list[Any], int]:
    """A segment's entries and their row count; a record cut short at the end is skipped."""
    entries, rows = [], 0
    for entry, count in _records(segment.read_bytes()):
        entries.append(entry)
        rows += count
    return entries, rows


def _records(data: bytes) -> Iterator[tuple[Any, int]]:
    at = 0
    while at + LENGTH_BYTES <= len(data):
        size = int.from_bytes(data[at:at + LENGTH_BYTES], "little")
        end = at + LENGTH_BYTES + size
        if end > len(data):
            return  # cut short by the kill: that request was not answered
        yield pickle.loads(data[at + LENGTH_BYTES:end])
        at = end
