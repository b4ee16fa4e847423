"""``System.monitor``: start, watch and stop the app's monitor actor; feedback, alerts, retrain, audit.

The monitor runs as the detached actor ``raysys-monitor-<app>`` on the serving cluster
(:mod:`raysys.monitoring.actor`), so it outlives the command that starts it; ``raysys serve
down`` (and ``monitor stop``) stops it. What :meth:`MonitorService.status` shows comes from the
committed state under ``monitor/<app>/``, so it is there also when the monitor is not running.
"""

from __future__ import annotations

import logging
from typing import Any

from raysys import audit
from raysys.config import SystemConfig
from raysys.errors import NotFound, RaysysError
from raysys.monitoring.actor import NAMESPACE, actor_name, monitor_actor_class
from raysys.monitoring.loop import ACTOR
from raysys.monitoring.state import StateStore
from raysys.storage import Storage

CALL_TIMEOUT_S = 180.0  # a new worker process on a busy machine takes a while
RETRAIN_TIMEOUT_S = 120.0
logger = logging.getLogger(__name__)


class MonitorStatus(dict):
    """What :meth:`MonitorService.status` returns: a plain dict that notebooks show as a table."""

    def _repr_html_(self) -> str:
        from raysys.reprs import html_table

        last = self.get("last_window") or {}
        feedback = self.get("feedback") or {}
        retrain = self.get("retrain") or {}
        return html_table(f"Monitor of app {self.get('app')}", [
            ("running", self.get("running")), ("windows closed", self.get("windows")),
            ("last window", last.get("seq")), ("its rows", last.get("rows")), ("champion", last.get("champion")),
            ("drifted", last.get("drifted")), ("labels matched", feedback.get("matched")),
            ("open incidents", ", ".join(i.get("rule", "") for i in self.get("open_incidents") or []) or "none"),
            ("retrain running", bool(retrain.get("running"))), ("release", (self.get("release") or {}).get("phase")),
            ("last error", self.get("last_error"))])


class MonitorService:
    """The monitoring layer's Python API (the CLI is a thin layer over it)."""

    def __init__(self, config: SystemConfig, storage: Storage, system):
        self.config, self.storage, self.system = config, storage, system
        self.app = system.serving.app_name
        self.name = actor_name(self.app)
        self.store = StateStore(storage, self.app)

    # ------------------------------------------------------------------ lifecycle

    def start(self) -> dict[str, Any]:
        """Start the monitor actor on the serving cluster (once: a running one is kept)."""
        import ray

        plan = self.system.serving.plan()
        if plan is None:
            raise NotFound(f"monitor: nothing is served for '{self.app}': run `raysys serve up` first")
        self.system.models.registry.get(self.system.models.name, plan.champion)  # a champion that exists
        self._connect(start=False)
        started = self._actor() is None
        if started:
            config = self.config.model_dump(mode="json", by_alias=True)
            handle = monitor_actor_class().options(name=self.name, namespace=NAMESPACE, lifetime="detached",
                                                   get_if_exists=True).remote(config)
            ray.get(handle.pid.remote(), timeout=CALL_TIMEOUT_S)  # constructed: the loop runs
            audit.record(self.storage, "monitor.start", {"app": self.app, "champion": plan.champion,
                                                         "interval_s": self.config.monitor.interval_s},
                         actor=ACTOR)
        return {**self.status(), "started": started}

    def stop(self) -> dict[str, Any]:
        """Stop the monitor actor (its step in flight finishes, state committed); nothing running is fine."""
        import ray

        try:
            self._connect(start=False)
        except RaysysError:
            return {"app": self.app, "actor": self.name, "stopped": False, "running": False}
        handle = self._actor()
        if handle is None:
            return {"app": self.app, "actor": self.name, "stopped": False, "running": False}
        try:
            ray.get(handle.stop.remote(), timeout=CALL_TIMEOUT_S)
        except Exception as error:  # noqa: BLE001 - a monitor that cannot stop cleanly is killed all the same
            logger.warning("monitor %s: did not stop cleanly (%s); killing it", self.name, error)
        ray.kill(handle, no_restart=True)
        audit.record(self.storage, "monitor.stop", {"app": self.app}, actor=ACTOR)
        return {"app": self.app, "actor": self.name, "stopped": True, "running": False}

    def status(self) -> dict[str, Any]:
        """Running or not, windows, the last window per version, feedback counts, incidents, retrain, release."""
        import ray

        live: dict[str, Any] | None = None
        try:
            self._connect(start=False)
            handle = self._actor()
            if handle is not None:
                live = ray.get(handle.status.remote(), timeout=CALL_TIMEOUT_S)
        except RaysysError:
            pass
        state = self.store.load()
        last = state.history[-1] if state.history else None
        from raysys.monitoring.incidents import read_incidents

        labels = (last or {}).get("labels") or {}
        return MonitorStatus({
            "app": self.app, "actor": self.name, "running": bool(live and live["running"]), "actor_status": live,
            "steps": state.steps, "windows": state.windows_closed, "last_error": state.last_error,
            "updated_at": state.updated_at,
            "last_window": None if last is None else {
                k: last.get(k) for k in ("seq", "start", "end", "rows", "champion", "versions", "errors")}
            | {"drifted": bool((last.get("drift") or {}).get("drifted"))},
            "feedback": {"matched": labels.get("matched", 0), "unmatched": labels.get("unmatched", 0),
                         "expired": labels.get("expired", 0), "duplicates": labels.get("duplicates", 0)},
            "open_incidents": read_incidents(self.storage, self.app, open_only=True),
            "retrain": {"running": state.retrain.get("running"), "last": state.retrain.get("last")},
            "release": state.release.get("release"),
        })

    # ------------------------------------------------------------------ the other verbs

    def feedback(self, source: Any) -> dict[str, Any]:
        """Labels for logged predictions: a CSV/Parquet/JSONL path or records (the serving layer writes them)."""
        return self.system.serving.feedback(source)

    def windows(self, last: int | None = None) -> list[dict[str, Any]]:
        """Closed windows (traffic, live quality and drift per window), oldest first; the last ``last``."""
        return self.store.windows(last)

    def alerts(self, open_only: bool = False) -> list[dict[str, Any]]:
        """The app's incidents, newest first (only the open ones with ``open_only``)."""
        from raysys.monitoring.incidents import read_incidents

        return read_incidents(self.storage, self.app, open_only=open_only)

    def audit(self, since: str | None = None, action: str | None = None) -> list[dict[str, Any]]:
        """Audit events, oldest first: since ``since`` (an ISO time or a duration: 30m, 2d), actions
        starting with ``action``."""
        return audit.read_audit(self.storage, action or "", since=audit.parse_since(since) if since else None)

    def retrain(self, reason: str = "manual") -> dict[str, Any]:
        """A manual retrain through the running monitor's policy (never two at once)."""
        import ray

        self._connect(start=False)
        handle = self._actor()
        if handle is None:
            raise RaysysError(f"monitor: not running for '{self.app}': start it with `raysys monitor start`")
        return _unwrapped(lambda: ray.get(handle.retrain.remote(reason), timeout=RETRAIN_TIMEOUT_S))

    def release(self, version: str | int, reason: str = "manual") -> dict[str, Any]:
        """Release a registered version (or alias) as a canary that the running monitor judges and then
        promotes or rolls back, as it does a retrained model."""
        import ray

        number = self.system.models.registry.get(self.system.models.name, str(version)).version
        self._connect(start=False)
        handle = self._actor()
        if handle is None:
            raise RaysysError(f"monitor: not running for '{self.app}': start it with `raysys monitor start`")
        return _unwrapped(lambda: ray.get(handle.release.remote(number, reason), timeout=CALL_TIMEOUT_S))

    # ------------------------------------------------------------------ helpers

    def _connect(self, start: bool) -> None:
        from raysys.serving.cluster import connect_serving_cluster

        connect_serving_cluster(self.config, self.storage, self.app, None, start=start)

    def _actor(self):
        """The running actor's handle, or None."""
        import ray

        try:
            return ray.get_actor(self.name, namespace=NAMESPACE)
        except ValueError:
            return None


def _unwrapped(call):
    """``call()``, with a user error raised in the actor re-raised as itself (one line, no remote traceback)."""
    from ray.exceptions import GetTimeoutError, RayTaskError

    try:
        return call()
    except RayTaskError as error:
        if isinstance(error.cause, RaysysError):
            raise error.cause from None
        raise
    except GetTimeoutError:
        raise RaysysError("monitor: no answer from the monitor actor in time (it may be busy with a long step); "
                          "check `raysys monitor status` and try again") from None
