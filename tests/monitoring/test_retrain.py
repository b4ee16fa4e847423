"""A real retrain on Ray: labelled production rows → a new dataset version → Ray Train → challenger or not.

The production logs are written as the serving layer writes them (the storage layout of
``logs/predictions`` and ``logs/feedback``); the champion, the data version, the training and
the registry are real.
"""

from __future__ import annotations

import shutil
import uuid
from pathlib import Path

import pandas as pd
import pytest
import yaml

from raysys.audit import read_audit
from tests.modeling.test_train import sklearn_cfg, system_from
from tests.monitoring.conftest import write_log_part

COPIES = 3  # each dataset row is seen this often in production, with other request ids


def cfg(**retrain) -> dict:
    return {**sklearn_cfg("breast_cancer", "binary", epochs=8),
            "monitor": {"retrain": {"min_labelled": 100, "holdout": 0.3, "reference_rows": 100, **retrain}}}


def write_production(rs, flip: bool) -> int:
    """The dataset's rows answered in production, and their labels (flipped: concept drift)."""
    rows = pd.concat([rs.data.read().to_pandas()] * COPIES, ignore_index=True)
    n = len(rows)
    now = pd.Timestamp.now(tz="UTC")
    ids = [f"req-{uuid.uuid4().hex}" for _ in range(n)]
    labels = (1 - rows["target"]) if flip else rows["target"]
    log = rows.drop(columns=["target"]).assign(
        _time=now, _request_id=ids, _model_version=1, _role="answer", _latency_ms=1.0, _key=None, _row=0,
        _prediction="0", _probabilities=None, _input_flags="")
    write_log_part(rs, "predictions", log)
    write_log_part(rs, "feedback", pd.DataFrame({"_request_id": ids, "_row": 0, "_label": labels.astype(str),
                                             "_time": now, "_source": "bulk"}))
    return n


@pytest.fixture(scope="module")
def champion(served, tmp_path_factory):
    """(root, system): a copy of the served breast-cancer model's root (v1 the champion: no training of
    its own) and concept-drifted labelled production traffic."""
    source = Path(yaml.safe_load(served[0].config_path.read_text())["storage"]["root"])
    root = tmp_path_factory.mktemp("retrain")
    shutil.copytree(source, root, dirs_exist_ok=True, ignore=lambda folder, names: [
        n for n in names if Path(folder) == source and n not in ("datasets", "splits", "features", "models")])
    rs = system_from(cfg(), root)
    write_production(rs, flip=True)
    return root, rs


def test_retrain_builds_a_dataset_version_with_lineage_and_registers_a_better_challenger(champion):
    from raysys.monitoring.retrain import retrain

    _, rs = champion
    parent = rs.data.show()
    champion_version = rs.models.registry.get(rs.models.name, "champion").version
    result = retrain(rs, "quality", "live accuracy collapsed", incident="inc-1")
    assert result.status == "challenger" and result.challenger, result.decision
    # the new dataset version: validated, the champion's as its parent, a sample of the champion's
    # training rows beside the production rows, the held-out rows not in it
    data = rs.data.show(result.dataset_version)
    assert data.source["parent"] == parent.version == result.parent_dataset_version
    assert data.source["kind"] == "retrain" and data.source["incident"] == "inc-1"
    rows = result.evidence["rows"]
    assert rows["labelled"] == parent.row_count * COPIES and rows["held_out"] > 0
    assert data.row_count == rows["reference"] + rows["added"] and rows["reference"] == 100
    # the candidate: trained on it, better on the held-out rows, aliased challenger with its lineage
    model = rs.models.registry.get(rs.models.name, "challenger")
    assert model.version == result.model_version != champion_version
    assert model.lineage["dataset_version"] == data.version and model.run_id == result.run_id
    assert model.lineage["retrain"]["champion_version"] == champion_version
    champion_params = rs.models.registry.get(rs.models.name, champion_version).params
    assert model.params["train"] == champion_params["train"]  # the champion's settings
    comparison = result.evidence["comparison"]
    assert comparison["metric"] == "accuracy" and comparison["candidate"] > comparison["champion"]
    events = [e for e in read_audit(rs.storage, "monitor.retrain.") if e.get("incident") == "inc-1"]
    assert [e["action"] for e in events] == ["monitor.retrain.start", "monitor.retrain.done"]
    done = events[-1]
    assert done["actor"] == "raysys-monitor" and done["model_version"] == result.model_version
    assert done["dataset_version"] == data.version and done["run_id"] == result.run_id


def test_too_few_labelled_rows_is_a_clear_skip_with_no_new_data(champion):
    from raysys.monitoring.retrain import retrain

    root, _ = champion
    rs = system_from(cfg(min_labelled=10**6), root)
    versions = len(rs.data.versions())
    result = retrain(rs, "manual", "asked for", incident=None)
    assert result.status == "not_enough_labels" and "not enough labelled rows" in result.decision
    assert "min_labelled is 1000000" in result.decision and result.dataset_version is None
    assert len(rs.data.versions()) == versions
    assert read_audit(rs.storage, "monitor.retrain.skipped")[-1]["decision"] == result.decision


def test_a_retrain_for_an_incident_only_takes_records_answered_after_it(champion):
    from raysys.monitoring.retrain import read_labelled, retrain, wait_for_labels

    _, rs = champion
    everything = len(read_labelled(rs))
    assert everything and len(read_labelled(rs, since="2000-01-01T00:00:00+00:00")) == everything
    later = "2999-01-01T00:00:00+00:00"
    assert read_labelled(rs, since=later).empty
    assert wait_for_labels(rs, later, stopping=lambda: True) == 0  # a stopping monitor does not wait
    assert wait_for_labels(rs, "2000-01-01T00:00:00+00:00") == everything  # enough already: no wait
    result = retrain(rs, "drift", "drifted", incident="inc-2", since=later)
    assert result.status == "not_enough_labels" and f"answered after {later}" in result.decision
