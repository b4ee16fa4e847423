"""Staging directories: where in-progress writes go, each recording the process that owns it.

A write stages its files under ``<parent>/_staging/<id>/`` and moves them into place when it is
complete. The directory starts with an owner marker (pid, host and the process's start), so
``raysys gc`` can tell a crashed writer's leftovers (owner gone) from a write in progress.
"""

from __future__ import annotations

import os
import socket
import uuid
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Literal

from raysys.storage import Storage

STAGING = "_staging"
OWNER = "_owner.json"
OwnerStatus = Literal["running", "gone", "unknown"]


def begin(storage: Storage, parent: str) -> str:
    """Create ``<parent>/_staging/<id>/`` holding this process's owner marker; its path."""
    path = f"{parent}/{STAGING}/{uuid.uuid4().hex}"
    storage.write_json(owner_record(), path, OWNER)
    return path


def owner_record(pid: int | None = None) -> dict[str, Any]:
    """Who owns a staging directory: pid, host and the process's start (to survive pid reuse)."""
    pid = os.getpid() if pid is None else pid
    return {"pid": pid, "host": socket.gethostname(), "started": process_start(pid),
            "at": datetime.now(timezone.utc).isoformat()}


def owner_status(record: Any) -> OwnerStatus:
    """Whether the owner of a marker still runs; 'unknown' on another host or for a bad marker."""
    if not isinstance(record, dict) or record.get("host") != socket.gethostname():
        return "unknown"
    pid = record.get("pid")
    if not isinstance(pid, int) or isinstance(pid, bool) or pid <= 0:
        return "unknown"
    started = process_start(pid)
    if started is not None:  # a pid reused by a later process is not the owner
        return "running" if started == record.get("started") else "gone"
    if Path("/proc/self/stat").exists():
        return "gone"  # /proc works and has no such (living) process
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return "gone"
    except PermissionError:
        return "running"
    return "running"


def process_start(pid: int) -> str | None:
    """Boot id and start tick of a living process (Linux ``/proc``); None if none or unknown."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        boot = Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    except OSError:
        return None
    fields = stat.rsplit(")", 1)[1].split()  # after the command name, which may hold spaces
    if fields[0] in ("Z", "X"):  # a zombie or dead process: it will write nothing more
        return None
    return f"{boot}:{fields[19]}"  # field 22 of stat: start time in clock ticks since boot
