"""Leaf types of health: the states a path or link is in, and an immutable snapshot of them."""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

from probes.measurement import PathKey


class HealthState(enum.StrEnum):
    """ExaBGP-style explicit states. RISING/FALLING are on the way between UP and DOWN.

    DEGRADED: reachable but outside the link's quality band (jitter, loss or p95 rtt);
    it keeps serving with a reduced weight.
    """

    UNKNOWN = "unknown"
    UP = "up"
    RISING = "rising"
    DEGRADED = "degraded"
    FALLING = "falling"
    DOWN = "down"

    @property
    def serving(self) -> bool:
        """Whether an endpoint in this state should receive traffic.

        FALLING still serves (the fall count has not been reached); RISING does not yet
        (the rise count has not been reached). UNKNOWN serves: staleness is not failure.
        """
        return self in _SERVING


_SERVING = frozenset({HealthState.UP, HealthState.DEGRADED, HealthState.FALLING,
                      HealthState.UNKNOWN})


@dataclass(frozen=True, slots=True)
class Quality:
    """The latest window figures behind a state, in seconds / ratio."""

    rtt_p50: float | None = None
    rtt_p95: float | None = None
    loss: float = 0.0
    jitter_s: float = 0.0
    at: float = 0.0


@dataclass(frozen=True, slots=True)
class PathHealth:
    """Health of one path. ``settled`` is the last settled state (UP, DEGRADED or DOWN) the
    path was in: FALLING returns to it, and an UNKNOWN (stale) path resumes from it.
    """

    path: PathKey
    state: HealthState
    since: float
    reason: str
    quality: Quality = field(default_factory=Quality)
    good_streak: int = 0
    bad_streak: int = 0
    settled: HealthState | None = None


_NO_TOWARD: Mapping[str, float] = MappingProxyType({})


@dataclass(frozen=True, slots=True)
class LinkHealth:
    """Health of a link, combined from the paths measured over it."""

    link: str
    state: HealthState
    since: float
    reason: str
    quality: Quality = field(default_factory=Quality)
    # FALLING only: the state the link fell from (UP or DEGRADED; the planner keeps a link
    # that falls from DEGRADED at the degraded weight until it is DOWN: a ramp, not 50 %
    # -> 100 % -> out)
    falling_from: HealthState | None = None
    # region -> rtt (ms) measured over this link toward targets in that region: the best
    # p50 of its serving paths, moved only by a clear change (edge.health.coverage)
    toward: Mapping[str, float] = field(default_factory=lambda: _NO_TOWARD)


_NO_LINKS: Mapping[str, LinkHealth] = MappingProxyType({})
_NO_PATHS: Mapping[PathKey, PathHealth] = MappingProxyType({})


@dataclass(frozen=True, slots=True)
class HealthSnapshot:
    """Everything the planner knows about health at one moment. Versioned and immutable."""

    version: int = 0
    taken_at: float = 0.0
    links: Mapping[str, LinkHealth] = field(default_factory=lambda: _NO_LINKS)
    paths: Mapping[PathKey, PathHealth] = field(default_factory=lambda: _NO_PATHS)

    def link_state(self, link: str) -> HealthState:
        lh = self.links.get(link)
        return lh.state if lh is not None else HealthState.UNKNOWN
