"""A window's numbers against values computed by hand (pure; log rows from the serving layer)."""

from __future__ import annotations

import json
import math
from datetime import datetime, timezone

import numpy as np
import pandas as pd
import pytest

from raysys.config import ColumnSpec
from raysys.monitoring.quality import flagged_columns, summary_metrics, window_metrics
from raysys.serving import payloads
from raysys.serving.input_checks import InputChecks
from raysys.serving.prediction_log import prediction_frame

SIGNATURE = {"age": "int", "plan": "category"}
CHECKS = InputChecks({"age": ColumnSpec(type="int", min=18, max=90),
                      "plan": ColumnSpec(type="category", allowed=["basic", "premium"])}, "flag")
AT = datetime(2026, 10, 1, 12, 0, tzinfo=timezone.utc)


def request(request_id, version, latency_ms, records, predictions, probabilities):
    """One answered request as a replica logs it, the input checks' flags included."""
    rows, _ = payloads.parse_records({"records": records}, SIGNATURE, 10, checks=CHECKS)
    answer = {"predictions": predictions, "probabilities": probabilities, "classes": [0, 1]}
    return rows, answer, {"request_id": request_id, "version": version, "role": "answer",
                          "latency_ms": latency_ms, "key": None, "at": AT}


@pytest.fixture
def window() -> pd.DataFrame:
    frame = prediction_frame([
        request("r1", 1, 10.0, [{"age": 30, "plan": "basic"}, {"age": 100, "plan": "gold"}],
                [1, 0], [[0.2, 0.8], [0.6, 0.4]]),
        request("r2", 1, 20.0, [{"age": 40, "plan": "gold"}], [1], [[0.3, 0.7]]),
        request("r3", 2, 40.0, [{"age": 50, "plan": "basic"}], [0], [[0.9, 0.1]]),
        request("r4", 2, 50.0, [{"age": 60, "plan": "basic"}], [0], [[0.5, 0.5]]),
    ])
    frame["_label"] = ["1", "0", "0", "1", None]
    return frame


def test_per_version_traffic_latency_and_distributions(window):
    versions = window_metrics(window, "binary", [0, 1])
    assert list(versions) == ["1", "2"]
    one, two = versions["1"], versions["2"]
    assert (one["records"], one["requests"], two["records"], two["requests"]) == (3, 2, 2, 2)
    assert one["latency_ms"]["p50"] == 10.0 and one["latency_ms"]["p99"] == pytest.approx(19.8)
    assert two["latency_ms"]["p50"] == 45.0 and two["latency_ms"]["p99"] == pytest.approx(49.9)
    assert one["predictions"] == pytest.approx({"0": 1 / 3, "1": 2 / 3})
    assert two["predictions"] == {"0": 1.0, "1": 0.0}
    assert (one["labelled"], two["labelled"]) == (3, 1)
    assert one["labels"] == pytest.approx({"0": 2 / 3, "1": 1 / 3})


def test_live_quality_from_labels_and_probabilities(window):
    versions = window_metrics(window, "binary", [0, 1])
    one, two = versions["1"]["quality"], versions["2"]["quality"]
    assert one["accuracy"] == pytest.approx(2 / 3) and one["n"] == 3
    assert one["log_loss"] == pytest.approx(-(math.log(0.8) + math.log(0.6) + math.log(0.3)) / 3)
    assert two["accuracy"] == 0.0 and two["log_loss"] == pytest.approx(-math.log(0.1))
    overall = summary_metrics(window, "binary", [0, 1])
    assert overall["records"] == 5 and overall["requests"] == 4 and overall["labelled"] == 4
    assert overall["quality"]["accuracy"] == 0.5 and overall["quality"]["f1_macro"] == 0.5
    assert overall["quality"]["log_loss"] == pytest.approx(
        -(math.log(0.8) + math.log(0.6) + math.log(0.3) + math.log(0.1)) / 4)


def test_input_violations_per_feature_from_the_input_checks_flags(window):
    assert window["_input_flags"].tolist()[1] == "age: above max 90; plan: not in allowed [basic, premium]"
    one = window_metrics(window, "binary", [0, 1])["1"]["input_violations"]
    assert one["share"] == pytest.approx(2 / 3)
    assert one["features"] == pytest.approx({"age": 1 / 3, "plan": 2 / 3})
    overall = summary_metrics(window, "binary", [0, 1])["input_violations"]
    assert overall["share"] == pytest.approx(2 / 5)
    assert overall["features"] == pytest.approx({"age": 1 / 5, "plan": 2 / 5})
    assert flagged_columns("age:max,plan:allowed") == {"age", "plan"}


def test_quality_from_a_separate_labelled_frame_and_labels_outside_the_classes(window):
    unlabelled = window.drop(columns="_label")
    labelled = window.iloc[[0, 3]].assign(_label=["1", "7"])
    versions = window_metrics(unlabelled, "binary", [0, 1], labelled=labelled)
    assert versions["1"]["records"] == 3 and versions["1"]["quality"]["accuracy"] == 1.0
    assert versions["2"]["labelled"] == 0 and versions["2"]["unknown_labels"] == 1
    assert versions["2"]["quality"] == {}


def test_without_probabilities_accuracy_comes_from_the_predicted_class(window):
    window["_probabilities"] = None
    quality = window_metrics(window, "binary", [0, 1])["1"]["quality"]
    assert quality["accuracy"] == pytest.approx(2 / 3)
    assert quality["log_loss"] is None and quality["roc_auc"] is None


def test_regression_rmse_and_mae():
    frame = pd.DataFrame({"_request_id": ["a", "b", "c"], "_row": [0, 0, 0], "_model_version": [1, 1, 1],
                          "_latency_ms": [1.0, 2.0, 3.0], "_prediction": ["1.5", "2.0", "3.0"],
                          "_probabilities": [None] * 3, "_input_flags": ["", "", ""],
                          "_label": ["1.0", "2.0", "5.0"]})
    summary = window_metrics(frame, "regression", None)["1"]
    assert summary["quality"]["rmse"] == pytest.approx(math.sqrt((0.25 + 0 + 4) / 3))
    assert summary["quality"]["mae"] == pytest.approx(2.5 / 3)
    assert summary["predictions"]["mean"] == pytest.approx(6.5 / 3)
    assert summary["labels"]["p50"] == 2.0


def test_the_summary_is_plain_json_without_nan(window):
    window.loc[0, "_latency_ms"] = np.nan
    window["_label"] = None
    cases = [window_metrics(window, "binary", [0, 1]), summary_metrics(window.iloc[0:0], "binary", [0, 1]),
             summary_metrics(window.iloc[[0]].assign(_label="1"), "binary", [0, 1])]
    for result in cases:
        json.dumps(result, allow_nan=False)
    assert cases[0]["1"]["quality"] == {} and cases[0]["1"]["labelled"] == 0
    assert cases[1]["latency_ms"]["p99"] is None and cases[1]["requests"] == 0
    assert cases[2]["quality"]["roc_auc"] is None  # one class labelled: no AUC, not NaN
