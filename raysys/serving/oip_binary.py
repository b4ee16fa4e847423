"""The Open Inference Protocol's binary tensor data extension (KServe v2, Triton), pure bytes.

A request with an ``Inference-Header-Content-Length`` header carries that many bytes of JSON,
then the raw data of each input whose ``parameters.binary_data_size`` is set, in the order of
``inputs``: little-endian, row major, BOOL one byte, BYTES elements a 4-byte little-endian length
and the bytes. :func:`read_request` turns such inputs back into ``data`` lists, so
:func:`raysys.serving.payloads.parse_oip` checks them like JSON tensors. Outputs asked for with
``parameters.binary_data`` (or the request's ``parameters.binary_data_output``) are answered the
same way by :func:`encode_response`: a JSON header whose outputs carry ``binary_data_size``, the
header's length in ``Inference-Header-Content-Length``, then the data.
"""

from __future__ import annotations

import json
import struct
from typing import Any

import numpy as np

from raysys.data.validation import clip_text
from raysys.serving.payloads import RequestError, load_json, tensor_size

HEADER = "inference-header-content-length"
EXTENSION = "binary_tensor_data"  # its name in GET /v2's extensions (as Triton reports it)
FIXED_TYPES = {"BOOL": "<u1", "UINT8": "<u1", "UINT16": "<u2", "UINT32": "<u4", "UINT64": "<u8",
               "INT8": "<i1", "INT16": "<i2", "INT32": "<i4", "INT64": "<i8",
               "FP16": "<f2", "FP32": "<f4", "FP64": "<f8"}
_LENGTH = struct.Struct("<I")


def read_request(raw: bytes, header_length: str | None, max_records: int) -> Any:
    """The JSON body of an infer request, binary inputs decoded into ``data`` lists.

    Without the header the whole body is JSON. A header length beyond the body, a binary size
    that does not fit, bytes left over or an unknown datatype is a 400/422 naming the input.
    """
    if header_length is None:
        return load_json(raw)
    if not header_length.isdigit() or int(header_length) > len(raw):
        raise RequestError(f"Inference-Header-Content-Length: {header_length[:20]!r} is not a length within the "
                           f"{len(raw):,}-byte body", status=400, field="Inference-Header-Content-Length")
    split = int(header_length)
    body, data = load_json(raw[:split]), memoryview(raw)[split:]
    inputs = body.get("inputs") if isinstance(body, dict) else None
    offset = 0
    for index, tensor in enumerate(inputs if isinstance(inputs, list) else []):
        size = _binary_size(tensor, index)
        if size is None:
            continue
        name = clip_text(tensor["name"]) if isinstance(tensor.get("name"), str) else f"inputs[{index}]"
        if offset + size > len(data):
            raise RequestError(f"{name}: binary_data_size {size:,} goes past the end of the body "
                               f"({len(data) - offset:,} bytes left)", status=400, field=name)
        tensor["data"] = _decode(bytes(data[offset:offset + size]), tensor.get("datatype"), name,
                                 tensor_size(tensor.get("shape"), name, max_records))
        offset += size
    if offset != len(data):
        raise RequestError(f"body: {len(data) - offset:,} bytes after the inputs' binary data", status=400,
                           field="body")
    return body


def requested_outputs(body: Any, names: list[str]) -> dict[str, bool]:
    """The outputs to answer (default: all ``names``), each with whether it goes as binary data."""
    parameters = body.get("parameters") if isinstance(body.get("parameters"), dict) else {}
    default = _flag(parameters, "binary_data_output", "parameters.binary_data_output", False)
    wanted = body.get("outputs")
    if wanted is None:
        return dict.fromkeys(names, default)
    if not isinstance(wanted, list) or not wanted:
        raise RequestError("outputs: expected a non-empty list of {name, parameters}", field="outputs")
    requested: dict[str, bool] = {}
    for index, output in enumerate(wanted):
        where = f"outputs[{index}]"
        if not isinstance(output, dict) or output.get("name") not in names:
            raise RequestError(f"{where}.name: not an output; outputs are {', '.join(names)}", field=f"{where}.name")
        given = output.get("parameters") if isinstance(output.get("parameters"), dict) else {}
        requested[output["name"]] = _flag(given, "binary_data", f"{where}.parameters.binary_data", default)
    return requested


def encode_response(response: dict[str, Any], requested: dict[str, bool]) -> tuple[bytes, int] | None:
    """The response body and its JSON header's length, or None when nothing goes as binary.

    ``response`` is a JSON OIP infer response; only the ``requested`` outputs are kept (in place).
    """
    response["outputs"] = [o for o in response["outputs"] if o["name"] in requested]
    if not any(requested.values()):
        return None
    blobs = []
    for output in response["outputs"]:
        if requested[output["name"]]:
            blob = _encode(output.pop("data"), output["datatype"])
            output["parameters"] = {**output.get("parameters", {}), "binary_data_size": len(blob)}
            blobs.append(blob)
    header = json.dumps(response, allow_nan=False).encode()
    return header + b"".join(blobs), len(header)


def _binary_size(tensor: Any, index: int) -> int | None:
    parameters = tensor.get("parameters") if isinstance(tensor, dict) else None
    size = parameters.get("binary_data_size") if isinstance(parameters, dict) else None
    if size is None:
        return None
    if not isinstance(size, int) or isinstance(size, bool) or size < 0:
        where = f"inputs[{index}].parameters.binary_data_size"
        raise RequestError(f"{where}: must be a whole number of bytes >= 0", status=400, field=where)
    return size


def _flag(parameters: dict[str, Any], key: str, where: str, default: bool) -> bool:
    value = parameters.get(key, default)
    if not isinstance(value, bool):
        raise RequestError(f"{where}: expected true or false", field=where)
    return value


def _decode(blob: bytes, datatype: Any, name: str, count: int) -> list[Any]:
    """``count`` elements of ``datatype`` from ``blob`` as Python values (exactly, nothing left)."""
    if datatype == "BYTES":
        return _decode_bytes(blob, name, count)
    if datatype not in FIXED_TYPES:
        shown = datatype[:20] if isinstance(datatype, str) else type(datatype).__name__
        raise RequestError(f"{name}: datatype {shown!r} cannot be sent as binary data; use one of BYTES, "
                           f"{', '.join(FIXED_TYPES)}", field=name)
    dtype = np.dtype(FIXED_TYPES[datatype])
    if len(blob) != count * dtype.itemsize:
        raise RequestError(f"{name}: {len(blob):,} bytes of binary data, but shape and {datatype} need "
                           f"{count * dtype.itemsize:,}", status=400, field=name)
    values = np.frombuffer(blob, dtype=dtype)
    if datatype == "BOOL":
        if (values > 1).any():
            raise RequestError(f"{name}: a BOOL byte must be 0 or 1", field=name)
        return values.astype(bool).tolist()
    return values.tolist()


def _decode_bytes(blob: bytes, name: str, count: int) -> list[str]:
    values, offset = [], 0
    while offset < len(blob) and len(values) < count:
        if offset + _LENGTH.size > len(blob):
            break
        (length,) = _LENGTH.unpack_from(blob, offset)
        start, offset = offset + _LENGTH.size, offset + _LENGTH.size + length
        if offset > len(blob):
            break
        try:
            values.append(blob[start:offset].decode("utf-8"))
        except UnicodeDecodeError:
            raise RequestError(f"{name}[{len(values)}]: BYTES element is not UTF-8 text", field=name) from None
    if len(values) != count or offset != len(blob):
        raise RequestError(f"{name}: binary BYTES data does not hold the {count} length-prefixed elements its "
                           f"shape needs", status=400, field=name)
    return values


def _encode(data: list[Any], datatype: str) -> bytes:
    if datatype == "BYTES":
        encoded = [str(value).encode() for value in data]
        return b"".join(_LENGTH.pack(len(e)) + e for e in encoded)
    return np.asarray(data, dtype=FIXED_TYPES[datatype]).tobytes()
