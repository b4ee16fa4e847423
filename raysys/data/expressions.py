"""Derived-feature expressions: a small whitelisted language, evaluated over numpy arrays.

An expression is parsed with :mod:`ast` (never evaluated as Python) and checked node by node.
Allowed: numbers, column names (```a name``` in backticks when it is not an identifier),
parentheses, ``+ - * / // % **``, unary ``-``/``+``, comparisons (chains too), ``and or not``
(also ``& | ~``), the functions in :data:`FUNCTIONS`, and ``column.dt.<field>`` on a timestamp
column (:data:`TIMESTAMP_FIELDS`). Anything else (method calls, other attributes, indexing,
strings, lambdas, keyword arguments, ...) is refused, saying what is not allowed.

A checked expression compiles to nested tuples (picklable, no closures) whose every operation
is element-wise, so a row's value depends on that row alone. Null (NaN) inputs of a
comparison or a logical operator give a null, imputed like any other null feature.
"""

from __future__ import annotations

import ast
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

MAX_DEPTH = 64
NUMERIC = ("int", "float", "bool")
TIMESTAMP_FIELDS = ("year", "quarter", "month", "day", "dayofweek", "dayofyear", "hour",
                    "minute", "second")
_BACKTICKED = re.compile(r"`([^`]+)`")
Node = tuple
"""Compiled: ("col", name) | ("const", x) | ("dt", column, field) | ("op", name, args)."""


def _null_aware(test: Callable[..., Any]) -> Callable[..., np.ndarray]:
    """A comparison or logical operator as 0.0/1.0, null (NaN) where an operand is null."""

    def apply(*args: Any) -> np.ndarray:
        out = np.asarray(test(*args), dtype="float64")
        nulls = np.isnan(args[0])
        for arg in args[1:]:
            nulls = nulls | np.isnan(arg)
        return np.where(nulls, np.nan, out)

    return apply


_OPERATIONS: dict[str, Callable[..., Any]] = {
    "add": np.add, "subtract": np.subtract, "multiply": np.multiply, "divide": np.true_divide,
    "floor_divide": np.floor_divide, "mod": np.mod, "power": np.power,
    "negative": np.negative, "positive": np.positive,
    "less": _null_aware(np.less), "less_equal": _null_aware(np.less_equal),
    "greater": _null_aware(np.greater), "greater_equal": _null_aware(np.greater_equal),
    "equal": _null_aware(np.equal), "not_equal": _null_aware(np.not_equal),
    "and": _null_aware(np.logical_and), "or": _null_aware(np.logical_or),
    "not": _null_aware(np.logical_not),
}
FUNCTIONS: dict[str, int] = {
    **dict.fromkeys(["abs", "sqrt", "exp", "expm1", "log", "log1p", "log2", "log10", "floor",
                     "ceil", "round", "sign", "sin", "cos", "tan", "sinh", "cosh", "tanh",
                     "arcsin", "arccos", "arctan", "arcsinh", "arccosh", "arctanh", "isnan"], 1),
    **dict.fromkeys(["minimum", "maximum", "arctan2"], 2),
    **dict.fromkeys(["clip", "where"], 3),
}
"""Functions an expression may call, with their number of arguments (numpy's semantics)."""
_OPERATIONS |= {name: getattr(np, name) for name in FUNCTIONS if name != "isnan"}
_OPERATIONS["isnan"] = lambda x: np.isnan(x).astype("float64")

_BINARY = {ast.Add: "add", ast.Sub: "subtract", ast.Mult: "multiply", ast.Div: "divide",
           ast.FloorDiv: "floor_divide", ast.Mod: "mod", ast.Pow: "power",
           ast.BitAnd: "and", ast.BitOr: "or"}
_UNARY = {ast.USub: "negative", ast.UAdd: "positive", ast.Not: "not", ast.Invert: "not"}
_COMPARE = {ast.Lt: "less", ast.LtE: "less_equal", ast.Gt: "greater", ast.GtE: "greater_equal",
            ast.Eq: "equal", ast.NotEq: "not_equal"}
_REFUSED = {ast.Subscript: "subscripts", ast.Lambda: "lambdas",
            ast.IfExp: "conditional expressions", ast.Starred: "starred arguments",
            ast.NamedExpr: "assignments",
            ast.JoinedStr: "strings", ast.List: "lists", ast.Tuple: "tuples", ast.Set: "sets",
            ast.Dict: "dicts", ast.ListComp: "comprehensions", ast.SetComp: "comprehensions",
            ast.DictComp: "comprehensions", ast.GeneratorExp: "comprehensions"}
"""Plural names, for the error, of expression nodes that are not allowed (others: their type)."""


class ExpressionError(ValueError):
    """An expression uses something that is not allowed, or is not valid."""


@dataclass(frozen=True)
class Expression:
    """A checked, compiled expression: its text, the columns it reads, and its tree."""

    text: str
    columns: frozenset[str]
    tree: Node

    def evaluate(self, columns: Mapping[str, Any]) -> np.ndarray:
        """The expression over equal-length column arrays, as float64 (element-wise)."""
        with np.errstate(all="ignore"):
            return np.asarray(_run(self.tree, columns), dtype="float64")


def compile_expression(text: str, types: Mapping[str, str]) -> Expression:
    """Check an expression over columns of the given types and compile it.

    Raises :class:`ExpressionError` naming what is not allowed (e.g. method calls).
    """
    quoted: dict[str, str] = {}

    def placeholder(match: re.Match) -> str:
        quoted[key := f"__column_{len(quoted)}__"] = match.group(1)
        return key

    source = _BACKTICKED.sub(placeholder, text).strip()
    try:
        parsed = ast.parse(source, mode="eval")
    except SyntaxError as error:
        raise ExpressionError(f"invalid expression: {error.msg}") from None
    except (RecursionError, MemoryError, ValueError) as error:
        raise ExpressionError(f"invalid expression: {type(error).__name__}") from None
    checker = _Checker(source, types, quoted)
    tree, kind = checker.visit(parsed.body, 0)
    if kind != "number":
        raise ExpressionError(f"does not give a number ('{checker.snippet(parsed.body)}' is a "
                              f"{kind} column)")
    if not checker.columns:
        raise ExpressionError("uses no column")
    return Expression(text, frozenset(checker.columns), tree)


class _Checker:
    """Walks a parsed expression: refuses what is not allowed, builds the compiled tree."""

    def __init__(self, source: str, types: Mapping[str, str], quoted: dict[str, str]):
        self.source, self.types, self.quoted = source, types, quoted
        self.columns: set[str] = set()

    def snippet(self, node: ast.AST) -> str:
        """The source text of a node, with backticked names restored, shortened."""
        text = ast.get_source_segment(self.source, node) or ast.unparse(node)
        for key, name in self.quoted.items():
            text = text.replace(key, f"`{name}`")
        return text if len(text) <= 60 else text[:57] + "..."

    def refuse(self, what: str, node: ast.AST) -> ExpressionError:
        """The error for a node that is not allowed."""
        return ExpressionError(f"{what} are not allowed: {self.snippet(node)}")

    def visit(self, node: ast.AST, depth: int) -> tuple[Node, str]:
        """(compiled tree, kind) of a node; kind is 'number' or a non-numeric column type."""
        if depth > MAX_DEPTH:
            raise ExpressionError(f"expression nested more than {MAX_DEPTH} levels deep")
        visit = getattr(self, f"visit_{type(node).__name__}", None)
        if visit is None:
            raise self.refuse(_REFUSED.get(type(node), f"{type(node).__name__} expressions"), node)
        return visit(node, depth + 1)

    def number(self, node: ast.AST, depth: int) -> Node:
        """A sub-expression that must be a number."""
        tree, kind = self.visit(node, depth)
        if kind == "timestamp":
            fields = ", ".join(TIMESTAMP_FIELDS)
            raise ExpressionError(f"'{self.snippet(node)}' is a timestamp column: use "
                                  f"{self.snippet(node)}.dt.<field> ({fields})")
        if kind != "number":
            raise ExpressionError(f"'{self.snippet(node)}' is a {kind} column: expressions "
                                  "compute with numbers (categories are features already)")
        return tree

    def visit_Constant(self, node: ast.Constant, depth: int) -> tuple[Node, str]:
        value = node.value
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ExpressionError(
                f"only numbers are allowed as constants, not {self.snippet(node)}")
        try:
            return ("const", float(value)), "number"
        except OverflowError:
            raise ExpressionError(f"number too large: {self.snippet(node)}") from None

    def visit_Name(self, node: ast.Name, depth: int) -> tuple[Node, str]:
        name = self.quoted.get(node.id, node.id)
        if name not in self.types:
            hint = " (functions must be called)" if name in FUNCTIONS else ""
            raise ExpressionError(f"no such column '{name}'{hint}")
        self.columns.add(name)
        kind = self.types[name]
        return ("col", name), "number" if kind in NUMERIC else kind

    def visit_BinOp(self, node: ast.BinOp, depth: int) -> tuple[Node, str]:
        op = _BINARY.get(type(node.op))
        if op is None:
            raise self.refuse(f"'{_operator_text(node.op)}' operators", node)
        args = (self.number(node.left, depth), self.number(node.right, depth))
        return ("op", op, args), "number"

    def visit_UnaryOp(self, node: ast.UnaryOp, depth: int) -> tuple[Node, str]:
        return ("op", _UNARY[type(node.op)], (self.number(node.operand, depth),)), "number"

    def visit_BoolOp(self, node: ast.BoolOp, depth: int) -> tuple[Node, str]:
        op = "and" if isinstance(node.op, ast.And) else "or"
        tree = self.number(node.values[0], depth)
        for value in node.values[1:]:
            tree = ("op", op, (tree, self.number(value, depth)))
        return tree, "number"

    def visit_Compare(self, node: ast.Compare, depth: int) -> tuple[Node, str]:
        if bad := [op for op in node.ops if type(op) not in _COMPARE]:
            raise self.refuse(f"'{_operator_text(bad[0])}' comparisons", node)
        operands = [self.number(n, depth) for n in (node.left, *node.comparators)]
        tests = [("op", _COMPARE[type(op)], (a, b))
                 for op, a, b in zip(node.ops, operands, operands[1:])]
        tree = tests[0]
        for test in tests[1:]:  # a < b < c: (a < b) and (b < c)
            tree = ("op", "and", (tree, test))
        return tree, "number"

    def visit_Call(self, node: ast.Call, depth: int) -> tuple[Node, str]:
        if not isinstance(node.func, ast.Name):
            raise self.refuse("method calls", node)
        name = node.func.id
        if name not in FUNCTIONS:
            raise ExpressionError(f"unknown function '{name}' (allowed: {', '.join(FUNCTIONS)})")
        if node.keywords:
            raise self.refuse("keyword arguments", node)
        if len(node.args) != FUNCTIONS[name]:
            raise ExpressionError(f"{name}() takes {FUNCTIONS[name]} argument(s), got "
                                  f"{len(node.args)}: {self.snippet(node)}")
        return ("op", name, tuple(self.number(a, depth) for a in node.args)), "number"

    def visit_Attribute(self, node: ast.Attribute, depth: int) -> tuple[Node, str]:
        owner = node.value
        if not (isinstance(owner, ast.Attribute) and owner.attr == "dt"
                and isinstance(owner.value, ast.Name)):
            raise self.refuse("attributes (other than timestamp.dt.<field>)", node)
        column, kind = self.visit(owner.value, depth)
        if kind != "timestamp":
            raise ExpressionError(f"'.dt' needs a timestamp column: {self.snippet(node)}")
        if node.attr not in TIMESTAMP_FIELDS:
            raise ExpressionError(f"unknown timestamp field '{node.attr}' (allowed: "
                                  f"{', '.join(TIMESTAMP_FIELDS)})")
        return ("dt", column[1], node.attr), "number"


def _operator_text(op: ast.AST) -> str:
    symbols = {ast.MatMult: "@", ast.LShift: "<<", ast.RShift: ">>", ast.BitXor: "^",
               ast.In: "in", ast.NotIn: "not in", ast.Is: "is", ast.IsNot: "is not"}
    return symbols.get(type(op), type(op).__name__)


def _run(node: Node, columns: Mapping[str, Any]) -> Any:
    kind = node[0]
    if kind == "col":
        return columns[node[1]]
    if kind == "const":
        return node[1]
    if kind == "dt":
        field = getattr(pd.Series(columns[node[1]], copy=False).dt, node[2])
        return field.to_numpy(dtype="float64", na_value=np.nan)
    return _OPERATIONS[node[1]](*(_run(arg, columns) for arg in node[2]))
