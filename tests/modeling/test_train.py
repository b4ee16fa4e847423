"""Training on a real local Ray Train, evaluation, the registry and runs, end to end."""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path

import pytest

from raysys.errors import ConfigError, NotFound, RaysysError

FAST_TRAIN = {"epochs": 30, "batch_size": 64, "lr": 0.003, "seed": 0, "early_stopping": {"patience": 8}}


def sklearn_cfg(dataset: str, task: str, **train) -> dict:
    split = {"kind": "stratified" if task != "regression" else "random", "val": 0.15, "test": 0.2, "seed": 1}
    return {
        "project": {"name": f"{dataset}-model"},
        "data": {"name": dataset, "source": {"kind": "sklearn", "dataset": dataset}, "label": "target",
                 "task": task, "split": split},
        "train": {**FAST_TRAIN, **train},
        "tracking": {"wandb": True},
    }


def system_from(cfg: dict, root: Path):
    from raysys import System
    from raysys.config import parse_config

    return System(parse_config({**cfg, "storage": {"root": str(root)}}))


@pytest.fixture(scope="module")
def trained(served):
    """The served breast-cancer model (trained once per session, with ``sklearn_cfg``) and its TrainResult."""
    rs, _ = served
    return rs, rs.trained


def test_breast_cancer_reaches_the_quality_bar_and_is_registered(trained):
    cancer, result = trained
    metrics = result.metrics["metrics"]
    assert metrics["accuracy"] >= 0.95 and metrics["roc_auc"] >= 0.97
    assert result.metrics["baseline"]["accuracy"] < 0.7  # the majority class, reported beside it
    version = cancer.models.show(str(result.model.version))
    assert version.version == 1 and version.metrics["accuracy"] == metrics["accuracy"]
    lineage = version.lineage
    assert lineage["dataset_version"] == cancer.data.show().version and lineage["run_id"] == result.run_id
    assert lineage["features"] and lineage["config_hash"]
    run = cancer.models.run(result.run_id)
    assert run["status"] == "finished" and len(run["history"]) == len(result.history) > 0
    assert Path(run["wandb"]["dir"]).exists()
    model = cancer.models.load("1")
    rows = cancer.data.read(split="test").to_pandas().drop(columns=["target"]).head(3)
    assert model.predict(rows).shape == (3,)


def test_same_config_and_data_give_the_same_metrics(trained, make_system):
    first_system, first = trained
    again = make_system(sklearn_cfg("breast_cancer", "binary"))
    again.data.ingest()
    assert again.data.show().version == first_system.data.show().version
    second = again.models.train()
    assert second.metrics["metrics"] == first.metrics["metrics"]
    assert second.model.lineage["features"] == first.model.lineage["features"]


def test_diabetes_regression_reaches_the_quality_bar(make_system):
    rs = make_system(sklearn_cfg("diabetes", "regression", epochs=60, lr=0.01))
    rs.data.ingest()
    metrics = rs.models.train().metrics
    assert metrics["metrics"]["r2"] >= 0.40
    assert abs(metrics["baseline"]["r2"]) < 0.1


def test_evaluate_and_promote(trained):
    cancer, _ = trained
    evaluation = cancer.models.evaluate("1", split="val")
    assert evaluation["metrics"]["accuracy"] > 0.9 and evaluation["split_rows"] > 50
    move = cancer.models.promote("1", "champion", "tester", "best so far")
    assert cancer.models.show("champion").version == 1 and move.reason == "best so far"
    with pytest.raises(NotFound):
        cancer.models.show("7")


def registered_checkpoint(train_dir: Path) -> bool:
    """Whether Ray Train's controller has registered a checkpoint of the run (not just written it)."""
    import json

    for snapshot in train_dir.glob("*/checkpoint_manager_snapshot.json"):
        try:
            if json.loads(snapshot.read_text()).get("latest_checkpoint_result"):
                return True
        except ValueError:  # being written
            pass
    return False


def wait_until_no_placement_groups(ray, timeout_s: float = 60.0) -> bool:
    """True once every placement group is removed: a finished run holds no CPUs."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if all(pg["state"] == "REMOVED" for pg in ray.util.placement_group_table().values()):
            return True
        time.sleep(1)
    return False


def test_worker_killed_mid_training_resumes_from_its_checkpoint(make_system, ray_session, tmp_path):
    rs = make_system(sklearn_cfg("breast_cancer", "binary", epochs=10, max_failures=1, early_stopping=None))
    rs.data.ingest()
    pid_file = tmp_path / "pids.txt"
    killed = []

    def kill_first_worker():
        deadline = time.time() + 240
        while time.time() < deadline and not killed:
            if pid_file.exists() and registered_checkpoint(Path(rs.storage.path("train"))):
                pid = int(pid_file.read_text().split()[0])
                os.kill(pid, 9)
                killed.append(pid)
            time.sleep(0.2)

    killer = threading.Thread(target=kill_first_worker, daemon=True)
    killer.start()
    result = rs.models.train(extra={"pid_file": str(pid_file)})
    killer.join(timeout=5)
    assert killed, "the worker was never killed"
    starts = pid_file.read_text().splitlines()
    assert starts[0].endswith("fresh") and starts[1].endswith("resumed"), starts
    assert result.resumed_from_checkpoint and len(result.history) == 10  # history survives the restart
    assert result.metrics["metrics"]["accuracy"] >= 0.9
    # the run's controller and its placement group go away with it (nothing left to block a later search)
    assert wait_until_no_placement_groups(ray_session)


def test_unknown_model_type_is_a_config_error(make_system):
    cfg = sklearn_cfg("breast_cancer", "binary")
    cfg["model"] = {"type": "transformer-xl"}
    rs = make_system(cfg)
    rs.data.ingest()
    with pytest.raises(ConfigError, match="model.type: unknown model type 'transformer-xl'"):
        rs.models.train()
    assert rs.models.list() == []


def test_impossible_resources_fail_fast(make_system):
    rs = make_system(sklearn_cfg("breast_cancer", "binary", num_workers=8))
    rs.data.ingest()
    started = time.time()
    with pytest.raises(RaysysError, match="8 workers × 1 CPU = 8 CPU, but the cluster has 2"):
        rs.models.train()
    assert time.time() - started < 60 and rs.models.list() == []


def test_single_class_training_data_is_refused(make_system, tmp_path):
    import pandas as pd

    frame = pd.DataFrame({"x": range(200), "target": [1] * 200})
    frame.to_parquet(tmp_path / "one.parquet")
    rs = make_system({"data": {"name": "one", "source": {"kind": "parquet", "path": str(tmp_path / "one.parquet")},
                               "label": "target", "task": "binary"}, "tracking": {"wandb": False}})
    rs.data.ingest()
    with pytest.raises(RaysysError, match=r"1 class\(es\)"):
        rs.models.train()


def test_missing_dataset_version_and_corrupt_artifact(trained):
    cancer, result = trained
    with pytest.raises(NotFound, match="no version 'abc123'"):
        cancer.models.train("abc123")
    weights = Path(result.model.uri) / "model.safetensors"
    original = weights.read_bytes()
    weights.write_bytes(b"garbage")
    try:
        with pytest.raises(RaysysError, match="corrupt"):
            cancer.models.evaluate(str(result.model.version))
    finally:
        weights.write_bytes(original)
