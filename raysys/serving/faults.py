"""Serving faults, counted where they happen and reported by every replica to storage.

A challenger that raises falls back to the champion, and a shadow that raises, or finds no room
(``serve.max_shadow_in_flight``), is dropped: the client never sees either. So each replica counts,
per version and role (champion, challenger, shadow), the requests sent there, the ``failures``
(for a challenger: requests that fell back to the champion) and the ``dropped`` shadows, keeps
the last error of each, and logs failures with a stack trace at most once a minute per version
and role (with the number of failures it did not log).

What the loop's automatic rollback reads, and why it can trust it: every replica writes its
cumulative counts, with its replica id and start time, to
``serving/<app>/replicas/<replica>.json`` (atomic :meth:`Storage.write_json`) every
``serve.fault_report_s`` when they changed and once more on graceful shutdown. The request path
only increments a dict; the write is a background task. :func:`read_fault_counts` (and so
``raysys serve status``) sums every replica's file, live or gone, so the totals are monotonic
counters over the app's life; a rate is the difference of two readings. A replica that is killed
(not stopped) loses at most its last ``fault_report_s`` of counts.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from datetime import datetime, timezone
from typing import Any

from raysys.storage import Storage

ROLES = ("champion", "challenger", "shadow")
REPORT_DIR = "replicas"
ERROR_CHARS = 200  # the last error is kept this short (no request data echoed at length)
logger = logging.getLogger(__name__)


def _now() -> str:
    return datetime.now(timezone.utc).isoformat()


def describe(error: BaseException) -> str:
    """An error as one short line: its type and the start of its message."""
    text = " ".join(str(error).split())
    if len(text) > ERROR_CHARS:
        text = text[:ERROR_CHARS] + "…"
    return f"{type(error).__name__}: {text}" if text else type(error).__name__


class RateLimitedLog:
    """Log a failure with its stack trace at most once per ``interval_s`` per key; count the rest."""

    def __init__(self, log: logging.Logger, interval_s: float = 60.0,
                 clock: Callable[[], float] = time.monotonic):
        self.log, self.interval_s, self.clock = log, interval_s, clock
        self._last: dict[Any, float] = {}
        self._skipped: dict[Any, int] = {}

    def failure(self, key: Any, message: str, error: BaseException | None = None,
                level: int = logging.WARNING) -> bool:
        """Log ``message`` (and the error's stack) unless ``key`` was logged recently; True if logged."""
        now, last = self.clock(), self._last.get(key)
        if last is not None and now - last < self.interval_s:
            self._skipped[key] = self._skipped.get(key, 0) + 1
            return False
        self._last[key] = now
        skipped = self._skipped.pop(key, 0)
        more = f" ({skipped} more since the last report)" if skipped else ""
        self.log.log(level, "%s%s", message, more, exc_info=error)
        return True


class FaultCounters:
    """One replica's cumulative counts per version, role and event, and the last error of each."""

    def __init__(self, replica: str):
        self.replica, self.started_at = replica, _now()
        self.counts: dict[tuple[int, str, str], int] = {}
        self.errors: dict[tuple[int, str], str] = {}
        self.changed = False

    def count(self, version: int, role: str, event: str, error: BaseException | None = None) -> None:
        """Add one ``event`` (requests, failures, dropped) for ``version`` in ``role``."""
        key = (version, role, event)
        self.counts[key] = self.counts.get(key, 0) + 1
        if error is not None:
            self.errors[(version, role)] = describe(error)
        self.changed = True

    def snapshot(self) -> dict[str, Any]:
        """The report a replica writes: ``versions[version][role][event]`` (marks it reported)."""
        self.changed = False
        versions: dict[str, dict[str, dict[str, Any]]] = {}
        for (version, role, event), n in sorted(self.counts.items()):
            versions.setdefault(str(version), {}).setdefault(role, {})[event] = n
        for (version, role), message in self.errors.items():
            versions[str(version)][role]["last_error"] = message
        return {"replica": self.replica, "started_at": self.started_at, "updated_at": _now(),
                "versions": versions}


def total(reports: list[dict[str, Any]]) -> dict[str, Any]:
    """Replica reports summed: each count per version and role, the latest error, log totals."""
    versions: dict[str, dict[str, dict[str, Any]]] = {}
    log: dict[str, int] = {}
    reports = sorted(reports, key=lambda r: r.get("updated_at", ""))
    for report in reports:
        for version, roles in report.get("versions", {}).items():
            for role, events in roles.items():
                into = versions.setdefault(version, {}).setdefault(role, {})
                for event, value in events.items():
                    into[event] = value if event == "last_error" else into.get(event, 0) + value
        for name, value in report.get("prediction_log", {}).items():
            log[name] = log.get(name, 0) + value
    ordered = {v: versions[v] for v in sorted(versions, key=int)}
    return {"replicas": len(reports), "updated_at": reports[-1].get("updated_at") if reports else None,
            "versions": ordered, "prediction_log": log}


def read_fault_counts(storage: Storage, app: str) -> dict[str, Any]:
    """Every replica's latest report of ``app`` (``serving/<app>/replicas/``), summed."""
    import pyarrow.fs as pafs

    selector = pafs.FileSelector(storage.path("serving", app, REPORT_DIR), allow_not_found=True)
    reports = []
    for info in storage.fs.get_file_info(selector):
        if info.type == pafs.FileType.File and info.base_name.endswith(".json"):
            try:
                reports.append(storage.read_json("serving", app, REPORT_DIR, info.base_name))
            except (OSError, ValueError) as error:  # one unreadable report must not hide the rest
                logger.warning("serve status: skipped the replica report %s: %s", info.path, error)
    return total(reports)


class FaultReporter:
    """A replica's counters, its rate-limited failure log, and the task that reports them."""

    def __init__(self, storage: Storage, app: str, replica: str, interval_s: float,
                 extra: Callable[[], dict[str, Any]] = dict):
        self.storage, self.app, self.interval_s, self.extra = storage, app, interval_s, extra
        self.counters = FaultCounters(replica)
        self.failures = RateLimitedLog(logger)
        self._reported_extra: dict[str, Any] = {}
        self._stop = asyncio.Event()
        self._task: asyncio.Task | None = None

    def count(self, version: int, role: str, event: str) -> None:
        """Count an event (no I/O); the first one starts the background reporter."""
        self.counters.count(version, role, event)
        self._start()

    def failed(self, version: int, role: str, error: BaseException) -> None:
        """Count a failure of ``version`` in ``role``, keep its error, log it (rate-limited)."""
        self.counters.count(version, role, "failures", error)
        self.failures.failure((version, role), f"v{version} ({role}) failed: {describe(error)}", error)
        self._start()

    def _start(self) -> None:
        if self._task is None and not self._stop.is_set():
            self._task = asyncio.get_running_loop().create_task(self._report_forever())

    async def _report_forever(self) -> None:
        while not self._stop.is_set():
            try:
                await asyncio.wait_for(self._stop.wait(), timeout=self.interval_s)
            except asyncio.TimeoutError:
                pass
            await self.report()

    async def report(self) -> None:
        """Write this replica's report if anything changed since the last one."""
        extra = self.extra()
        if not self.counters.changed and extra == self._reported_extra:
            return
        report = {**self.counters.snapshot(), "prediction_log": extra}
        name = f"{self.counters.replica}.json"
        try:
            await asyncio.to_thread(self.storage.write_json, report, "serving", self.app, REPORT_DIR,
                                    name)
            self._reported_extra = extra
        except Exception as error:  # noqa: BLE001 - reporting must never take serving down
            self.counters.changed = True  # try again next time
            self.failures.failure("report", f"could not write serving/{self.app}/{REPORT_DIR}/{name}",
                                  error)

    async def close(self) -> None:
        """Stop the reporter after one last report (graceful replica shutdown)."""
        self._stop.set()
        if self._task is not None:
            await self._task
        else:
            await self.report()


def fault_rows(counts: dict[str, Any]) -> list[list[Any]]:
    """The summed counts as table rows: version, role, requests, failures, dropped, last error."""
    return [[f"v{version}", role, events.get("requests", 0), events.get("failures", 0),
             events.get("dropped", 0), events.get("last_error", "")]
            for version, roles in counts.get("versions", {}).items()
            for role in ROLES if (events := roles.get(role))]
