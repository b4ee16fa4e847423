"""Mergeable column statistics of raysys.data.stats against pandas on the whole frame."""

from __future__ import annotations

import itertools
import json
import math
from functools import reduce

import numpy as np
import pandas as pd
import pytest

from raysys.config import ColumnSpec
from raysys.data.stats import (
    MAX_DISTINCT,
    TOP_N,
    batch_stats,
    diff_stats,
    finalize_stats,
    merge_stats,
    null_rate_failures,
)

TYPES = {
    "id": "int",
    "tenure": "int",
    "income": "float",
    "active": "bool",
    "plan": "category",
    "name": "string",
    "signup": "timestamp",
}
EXACT = ("type", "count", "nulls", "null_rate", "min", "max", "distinct", "top", "counts")


def frame(n: int = 2000, seed: int = 0, shift: float = 0.0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    income = rng.normal(50_000 + shift, 10_000, n)
    income[rng.random(n) < 0.05] = np.nan
    tenure = pd.array(rng.integers(0, 120, n), dtype="Int64")
    tenure[rng.random(n) < 0.1] = pd.NA
    plan = rng.choice(["basic", "standard", "premium"], n, p=[0.5, 0.3, 0.2]).astype(object)
    plan[rng.random(n) < 0.02] = None
    signup = pd.Series(pd.Timestamp("2025-01-01") + pd.to_timedelta(rng.integers(0, 10**7, n), "s"))
    signup[rng.random(n) < 0.03] = pd.NaT
    return pd.DataFrame(
        {
            "id": np.arange(n, dtype="int64") + 10**9,
            "tenure": tenure,
            "income": income,
            "active": pd.array(rng.random(n) < 0.3, dtype="boolean"),
            "plan": plan,
            "name": rng.choice([f"n{i}" for i in range(50)], n).astype(object),
            "signup": signup,
        }
    )


def pieces(df: pd.DataFrame, cuts: list[int]) -> list[pd.DataFrame]:
    bounds = [0, *cuts, len(df)]
    return [df.iloc[a:b] for a, b in itertools.pairwise(bounds)]


def assert_same(got: dict, want: dict) -> None:
    assert got.keys() == want.keys()
    for name, expected in want.items():
        for key in EXACT:
            assert got[name].get(key) == expected.get(key), (name, key)
        for key in ("mean", "std"):
            a, b = got[name][key], expected[key]
            assert (a is None) == (b is None), (name, key)
            if a is not None:
                assert a == pytest.approx(b, rel=1e-9, abs=1e-9), (name, key)


def test_whole_frame_matches_pandas():
    df = frame()
    final = finalize_stats(batch_stats(df, TYPES))
    income = df["income"]
    assert final["income"]["count"] == len(df)
    assert final["income"]["nulls"] == int(income.isna().sum())
    assert final["income"]["null_rate"] == income.isna().mean()
    assert final["income"]["mean"] == pytest.approx(income.mean(), rel=1e-12)
    assert final["income"]["std"] == pytest.approx(income.std(ddof=1), rel=1e-9)
    assert (final["income"]["min"], final["income"]["max"]) == (income.min(), income.max())
    assert final["id"]["min"] == 10**9 and final["id"]["max"] == 10**9 + len(df) - 1
    assert isinstance(final["id"]["min"], int)
    assert final["tenure"]["nulls"] == int(df["tenure"].isna().sum())
    assert final["active"]["mean"] == pytest.approx(df["active"].astype(float).mean())
    assert (final["active"]["min"], final["active"]["max"]) == (False, True)
    counts = df["plan"].value_counts()
    assert final["plan"]["counts"] == {k: int(v) for k, v in counts.items()}
    assert list(final["plan"]["top"]) == list(counts.index)  # most frequent first
    assert final["plan"]["distinct"] == 3 and final["plan"]["truncated"] is False
    assert final["plan"]["mean"] is None and final["plan"]["min"] is None
    assert final["name"]["distinct"] == 50 and len(final["name"]["top"]) == TOP_N
    assert final["signup"]["min"] == df["signup"].min().isoformat()
    assert final["signup"]["max"] == df["signup"].max().isoformat()
    assert final["signup"]["nulls"] == int(df["signup"].isna().sum())
    json.dumps(final)  # JSON-serializable as it is


@pytest.mark.parametrize("cuts", [[1000], [1, 2, 3], [7, 500, 1999], [0, 0, 1500, 1500]])
def test_merging_pieces_in_any_order_equals_the_whole(cuts):
    df = frame()
    whole = finalize_stats(batch_stats(df, TYPES))
    parts = [batch_stats(p, TYPES) for p in pieces(df, cuts)]
    for order in itertools.permutations(parts):
        assert_same(finalize_stats(reduce(merge_stats, order)), whole)
    # A tree of merges (how a distributed reduce combines partials) gives the same answer.
    tree = parts
    while len(tree) > 1:
        tree = [reduce(merge_stats, tree[i : i + 2]) for i in range(0, len(tree), 2)]
    assert_same(finalize_stats(tree[0]), whole)


def test_int_min_max_stay_exact_beyond_float_precision():
    big = pd.DataFrame({"x": np.array([2**62 + 1, 2**62 + 3, 5], dtype="int64")})
    parts = [batch_stats(p, {"x": "int"}) for p in pieces(big, [1])]
    final = finalize_stats(merge_stats(*parts))
    assert (final["x"]["min"], final["x"]["max"]) == (5, 2**62 + 3)


def test_merge_is_commutative_and_leaves_inputs_alone():
    df = frame()
    a, b = (batch_stats(p, TYPES) for p in pieces(df, [700]))
    a_before = json.dumps(a, sort_keys=True)
    assert merge_stats(a, b) == merge_stats(b, a)
    assert json.dumps(a, sort_keys=True) == a_before


def test_stats_of_empty_and_all_null_batches():
    types = {"x": "float", "c": "category", "t": "timestamp", "absent": "int"}
    empty = pd.DataFrame(
        {"x": pd.Series([], dtype=float), "c": [], "t": pd.Series([], dtype="datetime64[ns]")}
    )
    nulls = pd.DataFrame({"x": [np.nan], "c": [None], "t": [pd.NaT]})
    full = pd.DataFrame({"x": [1.0, 3.0], "c": ["a", "b"], "t": pd.to_datetime(["2026-01-01"] * 2)})
    final = finalize_stats(
        reduce(merge_stats, [batch_stats(f, types) for f in (empty, nulls, full)])
    )
    assert final["x"] == {
        "type": "float",
        "count": 3,
        "nulls": 1,
        "null_rate": 1 / 3,
        "min": 1.0,
        "max": 3.0,
        "mean": 2.0,
        "std": math.sqrt(2.0),
        "distinct": None,
        "top": None,
        "truncated": False,
    }
    assert final["absent"]["nulls"] == 3 and final["absent"]["mean"] is None
    assert final["c"]["counts"] == {"a": 1, "b": 1}
    assert final["t"]["min"] == "2026-01-01T00:00:00"
    assert finalize_stats(batch_stats(empty, types))["x"]["null_rate"] is None


def test_distinct_values_are_capped_and_marked_truncated():
    n = MAX_DISTINCT + 500
    df = pd.DataFrame({"s": [f"v{i}" for i in range(n)] + ["v0"] * 10})
    halves = pieces(df, [n // 2])
    merged = finalize_stats(merge_stats(*(batch_stats(h, {"s": "string"}) for h in halves)))
    assert merged["s"]["truncated"] is True
    assert merged["s"]["distinct"] == MAX_DISTINCT
    assert merged["s"]["top"]["v0"] == 11  # the frequent value survives the cap
    small = finalize_stats(batch_stats(df.head(100), {"s": "string"}))
    assert small["s"]["truncated"] is False and small["s"]["distinct"] == 100


def test_merging_different_types_is_an_error():
    a = batch_stats(pd.DataFrame({"x": [1]}), {"x": "int"})
    b = batch_stats(pd.DataFrame({"x": ["1"]}), {"x": "string"})
    with pytest.raises(ValueError, match="column 'x'"):
        merge_stats(a, b)


def test_null_rate_failures():
    df = pd.DataFrame({"age": [1.0] * 37 + [None] * 3, "plan": ["a"] * 40, "x": [None] * 40})
    final = finalize_stats(batch_stats(df, {"age": "float", "plan": "string", "x": "int"}))
    columns = {
        "age": ColumnSpec(type="float", max_null_rate=0.05),
        "plan": ColumnSpec(type="string", max_null_rate=0.0),
        "x": ColumnSpec(type="int", max_null_rate=1.0),
        "missing": ColumnSpec(type="int", max_null_rate=0.0),
    }
    assert null_rate_failures(final, columns) == [
        "column 'age': null rate 7.5% above max_null_rate 5.0%"
    ]
    columns["age"] = ColumnSpec(type="float", max_null_rate=0.0749)
    assert null_rate_failures(final, columns) == [
        "column 'age': null rate 7.50% above max_null_rate 7.49%"
    ]
    columns["age"] = ColumnSpec(type="float", max_null_rate=0.075)
    assert null_rate_failures(final, columns) == []


def test_diff_reports_shift_added_removed_columns_and_categories():
    before = frame(n=4000, seed=1)
    after = frame(n=5000, seed=2, shift=20_000)  # income mean moves up about 2 std
    after["plan"] = after["plan"].replace({"premium": "gold"})
    after = after.drop(columns=["name"]).assign(region="eu")
    after["tenure"] = after["tenure"].astype("float64")
    types_a = TYPES
    types_b = {**{k: v for k, v in TYPES.items() if k != "name"}, "region": "string"}
    types_b["tenure"] = "float"
    a = finalize_stats(batch_stats(before, types_a))
    b = finalize_stats(batch_stats(after, types_b))
    diff = diff_stats(a, b)
    json.dumps(diff)

    assert diff["added"] == ["region"]
    assert diff["removed"] == ["name"]
    assert diff["type_changed"] == {"tenure": {"old": "int", "new": "float"}}
    assert set(diff["columns"]) == {"id", "tenure", "income", "active", "plan", "signup"}

    income = diff["columns"]["income"]
    assert income["count"] == {"old": 4000, "new": 5000, "change": 1000}
    assert income["mean"]["change"] == pytest.approx(b["income"]["mean"] - a["income"]["mean"])
    assert income["mean_shift_std"] == pytest.approx(2.0, abs=0.15)
    assert income["mean_shift_std"] == pytest.approx(
        (b["income"]["mean"] - a["income"]["mean"]) / a["income"]["std"]
    )
    assert income["null_rate_change"] == pytest.approx(
        b["income"]["null_rate"] - a["income"]["null_rate"]
    )
    assert income["null_rate"]["old"] == a["income"]["null_rate"]
    assert income["max"]["change"] == pytest.approx(b["income"]["max"] - a["income"]["max"])
    assert abs(diff["columns"]["active"]["mean_shift_std"]) < 0.1  # unchanged column

    plan = diff["columns"]["plan"]
    assert plan["mean_shift_std"] is None
    assert plan["categories_added"] == ["gold"]
    assert plan["categories_removed"] == ["premium"]
    assert plan["categories_approximate"] is False
    biggest = {c["value"]: c for c in plan["frequency_changes"][:2]}
    assert set(biggest) == {"gold", "premium"}
    assert biggest["gold"]["old"] == 0
    assert biggest["gold"]["new"] == pytest.approx(0.2, abs=0.02)
    assert biggest["premium"]["change"] == pytest.approx(-0.2, abs=0.02)

    tenure = diff["columns"]["tenure"]  # type changed: rows and nulls only
    assert "mean" not in tenure and tenure["mean_shift_std"] is None
    signup = diff["columns"]["signup"]
    assert signup["min"]["old"] == a["signup"]["min"]
    assert isinstance(signup["min"]["change"], float)


def test_diff_of_identical_stats_is_all_zero():
    final = finalize_stats(batch_stats(frame(), TYPES))
    diff = diff_stats(final, final)
    assert diff["added"] == diff["removed"] == [] and diff["type_changed"] == {}
    for col in diff["columns"].values():
        assert col["count"]["change"] == 0 and col["null_rate_change"] == 0
        assert col["mean_shift_std"] in (0.0, None)
        if "frequency_changes" in col:
            assert col["frequency_changes"] == [] and col["categories_added"] == []
