"""The monitoring commands: ``raysys monitor start|status|stop|release`` and ``raysys retrain``.

``monitor status`` with no monitor running is not an error: it prints what the last monitor
committed and says it is not running (exit 0; ``"running": false`` with ``--json``).
"""

from __future__ import annotations

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

monitor_app = typer.Typer(help="The monitor: windows, drift, live quality, alerts, retraining.",
                          no_args_is_help=True)


@monitor_app.command("start")
@handle_errors
def start(config: ConfigOption = None, as_json: JsonOption = False) -> None:
    """Start the monitor of the served app (a running one is kept)."""
    rs = system(config)
    with progress("Starting the monitor…", as_json):
        result = rs.monitor.start()
    emit(result, as_json, _render_status)


@monitor_app.command("status")
@handle_errors
def status(config: ConfigOption = None, as_json: JsonOption = False) -> None:
    """Running or not, windows, last window per version, feedback, incidents, retrain and release."""
    emit(system(config).monitor.status(), as_json, _render_status)


@monitor_app.command("stop")
@handle_errors
def stop(config: ConfigOption = None, as_json: JsonOption = False) -> None:
    """Stop the monitor (its state stays; `monitor start` goes on from it)."""
    emit(system(config).monitor.stop(), as_json, lambda r: out_console.print(
        f"{r['actor']}: {'stopped' if r['stopped'] else 'was not running'}"))


@monitor_app.command("release")
@handle_errors
def release(
    version: Annotated[str, typer.Argument(help="A registered version number or alias.")],
    reason: Annotated[str, typer.Option("--reason", help="Why (kept in the audit log).")] = "manual",
    config: ConfigOption = None,
    as_json: JsonOption = False,
) -> None:
    """Release a registered version as a canary that the monitor judges, then promotes or rolls back."""
    emit(system(config).monitor.release(version, reason), as_json, lambda r: out_console.print(
        f"v{r['release']['version']} is out as a canary beside v{r['release']['champion']}: the monitor "
        f"promotes or rolls it back once its labelled traffic decides (`raysys monitor status`)"))


@handle_errors
def retrain(
    reason: Annotated[str, typer.Option("--reason", help="Why (kept in the audit log).")] = "manual",
    config: ConfigOption = None,
    as_json: JsonOption = False,
) -> None:
    """Retrain now through the running monitor (refused while a retrain runs)."""
    emit(system(config).monitor.retrain(reason), as_json, lambda r: out_console.print(
        f"retrain {'started: ' + r['retrain'] if r['allowed'] else 'not started'} ({r['reason']})"))


def _render_status(r: dict[str, Any]) -> None:
    state = "running" if r["running"] else "not running (start it with `raysys monitor start`)"
    out_console.print(f"[bold]{r['actor']}[/bold]: {state}; {r['windows']} windows in {r['steps']} steps")
    if r.get("last_error"):
        out_console.print(f"last step failed: {r['last_error']}", highlight=False)
    last = r.get("last_window")
    if last:
        rows = [[f"v{v}", m.get("requests"), m.get("labelled"), _quality(m), (m.get("latency_ms") or {}).get("p99"),
                 (r["last_window"].get("errors") or {}).get(v, {}).get("error_rate")]
                for v, m in (last.get("versions") or {}).items()]
        out_console.print(table(f"window {last['seq']} ({last['rows']} records, drift: "
                                f"{'yes' if last['drifted'] else 'no'})",
                                ["version", "requests", "labelled", "live quality", "p99 ms", "error rate"], rows))
    fb = r["feedback"]
    out_console.print(f"feedback: {fb['matched']} matched, {fb['unmatched']} unmatched, {fb['expired']} expired")
    incidents = r.get("open_incidents") or []
    if incidents:
        out_console.print(table("open incidents", ["id", "rule", "severity", "message"],
                                [[i["id"], i["rule"], i["severity"], i["message"]] for i in incidents]))
    running = (r.get("retrain") or {}).get("running")
    if running:
        out_console.print(f"retrain running: {running['id']} ({running['trigger']}: {running['reason']})")
    release = r.get("release")
    if release and release.get("phase") not in (None, "idle"):
        out_console.print(f"release: v{release['version']} {release['phase']}")


def _quality(metrics: dict[str, Any]) -> str:
    return ", ".join(f"{k} {v:.3g}" for k, v in (metrics.get("quality") or {}).items() if isinstance(v, (int, float)))
