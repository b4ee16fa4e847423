"""Decision rules and explanations on the shared served app (a real Ray Serve), restored afterwards."""

from __future__ import annotations

import time

import numpy as np
import pytest
import requests
import yaml

from raysys import System
from raysys.config import parse_config
from raysys.errors import ConfigError
from tests.serving.test_server import raw_rows

RULES = {"class": 1, "default": "refer",
         "rules": [{"action": "clear", "min": 0.9}, {"action": "review", "min": 0.2, "max": 0.9}]}


def with_decisions(rs, decisions: dict | None) -> System:
    """The served system's config (same storage, same app) with these decision rules."""
    cfg = yaml.safe_load(rs.config_path.read_text())
    return System(parse_config({**cfg, "decisions": decisions} if decisions else cfg))


def expected(probabilities: list[list[float]]) -> list[str]:
    """RULES by hand: P(class 1) >= 0.9 clear, in [0.2, 0.9) review, else refer."""
    return ["clear" if p >= 0.9 else "review" if p >= 0.2 else "refer" for _, p in probabilities]


def logged(rs, request_id: str, rows: int, timeout_s: float = 20.0):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        log = rs.serving.prediction_log()
        if not log.empty and (found := log[log["_request_id"] == request_id]).shape[0] == rows:
            return found.sort_values("_row")
        time.sleep(0.5)
    raise AssertionError(f"{request_id} not in the prediction log")


def test_rules_decide_beside_predictions_are_logged_audited_and_restored(served):
    rs, url = served
    before, rows = rs.serving.plan(), raw_rows(rs, 30)  # both classes
    champion = str(before.champion)
    ruled = with_decisions(rs, RULES)
    try:
        move = ruled.serving.deploy(champion)  # the same version, new rules: applied in place
        assert move["applied_to_running_app"] is True
        body = requests.post(f"{url}/v1/predict", json={"records": rows}, headers={"x-request-id": "decided"},
                             timeout=30).json()
        assert body["decisions"] == expected(body["probabilities"]) and len(set(body["decisions"])) >= 2
        assert logged(rs, "decided", len(rows))["_decision"].tolist() == body["decisions"]

        name = rs.models.name
        assert {"name": "decision", "datatype": "BYTES", "shape": [-1]} in requests.get(
            f"{url}/v2/models/{name}", timeout=30).json()["outputs"]
        inputs = [{"name": c, "shape": [len(rows)], "datatype": "FP64", "data": [r[c] for r in rows]} for c in rows[0]]
        infer = requests.post(f"{url}/v2/models/{name}/infer", json={"inputs": inputs}, timeout=30).json()
        assert {o["name"]: o["data"] for o in infer["outputs"]}["decision"] == body["decisions"]

        event = rs.serving.audit()[-2]  # serve.rules, then the deploy
        assert event["action"] == "serve.rules" and event["from"] is None and event["to"] == ruled.serving.rules()[
            "digest"] and event["rules"]["rules"][0] == {"action": "clear", "min": 0.9, "max": None}

        bad = with_decisions(rs, {**RULES, "class": "benign"})  # the model's classes are 0 and 1
        events = len(rs.serving.audit())
        with pytest.raises(ConfigError, match=r"^decisions.class: model v\d+ has no class 'benign'"):
            bad.serving.deploy(champion)
        assert len(rs.serving.audit()) == events and rs.serving.rules()["digest"] == event["to"]
    finally:
        rs.serving.deploy(champion)  # the shared app's own config: no rules
    restored = rs.serving.audit()[-2]
    assert restored["action"] == "serve.rules" and restored["from"] == event["to"] and restored["to"] is None
    assert rs.serving.plan().versions == before.versions and rs.serving.rules()["digest"] is None
    assert "decisions" not in requests.post(f"{url}/v1/predict", json={"records": rows[:1]}, timeout=30).json()


def test_explain_answers_attributions_in_raw_columns(served):
    rs, url = served
    rows = raw_rows(rs, 4)
    plain = requests.post(f"{url}/v1/predict", json={"records": rows}, timeout=30).json()
    body = requests.post(f"{url}/v1/predict", json={"records": rows, "explain": True}, timeout=30).json()
    assert "explanations" not in plain and body["probabilities"] == plain["probabilities"]
    assert [set(e) for e in body["explanations"]] == [set(rows[0])] * len(rows)
    totals = np.array([sum(e.values()) for e in body["explanations"]])
    gaps = np.array([p for _, p in body["probabilities"]]) - body["explanation_baselines"]
    np.testing.assert_allclose(totals, gaps, atol=0.05)  # integrated gradients, explain.steps 32


@pytest.mark.parametrize("value", ["yes", 1, None, [True], {"on": True}])
def test_explain_must_be_a_boolean(served, value):
    rs, url = served
    answer = requests.post(f"{url}/v1/predict", json={"records": raw_rows(rs, 1), "explain": value}, timeout=30)
    assert answer.status_code == 422 and answer.json()["field"] == "explain", answer.text


def test_each_trained_version_registers_its_permutation_importance(served):
    rs, _ = served
    importance = rs.models.importance("1")
    inputs = rs.models.load("1").state.input_columns
    assert importance["metric"] == "log_loss" and importance["split"] == "val" and importance["repeats"] == 3
    assert set(importance["importance"]) == set(inputs) and importance["rows"] > 0
    means = [v["mean"] for v in importance["importance"].values()]
    assert means == sorted(means, reverse=True) and means[0] > 0
