"""Where each closed window's numbers go besides storage: Prometheus (through Ray) and W&B.

:class:`PrometheusExporter` sets ``ray.util.metrics`` gauges and counters tagged by app and model
version; Ray's metrics agent exports them on the node's metrics port (``ray.nodes()[i]
["MetricsExportPort"]``) with a ``ray_`` prefix, on Ray's export interval:

- ``raysys_monitor_requests`` (counter) and ``raysys_monitor_labelled`` (counter) per version;
- ``raysys_monitor_live_quality`` per version and ``metric`` (accuracy, f1, log_loss, rmse, mae);
- ``raysys_monitor_latency_p99_ms`` and ``raysys_monitor_error_rate`` per version;
- ``raysys_monitor_drift_p_value`` per ``feature`` (also ``_row``, ``_predictions``, ``_labels``),
  tagged with the champion version the window was compared against;
- ``raysys_monitor_open_incidents`` and ``raysys_monitor_windows`` (counter) per app.

:class:`WandbExporter` logs each window to one W&B run per serving champion (offline unless
``WANDB_API_KEY`` is set; :mod:`raysys.modeling.tracking`), in the project's W&B project, group
``production``, job type ``monitor``, tagged ``model:<name>:v<N>`` for the champion and every
version that served in a window (as the training run of that version is), step = window number.
A run that a killed monitor left ``running`` is marked ``interrupted`` when its successor opens one.
"""

from __future__ import annotations

import logging
import os
from typing import Any

import numpy as np

logger = logging.getLogger(__name__)

PREFIX = "raysys_monitor_"
GROUP = "production"
DRIFT_PARTS = ("row", "predictions", "labels")


def window_gauges(app: str, summary: dict[str, Any]) -> list[tuple[str, dict[str, str], float]]:
    """A window's gauge values as ``(metric, tags, value)`` (pure; what both exporters publish)."""
    out: list[tuple[str, dict[str, str], float]] = []
    for version, metrics in (summary.get("versions") or {}).items():
        tags = {"app": app, "version": str(version)}
        p99 = (metrics.get("latency_ms") or {}).get("p99")
        if p99 is not None:
            out.append(("latency_p99_ms", tags, float(p99)))
        for name, value in (metrics.get("quality") or {}).items():
            if isinstance(value, (int, float)) and np.isfinite(value):
                out.append(("live_quality", {**tags, "metric": name}, float(value)))
    for version, errors in (summary.get("errors") or {}).items():
        out.append(("error_rate", {"app": app, "version": str(version)}, float(errors["error_rate"])))
    drift = summary.get("drift") or {}
    champion = {"app": app, "version": str(summary.get("champion"))}
    for feature, test in (drift.get("features") or {}).items():
        if test.get("p_value") is not None:
            out.append(("drift_p_value", {**champion, "feature": feature}, float(test["p_value"])))
    for part in DRIFT_PARTS:
        test = drift.get(part)
        if isinstance(test, dict) and test.get("p_value") is not None:
            out.append(("drift_p_value", {**champion, "feature": f"_{part}"}, float(test["p_value"])))
    return out


class PrometheusExporter:
    """``ray.util.metrics`` gauges and counters of the monitor (create in the actor's process)."""

    def __init__(self):
        from ray.util.metrics import Counter, Gauge

        version, app = ("app", "version"), ("app",)
        self.gauges = {
            "latency_p99_ms": Gauge(PREFIX + "latency_p99_ms", "Latency p99 of the last window (ms).", version),
            "error_rate": Gauge(PREFIX + "error_rate", "Failed / requests since the last window.", version),
            "live_quality": Gauge(PREFIX + "live_quality", "Live quality from matched feedback.",
                                  (*version, "metric")),
            "drift_p_value": Gauge(PREFIX + "drift_p_value", "Drift test p-value against the champion's "
                                   "training split.", (*version, "feature")),
            "open_incidents": Gauge(PREFIX + "open_incidents", "Open incidents.", app),
        }
        self.requests = Counter(PREFIX + "requests", "Requests logged, per model version.", version)
        self.labelled = Counter(PREFIX + "labelled", "Requests with matched feedback, per version.", version)
        self.windows = Counter(PREFIX + "windows", "Windows closed.", app)

    def window(self, app: str, summary: dict[str, Any], open_incidents: int) -> None:
        """Publish one closed window."""
        for name, tags, value in window_gauges(app, summary):
            self.gauges[name].set(value, tags=tags)
        for version, metrics in (summary.get("versions") or {}).items():
            tags = {"app": app, "version": str(version)}
            if metrics.get("requests"):
                self.requests.inc(float(metrics["requests"]), tags=tags)
            if metrics.get("labelled"):
                self.labelled.inc(float(metrics["labelled"]), tags=tags)
        self.gauges["open_incidents"].set(float(open_incidents), tags={"app": app})
        self.windows.inc(1.0, tags={"app": app})


def flat_window(summary: dict[str, Any], open_incidents: int) -> dict[str, float]:
    """A window as flat W&B keys: ``v3/requests``, ``v3/quality/accuracy``, ``drift/p/age``, …"""
    out: dict[str, float] = {"rows": float(summary.get("rows", 0)), "open_incidents": float(open_incidents)}
    for name, tags, value in window_gauges("", summary):
        if name == "drift_p_value":
            out[f"drift/p/{tags['feature']}"] = value
        elif name == "live_quality":
            out[f"v{tags['version']}/quality/{tags['metric']}"] = value
        else:
            out[f"v{tags['version']}/{name}"] = value
    for version, metrics in (summary.get("versions") or {}).items():
        for key in ("requests", "labelled"):
            if isinstance(metrics.get(key), (int, float)):
                out[f"v{version}/{key}"] = float(metrics[key])
    drift = summary.get("drift") or {}
    if "drifted" in drift:
        out["drift/drifted"] = float(bool(drift["drifted"]))
    return out


class WandbExporter:
    """One tracked run per serving champion (group ``production``); a window is one logged step."""

    def __init__(self, system):
        self.system = system
        self.run = None
        self.champion: int | None = None

    @property
    def wandb(self):
        """The W&B run object (for the alert sink), or None."""
        return getattr(self.run, "_wandb", None)

    def window(self, app: str, summary: dict[str, Any], open_incidents: int) -> None:
        """Log one closed window (a new run when the champion changed)."""
        if self.run is None or summary.get("champion") != self.champion:
            self._start(app, summary.get("champion"))
        from raysys.modeling.tracking import model_tag

        self.run.add_tags(*(model_tag(self.system.models.name, v) for v in summary.get("versions") or {}))
        self.run.log(flat_window(summary, open_incidents), step=int(summary["seq"]))

    def _start(self, app: str, champion: int | None) -> None:
        from raysys.modeling.tracking import interrupt_runs, model_tag, start_run

        self.close()
        cfg = self.system.config
        stale = interrupt_runs(self.system.storage, "monitor", f"app:{app}",
                               f"the monitor of app '{app}' ended without finishing this run; pid {os.getpid()} took over")
        if stale:
            logger.warning("monitor %s: marked the run(s) of a monitor that died interrupted: %s", app, ", ".join(stale))
        self.run = start_run(self.system.storage, cfg.tracking.model_copy(update={"wandb": cfg.monitor.wandb
                                                                                   and cfg.tracking.wandb}),
                             cfg.project.name, "monitor", {"app": app, "monitor": cfg.monitor.model_dump(mode="json")},
                             tags=[model_tag(self.system.models.name, champion), f"app:{app}", GROUP], group=GROUP)
        self.champion = champion

    def close(self) -> None:
        """Finish the current run."""
        if self.run is not None:
            self.run.finish()
            self.run = None
