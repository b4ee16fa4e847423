"""``raysys gc``: remove what crashed writers left under the storage root, and say what it freed.

Two kinds of leftovers:

- staging directories (``datasets/<name>/_staging/<id>``, ``models/<name>/_staging/<id>``) whose
  owner process is gone (its marker records pid, host and process start), or, with no readable
  marker or an owner on another host, that nothing has touched for ``older_than_s``;
- files in a dataset version directory that its manifest does not list (a publish that crashed,
  or a temporary file), or a version directory with no manifest at all, once nothing has touched
  them for ``older_than_s`` and no write to that dataset is staging.

Staging of a process that still runs is always kept.
"""

from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass, field
from typing import Any

import pyarrow.fs as pafs

from raysys import staging
from raysys.data.store import DATASETS, MANIFEST, DatasetStore
from raysys.modeling.registry import MODELS
from raysys.staging import OWNER, STAGING, OwnerStatus
from raysys.storage import Storage

DEFAULT_OLDER_THAN_S = 24 * 3600.0


@dataclass
class Leftover:
    """One directory (or a version's unlisted files) that gc removed or kept, and why."""

    path: str
    bytes: int
    reason: str
    files: list[str] = field(default_factory=list, repr=False)


@dataclass
class GcReport:
    """What one gc run removed (or, in a dry run, would remove) and what it kept."""

    dry_run: bool
    removed: list[Leftover]
    kept: list[Leftover]

    @property
    def freed_bytes(self) -> int:
        """Bytes removed (or that a dry run would remove)."""
        return sum(item.bytes for item in self.removed)

    def to_dict(self) -> dict[str, Any]:
        """JSON form for the CLI."""
        def entries(items: list[Leftover]) -> list[dict[str, Any]]:
            return [{k: v for k, v in asdict(i).items() if k != "files"} for i in items]

        return {"dry_run": self.dry_run, "removed_count": len(self.removed),
                "freed_bytes": self.freed_bytes, "removed": entries(self.removed),
                "kept": entries(self.kept)}


def staging_verdict(status: OwnerStatus | None, owner: Any, age_s: float,
                    older_than_s: float) -> tuple[bool, str]:
    """Whether to remove a staging directory, and why (``status`` None: no readable marker)."""
    who = f"pid {owner.get('pid')} on {owner.get('host')}" if isinstance(owner, dict) else ""
    if status == "gone":
        return True, f"owner {who} is gone"
    if status == "running":
        return False, f"owner {who} is running"
    why = "no owner marker" if status is None else f"owner {who} cannot be checked from here"
    if age_s >= older_than_s:
        return True, f"{why}, untouched for {_hours(age_s)}"
    return False, (f"{why}, untouched for only {_hours(age_s)} "
                   f"(removed after {_hours(older_than_s)})")


def collect_garbage(storage: Storage, older_than_s: float = DEFAULT_OLDER_THAN_S,
                    dry_run: bool = False) -> GcReport:
    """Find leftovers of crashed writers under the storage root and remove them (unless dry)."""
    now = time.time()
    removed, kept, busy = [], [], set()
    for parent in _staging_parents(storage):
        for entry in storage.list_dirs(parent, STAGING):
            item, remove = _judge_staging(storage, f"{parent}/{STAGING}/{entry}", now, older_than_s)
            (removed if remove else kept).append(item)
            if not remove:
                busy.add(parent)
    for name in storage.list_dirs(DATASETS):
        if f"{DATASETS}/{name}" not in busy:
            removed += _unlisted_files(storage, name, now, older_than_s)
    if not dry_run:
        for item in removed:
            _remove(storage, item)
    return GcReport(dry_run, removed, kept)


def _staging_parents(storage: Storage) -> list[str]:
    return [f"{top}/{name}" for top in (DATASETS, MODELS) for name in storage.list_dirs(top)
            if STAGING in storage.list_dirs(top, name)]


def _judge_staging(storage: Storage, path: str, now: float,
                   older_than_s: float) -> tuple[Leftover, bool]:
    files = storage.list_files(path)
    try:
        owner = storage.read_json(path, OWNER)
    except (OSError, ValueError):
        owner = None
    status = staging.owner_status(owner) if owner is not None else None
    entries = [storage.fs.get_file_info(storage.path(path)), *files]
    age = min((a for a in (_age(now, i) for i in entries) if a is not None), default=math.inf)
    remove, reason = staging_verdict(status, owner, age, older_than_s)
    return Leftover(path, sum(i.size for i in files), reason), remove


def _unlisted_files(storage: Storage, name: str, now: float, older_than_s: float) -> list[Leftover]:
    """Old files of each version directory that its manifest does not list."""
    store, home = DatasetStore(storage), f"{DATASETS}/{name}"
    found = []
    for version in storage.list_dirs(home):
        if version == STAGING:
            continue
        files = storage.list_files(home, version)
        published = storage.exists(home, version, MANIFEST)
        listed = {MANIFEST}
        if published:
            try:
                manifest = store.load(name, version)
            except (OSError, ValueError, TypeError):
                continue  # an unreadable manifest: what it lists is unknown, so keep everything
            listed |= {f[len(version) + 1:] for f in manifest.files + manifest.quarantine_files}
        base = storage.path(home, version) + "/"
        extra = [i for i in files if i.path[len(base):] not in listed]
        if not extra or any((_age(now, i) or 0.0) < older_than_s for i in extra):
            continue  # nothing, or a publish may still be moving files in
        what = "not listed by its manifest" if published else "of a publish with no manifest"
        found.append(Leftover(f"{home}/{version}", sum(i.size for i in extra),
                              f"{len(extra)} file(s) {what}, untouched for over "
                              f"{_hours(older_than_s)}",
                              [f"{home}/{version}/{i.path[len(base):]}" for i in extra]))
    return found


def _remove(storage: Storage, item: Leftover) -> None:
    if not item.files:  # a staging directory
        storage.delete_dir(item.path)
        return
    for path in item.files:
        storage.delete_file(path)
    if not storage.list_files(item.path):
        storage.delete_dir(item.path)


def _age(now: float, info: pafs.FileInfo) -> float | None:
    """Seconds since a file or directory changed; None where the filesystem keeps no time."""
    return now - info.mtime.timestamp() if info.mtime is not None else None


def _hours(seconds: float) -> str:
    return f"{seconds / 3600:.1f} h"
