"""Request and response bodies as pure functions: JSON in, a checked frame of raw inputs out.

The request schema comes from the model's input signature (the raw columns its fitted
preprocessing reads, with their types), so the OpenAPI document describes exactly what a
version accepts. Two wire formats are understood: raysys's ``/v1/predict`` records and the
Open Inference Protocol (KServe v2) columnar tensors.
"""

from __future__ import annotations

import functools
import math
import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Annotated, Any

import numpy as np
import pandas as pd
from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationError, create_model

from raysys.errors import RaysysError

JSON_TYPES: dict[str, Any] = {"int": int, "float": float, "bool": bool, "string": str, "category": str,
                              "timestamp": str}
OIP_TYPES = {"int": "INT64", "float": "FP64", "bool": "BOOL", "string": "BYTES", "category": "BYTES",
             "timestamp": "BYTES"}


def _whole(value: float) -> float:
    if value != int(value):
        raise ValueError("must be a whole number")
    return value


WHOLE_NUMBER = Annotated[float, AfterValidator(_whole)]  # 3 and 3.0 are fine, 3.5, "3" and true are not


class RequestError(RaysysError):
    """A client's mistake: answered with ``status`` and a JSON body naming the field."""

    def __init__(self, message: str, status: int = 422, field: str | None = None):
        super().__init__(message)
        self.status, self.field = status, field

    def body(self) -> dict[str, Any]:
        """The JSON error body."""
        return {"error": str(self), **({"field": self.field} if self.field else {})}


def record_model(signature: dict[str, str]) -> type[BaseModel]:
    """A pydantic model of one record: every input column, typed, nullable, nothing else."""
    fields: dict[str, Any] = {}
    for index, (column, kind) in enumerate(signature.items()):
        python = WHOLE_NUMBER if kind == "int" else JSON_TYPES[kind]
        extra = {"allow_inf_nan": False} if kind in ("int", "float") else {}
        fields[f"f{index}"] = (python | None, Field(..., alias=column, strict=True, **extra))
    config = ConfigDict(extra="forbid", populate_by_name=False)
    return create_model("Record", __config__=config, **fields)


def request_model(signature: dict[str, str], max_records: int, many_only: bool = False) -> type[BaseModel]:
    """The ``/v1/predict`` body: ``records`` (one object or a list) and an optional routing key."""
    return _request_model(tuple(signature.items()), max_records, many_only)


@functools.lru_cache(maxsize=64)
def _request_model(signature: tuple[tuple[str, str], ...], max_records: int, many_only: bool) -> type[BaseModel]:
    """Built once per signature (building a pydantic model costs ~1.5 ms; requests reuse it)."""
    record = record_model(dict(signature))
    records = list[record] if many_only else record | list[record]
    return create_model(
        "PredictRequest",
        __config__=ConfigDict(extra="forbid"),
        records=(records, Field(..., description=f"One record or 1..{max_records} records.")),
        key=(str | None, Field(None, description="Routing key: a sticky canary sends one key to one version.")),
    )


def parse_records(body: Any, signature: dict[str, str], max_records: int) -> tuple[Rows, str | None]:
    """The raw-input rows of a ``/v1/predict`` body and its routing key; RequestError if bad."""
    if not isinstance(body, dict):
        raise RequestError("body: expected a JSON object with 'records'", field="body")
    records = body.get("records")
    count = len(records) if isinstance(records, list) else 1
    if isinstance(records, list) and not records:
        raise RequestError("records: empty; send at least one record", field="records")
    if count > max_records:
        raise RequestError(f"records: {count} records, at most {max_records} per request", status=413,
                           field="records")
    single = not isinstance(records, list)
    many = {**body, "records": [records] if single else records} if "records" in body else body
    try:
        parsed = request_model(signature, max_records, many_only=True).model_validate(many)
    except ValidationError as error:
        raise _first_error(error, single=single) from None
    # valid records hold exactly the signature's keys with values of the right types: read them as sent
    rows = Rows.from_values({c: [r[c] for r in many["records"]] for c in signature}, signature, single=single)
    return rows, parsed.key


def parse_oip(body: Any, signature: dict[str, str], max_records: int) -> tuple[Rows, str | None, str | None]:
    """Frame, request id and routing key of an Open Inference Protocol infer request."""
    if not isinstance(body, dict) or not isinstance(body.get("inputs"), list):
        raise RequestError("body: expected a JSON object with an 'inputs' list", field="inputs")
    columns: dict[str, list[Any]] = {}
    for index, tensor in enumerate(body["inputs"]):
        where = f"inputs[{index}]"
        if not isinstance(tensor, dict) or not isinstance(tensor.get("name"), str):
            raise RequestError(f"{where}: expected an object with name, shape, datatype and data", field=where)
        name, data, shape = tensor["name"], tensor.get("data"), tensor.get("shape")
        if name not in signature:
            raise RequestError(f"{where}.name: unknown input {name!r}; inputs are {', '.join(signature)}",
                               field=f"{where}.name")
        if not isinstance(data, list) or not isinstance(shape, list):
            raise RequestError(f"{name}: 'data' and 'shape' must be lists", field=name)
        flat = _flatten(data)
        if math.prod(int(s) for s in shape if isinstance(s, int)) != len(flat):
            raise RequestError(f"{name}: shape {shape} does not match {len(flat)} values", field=name)
        columns[name] = flat
    missing = [c for c in signature if c not in columns]
    if missing:
        raise RequestError(f"inputs: missing {', '.join(map(repr, missing))}", field=missing[0])
    lengths = {len(v) for v in columns.values()}
    if len(lengths) != 1:
        raise RequestError(f"inputs: every input needs the same number of rows, got {sorted(lengths)}", field="inputs")
    (rows,) = lengths
    if rows == 0:
        raise RequestError("inputs: no rows", field="inputs")
    if rows > max_records:
        raise RequestError(f"inputs: {rows} rows, at most {max_records} per request", status=413, field="inputs")
    records = [{c: columns[c][i] for c in signature} for i in range(rows)]
    try:
        rows, _ = parse_records({"records": records}, signature, max_records)
    except RequestError as error:  # name the tensor element: tenure[1], not records[1].tenure
        match = re.match(r"records\[(\d+)\]\.(.+)", error.field or "")
        if not match:
            raise
        field = f"{match.group(2)}[{match.group(1)}]"
        raise RequestError(f"{field}:{str(error).split(':', 1)[1]}", error.status, field) from None
    parameters = body.get("parameters") if isinstance(body.get("parameters"), dict) else {}
    request_id = body.get("id") if isinstance(body.get("id"), str) else None
    key = parameters.get("key") if isinstance(parameters.get("key"), str) else None
    return rows, request_id, key


@dataclass(frozen=True)
class Rows:
    """Parsed records column by column, typed as the offline pipeline reads them (no frame built).

    Numbers are float64 arrays (null → NaN), timestamps datetime64[ns] in UTC, anything else an
    object array. ``LoadedModel.predict`` reads ``columns`` directly; ``frame()`` is for logs.
    """

    columns: dict[str, np.ndarray]
    count: int

    @classmethod
    def from_values(cls, columns: dict[str, list[Any]], signature: dict[str, str], single: bool = False) -> Rows:
        """Typed columns from JSON values; a timestamp that does not parse is a RequestError.

        ``single``: the body held one record, not a list (errors name ``records.x``).
        """
        out: dict[str, np.ndarray] = {}
        for column, kind in signature.items():
            values = columns[column]
            if kind in ("int", "float"):
                out[column] = np.array(values, dtype=np.float64)  # None → NaN
            elif kind == "timestamp":
                out[column] = _timestamps(column, values, single)
            else:
                out[column] = np.array(values, dtype=object)
        return cls(out, len(next(iter(columns.values()), [])))

    @classmethod
    def concat(cls, parts: list[Rows], columns: Iterable[str] | None = None) -> Rows:
        """Rows of several requests as one: ``columns`` (default: the first part's), each part has them."""
        names = list(parts[0].columns if columns is None else columns)
        if len(parts) == 1 and columns is None:
            return parts[0]
        return cls({c: np.concatenate([p.columns[c] for p in parts]) for c in names}, sum(p.count for p in parts))

    def frame(self) -> pd.DataFrame:
        """The rows as a DataFrame."""
        return pd.DataFrame(self.columns, index=pd.RangeIndex(self.count))


def _timestamps(column: str, values: list[Any], single: bool) -> np.ndarray:
    parsed = pd.to_datetime(pd.Series(values, dtype=object), errors="coerce", utc=True, format="ISO8601")
    bad = parsed.isna() & pd.Series([v is not None for v in values])
    if bad.any():
        index = int(np.flatnonzero(bad.to_numpy())[0])
        field = f"records.{column}" if single else f"records[{index}].{column}"
        raise RequestError(f"{field}: not an ISO 8601 timestamp: {values[index]!r}", field=field)
    return parsed.dt.tz_localize(None).to_numpy(dtype="datetime64[ns]")


def oip_metadata(name: str, versions: list[int], signature: dict[str, str], task: str) -> dict[str, Any]:
    """``GET /v2/models/{name}``: inputs and outputs as OIP tensors."""
    outputs = [{"name": "predictions", "datatype": "FP64" if task == "regression" else "BYTES", "shape": [-1]}]
    if task != "regression":
        outputs.append({"name": "probabilities", "datatype": "FP64", "shape": [-1, -1]})
    return {"name": name, "versions": [str(v) for v in versions], "platform": "raysys",
            "inputs": [{"name": c, "datatype": OIP_TYPES[k], "shape": [-1]} for c, k in signature.items()],
            "outputs": outputs}


def oip_response(name: str, version: int, request_id: str, answer: dict[str, Any]) -> dict[str, Any]:
    """An OIP infer response from a raysys answer (predictions and, for classifiers, probabilities)."""
    predictions = answer["predictions"]
    regression = answer["probabilities"] is None
    outputs = [{"name": "predictions", "shape": [len(predictions)], "datatype": "FP64" if regression else "BYTES",
                "data": predictions if regression else [str(p) for p in predictions]}]
    if not regression:
        probabilities = answer["probabilities"]
        outputs.append({"name": "probabilities", "shape": [len(probabilities), len(probabilities[0])],
                        "datatype": "FP64", "data": [p for row in probabilities for p in row]})
    return {"model_name": name, "model_version": str(version), "id": request_id, "outputs": outputs}


def answer_from_output(output: np.ndarray, labels: np.ndarray, task: str, classes: list[Any] | None) -> dict[str, Any]:
    """Predictions and class probabilities as JSON-ready lists."""
    if task == "regression":
        return {"predictions": [float(v) for v in output], "probabilities": None, "classes": None}
    probabilities = np.column_stack([1.0 - output, output]) if task == "binary" else output
    return {"predictions": [_plain(v) for v in labels], "probabilities": probabilities.round(6).tolist(),
            "classes": [_plain(c) for c in classes or []]}


def _plain(value: Any) -> Any:
    return value.item() if isinstance(value, np.generic) else value


def _flatten(data: list[Any]) -> list[Any]:
    flat: list[Any] = []
    for item in data:
        flat.extend(_flatten(item) if isinstance(item, list) else [item])
    return flat


def _first_error(error: ValidationError, single: bool) -> RequestError:
    """One readable message naming the field, e.g. ``records[3].tenure: Input should be a valid number``."""
    first = error.errors()[0]
    parts: list[str] = []
    for part in first["loc"]:
        if isinstance(part, int):
            if not single:
                parts[-1:] = [f"{parts[-1]}[{part}]"]
        else:
            parts.append(str(part))
    field = ".".join(parts) or "body"
    message = first["msg"]
    if first["type"] == "extra_forbidden":
        message = "unknown field (not an input of this model)" if len(parts) > 1 else "unknown field"
    elif first["type"] == "missing":
        message = "missing" + (" (every input is required; send null to use the fitted default)" if len(parts) > 1 else "")
    return RequestError(f"{field}: {message}", field=field)
