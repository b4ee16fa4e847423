"""The Open Inference Protocol's binary tensor data extension: pure bytes, then a served model."""

from __future__ import annotations

import json
import struct

import numpy as np
import pytest
import requests

from raysys.serving import oip_binary, payloads
from raysys.serving.payloads import RequestError
from tests.serving.test_payloads import RECORD, SIGNATURE

HEADER = "Inference-Header-Content-Length"


def tensor_bytes(values, datatype: str) -> bytes:
    """Raw tensor data as tritonclient writes it: little-endian, BYTES length-prefixed."""
    if datatype == "BYTES":
        return b"".join(struct.pack("<I", len(v.encode())) + v.encode() for v in values)
    return np.asarray(values, dtype=oip_binary.FIXED_TYPES[datatype]).tobytes()


def binary_request(inputs: list[tuple[str, str, list]], **extra) -> tuple[bytes, int]:
    """(body, JSON header length): every input as binary data after the JSON header."""
    blobs = [tensor_bytes(values, datatype) for _, datatype, values in inputs]
    header = {"inputs": [{"name": name, "shape": [len(values)], "datatype": datatype,
                          "parameters": {"binary_data_size": len(blob)}}
                         for (name, datatype, values), blob in zip(inputs, blobs)], **extra}
    text = json.dumps(header).encode()
    return text + b"".join(blobs), len(text)


def decode_response(content: bytes, header_length: int) -> dict[str, np.ndarray | list]:
    """Output name → values, reading binary outputs as a client does."""
    header, offset, out = json.loads(content[:header_length]), header_length, {}
    for output in header["outputs"]:
        size = output.get("parameters", {}).get("binary_data_size")
        if size is None:
            out[output["name"]] = output["data"]
            continue
        blob, offset = content[offset:offset + size], offset + size
        if output["datatype"] == "BYTES":
            values, at = [], 0
            while at < len(blob):
                (length,) = struct.unpack_from("<I", blob, at)
                values.append(blob[at + 4:at + 4 + length].decode())
                at += 4 + length
            out[output["name"]] = values
        else:
            out[output["name"]] = np.frombuffer(blob, dtype=oip_binary.FIXED_TYPES[output["datatype"]])
    assert offset == len(content)
    return out


ROWS = [RECORD, {**RECORD, "tenure": 0.25, "plan": "fré€", "seats": 7, "active": False}]
BINARY_INPUTS = [("tenure", "FP32", [r["tenure"] for r in ROWS]), ("plan", "BYTES", [r["plan"] for r in ROWS]),
                 ("seats", "INT32", [r["seats"] for r in ROWS]), ("active", "BOOL", [r["active"] for r in ROWS])]


def test_binary_inputs_parse_to_the_same_rows_as_json_records():
    raw, length = binary_request(BINARY_INPUTS, id="b1")
    body = oip_binary.read_request(raw, str(length), 10)
    rows, request_id, _ = payloads.parse_oip(body, SIGNATURE, 10)
    same, _ = payloads.parse_records({"records": ROWS}, SIGNATURE, 10)
    assert rows.frame().equals(same.frame()) and request_id == "b1"
    mixed = {"inputs": [{"name": "tenure", "shape": [2], "datatype": "FP64", "data": [1.5, 0.25]},
                        *json.loads(raw[:length])["inputs"][1:]]}  # JSON and binary inputs in one request
    text = json.dumps(mixed).encode()
    body = oip_binary.read_request(text + raw[length + 8:], str(len(text)), 10)
    assert payloads.parse_oip(body, SIGNATURE, 10)[0].frame().equals(same.frame())


def with_header(header: dict, tail: bytes) -> tuple[bytes, str]:
    text = json.dumps(header).encode()
    return text + tail, str(len(text))


def one_input(datatype: str = "FP64", size: int = 16, shape: list | None = None) -> dict:
    return {"inputs": [{"name": "tenure", "shape": shape or [2], "datatype": datatype,
                        "parameters": {"binary_data_size": size}}]}


@pytest.mark.parametrize(
    ("make", "status", "field"),
    [
        (lambda: (b'{"inputs": []}', "400"), 400, "Inference-Header-Content-Length"),
        (lambda: (b'{"inputs": []}', "x1"), 400, "Inference-Header-Content-Length"),
        (lambda: with_header(one_input(size=24), tensor_bytes([1.0, 2.0], "FP64")), 400, "tenure"),
        (lambda: with_header(one_input(size=8), tensor_bytes([1.0, 2.0], "FP64")), 400, "tenure"),
        (lambda: with_header(one_input(size=16), tensor_bytes([1.0, 2.0, 3.0], "FP64")), 400, "body"),
        (lambda: with_header(one_input("BF16", 4), b"\0" * 4), 422, "tenure"),
        (lambda: with_header(one_input("FP64", -1), b""), 400, "inputs[0].parameters.binary_data_size"),
        (lambda: with_header(one_input("BOOL", 2), b"\x01\x02"), 422, "tenure"),
        (lambda: with_header(one_input("BYTES", 9), struct.pack("<I", 99) + b"abcde"), 400, "tenure"),
        (lambda: with_header(one_input("BYTES", 6), struct.pack("<I", 2) + b"\xff\xfe"), 422, "tenure"),
        (lambda: with_header(one_input("FP64", 16, [10**4000]), b"\0" * 16), 413, "inputs"),
    ],
)
def test_malformed_binary_bodies_name_the_input(make, status, field):
    raw, length = make()
    with pytest.raises(RequestError) as caught:
        oip_binary.read_request(raw, length, 10)
    assert (caught.value.status, caught.value.field) == (status, field), str(caught.value)


def test_binary_outputs_carry_their_size_and_decode_to_the_json_answer():
    answer = {"predictions": ["yes", "nö"], "probabilities": [[0.25, 0.75], [0.5, 0.5]], "classes": ["no", "yes"]}
    as_json = payloads.oip_response("m", 3, "r1", answer)
    requested = oip_binary.requested_outputs({"outputs": [{"name": "probabilities", "parameters": {"binary_data": True}},
                                                          {"name": "predictions"}]}, ["predictions", "probabilities"])
    content, length = oip_binary.encode_response(payloads.oip_response("m", 3, "r1", answer), requested)
    decoded = decode_response(content, length)
    assert decoded["predictions"] == ["yes", "nö"]  # asked for without binary_data: JSON
    assert decoded["probabilities"].tolist() == as_json["outputs"][1]["data"]
    everything = oip_binary.requested_outputs({"parameters": {"binary_data_output": True}}, ["predictions"])
    content, length = oip_binary.encode_response(payloads.oip_response("m", 3, "r1", answer), everything)
    assert decode_response(content, length) == {"predictions": ["yes", "nö"]}  # only what was asked
    assert oip_binary.encode_response(payloads.oip_response("m", 3, "r1", answer),
                                      oip_binary.requested_outputs({}, ["predictions"])) is None
    for body, field in (({"outputs": [{"name": "logits"}]}, "outputs[0].name"),
                        ({"outputs": [{"name": "predictions", "parameters": {"binary_data": "yes"}}]},
                         "outputs[0].parameters.binary_data"),
                        ({"parameters": {"binary_data_output": 1}}, "parameters.binary_data_output")):
        with pytest.raises(RequestError) as caught:
            oip_binary.requested_outputs(body, ["predictions"])
        assert (caught.value.status, caught.value.field) == (422, field)


# ---------------------------------------------------------------- over HTTP, on the served model


def test_a_stock_client_binary_request_answers_as_v1_does(served):
    from tests.serving.test_server import raw_rows

    rs, url = served
    name = rs.models.name
    assert oip_binary.EXTENSION in requests.get(f"{url}/v2", timeout=30).json()["extensions"]
    meta = requests.get(f"{url}/v2/models/{name}", timeout=30).json()
    rows = raw_rows(rs, 4)
    inputs = [(i["name"], "FP64", [r[i["name"]] for r in rows]) for i in meta["inputs"]]
    inputs[0] = (inputs[0][0], "FP32", inputs[0][2])  # tritonclient sends what numpy holds
    for r in rows:  # /v1 gets the same (float32) values
        r[inputs[0][0]] = float(np.float32(r[inputs[0][0]]))
    raw, length = binary_request(inputs, id="bin-1",
                                 outputs=[{"name": "predictions", "parameters": {"binary_data": True}},
                                          {"name": "probabilities", "parameters": {"binary_data": True}}])
    answer = requests.post(f"{url}/v2/models/{name}/infer", data=raw, timeout=30,
                           headers={HEADER: str(length), "content-type": "application/octet-stream"})
    assert answer.status_code == 200, answer.text
    assert answer.headers["content-type"] == "application/octet-stream"
    decoded = decode_response(answer.content, int(answer.headers[HEADER]))
    v1 = requests.post(f"{url}/v1/predict", json={"records": rows}, timeout=30).json()
    assert decoded["predictions"] == [str(p) for p in v1["predictions"]]
    assert np.allclose(decoded["probabilities"], np.ravel(v1["probabilities"]))
    assert json.loads(answer.content[:int(answer.headers[HEADER])])["id"] == "bin-1"


def test_a_malformed_binary_request_is_a_4xx_naming_the_input_and_serving_goes_on(served):
    from tests.serving.test_server import raw_rows

    rs, url = served
    name = rs.models.name
    row = raw_rows(rs, 1)[0]
    inputs = [(column, "FP64", [value]) for column, value in row.items()]
    raw, length = binary_request(inputs)
    first = inputs[0][0]
    for body, header, status, field in ((raw[:-3], length, 400, inputs[-1][0]),
                                        (raw, len(raw) + 10, 400, "Inference-Header-Content-Length"),
                                        (raw.replace(b'"FP64"', b'"BF16"', 1), length, 422, first)):
        answer = requests.post(f"{url}/v2/models/{name}/infer", data=body, headers={HEADER: str(header)}, timeout=30)
        assert answer.status_code == status and answer.json()["field"] == field, answer.text
    assert requests.post(f"{url}/v2/models/{name}/infer", data=raw, headers={HEADER: str(length)},
                         timeout=30).status_code == 200
