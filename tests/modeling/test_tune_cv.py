"""Cross-validation (folds in parallel on Ray) and the tune entry point, on a real local Ray."""

from __future__ import annotations

import os

import pytest

from raysys.errors import ConfigError, RaysysError
from tests.modeling.test_train import sklearn_cfg, wait_until_no_placement_groups
from tests.test_cli_models import as_json, invoke


def test_cross_validation_reports_mean_and_std_per_metric(make_system):
    rs = make_system(sklearn_cfg("breast_cancer", "binary", epochs=10))
    rs.data.ingest()
    result = rs.models.cross_validate(folds=3)
    accuracy = result["summary"]["accuracy"]
    assert len(accuracy["values"]) == 3 and accuracy["mean"] >= 0.93 and accuracy["std"] < 0.05
    assert sum(fold["n"] for fold in result["per_fold"]) == 569  # every row held out exactly once
    assert rs.models.run(result["run_id"])["status"] == "finished"


def test_empty_search_space_is_a_config_error(make_system):
    rs = make_system(sklearn_cfg("breast_cancer", "binary", epochs=2))
    rs.data.ingest()
    with pytest.raises(ConfigError, match="tune.space: empty"):
        rs.models.tune()


def test_run_with_tune_searches_and_registers_the_best_trial(write_config, ray_session):
    space = {"train.lr": {"type": "loguniform", "low": 1e-3, "high": 3e-2},
             "model.hidden": {"type": "choice", "values": [[16], [32, 16]]}}
    config = str(write_config({**sklearn_cfg("breast_cancer", "binary", epochs=2, num_workers=2),
                               "tune": {"num_samples": 2, "grace_period": 1, "space": space}}))
    ran = as_json(invoke("run", "--tune", "-c", config, "--json"))
    assert ran["tune"]["trials"] == 2 and 1e-3 <= ran["tune"]["best_params"]["train.lr"] <= 3e-2
    model = as_json(invoke("models", "show", str(ran["version"]), "-c", config, "--json"))
    assert model["lineage"]["tune_run"] == ran["tune"]["run_id"]
    assert model["params"]["train"]["lr"] == ran["tune"]["best_params"]["train.lr"]
    assert model["params"]["model"]["hidden"] == ran["tune"]["best_params"]["model.hidden"]
    search = as_json(invoke("runs", "show", ran["tune"]["run_id"], "-c", config, "--json"))
    assert search["status"] == "finished" and len(search["history"]) == 2  # one row per trial
    assert min(row["val_loss"] for row in search["history"]) == ran["tune"]["best_metrics"]["val_loss"]
    # trials train with train.num_workers (2) as the final run does: each worker steps through half
    # the train split, so a trial's epoch ends on the same step as the final run's
    best = ran["tune"]["best_metrics"]
    final = as_json(invoke("runs", "show", ran["run_id"], "-c", config, "--json"))["history"]
    assert best["step"] == next(row["step"] for row in final if row["epoch"] == best["epoch"]) > 0
    # every trial's Train run gives its CPUs back: nothing stays reserved after the search
    assert wait_until_no_placement_groups(ray_session)


def test_search_space_and_trial_parameters():
    from ray.tune.search.sample import Categorical, Float, Integer

    from raysys.config import ParamSpace, TuneConfig
    from raysys.modeling.artifacts import TrainSpec
    from raysys.modeling.tune import apply_params, search_space, trial_cpus

    space = search_space({
        "train.lr": ParamSpace(type="loguniform", low=1e-4, high=1e-2),
        "model.dropout": ParamSpace(type="uniform", low=0.0, high=0.5),
        "train.batch_size": ParamSpace(type="randint", low=32, high=256),
        "model.hidden": ParamSpace(type="choice", values=[[32], [64, 32]]),
    })
    assert isinstance(space["train.lr"], Float) and isinstance(space["train.batch_size"], Integer)
    assert isinstance(space["model.hidden"], Categorical)
    spec = TrainSpec(model={"hidden": [8]}, train={"lr": 0.1}, inputs={}, task="binary", label="y", classes=[0, 1])
    tuned = apply_params(spec, {"train.lr": 0.003, "model.hidden": [64, 32]})
    assert (tuned.train["lr"], tuned.model["hidden"]) == (0.003, [64, 32]) and spec.train["lr"] == 0.1
    assert trial_cpus(2.0, 1) == pytest.approx(1.45) and trial_cpus(2.0, 2) == pytest.approx(0.7)
    with pytest.raises(ValueError, match="must name a model.\\* or train.\\* setting"):
        TuneConfig(space={"data.rows": {"type": "choice", "values": [1]}})


def test_scaling_settings_are_not_searched():
    from raysys.config import TuneConfig
    from raysys.modeling.tune import trial_scaling

    for key in ("train.num_workers", "train.use_gpu", "train.resources_per_worker", "train.max_failures"):
        with pytest.raises(ValueError, match=f"space key '{key}' is Ray Train scaling, not a hyperparameter"):
            TuneConfig(space={key: {"type": "choice", "values": [1, 2]}})
    assert trial_scaling({"num_workers": 2}, 2.0, 1) == {"num_workers": 2, "resources_per_worker": {"CPU": 0.725}}


def test_a_search_whose_final_run_cannot_fit_fails_before_searching(make_system):
    rs = make_system({**sklearn_cfg("breast_cancer", "binary", num_workers=8),
                      "tune": {"space": {"train.lr": {"type": "loguniform", "low": 1e-3, "high": 3e-2}}}})
    rs.data.ingest()
    with pytest.raises(RaysysError, match="8 workers × 1 CPU = 8 CPU, but the cluster has 2"):
        rs.models.tune()
    assert rs.models.list() == [] and not os.path.exists(rs.storage.path("tune"))  # no trial ran
