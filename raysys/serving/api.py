"""The HTTP API of a model server replica: ``/v1/predict``, the Open Inference Protocol, health.

Bodies are parsed by :mod:`raysys.serving.payloads` (pure), so every client mistake becomes a
4xx with a JSON ``{"error", "field"}`` body and the server keeps serving; only a fault of the
server itself is a 5xx. A body is read only up to ``serve.max_body_bytes`` (413 beyond, judged
by its Content-Length before reading when it has one).
"""

from __future__ import annotations

import importlib
import logging
import uuid
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel, Field

import raysys
from raysys.serving import auth, oip_binary, payloads
from raysys.serving.feedback import FeedbackItem, LabelSpace, parse_feedback
from raysys.serving.payloads import RequestError

if TYPE_CHECKING:
    from raysys.serving.server import ModelServer, Served

REQUEST_ID = "x-request-id"
logger = logging.getLogger(__name__)


class PredictResponse(BaseModel):
    """The answer of ``/v1/predict``."""

    request_id: str
    model: str
    model_version: int = Field(description="The registry version that answered.")
    predictions: list[Any] = Field(description="Class labels, or values for regression.")
    probabilities: list[list[float]] | None = Field(None, description="Per record, per class (classifiers).")
    classes: list[Any] | None = None
    decisions: list[str] | None = Field(None, description="Per record, the action of the decision rules "
                                                          "(only when the deployment has rules: `decisions`).")
    explanations: list[dict[str, float]] | None = Field(
        None, description="With `\"explain\": true`: per record, raw input column → its attribution to the "
                          "explained output (P(positive class), P(predicted class), or the value).")
    explanation_baselines: list[float] | None = Field(
        None, description="With `\"explain\": true`: per record, the explained output of the baseline; with "
                          "integrated gradients a record's attributions sum to its output minus this.")


class FeedbackResponse(BaseModel):
    """The answer of ``/v1/feedback``."""

    accepted: int = Field(description="Labels accepted (written to logs/feedback/ off the request path).")


def build_api(server: ModelServer) -> FastAPI:
    """The FastAPI app of one replica; the request schema follows the plan being served."""
    app = FastAPI(title=f"raysys: {server.name}", version=raysys.__version__,
                  description=f"Predictions of the registered model '{server.name}' (task: {server.champion.task}).")
    _install_error_handlers(app)
    _document_requests(app, server)

    @app.get("/healthz", tags=["health"])
    async def healthz() -> dict[str, Any]:
        plan = server.plan
        return {"status": "ok", "model": server.name, "versions": plan.versions, "plan": plan.to_dict()}

    @app.post("/v1/predict", response_model=PredictResponse, tags=["predict"], openapi_extra=auth.documented("predict"),
              responses={**auth.RESPONSES, 400: {"description": "Malformed JSON"},
                         413: {"description": "Too many records, or a body over serve.max_body_bytes"},
                         422: {"description": "A field is missing, unknown, of the wrong type, out of range, or "
                                              "breaks a schema rule (serve.input_checks: reject)"}})
    async def predict(request: Request) -> JSONResponse:
        """Predict one record or many; the answer names the model version that answered."""
        await server.guard.check(request, "predict")
        body, served = payloads.load_json(await _body(request, server.max_body_bytes)), server.served
        rows, key = payloads.parse_records(body, served.signature, server.max_records, **_limits(app, server, served))
        request_id = _request_id(request, None, server.max_string_chars)
        version, answer = await server.predict(rows, key, request_id, served, explain=body.get("explain") is True)
        # a Response skips FastAPI's re-validation of the answer; response_model still documents it
        return JSONResponse({"request_id": request_id, "model": server.name, "model_version": version, **answer})

    @app.post("/v1/feedback", status_code=202, response_model=FeedbackResponse, tags=["feedback"],
              openapi_extra={"requestBody": _feedback_body(), **auth.documented("feedback")},
              responses={**auth.RESPONSES, 400: {"description": "Malformed JSON"},
                         413: {"description": "More labels than serve.max_records, or a body over "
                                              "serve.max_body_bytes"},
                         422: {"description": "A field is missing, unknown or of the wrong type, or a label "
                                              "the model cannot have"}})
    async def feedback(request: Request) -> JSONResponse:
        """Labels for answered requests (delayed ground truth): one or a list, written to
        ``logs/feedback/`` off the request path and joined to the predictions by the monitor."""
        await server.guard.check(request, "feedback")
        body = payloads.load_json(await _body(request, server.max_body_bytes))
        labels = parse_feedback(body, _label_space(app, server.served), server.max_records,
                                server.max_string_chars, datetime.now(timezone.utc))
        server.feedback.add(labels)
        return JSONResponse({"accepted": len(labels)}, status_code=202)

    @app.get("/v2", tags=["open inference protocol"])
    async def server_metadata() -> dict[str, Any]:
        return {"name": "raysys", "version": raysys.__version__, "extensions": [oip_binary.EXTENSION]}

    @app.get("/v2/health/live", tags=["open inference protocol"])
    async def live() -> dict[str, bool]:
        return {"live": True}

    @app.get("/v2/health/ready", tags=["open inference protocol"])
    async def ready() -> dict[str, bool]:
        return {"ready": server.plan is not None}

    @app.get("/v2/models/{name}", tags=["open inference protocol"], openapi_extra=auth.documented("predict"),
             responses=auth.RESPONSES)
    async def model_metadata(name: str, request: Request) -> dict[str, Any]:
        await server.guard.check(request, "predict")
        model, served = _model(server, name), server.served
        return payloads.oip_metadata(name, served.plan.versions, served.signature, model.task,
                                     served.rules is not None)

    @app.get("/v2/models/{name}/ready", tags=["open inference protocol"], openapi_extra=auth.documented("predict"),
             responses=auth.RESPONSES)
    async def model_ready(name: str, request: Request) -> dict[str, Any]:
        await server.guard.check(request, "predict")
        _model(server, name)
        return {"name": name, "ready": True}

    @app.post("/v2/models/{name}/infer", tags=["open inference protocol"], openapi_extra=auth.documented("predict"),
              responses=auth.RESPONSES)
    async def infer(name: str, request: Request) -> Response:
        """Open Inference Protocol infer: columnar input tensors, one per model input, in JSON or
        binary (the binary tensor data extension, ``Inference-Header-Content-Length``)."""
        await server.guard.check(request, "predict")
        model = _model(server, name)
        raw, served = await _body(request, server.max_body_bytes), server.served
        body = oip_binary.read_request(raw, request.headers.get(oip_binary.HEADER), server.max_records)
        rows, request_id, key = payloads.parse_oip(body, served.signature, server.max_records,
                                                   **_limits(app, server, served))
        requested = oip_binary.requested_outputs(body, payloads.oip_output_names(model.task, served.rules is not None))
        request_id = _request_id(request, request_id, server.max_string_chars)
        version, answer = await server.predict(rows, key, request_id, served)
        response = payloads.oip_response(name, version, request_id, answer)
        binary = oip_binary.encode_response(response, requested)
        if binary is None:
            return JSONResponse(response)
        content, header_length = binary
        return Response(content, media_type="application/octet-stream",
                        headers={oip_binary.HEADER: str(header_length)})

    for target in server.settings.get("extensions", ()):  # e.g. the dashboard: "module:install"
        _extension(target)(app, server)
    return app


def _extension(target: str):
    """The ``install(app, server)`` function named by a ``"module:function"`` import string."""
    module, _, function = target.partition(":")
    return getattr(importlib.import_module(module), function)


def _document_requests(app: FastAPI, server: ModelServer) -> None:
    """OpenAPI for the current plan: ``/v1/predict``'s body (inputs, their ranges and string
    lengths) is rebuilt when a move changes the plan."""
    generate = app.openapi

    def openapi() -> dict[str, Any]:
        served = server.served
        if app.openapi_schema is None or app.state.documented is not served:
            app.openapi_schema = None
            spec = generate()
            limits = _limits(app, server, served)
            schema = payloads.request_model(served.signature, server.max_records, False, limits["max_string_chars"],
                                            limits["ranges"]).model_json_schema(ref_template="#/components/schemas/{model}")
            spec.setdefault("components", {}).setdefault("schemas", {}).update(schema.pop("$defs", {}))
            spec["components"]["securitySchemes"] = auth.security_scheme()
            spec["paths"]["/v1/predict"]["post"]["requestBody"] = {
                "required": True, "content": {"application/json": {"schema": schema}}}
            app.state.documented, app.openapi_schema = served, spec
        return app.openapi_schema

    app.openapi = openapi


def _model(server: ModelServer, name: str):
    if name != server.name:
        raise RequestError(f"model {name!r} is not served here (this server serves {server.name!r})",
                           status=404, field="name")
    return server.champion


async def _body(request: Request, limit: int) -> bytes:
    """The request body, read only while it stays within ``limit`` bytes (else a 413).

    A Content-Length over the limit is refused before reading anything; a body without one
    (chunked) is refused as soon as what arrived passes the limit.
    """
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and (len(declared) > 18 or int(declared) > limit):
        raise RequestError(f"body: {int(declared):,} bytes, at most {limit:,} (serve.max_body_bytes)", status=413,
                           field="body")
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise RequestError(f"body: more than {limit:,} bytes (serve.max_body_bytes)", status=413, field="body")
        chunks.append(chunk)
    return b"".join(chunks)


def _limits(app: FastAPI, server: ModelServer, served: Served) -> dict[str, Any]:
    """The parser's keyword arguments for this snapshot: string limit, numeric ranges, input checks."""
    cached = getattr(app.state, "ranges", None)
    if cached is None or cached[0] is not served:  # a new plan: its versions' ranges, once
        cached = app.state.ranges = (served, payloads.model_ranges(m.state for m in served.models.values()))
    return {"max_string_chars": server.max_string_chars, "ranges": cached[1], "checks": server.input_checks}


def _label_space(app: FastAPI, served: Served) -> LabelSpace:
    """The labels the served versions can have (computed once per plan)."""
    cached = getattr(app.state, "labels", None)
    if cached is None or cached[0] is not served:
        cached = app.state.labels = (served, LabelSpace.of(m.spec for m in served.models.values()))
    return cached[1]


def _feedback_body() -> dict[str, Any]:
    """``/v1/feedback``'s request body in the OpenAPI document: one item or a list of them."""
    item = FeedbackItem.model_json_schema()
    return {"required": True, "content": {"application/json": {"schema": {
        "anyOf": [item, {"type": "array", "items": item, "minItems": 1}]}}}}


def _request_id(request: Request, given: str | None, max_chars: int) -> str:
    """The body's request id, else the ``x-request-id`` header (at most ``max_chars``), else a new one."""
    header = request.headers.get(REQUEST_ID)
    if given is None and header is not None and len(header) > max_chars:
        raise RequestError(f"{REQUEST_ID}: header of {len(header):,} characters, at most {max_chars}",
                           field=REQUEST_ID)
    return given or header or uuid.uuid4().hex


def _install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(RequestError)
    async def request_error(request: Request, error: RequestError) -> JSONResponse:
        return JSONResponse(error.body(), status_code=error.status, headers=getattr(error, "headers", None))

    @app.exception_handler(Exception)
    async def server_error(request: Request, error: Exception) -> JSONResponse:  # a fault of ours, not the client's
        logger.exception("%s %s failed", request.method, request.url.path)
        return JSONResponse({"error": f"internal error ({type(error).__name__}); the request was not answered"},
                            status_code=500)

    @app.exception_handler(RequestValidationError)
    async def validation_error(request: Request, error: RequestValidationError) -> JSONResponse:
        first = error.errors()[0] if error.errors() else {"loc": ["body"], "msg": "invalid request"}
        field = ".".join(str(p) for p in first["loc"])
        return JSONResponse({"error": f"{field}: {first['msg']}", "field": field}, status_code=422)
