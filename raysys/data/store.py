"""The versioned dataset store: immutable, content-addressed Parquet snapshots with manifests.

Layout under the storage root::

    datasets/<name>/<version>/data/part-*.parquet        accepted rows
    datasets/<name>/<version>/quarantine/part-*.parquet  rejected rows, with ``_reason``
    datasets/<name>/<version>/manifest.json              written last: the version exists
    datasets/<name>/_staging/<uuid>/...                  in-progress writes, never listed
                                                         (``_owner.json``: who writes it)

A version id is derived from the content (schema, and an order-independent hash of every
accepted and quarantined row), so re-ingesting identical data yields the same id. An append
lists its parent's files plus the new ones, so micro-batches cost only the new rows.

Publishing is safe when several processes publish the same content at once: staged files have
unique names, each publisher moves only its own into the version directory, the manifest is
created exclusively (on local disks), and a publisher that finds one there removes the files
it moved and returns the published version. Nothing ever deletes another writer's files.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa

from raysys import staging
from raysys.errors import NotFound, RaysysError
from raysys.staging import STAGING
from raysys.storage import Storage

DATASETS = "datasets"
MANIFEST = "manifest.json"
HASH_MASK = (1 << 64) - 1


_CANONICAL_TYPES = {pa.int64(): pd.Int64Dtype(), pa.bool_(): pd.BooleanDtype()}


def rows_hash(table: pa.Table) -> int:
    """Order-independent 64-bit hash of a table's rows (sum of row hashes, mod 2**64).

    Rows are hashed from a canonical pandas form (columns by name, nullable ints and bools), so
    a value hashes the same whether or not its batch happens to hold a null.
    """
    if table.num_rows == 0:
        return 0
    frame = table.select(sorted(table.column_names)).to_pandas(types_mapper=_CANONICAL_TYPES.get)
    hashes = pd.util.hash_pandas_object(frame, index=False).to_numpy(dtype=np.uint64)
    return int(hashes.sum(dtype=np.uint64))


def combine_hashes(*hashes: int) -> int:
    """Combine row-hash sums of disjoint pieces (the multiset union)."""
    return sum(hashes) & HASH_MASK


def version_id(schema: dict[str, str], accepted: tuple[int, int], quarantined: tuple[int, int]) -> str:
    """The content-derived id: a digest of schema, counts and row-hash sums."""
    payload = json.dumps(
        {"schema": schema, "accepted": list(accepted), "quarantined": list(quarantined)},
        sort_keys=True,
    )
    return hashlib.sha256(payload.encode()).hexdigest()[:16]


@dataclass
class Manifest:
    """Everything known about one dataset version."""

    name: str
    version: str
    schema: dict[str, str]
    columns: dict[str, Any]
    row_count: int
    quarantined_count: int
    rows_read: int
    files: list[str]
    quarantine_files: list[str]
    content: dict[str, Any]
    stats: dict[str, Any]
    stats_partial: dict[str, Any]
    quarantine_reasons: dict[str, int]
    source: dict[str, Any]
    parent: str | None = None
    created_at: str = ""
    extra: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON form."""
        return dict(self.__dict__)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Manifest:
        """Rebuild from the JSON form."""
        return cls(**data)

    def _repr_html_(self) -> str:
        from raysys.reprs import html_table

        columns = ", ".join(f"{name} ({kind})" for name, kind in self.schema.items())
        return html_table(f"Dataset {self.name} @ {self.version}", [
            ("version", self.version), ("created", self.created_at), ("rows read", self.rows_read),
            ("rows accepted", self.row_count), ("rows quarantined", self.quarantined_count),
            ("source", self.source.get("kind")), ("parent", self.parent), ("columns", columns)])

    def summary(self) -> dict[str, Any]:
        """The short form shown by ``raysys data versions``."""
        return {
            "version": self.version,
            "created_at": self.created_at,
            "rows": self.row_count,
            "quarantined": self.quarantined_count,
            "columns": len(self.schema),
            "parent": self.parent,
            "source": self.source.get("kind"),
        }


class DatasetStore:
    """Publish, list and resolve dataset versions under a storage root."""

    def __init__(self, storage: Storage):
        self.storage = storage

    def dataset_dir(self, name: str) -> str:
        """Relative directory of a dataset."""
        return f"{DATASETS}/{name}"

    def new_staging(self, name: str) -> str:
        """A fresh relative staging directory for one write, recording this process as owner."""
        return staging.begin(self.storage, self.dataset_dir(name))

    def discard(self, staging: str) -> None:
        """Remove a staging directory (after a failure or a duplicate)."""
        self.storage.delete_dir(staging)

    def versions(self, name: str) -> list[Manifest]:
        """Published versions, oldest first."""
        manifests = []
        for entry in self.storage.list_dirs(self.dataset_dir(name)):
            if entry != STAGING and self.storage.exists(self.dataset_dir(name), entry, MANIFEST):
                manifests.append(self.load(name, entry))
        return sorted(manifests, key=lambda m: (m.created_at, m.version))

    def load(self, name: str, version: str) -> Manifest:
        """The manifest of an exact version id."""
        return Manifest.from_dict(self.storage.read_json(self.dataset_dir(name), version, MANIFEST))

    def resolve(self, name: str, ref: str = "latest") -> Manifest:
        """A version by id, unique id prefix, ``latest``, or ``latest~N`` (N versions back)."""
        versions = self.versions(name)
        if not versions:
            raise NotFound(f"dataset '{name}' has no versions yet: run `raysys data ingest`")
        if ref == "latest" or ref.startswith("latest~"):
            back = int(ref.partition("~")[2] or 0)
            if back >= len(versions):
                raise NotFound(f"dataset '{name}' has only {len(versions)} versions, no {ref}")
            return versions[-1 - back]
        matches = [m for m in versions if m.version.startswith(ref)]
        if len(matches) == 1:
            return matches[0]
        if not matches:
            raise NotFound(f"dataset '{name}' has no version '{ref}'")
        raise RaysysError(f"version prefix '{ref}' is ambiguous: {', '.join(m.version for m in matches)}")

    def latest(self, name: str) -> Manifest | None:
        """The newest version, or None."""
        versions = self.versions(name)
        return versions[-1] if versions else None

    def publish(
        self, manifest: Manifest, staged: str, staged_files: dict[str, list[str]]
    ) -> tuple[Manifest, bool]:
        """Move a staged write's files into place, create its manifest last; (manifest, created).

        ``created`` is False when the version already existed or a concurrent publisher of the
        same content won; this write's files are then removed and the published manifest returned.
        """
        name, version = manifest.name, manifest.version
        home, final = self.dataset_dir(name), f"{self.dataset_dir(name)}/{version}"
        if self.storage.exists(final, MANIFEST):
            self.discard(staged)
            return self.load(name, version), False
        moved: dict[str, list[str]] = {"files": [], "quarantine_files": []}
        try:
            for key, files in moved.items():
                for path in staged_files[key]:
                    relative = f"{version}/{path[len(staged) + 1:]}"
                    self.storage.move(path, f"{home}/{relative}")
                    files.append(relative)
            for key, files in moved.items():
                setattr(manifest, key, getattr(manifest, key) + files)
            manifest.created_at = datetime.now(timezone.utc).isoformat()
            created = self.storage.create_json(manifest.to_dict(), final, MANIFEST)
        except BaseException:
            self._remove(home, moved)
            raise
        if not created:
            self._remove(home, moved)
            manifest = self.load(name, version)
        self.discard(staged)
        return manifest, created

    def _remove(self, home: str, moved: dict[str, list[str]]) -> None:
        """Delete the files one publish moved into a version directory."""
        for files in moved.values():
            for relative in files:
                self.storage.delete_file(home, relative)

    def file_paths(self, manifest: Manifest, quarantine: bool = False) -> list[str]:
        """Filesystem paths of a version's Parquet files."""
        files = manifest.quarantine_files if quarantine else manifest.files
        return [self.storage.path(self.dataset_dir(manifest.name), f) for f in files]
