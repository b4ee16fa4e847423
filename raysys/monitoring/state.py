"""The monitor's persisted state: everything a restarted monitor needs to go on where it stopped.

One JSON document, ``monitor/<app>/state.json``, written atomically (:meth:`Storage.write_json`)
after each step: log cursors, the open window, the label book, the drift detector's online state,
a bounded history of window summaries, the incident book, the retrain record and the release
state machine, plus the *pending effects* of the last step (alert deliveries, audit events and
the retrain to launch). A step first commits its state with its effects pending, then carries
them out and commits again without them; a monitor killed in between finds them on restart and
finishes them, so nothing is lost, and each effect carries an id so that one already carried out
is not repeated. Closed windows are also written one file each, ``monitor/<app>/windows/<seq>.json``,
created once (a recomputed window never overwrites the first).
"""

from __future__ import annotations

import copy
from dataclasses import asdict, dataclass, field
from typing import Any

from raysys.storage import Storage

MONITOR_DIR = "monitor"
STATE_FILE = "state.json"
WINDOWS_DIR = "windows"
INCIDENTS_FILE = "incidents.json"
HISTORY = 50  # window summaries kept in state.json (every window also has its own file)
FORMAT = 1


@dataclass
class MonitorState:
    """The monitor's whole state, JSON-able; pieces owned by other modules are their ``to_dict()``."""

    steps: int = 0
    windows_closed: int = 0
    predictions_cursor: dict[str, Any] | None = None
    feedback_cursor: dict[str, Any] | None = None
    windower: dict[str, Any] | None = None
    labels: dict[str, Any] | None = None
    detector: dict[str, Any] | None = None
    incidents: dict[str, Any] | None = None
    history: list[dict[str, Any]] = field(default_factory=list)  # newest last, at most HISTORY
    faults: dict[str, Any] = field(default_factory=dict)  # fault counts at the last window (rates are differences)
    retrain: dict[str, Any] = field(default_factory=dict)  # running, last, history, triggers handled
    release: dict[str, Any] = field(default_factory=dict)  # the Release machine and its canary's live sums
    pending: list[dict[str, Any]] = field(default_factory=list)  # effects committed but not yet carried out
    started_at: float | None = None  # the first step of this app's monitor
    last_traffic_at: float | None = None
    last_error: str | None = None
    updated_at: float | None = None

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON form (with the format number)."""
        return {"format": FORMAT, **asdict(self)}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> MonitorState:
        """Read the JSON form back (unknown keys of a later format are ignored)."""
        known = {name: value for name, value in data.items() if name in cls.__dataclass_fields__}
        return cls(**copy.deepcopy(known))

    def copy(self) -> MonitorState:
        """A deep copy: a step works on one, so a failed step leaves the committed state as it was."""
        return MonitorState.from_dict(self.to_dict())

    def add_window(self, summary: dict[str, Any]) -> None:
        """Count a closed window and keep its summary in the bounded history."""
        self.windows_closed += 1
        self.history = [*self.history, summary][-HISTORY:]


class StateStore:
    """Where one app's monitor state lives under the storage root."""

    def __init__(self, storage: Storage, app: str):
        self.storage, self.app = storage, app

    def load(self) -> MonitorState:
        """The committed state, or a fresh one when the monitor never ran."""
        if not self.storage.exists(MONITOR_DIR, self.app, STATE_FILE):
            return MonitorState()
        return MonitorState.from_dict(self.storage.read_json(MONITOR_DIR, self.app, STATE_FILE))

    def save(self, state: MonitorState) -> None:
        """Commit the state atomically (readers see the old or the new document, never a mix)."""
        self.storage.write_json(state.to_dict(), MONITOR_DIR, self.app, STATE_FILE)

    def write_window(self, summary: dict[str, Any]) -> bool:
        """Write a closed window's file once; False if that window was written before."""
        return self.storage.create_json(summary, MONITOR_DIR, self.app, WINDOWS_DIR, f"{summary['seq']:08d}.json")

    def windows(self, last: int | None = None) -> list[dict[str, Any]]:
        """Closed windows from their files, oldest first (the last ``last`` of them)."""
        names = sorted(i.base_name for i in self.storage.list_files(MONITOR_DIR, self.app, WINDOWS_DIR)
                       if i.base_name.endswith(".json"))
        names = names[-last:] if last else names
        return [self.storage.read_json(MONITOR_DIR, self.app, WINDOWS_DIR, name) for name in names]

    def write_incidents(self, incidents: list[dict[str, Any]]) -> None:
        """The incident list as ``monitor/<app>/incidents.json`` (for ``raysys alerts list``)."""
        self.storage.write_json(incidents, MONITOR_DIR, self.app, INCIDENTS_FILE)
