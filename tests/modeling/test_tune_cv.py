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

