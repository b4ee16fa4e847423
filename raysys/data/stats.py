"""Mergeable per-column statistics: compute on each batch, merge in any order, finalize once.

Pure pandas / numpy, no Ray. ``batch_stats`` returns a small picklable *partial*;
``merge_stats`` combines two partials (associative and commutative: exactly for counts, nulls,
min and max, up to floating-point rounding for mean and spread, and exactly for category counts
while fewer than :data:`MAX_DISTINCT` values have been seen); ``finalize_stats`` turns a partial
into a JSON-serializable report; ``diff_stats`` compares two reports (two dataset versions).

Partial layout, one entry per column::

    {"type": t, "count": rows, "nulls": n_null, ...}
      int / float / bool:   "n" (values summarized), "mean", "m2" (sum of squared deviations),
                            "min", "max" (None without values; bool as 0/1)
      string / category:    "counts" {value: rows}, "truncated" (bool)
      timestamp:            "min", "max" (microseconds since the epoch, UTC; None without values)
"""

from __future__ import annotations

import heapq
import math
from typing import Any

import numpy as np
import pandas as pd
from pandas.api import types as ptypes

from raysys.config import ColumnSpec, ColumnType

#: Distinct values kept per string/category column; rarer ones are dropped and flagged.
MAX_DISTINCT = 1000
#: Most frequent values shown in a finalized column's ``top``.
TOP_N = 20
#: Largest frequency changes listed per column by ``diff_stats``.
DIFF_TOP_N = 10

_NUMERIC = ("int", "float", "bool")
_CATEGORICAL = ("string", "category")


# --------------------------------------------------------------------------- per batch


def _cap(counts: dict[str, int], truncated: bool) -> tuple[dict[str, int], bool]:
    """Keep the MAX_DISTINCT most frequent values (ties by value, so the result is canonical)."""
    if len(counts) <= MAX_DISTINCT:
        return counts, truncated
    kept = sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))[:MAX_DISTINCT]
    return dict(kept), True


def _numeric_values(series: pd.Series, ctype: ColumnType) -> tuple[np.ndarray, int]:
    """Non-null finite values as float64 and the number of nulls.

    Values that are not numbers count as nulls; infinities are neither nulls nor summarized.
    """
    if ptypes.is_object_dtype(series.dtype) or ptypes.is_string_dtype(series.dtype):
        if ctype == "bool" and pd.api.types.infer_dtype(series, skipna=True) == "boolean":
            series = series.astype("boolean")
        else:
            series = pd.to_numeric(series, errors="coerce")
    values = series.to_numpy(dtype="float64", na_value=np.nan)
    nulls = int(np.isnan(values).sum())
    return values[np.isfinite(values)], nulls


def _numeric_partial(series: pd.Series, ctype: ColumnType) -> dict[str, Any]:
    values, nulls = _numeric_values(series, ctype)
    n = len(values)
    out: dict[str, Any] = {"nulls": nulls, "n": n, "mean": 0.0, "m2": 0.0, "min": None, "max": None}
    if n:
        mean = float(values.mean())
        out["mean"] = mean
        out["m2"] = float(np.square(values - mean).sum())
        if ctype == "float":
            out["min"], out["max"] = float(values.min()), float(values.max())
        elif ptypes.is_integer_dtype(series.dtype):  # exact, even beyond 2**53
            ints = series.dropna().to_numpy(dtype="int64")
            out["min"], out["max"] = int(ints.min()), int(ints.max())
        else:
            out["min"], out["max"] = int(values.min()), int(values.max())
    return out


def _most_frequent(counts: pd.Series) -> pd.Series:
    """The MAX_DISTINCT most frequent values, ties by value (as :func:`_cap` picks them)."""
    n = counts.to_numpy()
    threshold = np.partition(n, len(n) - MAX_DISTINCT)[len(n) - MAX_DISTINCT]
    above = counts[n > threshold]
    tied = counts.index[n == threshold].astype(str)
    chosen = heapq.nsmallest(MAX_DISTINCT - len(above), tied)
    return pd.concat([above, pd.Series(threshold, index=chosen, dtype=n.dtype)])


def _categorical_partial(series: pd.Series) -> dict[str, Any]:
    present = series.dropna()
    if not ptypes.is_object_dtype(present.dtype) or pd.api.types.infer_dtype(
        present, skipna=True
    ) not in ("string", "empty"):
        present = present.astype(str)
    counts = present.value_counts(sort=False)
    truncated = len(counts) > MAX_DISTINCT
    if truncated:
        counts = _most_frequent(counts)
    as_dict = {str(k): int(v) for k, v in zip(counts.index, counts.to_numpy())}
    return {"nulls": len(series) - len(present), "counts": as_dict, "truncated": truncated}


def _timestamp_partial(series: pd.Series) -> dict[str, Any]:
    if not ptypes.is_datetime64_any_dtype(series.dtype):
        series = pd.to_datetime(series.astype(object), format="ISO8601", utc=True, errors="coerce")
    if getattr(series.dt, "tz", None) is not None:
        series = series.dt.tz_convert("UTC").dt.tz_localize(None)
    micros = series.dropna().astype("datetime64[us]").to_numpy().astype("int64")
    return {
        "nulls": len(series) - len(micros),
        "min": int(micros.min()) if len(micros) else None,
        "max": int(micros.max()) if len(micros) else None,
    }


def batch_stats(df: pd.DataFrame, column_types: dict[str, ColumnType]) -> dict[str, dict]:
    """The partial statistics of one batch for the given columns (absent ones are all null)."""
    out: dict[str, dict] = {}
    n = len(df)
    for name, ctype in column_types.items():
        series = df[name] if name in df.columns else pd.Series([None] * n, dtype=object)
        if ctype in _NUMERIC:
            part = _numeric_partial(series, ctype)
        elif ctype in _CATEGORICAL:
            part = _categorical_partial(series)
        elif ctype == "timestamp":
            part = _timestamp_partial(series)
        else:
            raise ValueError(f"column '{name}': unknown column type {ctype!r}")
        out[name] = {"type": ctype, "count": n, **part}
    return out


# --------------------------------------------------------------------------- merging


def _min(a: Any, b: Any) -> Any:
    return b if a is None else a if b is None else min(a, b)


def _max(a: Any, b: Any) -> Any:
    return b if a is None else a if b is None else max(a, b)


def _merge_column(name: str, a: dict, b: dict) -> dict:
    if a["type"] != b["type"]:
        raise ValueError(f"column '{name}': cannot merge {a['type']} stats with {b['type']} stats")
    ctype = a["type"]
    out = {"type": ctype, "count": a["count"] + b["count"], "nulls": a["nulls"] + b["nulls"]}
    if ctype in _NUMERIC:
        na, nb = a["n"], b["n"]
        n = na + nb
        if n == 0:
            mean, m2 = 0.0, 0.0
        else:
            # Symmetric in a and b, so merging is exactly commutative (Chan et al.).
            delta = b["mean"] - a["mean"]
            mean = (na * a["mean"] + nb * b["mean"]) / n
            m2 = a["m2"] + b["m2"] + delta * delta * na * nb / n
        out.update(
            n=n, mean=mean, m2=m2, min=_min(a["min"], b["min"]), max=_max(a["max"], b["max"])
        )
    elif ctype in _CATEGORICAL:
        counts = dict(a["counts"])
        for value, k in b["counts"].items():
            counts[value] = counts.get(value, 0) + k
        out["counts"], out["truncated"] = _cap(counts, a["truncated"] or b["truncated"])
    else:
        out.update(min=_min(a["min"], b["min"]), max=_max(a["max"], b["max"]))
    return out


def merge_stats(a: dict, b: dict) -> dict:
    """Combine two partials (of disjoint row sets); neither input is modified.

    A column present in only one partial is carried over as it is.
    """
    out = {}
    for name in [*a, *(c for c in b if c not in a)]:
        if name in a and name in b:
            out[name] = _merge_column(name, a[name], b[name])
        else:
            part = a.get(name) or b[name]
            out[name] = {**part, "counts": dict(part["counts"])} if "counts" in part else dict(part)
    return out


# --------------------------------------------------------------------------- reporting


def _iso(micros: int | None) -> str | None:
    return None if micros is None else pd.Timestamp(micros, unit="us").isoformat()


def _ranked(counts: dict[str, int]) -> list[tuple[str, int]]:
    return sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))


def finalize_stats(partial: dict) -> dict[str, dict]:
    """A JSON-serializable report, one entry per column::

    {"type", "count" (rows), "nulls", "null_rate" (None without rows),
     "min", "max" (numbers; bools for bool; ISO strings for timestamps; None if not applicable),
     "mean", "std" (sample std, ddof=1; None below 2 values; numeric columns only),
     "distinct" (string/category: distinct values, at most MAX_DISTINCT),
     "top" (string/category: up to TOP_N {value: rows}, most frequent first),
     "counts" (string/category: every kept {value: rows}, most frequent first),
     "truncated" (values beyond MAX_DISTINCT were dropped: distinct and counts are lower bounds)}
    """
    report = {}
    for name, part in partial.items():
        ctype = part["type"]
        count, nulls = int(part["count"]), int(part["nulls"])
        col: dict[str, Any] = {
            "type": ctype,
            "count": count,
            "nulls": nulls,
            "null_rate": nulls / count if count else None,
            "min": None,
            "max": None,
            "mean": None,
            "std": None,
            "distinct": None,
            "top": None,
            "truncated": False,
        }
        if ctype in _NUMERIC:
            n = part["n"]
            lo, hi = part["min"], part["max"]
            if ctype == "bool" and lo is not None:
                lo, hi = bool(lo), bool(hi)
            col["min"], col["max"] = lo, hi
            if n:
                col["mean"] = float(part["mean"])
            if n >= 2:
                col["std"] = math.sqrt(max(part["m2"], 0.0) / (n - 1))
        elif ctype in _CATEGORICAL:
            ranked = _ranked(part["counts"])
            col["distinct"] = len(ranked)
            col["top"] = dict(ranked[:TOP_N])
            col["counts"] = dict(ranked)
            col["truncated"] = bool(part["truncated"])
        else:
            col["min"], col["max"] = _iso(part["min"]), _iso(part["max"])
        report[name] = col
    return report


def _percent(rate: float, other: float) -> tuple[str, str]:
    """Both rates as percentages, with enough decimals to tell them apart."""
    for digits in (1, 2, 3, 4):
        a, b = f"{rate * 100:.{digits}f}%", f"{other * 100:.{digits}f}%"
        if a != b:
            return a, b
    return f"{rate * 100:g}%", f"{other * 100:g}%"


def null_rate_failures(final: dict, columns: dict[str, ColumnSpec]) -> list[str]:
    """Columns whose null rate exceeds their ``max_null_rate``, one line each.

    Columns without stats or without rows are skipped (a missing column is a column check).
    """
    problems = []
    for name, spec in columns.items():
        stats = final.get(name)
        if spec.max_null_rate is None or not stats or stats.get("null_rate") is None:
            continue
        rate = stats["null_rate"]
        if rate > spec.max_null_rate:
            shown, limit = _percent(rate, spec.max_null_rate)
            problems.append(f"column '{name}': null rate {shown} above max_null_rate {limit}")
    return problems


# --------------------------------------------------------------------------- comparing versions


def _change(old: Any, new: Any) -> dict[str, Any]:
    numbers = all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in (old, new))
    return {"old": old, "new": new, "change": new - old if numbers else None}


def _time_change(old: str | None, new: str | None) -> dict[str, Any]:
    seconds = None
    if old is not None and new is not None:
        seconds = (pd.Timestamp(new) - pd.Timestamp(old)).total_seconds()
    return {"old": old, "new": new, "change": seconds}


def _frequency_diff(a: dict, b: dict) -> dict[str, Any]:
    counts_a = a.get("counts") or a.get("top") or {}
    counts_b = b.get("counts") or b.get("top") or {}
    rows_a, rows_b = a["count"] or 1, b["count"] or 1
    changes = []
    for value in set(counts_a) | set(counts_b):
        share_a = counts_a.get(value, 0) / rows_a
        share_b = counts_b.get(value, 0) / rows_b
        changes.append(
            {"value": value, "old": share_a, "new": share_b, "change": share_b - share_a}
        )
    changes.sort(key=lambda c: (-abs(c["change"]), c["value"]))
    return {
        "categories_added": sorted(set(counts_b) - set(counts_a)),
        "categories_removed": sorted(set(counts_a) - set(counts_b)),
        "categories_approximate": bool(a.get("truncated") or b.get("truncated")),
        "frequency_changes": [c for c in changes if c["change"] != 0][:DIFF_TOP_N],
    }


def _column_diff(a: dict, b: dict) -> dict[str, Any]:
    null_rate = _change(a["null_rate"], b["null_rate"])
    out: dict[str, Any] = {
        "type": b["type"],
        "mean_shift_std": None,
        "null_rate_change": null_rate["change"],
        "count": _change(a["count"], b["count"]),
        "null_rate": null_rate,
    }
    if a["type"] != b["type"]:
        return out
    ctype = a["type"]
    if ctype in _NUMERIC:
        mean = _change(a["mean"], b["mean"])
        if mean["change"] is not None and a["std"]:
            out["mean_shift_std"] = mean["change"] / a["std"]
        out["mean"] = mean
        out["std"] = _change(a["std"], b["std"])
        out["min"] = _change(a["min"], b["min"])
        out["max"] = _change(a["max"], b["max"])
    elif ctype == "timestamp":
        out["min"] = _time_change(a["min"], b["min"])
        out["max"] = _time_change(a["max"], b["max"])
    else:
        out.update(_frequency_diff(a, b))
    return out


def diff_stats(a: dict, b: dict) -> dict[str, Any]:
    """Compare two finalized reports: ``a`` the old version, ``b`` the new one.

    Returns (JSON-serializable; pairs are ``{"old", "new", "change"}`` with ``change = new - old``,
    None where it does not apply)::

        {"added": [columns only in b], "removed": [columns only in a],
         "type_changed": {name: {"old": type, "new": type}},
         "columns": {name (in both, in a's order): {
             "type": b's type,
             "mean_shift_std": (new mean - old mean) / old std; None unless numeric with std > 0,
             "null_rate_change": new - old null rate (None without rows),
             "count": pair (rows), "null_rate": pair,
             # int / float / bool with an unchanged type (bool: mean = share of true):
             "mean", "std", "min", "max": pairs,
             # timestamp: "min", "max": pairs of ISO strings, change in seconds
             # string / category:
             "categories_added": [...], "categories_removed": [...] (sorted),
             "categories_approximate": bool (a side dropped values beyond MAX_DISTINCT),
             "frequency_changes": [{"value", "old", "new", "change"}] as shares of all rows,
                                  biggest absolute change first, at most DIFF_TOP_N}}}

    A column whose type changed gets only type, count, null_rate and the two summary keys.
    """
    common = [name for name in a if name in b]
    return {
        "added": [name for name in b if name not in a],
        "removed": [name for name in a if name not in b],
        "type_changed": {
            name: {"old": a[name]["type"], "new": b[name]["type"]}
            for name in common
            if a[name]["type"] != b[name]["type"]
        },
        "columns": {name: _column_diff(a[name], b[name]) for name in common},
    }
