"""Online inputs against the data schema: ingest's row rules over a request's parsed columns.

``data.schema.columns`` declares ``required``, ``min``/``max`` and ``allowed`` per column, and
ingest quarantines the rows that break them (:mod:`raysys.data.validation`, whose wording and
rendering these checks share). A replica applies the same rules to each request, column by
column on the numpy arrays the parser built (no frame): ``flag`` marks every record with the
rules it broke (:attr:`Rows.flags`, a column of the prediction log), ``reject`` answers 422
naming the first record, field and rule that failed, ``off`` checks nothing.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from raysys.config import ColumnSpec, ColumnType
from raysys.data.validation import RowReasons, allowed_values, show_allowed, show_bound, show_value
from raysys.serving.payloads import RequestError, Rows

MODES = ("flag", "reject", "off")


@dataclass(frozen=True)
class Rule:
    """One rule on one column: which values break it, and its words (``above max 90``)."""

    column: str
    kind: ColumnType
    words: str
    broken: Callable[[np.ndarray], np.ndarray]
    shows_value: bool = True  # a reject names the value ("1e15 above max 90"), a null has none


class InputChecks:
    """The schema's row rules for the online path, and what to do when a record breaks one."""

    def __init__(self, columns: dict[str, ColumnSpec], mode: str = "flag"):
        if mode not in MODES:
            raise ValueError(f"input checks mode {mode!r}: use one of {', '.join(MODES)}")
        self.mode = mode
        self.rules = [] if mode == "off" else [r for n, s in columns.items() for r in column_rules(n, s)]

    @classmethod
    def from_settings(cls, settings: dict[str, Any]) -> InputChecks:
        """From the replica settings: ``{"mode": ..., "columns": {name: ColumnSpec fields}}``."""
        columns = {name: ColumnSpec(**spec) for name, spec in settings["columns"].items()}
        return cls(columns, settings["mode"])

    def apply(self, rows: Rows, field_of: Callable[[int, str], str]) -> Rows:
        """``rows`` with their flags; in ``reject`` mode a broken rule is a 422 naming the field.

        ``field_of(record, column)`` names a value as the client sent it (``records[3].age``).
        Rules on columns the request does not carry (the label, excluded columns) are skipped.
        """
        if self.mode == "off":
            return rows
        broken = [(rule, rule.broken(rows.columns[rule.column]))
                  for rule in self.rules if rule.column in rows.columns]
        if self.mode == "reject":
            _reject_first(broken, rows, field_of)
        return dataclasses.replace(rows, flags=_flags(broken, rows.count))


def column_rules(name: str, spec: ColumnSpec) -> list[Rule]:
    """The row rules of one declared column, in ingest's order: required, min, max, allowed."""
    kind = spec.type
    rules = [Rule(name, kind, "null (required)", _nulls, shows_value=False)] if spec.required else []
    for bound, word, outside in ((spec.min, "below min", np.less), (spec.max, "above max", np.greater)):
        if bound is not None:
            limit = np.datetime64(round(bound * 1e6), "us") if kind == "timestamp" else bound
            rules.append(Rule(name, kind, f"{word} {show_bound(bound, kind)}",
                              lambda values, outside=outside, limit=limit: outside(values, limit)))
    if spec.allowed is not None:
        allowed = allowed_values(name, spec)
        rules.append(Rule(name, kind, f"not in allowed {show_allowed(spec)}", _outside_of(allowed)))
    return rules


def _nulls(values: np.ndarray) -> np.ndarray:
    if values.dtype.kind == "f":
        return np.isnan(values)
    if values.dtype.kind == "M":
        return np.isnat(values)
    return np.fromiter((v is None for v in values), dtype=bool, count=len(values))


def _outside_of(allowed: np.ndarray) -> Callable[[np.ndarray], np.ndarray]:
    """Which present values are not among ``allowed`` (numbers and timestamps compared as such)."""
    members = frozenset(allowed.tolist()) if allowed.dtype == object else None

    def outside(values: np.ndarray) -> np.ndarray:
        if members is None or values.dtype != object:
            return ~_nulls(values) & ~np.isin(values, allowed)
        return np.fromiter((v is not None and v not in members for v in values), dtype=bool,
                           count=len(values))

    return outside


def _reject_first(broken: list[tuple[Rule, np.ndarray]], rows: Rows,
                  field_of: Callable[[int, str], str]) -> None:
    """Raise for the first record that broke a rule (its first rule in column order), if any."""
    firsts = [(int(mask.argmax()), order) for order, (_, mask) in enumerate(broken) if mask.any()]
    if not firsts:
        return
    record, order = min(firsts)
    rule = broken[order][0]
    value = f"{show_value(rows.columns[rule.column][record], rule.kind)} " if rule.shows_value else ""
    field = field_of(record, rule.column)
    raise RequestError(f"{field}: {value}{rule.words}", field=field)


def _flags(broken: list[tuple[Rule, np.ndarray]], count: int) -> np.ndarray:
    """One string per record: ``""``, or the rules it broke joined by "; " (``age: above max 90``)."""
    flags = np.full(count, "", dtype=object)
    broken = [(rule, mask) for rule, mask in broken if mask.any()]
    if broken:  # rare: most requests break nothing
        reasons = RowReasons(count)
        for rule, mask in broken:
            reasons.add(mask, lambda positions, text=f"{rule.column}: {rule.words}": [text] * len(positions))
        positions, texts = reasons.joined()
        flags[positions] = texts
    return flags
