"""``raysys gc``: remove what crashed writers left under the storage root."""

from __future__ import annotations

import re
from typing import Annotated, Any

import typer

from raysys.cli.common import (
    ConfigOption,
    JsonOption,
    emit,
    handle_errors,
    out_console,
    system,
    table,
)
from raysys.errors import RaysysError

UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


@handle_errors
def gc(
    dry_run: Annotated[bool, typer.Option(
        "--dry-run", help="Report what would be removed; remove nothing.")] = False,
    older_than: Annotated[str, typer.Option(
        "--older-than", help="Age after which staging whose owner cannot be checked (no marker, "
                             "another host) and unpublished files count as abandoned: 90m, 24h, "
                             "2d.")] = "24h",
    config: ConfigOption = None,
    as_json: JsonOption = False,
) -> None:
    """Remove staging and unpublished files left by crashed ingests and registrations."""
    report = system(config).gc(older_than_s=parse_duration(older_than), dry_run=dry_run)
    emit(report.to_dict(), as_json, _render)


def parse_duration(text: str) -> float:
    """Seconds in ``90m``, ``24h``, ``2d``, ``3600s`` (a plain number is hours)."""
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([smhd]?)\s*", text)
    if not match:
        raise RaysysError(f"--older-than: '{text}' is not a duration (e.g. 90m, 24h, 2d)")
    return float(match.group(1)) * UNITS[match.group(2) or "h"]


def _render(result: dict[str, Any]) -> None:
    verb = "would remove" if result["dry_run"] else "removed"
    if result["removed"]:
        rows = [[i["path"], _size(i["bytes"]), i["reason"]] for i in result["removed"]]
        out_console.print(table(verb.capitalize(), ["path", "size", "why"], rows))
    if result["kept"]:
        rows = [[i["path"], _size(i["bytes"]), i["reason"]] for i in result["kept"]]
        out_console.print(table("Kept", ["path", "size", "why"], rows))
    freed = "would free" if result["dry_run"] else "freed"
    out_console.print(f"{verb} {result['removed_count']} item(s), {freed} "
                      f"{_size(result['freed_bytes'])}", highlight=False)


def _size(count: float) -> str:
    for unit in ("B", "KiB", "MiB"):
        if count < 1024:
            return f"{count:.0f} B" if unit == "B" else f"{count:.1f} {unit}"
        count /= 1024
    return f"{count:.1f} GiB"
