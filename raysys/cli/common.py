"""Options, output and error handling shared by every command."""

from __future__ import annotations

import functools
import json
import sys
from collections.abc import Callable
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from raysys.errors import RaysysError, ValidationFailed
from raysys.secrets import mask_text, mask_values

ConfigOption = Annotated[
    str | None,
    typer.Option("--config", "-c", help="Config YAML (default: $RAYSYS_CONFIG or ./raysys.yaml).", show_default=False),
]
JsonOption = Annotated[bool, typer.Option("--json", help="Print one JSON object on stdout.")]

err_console = Console(stderr=True)
out_console = Console()


def system(config: str | None):
    """Load the System for a command (with Ray's console logging kept quiet)."""
    from raysys.runtime import quiet_logs
    from raysys.system import System

    quiet_logs()
    return System.from_config(config)


def handle_errors(fn: Callable) -> Callable:
    """Turn raysys errors into a one-line message and exit code 1."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        as_json = kwargs.get("as_json", False)
        try:
            return fn(*args, **kwargs)
        except RaysysError as error:
            message = mask_text(str(error))  # no secret of the config leaves in an error
            if as_json:
                payload = {"error": message}
                if isinstance(error, ValidationFailed):
                    payload["report"] = mask_values(error.report)
                print(json.dumps(payload, default=str))
            err_console.print(f"[red]error:[/red] {message}", highlight=False, soft_wrap=True)
            raise typer.Exit(1) from None

    return wrapper


def emit(result: dict[str, Any], as_json: bool, render: Callable[[dict[str, Any]], None]) -> None:
    """Print a result as one JSON object, or as text for people."""
    if as_json:
        print(json.dumps(result, default=str))
    else:
        render(result)


def progress(message: str, as_json: bool):
    """A spinner on stderr while long work runs (quiet in --json mode)."""
    import contextlib

    if as_json:
        return contextlib.nullcontext()
    if not sys.stderr.isatty():
        err_console.print(f"{message}", highlight=False)
        return contextlib.nullcontext()
    return err_console.status(message)


def table(title: str, columns: list[str], rows: list[list[Any]]) -> Table:
    """A rich table of rows."""
    grid = Table(title=title, title_justify="left")
    for column in columns:
        grid.add_column(column)
    for row in rows:
        grid.add_row(*["" if v is None else str(v) for v in row])
    return grid
