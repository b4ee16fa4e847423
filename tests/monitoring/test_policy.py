"""The retrain policy: triggers, idempotency keys, one at a time, cooldown, cap per day (pure)."""

from __future__ import annotations

import json

import pytest

from raysys.config import RetrainConfig
from raysys.errors import RaysysError
from raysys.monitoring.policy import RetrainPolicy, RetrainState, Trigger

T0 = 1_800_000_000.0


def policy(**cfg) -> RetrainPolicy:
    return RetrainPolicy(RetrainConfig(**{"cooldown_s": 600, "max_per_day": 3, **cfg}))


def test_a_configured_trigger_is_allowed_and_an_unlisted_one_is_not():
    p = policy(triggers=["drift"])
    assert p.decide(Trigger("drift", "incident:1"), RetrainState(), T0).allowed
    refused = p.decide(Trigger("quality", "incident:2"), RetrainState(), T0)
    assert not refused.allowed and "not in monitor.retrain.triggers" in refused.reason


def test_manual_is_always_a_valid_trigger_and_skips_cooldown_and_cap():
    p = policy(triggers=[], max_per_day=0)
    state = RetrainState().started("incident:1", T0).finished()
    decision = p.decide(Trigger("manual", "manual:a"), state, T0 + 1)
    assert decision.allowed and decision.trigger == "manual"


def test_one_retrain_at_a_time_even_manual():
    p = policy()
    state = RetrainState().started("incident:1", T0)
    for trigger in (Trigger("drift", "incident:2"), Trigger("manual", "manual:b")):
        decision = p.decide(trigger, state, T0 + 5000)
        assert not decision.allowed and "already running (for incident:1)" in decision.reason
    assert p.decide(Trigger("manual", "manual:b"), state.finished(), T0 + 5000).allowed


def test_the_same_key_never_starts_a_second_retrain_also_after_a_restart():
    p = policy(cooldown_s=0)
    state = RetrainState().started("incident:7", T0).finished()
    restored = RetrainState.from_dict(json.loads(json.dumps(state.to_dict())))  # persisted, read back
    assert restored == state
    decision = p.decide(Trigger("drift", "incident:7"), restored, T0 + 10)
    assert not decision.allowed and "already handled" in decision.reason
    assert p.decide(Trigger("drift", "incident:8"), restored, T0 + 10).allowed


def test_cooldown_after_the_last_start():
    p = policy(cooldown_s=600)
    state = RetrainState().started("incident:1", T0).finished()
    early = p.decide(Trigger("drift", "incident:2"), state, T0 + 599)
    assert not early.allowed and "cooldown" in early.reason and "cooldown_s is 600" in early.reason
    assert p.decide(Trigger("drift", "incident:2"), state, T0 + 600).allowed


def test_cap_per_day_counts_only_the_last_24_hours():
    p = policy(cooldown_s=0, max_per_day=2)
    state = RetrainState()
    for index, at in enumerate((T0, T0 + 3600)):
        state = state.started(f"incident:{index}", at).finished()
    capped = p.decide(Trigger("quality", "incident:9"), state, T0 + 7200)
    assert not capped.allowed and "max_per_day is 2" in capped.reason
    assert p.decide(Trigger("quality", "incident:9"), state, T0 + 86_400 + 1).allowed


def test_schedule_trigger_once_per_slot():
    p = policy(triggers=["schedule"], schedule_s=3600, cooldown_s=0)
    first = p.scheduled(T0)
    state = RetrainState().started(first.key, T0).finished()
    assert p.scheduled(T0 + 100) == first  # same slot: same key, refused
    assert not p.decide(p.scheduled(T0 + 100), state, T0 + 100).allowed
    assert p.decide(p.scheduled(T0 + 3600), state, T0 + 3600).allowed
    assert policy(triggers=["drift"]).scheduled(T0) is None


def test_a_bad_trigger_is_a_clear_error():
    with pytest.raises(RaysysError, match="retrain trigger 'weekly'"):
        Trigger("weekly", "x")  # type: ignore[arg-type]
