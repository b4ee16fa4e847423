"""The audit trail: one immutable JSON record per action (deploys, rollbacks, alias moves, …).

Each event is its own file under ``audit/`` (no appends, so it works on object stores too);
:func:`read_audit` returns them oldest first. Secrets in an event's details and reason (a URL's
password, a remembered config secret) are masked before it is written.
"""

from __future__ import annotations

import getpass
import re
import uuid
from datetime import datetime, timedelta, timezone
from typing import Any

from raysys.errors import RaysysError
from raysys.secrets import mask_text, mask_values
from raysys.storage import Storage

AUDIT_DIR = "audit"
_NAME_TIME = "%Y%m%dT%H%M%S%f"  # an event file's name starts with its UTC time


def record(storage: Storage, action: str, details: dict[str, Any], actor: str | None = None,
           reason: str = "") -> dict[str, Any]:
    """Write one audit event and return it."""
    at = datetime.now(timezone.utc)
    event = {"at": at.isoformat(), "action": action, "actor": actor or getpass.getuser(),
             "reason": mask_text(reason), **mask_values(details)}
    storage.write_json(event, AUDIT_DIR, f"{at.strftime(_NAME_TIME)}-{uuid.uuid4().hex[:8]}.json")
    return event


def read_audit(storage: Storage, action_prefix: str = "",
               since: datetime | None = None) -> list[dict[str, Any]]:
    """Every event, oldest first (only actions starting with ``action_prefix``, since ``since``)."""
    import pyarrow.fs as pafs

    selector = pafs.FileSelector(storage.path(AUDIT_DIR), allow_not_found=True)
    names = sorted(i.base_name for i in storage.fs.get_file_info(selector) if i.base_name.endswith(".json"))
    if since is not None:  # file names start with the event's UTC time: skip older files unread
        since = since if since.tzinfo else since.astimezone()
        first = since.astimezone(timezone.utc).strftime(_NAME_TIME)
        names = [name for name in names if name[: len(first)] >= first]
    events = [storage.read_json(AUDIT_DIR, name) for name in names]
    return [e for e in events if e["action"].startswith(action_prefix)
            and (since is None or datetime.fromisoformat(e["at"]) >= since)]


_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhdw])\s*$")
_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


def parse_since(text: str, now: datetime | None = None) -> datetime:
    """A ``--since`` value: an ISO time (local if it has no offset) or a duration back from now
    (``90s``, ``30m``, ``1h``, ``2d``, ``1w``)."""
    duration = _DURATION.match(text)
    if duration:
        now = now or datetime.now(timezone.utc)
        return now - timedelta(seconds=float(duration.group(1)) * _SECONDS[duration.group(2)])
    try:
        moment = datetime.fromisoformat(text.strip())
    except ValueError:
        raise RaysysError(f"since: {text!r} is neither an ISO time (2026-01-31T12:00:00+00:00) "
                          "nor a duration (30m, 1h, 2d)") from None
    return moment if moment.tzinfo else moment.astimezone()
