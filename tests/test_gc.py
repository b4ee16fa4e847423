"""``raysys gc``: staging of dead writers goes, a live writer's stays, a dry run removes nothing."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
import yaml

from raysys import staging
from raysys.config import SchemaConfig
from raysys.data.ingest import append_rows
from raysys.data.store import DatasetStore
from raysys.maintenance import staging_verdict
from raysys.storage import Storage
from tests.user_shell import clean_env

RAYSYS = str(Path(sys.executable).with_name("raysys"))
DAY = 24 * 3600
FOREIGN = "owner pid 7 on h cannot be checked from here"
# A writer that stages like an ingest and a model registration, says where, then waits.
WRITER = """
import sys, time
from raysys import staging
from raysys.data.store import DatasetStore
from raysys.storage import Storage

storage = Storage.open(sys.argv[1])
paths = [DatasetStore(storage).new_staging("d"), staging.begin(storage, "models/m")]
for path in paths:
    storage.write_bytes(b"x" * 1000, path, "data/part-0.parquet")
print(" ".join(paths), flush=True)
time.sleep(600)
"""


def write_config(folder: Path, root: Path) -> Path:
    config = folder / "raysys.yaml"
    source = {"kind": "csv", "path": "unused.csv"}
    config.write_text(yaml.safe_dump({"storage": {"root": str(root)},
                                      "data": {"name": "d", "source": source}}))
    return config


def start_writer(root: Path, env: dict[str, str]) -> tuple[subprocess.Popen, list[str]]:
    writer = subprocess.Popen([sys.executable, "-c", WRITER, str(root)], env=env, text=True,
                              stdout=subprocess.PIPE)
    return writer, writer.stdout.readline().split()


def make_old(path: Path) -> None:
    """Set the modification time of a directory and everything in it to two days ago."""
    old = time.time() - 2 * DAY
    for item in [path, *path.rglob("*")]:
        os.utime(item, (old, old))


def gc(config: Path, env: dict[str, str], *args: str) -> dict:
    done = subprocess.run([RAYSYS, "gc", "-c", str(config), "--json", *args], env=env,
                          capture_output=True, text=True, timeout=300, check=False)
    assert done.returncode == 0, done.stderr[-2000:]
    return json.loads(done.stdout)


def tree(root: Path) -> dict[str, int]:
    return {str(p.relative_to(root)): p.stat().st_size for p in root.rglob("*") if p.is_file()}


@pytest.fixture()
def env(tmp_path: Path) -> dict[str, str]:
    (tmp_path / "home").mkdir()
    return clean_env(tmp_path / "home")


def test_gc_removes_what_dead_writers_left_and_keeps_a_live_writers_staging(tmp_path, env):
    root = tmp_path / "store"
    config = write_config(tmp_path, root)
    store = DatasetStore(Storage.open(str(root)))
    schema = SchemaConfig.model_validate({"columns": {"id": {"type": "int"}}})
    version = append_rows(store, "d", pd.DataFrame({"id": [1, 2, 3]}), schema).manifest.version
    unlisted = root / "datasets" / "d" / version / "data" / "part-crashed.parquet"
    unlisted.write_bytes(b"y" * 500)  # moved in by a publish that died before its manifest
    unpublished = root / "datasets" / "d" / "0123456789abcdef" / "data" / "part-0.parquet"
    unpublished.parent.mkdir(parents=True)
    unpublished.write_bytes(b"z" * 300)
    for path in (unlisted, unpublished.parent.parent):
        make_old(path)
    unmarked_old = root / "models" / "m" / "_staging" / "from-an-old-release"
    unmarked_young = root / "models" / "m" / "_staging" / "just-started"
    for path in (unmarked_old, unmarked_young):
        path.mkdir(parents=True)
        (path / "model.safetensors").write_bytes(b"w" * 200)
    make_old(unmarked_old)

    dead, dead_paths = start_writer(root, env)
    dead.send_signal(signal.SIGKILL)
    dead.wait(timeout=60)
    live, live_paths = start_writer(root, env)
    try:
        before = tree(root)
        planned = gc(config, env, "--dry-run")
        assert tree(root) == before  # a dry run removes nothing
        done = gc(config, env)
        assert (planned.pop("dry_run"), done.pop("dry_run")) == (True, False)
        assert planned == done  # and reports what the real run then removes

        removed = {item["path"]: item for item in done["removed"]}
        assert set(removed) == {*dead_paths, "models/m/_staging/from-an-old-release"}
        for path in dead_paths:
            assert re.fullmatch(rf"owner pid {dead.pid} on .+ is gone", removed[path]["reason"])
        assert removed["models/m/_staging/from-an-old-release"]["reason"] == \
               "no owner marker, untouched for 48.0 h"
        kept = {item["path"] for item in done["kept"]}
        assert kept == {*live_paths, "models/m/_staging/just-started"}
        gone = {k for k in before if k.startswith((*dead_paths, "models/m/_staging/from-an-old"))}
        assert set(before) - set(tree(root)) == gone
        assert done["freed_bytes"] == sum(before[k] for k in gone) > 2000
        assert live.poll() is None  # still writing, its staging intact
        assert all((root / p / "data" / "part-0.parquet").is_file() for p in live_paths)
        # while a write to dataset d is staging, d's unpublished files may be that write's
        assert unlisted.is_file() and unpublished.is_file()
    finally:
        live.kill()
        live.wait(timeout=60)

    before = tree(root)
    done = gc(config, env)  # the second writer is gone now too
    assert {item["path"] for item in done["removed"]} == {
        *live_paths, f"datasets/d/{version}", "datasets/d/0123456789abcdef"}
    assert not unlisted.exists() and not unpublished.parent.parent.exists()
    manifest = store.load("d", version)
    assert all((root / "datasets" / "d" / f).is_file() for f in manifest.files)
    assert done["freed_bytes"] == sum(before[k] for k in set(before) - set(tree(root)))
    assert gc(config, env)["removed"] == []


@pytest.mark.parametrize(
    ("status", "age", "remove", "reason"),
    [
        ("gone", 0, True, "owner pid 7 on h is gone"),
        ("running", 9 * DAY, False, "owner pid 7 on h is running"),
        ("unknown", 2 * DAY, True, f"{FOREIGN}, untouched for 48.0 h"),
        ("unknown", 3600, False, f"{FOREIGN}, untouched for only 1.0 h (removed after 24.0 h)"),
        (None, DAY, True, "no owner marker, untouched for 24.0 h"),
        (None, 0, False, "no owner marker, untouched for only 0.0 h (removed after 24.0 h)"),
    ],
)
def test_staging_verdict(status, age, remove, reason):
    assert staging_verdict(status, {"pid": 7, "host": "h"}, age, DAY) == (remove, reason)


def test_owner_status_of_this_a_dead_and_a_foreign_process():
    me = staging.owner_record()
    assert staging.owner_status(me) == "running"
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    record = staging.owner_record(child.pid)
    child.wait(timeout=60)
    assert staging.owner_status(record) == "gone"
    assert staging.owner_status({**me, "started": "another boot:1"}) == "gone"  # pid reused
    assert staging.owner_status({**me, "host": "elsewhere"}) == "unknown"
    assert staging.owner_status({"pid": "x"}) == "unknown"


def test_older_than_must_be_a_duration(tmp_path, env):
    config = write_config(tmp_path, tmp_path / "store")
    done = subprocess.run([RAYSYS, "gc", "-c", str(config), "--older-than", "soon"], env=env,
                          capture_output=True, text=True, timeout=300, check=False)
    assert done.returncode == 1
    assert done.stderr.strip() == ("error: --older-than: 'soon' is not a duration "
                                   "(e.g. 90m, 24h, 2d)")
