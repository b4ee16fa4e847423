"""The monitor as a named, detached Ray actor per app: ``raysys-monitor-<app>``.

The actor is small (``ACTOR_CPUS`` of a CPU) and restarts on its own (``max_restarts=-1``):
a new incarnation loads the committed state (:mod:`raysys.monitoring.state`) and goes on.
A thread steps the :class:`~raysys.monitoring.loop.MonitorLoop` every ``monitor.interval_s``; a
step that fails (storage down) is logged and retried at the next interval. A retrain runs in a
worker thread of its own, so the monitor keeps counting windows meanwhile; the policy lets one
run at a time. Calls (status, retrain, stop) are answered while a step runs (``max_concurrency``).
"""

from __future__ import annotations

import logging
import os
import threading
import time
from typing import Any

from raysys.config import SystemConfig

ACTOR_PREFIX = "raysys-monitor-"
ACTOR_CPUS = 0.1
NAMESPACE = "raysys"
logger = logging.getLogger(__name__)


def actor_name(app: str) -> str:
    """The monitor actor's name for an app."""
    return f"{ACTOR_PREFIX}{app}"


class Monitor:
    """The actor's body (the class is wrapped with ``ray.remote`` by :func:`monitor_actor_class`)."""

    def __init__(self, config: dict[str, Any]):
        from raysys.monitoring.loop import MonitorLoop
        from raysys.monitoring.metrics import PrometheusExporter, WandbExporter
        from raysys.system import System

        os.environ.setdefault("WANDB_MODE", "offline")
        self.system = System(SystemConfig.model_validate(config))
        self.interval_s = self.system.config.monitor.interval_s
        self.tracker = WandbExporter(self.system) if self.system.config.monitor.wandb else None
        self.loop = MonitorLoop(self.system, launch=self._launch, exporter=PrometheusExporter(),
                                tracker=self.tracker)
        self.stopping = threading.Event()
        self.retraining: threading.Thread | None = None
        self.last_step: dict[str, Any] | None = None
        self.failures = 0
        self.thread = threading.Thread(target=self._run, name="raysys-monitor-loop", daemon=True)
        self.thread.start()

    def _run(self) -> None:
        while not self.stopping.is_set():
            try:
                self.last_step = self.loop.step()
                self.failures = 0
            except Exception:  # noqa: BLE001 - logged by the loop; the next interval retries
                self.failures += 1
            self.stopping.wait(self.interval_s)

    def _launch(self, job: dict[str, Any]) -> None:
        """Start a retrain in a worker thread (the policy already made sure none is running)."""
        self.retraining = threading.Thread(target=self._retrain, args=(job,), name="raysys-retrain", daemon=True)
        self.retraining.start()

    def _retrain(self, job: dict[str, Any]) -> None:
        from raysys.monitoring.retrain import retrain, wait_for_labels

        try:
            if job.get("since"):  # an incident: wait for labelled records of the changed world
                wait_for_labels(self.system, job["since"], self.stopping.is_set, self.interval_s)
            result = retrain(self.system, job["trigger"], job["reason"], job["incident"], record=False,
                             since=job.get("since")).to_dict()
        except Exception as error:  # a failed retrain is recorded, the loop goes on
            logger.exception("monitor: retrain %s failed", job["id"])
            result = {"status": "failed", "challenger": False, "trigger": job["trigger"], "incident": job["incident"],
                      "decision": f"retrain failed: {type(error).__name__}: {error}"}
        self.loop.retrain_finished(job, result)

    # ------------------------------------------------------------------ remote methods

    def status(self) -> dict[str, Any]:
        """Whether the loop runs, and the committed state's numbers."""
        state = self.loop.state
        return {"running": self.thread.is_alive() and not self.stopping.is_set(), "pid": os.getpid(),
                "interval_s": self.interval_s, "consecutive_failures": self.failures,
                "retrain_thread_alive": bool(self.retraining and self.retraining.is_alive()),
                "last_step": self.last_step, "last_error": state.last_error}

    def step_now(self) -> dict[str, Any]:
        """Run one step at once (what the interval would do)."""
        return self.loop.step()

    def retrain(self, reason: str) -> dict[str, Any]:
        """A manual retrain through the policy (refused while one runs)."""
        return self.loop.request_retrain(reason)

    def release(self, version: int, reason: str) -> dict[str, Any]:
        """A registered version out as a canary the loop judges (refused while one is judged)."""
        return self.loop.request_release(version, reason)

    def pid(self) -> int:
        """The actor's process id (tests kill it)."""
        return os.getpid()

    def stop(self, timeout_s: float = 30.0) -> bool:
        """Stop stepping, wait for the step in flight, close the sinks and the W&B run."""
        self.stopping.set()
        self.thread.join(timeout_s)
        deadline = time.monotonic() + timeout_s
        with self.loop.lock:
            self.loop.close()
            if self.tracker is not None:
                self.tracker.close()
        return not self.thread.is_alive() and time.monotonic() <= deadline


def monitor_actor_class():
    """``Monitor`` as a Ray actor class: detached-capable, restarted forever, a tenth of a CPU."""
    import ray

    return ray.remote(num_cpus=ACTOR_CPUS, max_restarts=-1, max_concurrency=4)(Monitor)
