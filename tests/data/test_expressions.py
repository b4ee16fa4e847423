"""The derived-feature expression language: what it refuses, and what it computes."""

from __future__ import annotations

import pickle

import numpy as np
import pandas as pd
import pytest

from raysys.data.expressions import ExpressionError, compile_expression

TYPES = {"a": "float", "b": "int", "flag": "bool", "plan": "category", "t": "timestamp",
         "monthly spend": "float"}


@pytest.mark.parametrize(
    ("expr", "message"),
    [
        ("a.to_pickle('/tmp/x')", r"^method calls are not allowed: a\.to_pickle\('/tmp/x'\)$"),
        ("__import__('os').system('id')", r"^method calls are not allowed"),
        ("__import__('os')", r"^unknown function '__import__' \(allowed: abs, "),
        ("(lambda: 1)() + a", r"^method calls are not allowed"),
        ("a.values + 1", r"^attributes \(other than timestamp\.dt\.<field>\) are not allowed: "),
        ("a.__class__", r"^attributes .* are not allowed: a\.__class__$"),
        ("t.dt.tz_localize", r"^unknown timestamp field 'tz_localize'"),
        ("b.dt.hour", r"^'\.dt' needs a timestamp column: b\.dt\.hour$"),
        ("a[0]", r"^subscripts are not allowed: a\[0\]$"),
        ("[a, b]", r"^lists are not allowed"),
        ("a if b else 1", r"^conditional expressions are not allowed"),
        ("a + 'x'", r"^only numbers are allowed as constants, not 'x'$"),
        ("a + True", r"^only numbers are allowed as constants, not True$"),
        ("clip(a, a_min=0, a_max=1)", r"^keyword arguments are not allowed"),
        ("log(a, 2)", r"^log\(\) takes 1 argument\(s\), got 2: log\(a, 2\)$"),
        ("a @ b", r"^'@' operators are not allowed: a @ b$"),
        ("a << 2", r"^'<<' operators are not allowed"),
        ("a in b", r"^'in' comparisons are not allowed"),
        ("plan * 2", r"^'plan' is a category column: expressions compute with numbers"),
        ("t + 1", r"^'t' is a timestamp column: use t\.dt\.<field> \(year, "),
        ("t", r"^does not give a number \('t' is a timestamp column\)$"),
        ("log + 1", r"^no such column 'log' \(functions must be called\)$"),
        ("2 ** 10", r"^uses no column$"),
        ("a +", r"^invalid expression: "),
        ("`no such` + 1", r"^no such column 'no such'$"),
        ("-" * 100 + "a", r"^expression nested more than 64 levels deep$"),
        ("a + " + "9" * 5000, r"^invalid expression"),
    ],
)
def test_anything_but_arithmetic_on_columns_is_refused(expr, message):
    with pytest.raises(ExpressionError, match=message):
        compile_expression(expr, TYPES)


def test_a_number_too_large_for_a_float_is_refused():
    with pytest.raises(ExpressionError, match=r"^number too large: 1000"):
        compile_expression("a + 1" + "0" * 400, TYPES)


def test_backticked_names_columns_read_and_pickling():
    program = compile_expression("`monthly spend` / (b + 1) + t.dt.hour * flag", TYPES)
    assert program.columns == {"monthly spend", "b", "t", "flag"}
    columns = {"monthly spend": np.array([10.0, np.nan, 3.0]), "b": np.array([1.0, 2.0, -1.0]),
               "flag": np.array([1.0, 0.0, 1.0]),
               "t": pd.to_datetime(pd.Series(["2026-01-01T05:00", None, "2026-01-02T23:30"]))}
    expected = [10.0 / 2 + 5, np.nan, np.inf]
    np.testing.assert_array_equal(program.evaluate(columns), expected)
    again = pickle.loads(pickle.dumps(program))
    np.testing.assert_array_equal(again.evaluate(columns), expected)


def test_comparisons_and_logic_are_zero_one_and_null_stays_null():
    program = compile_expression("(0 < a <= 2) or not b", TYPES)
    a = np.array([1.0, 3.0, 3.0, np.nan, 1.0])
    b = np.array([1.0, 1.0, 0.0, 1.0, np.nan])
    np.testing.assert_array_equal(program.evaluate({"a": a, "b": b}), [1, 0, 1, np.nan, np.nan])
