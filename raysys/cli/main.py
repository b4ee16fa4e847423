"""The ``raysys`` console script."""

from __future__ import annotations

from typing import Annotated

import typer

import raysys
from raysys.cli import data, feedback, keys, maintenance, models, serving
from raysys.cli import monitoring as monitor_cli
from raysys.cli.audit import alerts_app
from raysys.cli.audit import audit as audit_command
from raysys.cli.demo import demo

app = typer.Typer(
    name="raysys",
    help="raysys: a closed-loop ML system on Ray — data, training, serving and monitoring from one config.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
app.add_typer(data.app, name="data")
app.add_typer(models.models_app, name="models")
app.add_typer(models.runs_app, name="runs")
app.command()(models.train)
app.command()(models.tune)
app.command()(models.evaluate)
app.command("run")(models.run)
app.add_typer(serving.serve_app, name="serve")
app.command()(serving.deploy)
app.command()(serving.promote)
app.command()(serving.rollback)
app.command()(serving.predict)
app.command()(feedback.feedback)
app.command()(maintenance.gc)
app.add_typer(monitor_cli.monitor_app, name="monitor")
app.command()(monitor_cli.retrain)
app.add_typer(alerts_app, name="alerts")
app.command("audit")(audit_command)
app.command()(demo)
app.add_typer(keys.keys_app, name="keys")


def _print_version(requested: bool) -> None:
    if requested:
        print(f"raysys {raysys.__version__}")
        raise typer.Exit()


@app.callback()
def main(
    version: Annotated[bool, typer.Option("--version", callback=_print_version, is_eager=True,
                                          help="Print the version and exit.")] = False,
) -> None:
    """Options that apply before any command."""


if __name__ == "__main__":
    app()
