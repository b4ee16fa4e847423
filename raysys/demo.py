"""The end-to-end demo behind ``make demo`` and ``raysys demo``: the closed loop on local Ray.

With the quickstart config: ingest the churn stream and train a champion (Ray Train), serve it
(Ray Serve) with the monitor watching, then send steady traffic whose true labels arrive a few
seconds after each answer (:mod:`raysys.monitoring.traffic`). At a given moment the traffic moves
to the stream's drifted part (``data.source.drift``: covariate and concept drift). From then on
the demo only sends traffic and labels and watches: the monitor detects the drift, opens an
incident (alert), retrains on the fresh labelled rows, sends the candidate out as a canary and
promotes it (or rolls it back) on its own. The demo reads ``System.monitor.status()``, the
closed windows and the audit log (``monitor.*`` actions) to build a timeline, and measures the
live quality of the old and the new champion on post-drift traffic from the labels it sent.

Every run gets a fresh storage root, ``<storage.root>/demo-<UTC time>`` (a repeated demo meets no
cooldown, daily retrain cap or old monitor state), and a free port for Serve. For demo speed the
loop's settings are overridden in code on top of the loaded config (``DEMO_OVERRIDES``; the
user's ``configs/quickstart.yaml`` is left as it is):

- ``monitor.enabled: true``, ``monitor.interval_s: 1``, ``monitor.window: {rows: 2000, min_rows: 200}``: a window every
  ~20 s of traffic; ``monitor.reference_rows: 5000``.
- ``monitor.alerts.rules: {min_labelled: 500, resolve_after: 2}``.
- ``monitor.retrain: {cooldown_s: 0, recent_rows: 6000, min_labelled: 3000, reference_rows: 500,
  holdout: 0.3, label_wait_s: 300}``: the retrain waits for 3,000 labelled post-drift records.
- ``monitor.release: {min_labelled: 150, settle_labelled: 600, timeout_s: 300}``;
  ``serve.canary_percent: 25``.

Traffic: 4 clients, 10 requests/s of 10 records each, labels 2 s after each answer.
Run with ``python -m raysys.demo [--config PATH] [--json]``.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

import pandas as pd
from rich.console import Console

from raysys.config import SystemConfig, load_config, parse_config
from raysys.errors import RaysysError

DEFAULT_CONFIG = "configs/quickstart.yaml"
DEMO_OVERRIDES: dict[str, Any] = {
    "monitor": {
        "enabled": True,
        "interval_s": 1.0,
        "window": {"rows": 2000, "seconds": None, "min_rows": 200},
        "reference_rows": 5000,
        "alerts": {"rules": {"min_labelled": 500, "resolve_after": 2}},
        "retrain": {"cooldown_s": 0.0, "recent_rows": 6000, "min_labelled": 3000, "reference_rows": 500,
                    "holdout": 0.3, "label_wait_s": 300.0},
        "release": {"min_labelled": 150, "settle_labelled": 600, "timeout_s": 300.0},
    },
    "serve": {"canary_percent": 25},
}
TRAFFIC = {"rate": 10.0, "clients": 4, "records_per_request": 10, "label_delay_s": 2.0}
STEADY_WINDOWS = 1  # windows of steady traffic before the drift
LIMIT_S = 600.0  # the whole demo, setup included
STEPS = ("champion serving", "traffic started", "drift onset", "drift detected", "alert",
         "retrain started", "retrain done", "canary", "promoted", "rolled back", "steady again")
AUDIT_STEPS = {"monitor.alert.open": "alert", "monitor.retrain.start": "retrain started",
               "monitor.retrain.done": "retrain done", "monitor.release.canary": "canary",
               "monitor.release.promote": "promoted", "monitor.release.rollback": "rolled back"}


# --------------------------------------------------------------------------- pure parts


def merge(base: dict[str, Any], overlay: dict[str, Any]) -> dict[str, Any]:
    """``base`` with ``overlay`` laid over it, nested mappings merged key by key."""
    out = dict(base)
    for key, value in overlay.items():
        out[key] = merge(out[key], value) if isinstance(value, dict) and isinstance(out.get(key), dict) else value
    return out


def demo_config(config: SystemConfig, root: str, port: int) -> SystemConfig:
    """The user's config with the demo's loop settings, its own storage root and a free port."""
    data = config.model_dump(mode="json", by_alias=True, exclude_unset=True)
    overlay = merge(DEMO_OVERRIDES, {"storage": {"root": root}, "serve": {"port": port}})
    return parse_config(merge(data, overlay), "demo config")


def epoch(value: Any) -> float | None:
    """Seconds since the epoch of a number, an ISO time or a timestamp (None if it is neither)."""
    try:
        return float(value)  # a number, or one as text (a window's end)
    except (TypeError, ValueError):
        pass
    try:
        stamp = pd.Timestamp(value)
    except (TypeError, ValueError):
        return None
    if pd.isna(stamp):
        return None
    return (stamp if stamp.tzinfo else stamp.tz_localize("UTC")).timestamp()


def audit_marks(events: list[dict[str, Any]], since: float) -> dict[str, float]:
    """The first time of each loop step in the audit log at or after ``since`` (epoch seconds)."""
    marks: dict[str, float] = {}
    for event in events:
        step, at = AUDIT_STEPS.get(event.get("action", "")), epoch(event.get("at"))
        if step is not None and at is not None and at >= since:
            marks.setdefault(step, at)
    return marks


def first_detection(windows: list[dict[str, Any]], since: float) -> dict[str, Any] | None:
    """The first window with rows from ``since`` on that flagged drift or broke a rule, if any."""
    for window in windows:
        end = epoch(window.get("end"))
        flagged = bool((window.get("drift") or {}).get("drifted")) or bool(window.get("findings"))
        if end is not None and end >= since and flagged:
            return window
    return None


def timeline(marks: dict[str, float], started: float) -> list[dict[str, Any]]:
    """The steps seen so far, in the loop's order, with seconds from the demo's start."""
    return [{"step": step, "at_s": round(marks[step] - started, 1)} for step in STEPS if step in marks]


def quality(stats: dict[str, Any], phase: str, version: int | None) -> float | None:
    """Live accuracy of ``version`` in ``phase`` from the traffic driver's stats."""
    scored = stats["quality"].get(phase, {}).get(str(version))
    return None if scored is None else round(scored["accuracy"], 4)


def better(after: float | None, before: float | None) -> bool:
    """Whether the new champion's live quality beats the old one's (both measured)."""
    return after is not None and before is not None and after > before


@dataclass
class Outcome:
    """What the demo saw; :meth:`to_dict` is the ``--json`` object."""

    started: float
    marks: dict[str, float] = field(default_factory=dict)
    champion_before: int | None = None
    champion_after: int | None = None
    stats: dict[str, Any] = field(default_factory=dict)
    storage: str = ""
    skipped: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        """The summary: timeline, requests, failures, champions, quality, time to recover, paths."""
        stats, marks = self.stats, self.marks
        recovered = (round(marks["promoted"] - marks["drift onset"], 1)
                     if "promoted" in marks and "drift onset" in marks else None)
        return {
            "timeline": timeline(marks, self.started),
            "requests": stats.get("requests", 0), "failed_requests": stats.get("failed", 0),
            "champion_before": self.champion_before, "champion_after": self.champion_after,
            "quality_before": quality(stats, "drifted", self.champion_before),
            "quality_after": quality(stats, "recovered", self.champion_after),
            "quality_pre_drift": quality(stats, "steady", self.champion_before),
            "time_to_recover_s": recovered,
            "closed": "steady again" in marks,
            "recovered": better(quality(stats, "recovered", self.champion_after),
                                quality(stats, "drifted", self.champion_before)),
            "records": stats.get("records", 0), "labels_sent": stats.get("labels_sent", 0),
            "labels_failed": stats.get("labels_failed", 0), "latency_ms": stats.get("latency_ms", {}),
            "errors": stats.get("errors", {}), "retrain_skipped": self.skipped,
            "seconds": round(time.time() - self.started, 1),
            "storage": self.storage, "audit_log": f"{self.storage}/audit",
            "wandb_runs": f"{self.storage}/runs",
        }


# --------------------------------------------------------------------------- the run


class Demo:
    """One run of the loop: set up, send traffic, watch, summarise."""

    def __init__(self, config_path: str, console: Console, limit_s: float = LIMIT_S):
        from raysys.runtime import free_port
        from raysys.system import System

        self.started = time.time()
        user = load_config(config_path)
        stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%S")
        root = f"{user.storage.root.rstrip('/')}/demo-{stamp}"
        self.rs = System(demo_config(user, root, free_port()))
        self.console, self.deadline = console, self.started + limit_s
        self.outcome = Outcome(started=self.started, storage=self.rs.storage.uri)
        self.driver, self.serving = None, False

    def mark(self, step: str, at: float | None = None) -> None:
        """Record a step (once) and print it."""
        if step not in self.outcome.marks:
            self.outcome.marks[step] = at or time.time()
            self.console.print(f"[green]✔[/green] {self.outcome.marks[step] - self.started:6.1f} s  {step}")

    def run(self) -> dict[str, Any]:
        """The whole loop; always takes down what it started."""
        try:
            self.setup()
            self.drive()
        except KeyboardInterrupt:
            self.console.print("[yellow]![/yellow] interrupted: stopping what the demo started")
        finally:
            self.teardown()
        return self.outcome.to_dict()

    def setup(self) -> None:
        """Ingest, train a champion, serve it with the monitor on."""
        rs = self.rs
        source = rs.config.data.source
        self.console.print(f"storage: {rs.storage.uri}")
        with self.console.status(f"Ingest {source.rows:,} rows of the synthetic stream…"):
            ingested = rs.data.ingest()
        self.console.print(f"[green]✔[/green] {time.time() - self.started:6.1f} s  ingested version "
                           f"{ingested.manifest.version} ({ingested.report['accepted']:,} rows)")
        with self.console.status("Train on Ray Train, evaluate, register…"):
            trained = rs.models.train(ingested.manifest.version)
        if champion_version(rs) != trained.model.version:  # promote_first: false, or a run before
            rs.models.promote(str(trained.model.version), "champion", "demo", "first model of the demo")
        test = trained.metrics
        self.console.print(f"[green]✔[/green] {time.time() - self.started:6.1f} s  champion v{trained.model.version}: "
                           + ", ".join(f"{k} {v:.3f} (baseline {test['baseline'][k]:.3f})"
                                       for k, v in test["metrics"].items() if isinstance(v, float)))
        self.outcome.champion_before = trained.model.version
        with self.console.status("Serve the champion on Ray Serve, start the monitor…"):
            self.serving = True
            rs.serving.up()
            rs.monitor.start()
        self.mark("champion serving")

    def drive(self) -> None:
        """Steady traffic, then the drift; watch the monitor until the loop closes (or time is up)."""
        from raysys.monitoring.traffic import TrafficDriver, synthetic_stream

        rs, source = self.rs, self.rs.config.data.source
        inputs = rs.models.load("champion").state.input_columns
        past = source.offset + source.rows  # the stream continues past the ingested rows
        self.driver = TrafficDriver(rs.serving.url, synthetic_stream(source, past, drifted=False), inputs,
                                    rs.config.data.label, **TRAFFIC)
        self.mark("traffic started", self.driver.start())
        window = rs.config.monitor.window.rows
        self.wait(lambda: self.driver.stats()["records"] >= STEADY_WINDOWS * window, "steady traffic")
        self.mark("drift onset", self.driver.switch(synthetic_stream(source, past, drifted=True), "drifted"))
        self.wait(self.watch, "the loop")
        self.outcome.stats = self.driver.stop()

    def wait(self, done, what: str) -> None:
        """Poll ``done`` every second until it is true or the demo's time is up."""
        with self.console.status(f"Waiting for {what}…") as status:
            while not done():
                if time.time() > self.deadline:
                    self.console.print(f"[red]✘[/red] time is up waiting for {what}")
                    return
                stats = self.driver.stats()
                status.update(f"Waiting for {what}… {stats['requests']:,} requests, {stats['failed']} failed, "
                              f"{stats['labels_sent']:,} labels")
                time.sleep(1.0)

    def watch(self) -> bool:
        """One look at the monitor's windows and the audit log; True once the loop is steady again."""
        from raysys import audit
        from raysys.monitoring.state import StateStore

        onset = self.outcome.marks["drift onset"]
        events = audit.read_audit(self.rs.storage, "monitor.")
        marks = audit_marks(events, onset)
        if first_detection(StateStore(self.rs.storage, self.rs.serving.app_name).windows(last=20), onset):
            # when the demo first saw the monitor's flagged window, or the alert it raised, if sooner
            self.mark("drift detected", min(time.time(), marks.get("alert", time.time())))
        self.outcome.skipped = [e.get("decision") or e.get("reason", "") for e in events
                                if e["action"] == "monitor.retrain.skipped" and epoch(e["at"]) >= onset]
        for step, at in sorted(marks.items(), key=lambda item: item[1]):
            self.mark(step, at)
            if step == "promoted":
                self.outcome.champion_after = self.rs.serving.plan().champion
                self.driver.switch(phase="recovered")
        if "rolled back" in self.outcome.marks:
            return True
        after = self.outcome.champion_after
        if after is not None and self.driver.records_in("recovered").get(after, 0) >= \
                self.rs.config.monitor.window.rows:
            self.mark("steady again")
            return True
        return False

    def teardown(self) -> None:
        """Stop the traffic, then the server and its monitor (what the demo started)."""
        if self.driver is not None and not self.outcome.stats:
            self.outcome.stats = self.driver.stop(drain_labels=False)
        if not self.serving:
            return
        try:
            self.rs.serving.down()  # stops the monitor too
        except RaysysError as error:
            self.console.print(f"[yellow]![/yellow] {error}")


def champion_version(rs) -> int | None:
    """The registry's champion version, None when there is none."""
    from raysys.errors import NotFound

    try:
        return rs.models.registry.get(rs.models.name, "champion").version
    except NotFound:
        return None


def report(result: dict[str, Any], console: Console) -> None:
    """Print the demo's summary for people."""
    from raysys.cli.common import table

    console.print(table("Timeline", ["step", "at (s)"], [[t["step"], f"{t['at_s']:.1f}"] for t in result["timeline"]]))
    fmt = lambda v: "—" if v is None else f"{v:.3f}"
    rows = [
        ["requests sent / failed", f"{result['requests']:,} / {result['failed_requests']}"],
        ["records / labels sent", f"{result['records']:,} / {result['labels_sent']:,}"],
        ["champion before → after", f"v{result['champion_before']} → v{result['champion_after']}"],
        ["live accuracy, pre-drift (old champion)", fmt(result["quality_pre_drift"])],
        ["live accuracy after drift: old champion", fmt(result["quality_before"])],
        ["live accuracy after drift: new champion", fmt(result["quality_after"])],
        ["drift onset → new champion serving all", "—" if result["time_to_recover_s"] is None
         else f"{result['time_to_recover_s']:.1f} s"],
        ["audit log", result["audit_log"]],
        ["W&B runs (offline unless WANDB_API_KEY)", result["wandb_runs"]],
    ]
    console.print(table("The closed loop", ["", ""], rows))
    for message, count in result["errors"].items():
        console.print(f"[yellow]![/yellow] {count} × {message}")
    for problem in problems(result):
        console.print(f"[red]✘[/red] {problem}")


def problems(result: dict[str, Any]) -> list[str]:
    """What kept the run from showing the loop closing: no promotion, failed requests, no recovery."""
    found = []
    if not result["closed"]:
        found.append("the loop did not close (no promotion followed by steady traffic on the new champion)")
    if result["failed_requests"]:
        found.append(f"{result['failed_requests']} requests failed")
    if result["closed"] and not result["recovered"]:
        found.append(f"the new champion is not better on post-drift traffic: live accuracy "
                     f"{result['quality_after']} vs {result['quality_before']}")
    return found


def run(config: str = DEFAULT_CONFIG, as_json: bool = False, limit_s: float = LIMIT_S) -> dict[str, Any]:
    """Run the demo; print the timeline and summary (to stderr with ``as_json``); return the summary."""
    from raysys.runtime import quiet_logs

    quiet_logs()
    console = Console(stderr=as_json)
    demo = Demo(config, console, limit_s)  # a bad config fails here, before anything is printed
    console.rule(f"raysys demo — the closed loop of {demo.rs.config.project.name}")
    result = demo.run()
    report(result, console)
    return result


def main(argv: list[str] | None = None) -> None:
    """Command-line entry point (``python -m raysys.demo``)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", "-c", default=DEFAULT_CONFIG)
    parser.add_argument("--json", action="store_true", help="Print one JSON object on stdout.")
    parser.add_argument("--limit-s", type=float, default=LIMIT_S, help="Give up after this long (seconds).")
    args = parser.parse_args(argv)
    try:
        result = run(args.config, args.json, args.limit_s)
    except RaysysError as error:
        print(f"error: {error}", file=sys.stderr)
        raise SystemExit(1) from None
    if args.json:
        print(json.dumps(result, default=str))
    if problems(result):
        raise SystemExit(1)


if __name__ == "__main__":
    main()
