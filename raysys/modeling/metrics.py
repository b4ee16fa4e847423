"""Evaluation metrics in plain numpy: classification, regression, baselines, slices and k-fold.

Conventions, shared by every function here:

- Labels are integers ``0 .. num_classes - 1``. Binary output is ``P(class 1)`` with shape
  ``(n,)`` (an ``(n, 2)`` matrix is accepted too); multiclass output is an ``(n, k)`` matrix.
- The predicted class is the argmax of the probability row (binary: class 1 iff ``p > 0.5``).
- ``f1_macro`` averages per-class F1 over the labels present in ``y_true`` or in the predictions
  (as ``sklearn.metrics.f1_score(average="macro")`` does).
- ``roc_auc`` is the standard AUC for binary and the one-vs-rest macro AUC for multiclass, taken
  over the classes present in ``y_true``; it is ``None`` when ``y_true`` holds only one class.
- ``log_loss`` clips probabilities to ``[1e-7, 1 - 1e-7]`` and renormalises each row.
- ``ece`` is the expected calibration error over 10 equal-width bins of the top-class confidence.
- ``r2`` follows sklearn (1.0 for a perfect fit of constant targets, else 0.0 for constant
  targets) and is ``None`` for fewer than two rows.
- The primary metric, used to rank models, is ``accuracy`` for classification and ``r2`` for
  regression, both maximised (see ``primary_metric``).

Every result holds only Python ``float``, ``int``, ``str``, ``list``, ``dict`` and ``None``, so
``json.dumps`` works on it directly.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from itertools import pairwise

import numpy as np
import pandas as pd

from raysys.errors import RaysysError

TASKS = ("binary", "multiclass", "regression")
EPS = 1e-7
ECE_BINS = 10
MAX_DISTINCT = 20
QUANTILE_BINS = 5
SKIPPED = "_skipped"

Metrics = dict[str, float | int | None]


class MetricsError(RaysysError, ValueError):
    """Metrics or folds were asked for on inputs that cannot give them."""


def _check_task(task: str) -> None:
    if task not in TASKS:
        raise MetricsError(f"unknown task {task!r}; expected one of {', '.join(TASKS)}")


def _labels(y_true: np.ndarray, num_classes: int) -> np.ndarray:
    y = np.asarray(y_true)
    if y.ndim != 1 or y.size == 0:
        raise MetricsError(f"y_true must be a non-empty 1-D array, got shape {y.shape}")
    if y.dtype.kind == "f" and not np.all(np.isfinite(y) & (y == np.round(y))):
        raise MetricsError("y_true must hold integer class labels")
    if y.dtype.kind not in "biuf":
        raise MetricsError(f"y_true must hold integer class labels, got dtype {y.dtype}")
    y = y.astype(np.int64)
    if y.min() < 0 or y.max() >= num_classes:
        raise MetricsError(f"class labels must lie in [0, {num_classes}), got {y.min()}..{y.max()}")
    return y


def _prob_matrix(proba: np.ndarray, n: int, num_classes: int) -> np.ndarray:
    p = np.asarray(proba, dtype=np.float64)
    if p.ndim == 1 and num_classes == 2:
        p = np.column_stack([1.0 - p, p])
    if p.ndim != 2 or p.shape != (n, num_classes):
        raise MetricsError(
            f"probabilities have shape {np.shape(proba)}; expected ({n},) for binary "
            f"or ({n}, {num_classes})"
        )
    if not np.all(np.isfinite(p)):
        raise MetricsError("probabilities must be finite")
    return p


def _float(value: float | None) -> float | None:
    return None if value is None else float(value)


def _f1_macro(y: np.ndarray, pred: np.ndarray, k: int) -> float:
    tp = np.bincount(y[y == pred], minlength=k)
    support = np.bincount(y, minlength=k) + np.bincount(pred, minlength=k)
    present = support > 0
    return float(np.mean(2.0 * tp[present] / support[present]))


def _binary_auc(positive: np.ndarray, scores: np.ndarray) -> float:
    """AUC as the Mann-Whitney statistic with average ranks for tied scores."""
    _, inverse, counts = np.unique(scores, return_inverse=True, return_counts=True)
    ranks = (np.cumsum(counts) - (counts - 1) / 2.0)[inverse]
    n_pos = int(positive.sum())
    n_neg = positive.size - n_pos
    return float((ranks[positive].sum() - n_pos * (n_pos + 1) / 2.0) / (n_pos * n_neg))


def _roc_auc(y: np.ndarray, p: np.ndarray) -> float | None:
    present = np.unique(y)
    if present.size < 2:
        return None
    if p.shape[1] == 2:
        return _binary_auc(y == 1, p[:, 1])
    return float(np.mean([_binary_auc(y == c, p[:, c]) for c in present]))


def _log_loss(y: np.ndarray, p: np.ndarray) -> float:
    q = np.clip(p, EPS, 1.0 - EPS)
    q = q / q.sum(axis=1, keepdims=True)
    return float(-np.mean(np.log(q[np.arange(y.size), y])))


def _ece(y: np.ndarray, p: np.ndarray, bins: int = ECE_BINS) -> float:
    confidence = p.max(axis=1)
    correct = (p.argmax(axis=1) == y).astype(np.float64)
    which = np.clip(np.floor(confidence * bins).astype(np.int64), 0, bins - 1)
    gap = np.bincount(which, weights=correct - confidence, minlength=bins)
    return float(np.abs(gap).sum() / y.size)


def classification_metrics(y_true: np.ndarray, proba: np.ndarray, num_classes: int) -> Metrics:
    """Accuracy, macro F1, ROC AUC (None for one class), log loss, ECE and n for probabilities."""
    if num_classes < 2:
        raise MetricsError(f"num_classes must be at least 2, got {num_classes}")
    y = _labels(y_true, num_classes)
    p = _prob_matrix(proba, y.size, num_classes)
    pred = p.argmax(axis=1)
    return {
        "accuracy": float(np.mean(pred == y)),
        "f1_macro": _f1_macro(y, pred, num_classes),
        "roc_auc": _float(_roc_auc(y, p)),
        "log_loss": _log_loss(y, p),
        "ece": _ece(y, p),
        "n": int(y.size),
    }


def _r2(y: np.ndarray, error: np.ndarray) -> float | None:
    if y.size < 2:
        return None
    ss_res = float(np.sum(error**2))
    ss_tot = float(np.sum((y - y.mean()) ** 2))
    if ss_tot == 0.0:
        return 1.0 if ss_res == 0.0 else 0.0
    return 1.0 - ss_res / ss_tot


def regression_metrics(y_true: np.ndarray, y_pred: np.ndarray) -> Metrics:
    """RMSE, MAE, R² (None for fewer than two rows) and n for numeric predictions."""
    y = np.asarray(y_true, dtype=np.float64)
    pred = np.asarray(y_pred, dtype=np.float64)
    if pred.ndim == 2 and pred.shape[1] == 1:
        pred = pred[:, 0]
    if y.ndim != 1 or y.size == 0 or pred.shape != y.shape:
        raise MetricsError(f"y_true {y.shape} and y_pred {pred.shape} must be equal non-empty 1-D")
    if not (np.all(np.isfinite(y)) and np.all(np.isfinite(pred))):
        raise MetricsError("regression targets and predictions must be finite")
    error = pred - y
    return {
        "rmse": float(np.sqrt(np.mean(error**2))),
        "mae": float(np.mean(np.abs(error))),
        "r2": _float(_r2(y, error)),
        "n": int(y.size),
    }


def _classes(task: str, output: np.ndarray, num_classes: int | None) -> int:
    if task == "binary":
        if num_classes not in (None, 2):
            raise MetricsError(f"a binary task has 2 classes, got num_classes={num_classes}")
        return 2
    if num_classes is None:
        if np.ndim(output) != 2:
            raise MetricsError("multiclass needs num_classes or an (n, k) probability matrix")
        return int(np.shape(output)[1])
    return int(num_classes)


def task_metrics(
    task: str, y_true: np.ndarray, output: np.ndarray, num_classes: int | None
) -> Metrics:
    """The metrics of ``task`` ("binary", "multiclass" or "regression") for a model's output."""
    _check_task(task)
    if task == "regression":
        return regression_metrics(y_true, output)
    return classification_metrics(y_true, output, _classes(task, output, num_classes))


def baseline_output(task: str, y_train: np.ndarray, n: int, num_classes: int | None) -> np.ndarray:
    """The trivial baseline's output for n rows: positive rate, class frequencies or mean."""
    _check_task(task)
    y = np.asarray(y_train)
    if y.ndim != 1 or y.size == 0:
        raise MetricsError("the baseline needs a non-empty 1-D y_train")
    if task == "regression":
        return np.full(n, float(np.mean(y.astype(np.float64))))
    k = 2 if task == "binary" else num_classes
    if k is None:
        raise MetricsError("a multiclass baseline needs num_classes")
    freq = np.bincount(_labels(y, k), minlength=k) / y.size
    return np.full(n, freq[1]) if task == "binary" else np.tile(freq, (n, 1))


def _format_edge(value: float) -> str:
    return np.format_float_positional(float(value), trim="-")


def _quantile_labels(values: pd.Series) -> tuple[np.ndarray, list[str]]:
    """Cut into quantile bins on data-valued edges: [a, b) and a closed last bin [a, b]."""
    data = values.to_numpy(dtype=np.float64, na_value=np.nan)
    finite = data[~np.isnan(data)]
    qs = np.linspace(0.0, 1.0, QUANTILE_BINS + 1)
    edges = np.unique(np.quantile(finite, qs, method="inverted_cdf"))
    last = len(edges) - 2
    names = [
        f"[{_format_edge(a)}, {_format_edge(b)}{']' if i == last else ')'}"
        for i, (a, b) in enumerate(pairwise(edges))
    ]
    which = np.clip(np.searchsorted(edges, data, side="right") - 1, 0, len(names) - 1)
    labels = np.array(names, dtype=object)[which]
    labels[np.isnan(data)] = "null"
    return labels, names + (["null"] if np.isnan(data).any() else [])


def _slice_labels(values: pd.Series) -> tuple[np.ndarray, list[str]]:
    """One string label per row and the labels in report order."""
    numeric = pd.api.types.is_numeric_dtype(values) and not pd.api.types.is_bool_dtype(values)
    if numeric and values.nunique(dropna=True) > MAX_DISTINCT:
        return _quantile_labels(values)
    labels = np.array(["null" if pd.isna(v) else str(v) for v in values.tolist()], dtype=object)
    return labels, sorted(set(labels.tolist()))


def _column_slices(
    labels: np.ndarray, order: list[str], y: np.ndarray, output: np.ndarray, spec: tuple
) -> dict[str, dict]:
    task, num_classes, min_rows = spec
    result: dict[str, dict] = {}
    skipped: dict[str, int] = {}
    for label in order:
        rows = np.flatnonzero(labels == label)
        if rows.size < min_rows:
            skipped[label] = int(rows.size)
        else:
            result[label] = task_metrics(task, y[rows], output[rows], num_classes)
    result[SKIPPED] = skipped
    return result


def slice_metrics(
    frame: pd.DataFrame,
    y_true: np.ndarray,
    output: np.ndarray,
    columns: list[str],
    task: str,
    num_classes: int | None,
    min_rows: int = 30,
) -> dict[str, dict[str, dict]]:
    """Metrics per value of each slice column; slices under min_rows go to ``"_skipped"``."""
    _check_task(task)
    y, output = np.asarray(y_true), np.asarray(output)
    if len(frame) != y.shape[0] or output.shape[0] != y.shape[0]:
        raise MetricsError(f"frame ({len(frame)}), y_true and output must have the same rows")
    missing = [c for c in columns if c not in frame.columns]
    if missing:
        raise MetricsError(f"slice columns not in the frame: {', '.join(map(str, missing))}")
    spec = (task, num_classes, max(int(min_rows), 1))
    report = {}
    for column in columns:
        labels, order = _slice_labels(frame[column])
        report[str(column)] = _column_slices(labels, order, y, output, spec)
    return report


def _number(value: object) -> float | None:
    if value is None or isinstance(value, (str, bytes, dict, list)):
        return None
    number = float(value)
    return number if math.isfinite(number) else None


def summarize_folds(per_fold: Sequence[dict[str, float]]) -> dict[str, dict]:
    """Per metric: mean, std (ddof=1; None under two values) and values, skipping None/NaN."""
    names = list(dict.fromkeys(name for fold in per_fold for name in fold))
    summary: dict[str, dict] = {}
    for name in names:
        values = [v for v in (_number(fold.get(name)) for fold in per_fold) if v is not None]
        summary[name] = {
            "mean": float(np.mean(values)) if values else None,
            "std": float(np.std(values, ddof=1)) if len(values) > 1 else None,
            "values": values,
        }
    return summary


def _strata(n: int, folds: int, stratify: np.ndarray | None) -> list[np.ndarray]:
    """Row indices per class (one group when unstratified), checked against ``folds``."""
    if stratify is None:
        return [np.arange(n)]
    labels = np.asarray(stratify)
    if labels.shape != (n,):
        raise MetricsError(f"stratify has shape {labels.shape}; expected ({n},)")
    classes, inverse, counts = np.unique(labels, return_inverse=True, return_counts=True)
    if counts.min() < folds:
        small = classes[counts.argmin()]
        raise MetricsError(f"class {small!r} has {counts.min()} rows, fewer than the {folds} folds")
    return [np.flatnonzero(inverse == c) for c in range(classes.size)]


def kfold_indices(
    n: int, folds: int, seed: int, stratify: np.ndarray | None = None
) -> list[tuple[np.ndarray, np.ndarray]]:
    """Deterministic (train_idx, test_idx) pairs; stratified by class when labels are given."""
    if folds < 2:
        raise MetricsError(f"k-fold needs at least 2 folds, got {folds}")
    if folds > n:
        raise MetricsError(f"cannot make {folds} folds from {n} rows")
    rng = np.random.default_rng(seed)
    order = np.concatenate([rng.permutation(rows) for rows in _strata(n, folds, stratify)])
    fold_of = np.empty(n, dtype=np.int64)
    fold_of[order] = np.arange(n) % folds
    return [(np.flatnonzero(fold_of != f), np.flatnonzero(fold_of == f)) for f in range(folds)]


def primary_metric(task: str) -> tuple[str, str]:
    """The metric that ranks models and its direction: accuracy (classification) or r2, max."""
    _check_task(task)
    return ("r2", "max") if task == "regression" else ("accuracy", "max")
