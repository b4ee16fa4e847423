"""Evaluation metrics: checked against sklearn.metrics, hand-computed values and invariants."""

from __future__ import annotations

import json
import math
import re
import statistics

import numpy as np
import pandas as pd
import pytest
from sklearn import metrics as skm

from raysys.errors import RaysysError
from raysys.modeling.metrics import (
    MetricsError,
    baseline_output,
    classification_metrics,
    kfold_indices,
    primary_metric,
    regression_metrics,
    slice_metrics,
    summarize_folds,
    task_metrics,
)

TOL = 1e-9


def _plain(value) -> bool:
    """True when value holds only Python JSON types (no numpy scalars anywhere)."""
    if isinstance(value, dict):
        return all(isinstance(k, str) and _plain(v) for k, v in value.items())
    if isinstance(value, list):
        return all(_plain(v) for v in value)
    return value is None or type(value) in (bool, int, float, str)


def _json_ok(result) -> None:
    assert _plain(result), result
    assert json.loads(json.dumps(result, allow_nan=False)) == result


def _dirichlet(rng: np.random.Generator, n: int, k: int) -> np.ndarray:
    return rng.dirichlet(np.ones(k), size=n)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_binary_matches_sklearn(seed):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, 500)
    p = np.clip(0.3 * y + 0.7 * rng.random(500), 0.0, 1.0)
    got = classification_metrics(y, p, 2)
    pred = (p > 0.5).astype(int)
    assert got["accuracy"] == pytest.approx(skm.accuracy_score(y, pred), abs=TOL)
    assert got["f1_macro"] == pytest.approx(skm.f1_score(y, pred, average="macro"), abs=TOL)
    assert got["roc_auc"] == pytest.approx(skm.roc_auc_score(y, p), abs=TOL)
    assert got["log_loss"] == pytest.approx(skm.log_loss(y, p, labels=[0, 1]), abs=TOL)
    assert got["n"] == 500
    _json_ok(got)


def test_binary_auc_with_tied_scores_matches_sklearn():
    rng = np.random.default_rng(3)
    y = rng.integers(0, 2, 400)
    p = np.round(rng.random(400), 1)  # only 11 distinct scores: many ties
    assert classification_metrics(y, p, 2)["roc_auc"] == pytest.approx(
        skm.roc_auc_score(y, p), abs=TOL
    )


def test_binary_accepts_two_column_matrix():
    rng = np.random.default_rng(4)
    y = rng.integers(0, 2, 200)
    p = rng.random(200)
    assert classification_metrics(y, np.column_stack([1 - p, p]), 2) == pytest.approx(
        classification_metrics(y, p, 2)
    )


@pytest.mark.parametrize("k", [3, 5])
def test_multiclass_matches_sklearn(k):
    rng = np.random.default_rng(k)
    n = 600
    y = rng.integers(0, k, n)
    proba = _dirichlet(rng, n, k)
    proba[np.arange(n), y] += 0.5  # some signal
    proba /= proba.sum(axis=1, keepdims=True)
    got = classification_metrics(y, proba, k)
    pred = proba.argmax(axis=1)
    labels = list(range(k))
    assert got["accuracy"] == pytest.approx(skm.accuracy_score(y, pred), abs=TOL)
    assert got["f1_macro"] == pytest.approx(skm.f1_score(y, pred, average="macro"), abs=TOL)
    expected_auc = skm.roc_auc_score(y, proba, multi_class="ovr", average="macro", labels=labels)
    assert got["roc_auc"] == pytest.approx(expected_auc, abs=TOL)
    assert got["log_loss"] == pytest.approx(skm.log_loss(y, proba, labels=labels), abs=TOL)
    assert got["n"] == n
    _json_ok(got)


def test_f1_macro_ignores_classes_absent_from_truth_and_predictions():
    y = np.array([0, 0, 1, 1, 1, 0])
    proba = np.array([[0.8, 0.1, 0.1]] * 3 + [[0.1, 0.8, 0.1]] * 3)
    got = classification_metrics(y, proba, 3)
    assert got["f1_macro"] == pytest.approx(skm.f1_score(y, proba.argmax(1), average="macro"))


def test_multiclass_auc_over_present_classes_when_one_is_missing():
    rng = np.random.default_rng(7)
    y = rng.integers(0, 2, 300)  # class 2 never occurs in y_true
    proba = _dirichlet(rng, 300, 3)
    expected = np.mean([skm.roc_auc_score(y == c, proba[:, c]) for c in (0, 1)])
    assert classification_metrics(y, proba, 3)["roc_auc"] == pytest.approx(expected, abs=TOL)


def test_single_class_roc_auc_is_none():
    rng = np.random.default_rng(5)
    binary = classification_metrics(np.ones(50, dtype=int), rng.random(50), 2)
    multi = classification_metrics(np.full(50, 2), _dirichlet(rng, 50, 3), 3)
    for got in (binary, multi):
        assert got["roc_auc"] is None
        assert "null" in json.dumps(got)
        _json_ok(got)


def test_log_loss_clips_and_renormalizes():
    got = classification_metrics(np.array([0, 1]), np.array([1.0, 0.0]), 2)
    assert got["log_loss"] == pytest.approx(-math.log(1e-7), rel=1e-12)
    # A row of all zeros becomes uniform after clipping and renormalising.
    got = classification_metrics(np.array([1]), np.array([[0.0, 0.0, 0.0, 0.0]]), 4)
    assert got["log_loss"] == pytest.approx(math.log(4), rel=1e-12)
    assert math.isfinite(got["log_loss"])


def test_ece_hand_computed():
    # Bin [0.9, 1] (confidence 0.95): 2 rows, 1 correct → |0.5 - 0.95| * 2 = 0.9.
    # Bin [0.6, 0.7): confidences 0.62 (correct) and 0.68 (wrong) → |0.5 - 0.65| * 2 = 0.3.
    y = np.array([1, 0, 1, 1])
    p = np.array([0.95, 0.95, 0.62, 0.32])
    expected = (0.9 + 0.3) / 4
    assert classification_metrics(y, p, 2)["ece"] == pytest.approx(expected, abs=TOL)


def test_ece_puts_confidence_one_in_last_bin():
    y = np.array([0, 1, 2])
    proba = np.eye(3)
    assert classification_metrics(y, proba, 3)["ece"] == pytest.approx(0.0, abs=TOL)
    assert classification_metrics(np.array([1, 2, 0]), proba, 3)["ece"] == pytest.approx(1.0)


def test_ece_calibrated_near_zero_and_overconfident_clearly_positive():
    rng = np.random.default_rng(11)
    n = 200_000
    p = rng.random(n)
    y = (rng.random(n) < p).astype(int)
    calibrated = classification_metrics(y, p, 2)["ece"]
    assert calibrated < 0.01
    overconfident = np.where(p > 0.5, 0.99, 0.01)
    assert classification_metrics(y, overconfident, 2)["ece"] > 0.2


def test_ece_multiclass_calibrated_near_zero():
    rng = np.random.default_rng(12)
    n, k = 100_000, 4
    proba = _dirichlet(rng, n, k)
    y = (rng.random((n, 1)) > proba.cumsum(axis=1)).sum(axis=1)  # y ~ Categorical(proba)
    assert classification_metrics(y, proba, k)["ece"] < 0.01


@pytest.mark.parametrize("seed", [0, 1])
def test_regression_matches_sklearn(seed):
    rng = np.random.default_rng(seed)
    y = rng.normal(10, 3, 400)
    pred = y + rng.normal(0, 1, 400)
    got = regression_metrics(y, pred)
    assert got["rmse"] == pytest.approx(math.sqrt(skm.mean_squared_error(y, pred)), abs=TOL)
    assert got["mae"] == pytest.approx(skm.mean_absolute_error(y, pred), abs=TOL)
    assert got["r2"] == pytest.approx(skm.r2_score(y, pred), abs=TOL)
    assert got["n"] == 400
    _json_ok(got)


def test_regression_edge_cases():
    assert regression_metrics(np.ones(5), np.ones(5))["r2"] == 1.0
    assert regression_metrics(np.ones(5), np.zeros(5))["r2"] == 0.0
    assert regression_metrics(np.array([3.0]), np.array([2.0]))["r2"] is None
    assert regression_metrics(np.array([1.0, 2.0]), np.array([[1.0], [2.0]]))["rmse"] == 0.0
    with pytest.raises(MetricsError):
        regression_metrics(np.ones(3), np.ones(4))
    with pytest.raises(MetricsError):
        regression_metrics(np.array([1.0, np.nan]), np.ones(2))


def test_task_metrics_dispatch():
    rng = np.random.default_rng(8)
    y2, p2 = rng.integers(0, 2, 100), rng.random(100)
    y3, p3 = rng.integers(0, 3, 100), _dirichlet(rng, 100, 3)
    yr, pr = rng.normal(size=100), rng.normal(size=100)
    assert task_metrics("binary", y2, p2, None) == classification_metrics(y2, p2, 2)
    assert task_metrics("multiclass", y3, p3, 3) == classification_metrics(y3, p3, 3)
    assert task_metrics("multiclass", y3, p3, None) == classification_metrics(y3, p3, 3)
    assert task_metrics("regression", yr, pr, None) == regression_metrics(yr, pr)
    with pytest.raises(MetricsError, match="unknown task"):
        task_metrics("ranking", yr, pr, None)
    with pytest.raises(MetricsError):
        task_metrics("binary", y3, p3, 3)


def test_invalid_classification_inputs():
    with pytest.raises(MetricsError):
        classification_metrics(np.array([0, 3]), np.array([[0.5, 0.5, 0.0]] * 2), 3)
    with pytest.raises(MetricsError):
        classification_metrics(np.array([0, 1]), np.array([0.5]), 2)
    with pytest.raises(MetricsError):
        classification_metrics(np.array([0, 1]), np.array([0.5, np.nan]), 2)
    with pytest.raises(MetricsError):
        classification_metrics(np.array([0.5, 1.0]), np.array([0.5, 0.5]), 2)
    with pytest.raises(RaysysError):
        classification_metrics(np.array([], dtype=int), np.array([]), 2)


def test_binary_baseline_accuracy_is_majority_share():
    y = np.array([1] * 30 + [0] * 70)
    out = baseline_output("binary", y, len(y), None)
    assert out.shape == (100,)
    assert np.all(out == 0.3)
    got = task_metrics("binary", y, out, None)
    assert got["accuracy"] == pytest.approx(0.7)
    assert got["roc_auc"] == pytest.approx(0.5)
    assert got["log_loss"] == pytest.approx(skm.log_loss(y, out), abs=TOL)


def test_multiclass_baseline_accuracy_is_majority_share():
    rng = np.random.default_rng(9)
    y = rng.choice(4, size=1000, p=[0.1, 0.2, 0.5, 0.2])
    out = baseline_output("multiclass", y, 7, 4)
    assert out.shape == (7, 4)
    np.testing.assert_allclose(out[0], np.bincount(y, minlength=4) / 1000)
    assert out[0].argmax() == 2
    got = task_metrics("multiclass", y, baseline_output("multiclass", y, len(y), 4), 4)
    assert got["accuracy"] == pytest.approx(np.mean(y == 2))
    assert got["ece"] == pytest.approx(0.0, abs=TOL)  # frequencies are calibrated on train


def test_multiclass_baseline_counts_unseen_classes_as_zero():
    out = baseline_output("multiclass", np.array([0, 0, 1]), 2, 3)
    np.testing.assert_allclose(out, [[2 / 3, 1 / 3, 0.0]] * 2)


def test_regression_baseline_r2_is_zero_on_train():
    rng = np.random.default_rng(10)
    y = rng.normal(5, 2, 300)
    out = baseline_output("regression", y, len(y), None)
    assert np.all(out == pytest.approx(y.mean()))
    got = regression_metrics(y, out)
    assert got["r2"] == pytest.approx(0.0, abs=1e-12)
    assert got["rmse"] == pytest.approx(np.std(y), abs=TOL)


def test_baseline_errors():
    with pytest.raises(MetricsError):
        baseline_output("multiclass", np.array([0, 1]), 3, None)
    with pytest.raises(MetricsError):
        baseline_output("binary", np.array([]), 3, None)


def _slice_frame(rng: np.random.Generator) -> pd.DataFrame:
    region = np.array(["north"] * 120 + ["south"] * 60 + ["west"] * 12)
    return pd.DataFrame(
        {
            "region": region,
            "age": rng.integers(18, 80, region.size),
            "tier": rng.integers(1, 4, region.size),
        }
    )


def test_slices_by_value_with_small_ones_skipped():
    rng = np.random.default_rng(13)
    frame = _slice_frame(rng)
    y = rng.integers(0, 2, len(frame))
    p = rng.random(len(frame))
    got = slice_metrics(frame, y, p, ["region", "tier"], "binary", None, min_rows=30)
    region = got["region"]
    assert set(region) == {"north", "south", "_skipped"}
    assert region["_skipped"] == {"west": 12}
    north = (frame["region"] == "north").to_numpy()
    assert region["north"] == classification_metrics(y[north], p[north], 2)
    assert region["north"]["n"] == 120 and region["south"]["n"] == 60
    tier = got["tier"]
    assert set(tier) == {"1", "2", "3", "_skipped"}
    assert sum(tier[v]["n"] for v in ("1", "2", "3")) == len(frame)
    _json_ok(got)


def test_slices_cut_numeric_column_into_quantile_bins():
    rng = np.random.default_rng(14)
    frame = _slice_frame(rng)
    y = rng.normal(size=len(frame))
    pred = y + rng.normal(size=len(frame))
    age = slice_metrics(frame, y, pred, ["age"], "regression", None, min_rows=1)["age"]
    bins = [k for k in age if k != "_skipped"]
    assert len(bins) == 5
    pattern = re.compile(r"^\[(\d+), (\d+)([)\]])$")
    parsed = [pattern.match(b) for b in bins]
    assert all(parsed), bins
    assert [m.group(3) for m in parsed] == [")"] * 4 + ["]"]
    lows = [int(m.group(1)) for m in parsed]
    highs = [int(m.group(2)) for m in parsed]
    assert lows[0] == frame["age"].min() and highs[-1] == frame["age"].max()
    assert lows[1:] == highs[:-1] and lows == sorted(lows)
    for m, label in zip(parsed, bins):
        low, high = int(m.group(1)), int(m.group(2))
        upper = frame["age"] <= high if m.group(3) == "]" else frame["age"] < high
        rows = ((frame["age"] >= low) & upper).to_numpy()
        assert age[label] == regression_metrics(y[rows], pred[rows])
    assert sum(age[b]["n"] for b in bins) == len(frame)
    assert all(age[b]["n"] >= len(frame) / 10 for b in bins)  # roughly balanced
    _json_ok(age)


def test_slices_numeric_bins_keep_nulls_apart():
    rng = np.random.default_rng(18)
    income = rng.normal(50_000, 10_000, 200).round(2)
    income[:35] = np.nan
    frame = pd.DataFrame({"income": income})
    y, p = rng.integers(0, 2, 200), rng.random(200)
    got = slice_metrics(frame, y, p, ["income"], "binary", None, min_rows=1)["income"]
    assert got["null"] == classification_metrics(y[:35], p[:35], 2)
    bins = [k for k in got if k not in ("null", "_skipped")]
    assert len(bins) == 5 and all(b.startswith("[") for b in bins)
    assert sum(got[b]["n"] for b in bins) == 165
    _json_ok(got)


def test_slices_multiclass_nulls_and_bad_column():
    rng = np.random.default_rng(15)
    frame = pd.DataFrame({"group": ["a"] * 40 + [None] * 40})
    y = rng.integers(0, 3, 80)
    proba = _dirichlet(rng, 80, 3)
    got = slice_metrics(frame, y, proba, ["group"], "multiclass", 3)
    assert got["group"]["null"] == classification_metrics(y[40:], proba[40:], 3)
    assert got["group"]["_skipped"] == {}
    with pytest.raises(MetricsError, match="missing_col"):
        slice_metrics(frame, y, proba, ["missing_col"], "multiclass", 3)
    with pytest.raises(MetricsError):
        slice_metrics(frame.iloc[:10], y, proba, ["group"], "multiclass", 3)


def test_summarize_folds():
    folds = [
        {"accuracy": 0.8, "roc_auc": 0.9, "n": 10},
        {"accuracy": 0.7, "roc_auc": None, "n": 10},
        {"accuracy": 0.9, "roc_auc": 0.7, "n": 11},
    ]
    got = summarize_folds(folds)
    assert list(got) == ["accuracy", "roc_auc", "n"]
    assert got["accuracy"]["values"] == [0.8, 0.7, 0.9]
    assert got["accuracy"]["mean"] == pytest.approx(0.8)
    assert got["accuracy"]["std"] == pytest.approx(statistics.stdev([0.8, 0.7, 0.9]))
    assert got["roc_auc"]["values"] == [0.9, 0.7]
    assert got["roc_auc"]["mean"] == pytest.approx(0.8)
    assert got["roc_auc"]["std"] == pytest.approx(statistics.stdev([0.9, 0.7]))
    assert got["n"]["mean"] == pytest.approx(31 / 3)
    _json_ok(got)


def test_summarize_folds_too_few_values():
    got = summarize_folds([{"r2": None, "rmse": np.float64(1.5)}, {"r2": None}])
    assert got["r2"] == {"mean": None, "std": None, "values": []}
    assert got["rmse"] == {"mean": 1.5, "std": None, "values": [1.5]}
    _json_ok(got)
    assert summarize_folds([]) == {}


def _check_partition(pairs, n, folds):
    assert len(pairs) == folds
    tests = np.concatenate([test for _, test in pairs])
    assert np.array_equal(np.sort(tests), np.arange(n))  # every row in exactly one test fold
    for train, test in pairs:
        assert np.intersect1d(train, test).size == 0
        assert np.array_equal(np.union1d(train, test), np.arange(n))
    sizes = [test.size for _, test in pairs]
    assert max(sizes) - min(sizes) <= 1


@pytest.mark.parametrize(("n", "folds"), [(10, 3), (101, 5), (7, 7)])
def test_kfold_coverage(n, folds):
    _check_partition(kfold_indices(n, folds, seed=0), n, folds)


def test_kfold_deterministic_and_seeded():
    first = kfold_indices(100, 5, seed=42)
    again = kfold_indices(100, 5, seed=42)
    other = kfold_indices(100, 5, seed=43)
    assert all(np.array_equal(a[1], b[1]) for a, b in zip(first, again))
    assert all(np.array_equal(a[0], b[0]) for a, b in zip(first, again))
    assert not all(np.array_equal(a[1], b[1]) for a, b in zip(first, other))
    assert not np.array_equal(first[0][1], np.arange(20))  # shuffled, not contiguous


@pytest.mark.parametrize("folds", [3, 5])
def test_kfold_stratified(folds):
    rng = np.random.default_rng(16)
    labels = rng.permutation(np.array(["a"] * 103 + ["b"] * 31 + ["c"] * 9))
    pairs = kfold_indices(labels.size, folds, seed=1, stratify=labels)
    _check_partition(pairs, labels.size, folds)
    for _, test in pairs:
        for cls in ("a", "b", "c"):
            exact = np.sum(labels == cls) / folds
            assert abs(np.sum(labels[test] == cls) - exact) < 1
    again = kfold_indices(labels.size, folds, seed=1, stratify=labels)
    assert all(np.array_equal(a[1], b[1]) for a, b in zip(pairs, again))


def test_kfold_errors():
    with pytest.raises(ValueError, match="folds"):
        kfold_indices(3, 5, seed=0)
    with pytest.raises(RaysysError, match="2 folds"):
        kfold_indices(10, 1, seed=0)
    with pytest.raises(ValueError, match="class 2 has 2 rows"):
        kfold_indices(12, 3, seed=0, stratify=np.array([0] * 5 + [1] * 5 + [2] * 2))
    with pytest.raises(MetricsError):
        kfold_indices(10, 2, seed=0, stratify=np.zeros(9))


def test_primary_metric():
    assert primary_metric("binary") == ("accuracy", "max")
    assert primary_metric("multiclass") == ("accuracy", "max")
    assert primary_metric("regression") == ("r2", "max")
    with pytest.raises(MetricsError):
        primary_metric("clustering")
    rng = np.random.default_rng(17)
    y, p = rng.integers(0, 2, 50), rng.random(50)
    assert primary_metric("binary")[0] in task_metrics("binary", y, p, None)
