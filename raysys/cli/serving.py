"""The serving commands: ``raysys serve up|status|down|build``, ``deploy``, ``rollback``, ``predict``."""

from __future__ import annotations

import getpass
from typing import Annotated, Any

import typer

from raysys.cli.common import (
    ConfigOption,
    JsonOption,
    emit,
    handle_errors,
    out_console,
    progress,
    system,
    table,
)

serve_app = typer.Typer(help="The online model server on Ray Serve.", no_args_is_help=True)
AddressOption = Annotated[str | None, typer.Option("--address", help="Ray cluster address (default: local).")]
ReasonOption = Annotated[str, typer.Option("--reason", help="Why (kept in the alias history and audit log).")]


@serve_app.command("up")
@handle_errors
def up(address: AddressOption = None, config: ConfigOption = None, as_json: JsonOption = False) -> None:
    """Deploy the model server described by the serve config, wait until it answers, return."""
    rs = system(config)
    with progress(f"Starting the model server on {address or 'local Ray'}…", as_json):
        result = rs.serving.up(address)
    emit(result, as_json, _render_status)


@serve_app.command("status")
@handle_errors
def status(address: AddressOption = None, config: ConfigOption = None, as_json: JsonOption = False) -> None:
    """Deployments, replicas, versions and traffic."""
    emit(system(config).serving.status(address), as_json, _render_status)


@serve_app.command("down")
@handle_errors
def down(address: AddressOption = None, config: ConfigOption = None, as_json: JsonOption = False) -> None:
    """Remove the model server (and the local Ray that `serve up` started, if any)."""
    emit(system(config).serving.down(address), as_json, lambda r: out_console.print(f"{r['app']}: deleted"))


@serve_app.command("build")
@handle_errors
def build(
    output: Annotated[str, typer.Option("--output", "-o", help="Folder for serve.yaml and rayservice.yaml.")] = ".",
    image: Annotated[str | None, typer.Option("--image", help="Image of the RayService's pods.")] = None,
    config: ConfigOption = None,
    as_json: JsonOption = False,
) -> None:
    """Write a Serve config (for `serve deploy`) and a KubeRay RayService manifest from the config."""
    from raysys.serving.build import build as build_files

    emit(build_files(config, output, image), as_json, lambda r: out_console.print(
        f"{r['app']}: {r['serve_config']} (serve deploy), {r['rayservice']} (kubectl apply)"))


@handle_errors
def deploy(
    model: Annotated[str, typer.Option("--model", help="Version number or alias to roll out.")],
    canary: Annotated[float | None, typer.Option("--canary", min=0, max=100, help="Percent of traffic to it.")] = None,
    shadow: Annotated[bool, typer.Option("--shadow", help="Mirror traffic to it; never answers.")] = False,
    blue_green: Annotated[bool, typer.Option("--blue-green", help="Switch all traffic at once (default).")] = False,
    sticky: Annotated[bool | None, typer.Option("--sticky/--no-sticky", help="Canary by request key.")] = None,
    reason: ReasonOption = "",
    config: ConfigOption = None,
    as_json: JsonOption = False,
) -> None:
    """Roll a model version out: blue-green (default), canary or shadow."""
    from raysys.errors import RaysysError

    if sum([canary is not None, shadow, blue_green]) > 1:
        raise RaysysError("choose one of --canary PCT, --shadow, --blue-green")
    mode = "canary" if canary is not None else "shadow" if shadow else "blue-green"
    result = system(config).serving.deploy(model, mode, percent=canary, sticky=sticky, actor=getpass.getuser(),
                                           reason=reason)
    emit(result, as_json, _render_move)


@handle_errors
def promote(reason: ReasonOption = "", config: ConfigOption = None, as_json: JsonOption = False) -> None:
    """Make the canary's challenger the champion: all traffic to it."""
    emit(system(config).serving.promote(actor=getpass.getuser(), reason=reason), as_json, _render_move)


@handle_errors
def rollback(
    to: Annotated[str | None, typer.Option("--to", help="Version or alias (default: the previous champion).")] = None,
    reason: ReasonOption = "",
    config: ConfigOption = None,
    as_json: JsonOption = False,
) -> None:
    """End a canary/shadow, or go back to the previous champion (or --to VERSION)."""
    emit(system(config).serving.rollback(to, actor=getpass.getuser(), reason=reason), as_json, _render_move)


@handle_errors
def predict(
    input: Annotated[str, typer.Option("--input", help="CSV, Parquet or JSON-lines file or directory.")],
    output: Annotated[str, typer.Option("--output", help="Directory for Parquet (or CSV with --format csv).")],
    model: Annotated[str, typer.Option("--model", help="Version number or alias.")] = "champion",
    id_column: Annotated[str | None, typer.Option("--id", help="Id column kept in the output (default: 'id').")] = None,
    fmt: Annotated[str, typer.Option("--format", help="parquet or csv.")] = "parquet",
    config: ConfigOption = None,
    as_json: JsonOption = False,
) -> None:
    """Batch inference on Ray Data: same preprocessing and model as online, any input size."""
    rs = system(config)
    with progress(f"Predicting {input}…", as_json):
        result = rs.serving.predict_batch(input, output, model=model, id_column=id_column, fmt=fmt)
    emit(result, as_json, lambda r: out_console.print(
        f"{r['rows']:,} predictions by {r['model']} v{r['model_version']} → {r['output']}"))


def _render_status(r: dict[str, Any]) -> None:
    out_console.print(f"[bold]{r['app']}[/bold]: {r['status']} at {r['url']}")
    if r.get("traffic"):
        out_console.print(table("traffic", ["version", "share"], [[k, v] for k, v in r["traffic"].items()]))
    rows = [[name, d["status"], ", ".join(f"{k} {v}" for k, v in d["replicas"].items())]
            for name, d in r.get("deployments", {}).items()]
    if rows:
        out_console.print(table("deployments", ["deployment", "status", "replicas"], rows))
    _render_faults(r.get("faults") or {})


def _render_faults(faults: dict[str, Any]) -> None:
    """Requests, failures (a challenger's fell back to the champion) and dropped shadows per version."""
    from rich.markup import escape

    from raysys.serving.faults import fault_rows

    if faults.get("versions"):
        rows = [[*row[:-1], escape(row[-1])] for row in fault_rows(faults)]
        out_console.print(table(f"requests and faults (all replicas, cumulative; {faults['replicas']} reports)",
                                ["version", "role", "requests", "failures", "dropped", "last error"], rows))
    if faults.get("prediction_log"):
        out_console.print("prediction log: " + ", ".join(
            f"{value:,} {name.replace('_', ' ')}" for name, value in faults["prediction_log"].items()))


def _render_move(r: dict[str, Any]) -> None:
    plan = r["plan"]
    where = "applied to the running server" if r["applied_to_running_app"] else "saved (server not running)"
    out_console.print(f"{r['action']}: champion v{plan['champion']}"
                      + (f", challenger v{plan['challenger']} at {plan['canary_percent']:g}%" if plan["challenger"] else "")
                      + (f", shadow v{plan['shadow']}" if plan["shadow"] else "") + f" — {where}")
