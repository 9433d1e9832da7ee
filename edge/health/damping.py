"""Flap damping of link states, in the manner of BGP route-flap dampening (RFC 2439).

Pure functions over an immutable :class:`Damping` value, one per link. A *flap* is a change
of the link between serving and not serving (UP/DEGRADED/FALLING/UNKNOWN vs DOWN/RISING)
between two known states. Each flap adds ``penalty``; the accumulated penalty decays
exponentially, halving every ``half_life_s``. When it reaches ``suppress`` the link is
*suppressed*: held out of service (DOWN) whatever its measurements say, until the penalty
has decayed below ``reuse``, or ``max_suppress_s`` has passed since suppression. Flaps
while suppressed still add penalty (the link keeps proving unstable), capped at the value
that decays to ``reuse`` within ``max_suppress_s``.

With the defaults (1000 / 2500 / 750, half-life 120 s) one outage and its recovery (two
flaps) is not damped; a third flap within a few minutes suppresses the link, which comes
back about 3.5 minutes after the flapping stops.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

from edge.config.schema import DampingSettings
from edge.health.state import HealthState


@dataclass(frozen=True, slots=True)
class Damping:
    penalty: float = 0.0
    at: float = 0.0  # when ``penalty`` was last brought up to date
    suppressed_at: float | None = None
    flaps: int = 0

    @property
    def suppressed(self) -> bool:
        return self.suppressed_at is not None


def is_flap(old: HealthState, new: HealthState) -> bool:
    """A change between serving and not serving, between two known states."""
    if HealthState.UNKNOWN in (old, new):
        return False
    return old.serving != new.serving


def current(d: Damping, now: float, ds: DampingSettings) -> float:
    """The penalty decayed to ``now``."""
    if d.penalty <= 0.0 or ds.half_life_s <= 0.0:
        return d.penalty if ds.half_life_s > 0.0 else 0.0
    return d.penalty * math.pow(0.5, max(0.0, now - d.at) / ds.half_life_s)


def _ceiling(ds: DampingSettings) -> float:
    return ds.reuse * math.pow(2.0, ds.max_suppress_s / ds.half_life_s)


def flap(d: Damping, now: float, ds: DampingSettings) -> Damping:
    """Record one flap at ``now``; suppress when the penalty reaches ``suppress``."""
    if ds.penalty <= 0.0:
        return d
    penalty = min(current(d, now, ds) + ds.penalty, _ceiling(ds))
    suppressed_at = d.suppressed_at
    if suppressed_at is None and penalty >= ds.suppress:
        suppressed_at = now
    return Damping(penalty=penalty, at=now, suppressed_at=suppressed_at, flaps=d.flaps + 1)


def settle(d: Damping, now: float, ds: DampingSettings) -> Damping:
    """Lift a suppression whose penalty decayed below ``reuse`` (or that lasted too long)."""
    if d.suppressed_at is None:
        return d
    penalty = current(d, now, ds)
    if penalty < ds.reuse or now - d.suppressed_at >= ds.max_suppress_s:
        return replace(d, penalty=penalty, at=now, suppressed_at=None)
    return d


def reuse_in(d: Damping, now: float, ds: DampingSettings) -> float:
    """Seconds until a suppressed link is reused, if no further flap comes."""
    if d.suppressed_at is None:
        return 0.0
    penalty = current(d, now, ds)
    decay = ds.half_life_s * math.log2(penalty / ds.reuse) if penalty > ds.reuse else 0.0
    cap = ds.max_suppress_s - (now - d.suppressed_at)
    return max(0.0, min(decay, cap))
