"""Which model version answers a request: the traffic plan and the rollout moves, as pure logic.

A plan has a champion, optionally a challenger receiving ``canary_percent`` of the requests
(sticky per request key when asked) and optionally a shadow that sees a copy of every request
but never answers. Moves return a new plan; nothing here touches Ray or the registry.
"""

from __future__ import annotations

import hashlib
from dataclasses import asdict, dataclass, replace
from typing import Any

from raysys.errors import RaysysError


@dataclass(frozen=True)
class TrafficPlan:
    """The versions being served and how requests are split between them."""

    champion: int
    challenger: int | None = None
    canary_percent: float = 0.0
    sticky: bool = False
    shadow: int | None = None
    generation: int = 0

    def __post_init__(self):
        if not 0.0 <= self.canary_percent <= 100.0:
            raise RaysysError(f"canary percent must be within 0..100, got {self.canary_percent:g}")
        if self.challenger is not None and self.challenger == self.champion:
            raise RaysysError(f"version {self.champion} is already the champion; it cannot also be the challenger")

    @property
    def versions(self) -> list[int]:
        """Every version a replica must have loaded."""
        return sorted({v for v in (self.champion, self.challenger, self.shadow) if v is not None})

    def route(self, key: str | None, draw: float) -> int:
        """The version that answers: the challenger for ``canary_percent`` of requests.

        ``draw`` is a uniform number in [0, 1) used when the plan is not sticky or the request
        has no key; a sticky plan hashes the key so one key always sees the same version.
        """
        if self.challenger is None or self.canary_percent <= 0:
            return self.champion
        unit = stable_unit(key) if self.sticky and key else draw
        return self.challenger if unit * 100.0 < self.canary_percent else self.champion

    def to_dict(self) -> dict[str, Any]:
        """JSON form (Serve ``user_config``, plan file, CLI)."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TrafficPlan:
        """Inverse of :meth:`to_dict`."""
        return cls(**data)


def stable_unit(key: str) -> float:
    """A number in [0, 1) that depends only on ``key``."""
    digest = hashlib.sha256(key.encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


def blue_green(plan: TrafficPlan | None, version: int) -> TrafficPlan:
    """All traffic to ``version`` at once; any canary ends, the shadow stays."""
    generation = plan.generation + 1 if plan else 1
    shadow = plan.shadow if plan and plan.shadow != version else None
    return TrafficPlan(champion=version, shadow=shadow, generation=generation)


def canary(plan: TrafficPlan | None, version: int, percent: float, sticky: bool = False) -> TrafficPlan:
    """Send ``percent`` of requests to ``version`` as the challenger."""
    if plan is None:
        raise RaysysError("nothing is served yet: deploy a champion before a canary")
    return replace(plan, challenger=version, canary_percent=float(percent), sticky=sticky,
                   generation=plan.generation + 1)


def shadow(plan: TrafficPlan | None, version: int) -> TrafficPlan:
    """Mirror every request to ``version``; its answers are logged, never returned."""
    if plan is None:
        raise RaysysError("nothing is served yet: deploy a champion before a shadow")
    if version == plan.champion:
        raise RaysysError(f"version {version} is the champion; a shadow must be another version")
    return replace(plan, shadow=version, generation=plan.generation + 1)


def end_canary(plan: TrafficPlan) -> TrafficPlan:
    """Stop the canary and the shadow: only the champion answers."""
    return TrafficPlan(champion=plan.champion, generation=plan.generation + 1)
