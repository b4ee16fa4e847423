"""Deterministic train/val/test splits that never need the table in memory.

Every row gets a split from its own values: a seeded hash of its key columns (random and
stratified) or its timestamp (time). The split is therefore the same on any cluster, for any
partitioning and order, offline and online. Stratified and time splits cut at exact per-group
ranks, found in two streaming passes (a histogram, then the values of one bin per cut).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from raysys.config import SplitConfig

SPLITS = ("train", "val", "test")
BINS = 4096
ALL = "*"


@dataclass
class SplitPlan:
    """How rows map to splits: cut points per group, in the order (first cut, second cut)."""

    kind: str
    seed: int
    column: str | None
    key: list[str] | None
    cuts: dict[str, list[float]] = field(default_factory=dict)
    default_cuts: list[float] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON form."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> SplitPlan:
        """Rebuild from the JSON form."""
        return cls(**data)


def row_uniform(frame: pd.DataFrame, key: list[str] | None, seed: int) -> np.ndarray:
    """A uniform number in [0, 1) per row from a seeded hash of its key columns."""
    columns = frame[key] if key else frame
    hashes = pd.util.hash_pandas_object(columns, index=False).to_numpy(np.uint64)
    mixed = _mix64(hashes ^ _mix64(np.array([seed], dtype=np.uint64)))
    return (mixed >> np.uint64(11)).astype(np.float64) * 2.0**-53


def _mix64(x: np.ndarray) -> np.ndarray:
    """The splitmix64 finalizer: a seed changes every row's hash unpredictably."""
    with np.errstate(over="ignore"):
        x = (x ^ (x >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        x = (x ^ (x >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        return x ^ (x >> np.uint64(31))


def split_values(frame: pd.DataFrame, plan: SplitPlan) -> np.ndarray:
    """The value each row is cut on: its hash for random/stratified, its time for time."""
    if plan.kind == "time":
        return _time_values(frame[plan.column])
    return row_uniform(frame, plan.key, plan.seed)


def _time_values(column: pd.Series) -> np.ndarray:
    return pd.to_datetime(column).to_numpy("datetime64[us]").astype(np.int64).astype(np.float64)


def group_labels(frame: pd.DataFrame, plan: SplitPlan) -> np.ndarray:
    """The stratum of each row (one group unless the split is stratified)."""
    if plan.kind != "stratified":
        return np.full(len(frame), ALL, dtype=object)
    return frame[plan.column].astype(str).to_numpy(dtype=object)


def assign(frame: pd.DataFrame, plan: SplitPlan) -> np.ndarray:
    """The split name of every row."""
    values, groups = split_values(frame, plan), group_labels(frame, plan)
    first, second = _cuts_per_row(groups, plan)
    order = ("train", "val", "test") if plan.kind == "time" else ("test", "val", "train")
    return np.where(values < first, order[0], np.where(values < second, order[1], order[2]))


def _cuts_per_row(groups: np.ndarray, plan: SplitPlan) -> tuple[np.ndarray, np.ndarray]:
    """Each row's two cut points, looked up per group (vectorized: one pass per group)."""
    first = np.full(len(groups), plan.default_cuts[0], dtype=np.float64)
    second = np.full(len(groups), plan.default_cuts[1], dtype=np.float64)
    for group, (low, high) in plan.cuts.items():
        mask = groups == group
        first[mask], second[mask] = low, high
    return first, second


def rank_targets(cfg: SplitConfig) -> tuple[float, float]:
    """Fractions of rows below the first and second cut."""
    if cfg.kind == "time":  # oldest rows train, newest test
        return 1 - cfg.val - cfg.test, 1 - cfg.test
    return cfg.test, cfg.test + cfg.val


def new_plan(cfg: SplitConfig, label: str | None) -> SplitPlan:
    """A plan before any exact cuts are known (random splits need none)."""
    column = cfg.column or (label if cfg.kind == "stratified" else None)
    return SplitPlan(kind=cfg.kind, seed=cfg.seed, column=column, key=cfg.key, default_cuts=list(rank_targets(cfg)))


# --------------------------------------------------------------------- exact cuts, two passes


def histogram_partial(frame: pd.DataFrame, plan: SplitPlan, low: float, high: float) -> pd.DataFrame:
    """Counts per (group, bin) of one batch."""
    bins = _bins(split_values(frame, plan), low, high)
    counts = pd.DataFrame({"group": group_labels(frame, plan), "bin": bins}).value_counts()
    return counts.rename("count").reset_index()


def _bins(values: np.ndarray, low: float, high: float) -> np.ndarray:
    scaled = (values - low) / max(high - low, 1e-300)
    return np.clip((scaled * BINS).astype(np.int64), 0, BINS - 1)


def _cumulative(histogram: pd.DataFrame) -> np.ndarray:
    counts = np.bincount(histogram["bin"].to_numpy(), weights=histogram["count"].to_numpy(), minlength=BINS)
    return np.cumsum(counts).astype(np.int64)


def _cut_cell(cumulative: np.ndarray, rank: int) -> tuple[int, int]:
    """The bin that holds the row of a 0-based rank, and that row's rank inside the bin."""
    bin_index = int(np.searchsorted(cumulative, rank, side="right"))
    return bin_index, rank - (int(cumulative[bin_index - 1]) if bin_index else 0)


def wanted_cells(histogram: pd.DataFrame, fractions: tuple[float, float]) -> dict[str, set[int]]:
    """For each group, the bins that hold a cut."""
    wanted: dict[str, set[int]] = {}
    for group, part in histogram.groupby("group"):
        cumulative = _cumulative(part)
        for fraction in fractions:
            rank = round(fraction * int(cumulative[-1]))
            if 0 < rank < cumulative[-1]:
                wanted.setdefault(str(group), set()).add(_cut_cell(cumulative, rank)[0])
    return wanted


def values_in_bins(frame: pd.DataFrame, plan: SplitPlan, low: float, high: float,
                   wanted: dict[str, set[int]]) -> pd.DataFrame:
    """The values of one batch that fall in the wanted bins of their group."""
    values, groups = split_values(frame, plan), group_labels(frame, plan)
    bins = _bins(values, low, high)
    keep = np.zeros(len(frame), dtype=bool)
    for group, group_bins in wanted.items():
        keep |= (groups == group) & np.isin(bins, list(group_bins))
    return pd.DataFrame({"group": groups[keep], "bin": bins[keep], "value": values[keep]})


def finish_cuts(plan: SplitPlan, histogram: pd.DataFrame, cells: pd.DataFrame, fractions: tuple[float, float]) -> SplitPlan:
    """Turn the two passes into exact cut values per group."""
    cuts: dict[str, list[float]] = {}
    for group, part in histogram.groupby("group"):
        total = int(part["count"].sum())
        group_cuts = []
        for fraction in fractions:
            rank = round(fraction * total)
            group_cuts.append(_cut_value(cells, str(group), part, rank, total))
        cuts[str(group)] = group_cuts
    plan.cuts = cuts
    return plan


def _cut_value(cells: pd.DataFrame, group: str, histogram: pd.DataFrame, rank: int, total: int) -> float:
    if rank <= 0:
        return float("-inf")
    if rank >= total:
        return float("inf")
    bin_index, inner = _cut_cell(_cumulative(histogram), rank)
    values = np.sort(cells.loc[(cells["group"] == group) & (cells["bin"] == bin_index), "value"].to_numpy())
    return float(values[inner])


def compute_plan(cfg: SplitConfig, label: str | None, low: float, high: float,
                 run_pass: Callable[[Callable[[pd.DataFrame], pd.DataFrame]], pd.DataFrame]) -> SplitPlan:
    """Build a plan; ``run_pass(fn)`` maps fn over every batch and concatenates the results."""
    plan = new_plan(cfg, label)
    if cfg.kind == "random":
        return plan
    if cfg.kind == "stratified":
        low, high = 0.0, 1.0
    fractions = rank_targets(cfg)
    histogram = run_pass(lambda frame: histogram_partial(frame, plan, low, high))
    histogram = histogram.groupby(["group", "bin"], as_index=False)["count"].sum()
    wanted = wanted_cells(histogram, fractions)
    cells = run_pass(lambda frame: values_in_bins(frame, plan, low, high, wanted))
    return finish_cuts(plan, histogram, cells, fractions)
