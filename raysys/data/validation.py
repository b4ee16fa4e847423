"""Check data against the declared schema: dataset-level column checks and per-batch row checks.

Pure pandas / numpy / pyarrow, no Ray: the ingest pipeline maps :func:`validate_batch` over its
batches in parallel and writes the two frames it returns to the accepted and quarantine outputs.

Rows are never dropped silently: every input row ends up either in ``accepted`` (coerced to the
declared types) or in ``quarantined`` (its original values as strings, plus a ``_reason`` column
naming every check the row failed).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
from pandas.api import types as ptypes

from raysys.config import ColumnSpec, ColumnType, SchemaConfig
from raysys.errors import ConfigError

REASON_COLUMN = "_reason"
REASON_SEPARATOR = "; "

#: Strings that mean "no value" in an int, float, bool or timestamp column (compared stripped
#: and lower-cased). In string and category columns only the empty string means null.
NULL_TOKENS = frozenset({"", "nan", "null", "none", "na", "n/a", "<na>", "nat"})
_BOOL_TOKENS = {"true": 1, "false": 0, "yes": 1, "no": 0, "1": 1, "0": 0, "1.0": 1, "0.0": 0}
_JSON_BOOLS = {"true": 1.0, "false": 0.0}
_INT64_LIMIT = 2.0**63  # floats at or beyond this do not fit int64
_MAX_SHOWN_ALLOWED = 10
_MAX_SHOWN_CHARS = 60
_ARTICLE = {"int": "an int", "float": "a float", "bool": "a bool", "timestamp": "a timestamp"}


# --------------------------------------------------------------------------- dataset level


def check_columns(present: list[str], schema: SchemaConfig) -> list[str]:
    """Dataset-level problems with the set of columns, one readable line each.

    Required columns that are absent, then (when ``schema.extra_columns`` is ``"error"``) columns
    the schema does not declare. An empty schema expects nothing.
    """
    if not schema.columns:
        return []
    have = set(present)
    problems = [
        f"missing required column '{name}'"
        for name, spec in schema.columns.items()
        if spec.required and name not in have
    ]
    if schema.extra_columns == "error":
        problems += [
            f"unexpected column '{name}' (schema.extra_columns is 'error')"
            for name in present
            if name not in schema.columns
        ]
    return problems


# --------------------------------------------------------------------------- coercion


@dataclass
class _Coerced:
    """One column coerced to its declared type.

    ``values`` is a numpy array of the target kind (int64, float64, bool, object str or
    datetime64[us]); its entries are meaningless where ``null`` or ``bad`` is set.
    """

    values: np.ndarray
    null: np.ndarray  # no value
    bad: np.ndarray  # a value that cannot be read as the declared type


def _is_textual(dtype: Any) -> bool:
    return (
        ptypes.is_object_dtype(dtype)
        or ptypes.is_string_dtype(dtype)
        or isinstance(dtype, pd.CategoricalDtype)
    )


def _token_nulls(raw: pd.Series, candidates: np.ndarray) -> np.ndarray:
    """Which of the ``candidates`` positions hold a null token like '' or 'NaN' (as strings)."""
    out = np.zeros(len(raw), dtype=bool)
    positions = np.flatnonzero(candidates)  # values that failed to parse: few in most batches
    if len(positions) == 0:
        return out
    sub = raw.iloc[positions]
    if pd.api.types.infer_dtype(sub, skipna=True) == "string":
        out[positions] = sub.str.strip().str.lower().isin(NULL_TOKENS).to_numpy()
    else:
        out[positions] = [isinstance(v, str) and v.strip().lower() in NULL_TOKENS for v in sub]
    return out


def _numeric(raw: pd.Series) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Read any column as float64: (values, null, bad). NaN values are nulls."""
    null = raw.isna().to_numpy()
    dtype = raw.dtype
    if ptypes.is_datetime64_any_dtype(dtype) or ptypes.is_timedelta64_dtype(dtype):
        return np.zeros(len(raw)), null, ~null
    if not _is_textual(dtype):  # bool, int, float (numpy or nullable)
        values = raw.to_numpy(dtype="float64", na_value=np.nan)
        return values, null | np.isnan(values), np.zeros(len(raw), dtype=bool)
    raw = raw.astype(object)
    values = np.array(pd.to_numeric(raw, errors="coerce"), dtype="float64")
    failed = np.isnan(values) & ~null  # unreadable, or a null token such as 'NaN' or ''
    token = _token_nulls(raw, failed)
    failed &= ~token
    if failed.any():  # JSON booleans as text ('true', 'false') read as 1 / 0, like Python bools
        positions = np.flatnonzero(failed)
        flags = [
            _JSON_BOOLS.get(v.strip().lower()) if isinstance(v, str) else None
            for v in raw.iloc[positions]
        ]
        known = np.array([f is not None for f in flags], dtype=bool)
        values[positions[known]] = [f for f in flags if f is not None]
        failed[positions[known]] = False
    return values, null | token, failed


def _coerce_int(raw: pd.Series) -> _Coerced:
    dtype = raw.dtype
    if (ptypes.is_integer_dtype(dtype) or ptypes.is_bool_dtype(dtype)) and not _is_textual(dtype):
        null = raw.isna().to_numpy()
        values = raw.to_numpy(dtype="int64", na_value=0)
        return _Coerced(values, null, np.zeros(len(raw), dtype=bool))
    floats, null, bad = _numeric(raw)
    with np.errstate(invalid="ignore"):
        whole = np.isfinite(floats) & (np.floor(floats) == floats) & (np.abs(floats) < _INT64_LIMIT)
    bad = bad | (~null & ~whole)
    values = np.where(null | bad, 0.0, floats).astype("int64")
    # Exact int64 for integer strings beyond float precision (2**53), where pandas gave floats.
    if ptypes.is_object_dtype(raw.dtype):
        big = ~null & ~bad & (np.abs(floats) >= 2.0**53)
        for i in np.flatnonzero(big):
            try:
                values[i] = int(str(raw.iat[i]).strip())
            except (ValueError, OverflowError):
                pass
    return _Coerced(values, null, bad)


def _coerce_float(raw: pd.Series) -> _Coerced:
    values, null, bad = _numeric(raw)
    return _Coerced(values, null, bad)


def _coerce_bool(raw: pd.Series) -> _Coerced:
    dtype = raw.dtype
    null = raw.isna().to_numpy()
    n = len(raw)
    if ptypes.is_bool_dtype(dtype) and not _is_textual(dtype):
        return _Coerced(raw.to_numpy(dtype=bool, na_value=False), null, np.zeros(n, dtype=bool))
    if ptypes.is_numeric_dtype(dtype) and not _is_textual(dtype):
        floats = raw.to_numpy(dtype="float64", na_value=np.nan)
        null = null | np.isnan(floats)
        bad = ~null & (floats != 0) & (floats != 1)
        return _Coerced(floats == 1, null, bad)
    values = np.zeros(n, dtype=bool)
    bad = np.zeros(n, dtype=bool)
    present = ~null
    if present.any():
        text = raw[present].astype(str).str.strip().str.lower()
        mapped = text.map(_BOOL_TOKENS).to_numpy(dtype="float64", na_value=np.nan)
        known = ~np.isnan(mapped)
        token = text.isin(NULL_TOKENS).to_numpy()
        values[present] = mapped == 1
        positions = np.flatnonzero(present)
        null[positions[token & ~known]] = True
        bad[positions[~known & ~token]] = True
    return _Coerced(values, null, bad)


def _to_naive_utc(series: pd.Series) -> pd.Series:
    if getattr(series.dt, "tz", None) is not None:
        series = series.dt.tz_convert("UTC").dt.tz_localize(None)
    return series


def _coerce_timestamp(raw: pd.Series) -> _Coerced:
    dtype = raw.dtype
    n = len(raw)
    null = raw.isna().to_numpy()
    if ptypes.is_datetime64_any_dtype(dtype):
        stamps = _to_naive_utc(raw)
        values = stamps.to_numpy(dtype="datetime64[us]")
        return _Coerced(values, null, np.zeros(n, dtype=bool))
    if not _is_textual(dtype):  # numbers: epoch values are not read as timestamps
        return _Coerced(np.full(n, np.datetime64("NaT", "us")), null, ~null)
    raw = raw.astype(object)
    parsed = _to_naive_utc(_parse_iso(raw))
    values = parsed.to_numpy(dtype="datetime64[us]")
    failed = np.isnat(values) & ~null
    token = _token_nulls(raw, failed)
    return _Coerced(values, null | token, failed & ~token)


# A zone designator: an offset sign or Z (an ISO date has no '+', and '-' after a ':' is an offset).
_ZONE_PATTERN = r"[+Zz]|:\d\d[.,\d]*-"


def _parse_iso(raw: pd.Series) -> pd.Series:
    """Parse ISO 8601 strings and datetime objects to UTC; anything else becomes NaT.

    pandas' ISO parser gives a zone-less string that follows one with an offset that offset, so
    strings with a zone designator are parsed apart from the rest.
    """
    if pd.api.types.infer_dtype(raw, skipna=True) == "string":
        is_str = raw.notna().to_numpy()
    else:
        is_str = np.fromiter((isinstance(v, str) for v in raw), dtype=bool, count=len(raw))
    zoned = np.zeros(len(raw), dtype=bool)
    if is_str.any():
        text = pa.array(raw[is_str].to_numpy(dtype=object), type=pa.string())
        zoned[is_str] = pc.match_substring_regex(text, _ZONE_PATTERN).to_numpy(zero_copy_only=False)
    groups = [zoned, ~zoned] if zoned.any() and not zoned.all() else [np.ones(len(raw), bool)]
    out = pd.Series(pd.NaT, index=raw.index, dtype="datetime64[ns, UTC]")
    for group in groups:
        part = raw[group]
        try:
            out[group] = pd.to_datetime(part, format="ISO8601", utc=True, errors="coerce")
        except (TypeError, ValueError, OverflowError):  # exotic objects: one value at a time
            out[group] = [_one_timestamp(v) for v in part]
    return out


def _one_timestamp(value: Any) -> pd.Timestamp:
    try:
        return pd.to_datetime(value, format="ISO8601", utc=True)
    except (TypeError, ValueError, OverflowError):
        return pd.NaT


def _coerce_string(raw: pd.Series) -> _Coerced:
    dtype = raw.dtype
    null = raw.isna().to_numpy()
    if ptypes.is_float_dtype(dtype):  # e.g. integer codes read as float because of nulls
        floats = raw.to_numpy(dtype="float64", na_value=0.0)
        values = floats.astype(str).astype(object)
        whole = np.isfinite(floats) & (np.floor(floats) == floats) & (np.abs(floats) < 1e16)
        values[whole] = floats[whole].astype("int64").astype(str)
    elif ptypes.is_object_dtype(dtype) and pd.api.types.infer_dtype(raw, skipna=True) in (
        "string",
        "empty",
    ):
        values = raw.to_numpy(dtype=object)
    else:
        values = raw.astype(object).astype(str).to_numpy(dtype=object)
    present = ~null
    if present.any():  # blank strings are nulls
        blank = pd.Series(values[present]).str.strip().eq("").to_numpy()
        null[np.flatnonzero(present)[blank]] = True
    values = values.copy()
    values[null] = None
    return _Coerced(values, null, np.zeros(len(raw), dtype=bool))


_COERCERS = {
    "int": _coerce_int,
    "float": _coerce_float,
    "bool": _coerce_bool,
    "string": _coerce_string,
    "category": _coerce_string,
    "timestamp": _coerce_timestamp,
}


def _coerce(raw: pd.Series, ctype: ColumnType) -> _Coerced:
    return _COERCERS[ctype](raw)


def allowed_values(name: str, spec: ColumnSpec) -> np.ndarray:
    """The ``allowed`` list coerced to the column's type (a config error if one is not)."""
    assert spec.allowed is not None
    coerced = _coerce(pd.Series(list(spec.allowed), dtype=object), spec.type)
    wrong = coerced.bad | coerced.null
    if wrong.any():
        value = spec.allowed[int(np.flatnonzero(wrong)[0])]
        raise ConfigError(
            f"schema.columns.{name}.allowed: {value!r} is not a valid {spec.type} value"
        )
    return coerced.values


# --------------------------------------------------------------------------- rendering values


def _num(x: Any) -> str | None:
    """A number as written by a person: 100 not 100.0, 2.5, inf."""
    if x is None:
        return None
    if isinstance(x, (float, np.floating)):
        x = float(x)
        if math.isnan(x):
            return None
        if x.is_integer() and abs(x) < 1e16:
            return str(int(x))
        return repr(x)
    return str(x)


def clip_text(text: str) -> str:
    """At most 60 characters of ``text``, "..." marking a cut."""
    return text if len(text) <= _MAX_SHOWN_CHARS else text[: _MAX_SHOWN_CHARS - 3] + "..."


def _show_raw(value: Any) -> str:
    """An original input value in a reason: strings quoted, numbers bare."""
    if isinstance(value, str):
        return "'" + clip_text(value) + "'"
    if isinstance(value, (float, np.floating)):
        return _num(value) or "nan"
    return clip_text(str(value))


def _iso(value: Any) -> str:
    return pd.Timestamp(value).isoformat()


def show_value(value: Any, ctype: ColumnType) -> str:
    """A coerced value in a reason."""
    if ctype in ("string", "category"):
        return "'" + clip_text(str(value)) + "'"
    if ctype == "bool":
        return "true" if value else "false"
    if ctype == "timestamp":
        return _iso(value)
    return _num(value) or "nan"


def show_bound(bound: float, ctype: ColumnType) -> str:
    """A min or max bound in a reason (timestamps as ISO 8601)."""
    if ctype == "timestamp":
        return datetime.fromtimestamp(bound, tz=timezone.utc).replace(tzinfo=None).isoformat()
    return _num(float(bound)) or str(bound)


def show_allowed(spec: ColumnSpec) -> str:
    """The allowed values in a reason, sorted, at most ten shown."""
    assert spec.allowed is not None
    shown = sorted(str(v) for v in spec.allowed)
    if len(shown) > _MAX_SHOWN_ALLOWED:
        extra = len(shown) - _MAX_SHOWN_ALLOWED
        shown = shown[:_MAX_SHOWN_ALLOWED] + [f"... {extra} more"]
    return "[" + ", ".join(shown) + "]"


# --------------------------------------------------------------------------- row level


class RowReasons:
    """Failed checks collected column by column, joined per row at the end."""

    def __init__(self, n: int):
        self.failed = np.zeros(n, dtype=bool)
        self._positions: list[np.ndarray] = []
        self._messages: list[np.ndarray] = []

    def add(self, mask: np.ndarray, render) -> None:
        """Record a failed check for the rows in ``mask``; ``render(positions)`` -> messages."""
        if not mask.any():
            return
        positions = np.flatnonzero(mask)
        self.failed |= mask
        self._positions.append(positions)
        self._messages.append(np.asarray(render(positions), dtype=object))

    def joined(self) -> tuple[np.ndarray, list[str]]:
        """Failing row positions (ascending) and their reasons, checks in the order added."""
        if not self._positions:
            return np.empty(0, dtype=np.int64), []
        positions = np.concatenate(self._positions)
        messages = np.concatenate(self._messages)
        order = np.argsort(positions, kind="stable")
        positions, messages = positions[order], messages[order]
        starts = np.flatnonzero(np.r_[True, positions[1:] != positions[:-1]])
        ends = np.r_[starts[1:], len(positions)]
        reasons = [REASON_SEPARATOR.join(messages[a:b]) for a, b in zip(starts, ends)]
        return positions[starts], reasons


def _check_column(
    name: str, spec: ColumnSpec, raw: pd.Series | None, n: int, reasons: RowReasons
) -> _Coerced:
    """Coerce one declared column and record its row-level failures."""
    ctype = spec.type
    if raw is None:  # declared column absent from this batch: every value is null
        coerced = _coerce(pd.Series([None] * n, dtype=object), ctype)
        if spec.required:
            reasons.add(
                np.ones(n, dtype=bool), lambda p: [f"{name}: column missing (required)"] * len(p)
            )
        return coerced

    coerced = _coerce(raw, ctype)
    values, null, bad = coerced.values, coerced.null, coerced.bad
    if spec.required:
        reasons.add(null, lambda p: [f"{name}: null (required)"] * len(p))
    article = _ARTICLE.get(ctype, f"a {ctype}")
    reasons.add(bad, lambda p: [f"{name}: {_show_raw(raw.iat[i])} is not {article}" for i in p])
    valid = ~null & ~bad

    if ctype == "float":
        infinite = valid & np.isinf(values)
        reasons.add(infinite, lambda p: [f"{name}: {_num(values[i])} out of range" for i in p])
        valid = valid & ~infinite

    if ctype in ("int", "float", "timestamp") and (spec.min is not None or spec.max is not None):
        if ctype == "timestamp":
            scaled = values.astype("int64")  # microseconds since the epoch
            to_unit = 1e6
        else:
            scaled, to_unit = values, 1
        for bound, word, compare in (
            (spec.min, "below min", np.less),
            (spec.max, "above max", np.greater),
        ):
            if bound is None:
                continue
            with np.errstate(invalid="ignore"):
                out = valid & compare(scaled, bound * to_unit)
            shown = show_bound(bound, ctype)
            reasons.add(
                out,
                lambda p, word=word, shown=shown: [
                    f"{name}: {show_value(values[i], ctype)} {word} {shown}" for i in p
                ],
            )

    if spec.allowed is not None:
        allowed = allowed_values(name, spec)
        if ctype in ("string", "category"):
            member = pd.Series(values).isin(set(allowed)).to_numpy()
        else:
            member = np.isin(values, allowed)
        listed = show_allowed(spec)
        reasons.add(
            valid & ~member,
            lambda p: [
                f"{name}: {show_value(values[i], ctype)} not in allowed {listed}" for i in p
            ],
        )
    return coerced


def _accepted_array(coerced: _Coerced, ctype: ColumnType, keep: np.ndarray) -> Any:
    values, null = coerced.values[keep], coerced.null[keep]
    if ctype == "int":
        return pd.arrays.IntegerArray(values.astype("int64"), null.copy())
    if ctype == "bool":
        return pd.arrays.BooleanArray(values.astype(bool), null.copy())
    if ctype == "float":
        values = values.astype("float64")
        values[null] = np.nan
        return values
    if ctype == "timestamp":
        values = values.astype("datetime64[us]")
        values[null] = np.datetime64("NaT")
        return values
    values = values.astype(object)
    values[null] = None
    return values


def _as_strings(series: pd.Series) -> np.ndarray:
    """Original values as strings, nulls as None."""
    null = series.isna().to_numpy()
    if ptypes.is_object_dtype(series.dtype) and pd.api.types.infer_dtype(series, skipna=True) in (
        "string",
        "empty",
    ):
        out = series.to_numpy(dtype=object).copy()
    elif ptypes.is_object_dtype(series.dtype):
        out = series.to_numpy(dtype=object).copy()
        not_str = np.array([not isinstance(v, str) for v in out], dtype=bool)
        if not_str.any():
            out[not_str] = [str(v) for v in out[not_str]]
    else:
        out = series.astype(object).astype(str).to_numpy(dtype=object)
    out[null] = None
    return out


def empty_quarantine(columns: list[str]) -> pd.DataFrame:
    """A quarantine frame with no rows: the given columns plus ``_reason``, all strings."""
    return pd.DataFrame({c: pd.Series([], dtype=object) for c in [*columns, REASON_COLUMN]})


def validate_batch(df: pd.DataFrame, schema: SchemaConfig) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Split a batch into (accepted, quarantined); ``len(accepted) + len(quarantined) == len(df)``.

    ``accepted`` has exactly the declared columns in declaration order, coerced to their types
    (int -> Int64, float -> float64 with NaN for null, bool -> boolean, string/category -> object
    str with None, timestamp -> datetime64[us], naive UTC); absent non-required columns are all
    null; other columns are dropped. ``quarantined`` holds the failing rows' original values as
    strings (None for null): the declared columns (None where the batch lacks one), then the
    batch's other columns, then ``_reason``. Both frames have a fresh RangeIndex.

    With no declared columns the batch is accepted as it is.
    """
    if not schema.columns:
        return df.reset_index(drop=True), empty_quarantine([str(c) for c in df.columns])

    n = len(df)
    reasons = RowReasons(n)
    coerced = {
        name: _check_column(name, spec, df[name] if name in df.columns else None, n, reasons)
        for name, spec in schema.columns.items()
    }
    keep = ~reasons.failed
    accepted = pd.DataFrame(
        {
            name: _accepted_array(coerced[name], spec.type, keep)
            for name, spec in schema.columns.items()
        },
        index=pd.RangeIndex(int(keep.sum())),
    )

    extra = [c for c in df.columns if c not in schema.columns]
    q_columns = [*schema.columns, *extra]
    positions, reason_text = reasons.joined()
    if len(positions) == 0:
        return accepted, empty_quarantine([str(c) for c in q_columns])
    rows = df.iloc[positions]
    quarantined = pd.DataFrame(
        {
            str(c): (
                _as_strings(rows[c])
                if c in df.columns
                else np.full(len(positions), None, dtype=object)
            )
            for c in q_columns
        },
        index=pd.RangeIndex(len(positions)),
    )
    quarantined[REASON_COLUMN] = np.asarray(reason_text, dtype=object)
    return accepted, quarantined


# --------------------------------------------------------------------------- inference


def _infer_type(series: pd.Series) -> ColumnType:
    dtype = series.dtype
    if isinstance(dtype, pd.CategoricalDtype):
        return "category"
    if ptypes.is_bool_dtype(dtype) and not ptypes.is_object_dtype(dtype):
        return "bool"
    if ptypes.is_integer_dtype(dtype):
        return "int"
    if ptypes.is_float_dtype(dtype):
        return "float"
    if ptypes.is_datetime64_any_dtype(dtype):
        return "timestamp"
    kind = pd.api.types.infer_dtype(series, skipna=True)
    if kind == "boolean":
        return "bool"
    if kind == "integer":
        return "int"
    if kind in ("floating", "mixed-integer-float", "decimal"):
        return "float"
    if kind in ("datetime", "datetime64", "date"):
        return "timestamp"
    return "string"


def infer_columns(df: pd.DataFrame) -> dict[str, ColumnSpec]:
    """A permissive schema from pandas dtypes: every column optional, no ranges or allowed sets.

    Object columns are typed by their values (all bools -> bool, all ints -> int, ...), anything
    else is a string.
    """
    return {str(c): ColumnSpec(type=_infer_type(df[c]), required=False) for c in df.columns}


# --------------------------------------------------------------------------- arrow

_ARROW_TYPES = {
    "int": pa.int64(),
    "float": pa.float64(),
    "bool": pa.bool_(),
    "string": pa.string(),
    "category": pa.string(),
    "timestamp": pa.timestamp("us"),
}


def arrow_schema(columns: dict[str, ColumnSpec]) -> pa.Schema:
    """The Arrow schema of accepted data: every field nullable, in declaration order."""
    return pa.schema([pa.field(name, _ARROW_TYPES[spec.type]) for name, spec in columns.items()])


def _arrow_array(series: pd.Series, ctype: ColumnType) -> pa.Array:
    target = _ARROW_TYPES[ctype]
    if ctype == "int":
        if ptypes.is_object_dtype(series.dtype):
            series = pd.to_numeric(series)
        return pa.array(series.astype("Int64"), type=target)
    if ctype == "float":
        return pa.array(series.astype("float64"), type=target, from_pandas=True)
    if ctype == "bool":
        return pa.array(series.astype("boolean"), type=target)
    if ctype == "timestamp":
        if not ptypes.is_datetime64_any_dtype(series.dtype):
            series = pd.to_datetime(series, format="ISO8601", utc=True)
        series = _to_naive_utc(series).astype("datetime64[us]")
        return pa.array(series, type=target, from_pandas=True)
    return pa.array(_as_strings(series), type=target, from_pandas=True)


def to_arrow(accepted: pd.DataFrame, columns: dict[str, ColumnSpec]) -> pa.Table:
    """Accepted rows as an Arrow table with exactly :func:`arrow_schema` ``(columns)``.

    Ints may be held as Int64 or as float64 with NaN for null; absent columns become all-null.
    With no declared columns the frame is converted as it is.
    """
    if not columns:
        return pa.Table.from_pandas(accepted, preserve_index=False)
    schema = arrow_schema(columns)
    n = len(accepted)
    arrays = [
        _arrow_array(accepted[name].reset_index(drop=True), spec.type)
        if name in accepted.columns
        else pa.nulls(n, type=_ARROW_TYPES[spec.type])
        for name, spec in columns.items()
    ]
    return pa.Table.from_arrays(arrays, schema=schema)


def quarantine_arrow(quarantined: pd.DataFrame) -> pa.Table:
    """Quarantined rows as an Arrow table of string columns (``_reason`` last)."""
    names = [str(c) for c in quarantined.columns if c != REASON_COLUMN] + [REASON_COLUMN]
    arrays = [
        pa.array(_as_strings(quarantined[c]), type=pa.string(), from_pandas=True)
        if c in quarantined.columns
        else pa.nulls(len(quarantined), type=pa.string())
        for c in names
    ]
    return pa.Table.from_arrays(arrays, schema=pa.schema([pa.field(c, pa.string()) for c in names]))
