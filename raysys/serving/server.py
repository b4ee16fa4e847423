"""The model server: one Ray Serve deployment whose FastAPI app answers predictions in-process.

Every replica holds the versions of its :class:`TrafficPlan` (champion, challenger, shadow) as
:class:`LoadedModel` objects: preprocessing and network in one call, the same code as offline.
A rollout is a new ``user_config``: Serve calls :meth:`ModelServer.reconfigure` on the running
replicas, which load the new versions first and then swap the plan in one assignment, so no
request ever sees a half-applied move and no replica restarts.

Faults never fail a request and never go unseen: a challenger that raises falls back to the
champion, a shadow runs as a background task (kept, and bounded by ``serve.max_shadow_in_flight``:
above it, the copy is dropped), and each is counted, logged and reported to storage by
:class:`~raysys.serving.faults.FaultReporter` (``raysys serve status`` shows the totals). On
graceful shutdown (Serve awaits ``__del__`` after draining requests) the replica waits for its
shadows, writes its prediction log and reports its counts.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

import pandas as pd
from ray import serve

from raysys.modeling.predict import LoadedModel
from raysys.serving import payloads
from raysys.serving.decisions import DecisionRules
from raysys.serving.faults import FaultReporter
from raysys.serving.payloads import Rows
from raysys.serving.prediction_log import PredictionLog
from raysys.serving.traffic import TrafficPlan
from raysys.storage import Storage

SHADOW_WAIT_S = 10.0  # on shutdown, for shadow copies still in flight (they take milliseconds)

@dataclass(frozen=True)
class Served:
    """What a replica serves at one moment: the plan, its loaded versions, the request signature."""

    plan: TrafficPlan
    models: dict[int, LoadedModel]
    signature: dict[str, str]
    rules: DecisionRules | None = None  # decision rules applied to every answer (None: no decisions)


def request_signature(plan: TrafficPlan, models: dict[int, LoadedModel]) -> dict[str, str]:
    """The inputs a request must carry: every column any version of the plan reads.

    A request may be routed to (or copied to) any of them, so it needs all their inputs; a
    column's type is the champion's, then the challenger's, then the shadow's.
    """
    signature: dict[str, str] = {}
    for version in (plan.champion, plan.challenger, plan.shadow):
        if version is not None:
            for column, kind in models[version].signature.items():
                signature.setdefault(column, kind)
    return signature


class BoundedTasks:
    """Background tasks with a reference kept (none is collected mid-flight) and a bound on how many run."""

    def __init__(self, limit: int):
        self.limit = limit
        self.running: set[asyncio.Task] = set()

    def start(self, work: Callable[[], Coroutine[Any, Any, None]]) -> bool:
        """Run ``work()`` in the background; False (and nothing started) when ``limit`` already run."""
        if len(self.running) >= self.limit:
            return False
        task = asyncio.get_running_loop().create_task(work())
        self.running.add(task)
        task.add_done_callback(self.running.discard)
        return True

    async def wait(self, timeout_s: float) -> None:
        """Wait (at most ``timeout_s``) for the running tasks to finish."""
        if self.running:
            await asyncio.wait(set(self.running), timeout=timeout_s)


class ModelServer:
    """Replica state: loaded versions, the traffic plan, batching and the prediction log."""

    def __init__(self, settings: dict[str, Any]):
        self.name: str = settings["model"]
        self.settings = settings  # also read by route extensions (settings["extensions"])
        self.storage = Storage.open(settings["storage_root"])
        self.max_records: int = settings["max_records"]
        self.max_body_bytes: int = settings["max_body_bytes"]
        self.max_string_chars: int = settings["max_string_chars"]
        from raysys.serving.input_checks import InputChecks

        self.input_checks = InputChecks.from_settings(settings["input_checks"])
        from raysys.serving.auth import Guard

        self.guard = Guard.from_settings(self.storage, settings["auth"])
        self.explain: dict[str, Any] = settings.get("explain") or {}  # method, steps (explain: true requests)
        self.batching: bool = settings["batching"]["enabled"]
        self._batched.set_max_batch_size(settings["batching"]["max_batch_size"])
        self._batched.set_batch_wait_timeout_s(settings["batching"]["wait_timeout_s"])
        log = settings["prediction_log"]
        self.log = PredictionLog(self.storage, self.name, log["flush_rows"], log["flush_s"],
                                 log["max_pending_rows"], log["spill_dir"]) if log["enabled"] else None
        from raysys.serving.feedback import FeedbackLog

        self.feedback = FeedbackLog(self.storage, self.name, log["flush_rows"], log["flush_s"],
                                    log["max_pending_rows"], log["spill_dir"])  # labels are never dropped
        self.shadows = BoundedTasks(settings["max_shadow_in_flight"])
        self.faults = FaultReporter(self.storage, settings["app"], serve.get_replica_context().replica_tag,
                                    settings["fault_report_s"], self._log_stats)
        self.served: Served | None = None
        self.reconfigure(settings["initial"])  # the app is built before Serve's first reconfigure

    def reconfigure(self, user_config: dict[str, Any]) -> None:
        """Apply a traffic plan: load what it needs, then swap (Serve calls this in place)."""
        plan = TrafficPlan.from_dict(user_config["plan"])
        artifacts = {int(v): files for v, files in user_config["artifacts"].items()}
        loaded = self.served.models if self.served else {}
        models = {v: loaded.get(v) or self._load(v, artifacts[v]) for v in plan.versions}
        # one assignment: a request sees the old plan or the new one, never a mix
        self.served = Served(plan, models, request_signature(plan, models),
                             DecisionRules.from_dict(user_config.get("rules")))

    def _load(self, version: int, files: dict[str, str]) -> LoadedModel:
        """A version's artifacts straight from storage, checksums verified (no registry database)."""
        from raysys.modeling.registry import read_artifacts

        return LoadedModel(read_artifacts(self.storage, self.name, version, files))

    def __serve_build_asgi_app__(self):
        """The FastAPI app, built per replica from the champion's input signature."""
        from raysys.serving.api import build_api

        return build_api(self)

    async def __del__(self):
        """Graceful shutdown (Serve awaits it once requests are drained): shadows, log, counts."""
        if getattr(self, "faults", None) is None:  # __init__ failed: nothing was served
            return
        await self.shadows.wait(SHADOW_WAIT_S)
        if self.log is not None:
            await self.log.close()
        await self.feedback.close()
        await self.faults.close()

    async def check_health(self) -> None:
        """Serve's periodic health check; it also resumes delivering batches spilled on this node."""
        if self.log is not None:
            self.log.resume()
        self.feedback.resume()

    def _log_stats(self) -> dict[str, int]:
        """Rows written, spilled and lost by the prediction log and (``feedback_…``) the feedback log."""
        feedback = {f"feedback_{name}": value for name, value in self.feedback.stats().items()}
        return {**(self.log.stats() if self.log is not None else {}), **feedback}

    # ------------------------------------------------------------------ predictions

    @property
    def plan(self) -> TrafficPlan:
        """The traffic plan being served."""
        return self.served.plan

    @property
    def champion(self) -> LoadedModel:
        """The model that answers by default."""
        return self.served.models[self.served.plan.champion]

    async def predict(self, rows: Rows, key: str | None, request_id: str,
                      served: Served | None = None, explain: bool = False) -> tuple[int, dict[str, Any]]:
        """The answering version and its answer; the shadow's answer is logged, not returned.

        ``served`` is the snapshot the request was parsed against (default: the current one), so
        a move arriving meanwhile can neither pull a version out from under the request nor
        route it to a version that needs inputs it was not checked for. With rules, the answer
        holds ``decisions``; with ``explain``, the answering version's ``explanations``.
        """
        served, started = served or self.served, time.perf_counter()
        plan, models = served.plan, served.models
        version = plan.route(key, random.random())
        role = "champion" if version == plan.champion else "challenger"
        try:
            result = await self._counted(models[version], version, role, rows)
        except Exception:
            if role == "champion":
                raise
            version = plan.champion  # a failing challenger never fails a request
            result = await self._counted(models[version], version, "champion", rows)
        result = decided(result, rows, served.rules)
        self._log(rows, result, request_id, version, "answer", started, key)
        if plan.shadow is not None:
            shadow = plan.shadow
            if not self.shadows.start(lambda: self._shadow(shadow, models[shadow], rows, request_id, key,
                                                           served.rules)):
                self.faults.count(shadow, "shadow", "dropped")
        if explain:  # on this thread: attribution hooks the shared network for the call
            result = {**result, **self._explained(models[version], rows)}
        return version, result

    def _explained(self, model: LoadedModel, rows: Rows) -> dict[str, Any]:
        """Per record: raw input column → attribution, and the baseline they are measured from."""
        from raysys.modeling.explain import explain

        explanation = explain(model, rows.columns, **self.explain)
        return {"explanations": explanation.attributions, "explanation_baselines": explanation.baselines}

    async def _counted(self, model: LoadedModel, version: int, role: str, rows: Rows) -> dict[str, Any]:
        """``model``'s answer, counted as a request of ``version`` in ``role``; a failure is counted too."""
        self.faults.count(version, role, "requests")
        try:
            result = await self._answer(model, rows)
            payloads.require_finite(result)  # a NaN answer is this version's fault, never sent or logged
            return result
        except Exception as error:
            self.faults.failed(version, role, error)
            raise

    async def _answer(self, model: LoadedModel, rows: Rows) -> dict[str, Any]:
        if not self.batching:
            return answer(model, rows)
        result = await self._batched((model, rows))
        if isinstance(result, Exception):
            raise result
        return result

    @serve.batch(max_batch_size=32, batch_wait_timeout_s=0.0)  # set from the config in __init__
    async def _batched(self, items: list[tuple[LoadedModel, Rows]]) -> list[dict[str, Any] | Exception]:
        """Requests that arrived together, predicted in one call per model; a failure stays in its group."""
        results: list[dict[str, Any] | Exception | None] = [None] * len(items)
        for model in {id(m): m for m, _ in items}.values():
            picked = [i for i, (m, _) in enumerate(items) if m is model]
            parts = [items[i][1] for i in picked]
            try:
                whole = answer(model, Rows.concat(parts, model.signature))
            except Exception as error:  # noqa: BLE001 - handed back to that group's requests only
                for i in picked:
                    results[i] = error
                continue
            start = 0
            for i, part in zip(picked, parts):
                end = start + part.count
                results[i] = {k: (v[start:end] if isinstance(v, list) and k != "classes" else v)
                              for k, v in whole.items()}
                start = end
        return results

    async def _shadow(self, version: int, model: LoadedModel, rows: Rows, request_id: str,
                      key: str | None, rules: DecisionRules | None) -> None:
        started = time.perf_counter()
        try:
            result = await self._counted(model, version, "shadow", rows)
        except Exception:  # noqa: BLE001 - counted and logged; never the client's problem
            return
        self._log(rows, decided(result, rows, rules), request_id, version, "shadow", started, key)

    def _log(self, rows, result, request_id, version, role, started, key) -> None:
        if self.log is not None:
            latency = (time.perf_counter() - started) * 1000
            self.log.add(rows, result, request_id=request_id, version=version, role=role, latency_ms=latency,
                         key=key, at=datetime.now(timezone.utc))


def decided(result: dict[str, Any], rows: Rows, rules: DecisionRules | None) -> dict[str, Any]:
    """The answer with the rules' ``decisions`` beside its predictions (unchanged without rules)."""
    return result if rules is None else {**result, "decisions": rules.decide_answer(result, rows.columns)}


def answer(model: LoadedModel, rows: Rows | pd.DataFrame) -> dict[str, Any]:
    """A model's predictions (and class probabilities) for raw rows (parsed rows or a frame)."""
    output = model.predict(rows.columns if isinstance(rows, Rows) else rows)
    return payloads.answer_from_output(output, model.labels(output), model.task, model.spec.classes)


def server_deployment(settings: dict[str, Any], user_config: dict[str, Any], serve_cfg: Any, code_version: str):
    """The bound Serve application: the deployment options come from the ``serve`` config.

    The deployment's code version is pinned to ``code_version`` (a hash of everything but the
    plan), so that a new plan is a light ``user_config`` update applied in place, as for
    ``serve deploy`` of a config file; Serve's Python API otherwise draws a random version per
    ``serve.run`` and restarts every replica (still without failed requests, but slower).
    """
    auto = serve_cfg.autoscaling
    from raysys.ray_compat import pin_deployment_version

    deployment = serve.deployment(serve.ingress()(ModelServer), name="model_server")
    deployment = pin_deployment_version(deployment, code_version)
    return deployment.options(
        ray_actor_options={"num_cpus": serve_cfg.num_cpus},
        max_ongoing_requests=serve_cfg.max_ongoing_requests,
        autoscaling_config={
            "min_replicas": auto.min_replicas, "max_replicas": auto.max_replicas,
            "initial_replicas": max(1, auto.min_replicas),
            "target_ongoing_requests": auto.target_ongoing_requests,
            "upscale_delay_s": auto.upscale_delay_s, "downscale_delay_s": auto.downscale_delay_s,
            "metrics_interval_s": 0.5, "look_back_period_s": 2.0,
        },
        user_config=user_config,
    ).bind({**settings, "initial": user_config})
