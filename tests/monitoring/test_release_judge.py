"""Judging a canary on labelled live traffic, and the release state's round trip (pure)."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from raysys.config import ReleaseConfig
from raysys.errors import RaysysError
from raysys.monitoring.release import (
    Release,
    Verdict,
    add_stats,
    fault_delta,
    judge_canary,
    live_stats,
)

CFG = ReleaseConfig(min_labelled=200, settle_labelled=500, significance=0.05, max_error_rate=0.01, timeout_s=600)
T0 = 1_800_000_000.0


def labelled(version: int, n: int, accuracy: float, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 2, n)
    right = rng.random(n) < accuracy
    return pd.DataFrame({"_model_version": version, "_label": labels.astype(str),
                         "_prediction": np.where(right, labels, 1 - labels).astype(str)})


def stats_of(*frames: pd.DataFrame, task: str = "binary") -> dict[int, dict]:
    return live_stats(pd.concat(frames, ignore_index=True), task)


def test_waits_for_enough_labels_then_times_out_with_a_rollback():
    s = stats_of(labelled(1, 500, 0.9), labelled(2, 50, 0.9, seed=1))
    waiting = judge_canary(s[1], s[2], CFG, "binary", T0, T0 + 10)
    assert waiting.action == "wait" and "challenger" in waiting.evidence["why"]
    late = judge_canary(s[1], s[2], CFG, "binary", T0, T0 + 600)
    assert late.action == "rollback" and late.evidence["rule"] == "timeout"


def test_a_significantly_worse_challenger_is_rolled_back_with_the_test_in_the_evidence():
    s = stats_of(labelled(1, 600, 0.90), labelled(2, 600, 0.75, seed=1))
    verdict = judge_canary(s[1], s[2], CFG, "binary", T0, T0 + 60)
    assert verdict.action == "rollback" and verdict.evidence["rule"] == "quality"
    test = verdict.evidence["test"]
    assert test["name"] == "two-proportion z-test" and test["p_value"] < 0.05 and test["statistic"] < 0
    assert test["challenger"] < test["champion"]
    json.dumps(verdict.to_dict())  # goes into the audit log as it is


def test_a_significantly_better_challenger_is_promoted_at_once():
    s = stats_of(labelled(1, 250, 0.60), labelled(2, 250, 0.85, seed=1))
    verdict = judge_canary(s[1], s[2], CFG, "binary", T0, T0 + 60)
    assert verdict.action == "promote" and "significantly better" in verdict.evidence["why"]


def test_a_comparison_that_is_not_significant_waits_then_settles_on_the_point_estimates():
    champion = {"labelled": 300, "correct": 270}   # 0.90
    lower = {"labelled": 300, "correct": 264}      # 0.88: p ≈ 0.43
    waiting = judge_canary(champion, lower, CFG, "binary", T0, T0 + 60)
    assert waiting.action == "wait" and waiting.evidence["test"]["p_value"] > 0.3
    late = judge_canary(champion, lower, CFG, "binary", T0, T0 + 600)  # timeout: settled, never promoted
    assert late.action == "rollback" and late.evidence["rule"] == "settle"
    settled = {"labelled": 500, "correct": 450}, {"labelled": 500, "correct": 451}
    verdict = judge_canary(*settled, CFG, "binary", T0, T0 + 60)
    assert verdict.action == "promote" and "at least as good" in verdict.evidence["why"]
    lower = {"labelled": 500, "correct": 445}
    assert judge_canary(settled[0], lower, CFG, "binary", T0, T0 + 60).action == "rollback"


def test_a_failing_challenger_is_rolled_back_before_enough_labels():
    champion = {"labelled": 10, "correct": 9}
    challenger = {"labelled": 5, "correct": 5, "requests": 40, "failed": 3}  # 3 / max(40, 200) = 1.5 %
    verdict = judge_canary(champion, challenger, CFG, "binary", T0, T0 + 1)
    assert verdict.action == "rollback" and verdict.evidence["rule"] == "error_rate"
    one = {**challenger, "failed": 1}  # 1 / 200 = 0.5 %: not yet
    assert judge_canary(champion, one, CFG, "binary", T0, T0 + 1).action == "wait"


def test_regression_uses_welch_on_squared_errors():
    rng = np.random.default_rng(0)
    y = rng.normal(size=400)

    def frame(version: int, noise: float) -> pd.DataFrame:
        return pd.DataFrame({"_model_version": version, "_label": y.astype(str),
                             "_prediction": (y + rng.normal(scale=noise, size=400)).astype(str)})

    s = stats_of(frame(1, 0.5), frame(2, 1.0), task="regression")
    worse = judge_canary(s[1], s[2], CFG, "regression", T0, T0 + 60)
    assert worse.action == "rollback" and worse.evidence["test"]["name"] == "Welch t-test on squared errors"
    assert worse.evidence["test"]["challenger"] > worse.evidence["test"]["champion"]
    s = stats_of(frame(1, 1.0), frame(2, 0.5), task="regression")
    assert judge_canary(s[1], s[2], CFG, "regression", T0, T0 + 60).action == "promote"


def test_live_stats_skip_unlabelled_rows_and_add_up_across_windows():
    frame = labelled(3, 100, 0.8)
    frame.loc[:9, "_label"] = None
    first, second = live_stats(frame.iloc[:50], "binary")[3], live_stats(frame.iloc[50:], "binary")[3]
    assert add_stats(first, second) == live_stats(frame, "binary")[3]
    assert live_stats(frame, "binary")[3]["labelled"] == 90


def test_fault_delta_between_two_readings():
    start = {"versions": {"2": {"challenger": {"requests": 10, "failures": 1}}}}
    now = {"versions": {"2": {"challenger": {"requests": 50, "failures": 4}}}}
    assert fault_delta(now, start, 2, "challenger") == {"requests": 40, "failed": 3}
    assert fault_delta(now, {}, 3, "challenger") == {"requests": 0, "failed": 0}


def test_release_state_machine_round_trips_and_refuses_a_second_canary():
    release = Release().canary(5, 4, T0, incident="inc-1")
    assert release.phase == "canary" and not release.applied
    with pytest.raises(RaysysError, match="already running"):
        release.canary(6, 4, T0)
    assert release.decide(Verdict("wait", {}), T0 + 1) is release
    done = release.decide(Verdict("rollback", {"why": "worse"}), T0 + 2)
    assert done.phase == "rolled_back" and done.verdict["evidence"]["why"] == "worse"
    assert Release.from_dict(json.loads(json.dumps(done.to_dict()))) == done
    assert Release.from_dict(None) == Release()
