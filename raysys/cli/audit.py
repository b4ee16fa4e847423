"""The audit and alert commands: ``raysys audit`` and ``raysys alerts list``."""

from __future__ import annotations

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

alerts_app = typer.Typer(help="The monitor's incidents (alert rules that fired).",
                         no_args_is_help=True)
LINKED = ("app", "incident", "rule", "model_version", "version", "dataset_version", "run_id",
          "decision")
SinceOption = Annotated[str | None, typer.Option(
    "--since", help="From this ISO time, or this long ago: 90s, 30m, 1h, 2d, 1w.")]
ActionOption = Annotated[str, typer.Option(
    "--action", help="Only actions starting with this (monitor., serve.deploy, …).")]
OpenOption = Annotated[bool, typer.Option("--open", help="Only the incidents still open.")]


@handle_errors
def audit(since: SinceOption = None, action: ActionOption = "", config: ConfigOption = None,
          as_json: JsonOption = False) -> None:
    """The audit log, oldest first: deploys, rollbacks, promotions, the monitor's steps."""
    from raysys.audit import parse_since, read_audit

    start = parse_since(since) if since is not None else None  # a bad value fails first
    rs = system(config)
    events = read_audit(rs.storage, action, since=start)
    emit({"since": start.isoformat() if start else None, "action": action, "events": events},
         as_json, _render_audit)


@alerts_app.command("list")
@handle_errors
def list_alerts(open_only: OpenOption = False, config: ConfigOption = None,
                as_json: JsonOption = False) -> None:
    """The app's incidents, newest first: rule, severity, first and last seen, message."""
    from raysys.monitoring.incidents import read_incidents

    rs = system(config)
    app = rs.serving.app_name
    incidents = read_incidents(rs.storage, app, open_only)
    emit({"app": app, "open_only": open_only, "incidents": incidents}, as_json, _render_alerts)


def _time(iso: str) -> str:
    return iso[:19].replace("T", " ")


def _linked(event: dict[str, Any]) -> str:
    return " ".join(f"{key}={event[key]}" for key in LINKED if event.get(key) not in (None, ""))


def _render_audit(result: dict[str, Any]) -> None:
    rows = [[_time(e["at"]), e["action"], e.get("actor", ""), _linked(e), e.get("reason", "")]
            for e in result["events"]]
    if not rows:
        since = f" since {result['since']}" if result["since"] else ""
        out_console.print(f"no audit events{since}")
        return
    out_console.print(table("audit log (UTC)", ["at", "action", "actor", "linked", "reason"], rows))


def _render_alerts(result: dict[str, Any]) -> None:
    from raysys.monitoring.incidents import incident_key

    rows = [[i["id"], i["status"], i["severity"], incident_key(i), _time(i["first_seen"]),
             _time(i["last_seen"]), i["fired"], i["message"]] for i in result["incidents"]]
    if not rows:
        which = "open " if result["open_only"] else ""
        out_console.print(f"{result['app']}: no {which}incidents")
        return
    columns = ["id", "status", "severity", "rule", "first seen", "last seen", "windows", "message"]
    out_console.print(table(f"{result['app']}: incidents", columns, rows))
