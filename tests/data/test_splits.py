"""Splits are deterministic, partition-independent and exact where promised (pure, no Ray)."""

from __future__ import annotations

import itertools

import numpy as np
import pandas as pd
import pytest

from raysys.config import SplitConfig
from raysys.data import splits


def frame(rows: int = 20_000, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    return pd.DataFrame({
        "id": np.arange(rows),
        "x": rng.normal(size=rows),
        "label": (rng.random(rows) < 0.1).astype(int),
        "when": pd.Timestamp("2026-01-01") + pd.to_timedelta(rng.permutation(rows), unit="min"),
    })


def in_pieces(data: pd.DataFrame, cuts: list[int]):
    """A run_pass over uneven batches, as Ray Data would feed them."""
    bounds = [0, *cuts, len(data)]

    def run(fn):
        return pd.concat([fn(data.iloc[a:b]) for a, b in itertools.pairwise(bounds)], ignore_index=True)

    return run


def test_random_split_is_deterministic_and_close_to_fractions():
    data = frame()
    plan = splits.compute_plan(SplitConfig(kind="random", val=0.1, test=0.2), None, 0, 1, in_pieces(data, []))
    names = splits.assign(data, plan)
    again = np.concatenate([splits.assign(data.iloc[:777], plan), splits.assign(data.iloc[777:], plan)])
    assert (names == again).all()
    shares = pd.Series(names).value_counts(normalize=True)
    assert shares["test"] == pytest.approx(0.2, abs=0.015)
    assert shares["val"] == pytest.approx(0.1, abs=0.015)


def test_seed_changes_the_assignment():
    data = frame(2000)
    a = splits.assign(data, splits.new_plan(SplitConfig(seed=1), None))
    b = splits.assign(data, splits.new_plan(SplitConfig(seed=2), None))
    assert (a != b).mean() > 0.2


def test_stratified_split_is_exact_per_class_for_any_partitioning():
    data = frame()
    cfg = SplitConfig(kind="stratified", val=0.1, test=0.2, seed=3)
    plan_a = splits.compute_plan(cfg, "label", 0, 1, in_pieces(data, [5, 9000]))
    plan_b = splits.compute_plan(cfg, "label", 0, 1, in_pieces(data.sample(frac=1, random_state=1), [13_000]))
    assert plan_a.cuts == plan_b.cuts
    names = splits.assign(data, plan_a)
    for label, group in pd.Series(names).groupby(data["label"].to_numpy()):
        n = len(group)
        assert (group == "test").sum() == round(0.2 * n)
        assert (group == "val").sum() == round(0.3 * n) - round(0.2 * n)


def test_time_split_puts_the_newest_rows_in_test():
    data = frame(10_000)
    cfg = SplitConfig(kind="time", column="when", val=0.1, test=0.2)
    times = splits._time_values(data["when"])
    plan = splits.compute_plan(cfg, None, times.min(), times.max() + 1, in_pieces(data, [4321]))
    names = splits.assign(data, plan)
    assert (names == "test").sum() == 2000 and (names == "val").sum() == 1000
    assert data.loc[names == "train", "when"].max() < data.loc[names == "val", "when"].min()
    assert data.loc[names == "val", "when"].max() < data.loc[names == "test", "when"].min()


def test_plan_round_trips_through_json():
    import json

    data = frame(3000)
    plan = splits.compute_plan(SplitConfig(kind="stratified"), "label", 0, 1, in_pieces(data, [100]))
    again = splits.SplitPlan.from_dict(json.loads(json.dumps(plan.to_dict())))
    assert (splits.assign(data, again) == splits.assign(data, plan)).all()
