"""The storage root: one place for all state, a local path or any ``pyarrow.fs`` URI.

Writes that must appear whole go through :meth:`Storage.write_json` (temporary name, then a
rename on local disks; object stores publish a PUT atomically). Readers treat a directory as
published only once its manifest exists, so a crash never exposes a half-written object. On
local disks every write and move is flushed to disk (the file, then its directory) before it
returns, so what a manifest lists survives a power loss as well as a crash.
"""

from __future__ import annotations

import json
import os
import re
import uuid
from contextlib import suppress
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow.fs as pafs

from raysys.errors import RaysysError


@dataclass(frozen=True)
class Storage:
    """A filesystem plus a base path; every path argument is relative to the root."""

    uri: str
    fs: pafs.FileSystem
    base: str

    @classmethod
    def open(cls, root: str) -> Storage:
        """Open (and create) the storage root at a local path or a pyarrow.fs URI."""
        uri = root if "://" in root else os.path.abspath(os.path.expanduser(root))
        try:
            fs, base = pafs.FileSystem.from_uri(uri)
            fs.create_dir(base, recursive=True)
        except (OSError, ValueError) as error:
            raise RaysysError(f"storage root {root}: cannot open: {error}") from None
        return cls(uri=uri, fs=fs, base=base.rstrip("/"))

    @property
    def local(self) -> bool:
        """Whether the root is on a local filesystem (paths are OS paths)."""
        return isinstance(self.fs, pafs.LocalFileSystem)

    def filesystem_type(self) -> str:
        """pyarrow's name of a remote filesystem ('s3', 'gcs', ...); for a local root the type
        of the mount holding it ('ext4', 'nfs4', ...; 'local' where unknown)."""
        if not self.local:
            return self.fs.type_name
        try:
            mounts = Path("/proc/mounts").read_text()
        except OSError:
            return "local"
        return mount_type(os.path.realpath(self.base), mounts) or "local"

    def path(self, *parts: str) -> str:
        """The filesystem path of a location under the root."""
        return "/".join([self.base, *[p.strip("/") for p in parts if p]])

    def exists(self, *parts: str) -> bool:
        """Whether a file or directory exists."""
        return self.fs.get_file_info(self.path(*parts)).type != pafs.FileType.NotFound

    def list_dirs(self, *parts: str) -> list[str]:
        """Names of the sub-directories of a directory (empty if it doesn't exist)."""
        selector = pafs.FileSelector(self.path(*parts), allow_not_found=True)
        infos = self.fs.get_file_info(selector)
        return sorted(i.base_name for i in infos if i.type == pafs.FileType.Directory)

    def read_bytes(self, *parts: str) -> bytes:
        """Read a whole file."""
        with self.fs.open_input_stream(self.path(*parts)) as stream:
            return stream.read()

    def list_files(self, *parts: str) -> list[pafs.FileInfo]:
        """Every file below a directory, recursively (empty if it doesn't exist)."""
        selector = pafs.FileSelector(self.path(*parts), recursive=True, allow_not_found=True)
        return [i for i in self.fs.get_file_info(selector) if i.type == pafs.FileType.File]

    def write_bytes(self, data: bytes, *parts: str) -> None:
        """Write a file so that readers see either nothing or all of it."""
        self._write(data, self.path(*parts), replace=True)

    def create_bytes(self, data: bytes, *parts: str) -> bool:
        """Write a file unless it exists; False if it did (nothing written).

        Exclusive on local disks (a hard link fails on an existing name, so of several
        concurrent writers exactly one wins); elsewhere a check, then a write.
        """
        return self._write(data, self.path(*parts), replace=False)

    def _write(self, data: bytes, target: str, replace: bool) -> bool:
        parent = target.rsplit("/", 1)[0]
        self.fs.create_dir(parent, recursive=True)
        if not self.local:
            if not replace and self.fs.get_file_info(target).type != pafs.FileType.NotFound:
                return False
            with self.fs.open_output_stream(target) as stream:
                stream.write(data)
            return True
        temporary = f"{target}.tmp-{uuid.uuid4().hex}"
        try:
            with open(temporary, "wb") as stream:
                stream.write(data)
                stream.flush()
                os.fsync(stream.fileno())
            if replace:
                os.replace(temporary, target)
            else:
                os.link(temporary, target)
        except FileExistsError:
            return False
        finally:
            with suppress(FileNotFoundError):
                os.remove(temporary)
        _fsync(parent)
        return True

    def read_json(self, *parts: str) -> Any:
        """Read a JSON file."""
        return json.loads(self.read_bytes(*parts))

    def write_json(self, value: Any, *parts: str) -> None:
        """Write a JSON file atomically."""
        self.write_bytes(_json_bytes(value), *parts)

    def create_json(self, value: Any, *parts: str) -> bool:
        """Write a JSON file unless it exists (see :meth:`create_bytes`); False if it did."""
        return self.create_bytes(_json_bytes(value), *parts)

    def move(self, source: str, target: str) -> None:
        """Move a file or directory (a rename on local disks, flushed before and after)."""
        source, target = self.path(source), self.path(target)
        self.fs.create_dir(target.rsplit("/", 1)[0], recursive=True)
        if self.local:
            _fsync_tree(source)
        self.fs.move(source, target)
        if self.local:
            _fsync(target.rsplit("/", 1)[0])
            _fsync(source.rsplit("/", 1)[0])

    def delete_file(self, *parts: str) -> None:
        """Remove a file, if it exists."""
        with suppress(FileNotFoundError):
            self.fs.delete_file(self.path(*parts))

    def delete_dir(self, *parts: str) -> None:
        """Remove a directory and everything under it, if it exists."""
        if self.exists(*parts):
            self.fs.delete_dir(self.path(*parts))


def mount_type(path: str, mounts: str) -> str | None:
    """The filesystem type of the mount holding an absolute path, from ``/proc/mounts`` text."""
    found, longest = None, -1
    for line in mounts.splitlines():
        fields = line.split()
        if len(fields) < 3:
            continue
        point = re.sub(r"\\([0-7]{3})", lambda m: chr(int(m.group(1), 8)), fields[1])
        inside = path == point or path.startswith(point.rstrip("/") + "/")
        if inside and len(point) >= longest:  # a later mount on the same point hides earlier ones
            found, longest = fields[2], len(point)
    return found


def _json_bytes(value: Any) -> bytes:
    return json.dumps(value, indent=2, default=str).encode()


def _fsync(path: str) -> None:
    """Flush a file or a directory (its entries) to disk."""
    descriptor = os.open(path, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


def _fsync_tree(path: str) -> None:
    """Flush a file, or a directory and everything below it, to disk."""
    if not os.path.isdir(path):
        _fsync(path)
        return
    for folder, _, files in os.walk(path):
        for name in files:
            _fsync(os.path.join(folder, name))
        _fsync(folder)
