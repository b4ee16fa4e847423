"""The dashboard's HTTP routes, installed in each serving replica by :func:`install`.

Serving loads this module only through the import string ``raysys.app.dashboard.routes:install``
in the replica settings (``settings["extensions"]``, set when ``serve.dashboard`` is on).
``GET /`` and ``GET /dashboard/static/<file>`` are open (the page holds no data); the JSON
routes and the admin actions need an admin key once auth is on (``server.guard``). Everything
that reads storage or moves traffic runs off the event loop, with a :class:`~raysys.System`
built in the replica from the config it was handed (its secrets masked: the dashboard needs none).
"""

from __future__ import annotations

import asyncio
import threading
import time
from importlib import resources
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import HTMLResponse, JSONResponse, Response

from raysys.app.dashboard import views
from raysys.app.dashboard.actions import FIELDS, Action, carry_out, parse_action
from raysys.serving import payloads
from raysys.serving.api import _body as read_body
from raysys.serving.payloads import RequestError

ROLE = "admin"  # the dashboard shows the audit log and moves traffic: admin keys only
ASSETS = {"dashboard.js": "text/javascript", "dashboard.css": "text/css"}
MAX_WINDOWS = 1000  # windows a drift or summary call reads at most
SETTLE_S = 30.0  # a move's answer waits at most this long for the replica to serve the new plan


class Dashboard:
    """The replica's view of the system: a :class:`~raysys.System` built on first use."""

    def __init__(self, config: dict[str, Any]):
        self.config = config
        self._system = None
        self._lock = threading.Lock()
        self._acting = threading.Lock()  # one admin action at a time per replica

    def act(self, action: Action) -> dict[str, Any]:
        """Carry out an admin action (blocking: the routes call it off the event loop)."""
        with self._acting:
            return carry_out(self.system, action)

    @property
    def system(self):
        """The System of the config this replica was handed (built once, in a worker thread)."""
        with self._lock:
            if self._system is None:
                from raysys.config import SystemConfig
                from raysys.system import System

                self._system = System(SystemConfig.model_validate(self.config))
            return self._system

    def summary(self, last: int) -> dict[str, Any]:
        """Versions with lineage, the traffic split, live numbers per version, open incidents."""
        from raysys import audit
        from raysys.monitoring.incidents import read_incidents

        system = self.system
        serving, registry = system.serving, system.models.registry
        plan = serving.plan()
        plan_dict = plan.to_dict() if plan else None
        versions = [v.to_dict() for v in registry.list_versions(system.models.name)]
        events = [e for e in audit.read_audit(system.storage) if e.get("app") == serving.app_name]
        windows = self._windows(last)
        return {"app": serving.app_name, "model": system.models.name, "plan": plan_dict,
                "traffic": views.traffic_split(plan_dict), "versions": views.version_rows(versions, plan_dict, events),
                "live": views.live_by_version(windows),
                "open_incidents": read_incidents(system.storage, serving.app_name, open_only=True),
                "windows": len(windows)}

    def drift(self, last: int) -> dict[str, Any]:
        """Per-feature drift p-values over the last ``last`` windows."""
        return views.drift_series(self._windows(last))

    def audit(self, limit: int) -> dict[str, Any]:
        """The newest ``limit`` audit events, newest first."""
        from raysys import audit

        return {"events": views.newest(audit.read_audit(self.system.storage), limit)}

    def _windows(self, last: int) -> list[dict[str, Any]]:
        from raysys.monitoring.state import StateStore

        system = self.system
        return StateStore(system.storage, system.serving.app_name).windows(last=last)


def install(app: FastAPI, server) -> None:
    """Add the dashboard's page, assets, JSON routes and admin actions to a replica's app."""
    dashboard = Dashboard(server.settings["config"])

    @app.get("/", include_in_schema=False)
    async def page() -> HTMLResponse:
        return HTMLResponse(_asset("index.html"))

    @app.get("/dashboard/static/{name}", include_in_schema=False)
    async def asset(name: str) -> Response:
        if name not in ASSETS:
            raise RequestError(f"name: no dashboard file {name[:64]!r}", status=404, field="name")
        return Response(_asset(name), media_type=ASSETS[name])

    @app.get("/v1/dashboard/summary", tags=["dashboard"])
    async def summary(request: Request, last: int = 200) -> JSONResponse:
        """Models and versions with lineage, the traffic split, live quality and latency, open incidents."""
        await server.guard.check(request, ROLE)
        return JSONResponse(await asyncio.to_thread(dashboard.summary, _bounded(last, "last", MAX_WINDOWS)))

    @app.get("/v1/dashboard/drift", tags=["dashboard"])
    async def drift(request: Request, last: int = 200) -> JSONResponse:
        """Per-feature drift p-values of the monitor's last windows, oldest first."""
        await server.guard.check(request, ROLE)
        return JSONResponse(await asyncio.to_thread(dashboard.drift, _bounded(last, "last", MAX_WINDOWS)))

    @app.get("/v1/dashboard/audit", tags=["dashboard"])
    async def audit_log(request: Request, limit: int = 100) -> JSONResponse:
        """The newest audit events, newest first."""
        await server.guard.check(request, ROLE)
        return JSONResponse(await asyncio.to_thread(dashboard.audit, _bounded(limit, "limit", 1000)))

    for name in FIELDS:
        _action_route(app, server, dashboard, name)


def _action_route(app: FastAPI, server, dashboard: Dashboard, name: str) -> None:
    @app.post(f"/v1/admin/{name}", tags=["dashboard"], name=f"admin_{name}",
              responses={400: {"description": "Malformed JSON"}, 401: {"description": "No valid key"},
                         403: {"description": "Not an admin key"}, 404: {"description": "Unknown version"},
                         409: {"description": "Does not apply now (no canary, monitor not running)"},
                         422: {"description": "A field is unknown or of the wrong type"}})
    async def action(request: Request) -> JSONResponse:
        await server.guard.check(request, ROLE)
        body = payloads.load_json(await read_body(request, server.max_body_bytes))
        parsed = parse_action(name, body)
        result = await asyncio.to_thread(dashboard.act, parsed)
        await _settled(server, result.get("plan"))
        return JSONResponse(result)

    action.__doc__ = f"Admin action: {name} (audited with actor 'dashboard')."


async def _settled(server, plan: dict[str, Any] | None, timeout_s: float = SETTLE_S) -> None:
    """Answer a move once this replica serves its plan (Serve may report the app RUNNING before it
    has handed the new plan to the replicas), so the next request sees it."""
    deadline = time.monotonic() + timeout_s
    while plan is not None and server.plan.generation < plan["generation"] and time.monotonic() < deadline:
        await asyncio.sleep(0.05)


def _bounded(value: int, field: str, most: int) -> int:
    if not 1 <= value <= most:
        raise RequestError(f"{field}: {value} is outside 1..{most}", field=field)
    return value


def _asset(name: str) -> bytes:
    """A file shipped in the package (``raysys/app/dashboard/static/``)."""
    return resources.files("raysys.app.dashboard").joinpath("static", name).read_bytes()
