"""Online inputs against the data schema (serve.input_checks), pure: parsed rows, no Ray."""

from __future__ import annotations

import numpy as np
import pytest
import requests

from raysys.config import ColumnSpec
from raysys.serving import payloads
from raysys.serving.input_checks import InputChecks
from raysys.serving.payloads import RequestError

SIGNATURE = {"age": "int", "plan": "category", "spend": "float", "joined": "timestamp"}
SCHEMA = {
    "customer_id": ColumnSpec(type="int", unique=True),  # not a model input: never checked online
    "age": ColumnSpec(type="int", min=18, max=90),
    "plan": ColumnSpec(type="category", allowed=["basic", "standard", "premium"]),
    "spend": ColumnSpec(type="float", required=False, min=0),
    "joined": ColumnSpec(type="timestamp", required=False, min=1577836800),  # 2020-01-01
}
GOOD = {"age": 41, "plan": "basic", "spend": 12.5, "joined": "2024-05-01T00:00:00Z"}


def parse(records, mode: str, oip: bool = False):
    checks = InputChecks(SCHEMA, mode)
    if oip:
        inputs = [{"name": c, "shape": [len(records)], "datatype": "BYTES", "data": [r[c] for r in records]}
                  for c in SIGNATURE]
        return payloads.parse_oip({"inputs": inputs}, SIGNATURE, 100, checks=checks)[0]
    return payloads.parse_records({"records": records}, SIGNATURE, 100, checks=checks)[0]


def test_flag_marks_each_record_with_the_rules_it_broke():
    records = [GOOD, {**GOOD, "age": 1e15, "plan": "gold"}, {**GOOD, "age": None, "spend": -1.0},
               {**GOOD, "spend": None, "joined": "2019-12-31T23:59:59Z"}]
    rows = parse(records, "flag")
    assert rows.flags.tolist() == [
        "",
        "age: above max 90; plan: not in allowed [basic, premium, standard]",
        "age: null (required); spend: below min 0",
        "joined: below min 2020-01-01T00:00:00",
    ]
    assert rows.columns["age"][1] == 1e15  # flagged, still scored as sent


def test_reject_names_the_first_broken_field_its_value_and_the_rule():
    with pytest.raises(RequestError) as caught:
        parse([GOOD, {**GOOD, "plan": "gold"}, {**GOOD, "age": 1e15}], "reject")
    assert (caught.value.status, caught.value.field) == (422, "records[1].plan")
    assert str(caught.value) == "records[1].plan: 'gold' not in allowed [basic, premium, standard]"
    with pytest.raises(RequestError) as caught:
        parse([GOOD, {**GOOD, "age": 1e15, "plan": "gold"}], "reject", oip=True)
    assert str(caught.value) == "age[1]: 1000000000000000 above max 90"
    with pytest.raises(RequestError) as caught:
        payloads.parse_records({"records": {**GOOD, "age": None}}, SIGNATURE, 100,
                               checks=InputChecks(SCHEMA, "reject"))
    assert str(caught.value) == "records.age: null (required)"
    rows = parse([GOOD, {**GOOD, "spend": None}], "reject")  # spend is optional
    assert rows.flags.tolist() == ["", ""]


def test_off_checks_nothing_and_rules_come_from_replica_settings():
    assert parse([{**GOOD, "age": 1e15}], "off").flags is None
    settings = {"mode": "reject", "columns": {n: s.model_dump() for n, s in SCHEMA.items()}}
    checks = InputChecks.from_settings(settings)
    assert [(r.column, r.words) for r in checks.rules][:3] == [
        ("customer_id", "null (required)"), ("age", "null (required)"), ("age", "below min 18")]
    with pytest.raises(ValueError, match="warn"):
        InputChecks(SCHEMA, "warn")


def test_int_allowed_values_compare_as_numbers():
    checks = InputChecks({"tier": ColumnSpec(type="int", allowed=[1, 2])}, "flag")
    rows, _ = payloads.parse_records({"records": [{"tier": 1}, {"tier": 2.0}, {"tier": 3}, {"tier": None}]},
                                     {"tier": "int"}, 10, checks=checks)
    assert rows.flags.tolist() == ["", "", "tier: not in allowed [1, 2]", "tier: null (required)"]
    assert np.array_equal(rows.columns["tier"][:3], [1.0, 2.0, 3.0])


# ---------------------------------------------------------------- on Ray Serve: the served model's weights


def copy_model(source, target, version: int, nan_bias: bool = False) -> int:
    """Register ``source``'s version in ``target``'s registry (optionally answering NaN): no training."""
    from raysys.modeling.artifacts import bytes_to_state_dict, state_dict_to_bytes
    from raysys.modeling.predict import WEIGHTS

    model = source.models.registry.get(source.models.name, version)
    files = source.models.registry.load_files(model)
    if nan_bias:
        state = bytes_to_state_dict(files[WEIGHTS])
        last_bias = [k for k in state if k.endswith("bias")][-1]
        state[last_bias] = state[last_bias] * float("nan")
        files[WEIGHTS] = state_dict_to_bytes(state)
    return target.models.registry.register(target.models.name, files, metrics=model.metrics, lineage=model.lineage,
                                           params=model.params, run_id=None, description="copy for tests").version


@pytest.fixture(scope="module")
def rejecting(served, tmp_path_factory):
    """(system, url): the served champion in a second app with a schema rule and input_checks: reject."""
    import yaml

    from tests.modeling.test_train import system_from

    source, _ = served
    cfg = yaml.safe_load(source.config_path.read_text())
    cfg["data"]["schema"] = {"columns": {"mean_radius": {"type": "float", "max": 20}, "target": {"type": "int"}}}
    cfg["serve"] = {**cfg["serve"], "app_name": "schema-checks", "route_prefix": "/checked", "input_checks": "reject",
                    "autoscaling": {"min_replicas": 1, "max_replicas": 1}, "prediction_log": {"enabled": False}}
    rs = system_from(cfg, tmp_path_factory.mktemp("checked"))
    version = copy_model(source, rs, 1)
    rs.models.promote(str(version), "champion", actor="test", reason="copy")
    rs.serving.up()
    yield rs, rs.serving.url
    rs.serving.down()


def served_row(served) -> dict:
    from tests.serving.test_server import raw_rows

    return {**raw_rows(served[0], 1)[0], "mean_radius": 14.0}  # within the rule


def test_reject_answers_422_naming_the_field_and_rule_over_http(served, rejecting):
    rs, url = rejecting
    row = served_row(served)
    assert requests.post(f"{url}/v1/predict", json={"records": [row]}, timeout=30).status_code == 200
    answer = requests.post(f"{url}/v1/predict", json={"records": [row, {**row, "mean_radius": 25.0}]}, timeout=30)
    assert answer.status_code == 422 and answer.json() == {
        "error": "records[1].mean_radius: 25 above max 20", "field": "records[1].mean_radius"}
    infer = requests.post(f"{url}/v2/models/{rs.models.name}/infer", timeout=30, json={"inputs": [
        {"name": c, "shape": [1], "datatype": "FP64", "data": [None if c == "mean_radius" else v]}
        for c, v in row.items()]})
    assert infer.status_code == 422 and infer.json()["error"] == "mean_radius[0]: null (required)"


def test_a_model_answering_nan_is_a_500_with_a_json_body_never_nan_in_json(served, rejecting):
    rs, url = rejecting
    row = served_row(served)
    rs.serving.deploy(str(copy_model(rs, rs, 1, nan_bias=True)))
    try:
        answer = requests.post(f"{url}/v1/predict", json={"records": row}, timeout=30)
        assert answer.status_code == 500 and "NonFiniteAnswer" in answer.json()["error"], answer.text
        infer = requests.post(f"{url}/v2/models/{rs.models.name}/infer", timeout=30, json={"inputs": [
            {"name": c, "shape": [1], "datatype": "FP64", "data": [v]} for c, v in row.items()]})
        assert infer.status_code == 500 and "NonFiniteAnswer" in infer.json()["error"]
    finally:
        rs.serving.rollback()
    assert requests.post(f"{url}/v1/predict", json={"records": row}, timeout=30).status_code == 200
    champion = rs.serving.plan().champion
    rs.serving.deploy(str(copy_model(rs, rs, 1, nan_bias=True)), "canary", percent=100)
    try:  # a canary answering NaN falls back to the champion: the client never sees its fault
        answer = requests.post(f"{url}/v1/predict", json={"records": row}, timeout=30)
        assert answer.status_code == 200 and answer.json()["model_version"] == champion, answer.text
    finally:
        rs.serving.rollback()
