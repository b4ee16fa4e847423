"""Release a retrained model: canary → promote or roll back, judged on labelled live traffic.

:func:`judge_canary` is pure. Its rules, in order (the first that applies decides):

1. **Errors.** The challenger's failure rate ``failed / max(requests, min_labelled)`` above
   ``max_error_rate`` → rollback (the denominator keeps a few early failures from deciding, and
   lets many failures decide before ``min_labelled`` requests).
2. **Volume.** Fewer than ``min_labelled`` labelled records for either version → wait, or
   rollback once the canary is ``timeout_s`` old.
3. **Quality**, a two-sided test at ``significance`` of "challenger and champion differ":
   classification: a two-proportion z-test on accuracy (pooled standard error);
   regression: Welch's t-test on the squared errors (unequal variances, Welch–Satterthwaite
   degrees of freedom). Significantly worse (p < significance and the challenger's accuracy
   lower, or its mean squared error higher) → rollback; significantly better → promote.
4. **Settling.** Not significant either way: wait until both versions have ``settle_labelled``
   labelled records (or the canary is ``timeout_s`` old), then promote a challenger whose
   point estimate is at least the champion's and roll back one that is lower. A challenger is
   never promoted on a lower live quality: it was already at least as good on held-out recent
   data before it became a canary, and live traffic must not contradict that.

:class:`Release` is the serialisable state machine (idle → canary → promoted | rolled_back) the
monitor persists; :func:`apply_release` carries out its pending move through ``System.serving``
(idempotent: a move already visible in the traffic plan is not made again) and records it as an
audit event (``monitor.release.canary|promote|rollback``).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field, replace
from typing import Any, Literal

import numpy as np
import pandas as pd

from raysys import audit
from raysys.config import ReleaseConfig
from raysys.errors import RaysysError
from raysys.monitoring import alerts

MONITOR_ACTOR = "raysys-monitor"
Action = Literal["wait", "promote", "rollback"]
Phase = Literal["idle", "canary", "promoted", "rolled_back"]
AUDIT_ACTIONS = {"canary": "monitor.release.canary", "promoted": "monitor.release.promote",
                 "rolled_back": "monitor.release.rollback"}


@dataclass(frozen=True)
class Verdict:
    """What to do with a canary, and the numbers that decided it."""

    action: Action
    evidence: dict[str, Any]

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON form."""
        return asdict(self)


# --------------------------------------------------------------------------- live statistics

def live_stats(frame: pd.DataFrame, task: str) -> dict[int, dict[str, float]]:
    """Sums per model version over labelled answer rows (``_model_version``, ``_prediction``, ``_label``).

    Classification: ``labelled`` and ``correct``; regression: ``labelled``, ``sq_error_sum`` and
    ``sq_error_sq_sum`` (enough for the mean and variance of the squared errors). Rows without a
    label are skipped. Sums add up across windows with :func:`add_stats`.
    """
    out: dict[int, dict[str, float]] = {}
    if frame.empty:
        return out
    frame = frame[frame["_label"].notna()]
    for version, rows in frame.groupby("_model_version"):
        if task == "regression":
            errors = (pd.to_numeric(rows["_prediction"], errors="coerce")
                      - pd.to_numeric(rows["_label"], errors="coerce")).to_numpy(dtype=float) ** 2
            errors = errors[np.isfinite(errors)]
            out[int(version)] = {"labelled": len(errors), "sq_error_sum": float(errors.sum()),
                                 "sq_error_sq_sum": float((errors ** 2).sum())}
        else:
            correct = rows["_prediction"].astype(str).to_numpy() == rows["_label"].astype(str).to_numpy()
            out[int(version)] = {"labelled": len(rows), "correct": int(correct.sum())}
    return out


def add_stats(a: dict[str, float], b: dict[str, float]) -> dict[str, float]:
    """Two disjoint sets of sums added key by key."""
    return {k: a.get(k, 0) + b.get(k, 0) for k in {*a, *b}}


def fault_delta(now: dict[str, Any], start: dict[str, Any], version: int, role: str) -> dict[str, int]:
    """Requests and failures of ``version`` in ``role`` between two :func:`read_fault_counts` readings."""
    events = alerts.fault_delta(start, now)["versions"].get(str(version), {}).get(role, {})
    return {"requests": events.get("requests", 0), "failed": events.get("failures", 0)}


# --------------------------------------------------------------------------- the judgement

def judge_canary(champion: dict[str, float], challenger: dict[str, float], cfg: ReleaseConfig,
                 task: str, started_at: float, now: float) -> Verdict:
    """Wait, promote or roll back a canary (rules and tests in the module docstring).

    ``champion`` / ``challenger``: :func:`live_stats` sums since the canary started, plus
    ``requests`` and ``failed`` (:func:`fault_delta`; the challenger's failures are requests it
    could not answer, which fell back to the champion).
    """
    evidence: dict[str, Any] = {"task": task, "elapsed_s": round(now - started_at, 3),
                                "min_labelled": cfg.min_labelled, "significance": cfg.significance,
                                "champion": dict(champion), "challenger": dict(challenger)}
    failed, requests = challenger.get("failed", 0), challenger.get("requests", 0)
    error_rate = failed / max(requests, cfg.min_labelled)
    evidence.update(error_rate=error_rate, max_error_rate=cfg.max_error_rate)
    if error_rate > cfg.max_error_rate:
        return Verdict("rollback", {**evidence, "rule": "error_rate",
                                    "why": f"challenger failed {failed} of {requests} requests: "
                                           f"{error_rate:.2%} > max_error_rate {cfg.max_error_rate:.2%}"})
    short = [name for name, stats in (("champion", champion), ("challenger", challenger))
             if stats.get("labelled", 0) < cfg.min_labelled]
    if short:
        if now - started_at >= cfg.timeout_s:
            return Verdict("rollback", {**evidence, "rule": "timeout",
                                        "why": f"{', '.join(short)} below {cfg.min_labelled} labelled "
                                               f"records after timeout_s {cfg.timeout_s:g}"})
        return Verdict("wait", {**evidence, "rule": "volume",
                                "why": f"waiting for {cfg.min_labelled} labelled records ({', '.join(short)})"})
    test = (welch_squared_errors if task == "regression" else two_proportion_accuracy)(champion, challenger)
    evidence.update(test=test)
    shown = (f"{test['name']} p={test['p_value']:.3g}, {test['metric']} {test['challenger']:.4g} vs "
             f"champion {test['champion']:.4g}")
    if test["p_value"] < cfg.significance:
        action = "rollback" if test["challenger_worse"] else "promote"
        return Verdict(action, {**evidence, "rule": "quality", "why": (
            f"challenger significantly {'worse' if test['challenger_worse'] else 'better'}: {shown} "
            f"(significance {cfg.significance:g})")})
    labelled = min(champion["labelled"], challenger["labelled"])
    if labelled < cfg.settle_labelled and now - started_at < cfg.timeout_s:
        return Verdict("wait", {**evidence, "rule": "quality", "why": (
            f"not significant yet ({shown}): waiting for {cfg.settle_labelled} labelled records per version")})
    action = "rollback" if test["challenger_worse"] else "promote"
    return Verdict(action, {**evidence, "rule": "settle", "why": (
        f"not significant after {labelled} labelled records per version ({shown}): challenger "
        f"{'below' if test['challenger_worse'] else 'at least as good as'} the champion")})


def two_proportion_accuracy(champion: dict[str, float], challenger: dict[str, float]) -> dict[str, Any]:
    """Two-sided two-proportion z-test (pooled) on accuracy = correct / labelled."""
    from scipy.stats import norm

    n1, n2 = champion["labelled"], challenger["labelled"]
    p1, p2 = champion["correct"] / n1, challenger["correct"] / n2
    pooled = (champion["correct"] + challenger["correct"]) / (n1 + n2)
    se = math.sqrt(pooled * (1 - pooled) * (1 / n1 + 1 / n2))
    z = (p2 - p1) / se if se > 0 else 0.0
    return {"name": "two-proportion z-test", "metric": "accuracy", "champion": p1, "challenger": p2,
            "statistic": z, "p_value": float(2 * norm.sf(abs(z))), "challenger_worse": p2 < p1}


def welch_squared_errors(champion: dict[str, float], challenger: dict[str, float]) -> dict[str, Any]:
    """Two-sided Welch's t-test on the squared errors (mean = MSE) of the two versions."""
    from scipy.stats import t as student_t

    def moments(stats: dict[str, float]) -> tuple[float, float, float]:
        n = stats["labelled"]
        mean = stats["sq_error_sum"] / n
        var = max(0.0, (stats["sq_error_sq_sum"] - n * mean * mean) / (n - 1))
        return n, mean, var

    (n1, m1, v1), (n2, m2, v2) = moments(champion), moments(challenger)
    se2 = v1 / n1 + v2 / n2
    if se2 <= 0:
        statistic, p_value = 0.0, 1.0 if m1 == m2 else 0.0
    else:
        statistic = (m2 - m1) / math.sqrt(se2)
        df = se2 ** 2 / ((v1 / n1) ** 2 / (n1 - 1) + (v2 / n2) ** 2 / (n2 - 1))
        p_value = float(2 * student_t.sf(abs(statistic), df))
    return {"name": "Welch t-test on squared errors", "metric": "mse", "champion": m1, "challenger": m2,
            "statistic": statistic, "p_value": p_value, "challenger_worse": m2 > m1}


# --------------------------------------------------------------------------- the state machine

@dataclass(frozen=True)
class Release:
    """Where a release stands; ``applied`` is False while its latest move is still to be made."""

    phase: Phase = "idle"
    version: int | None = None
    champion: int | None = None
    started_at: float | None = None
    decided_at: float | None = None
    incident: str | None = None
    applied: bool = True
    fault_baseline: dict[str, Any] = field(default_factory=dict)
    verdict: dict[str, Any] | None = None

    def canary(self, version: int, champion: int, now: float, incident: str | None = None) -> Release:
        """Start a canary of ``version`` against ``champion`` (only when no canary is running)."""
        if self.phase == "canary":
            raise RaysysError(f"a canary of v{self.version} is already running; promote or roll it back first")
        return Release("canary", int(version), int(champion), now, None, incident, applied=False)

    def decide(self, verdict: Verdict, now: float) -> Release:
        """The canary's end: promoted or rolled back (a ``wait`` verdict changes nothing)."""
        if self.phase != "canary" or verdict.action == "wait":
            return self
        phase = "promoted" if verdict.action == "promote" else "rolled_back"
        return replace(self, phase=phase, decided_at=now, applied=False, verdict=verdict.to_dict())

    def to_dict(self) -> dict[str, Any]:
        """JSON form, persisted by the monitor."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any] | None) -> Release:
        """Inverse of :meth:`to_dict` (None: idle)."""
        return cls(**data) if data else cls()


def apply_release(system, release: Release, reason: str = "") -> Release:
    """Make the release's pending move through ``system.serving`` and audit it; the applied release.

    Idempotent: after a restart the move is made only if the traffic plan does not show it yet,
    and the audit event says whether it was made now (``moved``).
    """
    if release.applied or release.phase == "idle":
        return release
    serving, plan = system.serving, system.serving.plan()
    verdict = release.verdict or {}
    evidence = verdict.get("evidence")
    why = reason or (evidence or {}).get("why") or f"canary of retrained v{release.version}"
    if release.phase == "canary":
        moved = plan is None or plan.challenger != release.version
        if moved:
            serving.deploy(str(release.version), mode="canary", percent=system.config.serve.canary_percent,
                           actor=MONITOR_ACTOR, reason=why)
        from raysys.serving.faults import read_fault_counts

        release = replace(release, fault_baseline=read_fault_counts(system.storage, serving.app_name))
    else:
        moved = plan is not None and plan.challenger == release.version
        if moved and release.phase == "promoted":
            serving.promote(actor=MONITOR_ACTOR, reason=f"canary judged: {why}")
        elif moved:
            serving.rollback(actor=MONITOR_ACTOR, reason=f"canary judged: {why}")
    audit.record(system.storage, AUDIT_ACTIONS[release.phase],
                 {"app": serving.app_name, "model_version": release.version,
                  "champion_version": release.champion, "incident": release.incident,
                  "decision": verdict.get("action", "canary"), "evidence": evidence, "moved": moved},
                 actor=MONITOR_ACTOR, reason=why)
    return replace(release, applied=True)
