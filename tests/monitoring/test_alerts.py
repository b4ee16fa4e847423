"""Alert rules on one window's numbers: each rule fires on its own evidence, and only then."""

from __future__ import annotations

from datetime import datetime, timezone

import numpy as np
import pandas as pd
import pytest

from raysys.config import AlertRulesConfig
from raysys.monitoring.alerts import error_rates, evaluate_rules, fault_delta
from raysys.monitoring.drift import DriftReport
from raysys.monitoring.quality import window_metrics

NOW = datetime(2026, 11, 29, 12, 0, tzinfo=timezone.utc)


def summary(task: str = "binary", last_request_at: float | None = None, **versions: dict) -> dict:
    """A window summary with the given per-version metrics (``v3={...}``)."""
    return {"seq": 7, "task": task, "versions": {name[1:]: m for name, m in versions.items()},
            "last_request_at": NOW.timestamp() if last_request_at is None else last_request_at}


def healthy(**overrides) -> dict:
    metrics = {"records": 500, "requests": 450, "labelled": 200,
               "latency_ms": {"p50": 5.0, "p95": 20.0, "p99": 40.0},
               "quality": {"accuracy": 0.84, "f1": 0.8},
               "input_violations": {"share": 0.0, "features": {}}}
    return {**metrics, **overrides}


def drift_report(drifted: dict[str, float], row: bool = False) -> dict:
    features = {name: {"test": "ks", "statistic": 0.3, "p_value": p, "drifted": p < 0.01}
                for name, p in {"age": 0.4, "plan": 0.7, **drifted}.items()}
    return {"drifted": bool(drifted) or row, "threshold": 0.01, "features": features,
            "row": {"test": "tabular", "p_value": 0.001 if row else 0.5, "drifted": row},
            "predictions": {"test": "chi2", "p_value": 0.3, "drifted": False}, "labels": None}


def rules_of(findings) -> set[str]:
    return {f.key for f in findings}


def test_a_healthy_window_fires_nothing():
    champion = {"version": 3, "name": "accuracy", "value": 0.85}
    faults = {"versions": {"3": {"champion": {"requests": 500, "failures": 1}}}}
    findings = evaluate_rules(AlertRulesConfig(no_traffic_s=60), summary(v3=healthy()),
                              drift_report({}), champion, faults, NOW)
    assert list(findings) == [] and findings.unchecked == set()


def test_drift_names_the_drifted_features_and_the_row():
    findings = evaluate_rules(AlertRulesConfig(), summary(v3=healthy()),
                              drift_report({"monthly_spend": 1e-6}, row=True), None, None, NOW)
    drift = next(f for f in findings if f.rule == "drift")
    assert "monthly_spend" in drift.message and "row" in drift.message
    assert set(drift.evidence["features"]) == {"monthly_spend"}
    assert drift.evidence["features"]["monthly_spend"]["p_value"] == 1e-6


def test_drift_rule_off_or_no_report():
    report = drift_report({"age": 1e-9})
    rules = AlertRulesConfig(drift=False)
    off = evaluate_rules(rules, summary(v3=healthy()), report, None, None, NOW)
    assert "drift" not in rules_of(off)
    untested = evaluate_rules(AlertRulesConfig(), summary(v3=healthy()), None, None, None, NOW)
    assert "drift" not in rules_of(untested) and "drift" in untested.unchecked


def test_quality_below_the_champion_by_the_margin_per_version():
    champion = {"version": 3, "name": "accuracy", "value": 0.85}
    window = summary(v3=healthy(quality={"accuracy": 0.70}), v4=healthy(quality={"accuracy": 0.83}))
    rules = AlertRulesConfig(quality_margin=0.05)
    findings = evaluate_rules(rules, window, None, champion, None, NOW)
    quality = [f for f in findings if f.rule == "quality"]
    assert [f.key for f in quality] == ["quality@v3"]  # v4 is within the margin
    assert quality[0].severity == "critical"
    assert quality[0].evidence["value"] == 0.70 and quality[0].evidence["offline"] == 0.85


def test_quality_needs_min_labelled_labels():
    window = summary(v3=healthy(labelled=49, quality={"accuracy": 0.1}))
    findings = evaluate_rules(AlertRulesConfig(min_labelled=50, quality_floor=0.6), window, None,
                              {"version": 3, "value": 0.85}, None, NOW)
    assert "quality@v3" not in rules_of(findings) and "quality@v3" in findings.unchecked


def test_quality_floor_and_the_regression_primary_metric():
    window = summary(task="regression", v2=healthy(quality={"r2": 0.2, "rmse": 3.0}))
    rules = AlertRulesConfig(quality_floor=0.5, quality_margin=None)
    findings = evaluate_rules(rules, window, None, None, None, NOW)
    (finding,) = [f for f in findings if f.rule == "quality"]
    assert finding.evidence["metric"] == "r2" and finding.evidence["floor"] == 0.5
    assert "below the floor" in finding.message
    fine = summary(task="regression", v2=healthy(quality={"r2": 0.7}))
    assert not evaluate_rules(AlertRulesConfig(quality_floor=0.5), fine, None, None, None, NOW)


def test_latency_error_rate_and_input_violations():
    window = summary(v3=healthy(latency_ms={"p99": 1500.0},
                                input_violations={"share": 0.2, "features": {"age": 0.2}}))
    faults = {"versions": {"3": {"champion": {"requests": 90, "failures": 0}},
                           "4": {"challenger": {"requests": 10, "failures": 3}}}}
    rules = AlertRulesConfig(latency_p99_ms=1000, error_rate=0.05, input_violations=0.1)
    findings = evaluate_rules(rules, window, None, None, faults, NOW)
    assert rules_of(findings) == {"latency@v3", "error_rate@v4", "input_violations"}
    by_key = {f.key: f for f in findings}
    assert by_key["error_rate@v4"].evidence["rate"] == pytest.approx(0.3)
    assert by_key["input_violations"].evidence["features"] == {"age": pytest.approx(0.2)}
    off = AlertRulesConfig(latency_p99_ms=None, error_rate=None, input_violations=None)
    assert not evaluate_rules(off, window, None, None, faults, NOW)


def test_no_traffic_after_the_limit():
    rules = AlertRulesConfig(no_traffic_s=300)
    quiet = summary(last_request_at=NOW.timestamp() - 301)
    (finding,) = evaluate_rules(rules, quiet, None, None, None, NOW)
    assert finding.rule == "no_traffic" and finding.evidence["idle_s"] == pytest.approx(301)
    recent = summary(last_request_at=(NOW.timestamp() - 299))
    assert not evaluate_rules(rules, recent, None, None, None, NOW)
    long_ago = datetime.fromtimestamp(NOW.timestamp() - 900, timezone.utc).isoformat()
    iso = summary(last_request_at=long_ago)
    assert rules_of(evaluate_rules(rules, iso, None, None, None, NOW.timestamp())) == {"no_traffic"}


def test_fault_delta_is_the_window_between_two_readings():
    before = {"versions": {"3": {"champion": {"requests": 100, "failures": 1, "last_error": "x"}}}}
    after = {"versions": {"3": {"champion": {"requests": 160, "failures": 4, "last_error": "y"}},
                          "4": {"challenger": {"requests": 7, "failures": 7}}}}
    assert fault_delta(before, after) == {"versions": {
        "3": {"champion": {"requests": 60, "failures": 3}},
        "4": {"challenger": {"requests": 7, "failures": 7}}}}
    assert fault_delta(None, after)["versions"]["3"]["champion"] == {"requests": 160, "failures": 4}
    assert error_rates(fault_delta(before, after)) == {
        "3": {"requests": 60, "failures": 3, "error_rate": 0.05},
        "4": {"requests": 7, "failures": 7, "error_rate": 1.0}}


def test_rules_read_what_window_metrics_measures():
    """The adapter: quality.window_metrics' real output feeds the rules as it is."""
    n = 100
    frame = pd.DataFrame({
        "_model_version": 3, "_request_id": [f"r{i}" for i in range(n)], "_row": 0,
        "_latency_ms": np.linspace(1.0, 2000.0, n), "_prediction": "1",
        "_probabilities": [[0.2, 0.8]] * n, "_label": ["0"] * 60 + ["1"] * 40,
        "_input_flags": ["age: max"] * 20 + [""] * 80, "_role": "answer",
        "_time": pd.Timestamp("2026-11-29T12:00:00Z")})
    window = {"task": "binary", "versions": window_metrics(frame, "binary", [0, 1]),
              "last_request_at": NOW.timestamp()}
    champion = {"version": 3, "name": "accuracy", "value": 0.8}
    findings = evaluate_rules(AlertRulesConfig(), window, None, champion, None, NOW)
    by_key = {f.key: f for f in findings}
    assert set(by_key) == {"quality@v3", "latency@v3", "input_violations"}
    assert by_key["quality@v3"].evidence["value"] == pytest.approx(0.4)  # 40 of 100 right
    assert by_key["input_violations"].evidence["share"] == pytest.approx(0.2)
    assert by_key["latency@v3"].evidence["p99_ms"] > 1000


def test_rules_read_a_drift_report_as_it_is():
    """The adapter: DriftReport.to_dict() feeds the drift rule as it is (the online part too)."""
    test = {"test": "ks", "statistic": 0.4, "p_value": 1e-7, "drifted": True}
    report = DriftReport("scipy", "bonferroni", 0.05, 0.01,
                         {"tenure": test, "plan": {**test, "p_value": 0.6, "drifted": False}},
                         online={"test": "cvm-online", "drifted": True, "run_length": 40})
    (finding,) = evaluate_rules(AlertRulesConfig(), summary(), report.to_dict(), None, None, NOW)
    assert finding.message == "drift in tenure, online"
    assert set(finding.evidence["features"]) == {"tenure"} and finding.evidence["threshold"] == 0.01
    calm = DriftReport("scipy", "bonferroni", 0.05, 0.01, {"plan": {**test, "drifted": False}})
    assert not evaluate_rules(AlertRulesConfig(), summary(), calm.to_dict(), None, None, NOW)
