"""Decision rules as pure functions: config checks naming the field, first match, segments, default."""

from __future__ import annotations

import numpy as np
import pytest

from raysys.config import parse_config
from raysys.errors import ConfigError
from raysys.serving.decisions import DecisionRules, rules_digest

DATA = {"name": "loans", "source": {"kind": "csv", "path": "x.csv"}, "label": "default", "task": "binary",
        "schema": {"columns": {"amount": {"type": "float"}, "region": {"type": "category"},
                               "default": {"type": "int", "allowed": [0, 1]}}}}
RULES = {"default": "approve",
         "rules": [{"action": "block", "min": 0.9}, {"action": "review", "min": 0.5}],
         "segment": {"column": "region", "values": {"north": [{"action": "block", "min": 0.7}],
                                                     3: [{"action": "review", "max": 0.2}]}}}


def rules_of(decisions: dict, data: dict | None = None) -> DecisionRules:
    return DecisionRules.from_config(parse_config({"data": data or DATA, "decisions": decisions}).decisions)


def test_first_match_wins_segments_override_and_the_default_catches_the_rest():
    rules = rules_of(RULES)
    scores = np.array([0.95, 0.6, 0.1, 0.75, 0.75, 0.1, 0.5, 0.1])
    regions = ["south", "south", "south", "north", "NORTH", 3.0, None, "3"]
    assert rules.decide(scores, regions) == ["block", "review", "approve", "block", "review", "review", "review",
                                             "review"]
    assert rules.decide(scores) == ["block", "review", "approve", "review", "review", "approve", "review", "approve"]


def test_scores_are_the_named_class_probability_or_the_value():
    rules = rules_of(RULES)
    answer = {"predictions": [1, 0], "probabilities": [[0.05, 0.95], [0.6, 0.4]], "classes": [0, 1]}
    assert rules.decide_answer(answer, {"region": np.array(["south", "north"], dtype=object)}) == ["block", "approve"]
    of_zero = rules_of({**RULES, "class": 0})
    assert of_zero.decide_answer(answer, {"region": np.array(["south", "south"], dtype=object)}) == [
        "approve", "review"]
    regression = rules_of({"default": "small", "rules": [{"action": "big", "min": 100}]},
                          {**DATA, "task": "regression", "schema": {"columns": {}}})
    assert regression.decide_answer({"predictions": [250.0, 99.9999999], "probabilities": None, "classes": None},
                                    {}) == ["big", "big"]  # compared at the 6 decimals answered


def test_rules_round_trip_as_json_and_their_digest_names_them():
    rules = rules_of(RULES)
    assert DecisionRules.from_dict(rules.to_dict()) == rules and DecisionRules.from_dict(None) is None
    changed = rules_of({**RULES, "default": "refer"})
    assert rules_digest(rules) != rules_digest(changed) and rules_digest(None) is None
    assert rules_digest(rules) == rules_digest(rules_of(RULES))


@pytest.mark.parametrize(("decisions", "field"), [
    ({"default": "ok", "rules": [{"action": "x", "min": 1.5}]}, "decisions: rules[0].min"),
    ({"default": "ok", "rules": [{"action": "x", "max": -0.1}]}, "decisions: rules[0].max"),
    ({"default": "ok", "rules": [{"action": "r", "min": 0.5}, {"action": "b", "min": 0.9}]}, "decisions: rules[1]"),
    ({"default": "ok", "rules": [{"action": "a", "max": 0.5}, {"action": "b", "min": 0.4},
                                 {"action": "c", "min": 0.45, "max": 0.6}]}, "decisions: rules[2]"),
    ({"default": "ok", "rules": [{"action": "x", "min": 0.6, "max": 0.6}]}, "decisions.rules.0"),
    ({"default": "ok", "rules": [{"action": "x"}]}, "decisions.rules.0"),
    ({"default": "ok", "rules": [{"action": "  ", "min": 0.5}]}, "decisions.rules.0: action"),
    ({"default": "", "rules": []}, "decisions: default"),
    ({"rules": []}, "decisions.default: field required"),
    ({"default": "ok", "rules": [{"action": "x", "min": 0.5, "above": 1}]}, "decisions.rules.0.above: unknown"),
    ({"default": "ok", "rules": [{"action": "x", "min": "high"}]}, "decisions.rules.0.min"),
    ({"default": "ok", "rules": [{"action": "x", "min": float("nan")}]}, "decisions.rules.0.min"),
    ({"default": "ok", "class": 2}, "decisions: class: 2 is not a class of default"),
    ({"default": "ok", "segment": {"column": "regoin", "values": {"n": [{"action": "x", "min": 0.5}]}}},
     "decisions: segment.column: no column 'regoin'"),
    ({"default": "ok", "segment": {"column": "default", "values": {"n": [{"action": "x", "min": 0.5}]}}},
     "decisions: segment.column: 'default' is the label"),
    ({"default": "ok", "segment": {"column": "region", "values": {}}}, "decisions.segment.values"),
    ({"default": "ok", "segment": {"column": "region", "values": {"n": []}}}, "decisions.segment.values.n"),
    ({"default": "ok", "segment": {"column": "region", "values": {"n": [
        {"action": "a", "min": 0.2}, {"action": "b", "min": 0.3}]}}}, "decisions: segment.values.n[1]"),
])
def test_bad_rules_are_config_errors_naming_the_field(decisions, field):
    with pytest.raises(ConfigError, match="^config: " + field.replace("[", r"\[").replace("]", r"\]")):
        parse_config({"data": DATA, "decisions": decisions})


def test_task_specific_checks():
    multiclass = {**DATA, "task": "multiclass"}
    with pytest.raises(ConfigError, match=r"decisions: class: required for a multiclass"):
        parse_config({"data": multiclass, "decisions": {"default": "ok"}})
    regression = {**DATA, "task": "regression", "schema": {"columns": {}}}
    with pytest.raises(ConfigError, match=r"decisions: class: a regression has no classes"):
        parse_config({"data": regression, "decisions": {"default": "ok", "class": 1}})
    # regression thresholds are values, not probabilities
    assert parse_config({"data": regression, "decisions": {"default": "ok", "rules": [
        {"action": "big", "min": 1000}]}}).decisions.rules[0].min == 1000


def test_rules_checked_against_the_served_model():
    rules = rules_of({**RULES, "class": 1})
    rules.check("binary", [0, 1], {"amount": "float", "region": "category"}, 3)
    with pytest.raises(ConfigError, match=r"^decisions.class: model v3 has no class '1' \(classes: no, yes\)"):
        rules.check("binary", ["no", "yes"], {"region": "category"}, 3)
    with pytest.raises(ConfigError, match=r"^decisions.segment.column: 'region' is not an input of model v2"):
        rules.check("binary", [0, 1], {"amount": "float"}, 2)
    with pytest.raises(ConfigError, match=r"^decisions.class: model v1 is multiclass"):
        rules_of(RULES).check("multiclass", [0, 1, 2], {"region": "category"}, 1)


def test_batch_inference_decides_as_the_server_does():
    """Same rows, same rules: ``predict_batch``'s frame and the server's answer agree record by record."""
    import pandas as pd

    from raysys.modeling.predict import LoadedModel
    from raysys.serving import batch, payloads
    from raysys.serving.server import answer, decided
    from tests.serving.test_replica_imports import small_model_files

    model = LoadedModel(small_model_files())
    rng = np.random.default_rng(5)
    frame = pd.DataFrame({"x": rng.normal(size=60), "plan": rng.choice(["basic", "premium", "other"], 60)})
    probabilities = model.predict(frame)
    cut = float(np.median(probabilities))  # thresholds inside the random model's range: every rule is used
    data = {**DATA, "schema": {"columns": {}}}
    rules = rules_of({"default": "low", "rules": [{"action": "high", "min": cut}],
                      "segment": {"column": "plan", "values": {"premium": [{"action": "top", "min": cut}]}}}, data)
    rows, _ = payloads.parse_records({"records": frame.to_dict(orient="records")}, model.signature, 100)
    online = decided(answer(model, rows), rows, rules)["decisions"]
    offline = batch.prediction_frame(model, 1, frame, [], rules)["decision"].tolist()
    assert online == offline and {"low", "high", "top"} <= set(online)


@pytest.mark.parametrize("value", ["true", 1, 0, None, [], {}])
def test_explain_in_a_request_is_a_boolean_or_a_422_naming_it(value):
    from raysys.serving import payloads

    body = {"records": {"x": 1.0}, "explain": value}
    with pytest.raises(payloads.RequestError, match="^explain: ") as raised:
        payloads.parse_records(body, {"x": "float"}, 10)
    assert raised.value.status == 422 and raised.value.field == "explain"
    rows, _ = payloads.parse_records({**body, "explain": True}, {"x": "float"}, 10)
    assert rows.count == 1
