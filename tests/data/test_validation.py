"""Row and column checks of raysys.data.validation on small, exact batches."""

from __future__ import annotations

import cProfile
import os
import pstats
import time
from datetime import datetime

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest

from raysys.config import ColumnSpec, SchemaConfig
from raysys.data.validation import (
    REASON_COLUMN,
    arrow_schema,
    check_columns,
    infer_columns,
    quarantine_arrow,
    to_arrow,
    validate_batch,
)
from raysys.errors import ConfigError

JAN_2020 = 1577836800  # 2020-01-01T00:00:00Z in epoch seconds


def schema(columns: dict, extra: str = "error") -> SchemaConfig:
    return SchemaConfig.model_validate({"columns": columns, "extra_columns": extra})


def run(df: pd.DataFrame, sch: SchemaConfig) -> tuple[pd.DataFrame, pd.DataFrame]:
    """validate_batch, checking that every row lands in exactly one output."""
    accepted, quarantined = validate_batch(df, sch)
    assert len(accepted) + len(quarantined) == len(df)
    assert list(accepted.index) == list(range(len(accepted)))
    assert list(quarantined.index) == list(range(len(quarantined)))
    if sch.columns:
        assert list(accepted.columns) == list(sch.columns)
        assert quarantined.columns[-1] == REASON_COLUMN
    return accepted, quarantined


def reasons(df: pd.DataFrame, sch: SchemaConfig) -> list[str]:
    return run(df, sch)[1][REASON_COLUMN].tolist()


# --------------------------------------------------------------------------- check_columns


def test_check_columns_missing_and_unexpected():
    sch = schema(
        {
            "age": {"type": "int"},
            "plan": {"type": "category"},
            "note": {"type": "string", "required": False},
        }
    )
    assert check_columns(["plan", "foo", "bar"], sch) == [
        "missing required column 'age'",
        "unexpected column 'foo' (schema.extra_columns is 'error')",
        "unexpected column 'bar' (schema.extra_columns is 'error')",
    ]
    assert check_columns(["age", "plan"], sch) == []  # 'note' is optional


def test_check_columns_drop_mode_and_empty_schema():
    sch = schema({"age": {"type": "int"}}, extra="drop")
    assert check_columns(["age", "foo"], sch) == []
    assert check_columns(["foo"], sch) == ["missing required column 'age'"]
    assert check_columns(["anything"], SchemaConfig()) == []


# --------------------------------------------------------------------------- each failure kind


@pytest.mark.parametrize(
    ("spec", "values", "expected"),
    [
        ({"type": "int"}, [None], "age: null (required)"),
        ({"type": "int"}, ["3.5"], "age: '3.5' is not an int"),
        ({"type": "int"}, [3.5], "age: 3.5 is not an int"),
        ({"type": "int"}, ["abc"], "age: 'abc' is not an int"),
        ({"type": "int", "max": 100}, ["150"], "age: 150 above max 100"),
        ({"type": "int", "min": 0}, [-1], "age: -1 below min 0"),
        ({"type": "float", "min": 0.5}, [0.25], "age: 0.25 below min 0.5"),
        ({"type": "float"}, [float("nan")], "age: null (required)"),
        ({"type": "float"}, ["NaN"], "age: null (required)"),
        ({"type": "float"}, [float("inf")], "age: inf out of range"),
        ({"type": "float", "min": 0, "max": 10}, ["-inf"], "age: -inf out of range"),
        ({"type": "float"}, ["1,5"], "age: '1,5' is not a float"),
        ({"type": "bool"}, ["maybe"], "age: 'maybe' is not a bool"),
        ({"type": "bool"}, [2], "age: 2 is not a bool"),
        ({"type": "timestamp"}, ["yesterday"], "age: 'yesterday' is not a timestamp"),
        ({"type": "timestamp"}, [1700000000], "age: 1700000000 is not a timestamp"),
        (
            {"type": "timestamp", "min": JAN_2020},
            ["2019-12-31T23:00:00"],
            "age: 2019-12-31T23:00:00 below min 2020-01-01T00:00:00",
        ),
        ({"type": "int", "allowed": [1, 2, 3]}, ["4"], "age: 4 not in allowed [1, 2, 3]"),
        ({"type": "string"}, ["   "], "age: null (required)"),
        (
            {"type": "category", "allowed": ["basic", "standard", "premium"]},
            ["gold"],
            "age: 'gold' not in allowed [basic, premium, standard]",
        ),
    ],
)
def test_each_failure_kind_has_its_reason(spec, values, expected):
    df = pd.DataFrame({"age": pd.Series(values, dtype=object)})
    accepted, quarantined = run(df, schema({"age": spec}))
    assert accepted.empty
    assert quarantined[REASON_COLUMN].tolist() == [expected]


def test_missing_required_column_quarantines_every_row():
    sch = schema({"age": {"type": "int"}, "plan": {"type": "string"}})
    df = pd.DataFrame({"plan": ["a", "b"]})
    assert reasons(df, sch) == ["age: column missing (required)"] * 2


def test_unknown_category_is_quarantined_and_known_ones_pass():
    sch = schema({"plan": {"type": "category", "allowed": ["basic", "premium"]}})
    df = pd.DataFrame({"plan": ["basic", "platinum", "premium", "Basic"]})
    accepted, quarantined = run(df, sch)
    assert accepted["plan"].tolist() == ["basic", "premium"]
    assert quarantined["plan"].tolist() == ["platinum", "Basic"]
    assert quarantined[REASON_COLUMN].tolist() == [
        "plan: 'platinum' not in allowed [basic, premium]",
        "plan: 'Basic' not in allowed [basic, premium]",
    ]


def test_allowed_ints_compare_after_coercion():
    sch = schema({"level": {"type": "int", "allowed": [1, "2"]}})
    df = pd.DataFrame({"level": pd.Series(["1", 2.0, "2.0", 3, " 1 "], dtype=object)})
    accepted, quarantined = run(df, sch)
    assert accepted["level"].tolist() == [1, 2, 2, 1]
    assert quarantined[REASON_COLUMN].tolist() == ["level: 3 not in allowed [1, 2]"]


def test_allowed_value_of_the_wrong_type_is_a_config_error():
    sch = schema({"level": {"type": "int", "allowed": [1, "high"]}})
    with pytest.raises(ConfigError, match="schema.columns.level.allowed: 'high'"):
        validate_batch(pd.DataFrame({"level": [1]}), sch)


def test_multiple_reasons_are_joined_in_column_order():
    sch = schema(
        {
            "age": {"type": "int", "max": 100},
            "plan": {"type": "category", "allowed": ["basic", "premium", "standard"]},
            "score": {"type": "float", "min": 0},
        }
    )
    df = pd.DataFrame({"age": [150, 20], "plan": ["gold", "basic"], "score": [-2.5, 1.0]})
    accepted, quarantined = run(df, sch)
    assert len(accepted) == 1
    assert quarantined[REASON_COLUMN].tolist() == [
        (
            "age: 150 above max 100; plan: 'gold' not in allowed [basic, premium, standard]; "
            "score: -2.5 below min 0"
        )
    ]


def test_quarantine_keeps_original_values_as_strings():
    sch = schema(
        {"age": {"type": "int", "max": 100}, "note": {"type": "string", "required": False}}
    )
    df = pd.DataFrame(
        {
            "age": pd.Series([150.0, 1.0, None], dtype=object),
            "extra": [7, 8, 9],
            "note": [None, "ok", "x"],
        }
    )
    _, quarantined = run(df, sch)
    # Declared columns first, then the batch's other columns, then the reason.
    assert list(quarantined.columns) == ["age", "note", "extra", REASON_COLUMN]
    assert quarantined.to_dict("records") == [
        {"age": "150.0", "note": None, "extra": "7", REASON_COLUMN: "age: 150 above max 100"},
        {"age": None, "note": "x", "extra": "9", REASON_COLUMN: "age: null (required)"},
    ]


# --------------------------------------------------------------------------- coercion


def test_string_inputs_are_coerced():
    sch = schema(
        {
            "age": {"type": "int"},
            "score": {"type": "float"},
            "active": {"type": "bool"},
            "plan": {"type": "category"},
            "seen": {"type": "timestamp"},
        }
    )
    df = pd.DataFrame(
        {
            "age": ["3", "3.0", " 42 "],
            "score": ["1.5", "-2e3", "0"],
            "active": ["true", "No", "1"],
            "plan": ["a", "b", "c"],
            "seen": ["2026-01-01", "2026-01-01T10:30:00", "2026-01-02T00:00:00Z"],
        }
    )
    accepted, quarantined = run(df, sch)
    assert quarantined.empty
    assert str(accepted["age"].dtype) == "Int64"
    assert accepted["age"].tolist() == [3, 3, 42]
    assert accepted["score"].dtype == np.float64
    assert accepted["score"].tolist() == [1.5, -2000.0, 0.0]
    assert str(accepted["active"].dtype) == "boolean"
    assert accepted["active"].tolist() == [True, False, True]
    assert accepted["plan"].tolist() == ["a", "b", "c"]
    assert accepted["seen"].tolist() == [
        pd.Timestamp("2026-01-01"),
        pd.Timestamp("2026-01-01T10:30:00"),
        pd.Timestamp("2026-01-02"),
    ]


def test_nullable_ints_from_floats_with_nan():
    sch = schema({"id": {"type": "int"}, "tenure": {"type": "int", "required": False}})
    df = pd.DataFrame({"id": [1, 2, 3], "tenure": [5.0, np.nan, 7.0]})
    accepted, quarantined = run(df, sch)
    assert quarantined.empty
    assert str(accepted["tenure"].dtype) == "Int64"
    assert accepted["tenure"].isna().tolist() == [False, True, False]
    assert accepted["tenure"].dropna().tolist() == [5, 7]
    table = to_arrow(accepted, sch.columns)
    assert table.column("tenure").to_pylist() == [5, None, 7]


def test_json_booleans_in_int_columns_read_as_one_and_zero():
    sch = schema({"churned": {"type": "int", "allowed": [0, 1]}})
    df = pd.DataFrame({"churned": pd.Series(["true", "False", True, "0", "yes"], dtype=object)})
    accepted, quarantined = run(df, sch)
    assert accepted["churned"].tolist() == [1, 0, 1, 0]
    assert quarantined[REASON_COLUMN].tolist() == ["churned: 'yes' is not an int"]


def test_large_int_strings_stay_exact():
    sch = schema({"id": {"type": "int"}})
    big = 2**62 + 1  # not representable as float64
    df = pd.DataFrame({"id": pd.Series([str(big), None, "1"], dtype=object)})
    accepted, _ = run(
        df, sch.model_copy(update={"columns": {"id": ColumnSpec(type="int", required=False)}})
    )
    assert accepted["id"].iloc[0] == big


def test_bools_in_every_spelling():
    sch = schema({"flag": {"type": "bool", "required": False}})
    values = ["true", "FALSE", "Yes", "no", "1", "0", True, False, 1, 0, 1.0, None, "", "nan"]
    df = pd.DataFrame({"flag": pd.Series(values, dtype=object)})
    accepted, quarantined = run(df, sch)
    assert quarantined.empty
    expected = [True, False, True, False, True, False, True, False, True, False, True]
    assert accepted["flag"].tolist()[:11] == expected
    assert accepted["flag"].isna().tolist() == [False] * 11 + [True] * 3


def test_timestamps_from_strings_objects_and_aware_datetimes():
    sch = schema({"ts": {"type": "timestamp", "min": JAN_2020, "max": JAN_2020 + 86400 * 3650}})
    objects = pd.Series(
        [
            "2026-01-01T12:00:00+02:00",
            datetime(2026, 1, 2, 3, 4, 5),
            pd.Timestamp("2026-01-03", tz="US/Eastern"),
            "2026-01-04 00:00:00.250",
        ],
        dtype=object,
    )
    accepted, quarantined = run(pd.DataFrame({"ts": objects}), sch)
    assert quarantined.empty
    assert accepted["ts"].dtype == "datetime64[us]"
    assert accepted["ts"].tolist() == [
        pd.Timestamp("2026-01-01T10:00:00"),  # converted to UTC, stored naive
        pd.Timestamp("2026-01-02T03:04:05"),
        pd.Timestamp("2026-01-03T05:00:00"),
        pd.Timestamp("2026-01-04T00:00:00.250"),
    ]
    aware = pd.DataFrame({"ts": pd.to_datetime(["2031-01-01", "2021-06-01"]).tz_localize("UTC")})
    accepted, quarantined = run(aware, sch)
    assert accepted["ts"].tolist() == [pd.Timestamp("2021-06-01")]
    assert quarantined[REASON_COLUMN].tolist() == [
        "ts: 2031-01-01T00:00:00 above max 2029-12-29T00:00:00"
    ]


def test_typed_input_passes_through_unchanged():
    sch = schema({"n": {"type": "int"}, "x": {"type": "float"}, "b": {"type": "bool"}})
    df = pd.DataFrame(
        {"n": np.arange(5), "x": np.linspace(0, 1, 5), "b": [True, False] * 2 + [True]}
    )
    accepted, quarantined = run(df, sch)
    assert quarantined.empty
    pd.testing.assert_frame_equal(accepted.astype({"n": "int64", "b": bool}), df, check_dtype=True)


def test_absent_optional_column_is_filled_with_nulls_and_extras_dropped():
    sch = schema(
        {
            "age": {"type": "int"},
            "score": {"type": "float", "required": False},
            "seen": {"type": "timestamp", "required": False},
            "note": {"type": "string", "required": False},
        }
    )
    df = pd.DataFrame({"extra": ["x", "y"], "age": [1, 2]})
    accepted, quarantined = run(df, sch)
    assert quarantined.empty
    assert list(accepted.columns) == ["age", "score", "seen", "note"]
    assert accepted[["score", "seen", "note"]].isna().all().all()
    table = to_arrow(accepted, sch.columns)
    assert table.schema == arrow_schema(sch.columns)
    assert table.column("seen").null_count == 2


def test_empty_schema_accepts_everything_as_is():
    df = pd.DataFrame({"a": [1, None, 3], "b": ["x", "", None]})
    accepted, quarantined = run(df, SchemaConfig())
    pd.testing.assert_frame_equal(accepted, df)
    assert quarantined.empty
    assert list(quarantined.columns) == ["a", "b", REASON_COLUMN]


def test_empty_batch():
    sch = schema({"age": {"type": "int"}, "plan": {"type": "category", "allowed": ["a"]}})
    accepted, quarantined = run(pd.DataFrame({"age": [], "plan": []}), sch)
    assert accepted.empty and quarantined.empty
    assert to_arrow(accepted, sch.columns).schema == arrow_schema(sch.columns)


# --------------------------------------------------------------------------- schemas and arrow


def test_infer_columns_from_dtypes():
    df = pd.DataFrame(
        {
            "i": [1, 2],
            "f": [1.5, np.nan],
            "b": [True, False],
            "s": ["x", "y"],
            "c": pd.Categorical(["u", "v"]),
            "t": pd.to_datetime(["2026-01-01", "2026-01-02"]),
            "ob": pd.Series([True, None], dtype=object),
            "oi": pd.Series([1, None], dtype=object),
            "ni": pd.array([1, None], dtype="Int64"),
        }
    )
    inferred = infer_columns(df)
    assert {k: v.type for k, v in inferred.items()} == {
        "i": "int",
        "f": "float",
        "b": "bool",
        "s": "string",
        "c": "category",
        "t": "timestamp",
        "ob": "bool",
        "oi": "int",
        "ni": "int",
    }
    assert all(not spec.required and spec.min is None for spec in inferred.values())


def test_arrow_tables_have_the_declared_types():
    columns = schema(
        {
            "i": {"type": "int", "required": False},
            "f": {"type": "float", "required": False},
            "b": {"type": "bool", "required": False},
            "s": {"type": "string", "required": False},
            "c": {"type": "category", "required": False},
            "t": {"type": "timestamp", "required": False},
        }
    ).columns
    assert arrow_schema(columns) == pa.schema(
        [
            ("i", pa.int64()),
            ("f", pa.float64()),
            ("b", pa.bool_()),
            ("s", pa.string()),
            ("c", pa.string()),
            ("t", pa.timestamp("us")),
        ]
    )
    df = pd.DataFrame(
        {
            "i": ["1", None, "3"],
            "f": [1.5, None, "x"],
            "b": ["yes", None, "no"],
            "s": ["a", None, "c"],
            "c": ["k", "k", None],
            "t": ["2026-01-01T00:00:00.123456", None, "2026-01-03"],
        }
    )
    accepted, quarantined = run(df, schema({k: v.model_dump() for k, v in columns.items()}))
    assert quarantined[REASON_COLUMN].tolist() == ["f: 'x' is not a float"]
    table = to_arrow(accepted, columns)
    assert table.schema == arrow_schema(columns)
    assert table.to_pylist() == [
        {
            "i": 1,
            "f": 1.5,
            "b": True,
            "s": "a",
            "c": "k",
            "t": datetime(2026, 1, 1, 0, 0, 0, 123456),
        },
        {"i": None, "f": None, "b": None, "s": None, "c": "k", "t": None},
    ]
    # Ints held as float with NaN (the usual pandas spelling of a nullable int) survive too.
    as_float = pd.DataFrame({"i": [1.0, np.nan], "t": [pd.Timestamp("2026-01-01", tz="UTC"), None]})
    table = to_arrow(as_float, columns)
    assert table.schema == arrow_schema(columns)
    assert table.column("i").to_pylist() == [1, None]
    assert table.column("t").to_pylist() == [datetime(2026, 1, 1), None]

    q = quarantine_arrow(quarantined)
    assert q.schema == pa.schema([(c, pa.string()) for c in [*columns, REASON_COLUMN]])
    assert q.to_pylist()[0]["f"] == "x"


# --------------------------------------------------------------------------- a realistic batch


def _mixed_batch(n: int, rng: np.random.Generator) -> tuple[pd.DataFrame, SchemaConfig]:
    sch = schema(
        {
            "id": {"type": "int"},
            "age": {"type": "int", "min": 0, "max": 100},
            "tenure": {"type": "int", "required": False, "min": 0},
            "income": {"type": "float", "min": 0},
            "score": {"type": "float", "required": False, "min": 0, "max": 1},
            "active": {"type": "bool"},
            "churned": {"type": "bool", "required": False},
            "plan": {"type": "category", "allowed": ["basic", "standard", "premium"]},
            "country": {"type": "category", "required": False},
            "name": {"type": "string", "required": False},
            "signup": {"type": "timestamp", "min": JAN_2020},
            "last_seen": {"type": "timestamp", "required": False},
        }
    )
    age = rng.integers(0, 100, n).astype(object)
    age[rng.random(n) < 0.01] = 150
    age[rng.random(n) < 0.01] = "abc"
    tenure = rng.integers(0, 60, n).astype(float)
    tenure[rng.random(n) < 0.05] = np.nan
    income = rng.normal(5e4, 1e4, n)
    income[rng.random(n) < 0.01] = np.nan
    score = rng.random(n)
    score[rng.random(n) < 0.01] = np.inf
    signup = pd.Timestamp("2021-01-01") + pd.to_timedelta(rng.integers(0, 10**8, n), unit="s")
    df = pd.DataFrame(
        {
            "id": np.arange(n).astype(str),
            "age": age,
            "tenure": tenure,
            "income": income,
            "score": score,
            "active": rng.choice(
                ["true", "false", "yes", "no", "maybe"], n, p=[0.3, 0.3, 0.2, 0.19, 0.01]
            ),
            "churned": rng.choice([True, False, None], n),
            "plan": rng.choice(
                ["basic", "standard", "premium", "gold"], n, p=[0.4, 0.3, 0.29, 0.01]
            ),
            "country": rng.choice(["us", "de", "fr"], n),
            "name": np.char.add("user", np.arange(n).astype(str)).astype(object),
            "signup": signup.strftime("%Y-%m-%dT%H:%M:%S"),
            "last_seen": signup + pd.Timedelta("3D"),
        }
    )
    return df, sch


def _expected_bad(df: pd.DataFrame) -> np.ndarray:
    return (
        df["age"].map(lambda v: v == "abc" or v == 150).to_numpy()
        | df["income"].isna().to_numpy()
        | np.isinf(df["score"].to_numpy())
        | (df["active"] == "maybe").to_numpy()
        | (df["plan"] == "gold").to_numpy()
    )


def _calls_into_validation(df: pd.DataFrame, sch: SchemaConfig) -> int:
    """Python calls of functions defined in raysys/data/validation.py during validate_batch."""
    profile = cProfile.Profile()
    profile.enable()
    validate_batch(df, sch)
    profile.disable()
    return sum(
        calls
        for (path, _, _), (_, calls, *_) in pstats.Stats(profile).stats.items()
        if path.endswith(os.path.join("data", "validation.py"))
    )


def test_100k_mixed_batch_is_split_correctly():
    rng = np.random.default_rng(7)
    df, sch = _mixed_batch(100_000, rng)
    expected_bad = _expected_bad(df)
    validate_batch(df.head(1000), sch)  # warm up imports and caches
    start = time.perf_counter()
    accepted, quarantined = run(df, sch)
    elapsed = time.perf_counter() - start
    assert len(quarantined) == int(expected_bad.sum())
    assert quarantined["id"].astype(int).tolist() == np.flatnonzero(expected_bad).tolist()
    assert accepted["id"].tolist() == np.flatnonzero(~expected_bad).tolist()
    assert quarantined[REASON_COLUMN].str.len().gt(0).all()
    assert to_arrow(accepted, sch.columns).schema == arrow_schema(sch.columns)
    # ~0.1-0.3 s on an idle machine; the bound only catches something badly wrong.
    assert elapsed < 20.0, f"validate_batch took {elapsed:.2f} s for 100k rows"


def test_no_python_loop_over_clean_rows():
    """Python-level work grows with failing rows, not with rows: 10x more clean rows, same calls."""
    df, sch = _mixed_batch(120_000, np.random.default_rng(3))
    bad = _expected_bad(df)
    failing, clean = df[bad].head(200), df[~bad]
    small = pd.concat([failing, clean.head(10_000)], ignore_index=True)
    large = pd.concat([failing, clean.head(100_000)], ignore_index=True)
    assert len(validate_batch(large, sch)[1]) == 200
    small_calls = _calls_into_validation(small, sch)
    large_calls = _calls_into_validation(large, sch)
    assert small_calls > 200  # the failing rows are rendered one by one
    assert large_calls <= small_calls * 1.05 + 20, (small_calls, large_calls)
