"""Model cards: what one registered model version is, how it was made and how it did in production.

:func:`card_data` reads everything the system recorded about a version (the registry's metrics,
lineage and params, the dataset manifest, the training run, the monitor's windows and incidents,
the audit log and the alias history, ``importance.json`` when registered with the version) into
one plain dict; :func:`render_card` turns that dict into Markdown and reads nothing. The metrics
beside the trivial baseline and per slice come from an evaluation of the version on the test split
of its own dataset version (an ``evaluate`` run, on Ray). ``System.card(version)`` and
``raysys models card VERSION`` use both.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from raysys import audit
from raysys.data.store import DATASETS, MANIFEST, DatasetStore
from raysys.errors import NotFound
from raysys.modeling.explain import IMPORTANCE
from raysys.modeling.metrics import SKIPPED
from raysys.modeling.tracking import load_run
from raysys.secrets import mask_source, mask_values

RELEASE_ACTIONS = ("serve.up", "deploy.", "rollback", "monitor.release")
MAX_STAT_COLUMNS = 40
NO_HISTORY = "No production history: this version has not served a monitored window."


@dataclass
class ModelCard:
    """A model card: its data (:func:`card_data`) and its Markdown (:func:`render_card`)."""

    data: dict[str, Any]

    @property
    def markdown(self) -> str:
        """The card as Markdown."""
        return render_card(self.data)

    def write(self, path: str | Path) -> Path:
        """Write the Markdown to ``path`` (folders created) and return it."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(self.markdown, encoding="utf-8")
        return path

    def _repr_markdown_(self) -> str:
        return self.markdown


# ---------------------------------------------------------------------------------- readers


def model_card(system, ref: str) -> ModelCard:
    """The card of model version ``ref`` (number, ``latest`` or alias) of the system's model."""
    return ModelCard(card_data(system, ref))


def card_data(system, ref: str) -> dict[str, Any]:
    """Everything the card shows, read from the registry, storage, runs, monitor and audit."""
    version = system.models.show(ref)  # NotFound naming the version and the known ones
    lineage = version.lineage
    manifest = _manifest(system, lineage.get("dataset"), lineage.get("dataset_version"))
    evaluation = None
    if manifest is not None:
        evaluation = system.models.evaluate(str(version.version), ref=manifest["version"], split="test")
    app = system.serving.app_name
    run = _training_run(system, version.run_id or lineage.get("run_id"))
    return {
        "model": {"name": version.name, "version": version.version, "created_at": version.created_at,
                  "aliases": version.aliases, "description": version.description,
                  "files": sorted(version.files)},
        "project": {"name": system.config.project.name, "description": system.config.project.description,
                    "intended_use": system.config.project.intended_use},
        "lineage": mask_values(lineage),
        "data": _data_section(system, manifest, lineage, run),
        "evaluation": evaluation,
        "training": {"params": version.params, "run": run and {k: v for k, v in run.items() if k != "config"}},
        "importance": system.models.importance(str(version.version)),  # importance.json, or None
        "production": _production(system, app, version.version),
        "releases": _releases(system, app, version.name, version.version),
    }


def _manifest(system, name: str | None, dataset_version: str | None) -> dict[str, Any] | None:
    if not name or not dataset_version or not system.storage.exists(DATASETS, name, dataset_version, MANIFEST):
        return None
    return DatasetStore(system.storage).load(name, dataset_version).to_dict()


def _data_section(system, manifest: dict[str, Any] | None, lineage: dict[str, Any],
                  run: dict[str, Any] | None) -> dict[str, Any]:
    """The dataset version's lineage and stats; label, task and split as the training run's config had them."""
    data = ((run or {}).get("config") or {}).get("data") or system.config.data.model_dump(mode="json")
    base = {"dataset": lineage.get("dataset"), "version": lineage.get("dataset_version"),
            "features": lineage.get("features"), "split": data.get("split"), "label": data.get("label"),
            "task": data.get("task")}
    if manifest is None:
        return {**base, "found": False}
    return {**base, "found": True, "source": mask_source(manifest["source"]), "created_at": manifest["created_at"],
            "parent": manifest["parent"], "rows": manifest["row_count"], "rows_read": manifest["rows_read"],
            "quarantined": manifest["quarantined_count"], "schema": manifest["schema"], "stats": manifest["stats"]}


def _training_run(system, run_id: str | None) -> dict[str, Any] | None:
    if not run_id:
        return None
    try:
        run = load_run(system.storage, run_id)
    except NotFound:
        return {"run_id": run_id, "found": False}
    keys = ("run_id", "kind", "status", "started_at", "ended_at", "group", "tags", "wandb", "summary", "config")
    return {**{k: run.get(k) for k in keys}, "found": True, "epochs": len(run["history"])}




def _production(system, app: str, version: int) -> dict[str, Any]:
    """The monitor's windows in which ``version`` served, and the incidents of those windows."""
    from raysys.monitoring.incidents import read_incidents
    from raysys.monitoring.state import StateStore

    windows = [w for w in StateStore(system.storage, app).windows() if _served_in(w, version)]
    seqs = {w["seq"] for w in windows}
    incidents = [i for i in read_incidents(system.storage, app)
                 if seqs & set(i.get("windows") or []) or str(i.get("subject", "")).endswith(f"@v{version}")]
    return {"app": app, "windows": [window_row(w, version) for w in windows], "incidents": incidents}


def _served_in(window: dict[str, Any], version: int) -> bool:
    return str(version) in {str(v) for v in (window.get("versions") or {})}


def window_row(window: dict[str, Any], version: int) -> dict[str, Any]:
    """One window as the card shows it for ``version``: traffic, live quality, latency, drift."""
    metrics = {str(k): v for k, v in (window.get("versions") or {}).items()}.get(str(version)) or {}
    drift = window.get("drift") or {}
    p_values = [t["p_value"] for t in (drift.get("features") or {}).values() if t.get("p_value") is not None]
    drifted = [f for f, t in (drift.get("features") or {}).items() if t.get("drifted")]
    champion = str(window.get("champion")) == str(version)
    return {"seq": window["seq"], "end": utc_time(window.get("end")), "role": "champion" if champion else "challenger/shadow",
            "requests": metrics.get("requests"), "labelled": metrics.get("labelled"),
            "quality": metrics.get("quality") or {}, "latency_p99_ms": (metrics.get("latency_ms") or {}).get("p99"),
            "drifted": bool(drift.get("drifted")) if champion and drift else None,
            "min_p_value": min(p_values) if champion and p_values else None,
            "drifted_features": drifted if champion else []}


def utc_time(seconds: float | None) -> str | None:
    """Seconds since the epoch as an ISO UTC time (to the second)."""
    if seconds is None:
        return None
    return datetime.fromtimestamp(float(seconds), tz=timezone.utc).isoformat(timespec="seconds")


def _releases(system, app: str, name: str, version: int) -> dict[str, Any]:
    """Deploys, promotions and rollbacks that moved ``version`` (audit log), and its alias moves."""
    events = [e for e in audit.read_audit(system.storage)
              if e["action"].startswith(RELEASE_ACTIONS) and e.get("app") in (None, app)
              and version in _plan_versions(e.get("from")) | _plan_versions(e.get("to")) | _plan_versions(e.get("plan"))]
    moves = [m.to_dict() for m in system.models.registry.alias_history(name) if version in (m.from_version, m.to_version)]
    return {"events": [release_row(e) for e in events], "alias_moves": moves}


def _plan_versions(plan: Any) -> set[int]:
    if not isinstance(plan, dict):
        return set()
    return {int(plan[k]) for k in ("champion", "challenger", "shadow") if plan.get(k) is not None}


def release_row(event: dict[str, Any]) -> dict[str, Any]:
    """An audit event of a release, short: when, what, who, why, from which plan to which."""
    return {"at": event["at"], "action": event["action"], "actor": event.get("actor"), "reason": event.get("reason"),
            "from": describe_plan(event.get("from")), "to": describe_plan(event.get("to") or event.get("plan"))}


def describe_plan(plan: Any) -> str:
    """A traffic plan in words: ``v2 champion, v3 canary 10%, v4 shadow``."""
    if not isinstance(plan, dict):
        return "nothing served"
    parts = [f"v{plan['champion']} champion"]
    if plan.get("challenger") is not None:
        parts.append(f"v{plan['challenger']} canary {plan.get('canary_percent', 0):g}%")
    if plan.get("shadow") is not None:
        parts.append(f"v{plan['shadow']} shadow")
    return ", ".join(parts)


# ---------------------------------------------------------------------------------- rendering


def render_card(data: dict[str, Any]) -> str:
    """The model card in Markdown, from :func:`card_data`'s dict (pure: reads nothing)."""
    model = data["model"]
    aliases = f" ({', '.join(model['aliases'])})" if model["aliases"] else ""
    lines = [f"# Model card: {model['name']} v{model['version']}{aliases}", "",
             f"Registered {model['created_at']}." + (f" {model['description']}" if model["description"] else ""), ""]
    for section in (_intended_use, _data_lineage, _dataset_stats, _metrics, _training, _importance_md,
                    _production_md, _releases_md):
        lines += section(data) + [""]
    return "\n".join(lines).rstrip() + "\n"


def _table(header: list[str], rows: list[list[Any]]) -> list[str]:
    def cell(value: Any) -> str:
        return _fmt(value).replace("|", "\\|").replace("\n", " ")

    return ["| " + " | ".join(header) + " |", "|" + "---|" * len(header),
            *("| " + " | ".join(cell(v) for v in row) + " |" for row in rows)]


def _fmt(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return f"{value:.4f}" if abs(value) < 1e5 else f"{value:,.0f}"
    if isinstance(value, int):
        return f"{value:,}"
    if isinstance(value, (dict, list)):
        return json.dumps(value, sort_keys=True, default=str)
    return str(value)


def _intended_use(data: dict[str, Any]) -> list[str]:
    project = data["project"]
    lines = ["## Intended use", "", project["intended_use"]]
    return lines + (["", f"Project `{project['name']}`: {project['description']}"] if project["description"] else [])


def _data_lineage(data: dict[str, Any]) -> list[str]:
    d, lineage = data["data"], data["lineage"]
    lines = ["## Data lineage", ""]
    if not d["found"]:
        lines += [f"Dataset `{d['dataset']}` version `{d['version']}`: its manifest is not in this storage root.", ""]
    rows = [["dataset", d["dataset"]], ["dataset version", d["version"]], ["label", d["label"]], ["task", d["task"]]]
    if d["found"]:
        rows += [["source", d["source"]], ["published", d["created_at"]], ["parent version", d["parent"]],
                 ["rows read", d["rows_read"]], ["rows accepted", d["rows"]], ["rows quarantined", d["quarantined"]]]
    rows += [["split", d["split"]], ["features (fitted on train)", d["features"]],
             ["training run", lineage.get("run_id")], ["tune run", lineage.get("tune_run")],
             ["config hash", lineage.get("config_hash")], ["code version", lineage.get("code_version")]]
    rows += [[k, v] for k, v in lineage.items() if k not in _LINEAGE_SHOWN]
    return lines + _table(["", "value"], [r for r in rows if r[1] is not None])


_LINEAGE_SHOWN = {"dataset", "dataset_version", "features", "run_id", "tune_run", "config_hash", "code_version"}


def _dataset_stats(data: dict[str, Any]) -> list[str]:
    d = data["data"]
    lines = ["## Dataset statistics", ""]
    if not d["found"]:
        return lines + ["Not available: the dataset version is not in this storage root."]
    rows = []
    for column, s in list(d["stats"].items())[:MAX_STAT_COLUMNS]:
        top = ", ".join(f"{k}: {v:,}" for k, v in list((s.get("top") or {}).items())[:3])
        rows.append([column, s.get("type"), s.get("null_rate"), s.get("min"), s.get("max"), s.get("mean"),
                     s.get("std"), s.get("distinct"), top])
    more = len(d["stats"]) - MAX_STAT_COLUMNS
    return (lines + [f"Over all {d['rows']:,} accepted rows of `{d['version']}`.", ""]
            + _table(["column", "type", "null rate", "min", "max", "mean", "std", "distinct", "top values"], rows)
            + (["", f"… and {more} more columns (`raysys data show {d['version']}`)."] if more > 0 else []))


def _metrics(data: dict[str, Any]) -> list[str]:
    evaluation = data["evaluation"]
    lines = ["## Metrics", ""]
    if evaluation is None:
        return lines + ["Not evaluated: the dataset version is not in this storage root."]
    lines += [(f"On the test split ({evaluation['split_rows']:,} rows) of `{data['data']['version']}`, beside the "
              f"trivial baseline (evaluation run `{evaluation['run_id']}`)."), ""]
    metrics, baseline = evaluation["metrics"], evaluation["baseline"]
    lines += _table(["metric", "model", "trivial baseline"], [[k, metrics[k], baseline.get(k)] for k in metrics])
    for column, groups in (evaluation.get("slices") or {}).items():
        skipped = groups.get(SKIPPED) or {}
        groups = {value: g for value, g in groups.items() if value != SKIPPED}
        names = list(dict.fromkeys(k for g in groups.values() for k in g))
        lines += ["", f"### By `{column}`", ""]
        lines += _table([column, *names], [[value, *(g.get(n) for n in names)] for value, g in groups.items()])
        if skipped:
            lines += ["", "Too few rows to measure: " + ", ".join(f"{v} ({n})" for v, n in skipped.items()) + "."]
    return lines


def _training(data: dict[str, Any]) -> list[str]:
    training = data["training"]
    lines = ["## Training", ""]
    run = training["run"]
    if run is None:
        lines += ["No training run is recorded (registered directly).", ""]
    elif not run["found"]:
        lines += [f"Training run `{run['run_id']}`: its record is not in this storage root.", ""]
    else:
        wandb = run.get("wandb") or {}
        lines += _table(["run", "value"], [["run id", run["run_id"]], ["status", run["status"]],
                                          ["started", run["started_at"]], ["ended", run["ended_at"]],
                                          ["epochs logged", run["epochs"]], ["W&B group", run.get("group")],
                                          ["W&B run", wandb.get("path")], ["W&B mode", wandb.get("mode")],
                                          ["tags", ", ".join(run.get("tags") or [])]]) + [""]
    params = [[f"{section}.{key}", value] for section, values in (training["params"] or {}).items()
              if isinstance(values, dict) for key, value in values.items()]
    return lines + ["### Training configuration", ""] + _table(["setting", "value"], params)


def _importance_md(data: dict[str, Any]) -> list[str]:
    lines = ["## Feature importance", ""]
    found = data["importance"]
    if not found:
        return lines + [f"Not computed for this version (no `{IMPORTANCE}` registered with it)."]
    lines += [(f"Global permutation importance: the rise of the {found['metric']} ({_fmt(found['loss'])} unshuffled) "
              f"when one input column is shuffled, mean and std of {found['repeats']} shuffles of "
              f"{found['rows']:,} validation rows."), ""]
    return lines + _table(["input column", "mean rise", "std"],
                          [[column, score["mean"], score["std"]] for column, score in found["importance"].items()])


def _production_md(data: dict[str, Any]) -> list[str]:
    production = data["production"]
    lines = ["## Production: drift and live quality", ""]
    if not production["windows"]:
        return lines + [NO_HISTORY]
    windows = production["windows"]
    names = sorted({k for w in windows for k in w["quality"]})
    lines += [f"{len(windows)} monitor windows of app `{production['app']}` in which this version served.", ""]
    rows = [[w["seq"], w["end"], w["role"], w["requests"], w["labelled"], *(w["quality"].get(n) for n in names),
             w["latency_p99_ms"], w["drifted"], w["min_p_value"], ", ".join(w["drifted_features"])] for w in windows]
    lines += _table(["window", "end", "role", "requests", "labelled", *(f"live {n}" for n in names),
                     "p99 ms", "drift", "min p-value", "drifted features"], rows)
    incidents = production["incidents"]
    lines += ["", "### Incidents", ""]
    if not incidents:
        return lines + ["None."]
    return lines + _table(["rule", "subject", "severity", "status", "first seen", "last seen", "message"],
                          [[i.get("rule"), i.get("subject"), i.get("severity"), i.get("status"), i.get("first_seen"),
                            i.get("last_seen"), i.get("message")] for i in incidents])


def _releases_md(data: dict[str, Any]) -> list[str]:
    releases = data["releases"]
    lines = ["## Releases and rollbacks", ""]
    if releases["events"]:
        lines += _table(["at", "action", "by", "from", "to", "reason"],
                        [[e["at"], e["action"], e["actor"], e["from"], e["to"], e["reason"]] for e in releases["events"]])
    else:
        lines += ["Never deployed."]
    lines += ["", "### Alias moves", ""]
    if not releases["alias_moves"]:
        return lines + ["None."]
    return lines + _table(["at", "alias", "from", "to", "by", "reason"],
                          [[m["at"], m["alias"], m["from_version"] and f"v{m['from_version']}", f"v{m['to_version']}" if m["to_version"] is not None else "removed",
                            m["actor"], m["reason"]] for m in releases["alias_moves"]])
