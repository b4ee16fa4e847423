"""The release state machine driven against the served app: canary → rollback (a worse challenger), canary → promote.

The judged numbers are live sums over labelled rows: the champion's real answers, and for the
challenger either the same answers or a trivial model's (the majority class: clearly worse); the
moves go through ``System.serving`` to the running Serve app.
"""

from __future__ import annotations

import json
import time

import pandas as pd

from raysys.audit import read_audit
from raysys.config import ReleaseConfig
from raysys.monitoring.release import Release, apply_release, judge_canary, live_stats
from tests.monitoring.conftest import answered

CFG = ReleaseConfig(min_labelled=100, settle_labelled=100, significance=0.05, max_error_rate=0.01, timeout_s=3600)


def judged(rs, champion: int, challenger: int, trivial: bool) -> tuple:
    """Live sums of both versions on the same labelled rows, as the monitor keeps them.

    The champion's answers are its real ones; the challenger's are the champion's too, or
    (``trivial``) those of a model that always answers the majority class.
    """
    rows = rs.data.read().to_pandas()
    labels = rows["target"].astype(str).to_numpy()
    mine = answered(rs, rows, champion).assign(_label=labels)
    theirs = mine.assign(_model_version=challenger)
    if trivial:
        theirs["_prediction"] = pd.Series(labels).mode()[0]
    stats = live_stats(pd.concat([mine, theirs], ignore_index=True), "binary")
    return stats[champion], {**stats[challenger], "requests": len(rows), "failed": 0}


def test_a_worse_canary_is_rolled_back_and_a_good_one_promoted_with_the_evidence_audited(served):
    rs, _ = served
    start = rs.serving.plan()
    champion = start.champion
    challenger = max(v.version for v in rs.models.registry.list_versions(rs.models.name) if v.version != champion)
    try:
        now = time.time()
        release = apply_release(rs, Release().canary(challenger, champion, now, incident="inc-release"))
        plan = rs.serving.plan()
        assert release.applied and release.phase == "canary"
        assert plan.challenger == challenger and plan.canary_percent == rs.config.serve.canary_percent
        # a restarted monitor re-applies the step it persisted as not yet applied: no second move
        again = apply_release(rs, Release.from_dict({**json.loads(json.dumps(release.to_dict())), "applied": False}))
        assert again.applied and rs.serving.plan().generation == plan.generation

        verdict = judge_canary(*judged(rs, champion, challenger, trivial=True), CFG, "binary", now, time.time())
        assert verdict.action == "rollback" and verdict.evidence["rule"] == "quality"
        rolled = apply_release(rs, release.decide(verdict, time.time()))
        assert rolled.phase == "rolled_back" and rs.serving.plan().challenger is None
        assert "challenger" not in rs.models.registry.aliases(rs.models.name)  # a rejected version is no challenger
        assert rs.serving.plan().champion == champion
        event = [e for e in read_audit(rs.storage, "monitor.release.rollback") if e["incident"] == "inc-release"][-1]
        assert event["actor"] == "raysys-monitor" and event["decision"] == "rollback" and event["moved"]
        assert event["evidence"]["test"]["p_value"] < CFG.significance
        assert event["model_version"] == challenger and "significantly worse" in event["reason"]

        release = apply_release(rs, rolled.canary(challenger, champion, time.time(), incident="inc-release"))
        equal = judge_canary(*judged(rs, champion, challenger, trivial=False), CFG, "binary", now, time.time())
        assert equal.action == "promote" and equal.evidence["rule"] == "settle"  # the same answers
        promoted = apply_release(rs, release.decide(equal, time.time()))
        assert promoted.phase == "promoted" and rs.serving.plan().champion == challenger
        assert rs.models.registry.aliases(rs.models.name)["champion"] == challenger
        actions = [e["action"] for e in read_audit(rs.storage, "monitor.release.") if e["incident"] == "inc-release"]
        assert actions == ["monitor.release.canary", "monitor.release.canary", "monitor.release.rollback",
                           "monitor.release.canary", "monitor.release.promote"]
    finally:
        plan = rs.serving.plan()
        if plan.champion != champion or plan.challenger is not None:
            rs.serving.rollback(to=str(champion), actor="test", reason="restore the served champion")
