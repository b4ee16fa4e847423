"""Feature engineering: plan from config, fit mergeable statistics, transform with no batch state.

``transform(state, df)`` is the single function used offline (Ray Data ``map_batches``) and online
(a one-row frame), and every output value depends only on its own row and the fitted state, so a
row gives byte-identical features alone or inside any batch. Input coercion, applied the same way
everywhere: numeric features read each value as a float (bools as 0/1, numeric strings parsed);
nulls, non-finite numbers and values of a wrong type (``"abc"`` in a numeric column) count as null
and are imputed. Categorical values are compared as strings (``3.0`` and ``3`` both read ``"3"``);
nulls, rare and unseen values fold into ``__other__``. Standard scaling uses the population std.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from fractions import Fraction
from typing import Any

import numpy as np
import pandas as pd

from raysys.config import CategoricalFeature, ColumnType, FeaturesConfig, NumericFeature
from raysys.data.expressions import Expression, ExpressionError, compile_expression
from raysys.errors import ConfigError, RaysysError

OTHER = "__other__"
FORMAT = "raysys.features/1"
SAMPLE_SIZE = 4096
NUMERIC_TYPES = ("int", "float", "bool")
Columns = pd.DataFrame | Mapping[str, Sequence[Any]]
"""Raw rows: a frame, or column name → values (lists or arrays of equal length)."""


@dataclass(frozen=True)
class FeaturePlan:
    """Which raw columns are read and how each feature is built (from config, before fitting)."""

    inputs: dict[str, ColumnType]
    derived: dict[str, Expression]
    numeric: dict[str, NumericFeature]
    categorical: dict[str, CategoricalFeature]


@dataclass(frozen=True)
class FeatureState:
    """The fitted, JSON-serialisable preprocessing artifact that ``transform`` applies.

    Derived expressions are checked and compiled on construction, so a state read from a file
    that was tampered with raises instead of running anything.
    """

    inputs: dict[str, str]
    derived: dict[str, str]
    numeric: dict[str, dict[str, Any]]
    categorical: dict[str, dict[str, Any]]
    rows: int = 0
    programs: dict[str, Expression] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        try:
            programs = compile_derived(self.inputs, self.derived)
        except ConfigError as error:
            raise RaysysError(f"feature state: {error}") from None
        object.__setattr__(self, "programs", programs)

    @property
    def input_columns(self) -> list[str]:
        """Raw columns that ``transform`` reads."""
        return list(self.inputs)

    @property
    def output_columns(self) -> list[str]:
        """Feature columns: numeric ones, then per categorical its code or its one-hot columns."""
        out = list(self.numeric)
        for name, cat in self.categorical.items():
            ordinal = cat["encode"] == "ordinal"
            out += [name] if ordinal else [f"{name}={v}" for v in [*cat["categories"], OTHER]]
        return out

    @property
    def state_id(self) -> str:
        """First 16 hex chars of the sha256 of the canonical JSON."""
        text = json.dumps(self.to_dict(), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(text.encode()).hexdigest()[:16]

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON types (a deep copy); ordered things are lists, safe under ``sort_keys``."""
        return json.loads(json.dumps({
            "format": FORMAT, "rows": self.rows,
            "inputs": [{"name": k, "type": v} for k, v in self.inputs.items()],
            "derived": [{"name": k, "expr": v} for k, v in self.derived.items()],
            "numeric": [{"name": k, **v} for k, v in self.numeric.items()],
            "categorical": [{"name": k, **v} for k, v in self.categorical.items()],
        }, allow_nan=False))

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> FeatureState:
        """Rebuild a state from ``to_dict`` output (e.g. after a JSON round trip)."""
        if d.get("format") != FORMAT:
            raise RaysysError(f"feature state: unsupported format {d.get('format')!r}")
        try:
            rest = {k: {i["name"]: {f: v for f, v in i.items() if f != "name"} for i in d[k]}
                    for k in ("numeric", "categorical")}
            return cls(inputs={i["name"]: i["type"] for i in d["inputs"]},
                       derived={i["name"]: i["expr"] for i in d["derived"]},
                       rows=int(d["rows"]), **rest)
        except (KeyError, TypeError) as error:
            raise RaysysError(f"feature state: malformed, {type(error).__name__} {error}") from None


# --------------------------------------------------------------------------- planning


def kept_name(column: str) -> str:
    """Where a raw column kept beside the features lands when a feature output has its name."""
    return f"_kept.{column}"


def plan_features(
    cfg: FeaturesConfig, column_types: dict[str, ColumnType], label: str | None
) -> FeaturePlan:
    """Decide which columns become numeric or categorical features, checking the config."""
    derived, derived_inputs = _plan_derived(cfg, column_types, label)
    never = set(cfg.exclude) | ({label} if label else set())
    _check_explicit(cfg, column_types, derived, never)
    numeric: dict[str, NumericFeature] = {}
    categorical: dict[str, CategoricalFeature] = {}
    for col, ctype in column_types.items():
        if col in cfg.numeric:
            numeric[col] = cfg.numeric[col]
        elif col in cfg.categorical:
            categorical[col] = cfg.categorical[col]
        elif cfg.auto and col not in never and ctype != "timestamp":
            if ctype in NUMERIC_TYPES:
                numeric[col] = NumericFeature()
            else:
                categorical[col] = CategoricalFeature()
    for name in derived:
        numeric[name] = cfg.numeric.get(name, NumericFeature())
    used = set(numeric) | set(categorical) | derived_inputs
    inputs = {c: t for c, t in column_types.items() if c in used}
    return FeaturePlan(inputs=inputs, derived=derived, numeric=numeric, categorical=categorical)


def _check_explicit(cfg: FeaturesConfig, types: dict, derived: dict, never: set) -> None:
    for section, names in (("numeric", cfg.numeric), ("categorical", cfg.categorical)):
        for name in names:
            problem = _explicit_problem(section, name, cfg, types, derived, never)
            if problem:
                raise ConfigError(f"features.{section}.{name}: {problem}")


def _explicit_problem(
    section: str, name: str, cfg: FeaturesConfig, types: dict, derived: dict, never: set
) -> str | None:
    if section == "categorical" and (name in cfg.numeric or name in derived):
        return "derived features are numeric" if name in derived else "also in features.numeric"
    if name in derived:
        return None
    if name not in types:
        return "no such column"
    if name in never:
        return "is the label or excluded, so it cannot be a feature"
    if types[name] == "timestamp":
        return "timestamp columns cannot be features (derive a number from them)"
    if section == "numeric" and types[name] not in NUMERIC_TYPES:
        return f"is a {types[name]} column; list it under features.categorical"
    return None


def _plan_derived(cfg: FeaturesConfig, types: dict, label: str | None) -> tuple[dict, set]:
    seen = set(types)
    for i, item in enumerate(cfg.derived):
        if item.name in seen:
            raise ConfigError(f"features.derived[{i}].name: '{item.name}' clashes with an "
                              "existing column or derived feature")
        seen.add(item.name)
    derived = compile_derived(types, {item.name: item.expr for item in cfg.derived})
    for i, program in enumerate(derived.values()):
        if label in program.columns:
            raise ConfigError(f"features.derived[{i}].expr: uses the label '{label}'")
    inputs = {c for program in derived.values() for c in program.columns if c in types}
    return derived, inputs


def compile_derived(types: Mapping[str, str], derived: Mapping[str, str]) -> dict[str, Expression]:
    """Check and compile derived expressions in order; each may use the ones before it."""
    known, programs = dict(types), {}
    for i, (name, expr) in enumerate(derived.items()):
        try:
            programs[name] = compile_expression(expr, known)
        except ExpressionError as error:
            raise ConfigError(f"features.derived[{i}].expr: {error}") from None
        known[name] = "float"
    return programs


# --------------------------------------------------------------------------- row-wise coercion


def _to_float(values: pd.Series | np.ndarray) -> np.ndarray:
    """Each value as float64 (a new array); null, non-finite or non-numeric values become NaN."""
    dtype = values.dtype
    if pd.api.types.is_numeric_dtype(dtype) or pd.api.types.is_bool_dtype(dtype):
        if isinstance(values, np.ndarray):
            out = values.astype("float64")  # always a copy
        else:
            out = values.to_numpy(dtype="float64", na_value=np.nan, copy=True)  # never a view
    else:
        items = values.tolist() if isinstance(values, np.ndarray) else values.astype(object).tolist()
        out = np.array([_scalar_float(v) for v in items], dtype="float64")
    out[~np.isfinite(out)] = np.nan
    return out


def _scalar_float(value: Any) -> float:
    if isinstance(value, (bool, int, float, str)):
        try:
            return float(value)
        except (ValueError, OverflowError):
            return math.nan
    return math.nan


def _category_key(value: Any) -> str | None:
    """A value as a category string; ``None`` for null (integral floats read like ints)."""
    if value is None or (not isinstance(value, str) and pd.api.types.is_scalar(value)
                         and bool(pd.isna(value))):
        return None
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def _keys(values: pd.Series | np.ndarray) -> list[str | None]:
    items = values.tolist() if isinstance(values, np.ndarray) else values.astype(object).tolist()
    return [_category_key(v) for v in items]


def _prepare(
    inputs: dict[str, str], derived: dict[str, Expression], data: Columns
) -> dict[str, np.ndarray]:
    """Raw inputs coerced by type, plus derived columns, as arrays; raises if an input is missing.

    Columns are gathered in a dict (no frame is built): this keeps a one-row transform, the
    online path, well under a millisecond.
    """
    missing = [c for c in inputs if c not in data]
    if missing:
        raise RaysysError(f"features: missing input column(s): {', '.join(map(repr, missing))}")
    columns: dict[str, np.ndarray] = {}
    for col, ctype in inputs.items():
        values = data[col]
        if ctype in NUMERIC_TYPES:
            columns[col] = _to_float(values if hasattr(values, "dtype") else np.asarray(values))
        elif ctype == "timestamp":
            columns[col] = pd.to_datetime(pd.Series(values), errors="coerce", format="ISO8601").array
        else:
            columns[col] = np.asarray(values, dtype=object)
    for name, program in derived.items():
        columns[name] = _to_float(program.evaluate(columns))
    return columns


# --------------------------------------------------------------------------- fitting


def fit_partial(plan: FeaturePlan, df: pd.DataFrame) -> dict:
    """Mergeable statistics of one batch: exact sums, min/max, a median sample, value counts."""
    columns = _prepare(plan.inputs, plan.derived, df)
    numeric = {name: _numeric_partial(columns[name]) for name in plan.numeric}
    categorical = {
        name: dict(Counter(k for k in _keys(columns[name]) if k is not None))
        for name in plan.categorical
    }
    return {"rows": len(df), "numeric": numeric, "categorical": categorical}


def _numeric_partial(values: np.ndarray) -> dict:
    values = values[~np.isnan(values)] + 0.0  # + 0.0 turns -0.0 into 0.0
    total, squares = _exact_sums(values)
    uniq, counts = np.unique(values, return_counts=True)
    return {
        "count": int(values.size), "sum": total, "sumsq": squares,
        "min": float(uniq[0]) if uniq.size else None,
        "max": float(uniq[-1]) if uniq.size else None,
        "sample": _bottom_k(dict(zip(uniq.tolist(), counts.tolist()))),
    }


def _exact_sums(values: np.ndarray) -> tuple[Fraction, Fraction]:
    """Exact sum and sum of squares, so that merging pieces in any order gives the same result."""
    values = values[values != 0]
    if not values.size:
        return Fraction(0), Fraction(0)
    mantissa, exponent = np.frexp(values)  # value = int(mantissa * 2**53) * 2**(exponent - 53)
    low = int(exponent.min())
    ints = (mantissa * 2.0**53).astype(np.int64).astype(object) << (exponent - low).astype(object)
    scale = Fraction(2) ** (low - 53)
    return int(ints.sum()) * scale, int((ints * ints).sum()) * scale * scale


def _bottom_k(sample: dict[float, int]) -> dict[float, int]:
    """Keep the SAMPLE_SIZE distinct values of smallest hash: deterministic and mergeable."""
    if len(sample) <= SAMPLE_SIZE:
        return sample
    values = np.array(list(sample), dtype="float64")
    z = values.view(np.uint64) + np.uint64(0x9E3779B97F4A7C15)  # splitmix64 finaliser
    z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    keep = np.lexsort((values, z ^ (z >> np.uint64(31))))[:SAMPLE_SIZE]
    return {float(v): sample[float(v)] for v in values[keep]}


def merge_partials(a: dict, b: dict) -> dict:
    """Combine two ``fit_partial`` results (associative and commutative)."""
    numeric = {name: _merge_numeric(a["numeric"][name], b["numeric"][name]) for name in a["numeric"]}
    categorical = {
        name: dict(Counter(a["categorical"][name]) + Counter(b["categorical"][name]))
        for name in a["categorical"]
    }
    return {"rows": a["rows"] + b["rows"], "numeric": numeric, "categorical": categorical}


def _merge_numeric(a: dict, b: dict) -> dict:
    both = (a, b)
    return {
        "count": a["count"] + b["count"], "sum": a["sum"] + b["sum"],
        "sumsq": a["sumsq"] + b["sumsq"],
        "min": min((x["min"] for x in both if x["min"] is not None), default=None),
        "max": max((x["max"] for x in both if x["max"] is not None), default=None),
        "sample": _bottom_k(dict(Counter(a["sample"]) + Counter(b["sample"]))),
    }


def finalize(plan: FeaturePlan, partial: dict) -> FeatureState:
    """Turn merged partial statistics into a FeatureState."""
    numeric = {n: _numeric_state(c, partial["numeric"][n]) for n, c in plan.numeric.items()}
    categorical = {
        n: _categorical_state(c, partial["categorical"][n]) for n, c in plan.categorical.items()
    }
    derived = {name: program.text for name, program in plan.derived.items()}
    return FeatureState(inputs=dict(plan.inputs), derived=derived, numeric=numeric,
                        categorical=categorical, rows=int(partial["rows"]))


def fit(plan: FeaturePlan, df: pd.DataFrame) -> FeatureState:
    """Fit on one frame: ``finalize(plan, fit_partial(plan, df))``."""
    return finalize(plan, fit_partial(plan, df))


def _numeric_state(cfg: NumericFeature, p: dict) -> dict[str, Any]:
    stats = {"count": p["count"], "mean": None, "std": None, "min": p["min"], "max": p["max"],
             "median": None}
    if p["count"]:
        mean = p["sum"] / p["count"]
        stats["mean"] = float(mean)
        stats["std"] = math.sqrt(float(p["sumsq"] / p["count"] - mean * mean))
        stats["median"] = _weighted_median(p["sample"])
    fill = {"mean": stats["mean"], "median": stats["median"], "none": None}.get(cfg.impute)
    if cfg.impute != "none" and fill is None:
        fill = float(cfg.fill_value)  # constant, or no value was ever seen
    shift, divide = 0.0, 1.0
    if cfg.scale == "standard" and p["count"]:
        shift, divide = stats["mean"], stats["std"] or 1.0
    elif cfg.scale == "minmax" and p["count"]:
        shift, divide = stats["min"], (stats["max"] - stats["min"]) or 1.0
    return {"impute": cfg.impute, "scale": cfg.scale, "fill": fill, "shift": shift,
            "divide": divide, "stats": stats}


def _weighted_median(sample: dict[float, int]) -> float:
    values = np.array(sorted(sample), dtype="float64")
    cumulative = np.cumsum([sample[v] for v in values.tolist()])
    total = int(cumulative[-1])
    lo, hi = np.searchsorted(cumulative, [(total - 1) // 2, total // 2], side="right")
    return float((values[lo] + values[hi]) / 2)


def _categorical_state(cfg: CategoricalFeature, counts: dict[str, int]) -> dict[str, Any]:
    ranked = sorted(((-n, v) for v, n in counts.items() if v != OTHER))[: cfg.max_categories]
    return {"encode": cfg.encode, "max_categories": cfg.max_categories,
            "categories": sorted(v for _, v in ranked)}


# --------------------------------------------------------------------------- transform


def transform(state: FeatureState, df: pd.DataFrame) -> pd.DataFrame:
    """Features of each row as float32 columns ``state.output_columns``, index kept."""
    return pd.DataFrame(transform_values(state, df), index=df.index, columns=state.output_columns)


def transform_values(state: FeatureState, data: Columns) -> np.ndarray:
    """``transform`` as a float32 array ``[rows, len(state.output_columns)]``.

    ``data`` is a frame or a mapping of column name to values (what a request parser builds),
    so the online path never constructs a DataFrame.
    """
    columns = _prepare(state.inputs, state.programs, data)
    blocks = [_numeric_column(columns[name], spec) for name, spec in state.numeric.items()]
    blocks += [_categorical_block(columns[name], spec) for name, spec in state.categorical.items()]
    if not blocks:
        rows = len(data) if isinstance(data, pd.DataFrame) else len(next(iter(columns.values()), []))
        return np.empty((rows, 0), dtype=np.float32)
    return np.column_stack(blocks).astype(np.float32)


def _numeric_column(values: np.ndarray, spec: dict[str, Any]) -> np.ndarray:
    if spec["fill"] is not None:
        values = np.where(np.isnan(values), spec["fill"], values)
    return (values - spec["shift"]) / spec["divide"]


def _categorical_block(values: np.ndarray, spec: dict[str, Any]) -> np.ndarray:
    categories = spec["categories"]
    lookup = {value: i for i, value in enumerate(categories)}
    codes = np.array([lookup.get(k, len(categories)) for k in _keys(values)], dtype=np.int64)
    if spec["encode"] == "ordinal":
        return codes.astype("float64")
    onehot = np.zeros((len(codes), len(categories) + 1))
    onehot[np.arange(len(codes)), codes] = 1.0
    return onehot
