"""The alibi-detect drift backend (alibi-detect 0.13; Business Source License: non-production use).

Per column a 1-D ``KSDrift`` / ``CVMDrift`` (numeric) or ``ChiSquareDrift`` (categorical codes),
``TabularDrift`` or ``MMDDrift`` (torch) over preprocessed rows, and ``CVMDriftOnline`` over the
numeric columns for streams (its thresholds are simulated once, with 10 x ERT streams against
``ONLINE_REFERENCE_ROWS`` reference rows). Each detector is built once from the reference; a window calls its
``score``, and the family's correction is done by :mod:`raysys.monitoring.drift`.
"""

from __future__ import annotations

import base64
import tempfile
import zlib
from pathlib import Path
from typing import Any

import numpy as np

from raysys.config import DriftDetectionConfig
from raysys.monitoring.drift import Backend, OnlineDetector, Tester, TestResult, combine_p_values

MMD_REFERENCE_ROWS = 1000  # MMD's permutation test is quadratic in the rows: sample the reference
MMD_PERMUTATIONS = 100
ONLINE_REFERENCE_ROWS = 500  # threshold simulation holds (rows + window)^2 booleans per stream
STATE_FORMAT = "raysys.drift.cvm-online/1"


class AlibiBackend(Backend):
    """alibi-detect's detectors behind the :class:`raysys.monitoring.drift.Backend` interface."""

    name = "alibi"

    def __init__(self, cfg: DriftDetectionConfig):
        self.cfg = cfg

    def numeric(self, reference: np.ndarray) -> Tester:
        """A 1-D KSDrift or CVMDrift (``numeric_test``)."""
        from alibi_detect.cd import CVMDrift, KSDrift

        kind = KSDrift if self.cfg.numeric_test == "ks" else CVMDrift
        detector = kind(reference.reshape(-1, 1).astype(np.float32), p_val=self.cfg.p_value)
        return _univariate(detector, self.cfg.numeric_test)

    def categorical(self, reference_codes: np.ndarray) -> Tester:
        """A 1-D ChiSquareDrift over the codes."""
        from alibi_detect.cd import ChiSquareDrift

        detector = ChiSquareDrift(reference_codes.reshape(-1, 1), p_val=self.cfg.p_value)
        return _univariate(detector, "chi2")

    def row(self, reference: np.ndarray, categorical: list[int]) -> Tester:
        """TabularDrift (per-column tests, combined) or MMDDrift with the torch backend."""
        if self.cfg.multivariate == "mmd":
            return _mmd(reference, self.cfg.p_value)
        from alibi_detect.cd import TabularDrift

        detector = TabularDrift(reference, p_val=self.cfg.p_value, correction=self.cfg.correction,
                                categories_per_feature={i: None for i in categorical})
        correction = self.cfg.correction

        def run(matrix: np.ndarray) -> TestResult:
            p_values, distances = detector.score(matrix)
            worst = int(np.argmin(p_values))
            return TestResult("tabular", float(distances[worst]),
                              combine_p_values(np.asarray(p_values, dtype=float), correction),
                              len(matrix))

        return run

    def online(self, reference: np.ndarray) -> OnlineDetector:
        """CVMDriftOnline over the numeric columns (``online_ert``, ``online_window``)."""
        return CvmOnline(reference, self.cfg.online_ert, self.cfg.online_window)


def _univariate(detector: Any, test: str) -> Tester:
    """Run a 1-D alibi detector's score on a window's values."""
    def run(values: np.ndarray) -> TestResult:
        x = values.reshape(-1, 1).astype(np.float32 if test != "chi2" else np.int64)
        p_values, distances = detector.score(x)
        return TestResult(test, float(distances[0]), float(p_values[0]), len(values))

    return run


def _mmd(reference: np.ndarray, p_value: float) -> Tester:
    """MMDDrift (torch backend) against a sample of the reference rows."""
    from alibi_detect.cd import MMDDrift

    if len(reference) > MMD_REFERENCE_ROWS:
        pick = np.random.default_rng(0).choice(len(reference), MMD_REFERENCE_ROWS, replace=False)
        reference = reference[np.sort(pick)]
    detector = MMDDrift(reference.astype(np.float32), backend="pytorch", p_val=p_value,
                        n_permutations=MMD_PERMUTATIONS, device="cpu")

    def run(matrix: np.ndarray) -> TestResult:
        p, mmd2, _ = detector.score(matrix.astype(np.float32))
        return TestResult("mmd", float(mmd2), float(p), len(matrix))

    return run


class CvmOnline(OnlineDetector):
    """alibi's CVMDriftOnline fed row by row; reset after it flags drift, so it flags again later."""

    def __init__(self, reference: np.ndarray, ert: int, window: int):
        from alibi_detect.cd import CVMDriftOnline

        if len(reference) > ONLINE_REFERENCE_ROWS:
            pick = np.random.default_rng(0).choice(len(reference), ONLINE_REFERENCE_ROWS,
                                                   replace=False)
            reference = reference[np.sort(pick)]
        self.detector = CVMDriftOnline(reference, ert=ert, window_sizes=[window],
                                       n_bootstraps=10 * ert, verbose=False)
        self.ert, self.window = ert, window

    def update(self, rows: np.ndarray) -> dict[str, Any]:
        """Feed the rows in order; report the first flag among them (and the largest statistic)."""
        flagged_at, largest, threshold = None, 0.0, None
        for i, row in enumerate(rows):
            data = self.detector.predict(row, return_test_stat=True)["data"]
            statistic = float(np.max(data["test_stat"]))
            largest = max(largest, statistic)
            threshold = float(np.min(data["threshold"]))
            if data["is_drift"] and flagged_at is None:
                flagged_at = i
                self.detector.reset_state()
        self._trim()
        return {"test": "cvm_online", "drifted": flagged_at is not None, "flagged_row": flagged_at,
                "statistic": largest, "threshold": threshold, "t": int(self.detector.t),
                "ert": self.ert, "window": self.window}

    def _trim(self) -> None:
        """Keep only the last statistic and flag: the history is not needed to go on."""
        self.detector.test_stats = self.detector.test_stats[-1:]
        self.detector.drift_preds = self.detector.drift_preds[-1:]

    def state(self) -> dict[str, Any]:
        """alibi's own ``save_state`` file, compressed and base64 in a JSON-able dict."""
        with tempfile.TemporaryDirectory() as folder:
            self.detector.save_state(folder)
            data = (Path(folder) / "state.npz").read_bytes()
        return {"format": STATE_FORMAT, "t": int(self.detector.t),
                "npz": base64.b64encode(zlib.compress(data)).decode("ascii")}

    def restore(self, state: dict[str, Any]) -> None:
        """Load a ``state()`` through alibi's ``load_state``."""
        if state.get("format") != STATE_FORMAT:
            raise ValueError(f"online drift state: unsupported format {state.get('format')!r}")
        with tempfile.TemporaryDirectory() as folder:
            (Path(folder) / "state.npz").write_bytes(zlib.decompress(base64.b64decode(state["npz"])))
            self.detector.load_state(folder)
