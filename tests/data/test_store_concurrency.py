"""Two real processes publish the same content at the same moment: one version, nothing lost."""

from __future__ import annotations

import multiprocessing
from pathlib import Path

import pandas as pd
import pyarrow.parquet as pq

from raysys.config import SchemaConfig
from raysys.data.ingest import ValidatingSink, build_manifest, build_report
from raysys.data.store import DatasetStore
from raysys.storage import Storage

ROUNDS = 6
SCHEMA = {"columns": {"id": {"type": "int", "unique": True}, "x": {"type": "float"}}}


def batch(round_: int) -> pd.DataFrame:
    ids = range(round_ * 100, round_ * 100 + 50)
    return pd.DataFrame({"id": list(ids), "x": [i / 7 if i % 9 else -1.0 for i in ids]})


def _publish_rounds(root: str, barrier, results) -> None:
    """Child process: each round, stage the same batch as the other child, then publish at once."""
    try:
        store, schema = DatasetStore(Storage.open(root)), SchemaConfig.model_validate(SCHEMA)
        for round_ in range(ROUNDS):
            parent = store.latest("d")
            staging = store.new_staging("d")
            summary = ValidatingSink(store.storage, staging, schema).write_frames([batch(round_)])
            manifest = build_manifest(store, "d", {"kind": "append"}, schema, summary,
                                      build_report(summary, schema))
            manifest.files = parent.files if parent else []
            barrier.wait(timeout=60)
            published, created = store.publish(
                manifest, staging, {"files": summary.files, "quarantine_files": []})
            results.put((round_, published.version, created))
            barrier.wait(timeout=60)  # both done before the next round reads its parent
    except BaseException as error:  # noqa: BLE001 - reported to the parent
        results.put(f"{type(error).__name__}: {error}")
        barrier.abort()


def test_two_processes_publishing_the_same_content_get_one_intact_version(tmp_path: Path):
    root = tmp_path / "store"
    context = multiprocessing.get_context("spawn")
    barrier, results = context.Barrier(2), context.Queue()
    workers = [context.Process(target=_publish_rounds, args=(str(root), barrier, results))
               for _ in range(2)]
    for worker in workers:
        worker.start()
    reports: list = []
    while len(reports) < 2 * ROUNDS and not any(isinstance(r, str) for r in reports):
        reports.append(results.get(timeout=120))
    for worker in workers:
        worker.join(timeout=60)
    assert not [r for r in reports if isinstance(r, str)], reports
    assert [w.exitcode for w in workers] == [0, 0]

    store = DatasetStore(Storage.open(str(root)))
    versions = store.versions("d")
    assert len(versions) == ROUNDS
    for round_, manifest in enumerate(versions):
        outcomes = sorted(created for r, version, created in reports if r == round_)
        assert outcomes == [False, True], (round_, reports)  # one created it, one found it
        assert {version for r, version, _ in reports if r == round_} == {manifest.version}
        frame = pd.concat([pq.read_table(p).to_pandas() for p in store.file_paths(manifest)])
        expected = pd.concat([batch(r) for r in range(round_ + 1)])
        assert sorted(frame["id"]) == sorted(expected["id"])
        on_disk = {str(p.relative_to(root / "datasets" / "d"))
                   for p in (root / "datasets" / "d" / manifest.version).rglob("*.parquet")}
        assert on_disk == {f for f in manifest.files if f.startswith(manifest.version)}
    assert not list((root / "datasets" / "d" / "_staging").iterdir())
