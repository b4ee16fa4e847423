"""The model registry on real SQLite and real files: versions, aliases, atomicity, integrity."""

from __future__ import annotations

import hashlib
import json
import multiprocessing
import os
import re
import sqlite3
import subprocess
import sys
from datetime import datetime, timedelta
from pathlib import Path

import numpy as np
import pytest

from raysys.errors import NotFound, RaysysError
from raysys.modeling.artifacts import bytes_to_state_dict, state_dict_to_bytes
from raysys.modeling.registry import ModelRegistry, code_version, registry_db_problem
from raysys.storage import Storage, mount_type
from tests.user_shell import clean_env

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture()
def root(tmp_path: Path) -> Path:
    return tmp_path / "store"


@pytest.fixture()
def registry(root: Path) -> ModelRegistry:
    return ModelRegistry(Storage.open(str(root)))


def register(registry: ModelRegistry, name: str, files: dict | None = None, **kwargs):
    files = files if files is not None else {"weights.bin": f"{name} weights".encode()}
    options = {"metrics": {}, "lineage": {}, "params": {}, "run_id": None, **kwargs}
    return registry.register(name, files, **options)


def files_under(path: Path) -> set[str]:
    """Relative paths of all plain files below a directory."""
    return {str(p.relative_to(path)) for p in path.rglob("*") if p.is_file()}


def test_register_get_and_list(registry: ModelRegistry, root: Path):
    lineage = {"dataset_version": "abc123", "features_id": "f1", "config_hash": "c0ffee"}
    files = {"weights.safetensors": b"\x00\x01weights", "config/model.json": b'{"layers": 2}'}
    mv = register(registry, "churn", files, metrics={"auc": np.float32(0.75), "n": np.int64(3)},
                  lineage=lineage, params={"lr": 0.01}, run_id="run-7", description="first")

    assert (mv.name, mv.version, mv.run_id, mv.description) == ("churn", 1, "run-7", "first")
    assert mv.metrics == {"auc": 0.75, "n": 3} and mv.params == {"lr": 0.01}
    assert mv.lineage == {**lineage, "run_id": "run-7", "code_version": code_version()}
    assert mv.files == {f: hashlib.sha256(d).hexdigest() for f, d in files.items()}
    assert datetime.fromisoformat(mv.created_at).utcoffset() == timedelta(0)
    assert mv.uri == str(root / "models" / "churn" / "1")
    assert files_under(Path(mv.uri)) == set(files)
    assert registry.load_files(mv) == files
    assert json.loads(json.dumps(mv.to_dict()))["files"] == mv.files

    assert registry.get("churn", 1) == mv
    assert registry.get("churn", "1") == mv
    assert registry.get("churn", "latest") == mv
    register(registry, "fraud.v2")
    assert registry.list_models() == ["churn", "fraud.v2"]
    everything = [(v.name, v.version) for v in registry.list_versions()]
    assert everything == [("churn", 1), ("fraud.v2", 1)]
    assert registry.list_versions("churn") == [mv]
    assert registry.list_versions("nope") == []
    assert (root / "models" / "registry.db").is_file()
    assert files_under(root / "models" / "churn" / "_staging") == set()


def test_tables_created_on_first_use_in_wal_mode(root: Path):
    registry = ModelRegistry(Storage.open(str(root)))
    db = root / "models" / "registry.db"
    assert not db.exists()
    assert registry.list_models() == []
    with sqlite3.connect(db) as conn:
        tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert {"model_versions", "model_files", "aliases", "alias_history"} <= tables


def test_versions_are_numbered_per_model(registry: ModelRegistry):
    assert [register(registry, "a").version for _ in range(3)] == [1, 2, 3]
    assert register(registry, "b").version == 1
    assert register(registry, "a").version == 4
    assert registry.get("a", "latest").version == 4
    assert [v.version for v in registry.list_versions("a")] == [1, 2, 3, 4]

    with pytest.raises(NotFound, match=r"no version or alias '9' \(versions: 1, 2, 3, 4; "):
        registry.get("a", 9)
    with pytest.raises(NotFound, match=r"alias 'champion'.*aliases: none"):
        registry.get("a", "champion")
    with pytest.raises(NotFound, match=r"model 'c' does not exist \(models: a, b\)"):
        registry.get("c", "latest")


def test_aliases_move_atomically_with_history(root: Path, registry: ModelRegistry):
    for _ in range(3):
        register(registry, "m")
    first = registry.set_alias("m", "champion", 1, actor="alice", reason="initial")
    registry.set_alias("m", "challenger", 2, actor="bob", reason="candidate")
    moved = registry.set_alias("m", "champion", 2, actor="carol", reason="won the A/B test")
    registry.set_alias("m", "canary_2-b", 3, actor="dave", reason="custom name")

    assert (first.from_version, first.to_version) == (None, 1)
    assert (moved.from_version, moved.to_version, moved.actor) == (1, 2, "carol")
    assert json.loads(json.dumps(moved.to_dict()))["reason"] == "won the A/B test"
    # a fresh registry (new connections) sees the committed state
    other = ModelRegistry(Storage.open(str(root)))
    assert other.aliases("m") == {"champion": 2, "challenger": 2, "canary_2-b": 3}
    assert other.get("m", "champion").version == 2
    assert other.get("m", "canary_2-b").version == 3
    assert sorted(other.get("m", 2).aliases) == ["challenger", "champion"]
    assert other.get("m", 1).aliases == []

    history = other.alias_history("m")
    assert [(h.alias, h.from_version, h.to_version, h.actor, h.reason) for h in history] == [
        ("champion", None, 1, "alice", "initial"),
        ("challenger", None, 2, "bob", "candidate"),
        ("champion", 1, 2, "carol", "won the A/B test"),
        ("canary_2-b", None, 3, "dave", "custom name"),
    ]
    assert history[2] == moved
    assert all(datetime.fromisoformat(h.at).utcoffset() == timedelta(0) for h in history)
    assert history[0].at <= history[-1].at


def test_an_alias_is_removed_only_from_the_version_it_still_points_at(registry: ModelRegistry):
    for _ in range(2):
        register(registry, "m")
    registry.set_alias("m", "challenger", 1, actor="bob", reason="candidate")
    assert registry.remove_alias("m", "challenger", 2, actor="eve", reason="stale view") is None
    assert registry.remove_alias("m", "shadow", 1, actor="eve", reason="never set") is None
    removed = registry.remove_alias("m", "challenger", 1, actor="carol", reason="rolled back")
    assert (removed.from_version, removed.to_version, removed.actor) == (1, None, "carol")
    assert registry.aliases("m") == {} and registry.get("m", 1).aliases == []
    assert [(h.alias, h.from_version, h.to_version) for h in registry.alias_history("m")] == [
        ("challenger", None, 1), ("challenger", 1, None)]
    with pytest.raises(NotFound, match="alias 'challenger'"):
        registry.get("m", "challenger")


def test_a_registry_made_before_aliases_could_be_removed_keeps_its_history(root: Path):
    """The former schema (alias_history.to_version NOT NULL) is migrated on first use, rows kept."""
    old = ModelRegistry(Storage.open(str(root)))
    register(old, "m")
    old.set_alias("m", "challenger", 1, actor="bob", reason="candidate")
    with sqlite3.connect(old.db_path) as conn:  # rebuild the table as the former schema had it
        conn.executescript("""
            CREATE TABLE former (id INTEGER PRIMARY KEY AUTOINCREMENT, name TEXT NOT NULL, alias TEXT NOT NULL,
                from_version INTEGER, to_version INTEGER NOT NULL, actor TEXT NOT NULL, reason TEXT NOT NULL,
                at TEXT NOT NULL);
            INSERT INTO former SELECT * FROM alias_history; DROP TABLE alias_history;
            ALTER TABLE former RENAME TO alias_history;""")
    reopened = ModelRegistry(Storage.open(str(root)))
    assert reopened.remove_alias("m", "challenger", 1, actor="carol", reason="rolled back")
    assert [(h.alias, h.from_version, h.to_version, h.actor) for h in reopened.alias_history("m")] == [
        ("challenger", None, 1, "bob"), ("challenger", 1, None, "carol")]
    reopened.set_alias("m", "champion", 1, actor="dan", reason="first")  # ids go on after the old rows
    with sqlite3.connect(reopened.db_path) as conn:
        assert [row[0] for row in conn.execute("SELECT id FROM alias_history ORDER BY id")] == [1, 2, 3]


def test_alias_on_unknown_version_changes_nothing(registry: ModelRegistry):
    register(registry, "m")
    registry.set_alias("m", "champion", 1, actor="alice", reason="initial")
    with pytest.raises(NotFound, match="model 'm' has no version 5"):
        registry.set_alias("m", "champion", 5, actor="mallory", reason="typo")
    with pytest.raises(NotFound, match="model 'ghost' has no version 1"):
        registry.set_alias("ghost", "champion", 1, actor="mallory", reason="typo")
    assert registry.aliases("m") == {"champion": 1}
    assert [h.actor for h in registry.alias_history("m")] == ["alice"]
    assert registry.alias_history("ghost") == []


@pytest.mark.parametrize("alias", ["latest", "1", "42", "Champion", "-x", "_x", "a b", "a.b", ""])
def test_invalid_alias_names(registry: ModelRegistry, alias: str):
    register(registry, "m")
    with pytest.raises(RaysysError, match="invalid alias name"):
        registry.set_alias("m", alias, 1, actor="alice", reason="bad name")
    assert registry.aliases("m") == {}
    assert registry.alias_history("m") == []


def _register_many(root: str, worker: int, count: int, barrier, results) -> None:
    """Child process: register `count` versions of one shared model as fast as possible."""
    try:
        registry = ModelRegistry(Storage.open(root))
        barrier.wait(timeout=60)
        done = []
        for i in range(count):
            files = {"weights.bin": f"worker {worker} model {i} ".encode() * 2000,
                     "meta/info.json": json.dumps({"worker": worker, "i": i}).encode()}
            mv = registry.register("shared", files, metrics={"i": i}, lineage={}, params={},
                                   run_id=f"w{worker}-{i}")
            done.append((mv.version, worker, i))
        results.put(done)
    except BaseException as error:  # noqa: BLE001 - reported to the parent
        results.put(f"worker {worker}: {error!r}")


def test_two_processes_register_at_once(root: Path):
    context = multiprocessing.get_context("spawn")
    barrier, results = context.Barrier(2), context.Queue()
    workers = [context.Process(target=_register_many, args=(str(root), w, 5, barrier, results))
               for w in range(2)]
    for worker in workers:
        worker.start()
    reports = [results.get(timeout=120) for _ in workers]
    assert not [r for r in reports if isinstance(r, str)]
    outcomes = [item for report in reports for item in report]
    for worker in workers:
        worker.join(timeout=60)
        assert worker.exitcode == 0

    assert sorted(version for version, _, _ in outcomes) == list(range(1, 11))
    registry = ModelRegistry(Storage.open(str(root)))
    assert [v.version for v in registry.list_versions("shared")] == list(range(1, 11))
    for version, worker, i in outcomes:
        mv = registry.get("shared", version)
        assert mv.run_id == f"w{worker}-{i}"
        weights = registry.load_files(mv)["weights.bin"]
        assert weights == f"worker {worker} model {i} ".encode() * 2000
    expected = {f"{v}/{f}" for v in range(1, 11) for f in ("weights.bin", "meta/info.json")}
    assert files_under(root / "models" / "shared") == expected


def test_failed_register_leaves_no_version_and_no_files(registry: ModelRegistry, root: Path,
                                                        monkeypatch: pytest.MonkeyPatch):
    register(registry, "m", {"weights.bin": b"v1"})
    before = files_under(root / "models" / "m")

    with pytest.raises(RaysysError, match="artifact b.bin is str, not bytes"):
        register(registry, "m", {"a.bin": b"ok", "b.bin": "not bytes"})

    def insert_fails(*args, **kwargs):
        raise sqlite3.OperationalError("disk I/O error")

    monkeypatch.setattr(ModelRegistry, "_insert_version", insert_fails)
    with pytest.raises(sqlite3.OperationalError):  # after the files were moved into place
        register(registry, "m", {"weights.bin": b"v2"})
    monkeypatch.undo()

    write_bytes, calls = Storage.write_bytes, []

    def second_write_fails(self, data, *parts):
        calls.append(parts)
        if len(calls) == 3:  # the staging owner marker, a.bin, then b.bin
            raise OSError("disk full")
        write_bytes(self, data, *parts)

    monkeypatch.setattr(Storage, "write_bytes", second_write_fails)
    with pytest.raises(OSError, match="disk full"):
        register(registry, "m", {"a.bin": b"a", "b.bin": b"b"})
    monkeypatch.undo()

    assert [v.version for v in registry.list_versions("m")] == [1]
    assert files_under(root / "models" / "m") == before == {"1/weights.bin"}
    assert register(registry, "m", {"weights.bin": b"v2"}).version == 2


def test_leftovers_of_a_crashed_register_are_not_a_version(registry: ModelRegistry, root: Path):
    register(registry, "m")
    leftover = root / "models" / "m" / "2"
    leftover.mkdir()
    (leftover / "junk.bin").write_bytes(b"from a crash between move and commit")
    with pytest.raises(NotFound):
        registry.get("m", 2)
    mv = register(registry, "m", {"weights.bin": b"real v2"})
    assert mv.version == 2
    assert files_under(leftover) == {"weights.bin"}


def test_corrupt_artifact_is_reported(registry: ModelRegistry):
    mv = register(registry, "m", {"weights.bin": b"good weights", "config.json": b"{}"})
    Path(mv.uri, "weights.bin").write_bytes(b"evil weights")
    with pytest.raises(RaysysError) as caught:
        registry.load_files(mv)
    assert not isinstance(caught.value, NotFound)
    assert str(caught.value) == "model m v1: artifact weights.bin is corrupt (checksum mismatch)"


def test_missing_artifact_is_not_found(registry: ModelRegistry):
    mv = register(registry, "m", {"weights.bin": b"good weights"})
    os.remove(Path(mv.uri, "weights.bin"))
    with pytest.raises(NotFound, match="model m v1: artifact weights.bin is missing"):
        registry.load_files(mv)


def test_invalid_names_and_empty_files_are_rejected(registry: ModelRegistry, root: Path):
    for name, files in [("../up", {"w": b""}), ("a/b", {"w": b""}), ("registry.db", {"w": b""}),
                        (".hidden", {"w": b""}), ("has space", {"w": b""}), ("m", {}),
                        ("m", {"../escape": b""}), ("m", {"/abs": b""}), ("m", {"a/../b": b""})]:
        with pytest.raises(RaysysError):
            register(registry, name, files)
    assert registry.list_models() == []
    assert files_under(root) <= {"models/registry.db", "models/registry.db-wal",
                                 "models/registry.db-shm"}


def test_safetensors_round_trip_is_exact(registry: ModelRegistry):
    import torch

    torch.manual_seed(0)
    layer = torch.nn.Linear(4, 3)
    state = {**layer.state_dict(), "steps": torch.tensor([7, 8], dtype=torch.int64),
             "half": torch.randn(2, 2).to(torch.bfloat16), "view": torch.arange(10.0)[::2],
             "tied": layer.weight}  # shares memory with "weight"
    mv = register(registry, "net", {"model.safetensors": state_dict_to_bytes(state)})
    loaded = bytes_to_state_dict(registry.load_files(mv)["model.safetensors"])

    assert loaded.keys() == state.keys()
    for key, tensor in state.items():
        assert loaded[key].dtype == tensor.dtype and torch.equal(loaded[key], tensor), key
    fresh = torch.nn.Linear(4, 3)
    fresh.load_state_dict({k: loaded[k] for k in ("weight", "bias")})
    assert torch.equal(fresh(torch.ones(1, 4)), layer(torch.ones(1, 4)))

    with pytest.raises(RaysysError, match="not a safetensors state_dict"):
        bytes_to_state_dict(b"definitely not safetensors")
    with pytest.raises(RaysysError, match="not tensors: lr"):
        state_dict_to_bytes({"lr": 0.1})


def test_non_local_root_needs_a_db_path(tmp_path: Path):
    storage = Storage.open("mock://bucket/root")
    with pytest.raises(RaysysError, match=r"^model registry: cannot keep its SQLite database under "
                                          r"storage\.root mock://bucket/root: it is not on a local "
                                          r"disk \(mock filesystem\); set registry\.db_path to a "):
        ModelRegistry(storage)
    # with a db_path, any pyarrow.fs filesystem holds the artifacts
    registry = ModelRegistry(storage, db_path=str(tmp_path / "meta" / "registry.db"))
    mv = register(registry, "m", {"weights.bin": b"in memory"})
    assert registry.load_files(registry.get("m", "latest")) == {"weights.bin": b"in memory"}
    assert storage.exists("models", "m", "1", "weights.bin") and mv.uri.endswith("models/m/1")
    assert not os.path.exists(tmp_path / "bucket")


def test_code_version(tmp_path: Path):
    sha = code_version(str(REPO))
    assert sha is not None and re.fullmatch(r"[0-9a-f]{40}", sha)
    kind = subprocess.run(["git", "cat-file", "-t", sha], cwd=REPO, capture_output=True,
                          text=True, check=True)
    assert kind.stdout.strip() == "commit"
    assert code_version(str(tmp_path)) is None


def test_a_missing_champion_names_the_command_that_sets_it(registry: ModelRegistry):
    register(registry, "m")
    with pytest.raises(NotFound) as caught:
        registry.get("m", "champion")
    assert str(caught.value) == (
        "model 'm' has no version or alias 'champion' (versions: 1; aliases: none): promote a "
        "version with `raysys models promote VERSION --alias champion`; `raysys run` and "
        "`raysys train` promote the first model that beats the trivial baseline")
    with pytest.raises(NotFound, match=r"aliases: none\): promote a version with `raysys models "
                                       r"promote VERSION --alias shadow`$"):
        registry.get("m", "shadow")
    with pytest.raises(NotFound, match=r"\(versions: 1; aliases: none\)$"):
        registry.get("m", 7)


MOUNTS = """\
/dev/sda1 / ext4 rw,relatime 0 0
tmpfs /dev/shm tmpfs rw 0 0
fileserver:/export/ml /mnt/ml nfs4 rw,vers=4.2 0 0
//nas/share /mnt/nas\\040drive cifs rw 0 0
me@host:/data /mnt/ssh fuse.sshfs rw 0 0
/dev/sdb1 /mnt/ml/scratch xfs rw 0 0
"""


@pytest.mark.parametrize(
    ("root", "network"),
    [
        ("/home/me/.raysys", None),
        ("/dev/shm/raysys", None),
        ("/mnt/ml/store", "nfs4"),
        ("/mnt/ml", "nfs4"),
        ("/mnt/ml/scratch/store", None),  # a local disk mounted inside the NFS tree
        ("/mnt/mlx/store", None),
        ("/mnt/nas drive/store", "cifs"),
        ("/mnt/ssh/x", "fuse.sshfs"),
    ],
)
def test_where_the_registry_database_may_live(root: str, network: str | None):
    problem = registry_db_problem(True, mount_type(root, MOUNTS))
    assert problem == (network and f"it is on a network filesystem ({network}), where SQLite's "
                                   "locking is unsafe")


def test_a_remote_root_without_a_db_path_fails_at_start_up_naming_the_setting(tmp_path: Path):
    assert registry_db_problem(False, "s3") == "it is not on a local disk (s3 filesystem)"
    config = tmp_path / "raysys.yaml"
    config.write_text(json.dumps({"storage": {"root": "mock://bucket/root"},
                                  "data": {"name": "d", "source": {"kind": "csv", "path": "x"}}}))
    env = clean_env(tmp_path / "home")
    done = subprocess.run([str(Path(sys.executable).with_name("raysys")), "models", "list", "-c",
                           str(config)], env=env, capture_output=True, text=True, timeout=300,
                          check=False)
    assert done.returncode == 1, done.stderr[-2000:]
    assert done.stderr.strip() == (
        "error: model registry: cannot keep its SQLite database under storage.root "
        "mock://bucket/root: it is not on a local disk (mock filesystem); set registry.db_path "
        "to a file on a local disk")
