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
