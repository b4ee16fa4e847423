"""HTML for notebooks: the small tables behind the ``_repr_html_`` of datasets, models and the monitor."""

from __future__ import annotations

from collections.abc import Iterable
from html import escape
from typing import Any


def html_value(value: Any) -> str:
    """A value as escaped text: floats to 4 decimals, ints with separators, None as a dash."""
    if value is None:
        return "—"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return f"{value:.4f}"
    if isinstance(value, int):
        return f"{value:,}"
    return escape(str(value))


def html_table(title: str, rows: Iterable[tuple[str, Any]]) -> str:
    """A titled two-column table (field, value) with every text escaped."""
    body = "".join(f"<tr><th style='text-align:left'>{escape(name)}</th><td style='text-align:left'>"
                   f"{html_value(value)}</td></tr>" for name, value in rows)
    return f"<div><strong>{escape(title)}</strong><table>{body}</table></div>"
