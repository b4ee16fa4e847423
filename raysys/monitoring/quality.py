"""A window's numbers, per model version and overall: traffic, latency, outputs, labels, quality.

:func:`window_metrics` returns one JSON-able dict per model version (keys ``str(version)``;
values only ``int``, ``float``, ``str``, ``list``, ``dict`` and ``None``; no NaN);
:func:`summary_metrics` returns the same fields for all versions together. Each summary::

    {
      "records": 500,                  # log rows (one per record of a request)
      "requests": 412,                 # distinct _request_id
      "latency_ms": {"p50": 3.1, "p95": 9.8, "p99": 14.0, "mean": 4.2},   # None without rows
      "predictions": {"0": 0.71, "1": 0.29},   # share of records per predicted class;
                                               # regression: {"mean", "std", "p5", "p50", "p95"}
      "labelled": 120,                 # records with a label (those ``quality`` is computed on)
      "labels": {"0": 0.65, "1": 0.35},        # same shape as "predictions", over the labels
      "quality": {"accuracy": 0.8, "f1_macro": 0.74, "roc_auc": 0.81, "log_loss": 0.45,
                  "ece": 0.03, "n": 120},      # regression: {"rmse", "mae", "r2", "n"};
                                               # {} when nothing is labelled
      "unknown_labels": 0,             # labels that are not among the classes (left out)
      "input_violations": {"share": 0.02,      # records that broke any data.schema rule / records
                           "features": {"age": 0.01, "plan": 0.01}},   # per column
    }

``quality`` holds :func:`raysys.modeling.metrics.task_metrics`' names: the primary metric
(``primary_metric(task)``: ``accuracy`` or ``r2``) is there for the alert rules. Classifier
quality uses ``_probabilities``; where a labelled record has none (or a wrong length), accuracy and
F1 come from ``_prediction`` and ``roc_auc``, ``log_loss`` and ``ece`` are None.

Traffic numbers (``records``, ``requests``, latency, predictions, input violations) come from
``frame``; labels and quality from ``labelled`` when given (the label book's horizon, see
:mod:`raysys.monitoring.windows`), else from the ``_label`` column of ``frame``.
``_input_flags`` is what :mod:`raysys.serving.input_checks` writes: ``""`` or the broken rules
``"<column>: <rule>"`` joined by ``"; "`` (``"column:rule"`` items joined by commas are read too).
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd

from raysys.modeling.metrics import task_metrics

FLAG_COLUMN = re.compile(r"(?:^|;|,)\s*([^:;,\[\]\s][^:;,\[\]]*?)\s*:")
QUANTILES = {"p5": 5, "p50": 50, "p95": 95}
LATENCY = {"p50": 50, "p95": 95, "p99": 99}


def window_metrics(frame: pd.DataFrame, task: str, classes: Sequence[Any] | None,
                   labelled: pd.DataFrame | None = None) -> dict[str, dict[str, Any]]:
    """The summary of ``frame`` (answer rows of the log) per ``_model_version`` (``str`` keys)."""
    labelled_rows = _labelled(frame if labelled is None else labelled)
    versions = sorted(set(_versions(frame)) | set(_versions(labelled_rows)))
    return {str(version): _summary(_of(frame, version), _of(labelled_rows, version), task, classes)
            for version in versions}


def summary_metrics(frame: pd.DataFrame, task: str, classes: Sequence[Any] | None,
                    labelled: pd.DataFrame | None = None) -> dict[str, Any]:
    """The summary of ``frame`` over all model versions together."""
    return _summary(frame, _labelled(frame if labelled is None else labelled), task, classes)


def _versions(frame: pd.DataFrame) -> list[int]:
    if frame.empty or "_model_version" not in frame.columns:
        return []
    return [int(v) for v in pd.unique(frame["_model_version"].dropna())]


def _of(frame: pd.DataFrame, version: int) -> pd.DataFrame:
    if frame.empty or "_model_version" not in frame.columns:
        return frame.iloc[0:0]
    return frame[frame["_model_version"].to_numpy() == version]


def _labelled(frame: pd.DataFrame) -> pd.DataFrame:
    if frame.empty or "_label" not in frame.columns:
        return frame.iloc[0:0]
    return frame[frame["_label"].notna().to_numpy()]


def _summary(frame: pd.DataFrame, labelled: pd.DataFrame, task: str,
             classes: Sequence[Any] | None) -> dict[str, Any]:
    names = [str(c) for c in classes] if classes is not None and task != "regression" else None
    quality, unknown = _quality(labelled, task, names)
    return {
        "records": len(frame),
        "requests": int(frame["_request_id"].nunique()) if len(frame) else 0,
        "latency_ms": _latency(frame),
        "predictions": _distribution(frame.get("_prediction"), task, names),
        "labelled": len(labelled) - unknown,
        "labels": _distribution(labelled.get("_label"), task, names),
        "quality": quality,
        "unknown_labels": unknown,
        "input_violations": _violations(frame),
    }


def _number(value: Any) -> float | None:
    number = float(value)
    return number if math.isfinite(number) else None


def _latency(frame: pd.DataFrame) -> dict[str, float | None]:
    values = (frame["_latency_ms"].to_numpy(dtype=np.float64) if "_latency_ms" in frame.columns
              else np.empty(0))
    values = values[np.isfinite(values)]
    if not values.size:
        return {name: None for name in [*LATENCY, "mean"]}
    result = {name: _number(np.percentile(values, q)) for name, q in LATENCY.items()}
    return {**result, "mean": _number(values.mean())}


def _distribution(values: pd.Series | None, task: str, names: list[str] | None) -> dict[str, Any]:
    """Share per class (classes first, in their order) or summary numbers for regression."""
    if values is None or values.empty:
        return {}
    if task == "regression":
        numbers = pd.to_numeric(values, errors="coerce").to_numpy(dtype=np.float64)
        numbers = numbers[np.isfinite(numbers)]
        if not numbers.size:
            return {}
        spread = {name: _number(np.percentile(numbers, q)) for name, q in QUANTILES.items()}
        return {"mean": _number(numbers.mean()), "std": _number(numbers.std()), **spread}
    counts = values.value_counts()
    shares: dict[str, float] = {}
    for value, count in counts.items():
        shares[str(value)] = shares.get(str(value), 0.0) + count / len(values)
    order = [*(names or []), *sorted(set(shares) - set(names or []))]
    return {name: float(shares.get(name, 0.0)) for name in order}


def _quality(labelled: pd.DataFrame, task: str, names: list[str] | None) -> tuple[dict[str, Any], int]:
    """Live metrics of the labelled records, and how many labels had to be left out."""
    if labelled.empty:
        return {}, 0
    if task == "regression":
        truth = pd.to_numeric(labelled["_label"], errors="coerce").to_numpy(dtype=np.float64)
        output = pd.to_numeric(labelled["_prediction"], errors="coerce").to_numpy(dtype=np.float64)
        usable = np.isfinite(truth) & np.isfinite(output)
        if not usable.any():
            return {}, int((~usable).sum())
        return _clean(task_metrics(task, truth[usable], output[usable], None)), int((~usable).sum())
    index = {name: i for i, name in enumerate(names or [])}
    truth = np.array([index.get(label, -1) for label in labelled["_label"].astype(str)], dtype=np.int64)
    known = truth >= 0
    if not known.any():
        return {}, int((~known).sum())
    rows = labelled[known]
    probabilities, scored = _probabilities(rows, len(index))
    if not scored:  # accuracy and F1 from the predicted class: one-hot "probabilities"
        predicted = np.array([index.get(p, -1) for p in rows["_prediction"].astype(str)])
        probabilities = np.zeros((len(rows), len(index)))
        hit = predicted >= 0
        probabilities[np.flatnonzero(hit), predicted[hit]] = 1.0
        probabilities[~hit] = 1.0 / len(index)  # an output outside the classes: no class chosen
    metrics = task_metrics(task, truth[known], probabilities, len(index))
    if not scored:
        metrics.update(roc_auc=None, log_loss=None, ece=None)
    return _clean(metrics), int((~known).sum())


def _probabilities(rows: pd.DataFrame, classes: int) -> tuple[np.ndarray, bool]:
    """The ``(n, classes)`` probability matrix, and whether every row had a usable one."""
    if "_probabilities" not in rows.columns:
        return np.empty((0, classes)), False
    values = rows["_probabilities"].tolist()
    if not all(v is not None and len(v) == classes for v in values):
        return np.empty((0, classes)), False
    matrix = np.asarray([np.asarray(v, dtype=np.float64) for v in values])
    return matrix, bool(np.all(np.isfinite(matrix)))


def _clean(metrics: dict[str, Any]) -> dict[str, Any]:
    return {name: (value if not isinstance(value, float) else _number(value))
            for name, value in metrics.items()}


def flagged_columns(flags: str) -> set[str]:
    """The columns named in one record's ``_input_flags`` (empty for ``""``)."""
    return set(FLAG_COLUMN.findall(flags)) if flags else set()


def _violations(frame: pd.DataFrame) -> dict[str, Any]:
    if frame.empty or "_input_flags" not in frame.columns:
        return {"share": 0.0 if len(frame) else None, "features": {}}
    flags = frame["_input_flags"].to_numpy(dtype=object)
    broken = pd.Series(flags[pd.notna(flags) & (flags != "")], dtype=object)
    per_column: dict[str, int] = {}
    for text, count in broken.value_counts().items():  # few distinct texts: parse each once
        for column in flagged_columns(str(text)):
            per_column[column] = per_column.get(column, 0) + int(count)
    total = len(frame)
    return {"share": len(broken) / total,
            "features": {c: per_column[c] / total for c in sorted(per_column)}}
