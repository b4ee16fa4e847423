"""Request and response bodies as pure functions: JSON in, a checked frame of raw inputs out.

The request schema comes from the model's input signature (the raw columns its fitted
preprocessing reads, with their types), so the OpenAPI document describes exactly what a
version accepts. Two wire formats are understood: raysys's ``/v1/predict`` records and the
Open Inference Protocol (KServe v2) columnar tensors (their binary form is decoded by
:mod:`raysys.serving.oip_binary` first).

No body can cost the server more than bounded work: numbers must be finite and inside the range
the model computes in (float32, and a scaled feature within ``FEATURE_LIMIT``), strings at most
``max_string_chars`` long (never echoed into messages), OIP shapes are bounded by
``max_records`` before anything is multiplied, and nested data is walked without recursion.
"""

from __future__ import annotations

import functools
import json
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Annotated, Any

import numpy as np
import pandas as pd
from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationError, create_model

from raysys.data.validation import clip_text
from raysys.errors import RaysysError

if TYPE_CHECKING:
    from raysys.serving.input_checks import InputChecks

JSON_TYPES: dict[str, Any] = {"int": int, "float": float, "bool": bool, "string": str, "category": str,
                              "timestamp": str}
OIP_TYPES = {"int": "INT64", "float": "FP64", "bool": "BOOL", "string": "BYTES", "category": "BYTES",
             "timestamp": "BYTES"}
FLOAT32_MAX = float(np.finfo(np.float32).max)  # the network computes in float32
FEATURE_LIMIT = 1e9  # a scaled feature beyond ± this many training std devs (or ranges) is refused
MAX_STRING_CHARS = 1024  # default of serve.max_string_chars
MAX_DEPTH = 32  # nesting levels of OIP tensor data
Range = tuple[float, float]
FULL_RANGE: Range = (-FLOAT32_MAX, FLOAT32_MAX)


class NonFiniteAnswer(RuntimeError):
    """The model answered NaN or infinity: a fault of the server (500), never sent as JSON."""


def _whole(value: float) -> float:
    if value != int(value):
        raise ValueError("must be a whole number")
    return value


def number_type(kind: str, value_range: Range = FULL_RANGE) -> Any:
    """A finite JSON number inside ``value_range``; for ``int`` a whole one (3 and 3.0, not 3.5 or "3").

    The bounds are pydantic constraints (checked in Rust: no Python call per value).
    """
    low, high = value_range
    limits = Field(strict=True, allow_inf_nan=False, ge=low, le=high)
    return Annotated[float, limits, AfterValidator(_whole)] if kind == "int" else Annotated[float, limits]


def string_type(max_chars: int) -> Any:
    """A JSON string of at most ``max_chars`` characters (a longer one is named by its length only)."""
    return Annotated[str, Field(strict=True, max_length=max_chars)]


class RequestError(RaysysError):
    """A client's mistake: answered with ``status`` and a JSON body naming the field."""

    def __init__(self, message: str, status: int = 422, field: str | None = None):
        super().__init__(message)
        self.status, self.field = status, field

    def body(self) -> dict[str, Any]:
        """The JSON error body."""
        return {"error": str(self), **({"field": self.field} if self.field else {})}


def record_model(signature: dict[str, str], max_string_chars: int = MAX_STRING_CHARS,
                 ranges: Mapping[str, Range] | None = None) -> type[BaseModel]:
    """A pydantic model of one record: every input column, typed, nullable, nothing else.

    Numbers must lie in ``ranges[column]`` (default: the float32 range), strings be at most
    ``max_string_chars`` long.
    """
    fields: dict[str, Any] = {}
    for index, (column, kind) in enumerate(signature.items()):
        if kind in ("int", "float"):
            python = number_type(kind, (ranges or {}).get(column, FULL_RANGE))
        elif JSON_TYPES[kind] is str:
            python = string_type(max_string_chars)
        else:
            python = JSON_TYPES[kind]
        fields[f"f{index}"] = (python | None, Field(..., alias=column, strict=True))
    config = ConfigDict(extra="forbid", populate_by_name=False)
    return create_model("Record", __config__=config, **fields)


def request_model(signature: dict[str, str], max_records: int, many_only: bool = False,
                  max_string_chars: int = MAX_STRING_CHARS,
                  ranges: Mapping[str, Range] | None = None) -> type[BaseModel]:
    """The ``/v1/predict`` body: ``records`` (one object or a list) and an optional routing key."""
    return _request_model(tuple(signature.items()), max_records, many_only, max_string_chars,
                          tuple(sorted((ranges or {}).items())))


@functools.lru_cache(maxsize=64)
def _request_model(signature: tuple[tuple[str, str], ...], max_records: int, many_only: bool,
                   max_string_chars: int, ranges: tuple[tuple[str, Range], ...]) -> type[BaseModel]:
    """Built once per signature and limits (building a pydantic model costs ~1.5 ms; requests reuse it)."""
    record = record_model(dict(signature), max_string_chars, dict(ranges))
    records = list[record] if many_only else record | list[record]
    return create_model(
        "PredictRequest",
        __config__=ConfigDict(extra="forbid"),
        records=(records, Field(..., description=f"One record or 1..{max_records} records.")),
        key=(string_type(max_string_chars) | None,
             Field(None, description="Routing key: a sticky canary sends one key to one version.")),
        explain=(Annotated[bool, Field(strict=True)],
                 Field(False, description="Answer per-record feature attributions (`explanations`) too.")),
    )


def load_json(raw: bytes) -> Any:
    """A request body's JSON; empty, malformed or too deeply nested text is a 400.

    ``NaN`` and ``Infinity`` literals parse (as Python does) and are refused where they land,
    naming the field; nesting deep enough to exhaust the parser's recursion is refused here.
    """
    if not raw.strip():
        raise RequestError("body: empty; send a JSON object", status=400, field="body")
    try:
        return json.loads(raw)
    except RecursionError:
        raise RequestError("body: nested too deeply", status=400, field="body") from None
    except (ValueError, UnicodeDecodeError) as error:
        raise RequestError(f"body: malformed JSON ({error})", status=400, field="body") from None


def model_ranges(states: Iterable[Any]) -> dict[str, Range]:
    """Per numeric input, the values every version's float32 features can take (see FEATURE_LIMIT).

    ``states`` are fitted feature states (``inputs``, ``numeric``): a value whose scaled feature
    ``(x - shift) / divide`` would leave ``±FEATURE_LIMIT`` overflows the network's float32
    arithmetic into a NaN answer, so it is refused as the client's mistake before scoring.
    """
    ranges: dict[str, Range] = {}
    for state in states:
        for column, spec in state.numeric.items():
            if column in state.inputs:
                half = FEATURE_LIMIT * abs(spec["divide"])
                low, high = ranges.get(column, FULL_RANGE)
                ranges[column] = (max(low, spec["shift"] - half), min(high, spec["shift"] + half))
    return ranges


def parse_records(body: Any, signature: dict[str, str], max_records: int, *,
                  max_string_chars: int = MAX_STRING_CHARS, ranges: Mapping[str, Range] | None = None,
                  checks: InputChecks | None = None) -> tuple[Rows, str | None]:
    """The raw-input rows of a ``/v1/predict`` body and its routing key; RequestError if bad.

    ``ranges``: accepted values per numeric input (:func:`model_ranges`; default float32);
    ``checks``: the schema's rules, flagging the rows or refusing them.
    """
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
    model = request_model(signature, max_records, True, max_string_chars, ranges)
    try:
        parsed = model.model_validate(many)
    except ValidationError as error:
        raise _first_error(error, single=single) from None
    # valid records hold exactly the signature's keys with values of the right types: read them as sent
    rows = Rows.from_values({c: [r[c] for r in many["records"]] for c in signature}, signature, single=single)
    if checks is not None:
        rows = checks.apply(rows, lambda i, column: f"records.{column}" if single else f"records[{i}].{column}")
    return rows, parsed.key


def parse_oip(body: Any, signature: dict[str, str], max_records: int, *,
              max_string_chars: int = MAX_STRING_CHARS, ranges: Mapping[str, Range] | None = None,
              checks: InputChecks | None = None) -> tuple[Rows, str | None, str | None]:
    """Rows, request id and routing key of an Open Inference Protocol infer request.

    The keyword arguments are :func:`parse_records`'s; errors name tensor elements (``age[3]``).
    """
    if not isinstance(body, dict) or not isinstance(body.get("inputs"), list):
        raise RequestError("body: expected a JSON object with an 'inputs' list", field="inputs")
    columns: dict[str, list[Any]] = {}
    for index, tensor in enumerate(body["inputs"]):
        where = f"inputs[{index}]"
        if not isinstance(tensor, dict) or not isinstance(tensor.get("name"), str):
            raise RequestError(f"{where}: expected an object with name, shape, datatype and data", field=where)
        name, data, shape = tensor["name"], tensor.get("data"), tensor.get("shape")
        if name not in signature:
            raise RequestError(f"{where}.name: unknown input '{clip_text(name)}'; inputs are {', '.join(signature)}",
                               field=f"{where}.name")
        if name in columns:
            raise RequestError(f"{where}.name: input '{name}' sent twice", field=f"{where}.name")
        if not isinstance(data, list):
            raise RequestError(f"{name}: 'data' must be a list", field=name)
        size = tensor_size(shape, name, max_records)
        flat = _flatten(data, name, size)
        if len(flat) != size:
            raise RequestError(f"{name}: shape {clip_text(str(shape))} does not match {_count(flat, size)} values",
                               field=name)
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
        rows, _ = parse_records({"records": records}, signature, max_records, max_string_chars=max_string_chars,
                                ranges=ranges, checks=checks)
    except RequestError as error:  # name the tensor element: tenure[1], not records[1].tenure
        match = re.match(r"records\[(\d+)\]\.(.+)", error.field or "")
        if not match:
            raise
        field = f"{match.group(2)}[{match.group(1)}]"
        raise RequestError(f"{field}:{str(error).split(':', 1)[1]}", error.status, field) from None
    parameters = body.get("parameters") if isinstance(body.get("parameters"), dict) else {}
    request_id = _optional_string(body.get("id"), "id", max_string_chars)
    key = _optional_string(parameters.get("key"), "parameters.key", max_string_chars)
    return rows, request_id, key


def tensor_size(shape: Any, name: str, max_records: int) -> int:
    """The number of elements of an OIP ``shape``: whole numbers, bounded before multiplying.

    More than ``max_records`` elements is a 413 (a tensor holds one value per record), so a shape
    of huge numbers costs no big-number arithmetic.
    """
    if not isinstance(shape, list) or not all(isinstance(s, int) and not isinstance(s, bool) and s >= 0
                                              for s in shape):
        raise RequestError(f"{name}: shape must be a list of whole numbers >= 0", field=name)
    size = 1
    for dim in shape:
        if dim > max_records or size * dim > max_records:
            raise RequestError(f"inputs: {name} holds more than {max_records} values, at most {max_records} "
                               f"rows per request", status=413, field="inputs")
        size *= dim
    return size


def _optional_string(value: Any, field: str, max_chars: int) -> str | None:
    """A string parameter (id, key) or None when absent or not a string; too long is a 422."""
    if not isinstance(value, str):
        return None
    if len(value) > max_chars:
        raise RequestError(f"{field}: string of {len(value):,} characters, at most {max_chars}", field=field)
    return value


@dataclass(frozen=True)
class Rows:
    """Parsed records column by column, typed as the offline pipeline reads them (no frame built).

    Numbers are float64 arrays (null → NaN), timestamps datetime64[ns] in UTC, anything else an
    object array. ``LoadedModel.predict`` reads ``columns`` directly; ``frame()`` is for logs.
    ``flags`` (input checks on): per record ``""`` or the schema rules it broke, joined by "; "
    (``"age: above max 90"``); None where nothing was checked.
    """

    columns: dict[str, np.ndarray]
    count: int
    flags: np.ndarray | None = None

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
        flags = None
        if any(p.flags is not None for p in parts):  # unchecked parts stay None (not "")
            flags = np.concatenate([np.full(p.count, None, dtype=object) if p.flags is None else p.flags
                                    for p in parts])
        return cls({c: np.concatenate([p.columns[c] for p in parts]) for c in names}, sum(p.count for p in parts),
                   flags)

    def frame(self) -> pd.DataFrame:
        """The rows as a DataFrame."""
        return pd.DataFrame(self.columns, index=pd.RangeIndex(self.count))


def _timestamps(column: str, values: list[Any], single: bool) -> np.ndarray:
    parsed = pd.to_datetime(pd.Series(values, dtype=object), errors="coerce", utc=True, format="ISO8601")
    bad = parsed.isna() & pd.Series([v is not None for v in values])
    if bad.any():
        index = int(np.flatnonzero(bad.to_numpy())[0])
        field = f"records.{column}" if single else f"records[{index}].{column}"
        raise RequestError(f"{field}: not an ISO 8601 timestamp: '{clip_text(values[index])}'", field=field)
    return parsed.dt.tz_localize(None).to_numpy(dtype="datetime64[ns]")


def oip_metadata(name: str, versions: list[int], signature: dict[str, str], task: str,
                 decisions: bool = False) -> dict[str, Any]:
    """``GET /v2/models/{name}``: inputs and outputs as OIP tensors (``decision`` when rules are served)."""
    outputs = [{"name": "predictions", "datatype": "FP64" if task == "regression" else "BYTES", "shape": [-1]}]
    if task != "regression":
        outputs.append({"name": "probabilities", "datatype": "FP64", "shape": [-1, -1]})
    if decisions:
        outputs.append({"name": "decision", "datatype": "BYTES", "shape": [-1]})
    return {"name": name, "versions": [str(v) for v in versions], "platform": "raysys",
            "inputs": [{"name": c, "datatype": OIP_TYPES[k], "shape": [-1]} for c, k in signature.items()],
            "outputs": outputs}


def oip_output_names(task: str, decisions: bool = False) -> list[str]:
    """The outputs of an infer response: predictions, for classifiers probabilities, with rules the decision."""
    names = ["predictions"] if task == "regression" else ["predictions", "probabilities"]
    return [*names, "decision"] if decisions else names


def oip_response(name: str, version: int, request_id: str, answer: dict[str, Any]) -> dict[str, Any]:
    """An OIP infer response from a raysys answer (predictions, for classifiers probabilities, and decisions)."""
    predictions = answer["predictions"]
    regression = answer["probabilities"] is None
    outputs = [{"name": "predictions", "shape": [len(predictions)], "datatype": "FP64" if regression else "BYTES",
                "data": predictions if regression else [str(p) for p in predictions]}]
    if not regression:
        probabilities = answer["probabilities"]
        outputs.append({"name": "probabilities", "shape": [len(probabilities), len(probabilities[0])],
                        "datatype": "FP64", "data": [p for row in probabilities for p in row]})
    if answer.get("decisions") is not None:
        outputs.append({"name": "decision", "shape": [len(predictions)], "datatype": "BYTES",
                        "data": answer["decisions"]})
    return {"model_name": name, "model_version": str(version), "id": request_id, "outputs": outputs}


def require_finite(answer: dict[str, Any]) -> None:
    """NonFiniteAnswer if a prediction or probability is NaN or infinite (a server fault)."""
    values = answer["predictions"] if answer["probabilities"] is None else answer["probabilities"]
    if not np.isfinite(np.asarray(values, dtype=np.float64)).all():
        raise NonFiniteAnswer("the model answered NaN or infinity; the request was not answered")


def answer_from_output(output: np.ndarray, labels: np.ndarray, task: str, classes: list[Any] | None) -> dict[str, Any]:
    """Predictions and class probabilities as JSON-ready lists."""
    if task == "regression":
        return {"predictions": [float(v) for v in output], "probabilities": None, "classes": None}
    probabilities = np.column_stack([1.0 - output, output]) if task == "binary" else output
    return {"predictions": [_plain(v) for v in labels], "probabilities": probabilities.round(6).tolist(),
            "classes": [_plain(c) for c in classes or []]}


def _plain(value: Any) -> Any:
    return value.item() if isinstance(value, np.generic) else value


def _flatten(data: list[Any], name: str, size: int) -> list[Any]:
    """Row-major values of nested lists, walked without recursion; stops past ``size`` values."""
    flat: list[Any] = []
    stack = [iter(data)]
    while stack and len(flat) <= size:
        for item in stack[-1]:
            if isinstance(item, list):
                if len(stack) >= MAX_DEPTH:
                    raise RequestError(f"{name}: data nested deeper than {MAX_DEPTH} levels", field=name)
                stack.append(iter(item))
                break
            flat.append(item)
            if len(flat) > size:
                break
        else:
            stack.pop()
    return flat


def _count(flat: list[Any], size: int) -> str:
    return f"more than {size}" if len(flat) > size else str(len(flat))


def _first_error(error: ValidationError, single: bool) -> RequestError:
    """One readable message naming the field, e.g. ``records[3].tenure: Input should be a valid number``."""
    first = error.errors()[0]
    parts: list[str] = []
    for part in first["loc"]:
        if isinstance(part, int):
            if not single:
                parts[-1:] = [f"{parts[-1]}[{part}]"]
        else:
            parts.append(clip_text(str(part)))  # an unknown key can be megabytes long
    field = ".".join(parts) or "body"
    message, context = first["msg"], first.get("ctx", {})
    if first["type"] == "extra_forbidden":
        message = "unknown field (not an input of this model)" if len(parts) > 1 else "unknown field"
    elif first["type"] in ("less_than_equal", "greater_than_equal"):
        side, bound = ("most", context["le"]) if first["type"] == "less_than_equal" else ("least", context["ge"])
        message = f"{first['input']:.6g} is outside the model's input range (at {side} {bound:.6g})"
    elif first["type"] == "string_too_long":
        message = f"string of {len(first['input']):,} characters, at most {context['max_length']}"
    elif first["type"] == "missing":
        message = "missing" + (" (every input is required; send null to use the fitted default)" if len(parts) > 1 else "")
    return RequestError(f"{field}: {message}", field=field)
