"""``raysys feedback``: labels that arrive in bulk, written beside the ones sent over HTTP."""

from __future__ import annotations

from typing import Annotated

import typer

from raysys.cli.common import ConfigOption, JsonOption, emit, handle_errors, out_console, system


@handle_errors
def feedback(
    input: Annotated[str, typer.Option("--input", help="CSV, Parquet or JSON-lines file with request_id, "
                                                       "label and optionally row (default 0).")],
    config: ConfigOption = None,
    as_json: JsonOption = False,
) -> None:
    """Record delayed labels for answered requests (logs/feedback/), checked first: a bad file writes nothing."""
    result = system(config).serving.feedback(input)
    emit(result, as_json, lambda r: out_console.print(
        f"{r['accepted']:,} labels for {r['model']} → {r['path']}", highlight=False))
