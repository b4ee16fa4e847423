"""Drift detection on the synthetic churn stream, with both backends: the statistical bars.

Windows of 500 rows (the default ``monitor.window.rows``) against 5,000 reference rows of the
clean history, with the quickstart's source and feature config; no Ray.
"""

from __future__ import annotations

import json
from functools import partial

import numpy as np
import pandas as pd
import pytest

from raysys.config import DriftDetectionConfig, load_config
from raysys.data import features
from raysys.data.synthetic import generate_rows
from raysys.errors import RaysysError
from raysys.monitoring.drift import build_drift_detector, correct

WINDOW = 500
REFERENCE_ROWS = 5_000
ONSET = 150_000  # the quickstart's drift.start_row
BACKENDS = ["scipy", "alibi"]


@pytest.fixture(scope="module")
def quickstart():
    return load_config("configs/quickstart.yaml")


def stream(quickstart, rows: int, **drift):
    """The quickstart's source with its drift replaced by `drift` (onset at ONSET)."""
    source = quickstart.data.source.model_copy(update={"rows": rows})
    drift = {"start_row": ONSET, **drift} if drift else {}
    return source.model_copy(update={"drift": source.drift.model_validate(drift)})


@pytest.fixture(scope="module")
def setup(quickstart):
    """Reference rows, feature types and the model's feature transform (fitted on the reference)."""
    clean = generate_rows(stream(quickstart, ONSET), 0, 20_000)
    reference = clean.sample(n=REFERENCE_ROWS, random_state=0).reset_index(drop=True)
    types = {name: spec.type for name, spec in quickstart.data.schema_.columns.items()}
    plan = features.plan_features(quickstart.features, types, quickstart.data.label)
    state = features.fit(plan, reference)
    kinds = {name: "categorical" if kind in ("category", "string") else "numeric"
             for name, kind in state.inputs.items()}
    return reference, kinds, partial(features.transform_values, state)


def detector(setup, backend: str, **cfg):
    reference, kinds, transform = setup
    labels = reference["churned"].astype(str).to_numpy()
    return build_drift_detector(DriftDetectionConfig(backend=backend, **cfg), reference, kinds,
                                transform, None, labels)


def windows(frame: pd.DataFrame):
    for start in range(0, len(frame) - WINDOW + 1, WINDOW):
        yield frame.iloc[start:start + WINDOW].reset_index(drop=True)


@pytest.mark.parametrize("backend", BACKENDS)
def test_false_alarms_on_stationary_data_stay_within_twice_the_significance(setup, quickstart,
                                                                            backend):
    det = detector(setup, backend)
    rows = generate_rows(stream(quickstart, ONSET), 20_000, 20_000 + 200 * WINDOW)
    reports = [det.test(w, labels=w["churned"].astype(str).to_numpy()) for w in windows(rows)]
    assert len(reports) == 200
    alarms = sum(r.drifted for r in reports)
    assert alarms / len(reports) <= 2 * det.cfg.p_value
    assert all(r.row is not None and r.labels is not None for r in reports)


@pytest.mark.parametrize("backend", BACKENDS)
def test_covariate_drift_is_detected_within_two_windows_of_its_onset(setup, quickstart, backend):
    det = detector(setup, backend)
    spec = stream(quickstart, ONSET + 2 * WINDOW, covariate=1.0)
    rows = generate_rows(spec, ONSET - 2 * WINDOW, ONSET + 2 * WINDOW)
    reports = [det.test(w) for w in windows(rows)]
    assert [r.drifted for r in reports[:2]] == [False, False]
    assert reports[2].drifted or reports[3].drifted
    first = reports[2] if reports[2].drifted else reports[3]
    assert {"monthly_spend", "sessions_30d"} <= set(first.drifted_features)
    assert first.row["drifted"]


@pytest.mark.parametrize("backend", BACKENDS)
def test_concept_drift_alone_does_not_trip_the_input_detectors(setup, quickstart, backend):
    det = detector(setup, backend)
    rows = generate_rows(stream(quickstart, ONSET + 40 * WINDOW, concept=1.0), ONSET,
                         ONSET + 40 * WINDOW)
    reports = [det.test(w, labels=w["churned"].astype(str).to_numpy()) for w in windows(rows)]
    input_alarms = sum(any(f["drifted"] for f in r.features.values()) or r.row["drifted"]
                       for r in reports)
    assert input_alarms / len(reports) <= 2 * det.cfg.p_value


@pytest.mark.parametrize("correction", ["bonferroni", "fdr"])
def test_report_is_json_and_names_each_test(setup, quickstart, correction):
    det = detector(setup, "scipy", correction=correction)
    window = generate_rows(stream(quickstart, ONSET + WINDOW, covariate=1.0), ONSET,
                           ONSET + WINDOW)
    report = json.loads(json.dumps(det.test(window).to_dict()))
    assert report["drifted"] and report["correction"] == correction
    spend = report["features"]["monthly_spend"]
    assert spend["test"] == "ks" and spend["drifted"] and spend["p_value"] < report["threshold"]
    assert report["features"]["plan"]["test"] == "chi2"
    assert report["labels"] is None and report["skipped"] == []


def test_correction_thresholds():
    p = [0.001, 0.008, 0.039, 0.041, 0.2]
    flags, threshold = correct(p, 0.05, "bonferroni")
    assert threshold == pytest.approx(0.01) and flags == [True, True, False, False, False]
    flags, threshold = correct(p, 0.05, "fdr")
    assert threshold == pytest.approx(0.02) and flags == [True, True, False, False, False]


def test_unknown_categories_and_nulls(setup, quickstart):
    det = detector(setup, "scipy")
    window = generate_rows(stream(quickstart, ONSET), 30_000, 30_000 + WINDOW)
    window.loc[:99, "plan"] = "UNKNOWN"
    window["age"] = window["age"].astype(float)
    window.loc[:, "age"] = np.nan
    report = det.test(window)
    assert report.features["plan"]["drifted"] and "age" in report.skipped
    assert "age" not in report.features


def test_bad_input_is_a_clear_error(setup):
    reference, kinds, _ = setup
    det = detector(setup, "scipy")
    with pytest.raises(RaysysError, match="'plan'"):
        det.test(reference.drop(columns=["plan"]))
    with pytest.raises(RaysysError, match="'age'.*'date'"):
        build_drift_detector(DriftDetectionConfig(), reference, {**kinds, "age": "date"})


def test_online_detector_flags_covariate_drift_and_resumes_from_its_state(setup, quickstart):
    det = detector(setup, "alibi", online=True)  # ERT 500 rows, window 50
    spec = stream(quickstart, ONSET + WINDOW, covariate=1.0)
    det.test(generate_rows(spec, ONSET - WINDOW, ONSET))
    state = json.loads(json.dumps(det.state()))
    after = generate_rows(spec, ONSET, ONSET + WINDOW)
    first = det.test(after).online
    assert first["drifted"] and first["flagged_row"] < 100
    det.restore(state)  # as a restarted monitor does: back to the saved stream position
    assert det.state()["t"] == state["t"]
    assert det.test(after).online == first
