"""The model registry: metadata in SQLite, artifacts at ``models/<name>/<version>/<file>``.

A version exists once its row commits: ``register`` stages the artifacts (in a staging directory
that records its owner, for ``raysys gc``), then in one ``BEGIN IMMEDIATE`` transaction allocates
the number, moves them in and inserts the rows (or undoes it). SQLite's locks and WAL need a
local disk: a storage root elsewhere (an object store, NFS, SMB, ...) needs ``registry.db_path``.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import sqlite3
import subprocess
import time
from collections.abc import Iterator, Sequence
from contextlib import closing, contextmanager, suppress
from dataclasses import asdict, astuple, dataclass, field
from datetime import datetime, timezone
from typing import Any

from raysys import staging
from raysys.errors import NotFound, RaysysError
from raysys.storage import Storage

MODELS = "models"
NAME_RE = re.compile(r"^(?!registry\.db)[A-Za-z0-9][A-Za-z0-9_.-]*$")  # as dataset names
ALIAS_RE = re.compile(r"^[a-z][a-z0-9_-]*$")
FILE_RE = re.compile(r"^[A-Za-z0-9_-][A-Za-z0-9._-]*(/[A-Za-z0-9_-][A-Za-z0-9._-]*)*$")
ALIAS_HISTORY_COLUMNS = """(id INTEGER PRIMARY KEY AUTOINCREMENT,
    name TEXT NOT NULL, alias TEXT NOT NULL, from_version INTEGER, to_version INTEGER,
    actor TEXT NOT NULL, reason TEXT NOT NULL, at TEXT NOT NULL)"""
SCHEMA = f"""CREATE TABLE IF NOT EXISTS model_versions (name TEXT NOT NULL, version INTEGER NOT NULL,
    created_at TEXT NOT NULL, metrics TEXT NOT NULL, lineage TEXT NOT NULL, params TEXT NOT NULL,
    run_id TEXT, description TEXT NOT NULL, PRIMARY KEY (name, version));
CREATE TABLE IF NOT EXISTS model_files (name TEXT NOT NULL, version INTEGER NOT NULL,
    file TEXT NOT NULL, sha256 TEXT NOT NULL, PRIMARY KEY (name, version, file));
CREATE TABLE IF NOT EXISTS aliases (name TEXT NOT NULL, alias TEXT NOT NULL,
    version INTEGER NOT NULL, PRIMARY KEY (name, alias));
CREATE TABLE IF NOT EXISTS alias_history {ALIAS_HISTORY_COLUMNS};
"""
NULLABLE_TO_VERSION = f"""CREATE TABLE alias_history_new {ALIAS_HISTORY_COLUMNS};
INSERT INTO alias_history_new SELECT * FROM alias_history;
DROP TABLE alias_history;
ALTER TABLE alias_history_new RENAME TO alias_history;
"""
"""A registry made before aliases could be removed: ``to_version`` may now be NULL (removed)."""


class _Record:
    def to_dict(self) -> dict[str, Any]:
        """Plain JSON form."""
        return asdict(self)


@dataclass
class ModelVersion(_Record):
    """One registered model version and where its artifacts live."""

    name: str
    version: int
    created_at: str
    metrics: dict[str, Any]
    lineage: dict[str, Any]
    params: dict[str, Any]
    run_id: str | None
    description: str
    files: dict[str, str]
    aliases: list[str] = field(default_factory=list)
    uri: str = ""

    def _repr_html_(self) -> str:
        from raysys.reprs import html_table

        lineage = [(key, self.lineage.get(key)) for key in ("dataset_version", "run_id", "features")]
        metrics = [(name, value) for name, value in self.metrics.items() if isinstance(value, (int, float))]
        return html_table(f"Model {self.name} v{self.version}", [
            ("aliases", ", ".join(self.aliases) or None), ("created", self.created_at), *lineage, *metrics])


@dataclass
class AliasMove(_Record):
    """One recorded move of an alias: who moved it, when, why, from which version to which (None: removed)."""

    name: str
    alias: str
    from_version: int | None
    to_version: int | None
    actor: str
    reason: str
    at: str


def code_version(path: str | None = None) -> str | None:
    """The git commit checked out at ``path`` (default: cwd), or None outside a git checkout."""
    try:
        done = subprocess.run(["git", "rev-parse", "HEAD"], cwd=path, capture_output=True,
                              text=True, timeout=10, check=False)
    except (OSError, subprocess.SubprocessError):
        return None
    sha = done.stdout.strip()
    return sha if done.returncode == 0 and re.fullmatch(r"[0-9a-f]{40}", sha) else None


NETWORK_FILESYSTEMS = frozenset({
    "nfs", "nfs4", "cifs", "smb", "smb2", "smb3", "smbfs", "afs", "ncpfs", "9p", "sshfs",
    "fuse.sshfs", "glusterfs", "fuse.glusterfs", "ceph", "fuse.ceph", "lustre", "gpfs", "beegfs",
    "davfs", "fuse.davfs2", "fuse.s3fs", "fuse.gcsfuse", "fuse.rclone", "fuse.juicefs",
    "fuse.goofys", "fuse.mountpoint-s3", "fuse.blobfuse", "fuse.blobfuse2",
})
"""Mount types where SQLite's file locks and WAL shared memory are unsafe."""


def registry_db_problem(local: bool, filesystem: str) -> str | None:
    """Why the registry's SQLite file cannot live under a storage root, or None if it can.

    ``filesystem`` is :meth:`Storage.filesystem_type`: a local root's mount type, else pyarrow's.
    """
    if not local:
        return f"it is not on a local disk ({filesystem} filesystem)"
    if filesystem in NETWORK_FILESYSTEMS:
        return f"it is on a network filesystem ({filesystem}), where SQLite's locking is unsafe"
    return None


def _set_wal(conn: sqlite3.Connection) -> None:
    """Switch to WAL mode, retrying: SQLite won't wait while another process switches it."""
    for _ in range(200):
        with suppress(sqlite3.OperationalError):
            conn.execute("PRAGMA journal_mode = WAL")
            return
        time.sleep(0.05)
    conn.execute("PRAGMA journal_mode = WAL")  # a last try, raising its error


def _create_tables(conn: sqlite3.Connection) -> None:
    """Create the tables, or bring those of an earlier raysys to this schema, in one write transaction."""
    conn.execute("BEGIN IMMEDIATE")
    try:
        _execute_all(conn, SCHEMA)
        columns = {row[1]: row for row in conn.execute("PRAGMA table_info(alias_history)")}
        if columns["to_version"][3]:  # notnull: made before aliases could be removed
            _execute_all(conn, NULLABLE_TO_VERSION)
        conn.execute("COMMIT")
    except BaseException:
        conn.execute("ROLLBACK")
        raise


def _execute_all(conn: sqlite3.Connection, script: str) -> None:
    """Each statement of a script (no ``;`` inside a literal) in the current transaction."""
    for statement in script.split(";"):
        if statement.strip():
            conn.execute(statement)


def _dumps(value: Any) -> str:
    """JSON, with numpy/torch values as Python numbers and lists, anything else as a string."""
    return json.dumps(value, sort_keys=True,
                      default=lambda o: o.tolist() if hasattr(o, "tolist") else str(o))


class ModelRegistry:
    """Register, resolve and alias model versions; several processes may share one registry."""

    def __init__(self, storage: Storage, db_path: str | None = None):
        if db_path is None:
            problem = registry_db_problem(storage.local, storage.filesystem_type())
            if problem:
                raise RaysysError(f"model registry: cannot keep its SQLite database under "
                                  f"storage.root {storage.uri}: {problem}; set registry.db_path "
                                  "to a file on a local disk")
            db_path = os.path.join(storage.base, MODELS, "registry.db")
        db_path = os.path.expanduser(db_path)
        os.makedirs(os.path.dirname(os.path.abspath(db_path)), exist_ok=True)
        self.storage, self.db_path, self._ready = storage, db_path, False

    def _connect(self) -> sqlite3.Connection:
        """A fresh autocommit connection (WAL, busy timeout); creates tables on first use."""
        conn = sqlite3.connect(self.db_path, timeout=60, isolation_level=None)  # busy timeout
        if not self._ready:
            _set_wal(conn)
            _create_tables(conn)
            self._ready = True
        return conn

    @contextmanager
    def _transaction(self, cleanup: Sequence[str] = ()) -> Iterator[sqlite3.Connection]:
        """A write transaction holding the lock throughout; on failure deletes ``cleanup`` dirs."""
        with closing(self._connect()) as conn:
            conn.execute("BEGIN IMMEDIATE")
            try:
                yield conn
                conn.execute("COMMIT")
            except BaseException:
                for path in cleanup:  # still under the lock, so no one else's files
                    self.storage.delete_dir(path)
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
                raise

    def _query(self, sql: str, args: tuple = ()) -> list[tuple]:
        with closing(self._connect()) as conn:
            return conn.execute(sql, args).fetchall()

    def register(self, name: str, files: dict[str, bytes], *, metrics: dict, lineage: dict,
                 params: dict, run_id: str | None, description: str = "") -> ModelVersion:
        """Store artifacts and metadata as the next version of ``name``."""
        hashes = _check_files(name, files)
        lineage = {"run_id": run_id, **lineage,
                   "code_version": lineage.get("code_version") or code_version()}
        meta = (_dumps(metrics), _dumps(lineage), _dumps(params), run_id, description)
        staged = staging.begin(self.storage, f"{MODELS}/{name}")
        try:
            for file, data in files.items():
                self.storage.write_bytes(bytes(data), staged, file)
            version = self._publish(name, staged, meta, hashes)
        finally:
            self.storage.delete_dir(staged)  # its owner marker; the artifacts unless they moved
        return self.get(name, version)

    def _publish(self, name: str, staged: str, meta: tuple, hashes: dict[str, str]) -> int:
        """Under the write lock: allocate the next number, move the files in, insert, commit."""
        placed: list[str] = []
        with self._transaction(cleanup=placed) as conn:
            (last,) = conn.execute("SELECT MAX(version) FROM model_versions WHERE name = ?",
                                   (name,)).fetchone()
            version = (last or 0) + 1
            placed.append(final := f"{MODELS}/{name}/{version}")
            self.storage.delete_dir(final)  # leftovers of a register that crashed before commit
            for file in hashes:
                self.storage.move(f"{staged}/{file}", f"{final}/{file}")
            self._insert_version(conn, name, version, meta, hashes)
        return version

    def _insert_version(self, conn: sqlite3.Connection, name: str, version: int,
                        meta: tuple, hashes: dict[str, str]) -> None:
        conn.execute("INSERT INTO model_versions VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                     (name, version, datetime.now(timezone.utc).isoformat(), *meta))
        conn.executemany("INSERT INTO model_files VALUES (?, ?, ?, ?)",
                         [(name, version, f, h) for f, h in hashes.items()])

    def get(self, name: str, ref: str | int) -> ModelVersion:
        """A version by number, ``latest``, or an alias name."""
        versions = {v.version: v for v in self.list_versions(name)}
        if not versions:
            known = ", ".join(self.list_models()) or "none registered yet"
            raise NotFound(f"model '{name}' does not exist (models: {known})")
        aliases = {a: v.version for v in versions.values() for a in v.aliases}
        number = max(versions) if ref == "latest" else aliases.get(ref, ref)  # alias: no digits
        found = versions.get(int(number)) if str(number).isdigit() else None
        if found is None:
            aliases_text = ", ".join(f"{a}->v{v}" for a, v in sorted(aliases.items())) or "none"
            raise NotFound(f"model '{name}' has no version or alias '{ref}' (versions: "
                           f"{', '.join(map(str, versions))}; aliases: {aliases_text})"
                           f"{_promote_hint(str(ref))}")
        return found

    def list_versions(self, name: str | None = None) -> list[ModelVersion]:
        """Registered versions (of one model, or all), ordered by name then version."""
        where, args = ("WHERE name = ?", (name,)) if name is not None else ("", ())
        order = {"model_versions": "name, version", "model_files": "file", "aliases": "alias"}
        with closing(self._connect()) as conn:
            rows, files, aliases = (conn.execute(f"SELECT * FROM {t} {where} ORDER BY {o}",
                                                 args).fetchall() for t, o in order.items())
        return [self._version(row, files, aliases) for row in rows]

    def _version(self, row: tuple, files: list[tuple], aliases: list[tuple]) -> ModelVersion:
        name, version, created_at, metrics, lineage, params, run_id, description = row
        return ModelVersion(name, version, created_at, json.loads(metrics), json.loads(lineage),
                            json.loads(params), run_id, description,
                            {f: h for n, v, f, h in files if (n, v) == (name, version)},
                            [a for n, a, v in aliases if (n, v) == (name, version)],
                            self.storage.path(MODELS, name, str(version)))

    def list_models(self) -> list[str]:
        """Names of all models with at least one version."""
        return [n for (n,) in self._query("SELECT DISTINCT name FROM model_versions ORDER BY 1")]

    def set_alias(self, name: str, alias: str, version: int, *, actor: str,
                  reason: str, only_if_unset: bool = False) -> AliasMove | None:
        """Point ``alias`` at ``version`` atomically and record the move.

        ``only_if_unset``: only when the alias points nowhere yet (checked in the same
        transaction); None when it already does, and nothing changes.
        """
        from raysys.secrets import mask_text

        version, reason = int(version), mask_text(reason)
        if not ALIAS_RE.match(alias) or alias == "latest":
            raise RaysysError(f"invalid alias name '{alias}': use lowercase letters, digits, "
                              "'_' or '-', starting with a letter (not 'latest')")
        with self._transaction() as conn:
            if not conn.execute("SELECT 1 FROM model_versions WHERE name = ? AND version = ?",
                                (name, version)).fetchone():
                raise NotFound(f"model '{name}' has no version {version}; '{alias}' unchanged")
            old = conn.execute("SELECT version FROM aliases WHERE name = ? AND alias = ?",
                               (name, alias)).fetchone()
            if old and only_if_unset:
                return None
            at = datetime.now(timezone.utc).isoformat()
            move = AliasMove(name, alias, old[0] if old else None, version, actor, reason, at)
            conn.execute("INSERT OR REPLACE INTO aliases VALUES (?, ?, ?)", (name, alias, version))
            conn.execute("INSERT INTO alias_history VALUES (NULL, ?, ?, ?, ?, ?, ?, ?)",
                         astuple(move))
        return move

    def remove_alias(self, name: str, alias: str, version: int, *, actor: str, reason: str) -> AliasMove | None:
        """Remove ``alias`` if it still points at ``version`` and record it; None (nothing changes) otherwise."""
        from raysys.secrets import mask_text

        with self._transaction() as conn:
            old = conn.execute("SELECT version FROM aliases WHERE name = ? AND alias = ?", (name, alias)).fetchone()
            if not old or old[0] != int(version):
                return None
            move = AliasMove(name, alias, old[0], None, actor, mask_text(reason), datetime.now(timezone.utc).isoformat())
            conn.execute("DELETE FROM aliases WHERE name = ? AND alias = ?", (name, alias))
            conn.execute("INSERT INTO alias_history VALUES (NULL, ?, ?, ?, ?, ?, ?, ?)", astuple(move))
        return move

    def aliases(self, name: str) -> dict[str, int]:
        """The aliases of a model and the versions they point at."""
        return dict(self._query("SELECT alias, version FROM aliases WHERE name = ?", (name,)))

    def alias_history(self, name: str) -> list[AliasMove]:
        """Every alias move of a model, oldest first."""
        rows = self._query("SELECT * FROM alias_history WHERE name = ? ORDER BY id", (name,))
        return [AliasMove(*row[1:]) for row in rows]  # row[0] is the id

    def load_files(self, version: ModelVersion) -> dict[str, bytes]:
        """Read a version's artifacts, verifying each sha256."""
        return read_artifacts(self.storage, version.name, version.version, version.files)


def read_artifacts(storage: Storage, name: str, version: int, files: dict[str, str]) -> dict[str, bytes]:
    """Read artifacts by name → sha256 (no database needed: serving replicas use this on any node)."""
    label = f"model {name} v{version}"
    out = {}
    for file, sha in files.items():
        path = f"{MODELS}/{name}/{version}/{file}"
        if not storage.exists(path):
            raise NotFound(f"{label}: artifact {file} is missing ({storage.path(path)})")
        data = storage.read_bytes(path)
        if hashlib.sha256(data).hexdigest() != sha:
            raise RaysysError(f"{label}: artifact {file} is corrupt (checksum mismatch)")
        out[file] = data
    return out


def _promote_hint(ref: str) -> str:
    """How to create a missing alias: the command, and for the champion what sets it."""
    if not ALIAS_RE.match(ref) or ref == "latest":
        return ""
    hint = f": promote a version with `raysys models promote VERSION --alias {ref}`"
    if ref == "champion":
        hint += ("; `raysys run` and `raysys train` promote the first model that beats the "
                 "trivial baseline")
    return hint


def _check_files(name: str, files: dict[str, bytes]) -> dict[str, str]:
    """Validate a model name and its artifacts; their sha256 by file name."""
    if not NAME_RE.match(name):
        raise RaysysError(f"invalid model name '{name}': use letters, digits, '_', '.' or '-'")
    if not files:
        raise RaysysError(f"model {name}: no artifact files to register")
    for file, data in files.items():
        if not isinstance(file, str) or not FILE_RE.match(file):
            raise RaysysError(f"model {name}: invalid artifact file name {file!r}")
        if not isinstance(data, (bytes, bytearray, memoryview)):
            raise RaysysError(f"model {name}: artifact {file} is {type(data).__name__}, not bytes")
    return {file: hashlib.sha256(data).hexdigest() for file, data in files.items()}
