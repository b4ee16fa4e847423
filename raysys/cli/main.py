"""The ``raysys`` console script."""

from __future__ import annotations

import typer

from raysys.cli import data

app = typer.Typer(
    name="raysys",
    help="raysys: a closed-loop ML system on Ray — data, training, serving and monitoring from one config.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
app.add_typer(data.app, name="data")


if __name__ == "__main__":
    app()
