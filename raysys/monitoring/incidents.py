"""Incidents: what an alert rule's findings become over time (opened, updated, resolved).

One incident per rule and subject (``drift``, ``quality@v3``, …; see
:attr:`raysys.monitoring.alerts.Finding.key`). A finding whose key has no open incident opens
one; a repeat updates it (last seen, windows, latest evidence, the highest severity); an open
incident resolves after ``resolve_after`` consecutive clean windows, windows in which its rule
was checked and did not fire. A window in which its rule could not be checked (too few labels,
no drift report: :attr:`Findings.unchecked`) neither updates it nor counts as clean.

:meth:`IncidentBook.observe` is idempotent per window: a window sequence number not above the
last one observed changes nothing, so a restarted monitor that observes a window again opens,
updates and resolves nothing twice. Given the same book, findings, window and ``now`` it returns
the same changes with the same ids (pass the window's end as ``now`` for that), which lets the
sinks deliver each change once however often it is sent.

With no traffic no window closes, so the monitor checks the ``no_traffic`` rule on its own
between windows (:func:`~raysys.monitoring.alerts.evaluate_rules` with an empty summary) and
folds the result in with :meth:`IncidentBook.observe_idle`, which only opens incidents; the
next windows, with traffic again, resolve them.

The book is persisted as ``monitor/<app>/incidents.json`` (:func:`write_incidents`, atomic),
which ``raysys alerts list`` reads (:func:`read_incidents`).
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from typing import Any

from raysys.monitoring.alerts import SEVERITIES, Finding
from raysys.storage import Storage

MONITOR_DIR = "monitor"
INCIDENTS_FILE = "incidents.json"
MAX_WINDOWS = 100  # window numbers kept per incident (the newest); `fired` counts them all
CHANGE_KINDS = ("opened", "updated", "resolved")


@dataclass
class Incident:
    """One incident: a rule firing for a subject, from its first window until it resolves."""

    id: str
    rule: str
    subject: str
    severity: str
    status: str  # "open" | "resolved"
    message: str
    first_seen: str
    last_seen: str
    evidence: dict[str, Any]
    windows: list[int] = field(default_factory=list)  # newest MAX_WINDOWS windows it fired in
    fired: int = 0  # windows it fired in, all of them
    clean: int = 0  # consecutive clean windows (resolves at resolve_after)
    resolved_at: str | None = None

    @property
    def key(self) -> str:
        """The rule and subject this incident is about."""
        return incident_key(self.to_dict())

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON form."""
        return asdict(self)


def incident_key(incident: dict[str, Any]) -> str:
    """An incident's rule and subject, as a finding's key (``quality@v3``, ``drift``)."""
    rule, subject = incident["rule"], incident.get("subject")
    return f"{rule}@{subject}" if subject else rule


@dataclass(frozen=True)
class Change:
    """An incident opened, updated or resolved in a window; ``id`` is the same on a re-observe."""

    id: str
    kind: str  # one of CHANGE_KINDS
    window_seq: int
    incident: dict[str, Any]  # the incident as it stands after the change

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON form (what the webhook receives, with the app added)."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Change:
        """Read the JSON form back."""
        return cls(id=data["id"], kind=data["kind"], window_seq=int(data["window_seq"]),
                   incident=dict(data["incident"]))


def _iso(now: datetime | float | str) -> str:
    if isinstance(now, datetime):
        return now.isoformat()
    if isinstance(now, (int, float)):
        return datetime.fromtimestamp(now, timezone.utc).isoformat()
    return str(now)


class IncidentBook:
    """Every incident of one app, open and resolved, and the last window observed."""

    def __init__(self, resolve_after: int, incidents: Sequence[Incident] = (),
                 last_seq: int | None = None, next_id: int = 1, book_id: str | None = None):
        if resolve_after < 1:
            raise ValueError(f"resolve_after must be at least 1, got {resolve_after}")
        self.resolve_after = resolve_after
        self.incidents = list(incidents)
        self.last_seq = last_seq
        self.next_id = next_id
        self.book_id = book_id or uuid.uuid4().hex[:8]  # tells change ids of a wiped book apart

    def open(self) -> list[Incident]:
        """The open incidents, oldest first."""
        return [i for i in self.incidents if i.status == "open"]

    def observe(self, findings: Sequence[Finding], window_seq: int,
                now: datetime | float | str) -> list[Change]:
        """Fold one window's findings in; the changes, in order (nothing for a window seen before).

        ``findings`` is what :func:`~raysys.monitoring.alerts.evaluate_rules` returned; its
        ``unchecked`` keys hold their incidents as they are.
        """
        if self.last_seq is not None and window_seq <= self.last_seq:
            return []
        self.last_seq = window_seq
        at = _iso(now)
        unchecked = set(getattr(findings, "unchecked", ()))
        by_key: dict[str, Finding] = {}
        for finding in findings:  # one per key: the most severe (then the first)
            known = by_key.get(finding.key)
            if known is None or _rank(finding.severity) > _rank(known.severity):
                by_key[finding.key] = finding
        changes: list[Change] = []
        open_by_key = {i.key: i for i in self.open()}
        for key, finding in by_key.items():
            incident = open_by_key.get(key)
            if incident is None:
                incident = self._new(finding, at)
                kind = "opened"
            else:
                kind = "updated"
            incident.severity = max(incident.severity, finding.severity, key=_rank)
            incident.message, incident.evidence = finding.message, finding.evidence
            incident.last_seen = at
            incident.windows = [*incident.windows, window_seq][-MAX_WINDOWS:]
            incident.fired += 1
            incident.clean = 0
            changes.append(self._change(kind, incident, window_seq, len(changes)))
        for incident in open_by_key.values():
            if incident.key in by_key or incident.key in unchecked or incident.rule in unchecked:
                continue
            incident.clean += 1
            if incident.clean >= self.resolve_after:
                incident.status, incident.resolved_at = "resolved", at
                changes.append(self._change("resolved", incident, window_seq, len(changes)))
        return changes

    def observe_idle(self, findings: Sequence[Finding],
                     now: datetime | float | str) -> list[Change]:
        """Fold in findings of a step that closed no window (``no_traffic``): opens only.

        A finding whose incident is open refreshes its last seen and evidence quietly; nothing
        counts as a clean window and nothing resolves (the next windows do that). Calling it
        again, as a restarted monitor does, opens nothing twice.
        """
        at, changes = _iso(now), []
        open_keys = {i.key: i for i in self.open()}
        for finding in findings:
            incident = open_keys.get(finding.key)
            if incident is not None:
                incident.evidence, incident.last_seen = finding.evidence, at
                continue
            incident = open_keys[finding.key] = self._new(finding, at)
            change_id = f"{self.last_seq or 0:012d}-idle-{self.book_id}-{incident.id}-opened"
            changes.append(Change(change_id, "opened", self.last_seq or 0, incident.to_dict()))
        return changes

    def _new(self, finding: Finding, at: str) -> Incident:
        incident = Incident(id=f"inc-{self.next_id:04d}", rule=finding.rule,
                            subject=finding.subject, severity=finding.severity, status="open",
                            message=finding.message, first_seen=at, last_seen=at,
                            evidence=finding.evidence)
        self.next_id += 1
        self.incidents.append(incident)
        return incident

    def _change(self, kind: str, incident: Incident, window_seq: int, index: int) -> Change:
        change_id = f"{window_seq:012d}-{index:03d}-{self.book_id}-{incident.id}-{kind}"
        return Change(id=change_id, kind=kind, window_seq=window_seq, incident=incident.to_dict())

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON form (what ``incidents.json`` holds)."""
        return {"book_id": self.book_id, "last_seq": self.last_seq, "next_id": self.next_id,
                "resolve_after": self.resolve_after,
                "incidents": [i.to_dict() for i in self.incidents]}

    @classmethod
    def from_dict(cls, data: dict[str, Any], resolve_after: int | None = None) -> IncidentBook:
        """Read the JSON form back; ``resolve_after`` (the config's) wins over the stored one."""
        incidents = [Incident(**item) for item in data.get("incidents", [])]
        return cls(resolve_after or int(data.get("resolve_after", 1)), incidents,
                   data.get("last_seq"), int(data.get("next_id", len(incidents) + 1)),
                   data.get("book_id"))


def _rank(severity: str) -> int:
    return SEVERITIES.index(severity) if severity in SEVERITIES else -1


def write_incidents(storage: Storage, app: str, book: IncidentBook) -> None:
    """Persist the book to ``monitor/<app>/incidents.json`` (atomically)."""
    storage.write_json(book.to_dict(), MONITOR_DIR, app, INCIDENTS_FILE)


def read_book(storage: Storage, app: str, resolve_after: int | None = None) -> IncidentBook | None:
    """The persisted book of ``app``, or None if the monitor has written none yet."""
    if not storage.exists(MONITOR_DIR, app, INCIDENTS_FILE):
        return None
    data = storage.read_json(MONITOR_DIR, app, INCIDENTS_FILE)
    return IncidentBook.from_dict(data, resolve_after)


def read_incidents(storage: Storage, app: str, open_only: bool = False) -> list[dict[str, Any]]:
    """The incidents of ``app`` (newest first; only open ones with ``open_only``); [] if none."""
    book = read_book(storage, app)
    if book is None:
        return []
    chosen = book.open() if open_only else book.incidents
    return [i.to_dict() for i in reversed(chosen)]
