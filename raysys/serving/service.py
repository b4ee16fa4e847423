"""``System.serving``: bring the model server up and down, roll versions out and back, batch predict.

The traffic plan (which versions answer, and how much) is saved under ``serving/<app>/plan.json``
and handed to the running replicas as Serve ``user_config``; registry aliases (champion,
challenger, shadow) and the audit trail follow every move. A move that cannot be applied
(unknown or corrupt version, nothing served yet) raises before anything changes.
"""

from __future__ import annotations

import getpass
import hashlib
import json
import logging
import time
from typing import Any

from raysys import audit
from raysys.config import SystemConfig
from raysys.errors import NotFound, RaysysError
from raysys.modeling.predict import LoadedModel
from raysys.runtime import quiet_serve_logs
from raysys.secrets import mask_config
from raysys.serving import traffic
from raysys.serving.cluster import connect_serving_cluster, take_down
from raysys.serving.decisions import DecisionRules, configured_rules, rules_digest
from raysys.serving.faults import read_fault_counts
from raysys.serving.traffic import TrafficPlan
from raysys.storage import Storage

MODES = ("blue-green", "canary", "shadow")
RULES_FILE = "rules.json"  # serving/<app>/rules.json: the decision rules being served, and their digest
logger = logging.getLogger(__name__)


class ServingService:
    """Online serving and rollouts of the project's model."""

    def __init__(self, config: SystemConfig, storage: Storage, models):
        self.config, self.storage, self.models = config, storage, models
        self.app_name = config.serve.app_name or config.project.name
        self.companions: list[Any] = []  # started by up, stopped by down (System adds the monitor)
        self.extensions: list[str] = []  # "module:function" route installers for the replicas (System adds them)

    # ------------------------------------------------------------------ state

    def plan(self) -> TrafficPlan | None:
        """The saved traffic plan (None before the first deploy)."""
        if not self.storage.exists("serving", self.app_name, "plan.json"):
            return None
        return TrafficPlan.from_dict(self.storage.read_json("serving", self.app_name, "plan.json"))

    def audit(self) -> list[dict[str, Any]]:
        """The audit trail of serving actions, oldest first."""
        return [e for e in audit.read_audit(self.storage) if e.get("app") == self.app_name]

    def prediction_log(self):
        """Every logged prediction of this model (pandas; for small logs and tests)."""
        from raysys.serving.prediction_log import read_prediction_log

        return read_prediction_log(self.storage, self.models.name)

    @property
    def url(self) -> str:
        """Where the HTTP API listens."""
        cfg = self.config.serve
        return f"http://{cfg.host}:{cfg.port}{cfg.route_prefix.rstrip('/')}"

    # ------------------------------------------------------------------ lifecycle

    def up(self, address: str | None = None) -> dict[str, Any]:
        """Deploy the app (the saved plan, else ``serve.model`` as champion) and wait until it answers.

        A version that cannot be served fails before any Ray starts; a failure after ``up``
        started a head stops that head.
        """
        plan = self.plan() or traffic.blue_green(None, self._checked_version(self.config.serve.model))
        rules = self._checked_rules(plan.versions)
        cluster = connect_serving_cluster(self.config, self.storage, self.app_name, address)
        with cluster.stopped_on_failure():
            self._run(plan)
            self._save(plan)
            self._record_rules(rules, True, None, "serve up")
            for companion in self.companions:
                companion.start()
        warning = open_api_warning(self.config.serve.auth, self.url)
        if warning:
            logger.warning(warning)
        audit.record(self.storage, "serve.up", {"app": self.app_name, "plan": plan.to_dict(), "url": self.url,
                                                "auth": self.config.serve.auth})
        return self.status()

    def status(self, address: str | None = None) -> dict[str, Any]:
        """Deployments, replicas, versions and traffic of the running app, and its fault counts."""
        from ray import serve

        connect_serving_cluster(self.config, self.storage, self.app_name, address, start=False)
        app = serve.status().applications.get(self.app_name)
        plan = self.plan()
        faults = read_fault_counts(self.storage, self.app_name)  # every replica's counts, summed
        if app is None:
            return {"app": self.app_name, "status": "NOT_RUNNING", "url": self.url,
                    "plan": plan.to_dict() if plan else None, "deployments": {}, "faults": faults}
        deployments = {name: {"status": str(d.status.value if hasattr(d.status, "value") else d.status),
                              "replicas": {str(getattr(k, "value", k)): v for k, v in d.replica_states.items()},
                              "message": d.message}
                       for name, d in app.deployments.items()}
        return {"app": self.app_name, "status": str(getattr(app.status, "value", app.status)), "url": self.url,
                "plan": plan.to_dict() if plan else None, "traffic": _traffic(plan), "deployments": deployments,
                "faults": faults, "rules": self.rules()}

    def down(self, address: str | None = None) -> dict[str, Any]:
        """Remove the app and stop the local Ray that ``up`` started, if it did (even one it cannot reach)."""
        for companion in self.companions:
            companion.stop()
        result = take_down(self.config, self.storage, self.app_name, address)
        audit.record(self.storage, "serve.down", {"app": self.app_name, **result})
        return {"app": self.app_name, "status": "DELETED", **result}

    # ------------------------------------------------------------------ rollouts

    def deploy(self, model: str, mode: str = "blue-green", percent: float | None = None,
               sticky: bool | None = None, actor: str | None = None, reason: str = "") -> dict[str, Any]:
        """Roll ``model`` (version or alias) out as the champion, a canary or a shadow."""
        if mode not in MODES:
            raise RaysysError(f"deploy mode {mode!r}: use one of {', '.join(MODES)}")
        version = self._checked_version(model)
        current = self.plan()
        if mode == "canary":
            cfg = self.config.serve
            new = traffic.canary(current, version, cfg.canary_percent if percent is None else percent,
                                 cfg.sticky_canary if sticky is None else sticky)
        elif mode == "shadow":
            new = traffic.shadow(current, version)
        else:
            new = traffic.blue_green(current, version)
        return self._move(f"deploy.{mode}", current, new, actor, reason or f"{mode} deploy of v{version}")

    def promote(self, actor: str | None = None, reason: str = "") -> dict[str, Any]:
        """Make the canary's challenger the champion (all traffic)."""
        current = self._require_plan()
        if current.challenger is None:
            raise RaysysError("no canary to promote: deploy one with --canary first")
        new = traffic.blue_green(current, current.challenger)
        return self._move("deploy.promote", current, new, actor, reason or f"promote v{current.challenger}")

    def rollback(self, to: str | None = None, actor: str | None = None, reason: str = "") -> dict[str, Any]:
        """End a canary/shadow, else go back to the previous champion (or to version ``to``)."""
        current = self._require_plan()
        if to is not None:
            new = traffic.blue_green(current, self._checked_version(to))
        elif current.challenger is not None or current.shadow is not None:
            new = traffic.end_canary(current)
        else:
            new = traffic.blue_green(current, self._previous_champion(current.champion))
        return self._move("rollback", current, new, actor, reason or "rollback")

    def _move(self, action: str, current: TrafficPlan | None, new: TrafficPlan, actor: str | None,
              reason: str) -> dict[str, Any]:
        rules = self._checked_rules(new.versions)
        applied = self._apply_if_running(new)
        self._save(new)
        self._record_rules(rules, applied, actor, reason)
        self._move_aliases(current, new, actor, reason)
        audit.record(self.storage, action, {"app": self.app_name, "from": current.to_dict() if current else None,
                                            "to": new.to_dict(), "applied": applied}, actor=actor, reason=reason)
        return {"action": action, "plan": new.to_dict(), "applied_to_running_app": applied}

    def _move_aliases(self, current: TrafficPlan | None, new: TrafficPlan, actor: str | None, reason: str) -> None:
        registry, name, who = self.models.registry, self.models.name, actor or getpass.getuser()
        if current is None or new.champion != current.champion:
            registry.set_alias(name, "champion", new.champion, actor=who, reason=reason)
        for alias in ("challenger", "shadow"):
            version, before = getattr(new, alias), current and getattr(current, alias)
            if version is not None and before != version:
                registry.set_alias(name, alias, version, actor=who, reason=reason)
            elif version is None and before is not None:  # the version left that role: so does the alias
                registry.remove_alias(name, alias, before, actor=who, reason=reason)

    # ------------------------------------------------------------------ feedback

    def feedback(self, input: Any) -> dict[str, Any]:
        """Labels for answered requests in bulk → ``logs/feedback/`` (one Parquet file).

        ``input``: a CSV, Parquet or JSON-lines path, a DataFrame or a list of dicts, with
        ``request_id``, ``label`` and optionally ``row`` (default 0). Checked as a whole first:
        a bad value is an error naming its column and row, and then nothing is written.
        """
        from raysys.serving.feedback import FEEDBACK_DIR, FeedbackLog, as_frame, labels_from_table

        frame, name = as_frame(input)
        cfg = self.config.serve
        labels = labels_from_table(frame, self._label_space(), cfg.max_records, cfg.max_string_chars, name)
        log = cfg.prediction_log
        written = FeedbackLog(self.storage, self.models.name, log.flush_rows, log.flush_s, log.max_pending_rows,
                              log.spill_dir).write_now(labels)
        where = self.storage.path(FEEDBACK_DIR, self.models.name)
        audit.record(self.storage, "feedback.bulk", {"app": self.app_name, "model": self.models.name,
                                                     "rows": written, "input": name})
        return {"model": self.models.name, "accepted": written, "path": where}

    def _label_space(self):
        """The labels the served versions (else ``serve.model``) can have, read from their specs only."""
        from raysys.modeling.artifacts import TrainSpec
        from raysys.modeling.predict import SPEC
        from raysys.modeling.registry import read_artifacts
        from raysys.serving.feedback import LabelSpace

        registry, name, plan = self.models.registry, self.models.name, self.plan()
        specs = []
        for ref in plan.versions if plan else [self.config.serve.model]:
            version = registry.get(name, ref)
            files = read_artifacts(self.storage, name, version.version, {SPEC: version.files[SPEC]})
            specs.append(TrainSpec(**json.loads(files[SPEC])))
        return LabelSpace.of(specs)

    # ------------------------------------------------------------------ batch inference

    def predict_batch(self, input: str, output: str, model: str = "champion", id_column: str | None = None,
                      fmt: str = "parquet") -> dict[str, Any]:
        """Predict every row of ``input`` with a Ray Data actor pool; write ``output`` files."""
        import ray.data

        from raysys.native_stderr import ray_core_lines_to_log_files
        from raysys.runtime import ensure_ray, user_errors
        from raysys.serving.batch import ACTOR_CPUS, RawBatchPredictor, kept_columns, read_input

        if fmt not in ("parquet", "csv"):
            raise RaysysError(f"predict --format {fmt}: use parquet or csv")
        registry = self.models.registry
        version = registry.get(self.models.name, model)
        files = registry.load_files(version)
        needed = LoadedModel(files).state.input_columns
        rules = self._checked_rules([version.version])
        ensure_ray(self.config.ray, self.config.storage)
        with user_errors("predict"):
            dataset = read_input(input)
            columns = dataset.columns()
            missing = [c for c in needed if c not in columns]
            if missing:
                raise RaysysError(f"predict --input {input}: missing model input column(s) {', '.join(missing)}")
            predicted = dataset.map_batches(
                RawBatchPredictor, fn_constructor_args=(files, version.version, kept_columns(columns, id_column),
                                                        rules.to_dict() if rules else None),
                batch_format="pandas", compute=ray.data.ActorPoolStrategy(min_size=1, max_size=2), num_cpus=ACTOR_CPUS)
            with ray_core_lines_to_log_files():  # Ray Data's actor-pool warning (raysys.native_stderr)
                getattr(predicted, f"write_{fmt}")(output)
            rows = getattr(ray.data, f"read_{fmt}")(output).count()
        audit.record(self.storage, "predict.batch", {"model": version.version, "input": input, "output": output,
                                                     "rows": rows})
        return {"model": self.models.name, "model_version": version.version, "rows": rows, "output": output}

    # ------------------------------------------------------------------ helpers

    def _checked_rules(self, versions: list[int]) -> DecisionRules | None:
        """The configured decision rules, checked against every version they will decide for (ConfigError)."""
        from raysys.data.features import FeatureState
        from raysys.modeling.artifacts import TrainSpec
        from raysys.modeling.predict import FEATURES, SPEC
        from raysys.modeling.registry import read_artifacts

        rules = configured_rules(self.config.decisions)
        registry, name = self.models.registry, self.models.name
        for version in versions if rules is not None else ():
            files = registry.get(name, version).files
            read = read_artifacts(self.storage, name, version, {f: files[f] for f in (SPEC, FEATURES)})
            spec = TrainSpec(**json.loads(read[SPEC]))
            rules.check(spec.task, spec.classes, FeatureState.from_dict(json.loads(read[FEATURES])).inputs, version)
        return rules

    def _record_rules(self, rules: DecisionRules | None, applied: bool, actor: str | None, reason: str) -> None:
        """Save the rules the deployment serves; a change is audited (``serve.rules``, old and new digest)."""
        saved = self.rules() or {"digest": None}
        digest = rules_digest(rules)
        if saved["digest"] == digest:
            return
        self.storage.write_json({"digest": digest, "rules": rules.to_dict() if rules else None},
                                "serving", self.app_name, RULES_FILE)
        audit.record(self.storage, "serve.rules", {"app": self.app_name, "from": saved["digest"], "to": digest,
                                                   "rules": rules.to_dict() if rules else None, "applied": applied},
                     actor=actor, reason=reason)

    def rules(self) -> dict[str, Any] | None:
        """The decision rules the deployment serves (``{"digest", "rules"}``; None before any)."""
        if not self.storage.exists("serving", self.app_name, RULES_FILE):
            return None
        return self.storage.read_json("serving", self.app_name, RULES_FILE)

    def _checked_version(self, ref: str | int) -> int:
        """A registry version that exists and loads (so a bad one changes nothing)."""
        registry = self.models.registry
        version = registry.get(self.models.name, ref)
        LoadedModel(registry.load_files(version))
        return version.version

    def _require_plan(self) -> TrafficPlan:
        plan = self.plan()
        if plan is None:
            raise RaysysError("nothing is deployed yet: run `raysys serve up` or `raysys deploy --model VERSION`")
        return plan

    def _previous_champion(self, champion: int) -> int:
        moves = [m for m in self.models.registry.alias_history(self.models.name) if m.alias == "champion"]
        for move in reversed(moves):
            if move.to_version == champion and move.from_version is not None:
                return move.from_version
        raise NotFound(f"v{champion} has no previous champion to roll back to; use --to VERSION")

    def _save(self, plan: TrafficPlan) -> None:
        self.storage.write_json(plan.to_dict(), "serving", self.app_name, "plan.json")

    def _apply_if_running(self, plan: TrafficPlan) -> bool:
        import ray

        if not ray.is_initialized():
            try:
                connect_serving_cluster(self.config, self.storage, self.app_name, None, start=False)
            except RaysysError:
                return False
        from ray import serve

        if self.app_name not in serve.status().applications:
            return False
        self._run(plan, move=True)
        return True

    def _run(self, plan: TrafficPlan, move: bool = False) -> None:
        """``serve.run`` the app with this plan; an unchanged deployment is reconfigured in place.

        A ``move`` of a running app skips starting Serve, and waits for the app with
        :func:`wait_app_running` instead of Serve's own wait (which polls once a second).
        """
        from ray import serve

        cfg = self.config.serve
        quiet_serve_logs()
        if not move:
            serve.start(http_options={"host": cfg.host, "port": cfg.port})
            quiet_serve_logs()  # Serve may reconfigure its logger when it starts
        app = self.application(plan)
        if move:
            serve.run_many([serve.RunTarget(app, name=self.app_name, route_prefix=cfg.route_prefix)],
                           wait_for_applications_running=False)
        else:
            serve.run(app, name=self.app_name, route_prefix=cfg.route_prefix, blocking=False)
        wait_app_running(self.app_name)

    def application(self, plan: TrafficPlan | None = None):
        """The Serve application (not started) serving ``plan``: by default the saved plan, else
        ``serve.model`` as the champion (``serve up`` runs it; ``serve build`` hands it to ``serve deploy``)."""
        from raysys.serving.server import server_deployment

        cfg = self.config.serve
        plan = plan or self.plan() or traffic.blue_green(None, self._checked_version(cfg.model))
        settings = {"model": self.models.name, "storage_root": self.storage.uri, "max_records": cfg.max_records,
                    "batching": cfg.batching.model_dump(), "prediction_log": cfg.prediction_log.model_dump(),
                    "app": self.app_name, "max_shadow_in_flight": cfg.max_shadow_in_flight,
                    "fault_report_s": cfg.fault_report_s, "max_body_bytes": cfg.max_body_bytes,
                    "max_string_chars": cfg.max_string_chars,
                    "auth": {"mode": cfg.auth, "refresh_s": cfg.auth_refresh_s},
                    "extensions": self.extensions, "config": mask_config(self.config),  # secrets masked
                    "explain": {"method": self.config.explain.method, "steps": self.config.explain.steps},
                    "input_checks": {"mode": cfg.input_checks, "columns": {
                        n: c.model_dump() for n, c in self.config.data.schema_.columns.items()}}}
        hashed = {k: v for k, v in settings.items() if k != "config"}  # other sections: no replica restart
        code = hashlib.sha256(json.dumps([hashed, cfg.model_dump(mode="json")], sort_keys=True).encode())
        registry, name = self.models.registry, self.models.name
        artifacts = {str(v): registry.get(name, v).files for v in plan.versions}  # replicas need no database
        rules = configured_rules(self.config.decisions)  # in user_config: a change is applied in place
        return server_deployment(settings, {"plan": plan.to_dict(), "artifacts": artifacts,
                                              "rules": rules.to_dict() if rules else None}, cfg,
                                 code_version=code.hexdigest()[:16])


def open_api_warning(auth: str, url: str) -> str | None:
    """The warning ``serve up`` logs when ``serve.auth: off`` leaves the API open to anyone."""
    if auth != "off":
        return None
    return f"warning: serve.auth is off: {url} answers every request without an API key"


def wait_app_running(app_name: str, timeout_s: float = 120.0, poll_s: float = 0.1) -> None:
    """Block until the Serve application is RUNNING; a failed deploy or a timeout is an error."""
    from ray import serve

    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        app = serve.status().applications.get(app_name)
        status = str(getattr(app.status, "value", app.status)) if app else "MISSING"
        if status == "RUNNING":
            return
        if status == "DEPLOY_FAILED":
            raise RaysysError(f"serve: {app_name} failed to deploy: {app.message}")
        time.sleep(poll_s)
    raise RaysysError(f"serve: {app_name} not running after {timeout_s:.0f} s")


def _traffic(plan: TrafficPlan | None) -> dict[str, Any]:
    if plan is None:
        return {}
    share = plan.canary_percent if plan.challenger is not None else 0.0
    out = {f"v{plan.champion} (champion)": f"{100 - share:g}%"}
    if plan.challenger is not None:
        out[f"v{plan.challenger} (challenger)"] = f"{share:g}%" + (" sticky" if plan.sticky else "")
    if plan.shadow is not None:
        out[f"v{plan.shadow} (shadow)"] = "copy of 100%, never answers"
    return out

