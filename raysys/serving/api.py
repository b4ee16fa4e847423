"""The HTTP API of a model server replica: ``/v1/predict``, the Open Inference Protocol, health.

Bodies are parsed by :mod:`raysys.serving.payloads` (pure), so every client mistake becomes a
4xx with a JSON ``{"error", "field"}`` body and the server keeps serving; only a fault of the
server itself is a 5xx.
"""

from __future__ import annotations

import json
import logging
from typing import TYPE_CHECKING, Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field

import raysys
from raysys.serving import payloads
from raysys.serving.payloads import RequestError

if TYPE_CHECKING:
    from raysys.serving.server import ModelServer

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

    @app.post("/v1/predict", response_model=PredictResponse, tags=["predict"],
              responses={400: {"description": "Malformed JSON"}, 413: {"description": "Too many records"},
                         422: {"description": "A field is missing, unknown or of the wrong type"}})
    async def predict(request: Request) -> JSONResponse:
        """Predict one record or many; the answer names the model version that answered."""
        body, served = await _json(request), server.served
        rows, key = payloads.parse_records(body, served.signature, server.max_records)
        request_id = request.headers.get(REQUEST_ID) or _new_id()
        version, answer = await server.predict(rows, key, request_id, served)
        # a Response skips FastAPI's re-validation of the answer; response_model still documents it
        return JSONResponse({"request_id": request_id, "model": server.name, "model_version": version, **answer})

    @app.get("/v2", tags=["open inference protocol"])
    async def server_metadata() -> dict[str, Any]:
        return {"name": "raysys", "version": raysys.__version__, "extensions": []}

    @app.get("/v2/health/live", tags=["open inference protocol"])
    async def live() -> dict[str, bool]:
        return {"live": True}

    @app.get("/v2/health/ready", tags=["open inference protocol"])
    async def ready() -> dict[str, bool]:
        return {"ready": server.plan is not None}

    @app.get("/v2/models/{name}", tags=["open inference protocol"])
    async def model_metadata(name: str) -> dict[str, Any]:
        model, served = _model(server, name), server.served
        return payloads.oip_metadata(name, served.plan.versions, served.signature, model.task)

    @app.get("/v2/models/{name}/ready", tags=["open inference protocol"])
    async def model_ready(name: str) -> dict[str, Any]:
        _model(server, name)
        return {"name": name, "ready": True}

    @app.post("/v2/models/{name}/infer", tags=["open inference protocol"])
    async def infer(name: str, request: Request) -> JSONResponse:
        """Open Inference Protocol infer: columnar input tensors, one per model input."""
        _model(server, name)
        body, served = await _json(request), server.served
        rows, request_id, key = payloads.parse_oip(body, served.signature, server.max_records)
        request_id = request_id or request.headers.get(REQUEST_ID) or _new_id()
        version, answer = await server.predict(rows, key, request_id, served)
        return JSONResponse(payloads.oip_response(name, version, request_id, answer))

    return app


def _document_requests(app: FastAPI, server: ModelServer) -> None:
    """OpenAPI for the current plan: ``/v1/predict``'s body is rebuilt when a move changes the inputs."""
    generate = app.openapi

    def openapi() -> dict[str, Any]:
        signature = server.served.signature
        if app.openapi_schema is None or app.state.documented != signature:
            app.openapi_schema = None
            spec = generate()
            schema = payloads.request_model(signature, server.max_records).model_json_schema(
                ref_template="#/components/schemas/{model}")
            spec.setdefault("components", {}).setdefault("schemas", {}).update(schema.pop("$defs", {}))
            spec["paths"]["/v1/predict"]["post"]["requestBody"] = {
                "required": True, "content": {"application/json": {"schema": schema}}}
            app.state.documented, app.openapi_schema = dict(signature), spec
        return app.openapi_schema

    app.openapi = openapi


def _model(server: ModelServer, name: str):
    if name != server.name:
        raise RequestError(f"model {name!r} is not served here (this server serves {server.name!r})",
                           status=404, field="name")
    return server.champion


async def _json(request: Request) -> Any:
    raw = await request.body()
    if not raw.strip():
        raise RequestError("body: empty; send a JSON object", status=400, field="body")
    try:
        return json.loads(raw)
    except (ValueError, UnicodeDecodeError) as error:
        raise RequestError(f"body: malformed JSON ({error})", status=400, field="body") from None


def _new_id() -> str:
    import uuid

    return uuid.uuid4().hex


def _install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(RequestError)
    async def request_error(request: Request, error: RequestError) -> JSONResponse:
        return JSONResponse(error.body(), status_code=error.status)

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
