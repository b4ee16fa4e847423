"""The dashboard's admin actions: their request bodies (parsed, pure) and what each one does.

``POST /v1/admin/promote`` ``{"version"?, "reason"?}``: with a version, that version becomes the
champion (a blue-green move); without, the canary's challenger does. ``POST /v1/admin/rollback``
``{"to"?, "reason"?}``: end the canary/shadow, else back to the previous champion (or ``to``).
``POST /v1/admin/retrain`` ``{"reason"?}``: a manual retrain through the running monitor.
A malformed body is a :class:`RequestError` naming the field, raised before anything changes.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from raysys import audit
from raysys.errors import NotFound, RaysysError
from raysys.serving.payloads import RequestError

ACTOR = "dashboard"  # who the audit log names for every action taken here
FIELDS = {"promote": ("version", "reason"), "rollback": ("to", "reason"), "retrain": ("reason",)}
MAX_REASON_CHARS = 500
MAX_VERSION_CHARS = 64


@dataclass(frozen=True)
class Action:
    """A parsed admin action: its name, the version it names (if any) and the reason given."""

    name: str
    version: str | None = None
    reason: str = ""

    @property
    def version_field(self) -> str:
        """The body field that names the version (``version`` or ``to``)."""
        return "to" if self.name == "rollback" else "version"


def parse_action(name: str, body: Any) -> Action:
    """The action ``name`` asked for by a JSON ``body``; an unknown field or a wrong type is a 422."""
    if not isinstance(body, dict):
        raise RequestError(f"body: expected a JSON object like {{\"reason\": \"…\"}}, got {type(body).__name__}",
                           field="body")
    allowed = FIELDS[name]
    for key in body:
        if key not in allowed:
            raise RequestError(f"{str(key)[:64]}: unknown field (a {name} takes {', '.join(allowed)})", field=str(key)[:64])
    reason = body.get("reason", "")
    if reason is None:
        reason = ""
    if not isinstance(reason, str) or len(reason) > MAX_REASON_CHARS:
        raise RequestError(f"reason: expected text of at most {MAX_REASON_CHARS} characters", field="reason")
    version = None
    if len(allowed) > 1:
        version = _version(body.get(allowed[0]), allowed[0])
    return Action(name, version, reason)


def _version(value: Any, field: str) -> str | None:
    """A version number, an alias or ``latest``; None when not given."""
    if value is None:
        return None
    if isinstance(value, int) and not isinstance(value, bool) and value >= 1:
        return str(value)
    if isinstance(value, str) and value.strip() and len(value) <= MAX_VERSION_CHARS:
        return value.strip()
    raise RequestError(f"{field}: expected a version number (≥ 1) or an alias, got {str(value)[:64]!r}", field=field)


def carry_out(system, action: Action) -> dict[str, Any]:
    """Do ``action`` with ``system`` (blocking: call it off the event loop), audited as the dashboard.

    A version that does not exist is a 404 naming the field, an action that does not apply now
    (no canary to promote, the monitor not running) a 409; either way nothing changed.
    """
    try:
        return _do(system, action)
    except NotFound as error:
        raise RequestError(str(error), status=404, field=action.version_field) from None
    except RequestError:
        raise
    except RaysysError as error:
        raise RequestError(str(error), status=409, field=None) from None


def _do(system, action: Action) -> dict[str, Any]:
    reason = action.reason or f"{action.name} from the dashboard"
    serving = system.serving
    if action.name == "promote" and action.version is None:
        return serving.promote(actor=ACTOR, reason=reason)
    if action.name == "promote":
        return serving.deploy(action.version, "blue-green", actor=ACTOR, reason=reason)
    if action.name == "rollback":
        return serving.rollback(to=action.version, actor=ACTOR, reason=reason)
    result = system.monitor.retrain(reason)
    audit.record(system.storage, "dashboard.retrain", {"app": serving.app_name, "result": result},
                 actor=ACTOR, reason=reason)
    return {"action": "retrain", **result}
