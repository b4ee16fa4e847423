"""What the dashboard shows, as pure functions over what the layers store (no Ray, no I/O).

Inputs are the registry's versions (``ModelVersion.to_dict()``), the traffic plan
(``TrafficPlan.to_dict()``), audit events (:func:`raysys.audit.read_audit`) and the monitor's
window summaries (``monitor/<app>/windows/*.json``); outputs are JSON-able dicts for the page.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

ROLES = ("champion", "challenger", "shadow")
MOVES = ("serve.up", "deploy.", "rollback")  # audit actions that change what is served
LINEAGE_KEYS = ("dataset", "dataset_version", "features", "run_id", "tune_run")


def traffic_split(plan: dict[str, Any] | None) -> list[dict[str, Any]]:
    """Who answers how much: champion and challenger shares (percent), a shadow's copy (None)."""
    if plan is None:
        return []
    canary = plan["canary_percent"] if plan.get("challenger") is not None else 0.0
    split = [{"version": plan["champion"], "role": "champion", "percent": 100.0 - canary}]
    if plan.get("challenger") is not None:
        split.append({"version": plan["challenger"], "role": "challenger", "percent": canary,
                      "sticky": bool(plan.get("sticky"))})
    if plan.get("shadow") is not None:
        split.append({"version": plan["shadow"], "role": "shadow", "percent": None})
    return split


def deployments(events: Iterable[dict[str, Any]]) -> dict[int, list[dict[str, Any]]]:
    """Per model version, the moves that put it into a plan (oldest first), from the audit log."""
    found: dict[int, list[dict[str, Any]]] = {}
    for event in events:
        if not event["action"].startswith(MOVES):
            continue
        plan = event.get("to") or event.get("plan") or {}
        for role in ROLES:
            if plan.get(role) is not None:
                found.setdefault(int(plan[role]), []).append(
                    {"at": event["at"], "action": event["action"], "role": role, "actor": event.get("actor")})
    return found


def version_rows(versions: Sequence[dict[str, Any]], plan: dict[str, Any] | None,
                 events: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """One row per registered version, newest first: lineage (dataset version → run → model
    version → deployments), aliases, test metrics, and its role in the plan being served."""
    moves = deployments(events)
    roles = {plan[r]: r for r in ROLES if plan and plan.get(r) is not None}
    rows = []
    for version in sorted(versions, key=lambda v: v["version"], reverse=True):
        lineage = version.get("lineage") or {}
        rows.append({"version": version["version"], "created_at": version["created_at"],
                     "aliases": version.get("aliases", []), "serving": roles.get(version["version"]),
                     "lineage": {k: lineage.get(k) for k in LINEAGE_KEYS} | {"run_id": version.get("run_id")
                                                                              or lineage.get("run_id")},
                     "metrics": test_metrics(version.get("metrics") or {}),
                     "deployments": moves.get(version["version"], [])})
    return rows


def test_metrics(metrics: dict[str, Any]) -> dict[str, float]:
    """The numbers of a version's test evaluation (``metrics["test"]`` when nested, else the top level)."""
    part = metrics.get("test") if isinstance(metrics.get("test"), dict) else metrics
    return {k: v for k, v in part.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}


def live_by_version(windows: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """Each version's live numbers from the newest window it answered in: records, labelled,
    quality (accuracy, F1, … or RMSE, MAE) and latency percentiles."""
    latest: dict[str, dict[str, Any]] = {}
    for window in windows:  # oldest first: later windows overwrite
        for version, summary in (window.get("versions") or {}).items():
            latest[version] = {"version": int(version), "window": window["seq"], "end": window["end"],
                               "records": summary.get("records"), "labelled": summary.get("labelled"),
                               "quality": summary.get("quality") or {}, "latency_ms": summary.get("latency_ms") or {}}
    return sorted(latest.values(), key=lambda row: row["version"], reverse=True)


def drift_series(windows: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Per raw input feature, its drift test's p-value in each window (oldest first), and the
    corrected threshold below which a feature counts as drifted."""
    features: dict[str, list[dict[str, Any]]] = {}
    threshold = None
    for window in windows:
        drift = window.get("drift")
        if not drift:
            continue  # too few records to test
        threshold = drift.get("threshold", threshold)
        for name, result in (drift.get("features") or {}).items():
            features.setdefault(name, []).append({"seq": window["seq"], "end": window["end"],
                                                  "p_value": result["p_value"], "drifted": result["drifted"]})
    return {"threshold": threshold, "windows": len(windows), "features": features}


def newest(events: Sequence[dict[str, Any]], limit: int) -> list[dict[str, Any]]:
    """The newest ``limit`` audit events, newest first."""
    return list(reversed(events[-limit:])) if limit > 0 else []
