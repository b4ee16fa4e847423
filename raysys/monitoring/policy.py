"""When the monitor may retrain: triggers, cooldown, a cap per day, one retrain at a time.

Pure logic over a small serialisable :class:`RetrainState` that the monitor persists with the
rest of its state. Every trigger carries an idempotency ``key`` (the incident id, the window
seq, the schedule slot, the manual request's id): a key is answered once, so a restarted monitor
that sees the same incident again does not start a second retrain for it.

The rules, in order (the first that applies decides):

1. ``manual`` is always a valid trigger; ``drift``, ``quality`` and ``schedule`` only when listed
   in ``monitor.retrain.triggers``.
2. A key already handled is refused (idempotency).
3. One retrain at a time, manual ones included.
4. Automatic triggers only: none within ``cooldown_s`` of the last retrain's start, and at most
   ``max_per_day`` starts in the last 24 hours (manual retrains count towards both).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, replace
from typing import Any, Literal

from raysys.config import RetrainConfig
from raysys.errors import RaysysError

TriggerKind = Literal["drift", "quality", "schedule", "manual"]
TRIGGER_KINDS = ("drift", "quality", "schedule", "manual")
DAY_S = 86_400.0
KEEP_KEYS = 200  # handled keys remembered (oldest forgotten first)


@dataclass(frozen=True)
class Trigger:
    """Why a retrain is asked for, and the key that makes asking twice harmless."""

    kind: TriggerKind
    key: str

    def __post_init__(self):
        if self.kind not in TRIGGER_KINDS:
            raise RaysysError(f"retrain trigger {self.kind!r}: use one of {', '.join(TRIGGER_KINDS)}")
        if not self.key:
            raise RaysysError("retrain trigger: key must not be empty")


@dataclass(frozen=True)
class Decision:
    """Whether a retrain may start now, and why (JSON-able for the audit log)."""

    allowed: bool
    reason: str
    trigger: str
    key: str

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON form."""
        return asdict(self)


@dataclass(frozen=True)
class RetrainState:
    """What the policy remembers: the retrain running, recent starts, keys already handled."""

    running: str | None = None
    running_since: float | None = None
    starts: tuple[float, ...] = ()
    keys: tuple[str, ...] = field(default=())

    def started(self, key: str, now: float) -> RetrainState:
        """The state once the retrain for ``key`` has started."""
        starts = tuple(t for t in self.starts if now - t < DAY_S) + (now,)
        return replace(self, running=key, running_since=now, starts=starts,
                       keys=(self.keys + (key,))[-KEEP_KEYS:])

    def finished(self) -> RetrainState:
        """The state once the running retrain has finished (done, failed or interrupted)."""
        return replace(self, running=None, running_since=None)

    def to_dict(self) -> dict[str, Any]:
        """JSON form, persisted by the monitor."""
        return {"running": self.running, "running_since": self.running_since,
                "starts": list(self.starts), "keys": list(self.keys)}

    @classmethod
    def from_dict(cls, data: dict[str, Any] | None) -> RetrainState:
        """Inverse of :meth:`to_dict` (None: the initial state)."""
        if not data:
            return cls()
        return cls(data.get("running"), data.get("running_since"), tuple(data.get("starts", ())),
                   tuple(data.get("keys", ())))


class RetrainPolicy:
    """Decides whether a trigger may start a retrain (see the module docstring for the rules)."""

    def __init__(self, cfg: RetrainConfig):
        self.cfg = cfg

    def decide(self, trigger: Trigger, state: RetrainState, now: float) -> Decision:
        """Allowed or not, with the rule that decided."""
        def answer(allowed: bool, reason: str) -> Decision:
            return Decision(allowed, reason, trigger.kind, trigger.key)

        cfg = self.cfg
        if trigger.kind != "manual" and trigger.kind not in cfg.triggers:
            return answer(False, f"trigger '{trigger.kind}' is not in monitor.retrain.triggers "
                                 f"({', '.join(cfg.triggers) or 'none'})")
        if trigger.key in state.keys:
            return answer(False, f"already handled: a retrain was started for {trigger.key}")
        if state.running is not None:
            return answer(False, f"a retrain is already running (for {state.running})")
        if trigger.kind != "manual":
            last = max(state.starts, default=None)
            if last is not None and now - last < cfg.cooldown_s:
                return answer(False, f"cooldown: the last retrain started {now - last:.0f} s ago, "
                                     f"monitor.retrain.cooldown_s is {cfg.cooldown_s:g}")
            today = sum(1 for t in state.starts if now - t < DAY_S)
            if today >= cfg.max_per_day:
                return answer(False, f"cap: {today} retrain(s) in the last 24 h, "
                                     f"monitor.retrain.max_per_day is {cfg.max_per_day}")
        return answer(True, f"{trigger.kind} trigger ({trigger.key}) allowed")

    def scheduled(self, now: float) -> Trigger | None:
        """The schedule trigger for the current ``schedule_s`` slot (None without a schedule).

        Its key names the slot, so it is allowed once per slot at most.
        """
        if "schedule" not in self.cfg.triggers or self.cfg.schedule_s is None:
            return None
        return Trigger("schedule", f"schedule:{int(now // self.cfg.schedule_s)}")
