"""One monitoring step, and what it needs from the layers below: testable without an actor.

:meth:`MonitorLoop.step` reads the prediction-log and feedback files written since the last step
(cursors, never a re-read), cuts windows, joins labels, computes each window's per-version
metrics and live quality, tests it for drift against the serving champion's own training split,
applies the alert rules, updates the incidents, decides on retraining and judges a running
canary. It then commits the state with the step's effects *pending* (alert deliveries, audit
events, a retrain to launch, a release move), carries them out and commits again
(:mod:`raysys.monitoring.state`). A step that fails (storage down, a read error) changes nothing:
the committed state is kept and the next step reads the same files again.

Retraining runs off the step (``launch`` hands it to the actor's worker thread); its result comes
back through :meth:`MonitorLoop.retrain_finished` and is taken into the state by the next step.
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from raysys import audit
from raysys.errors import NotFound, RaysysError
from raysys.monitoring.alerts import error_rates
from raysys.monitoring.state import MonitorState, StateStore
from raysys.serving.faults import read_fault_counts

logger = logging.getLogger(__name__)

ACTOR = "raysys-monitor"
CATEGORICAL_TYPES = ("category", "str", "string", "bool")


@dataclass
class Champion:
    """What the monitor compares production with: the serving champion and its training data."""

    version: int
    task: str
    classes: list[Any] | None
    inputs: dict[str, str]  # raw input column → declared type
    offline_metric: dict[str, Any] | None  # {"version", "name", "value"}: its primary test metric
    lineage: dict[str, Any]
    detector: Any  # raysys.monitoring.drift.DriftDetector


def feature_types(inputs: dict[str, str]) -> dict[str, str]:
    """The drift test family of each raw input column: numeric or categorical."""
    return {name: "categorical" if kind in CATEGORICAL_TYPES else "numeric" for name, kind in inputs.items()}


def load_champion(system, version: int) -> Champion:
    """The serving champion's model, lineage and a drift detector over its own training split."""
    from raysys.data.features import transform_values
    from raysys.modeling.metrics import primary_metric
    from raysys.modeling.predict import LoadedModel
    from raysys.monitoring.drift import build_drift_detector

    cfg = system.config.monitor
    registry = system.models.registry
    record = registry.get(system.models.name, version)
    dataset_version = record.lineage.get("dataset_version")
    if not dataset_version:
        raise RaysysError(f"monitor: v{version} has no dataset version in its lineage: no drift reference")
    model = LoadedModel(registry.load_files(record))
    reference = system.data.sample(dataset_version, "train", cfg.reference_rows)
    label = model.spec.label
    output = model.predict(reference)
    predictions = np.asarray([str(v) for v in model.labels(output)]) if model.task != "regression" else output
    labels = reference[label].astype(str).to_numpy() if model.task != "regression" else reference[label].to_numpy()
    inputs = dict(model.state.inputs)
    detector = build_drift_detector(
        cfg.drift, reference[list(inputs)], feature_types(inputs),
        lambda frame: transform_values(model.state, frame), predictions if cfg.drift.predictions else None,
        labels if cfg.drift.labels else None)
    name, _ = primary_metric(model.task)
    value = record.metrics.get(name)
    offline = {"version": version, "name": name, "value": value} if value is not None else None
    return Champion(version, model.task, model.spec.classes, inputs, offline, dict(record.lineage), detector)


def effect(kind: str, **details: Any) -> dict[str, Any]:
    """A pending effect with an id (a resumed step recognises one already carried out)."""
    return {"id": uuid.uuid4().hex, "kind": kind, **details}


class MonitorLoop:
    """The monitor's state and one step of the loop; the actor calls :meth:`step` every interval."""

    def __init__(self, system, launch: Callable[[dict[str, Any]], None] | None = None,
                 exporter: Any = None, tracker: Any = None, clock: Callable[[], float] = time.time):
        self.system, self.config = system, system.config.monitor
        self.app = system.serving.app_name
        self.model = system.models.name
        self.store = StateStore(system.storage, self.app)
        self.launch, self.exporter, self.tracker, self.clock = launch, exporter, tracker, clock
        self.lock = threading.RLock()  # step, a manual retrain and a finished retrain never interleave
        self.state = self.store.load()
        self.champion: Champion | None = None
        self.sinks = None
        self._finished: list[dict[str, Any]] = []  # retrain results not yet taken into the state
        self._taken = 0
        self._resumed = False
        self._orphan = (self.state.retrain.get("running") or {}).get("id")  # a retrain a dead process ran
        self._recovering = bool(self.state.pending)  # effects a killed monitor left: check before redoing

    # ------------------------------------------------------------------ the step

    def step(self, now: float | None = None) -> dict[str, Any]:
        """Read, window, measure, test, alert, decide; commit; carry out; export. Returns the step's summary."""
        with self.lock:
            now = self.clock() if now is None else now
            work = self.state.copy()
            try:
                if not self._resumed:
                    self._resume(work, now)
                work.started_at = work.started_at or now
                if work.pending:
                    self._carry_out(work)  # effects a killed monitor committed but did not finish
                self._recovering = False
                closed = self._advance(work, now)
                work.steps += 1
                work.updated_at, work.last_error = now, None
                for summary in closed:
                    self.store.write_window(summary)
                self.store.save(work)  # commit: cursors, windows, incidents, pending effects
                self.state = work
                del self._finished[:self._taken]  # retrain results now in the committed state
                self._carry_out(work)
            except Exception as error:
                self._rewind_detector()
                self.state.last_error = f"{type(error).__name__}: {error}"
                logger.warning("monitor %s: step failed (retried next interval): %s", self.app, self.state.last_error)
                raise
        self._export(closed)
        return {"windows": [s["seq"] for s in closed], "steps": work.steps, "pending": len(work.pending)}

    def _advance(self, work: MonitorState, now: float) -> list[dict[str, Any]]:
        """Everything a step computes, on ``work`` (the committed state is untouched until it succeeds)."""
        from raysys.monitoring.alerts import evaluate_rules, fault_delta
        from raysys.monitoring.incidents import IncidentBook
        from raysys.monitoring.logreader import FEEDBACK, PREDICTIONS, LogCursor, read_new
        from raysys.monitoring.quality import summary_metrics, window_metrics
        from raysys.monitoring.windows import LabelBook, Windower

        storage, cfg = self.system.storage, self.config
        champion = self._champion(work)
        self._take_finished(work, now)
        predictions, cursor = read_new(storage, f"{PREDICTIONS}/{self.model}", _cursor(LogCursor, work.predictions_cursor))
        feedback, feedback_cursor = read_new(storage, f"{FEEDBACK}/{self.model}",
                                             _cursor(LogCursor, work.feedback_cursor))
        labels = LabelBook.from_dict(work.labels, cfg.feedback_ttl_s)
        windower = Windower.from_dict(cfg.window, work.windower)
        resolve_after = cfg.alerts.rules.resolve_after
        incidents = (IncidentBook.from_dict(work.incidents, resolve_after) if work.incidents
                     else IncidentBook(resolve_after))
        labels.add_feedback(feedback, now)
        joined = labels.join(predictions, now) if len(predictions) else predictions
        if len(predictions):
            work.last_traffic_at = now
        faults = read_fault_counts(storage, self.app)
        delta = fault_delta(work.faults or None, faults)  # since the last step: every window closed now
        closed = []
        for window in [*windower.add(joined), *windower.flush_due(now)]:
            labelled = labels.labelled(last=self._quality_rows())
            metrics = window_metrics(window.frame, champion.task, champion.classes, labelled=labelled)
            overall = summary_metrics(window.frame, champion.task, champion.classes, labelled=labelled)
            drift = self._drift(champion, window.frame)
            summary = {"seq": window.seq, "start": window.start, "end": window.end, "rows": window.rows,
                       "closed_by": window.closed_by, "task": champion.task, "champion": champion.version,
                       "overall": overall, "versions": metrics, "errors": error_rates(delta), "drift": drift,
                       "labels": labels.stats(), "last_request_at": work.last_traffic_at or work.started_at}
            findings = evaluate_rules(cfg.alerts.rules, summary, drift, champion.offline_metric, delta, now)
            changes = incidents.observe(findings, window.seq, window.end)  # same ids if a window is redone
            summary["findings"] = [_plain(f) for f in findings]
            work.add_window(summary)
            closed.append(summary)
            for change in changes:
                work.pending.append({"id": change.id, "kind": "alert", "change": change.to_dict()})
                self._maybe_retrain(work, change.to_dict(), now)
        if closed:
            work.faults = faults
        elif cfg.alerts.rules.no_traffic_s is not None:  # no window closes without traffic: check for none
            idle = {"versions": {}, "last_request_at": work.last_traffic_at or work.started_at}
            for change in incidents.observe_idle(evaluate_rules(cfg.alerts.rules, idle, None, None, None, now), now):
                work.pending.append({"id": change.id, "kind": "alert", "change": change.to_dict()})
        self._maybe_scheduled_retrain(work, now)
        self._judge_release(work, champion, labels, now)
        work.predictions_cursor, work.feedback_cursor = cursor.to_dict(), feedback_cursor.to_dict()
        work.labels, work.windower, work.incidents = labels.to_dict(), windower.to_dict(), incidents.to_dict()
        work.detector = _detector_state(champion)
        return closed

    def _quality_rows(self) -> int:
        """Labelled records per version that a window's live quality is computed over."""
        return max(self.config.alerts.rules.min_labelled, self.config.window.rows or 0)

    def _drift(self, champion: Champion, frame: pd.DataFrame) -> dict[str, Any] | None:
        if len(frame) < self.config.window.min_rows:
            return None
        labelled = frame["_label"].dropna() if "_label" in frame else pd.Series([], dtype=object)
        report = champion.detector.test(frame[list(champion.inputs)], predictions=frame["_prediction"].to_numpy(),
                                        labels=labelled.to_numpy() if len(labelled) else None)
        return report.to_dict()

    # ------------------------------------------------------------------ the champion and its reference

    def _champion(self, work: MonitorState) -> Champion:
        """The serving champion (from the traffic plan); its reference is loaded again when it changes."""
        plan = self.system.serving.plan()
        if plan is None:
            raise NotFound(f"monitor: nothing is served for '{self.app}': run `raysys serve up` first")
        if self.champion is None or self.champion.version != plan.champion:
            self.champion = load_champion(self.system, plan.champion)
            state = work.detector if work.detector and work.detector.get("champion") == plan.champion else None
            if state and hasattr(self.champion.detector, "restore"):
                self.champion.detector.restore(state["state"])
        return self.champion

    def _rewind_detector(self) -> None:
        """After a failed step: an online detector goes back to its committed state (the window is redone)."""
        committed = self.state.detector or {}
        if self.champion is not None and committed.get("champion") in (None, self.champion.version) \
                and hasattr(self.champion.detector, "restore"):
            self.champion.detector.restore(committed.get("state"))

    # ------------------------------------------------------------------ retraining

    def request_retrain(self, reason: str, now: float | None = None) -> dict[str, Any]:
        """A manual retrain: the policy decides (never two at once); allowed → committed and launched."""
        with self.lock:
            now = self.clock() if now is None else now
            work = self.state.copy()
            decision = self._decide(work, "manual", f"manual:{uuid.uuid4().hex[:12]}", reason, None, now)
            self.store.save(work)
            self.state = work
            self._carry_out(work)
            return decision

    def request_release(self, version: int, reason: str, now: float | None = None) -> dict[str, Any]:
        """A registered version out as a judged canary (promoted or rolled back like a retrained one)."""
        from raysys.monitoring.release import Release

        with self.lock:
            now = self.clock() if now is None else now
            release = Release.from_dict(self.state.release.get("release"))
            plan = self.system.serving.plan()
            if release.phase == "canary":
                raise RaysysError(f"monitor: a canary of v{release.version} is already being judged")
            if plan is None:
                raise RaysysError(f"monitor: nothing is served for '{self.app}'")
            if version == plan.champion:
                raise RaysysError(f"monitor: v{version} is the champion already")
            self.system.models.registry.get(self.model, version)  # NotFound names an unknown version
            work = self.state.copy()
            work.release = {"release": release.canary(version, plan.champion, now, None).to_dict()}
            work.pending.append(effect("audit", action="monitor.release.requested", reason=reason,
                                       details={"model_version": version, "champion_version": plan.champion,
                                                "incident": None}))
            work.pending.append(effect("release"))
            self.store.save(work)
            self.state = work
            self._carry_out(work)
            return {"release": Release.from_dict(work.release["release"]).to_dict()}

    def _maybe_retrain(self, work: MonitorState, change: dict[str, Any], now: float) -> None:
        """An incident just opened by a drift or quality rule is a retrain trigger (keyed by the incident)."""
        incident = change["incident"]
        trigger = _trigger_of(incident.get("rule", ""))
        subject = incident.get("subject") or ""
        if change["kind"] != "opened" or trigger is None or subject not in ("", f"v{self.champion.version}"):
            return  # a canary's own quality is the release's business, not a reason to retrain
        self._decide(work, trigger, f"incident:{incident['id']}", incident.get("message") or trigger,
                     incident["id"], now, since=incident.get("first_seen"))

    def _maybe_scheduled_retrain(self, work: MonitorState, now: float) -> None:
        from raysys.monitoring.policy import RetrainPolicy

        trigger = RetrainPolicy(self.config.retrain).scheduled(now)
        if trigger is not None and trigger.key not in (work.retrain.get("policy") or {}).get("keys", []):
            self._decide(work, "schedule", trigger.key, f"every {self.config.retrain.schedule_s:g} s", None, now)

    def _decide(self, work: MonitorState, trigger: str, key: str, reason: str, incident: str | None,
                now: float, since: str | None = None) -> dict[str, Any]:
        """One retrain decision (the policy); allowed → the retrain is running and its launch pending.

        ``since``: an incident's first sight; the retrain trains on records answered after it.
        """
        from raysys.monitoring.policy import RetrainPolicy, RetrainState, Trigger

        policy_state = RetrainState.from_dict(work.retrain.get("policy"))
        decision = RetrainPolicy(self.config.retrain).decide(Trigger(trigger, key), policy_state, now)
        result = {"allowed": decision.allowed, "reason": decision.reason, "trigger": trigger, "key": key}
        if not decision.allowed:
            if not decision.reason.startswith("already handled"):  # asked twice: recorded once
                work.pending.append(effect("audit", action="monitor.retrain.skipped", reason=reason,
                                           details={"trigger": trigger, "key": key, "incident": incident,
                                                    "decision": decision.reason}))
            return result
        job = {"id": uuid.uuid4().hex[:12], "trigger": trigger, "key": key, "reason": reason,
               "incident": incident, "since": since, "started_at": now}
        work.retrain["policy"] = policy_state.started(key, now).to_dict()
        work.retrain["running"] = job
        work.pending.append(effect("audit", action="monitor.retrain.start", reason=reason,
                                   details={"trigger": trigger, "key": key, "incident": incident,
                                            "retrain": job["id"]}))
        work.pending.append(effect("launch", job=job))
        return {**result, "retrain": job["id"]}

    def retrain_finished(self, job: dict[str, Any], result: dict[str, Any]) -> None:
        """Called by the retrain worker: the next step takes the result into the state."""
        with self.lock:
            self._finished.append({"job": job, "result": result})

    def _take_finished(self, work: MonitorState, now: float) -> None:
        """Finished retrains into ``work`` (dropped from the queue only once the step commits)."""
        self._taken = len(self._finished)
        for done in self._finished[:self._taken]:
            job, result = done["job"], done["result"]
            running = work.retrain.get("running") or {}
            if running.get("id") == job["id"]:
                self._finish_running(work)
            work.retrain["last"] = {**job, "finished_at": now, **{k: result.get(k) for k in (
                "status", "model_version", "dataset_version", "run_id", "challenger", "decision")}}
            action = "monitor.retrain.skipped" if result.get("status") == "not_enough_labels" else "monitor.retrain.done"
            work.pending.append(effect("audit", action=action, reason=job["reason"],
                                       details={**result, "key": job["key"], "retrain": job["id"]}))
            if result.get("challenger") and self.config.retrain.auto_release:
                self._start_canary(work, int(result["model_version"]), job["incident"], now)

    def _resume(self, work: MonitorState, now: float) -> None:
        """After a restart: a retrain the old process was running died with it (it is not run twice)."""
        self._resumed = True
        running = work.retrain.get("running")
        if running and running["id"] == self._orphan:
            self._finish_running(work)
            work.retrain["last"] = {**running, "finished_at": now, "status": "interrupted"}
            work.pending.append(effect("audit", action="monitor.retrain.done", reason=running["reason"],
                                       details={"trigger": running["trigger"], "incident": running["incident"],
                                                "retrain": running["id"], "status": "interrupted",
                                                "decision": "the monitor restarted while it ran; not repeated"}))

    @staticmethod
    def _finish_running(work: MonitorState) -> None:
        from raysys.monitoring.policy import RetrainState

        work.retrain["running"] = None
        work.retrain["policy"] = RetrainState.from_dict(work.retrain.get("policy")).finished().to_dict()

    # ------------------------------------------------------------------ release

    def _start_canary(self, work: MonitorState, version: int, incident: str | None, now: float) -> None:
        """A better retrained model goes out as a canary (E's release machine; the move is pending)."""
        from raysys.monitoring.release import Release

        release = Release.from_dict(work.release.get("release"))
        if release.phase == "canary":
            return  # one canary at a time: this model stays registered as challenger only
        plan = self.system.serving.plan()
        champion = plan.champion if plan is not None else None
        work.release = {"release": release.canary(version, champion, now, incident).to_dict()}
        work.pending.append(effect("release"))

    def _judge_release(self, work: MonitorState, champion: Champion, labels, now: float) -> None:
        """A running canary: judged on its labelled traffic and errors (E's test); a decision is a pending move."""
        from raysys.monitoring.release import Release, fault_delta, judge_canary, live_stats

        release = Release.from_dict(work.release.get("release"))
        if release.phase != "canary" or not release.applied:
            return
        faults = read_fault_counts(self.system.storage, self.app)
        sums = {str(v): stats for v, stats in live_stats(labels.labelled(since=release.started_at),
                                                         champion.task).items()}
        sides = {}
        for role, version in (("champion", release.champion), ("challenger", release.version)):
            sides[role] = {**sums.get(str(version), {"labelled": 0}),
                           **fault_delta(faults, release.fault_baseline, version, role)}
        verdict = judge_canary(sides["champion"], sides["challenger"], self.config.release, champion.task,
                               release.started_at, now)
        work.release["verdict"] = verdict.to_dict()
        decided = release.decide(verdict, now)
        if decided is not release:
            work.release["release"] = decided.to_dict()
            work.pending.append(effect("release"))

    # ------------------------------------------------------------------ effects

    def _carry_out(self, work: MonitorState) -> None:
        """Carry out the pending effects in order; each one done is dropped and the state committed."""
        from raysys.monitoring.incidents import IncidentBook, write_incidents

        while work.pending:
            item = work.pending[0]
            getattr(self, f"_do_{item['kind']}")(work, item)
            work.pending.pop(0)
            self.store.save(work)
        if work.incidents:
            write_incidents(self.system.storage, self.app, IncidentBook.from_dict(work.incidents))

    def _do_alert(self, work: MonitorState, item: dict[str, Any]) -> None:
        from raysys.monitoring.incidents import Change

        change = item["change"]
        incident = change["incident"]
        action = {"opened": "monitor.alert.open", "resolved": "monitor.alert.resolve"}.get(change["kind"])
        if action and not self._audited(item["id"]):
            audit.record(self.system.storage, action,
                         {"app": self.app, "effect": item["id"], "incident": incident["id"], "rule": incident["rule"],
                          "severity": incident["severity"], "window": change["window_seq"],
                          "evidence": incident.get("evidence")}, actor=ACTOR, reason=incident.get("message", ""))
        self._sinks().send(Change.from_dict(change))  # the sinks deliver a change id once

    def _do_audit(self, work: MonitorState, item: dict[str, Any]) -> None:
        if not self._audited(item["id"]):
            audit.record(self.system.storage, item["action"], {"app": self.app, "effect": item["id"],
                                                               **item["details"]},
                         actor=ACTOR, reason=item.get("reason", ""))

    def _do_launch(self, work: MonitorState, item: dict[str, Any]) -> None:
        if self.launch is not None:
            self.launch(item["job"])

    def _do_release(self, work: MonitorState, item: dict[str, Any]) -> None:
        from raysys.monitoring.release import Release, apply_release

        release = Release.from_dict(work.release.get("release"))  # idempotent: checks the served plan first
        work.release["release"] = apply_release(self.system, release).to_dict()

    def _audited(self, effect_id: str) -> bool:
        """Whether an effect's audit event exists (only searched for effects a killed monitor left)."""
        if not self._recovering:
            return False
        return any(e.get("effect") == effect_id for e in audit.read_audit(self.system.storage, "monitor."))

    def _sinks(self):
        if self.sinks is None:
            from raysys.monitoring.sinks import AlertSinks

            self.sinks = AlertSinks(self.config.alerts.sinks, self.system.storage, self.app,
                                    wandb_run=getattr(self.tracker, "wandb", None))
        return self.sinks

    def open_incidents(self) -> int:
        """How many incidents are open (committed state)."""
        from raysys.monitoring.incidents import IncidentBook

        return len(IncidentBook.from_dict(self.state.incidents).open()) if self.state.incidents else 0

    # ------------------------------------------------------------------ export

    def _export(self, closed: list[dict[str, Any]]) -> None:
        """Prometheus gauges and the W&B log of each closed window (never fails the step)."""
        for summary in closed:
            for sink in (self.exporter, self.tracker):
                if sink is None:
                    continue
                try:
                    sink.window(self.app, summary, self.open_incidents())
                except Exception as error:  # noqa: BLE001 - exporting must never stop the monitor
                    logger.warning("monitor %s: could not export window %s: %s", self.app, summary["seq"], error)

    def close(self) -> None:
        """Stop the alert sinks' delivery thread (undelivered alerts stay in the outbox)."""
        if self.sinks is not None:
            self.sinks.close()


def _cursor(cls, data: dict[str, Any] | None):
    return cls.from_dict(data) if data else cls()


def _detector_state(champion: Champion) -> dict[str, Any] | None:
    """The online detector's state, tagged with the champion it belongs to (JSON-able)."""
    state = champion.detector.state() if hasattr(champion.detector, "state") else None
    return {"champion": champion.version, "state": state} if state is not None else None


def _trigger_of(rule: str) -> str | None:
    """The retrain trigger an incident's rule stands for (drift, quality), None for other rules."""
    return "drift" if rule.startswith("drift") else "quality" if rule.startswith("quality") else None


def _plain(value: Any) -> Any:
    """A finding, change or incident as a JSON-able dict."""
    if isinstance(value, dict):
        return value
    if hasattr(value, "to_dict"):
        return value.to_dict()
    from dataclasses import asdict, is_dataclass

    return asdict(value) if is_dataclass(value) else dict(value)
