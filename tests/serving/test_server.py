"""The model server on a real Ray Serve: predictions, the Open Inference Protocol, bad input."""

from __future__ import annotations

import numpy as np
import pytest
import requests


def raw_rows(rs, n: int = 5) -> list[dict]:
    frame = rs.data.read("latest", split="test").limit(n).to_pandas()
    inputs = rs.models.load("champion").state.input_columns
    return [{c: float(row[c]) for c in inputs} for _, row in frame.iterrows()]


def test_predictions_equal_the_offline_model_and_name_the_version(served):
    import pandas as pd

    rs, url = served
    rows = raw_rows(rs)
    answer = requests.post(f"{url}/v1/predict", json={"records": rows}, timeout=30)
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert body["model_version"] == 1 and body["model"] == rs.models.name and body["request_id"]
    offline = rs.models.load("champion")
    output = offline.predict(pd.DataFrame(rows))
    assert np.allclose([p[1] for p in body["probabilities"]], output, atol=1e-6)
    assert body["predictions"] == [int(v) for v in offline.labels(output)]
    one = requests.post(f"{url}/v1/predict", json={"records": rows[0]}, headers={"x-request-id": "abc"}, timeout=30)
    assert one.json()["request_id"] == "abc" and one.json()["probabilities"] == body["probabilities"][:1]


def test_openapi_documents_the_model_inputs(served):
    rs, url = served
    spec = requests.get(f"{url}/openapi.json", timeout=30).json()
    schema = spec["paths"]["/v1/predict"]["post"]["requestBody"]["content"]["application/json"]["schema"]
    assert "records" in schema["properties"] and "$defs" not in schema
    record = spec["components"]["schemas"]["Record"]  # where the body's $refs point
    assert set(record["properties"]) == set(rs.models.load("champion").state.input_columns)
    assert requests.get(f"{url}/docs", timeout=30).status_code == 200


def test_open_inference_protocol(served):
    rs, url = served
    name = rs.models.name
    assert requests.get(f"{url}/v2/health/live", timeout=30).json() == {"live": True}
    assert requests.get(f"{url}/v2/health/ready", timeout=30).json() == {"ready": True}
    assert requests.get(f"{url}/v2/models/{name}/ready", timeout=30).json()["ready"] is True
    meta = requests.get(f"{url}/v2/models/{name}", timeout=30).json()
    rows = raw_rows(rs, 3)
    inputs = [{"name": i["name"], "shape": [3], "datatype": i["datatype"], "data": [r[i["name"]] for r in rows]}
              for i in meta["inputs"]]
    infer = requests.post(f"{url}/v2/models/{name}/infer", json={"id": "r1", "inputs": inputs}, timeout=30).json()
    v1 = requests.post(f"{url}/v1/predict", json={"records": rows}, timeout=30).json()
    outputs = {o["name"]: o for o in infer["outputs"]}
    assert infer["id"] == "r1" and infer["model_version"] == "1"
    assert outputs["predictions"]["data"] == [str(p) for p in v1["predictions"]]
    assert outputs["probabilities"]["shape"] == [3, 2]
    assert np.allclose(outputs["probabilities"]["data"], np.ravel(v1["probabilities"]))
    unknown = requests.post(f"{url}/v2/models/nope/infer", json={"inputs": inputs}, timeout=30)
    assert unknown.status_code == 404 and "nope" in unknown.json()["error"]


@pytest.mark.parametrize(
    ("make_body", "status", "field"),
    [
        (lambda row: b"{not json", 400, "body"),
        (lambda row: b"", 400, "body"),
        (lambda row: {"records": [{k: v for k, v in list(row.items())[1:]}]}, 422, "records[0]."),
        (lambda row: {"records": [{**row, "colour": 1}]}, 422, "records[0].colour"),
        (lambda row: {"records": [{**row, next(iter(row)): "big"}]}, 422, "records[0]."),
        (lambda row: b'{"records": [{"x": NaN}]}', 422, "records[0]."),
        (lambda row: {"records": []}, 422, "records"),
        (lambda row: {"records": [row] * 1001}, 413, "records"),
        (lambda row: [row], 422, "body"),
        # issue 9: each of these was a 500 (float32 overflow to a NaN answer, a RecursionError)
        (lambda row: {"records": [{**row, next(iter(row)): 1e300}]}, 422, "records[0]."),
        (lambda row: {"records": [{**row, next(iter(row)): 1e36}]}, 422, "records[0]."),  # ~1e35 std devs: was scored
        (lambda row: b"[" * 100_000 + b"]" * 100_000, 400, "body"),
        (lambda row: {"records": {**row, next(iter(row)): "x" * (1 << 20)}}, 413, "body"),  # over max_body_bytes
    ],
)
def test_bad_requests_get_a_4xx_naming_the_field_and_serving_goes_on(served, make_body, status, field):
    rs, url = served
    row = raw_rows(rs, 1)[0]
    body = make_body(row)
    kwargs = {"data": body, "headers": {"content-type": "application/json"}} if isinstance(body, bytes) else {"json": body}
    answer = requests.post(f"{url}/v1/predict", timeout=30, **kwargs)
    assert answer.status_code == status, answer.text
    assert answer.json()["field"].startswith(field)
    assert requests.post(f"{url}/v1/predict", json={"records": row}, timeout=30).status_code == 200


def test_a_chunked_body_is_cut_off_at_the_limit_and_long_ids_are_refused(served):
    rs, url = served
    row = raw_rows(rs, 1)[0]
    chunk = b'{"records": [' + b" " * (256 << 10)
    answer = requests.post(f"{url}/v1/predict", data=iter([chunk] * 8), timeout=30,  # no Content-Length
                           headers={"content-type": "application/json"})
    assert answer.status_code == 413 and answer.json()["field"] == "body", answer.text
    long_id = requests.post(f"{url}/v1/predict", json={"records": row}, headers={"x-request-id": "r" * 5000},
                            timeout=30)
    assert long_id.status_code == 422 and long_id.json()["field"] == "x-request-id"
    assert requests.post(f"{url}/v1/predict", json={"records": row}, timeout=30).status_code == 200
