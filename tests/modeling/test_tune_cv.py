"""Cross-validation (folds in parallel on Ray) and the tune entry point, on a real local Ray."""

from __future__ import annotations

import pytest

from raysys.errors import ConfigError
from tests.modeling.test_train import sklearn_cfg


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



def test_search_space_and_trial_parameters():
    from ray.tune.search.sample import Categorical, Float, Integer

    from raysys.config import ParamSpace, TuneConfig
    from raysys.modeling.train import TrainSpec
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
