"""Drift detection: one window of production rows against the champion's training data.

Per raw input column a two-sample test (numeric: KS or CVM; categorical: chi-square), a test over
the whole row after the model's own preprocessing (``multivariate``), the model's outputs against
its outputs on the reference (prediction drift) and labels from feedback against the reference
labels (label drift). All p-values of one window form one family, corrected by Bonferroni or
Benjamini-Hochberg (``correction``), so ``drifted`` keeps the configured significance per window.
The statistics come from a backend: ``alibi`` (alibi-detect, Business Source License) or ``scipy``.

Nulls are left out of each column's test (data-quality faults are the input-violation rule's
business); a category the reference never had counts as one more category, so it shows as drift.
A test with fewer than ``MIN_VALUES`` values in the window is skipped and listed in ``skipped``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
import pandas as pd

from raysys.config import DriftDetectionConfig
from raysys.errors import RaysysError

FeatureType = Literal["numeric", "categorical"]
Tester = Callable[[np.ndarray], "TestResult"]
MIN_VALUES = 20
MAX_LEVELS = 10  # a preprocessed column with at most this many integer values is categorical


@dataclass(frozen=True)
class TestResult:
    """One two-sample test's outcome (before the family's correction)."""

    __test__ = False  # not a pytest class

    test: str
    statistic: float
    p_value: float
    n: int
    psi: float | None = None


@dataclass
class DriftReport:
    """The drift tests of one window, corrected as one family."""

    backend: str
    correction: str
    significance: float
    threshold: float
    features: dict[str, dict[str, Any]]
    row: dict[str, Any] | None = None
    predictions: dict[str, Any] | None = None
    labels: dict[str, Any] | None = None
    online: dict[str, Any] | None = None
    skipped: list[str] = field(default_factory=list)

    @property
    def drifted(self) -> bool:
        """Whether any feature, the row, the predictions, the labels or the online detector drifted."""
        parts = [*self.features.values(), self.row, self.predictions, self.labels, self.online]
        return any(part is not None and part["drifted"] for part in parts)

    @property
    def drifted_features(self) -> list[str]:
        """Names of the raw input columns that drifted."""
        return [name for name, result in self.features.items() if result["drifted"]]

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON types."""
        return {"drifted": self.drifted, "backend": self.backend, "correction": self.correction,
                "p_value": self.significance, "threshold": self.threshold,
                "features": self.features, "row": self.row, "predictions": self.predictions,
                "labels": self.labels, "online": self.online, "skipped": list(self.skipped)}


class Backend:
    """The statistics of one backend: testers built once from the reference, run per window."""

    name = "base"

    def numeric(self, reference: np.ndarray) -> Tester:
        """A tester of one numeric column (nulls removed)."""
        raise NotImplementedError

    def categorical(self, reference_codes: np.ndarray) -> Tester:
        """A tester of one categorical column given as integer codes (new categories get new codes)."""
        raise NotImplementedError

    def row(self, reference: np.ndarray, categorical: list[int]) -> Tester:
        """A tester of whole preprocessed rows."""
        raise NotImplementedError

    def online(self, reference: np.ndarray) -> OnlineDetector | None:
        """A detector updated one row at a time, or None when the backend has none."""
        return None


class OnlineDetector:
    """A stream detector whose state survives a restart (``state`` / ``restore``)."""

    def update(self, rows: np.ndarray) -> dict[str, Any]:
        """Feed rows in order; the result says whether drift was flagged among them."""
        raise NotImplementedError

    def state(self) -> dict[str, Any]:
        """The detector's state as plain JSON types."""
        raise NotImplementedError

    def restore(self, state: dict[str, Any]) -> None:
        """Continue from a state ``state()`` returned."""
        raise NotImplementedError


def correct(p_values: list[float], significance: float, method: str) -> tuple[list[bool], float]:
    """Which p-values are significant as one family, and the per-test threshold used."""
    m = len(p_values)
    if m == 0:
        return [], significance
    threshold = significance / m
    if method == "fdr":
        ranked = np.sort(np.asarray(p_values))
        passed = np.flatnonzero(ranked <= significance * np.arange(1, m + 1) / m)
        threshold = significance * (passed[-1] + 1) / m if len(passed) else threshold
    elif method != "bonferroni":
        raise RaysysError(f"monitor.drift.correction: unknown method {method!r}")
    return [p <= threshold for p in p_values], float(threshold)


def combine_p_values(p_values: np.ndarray, method: str) -> float:
    """One p-value for 'no column changed': Bonferroni (m * min p) or Simes (the FDR analogue)."""
    m = len(p_values)
    if m == 0:
        return 1.0
    if method == "fdr":
        return float(min(1.0, np.min(np.sort(p_values) * m / np.arange(1, m + 1))))
    return float(min(1.0, m * np.min(p_values)))


def categorical_columns(matrix: np.ndarray) -> list[int]:
    """Columns of a preprocessed matrix that hold a few integer codes (one-hot, ordinal)."""
    out = []
    for i in range(matrix.shape[1]):
        levels = np.unique(matrix[:, i])
        if len(levels) <= MAX_LEVELS and np.all(levels == np.round(levels)):
            out.append(i)
    return out


class _Categories:
    """Integer codes of a categorical column: reference categories first, new ones after."""

    def __init__(self, reference: pd.Series):
        self.known = np.sort(_as_text(reference).unique())

    def codes(self, values: pd.Series) -> np.ndarray:
        text = _as_text(values)
        codes = pd.Categorical(text, categories=self.known).codes.astype(np.int64)
        unknown = codes < 0
        if unknown.any():
            _, extra = np.unique(text[unknown].to_numpy(), return_inverse=True)
            codes[unknown] = len(self.known) + extra
        return codes


def _as_text(values: pd.Series | np.ndarray) -> pd.Series:
    """Non-null values as strings."""
    series = pd.Series(values, dtype=object).dropna()
    return series.astype(str).reset_index(drop=True)


def _as_numbers(values: pd.Series | np.ndarray) -> np.ndarray:
    """Finite values as floats (text that is not a number counts as null)."""
    numbers = pd.to_numeric(pd.Series(values, dtype=object), errors="coerce").to_numpy(dtype=float)
    return numbers[np.isfinite(numbers)]


class _Column:
    """One tested column (a feature, the predictions or the labels) with its kind and tester."""

    def __init__(self, backend: Backend, kind: FeatureType, reference: pd.Series | np.ndarray):
        self.kind = kind
        if kind == "numeric":
            self.tester = backend.numeric(_as_numbers(reference))
        else:
            self.categories = _Categories(pd.Series(reference, dtype=object))
            self.tester = backend.categorical(self.categories.codes(pd.Series(reference)))

    def test(self, values: pd.Series | np.ndarray) -> TestResult | None:
        prepared = (_as_numbers(values) if self.kind == "numeric"
                    else self.categories.codes(pd.Series(values, dtype=object)))
        return self.tester(prepared) if len(prepared) >= MIN_VALUES else None


def _kind_of_outputs(values: np.ndarray) -> FeatureType:
    """Float outputs (probabilities, regression values) are numeric; labels are categorical."""
    return "numeric" if np.asarray(values).dtype.kind == "f" else "categorical"


class DriftDetector:
    """Compares windows with a fixed reference; built by :func:`build_drift_detector`."""

    def __init__(self, cfg: DriftDetectionConfig, backend: Backend, reference: pd.DataFrame,
                 feature_types: dict[str, FeatureType], transform: Callable | None,
                 reference_predictions: np.ndarray | None, reference_labels: np.ndarray | None):
        self.cfg, self.backend, self.transform = cfg, backend, transform
        self.columns = {name: _Column(backend, kind, reference[name])
                        for name, kind in feature_types.items()}
        self.row_tester: Tester | None = None
        if cfg.multivariate != "none" and transform is not None:
            matrix = np.asarray(transform(reference), dtype=np.float32)
            self.row_tester = backend.row(matrix, categorical_columns(matrix))
        self.predictions = (None if reference_predictions is None else _Column(
            backend, _kind_of_outputs(reference_predictions), reference_predictions))
        self.labels = (None if reference_labels is None else _Column(
            backend, _kind_of_outputs(reference_labels), reference_labels))
        numeric = [name for name, kind in feature_types.items() if kind == "numeric"]
        self.online_columns = numeric
        self.fill = {name: float(np.median(_as_numbers(reference[name]))) for name in numeric}
        self.online_detector = (backend.online(self._online_rows(reference))
                                if cfg.online and numeric else None)

    def test(self, window: pd.DataFrame, predictions: np.ndarray | None = None,
             labels: np.ndarray | None = None) -> DriftReport:
        """Test one window (raw input columns), optionally with its outputs and feedback labels."""
        missing = [name for name in self.columns if name not in window.columns]
        if missing:
            raise RaysysError(f"drift: the window has no column {missing[0]!r} (the model reads it)")
        results: dict[str, TestResult | None] = {
            name: column.test(window[name]) for name, column in self.columns.items()}
        if self.row_tester is not None:
            matrix = np.asarray(self.transform(window), dtype=np.float32)
            results["_row"] = self.row_tester(matrix) if len(matrix) >= MIN_VALUES else None
        for key, column, values in (("_predictions", self.predictions, predictions),
                                    ("_labels", self.labels, labels)):
            if column is not None and values is not None:
                results[key] = column.test(values)
        return self._report(results, window)

    def _report(self, results: dict[str, TestResult | None], window: pd.DataFrame) -> DriftReport:
        done = {name: result for name, result in results.items() if result is not None}
        flags, threshold = correct([r.p_value for r in done.values()], self.cfg.p_value,
                                   self.cfg.correction)
        parts = {name: self._part(result, flag) for (name, result), flag in zip(done.items(), flags)}
        report = DriftReport(
            backend=self.backend.name, correction=self.cfg.correction,
            significance=self.cfg.p_value, threshold=threshold,
            features={name: part for name, part in parts.items() if not name.startswith("_")},
            row=parts.get("_row"), predictions=parts.get("_predictions"),
            labels=parts.get("_labels"),
            skipped=[name.lstrip("_") for name, result in results.items() if result is None])
        if self.online_detector is not None and len(window):
            report.online = self.online_detector.update(self._online_rows(window))
        return report

    def _part(self, result: TestResult, flag: bool) -> dict[str, Any]:
        part = {"test": result.test, "statistic": float(result.statistic),
                "p_value": float(result.p_value), "n": int(result.n), "drifted": bool(flag)}
        if result.psi is not None:
            part["psi"] = float(result.psi)
            part["drifted"] = bool(flag or result.psi > self.cfg.psi_threshold)
        return part

    def _online_rows(self, frame: pd.DataFrame) -> np.ndarray:
        """Numeric columns as a float32 matrix, nulls replaced by the reference median."""
        columns = [pd.to_numeric(frame[name], errors="coerce").astype(float).fillna(self.fill[name])
                   for name in self.online_columns]
        return np.column_stack(columns).astype(np.float32)

    def state(self) -> dict[str, Any] | None:
        """The online detector's state (plain JSON types), None without one."""
        return None if self.online_detector is None else self.online_detector.state()

    def restore(self, state: dict[str, Any] | None) -> None:
        """Continue the online detector from a saved ``state()``."""
        if state is not None and self.online_detector is not None:
            self.online_detector.restore(state)


def build_drift_detector(
    cfg: DriftDetectionConfig,
    reference: pd.DataFrame,
    feature_types: dict[str, FeatureType],
    transform: Callable[[pd.DataFrame], np.ndarray] | None = None,
    reference_predictions: np.ndarray | None = None,
    reference_labels: np.ndarray | None = None,
) -> DriftDetector:
    """A detector over the reference rows with the backend that ``cfg.backend`` names."""
    bad = {name: kind for name, kind in feature_types.items() if kind not in ("numeric", "categorical")}
    if bad:
        name = next(iter(bad))
        raise RaysysError(f"drift: feature {name!r} has type {bad[name]!r}; "
                          "expected numeric or categorical")
    missing = [name for name in feature_types if name not in reference.columns]
    if missing:
        raise RaysysError(f"drift: the reference has no column {missing[0]!r}")
    if len(reference) < MIN_VALUES:
        raise RaysysError(f"drift: the reference has {len(reference)} rows; need {MIN_VALUES}")
    return DriftDetector(cfg, _backend(cfg), reference, feature_types, transform,
                         reference_predictions, reference_labels)


def _backend(cfg: DriftDetectionConfig) -> Backend:
    """The configured backend (each module imports only its own libraries)."""
    if cfg.backend == "alibi":
        from raysys.monitoring.drift_alibi import AlibiBackend

        return AlibiBackend(cfg)
    from raysys.monitoring.drift_scipy import ScipyBackend

    return ScipyBackend(cfg)
