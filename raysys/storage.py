"""The storage root: one place for all state, a local path or any ``pyarrow.fs`` URI.

Writes that must appear whole go through :meth:`Storage.write_json` (temporary name, then a
rename on local disks; object stores publish a PUT atomically). Readers treat a directory as
published only once its manifest exists, so a crash never exposes a half-written object.
"""

from __future__ import annotations

import json
import os
import uuid
from dataclasses import dataclass
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

    def write_bytes(self, data: bytes, *parts: str) -> None:
        """Write a file so that readers see either nothing or all of it."""
        target = self.path(*parts)
        self.fs.create_dir(target.rsplit("/", 1)[0], recursive=True)
        if isinstance(self.fs, pafs.LocalFileSystem):
            temporary = f"{target}.tmp-{uuid.uuid4().hex}"
            with self.fs.open_output_stream(temporary) as stream:
                stream.write(data)
            self.fs.move(temporary, target)
        else:
            with self.fs.open_output_stream(target) as stream:
                stream.write(data)

    def read_json(self, *parts: str) -> Any:
        """Read a JSON file."""
        return json.loads(self.read_bytes(*parts))

    def write_json(self, value: Any, *parts: str) -> None:
        """Write a JSON file atomically."""
        self.write_bytes(json.dumps(value, indent=2, default=str).encode(), *parts)

    def move(self, source: str, target: str) -> None:
        """Move a file or directory (a rename on local disks)."""
        self.fs.create_dir(self.path(target).rsplit("/", 1)[0], recursive=True)
        self.fs.move(self.path(source), self.path(target))

    def delete_dir(self, *parts: str) -> None:
        """Remove a directory and everything under it, if it exists."""
        if self.exists(*parts):
            self.fs.delete_dir(self.path(*parts))
