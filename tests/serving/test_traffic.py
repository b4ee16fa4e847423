"""The traffic plan and rollout moves (pure logic, no Ray)."""

from __future__ import annotations

import random

import pytest

from raysys.errors import RaysysError
from raysys.serving import traffic
from raysys.serving.traffic import TrafficPlan


def test_canary_sends_its_share_to_the_challenger():
    plan = traffic.canary(traffic.blue_green(None, 1), 2, percent=25)
    rng = random.Random(0)
    answered = [plan.route(None, rng.random()) for _ in range(20_000)]
    assert set(answered) == {1, 2}
    assert answered.count(2) / len(answered) == pytest.approx(0.25, abs=0.01)
    assert plan.versions == [1, 2] and plan.generation == 2


def test_sticky_canary_gives_one_key_one_version():
    plan = traffic.canary(traffic.blue_green(None, 1), 2, percent=50, sticky=True)
    rng = random.Random(1)
    for key in (f"user-{i}" for i in range(200)):
        assert len({plan.route(key, rng.random()) for _ in range(20)}) == 1
    shares = [plan.route(f"user-{i}", 0.0) for i in range(4000)]
    assert shares.count(2) / len(shares) == pytest.approx(0.5, abs=0.03)


def test_shadow_never_answers_and_blue_green_ends_the_canary():
    plan = traffic.shadow(traffic.canary(traffic.blue_green(None, 1), 2, percent=10), 3)
    assert plan.versions == [1, 2, 3]
    assert {plan.route(None, d / 100) for d in range(100)} == {1, 2}
    switched = traffic.blue_green(plan, 2)
    assert (switched.champion, switched.challenger, switched.shadow) == (2, None, 3)
    assert traffic.end_canary(plan) == TrafficPlan(champion=1, generation=plan.generation + 1)
    assert TrafficPlan.from_dict(plan.to_dict()) == plan


@pytest.mark.parametrize(
    ("move", "message"),
    [
        (lambda: traffic.canary(None, 2, 10), "deploy a champion before a canary"),
        (lambda: traffic.shadow(None, 2), "deploy a champion before a shadow"),
        (lambda: traffic.canary(traffic.blue_green(None, 1), 1, 10), "already the champion"),
        (lambda: traffic.canary(traffic.blue_green(None, 1), 2, 120), "within 0..100"),
        (lambda: traffic.shadow(traffic.blue_green(None, 1), 1), "a shadow must be another version"),
    ],
)
def test_impossible_moves_are_clear_errors(move, message):
    with pytest.raises(RaysysError, match=message):
        move()


def test_a_request_carries_every_input_of_the_plan_typed_as_the_champion_reads_it():
    from types import SimpleNamespace

    from raysys.serving.server import request_signature

    models = {1: SimpleNamespace(signature={"b": "category", "c": "int"}),
              2: SimpleNamespace(signature={"a": "float", "b": "string"}),
              3: SimpleNamespace(signature={"d": "bool"})}
    plan = TrafficPlan(champion=2, challenger=1, canary_percent=10, shadow=3)
    assert request_signature(plan, models) == {"a": "float", "b": "string", "c": "int", "d": "bool"}
    assert request_signature(TrafficPlan(champion=1), models) == {"b": "category", "c": "int"}
