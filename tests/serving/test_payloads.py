"""Request parsing for /v1/predict and the Open Inference Protocol (pure, no Ray)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from raysys.serving import payloads
from raysys.serving.payloads import RequestError

SIGNATURE = {"tenure": "float", "plan": "string", "seats": "int", "active": "bool"}
RECORD = {"tenure": 1.5, "plan": "pro", "seats": 3, "active": True}


def test_one_record_or_many_become_typed_rows():
    rows, key = payloads.parse_records({"records": RECORD}, SIGNATURE, 10)
    assert rows.frame().to_dict("records") == [{**RECORD, "seats": 3.0}] and rows.count == 1 and key is None
    rows, key = payloads.parse_records({"records": [RECORD, {**RECORD, "tenure": None, "seats": 4}], "key": "u1"},
                                       SIGNATURE, 10)
    assert rows.count == 2 and np.isnan(rows.columns["tenure"][1]) and key == "u1"
    assert rows.columns["seats"].dtype == np.float64 and rows.columns["plan"].dtype == object
    whole, _ = payloads.parse_records({"records": {**RECORD, "seats": 3.0}}, SIGNATURE, 10)
    assert whole.columns["seats"].tolist() == [3.0]  # a whole float is a fine int


def test_rows_of_several_requests_concatenate_in_order():
    first, _ = payloads.parse_records({"records": RECORD}, SIGNATURE, 10)
    second, _ = payloads.parse_records({"records": [{**RECORD, "plan": "free"}, {**RECORD, "seats": 7}]}, SIGNATURE, 10)
    both = payloads.Rows.concat([first, second])
    assert both.count == 3 and both.columns["plan"].tolist() == ["pro", "free", "pro"]
    assert both.columns["seats"].tolist() == [3.0, 3.0, 7.0]


def test_timestamps_parse_to_utc_and_a_bad_one_names_its_record():
    signature = {"at": "timestamp", "tenure": "float"}
    rows, _ = payloads.parse_records({"records": [{"at": "2026-01-02T03:04:05+01:00", "tenure": 1},
                                                  {"at": None, "tenure": 2}]}, signature, 10)
    assert str(rows.columns["at"][0]) == "2026-01-02T02:04:05.000000000" and np.isnat(rows.columns["at"][1])
    with pytest.raises(RequestError) as caught:
        payloads.parse_records({"records": [{"at": "2026-01-02", "tenure": 1}, {"at": "soon", "tenure": 2}]},
                               signature, 10)
    assert (caught.value.status, caught.value.field) == (422, "records[1].at") and "'soon'" in str(caught.value)
    with pytest.raises(RequestError) as caught:
        payloads.parse_records({"records": {"at": "yesterday", "tenure": 1}}, signature, 10)
    assert caught.value.field == "records.at"


@pytest.mark.parametrize(
    ("body", "status", "field"),
    [
        ({"records": [{**RECORD, "tenure": "long"}]}, 422, "records[0].tenure"),
        ({"records": [RECORD, {**RECORD, "colour": "red"}]}, 422, "records[1].colour"),
        ({"records": [{k: v for k, v in RECORD.items() if k != "plan"}]}, 422, "records[0].plan"),
        ({"records": {**RECORD, "seats": 2.5}}, 422, "records.seats"),
        ({"records": {**RECORD, "seats": True}}, 422, "records.seats"),
        ({"records": [RECORD, {**RECORD, "tenure": float("nan")}]}, 422, "records[1].tenure"),
        ({"records": [{**RECORD, "tenure": float("inf")}]}, 422, "records[0].tenure"),
        ({"records": [{**RECORD, "active": "yes"}]}, 422, "records[0].active"),
        ({"records": [{**RECORD, "seats": "3"}]}, 422, "records[0].seats"),
        ({"records": [RECORD, 5]}, 422, "records[1]"),
        ({"records": []}, 422, "records"),
        ({"records": [RECORD] * 11}, 413, "records"),
        ({"records": [RECORD], "extra": 1}, 422, "extra"),
        ({}, 422, "records"),
        ([RECORD], 422, "body"),
    ],
)
def test_bad_records_name_the_field(body, status, field):
    with pytest.raises(RequestError) as caught:
        payloads.parse_records(body, SIGNATURE, 10)
    assert caught.value.status == status and caught.value.field == field
    assert caught.value.body()["field"] == field and field in caught.value.body()["error"]


def test_nan_in_json_text_is_rejected_after_json_parsing():
    body = json.loads('{"records": [{"tenure": NaN, "plan": "pro", "seats": 1, "active": false}]}')
    with pytest.raises(RequestError, match="finite"):
        payloads.parse_records(body, SIGNATURE, 10)


def oip_body(rows: int = 2, **override) -> dict:
    inputs = [{"name": "tenure", "shape": [rows], "datatype": "FP64", "data": [1.5] * rows},
              {"name": "plan", "shape": [rows], "datatype": "BYTES", "data": ["pro"] * rows},
              {"name": "seats", "shape": [rows, 1], "datatype": "INT64", "data": [[3]] * rows},
              {"name": "active", "shape": [rows], "datatype": "BOOL", "data": [True] * rows}]
    return {"id": "req-1", "inputs": inputs, "parameters": {"key": "u9"}, **override}


def test_open_inference_protocol_tensors_become_the_same_rows():
    rows, request_id, key = payloads.parse_oip(oip_body(), SIGNATURE, 10)
    same, _ = payloads.parse_records({"records": [RECORD, RECORD]}, SIGNATURE, 10)
    assert rows.frame().equals(same.frame()) and (request_id, key) == ("req-1", "u9")


@pytest.mark.parametrize(
    ("body", "status", "field"),
    [
        (oip_body(inputs=[]), 422, "tenure"),
        (oip_body(inputs=oip_body()["inputs"][:3]), 422, "active"),
        (oip_body(inputs=[*oip_body()["inputs"], {"name": "x", "shape": [2], "datatype": "FP64", "data": [1, 2]}]),
         422, "inputs[4].name"),
        (oip_body(inputs=[{**oip_body()["inputs"][0], "shape": [3]}, *oip_body()["inputs"][1:]]), 422, "tenure"),
        (oip_body(inputs=[{**oip_body()["inputs"][0], "data": [1.5, "x"]}, *oip_body()["inputs"][1:]]), 422,
         "tenure[1]"),
        (oip_body(rows=11), 413, "inputs"),
        ({"inputs": "no"}, 422, "inputs"),
    ],
)
def test_bad_oip_requests_name_the_input(body, status, field):
    with pytest.raises(RequestError) as caught:
        payloads.parse_oip(body, SIGNATURE, 10)
    assert (caught.value.status, caught.value.field) == (status, field)


# ---------------------------------------------------------------- hostile bodies (issue 9, section 2)


def test_non_finite_and_out_of_range_numbers_are_a_422_naming_the_field():
    infinite_int = json.loads('{"records": {"tenure": 1, "plan": "pro", "seats": Infinity, "active": true}}')
    with pytest.raises(RequestError) as caught:  # was an OverflowError: a 500
        payloads.parse_records(infinite_int, SIGNATURE, 10)
    assert (caught.value.status, caught.value.field) == (422, "records.seats") and "finite" in str(caught.value)
    for field, value in (("tenure", 1e300), ("seats", -1e39), ("tenure", 10**400)):
        with pytest.raises(RequestError) as caught:  # 1e300 was scored: float32 overflow, NaN in the answer
            payloads.parse_records({"records": [RECORD, {**RECORD, field: value}]}, SIGNATURE, 10)
        assert (caught.value.status, caught.value.field) == (422, f"records[1].{field}")
    edge, _ = payloads.parse_records({"records": {**RECORD, "tenure": -payloads.FLOAT32_MAX}}, SIGNATURE, 10)
    assert edge.columns["tenure"].tolist() == [-payloads.FLOAT32_MAX]


def test_a_model_range_bounds_numbers_by_the_fitted_scaling():
    from raysys.data.features import FeatureState

    scaling = {"impute": "median", "scale": "standard", "fill": 0.0, "stats": {}}
    state = FeatureState(inputs={"tenure": "float", "seats": "int"}, derived={"ratio": "tenure / seats"},
                         numeric={"tenure": {**scaling, "shift": 10.0, "divide": 0.5},
                                  "ratio": {**scaling, "shift": 0.0, "divide": 1.0}}, categorical={})
    other = FeatureState(inputs={"tenure": "float"}, derived={}, categorical={},
                         numeric={"tenure": {**scaling, "shift": 0.0, "divide": 1e30}})  # a second version
    ranges = payloads.model_ranges([state, other])  # derived features have no request field to bound
    assert ranges == {"tenure": (10.0 - 0.5 * payloads.FEATURE_LIMIT, 10.0 + 0.5 * payloads.FEATURE_LIMIT)}
    with pytest.raises(RequestError) as caught:
        payloads.parse_records({"records": {**RECORD, "tenure": 1e12}}, SIGNATURE, 10, ranges=ranges)
    assert caught.value.field == "records.tenure" and "1e+12 is outside the model's input range" in str(caught.value)
    rows, _ = payloads.parse_records({"records": {**RECORD, "tenure": 1e8}}, SIGNATURE, 10, ranges=ranges)
    assert rows.columns["tenure"].tolist() == [1e8]


def test_an_over_long_string_is_refused_by_its_length_and_never_echoed():
    huge = "x" * 2_097_152
    with pytest.raises(RequestError) as caught:  # was answered 200, scored and logged
        payloads.parse_records({"records": [{**RECORD, "plan": huge}]}, SIGNATURE, 10)
    assert str(caught.value) == "records[0].plan: string of 2,097,152 characters, at most 1024"
    with pytest.raises(RequestError) as caught:
        payloads.parse_records({"records": RECORD, "key": huge}, SIGNATURE, 10, max_string_chars=8)
    assert caught.value.field == "key" and len(str(caught.value)) < 80
    for body in ({"records": {**RECORD, huge: 1}}, {"records": {**RECORD, "at": huge}}):
        with pytest.raises(RequestError) as caught:  # an unknown key or a bad timestamp: clipped
            payloads.parse_records(body, {**SIGNATURE, "at": "timestamp"} if "at" in body["records"] else SIGNATURE,
                                   10, max_string_chars=len(huge))
        assert len(str(caught.value)) < 200 and len(caught.value.field) < 80
    rows, _ = payloads.parse_records({"records": {**RECORD, "plan": "x" * 8}}, SIGNATURE, 10, max_string_chars=8)
    assert rows.columns["plan"].tolist() == ["x" * 8]


def test_deep_nesting_is_refused_without_recursion():
    with pytest.raises(RequestError) as caught:  # json.loads recursed: a RecursionError, a 500
        payloads.load_json(b"[" * 100_000 + b"]" * 100_000)
    assert (caught.value.status, caught.value.field) == (400, "body")
    nested: list = [1.5]
    for _ in range(5000):  # built without json: the parser's own walk must not recurse either
        nested = [nested]
    inputs = [{**tensor, "data": nested if tensor["name"] == "tenure" else tensor["data"]}
              for tensor in oip_body(rows=1)["inputs"]]
    with pytest.raises(RequestError) as caught:
        payloads.parse_oip({"inputs": inputs}, SIGNATURE, 10)
    assert (caught.value.status, caught.value.field) == (422, "tenure") and "nested deeper" in str(caught.value)
    shallow = [{**tensor, "data": [[[1.5]]] if tensor["name"] == "tenure" else tensor["data"]}
               for tensor in oip_body(rows=1)["inputs"]]
    assert payloads.parse_oip({"inputs": shallow}, SIGNATURE, 10)[0].columns["tenure"].tolist() == [1.5]


def test_huge_oip_shapes_are_bounded_before_any_multiplication():
    huge = 10**4000  # thousands of digits: multiplying hundreds of them took seconds
    for shape in ([huge] * 300, [2, huge], [11], [4, 3]):
        body = oip_body(inputs=[{**oip_body()["inputs"][0], "shape": shape}, *oip_body()["inputs"][1:]])
        with pytest.raises(RequestError) as caught:
            payloads.parse_oip(body, SIGNATURE, 10)
        assert (caught.value.status, caught.value.field) == (413, "inputs") and "tenure" in str(caught.value)
    for shape in ([2, -1], [2, True], "2", [2.0]):
        body = oip_body(inputs=[{**oip_body()["inputs"][0], "shape": shape}, *oip_body()["inputs"][1:]])
        with pytest.raises(RequestError) as caught:
            payloads.parse_oip(body, SIGNATURE, 10)
        assert (caught.value.status, caught.value.field) == (422, "tenure")


def test_oip_ids_and_keys_are_bounded_and_an_input_is_sent_once():
    with pytest.raises(RequestError) as caught:
        payloads.parse_oip(oip_body(id="r" * 2000), SIGNATURE, 10)
    assert caught.value.field == "id" and "2,000 characters" in str(caught.value)
    with pytest.raises(RequestError) as caught:
        payloads.parse_oip(oip_body(parameters={"key": "k" * 2000}), SIGNATURE, 10)
    assert caught.value.field == "parameters.key"
    twice = oip_body(inputs=[*oip_body()["inputs"], oip_body()["inputs"][0]])
    with pytest.raises(RequestError) as caught:
        payloads.parse_oip(twice, SIGNATURE, 10)
    assert caught.value.field == "inputs[4].name"


def test_a_non_finite_answer_is_a_server_fault():
    payloads.require_finite({"predictions": [0, 1], "probabilities": [[0.5, 0.5], [0.1, 0.9]]})
    with pytest.raises(payloads.NonFiniteAnswer):
        payloads.require_finite({"predictions": [0], "probabilities": [[float("nan"), float("nan")]]})
    with pytest.raises(payloads.NonFiniteAnswer):
        payloads.require_finite({"predictions": [1.0, float("inf")], "probabilities": None})


def test_flags_concatenate_with_their_rows_and_unchecked_parts_stay_unflagged():
    import dataclasses

    first, _ = payloads.parse_records({"records": [RECORD, RECORD]}, SIGNATURE, 10)
    second, _ = payloads.parse_records({"records": RECORD}, SIGNATURE, 10)
    flagged = dataclasses.replace(first, flags=np.array(["", "tenure: above max 1"], dtype=object))
    both = payloads.Rows.concat([flagged, second], ["tenure"])
    assert both.flags.tolist() == ["", "tenure: above max 1", None] and list(both.columns) == ["tenure"]
    assert payloads.Rows.concat([first, second]).flags is None
