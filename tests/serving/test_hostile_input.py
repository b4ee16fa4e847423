"""Property tests: no request body costs a 5xx, a stall or unbounded work (issue 9, section 2).

Generated JSON (wrong types, huge and non-finite numbers, deep nesting, unicode, huge shapes)
drives the pure request parsers, then ``/v1/predict`` and ``/v2/models/<name>/infer`` of the
served model. Every answer is a 2xx or a 4xx with a ``{"error", "field"}`` body, and the replica
still answers a valid request afterwards. Derandomized, no example database: CI sees the same
examples every run.
"""

from __future__ import annotations

import json
import math

import pytest
import requests
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from raysys.serving import oip_binary, payloads
from raysys.serving.payloads import RequestError
from tests.serving.test_payloads import RECORD, SIGNATURE

SETTINGS = {"deadline": None, "derandomize": True, "database": None,
            "suppress_health_check": [HealthCheck.too_slow, HealthCheck.data_too_large,
                                      HealthCheck.filter_too_much]}

INF, NAN = float("inf"), float("nan")
huge_ints = st.integers(min_value=-(10**1000), max_value=10**1000)
specials = st.sampled_from([INF, -INF, NAN, 1e300, -1e39, 3.4e38, 1e36, 2**64, 10**400, -0.0])
numbers = st.one_of(specials, st.floats(), huge_ints)
texts = st.one_of(st.text(max_size=20), st.text(min_size=1, max_size=40).map(lambda t: t * 600))  # unicode, long


def nested(depth: int) -> list:
    value: list = [1.0]
    for _ in range(depth):
        value = [value]
    return value


scalars = st.one_of(st.none(), st.booleans(), numbers, texts)
junk = st.recursive(scalars, lambda inner: st.lists(inner, max_size=4)
                    | st.dictionaries(st.text(max_size=10), inner, max_size=4), max_leaves=10)
hostile = st.one_of(numbers, texts, st.integers(0, 200).map(nested), junk)  # hypothesis prints examples recursively
field_values = st.one_of(specials, hostile)  # what a pointed mutation sets a field to


def mutated(valid: dict, keys: list, values: st.SearchStrategy) -> st.SearchStrategy:
    """``valid`` with up to three of ``keys`` set to a drawn value (a valid body, pointedly broken)."""
    changes = st.lists(st.tuples(st.sampled_from(keys), values), min_size=1, max_size=3)
    return st.builds(lambda pairs: {**valid, **dict(pairs)}, changes)


def predict_bodies(valid: dict) -> st.SearchStrategy:
    """``/v1/predict`` bodies: one record or several, each a valid one with hostile values."""
    record = mutated(valid, [*valid, "extra", "x" * 2000], field_values)
    records = st.one_of(record, st.lists(st.one_of(record, st.just(valid)), min_size=1, max_size=3), hostile)
    return st.fixed_dictionaries({"records": records}, optional={"key": st.one_of(st.text(max_size=10), hostile)})


def oip_bodies(valid: dict) -> st.SearchStrategy:
    """Infer bodies: one tensor per input, each with hostile names, shapes, datatypes or data."""
    dims = st.one_of(st.integers(-2, 3), huge_ints, st.just(10**4000), st.booleans(), st.floats(0, 3))
    parts = st.one_of(st.lists(field_values, min_size=1, max_size=3), st.lists(dims, max_size=300), hostile)
    tensors = [mutated({"name": c, "shape": [1], "datatype": "FP64", "data": [v]},
                       ["name", "shape", "datatype", "data"], parts) for c, v in valid.items()]
    inputs = st.one_of(st.tuples(*tensors).map(list), hostile)
    return st.fixed_dictionaries({"inputs": inputs}, optional={"id": hostile, "parameters": hostile,
                                                                 "outputs": hostile})


def assert_client_error(error: RequestError) -> None:
    """A 4xx whose body names the field, with no value of the request echoed at length."""
    body = error.body()
    assert 400 <= error.status < 500 and set(body) == {"error", "field"}
    assert len(body["error"]) < 400 and len(body["field"]) < 100


def assert_rows(rows: payloads.Rows) -> None:
    """1..10 records; numbers null (NaN) or finite float32; strings at most 1024 characters."""
    assert 1 <= rows.count <= 10
    for column in ("tenure", "seats"):
        assert all(math.isnan(v) or abs(v) <= payloads.FLOAT32_MAX for v in rows.columns[column])
    assert all(v is None or len(v) <= payloads.MAX_STRING_CHARS for v in rows.columns["plan"])


# the findings of the review, always among the examples
@example(body={"records": {**RECORD, "seats": INF}})
@example(body={"records": [RECORD, {**RECORD, "tenure": 1e300}]})
@example(body={"records": {**RECORD, "plan": "x" * 2_097_152}})
@settings(max_examples=120, **SETTINGS)
@given(body=predict_bodies(RECORD))
def test_the_records_parser_answers_rows_or_a_client_error(body):
    try:
        rows, _ = payloads.parse_records(body, SIGNATURE, 10)
    except RequestError as error:
        assert_client_error(error)
        return
    assert_rows(rows)


def oip(tenure: dict) -> dict:
    """A valid one-row infer body whose tenure tensor has ``tenure``'s fields."""
    return {"inputs": [{"name": c, "shape": [1], "datatype": "FP64", "data": [v], **(tenure if c == "tenure" else {})}
                       for c, v in RECORD.items()]}


@example(body=oip({"data": nested(100)}))
@example(body=oip({"shape": [10**4000] * 300}))
@settings(max_examples=80, **SETTINGS)
@given(body=oip_bodies(RECORD))
def test_the_oip_parser_answers_rows_or_a_client_error(body):
    try:
        rows, _, _ = payloads.parse_oip(body, SIGNATURE, 10)
    except RequestError as error:
        assert_client_error(error)
        return
    assert_rows(rows)


@settings(max_examples=40, **SETTINGS)
@given(raw=st.one_of(st.binary(max_size=200), st.builds(lambda v: json.dumps(v).encode(), hostile),
                     st.integers(1, 200_000).map(lambda depth: b"[" * depth + b"]" * depth)),
       header=st.one_of(st.none(), st.integers(-3, 300).map(str), st.text("0123456789x-", max_size=25)))
def test_any_body_and_binary_header_answer_rows_or_a_client_error(raw, header):
    parsers = (lambda body: payloads.parse_records(body, SIGNATURE, 10)[0],
               lambda body: payloads.parse_oip(body, SIGNATURE, 10)[0])
    for parse in parsers:
        try:
            rows = parse(oip_binary.read_request(raw, header, 10))
        except RequestError as error:
            assert_client_error(error)
            continue
        assert_rows(rows)


# ---------------------------------------------------------------- over HTTP, on the served model


@pytest.fixture(scope="module")
def endpoint(served):
    """(url, model name, one valid record)."""
    from tests.serving.test_server import raw_rows

    rs, url = served
    return url, rs.models.name, raw_rows(rs, 1)[0]


def post(url: str, body, header: str | None = None) -> requests.Response:
    data = body if isinstance(body, bytes) else json.dumps(body).encode()  # NaN, Infinity as JS literals
    headers = {"content-type": "application/json", **({"Inference-Header-Content-Length": header} if header else {})}
    return requests.post(url, data=data, headers=headers, timeout=60)


def assert_answered(answer: requests.Response) -> None:
    assert answer.status_code < 500, answer.text[:500]
    if answer.status_code >= 400:
        body = answer.json()
        assert isinstance(body["error"], str) and isinstance(body["field"], str), body
        assert len(body["error"]) < 400


@settings(max_examples=60, **SETTINGS)
@given(data=st.data())
def test_no_body_gets_a_5xx_and_the_replica_keeps_answering(endpoint, data):
    url, name, row = endpoint
    if data.draw(st.booleans(), label="v1"):
        answer = post(f"{url}/v1/predict", data.draw(predict_bodies(row), label="body"))
    else:
        header = data.draw(st.one_of(st.none(), st.integers(0, 5000).map(str)), label="header")
        answer = post(f"{url}/v2/models/{name}/infer", data.draw(oip_bodies(row), label="body"), header)
    assert_answered(answer)


def test_the_replica_answers_after_the_hostile_bodies(endpoint):
    url, _, row = endpoint
    assert requests.post(f"{url}/v1/predict", json={"records": row}, timeout=30).status_code == 200
