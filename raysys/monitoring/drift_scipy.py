"""The scipy drift backend: KS, chi-square and PSI on scipy/numpy (no licence restriction).

Each ``*_tester`` takes the reference once and returns a function of one window's values, so the
per-window work is only the test itself.
"""

from __future__ import annotations

import numpy as np
from scipy import stats

from raysys.config import DriftDetectionConfig
from raysys.monitoring.drift import Backend, Tester, TestResult, combine_p_values

PSI_BINS = 10
PSI_FLOOR = 1e-4  # a bin empty on one side counts as this share, so PSI stays finite


def ks(reference: np.ndarray, values: np.ndarray) -> tuple[float, float]:
    """Two-sample Kolmogorov-Smirnov statistic and p-value (asymptotic, as alibi-detect uses)."""
    result = stats.ks_2samp(reference, values, method="asymp")
    return float(result.statistic), float(result.pvalue)


def chi2(reference_counts: np.ndarray, counts: np.ndarray) -> tuple[float, float]:
    """Chi-square test of homogeneity of two count vectors over the same categories."""
    table = np.vstack([reference_counts, counts])
    table = table[:, table.sum(axis=0) > 0]
    if table.shape[1] < 2:
        return 0.0, 1.0
    statistic, p_value, _, _ = stats.chi2_contingency(table)
    return float(statistic), float(p_value)


def psi(reference_counts: np.ndarray, counts: np.ndarray) -> float:
    """Population stability index of two count vectors over the same bins."""
    expected = np.maximum(reference_counts / max(reference_counts.sum(), 1), PSI_FLOOR)
    actual = np.maximum(counts / max(counts.sum(), 1), PSI_FLOOR)
    return float(np.sum((actual - expected) * np.log(actual / expected)))


def numeric_tester(reference: np.ndarray, test: str = "ks") -> Tester:
    """KS (with PSI over reference deciles) against one numeric reference column."""
    if test != "ks":
        raise ValueError(f"scipy backend: numeric test {test!r} is not available (only ks)")
    reference = np.sort(reference)
    edges = np.unique(np.quantile(reference, np.linspace(0, 1, PSI_BINS + 1)[1:-1]))
    reference_counts = _binned(reference, edges)

    def run(values: np.ndarray) -> TestResult:
        statistic, p_value = ks(reference, values)
        return TestResult("ks", statistic, p_value, len(values),
                          psi=psi(reference_counts, _binned(values, edges)))

    return run


def categorical_tester(reference_codes: np.ndarray) -> Tester:
    """Chi-square (with PSI) against one categorical reference column given as integer codes."""
    reference_counts = np.bincount(reference_codes)

    def run(codes: np.ndarray) -> TestResult:
        size = max(len(reference_counts), int(codes.max()) + 1 if len(codes) else 0)
        ref, counts = _padded(reference_counts, size), np.bincount(codes, minlength=size)
        statistic, p_value = chi2(ref, counts)
        return TestResult("chi2", statistic, p_value, len(codes), psi=psi(ref, counts))

    return run


def row_tester(
    reference: np.ndarray, categorical: list[int], correction: str
) -> Tester:
    """Per-column KS / chi-square over a preprocessed matrix, combined into one p-value."""
    numeric = [i for i in range(reference.shape[1]) if i not in set(categorical)]
    sorted_ref = {i: np.sort(reference[:, i]) for i in numeric}
    levels = {i: np.unique(reference[:, i]) for i in categorical}
    ref_counts = {i: _level_counts(reference[:, i], levels[i]) for i in categorical}

    def run(matrix: np.ndarray) -> TestResult:
        results = [ks(sorted_ref[i], matrix[:, i]) for i in numeric]
        for i in categorical:
            extra = np.setdiff1d(np.unique(matrix[:, i]), levels[i])
            both = np.concatenate([levels[i], extra])
            ref = np.concatenate([ref_counts[i], np.zeros(len(extra))])
            results.append(chi2(ref, _level_counts(matrix[:, i], both)))
        p_values = np.array([p for _, p in results])
        worst = int(np.argmin(p_values))
        return TestResult("tabular", results[worst][0], combine_p_values(p_values, correction),
                          len(matrix))

    return run


def _binned(values: np.ndarray, edges: np.ndarray) -> np.ndarray:
    """Counts of values in the bins the edges cut (len(edges) + 1 bins)."""
    return np.bincount(np.searchsorted(edges, values, side="right"), minlength=len(edges) + 1)


def _padded(counts: np.ndarray, size: int) -> np.ndarray:
    """Counts extended with zeros to `size` categories."""
    return np.concatenate([counts, np.zeros(size - len(counts), dtype=counts.dtype)])


def _level_counts(values: np.ndarray, levels: np.ndarray) -> np.ndarray:
    """How often each of the (sorted) levels occurs in values."""
    order = np.argsort(levels)
    found = np.searchsorted(levels[order], values)
    return np.bincount(order[np.clip(found, 0, len(levels) - 1)], minlength=len(levels))


class ScipyBackend(Backend):
    """KS (numeric), chi-square (categorical), each with PSI; per-column tests over the row."""

    name = "scipy"

    def __init__(self, cfg: DriftDetectionConfig):
        self.cfg = cfg

    def numeric(self, reference: np.ndarray) -> Tester:
        """KS with PSI over reference deciles."""
        return numeric_tester(reference, self.cfg.numeric_test)

    def categorical(self, reference_codes: np.ndarray) -> Tester:
        """Chi-square with PSI."""
        return categorical_tester(reference_codes)

    def row(self, reference: np.ndarray, categorical: list[int]) -> Tester:
        """KS / chi-square per preprocessed column, combined (``multivariate: tabular``)."""
        if self.cfg.multivariate != "tabular":
            raise ValueError(f"scipy backend: multivariate {self.cfg.multivariate!r} needs alibi")
        return row_tester(reference, categorical, self.cfg.correction)
