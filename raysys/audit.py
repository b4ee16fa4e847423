"""The audit trail: one immutable JSON record per action (deploys, rollbacks, alias moves, …).

Each event is its own file under ``audit/`` (no appends, so it works on object stores too);
:func:`read_audit` returns them oldest first. Secrets in an event's details and reason (a URL's
password, a remembered config secret) are masked before it is written.
"""

from __future__ import annotations

import getpass
import uuid
from datetime import datetime, timezone
from typing import Any

from raysys.secrets import mask_text, mask_values
from raysys.storage import Storage

AUDIT_DIR = "audit"


def record(storage: Storage, action: str, details: dict[str, Any], actor: str | None = None,
           reason: str = "") -> dict[str, Any]:
    """Write one audit event and return it."""
    at = datetime.now(timezone.utc)
    event = {"at": at.isoformat(), "action": action, "actor": actor or getpass.getuser(),
             "reason": mask_text(reason), **mask_values(details)}
    storage.write_json(event, AUDIT_DIR, f"{at.strftime('%Y%m%dT%H%M%S%f')}-{uuid.uuid4().hex[:8]}.json")
    return event


def read_audit(storage: Storage, action_prefix: str = "") -> list[dict[str, Any]]:
    """Every event (optionally only actions starting with ``action_prefix``), oldest first."""
    import pyarrow.fs as pafs

    selector = pafs.FileSelector(storage.path(AUDIT_DIR), allow_not_found=True)
    names = sorted(i.base_name for i in storage.fs.get_file_info(selector) if i.base_name.endswith(".json"))
    events = [storage.read_json(AUDIT_DIR, name) for name in names]
    return [e for e in events if e["action"].startswith(action_prefix)]
