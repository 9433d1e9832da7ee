"""How often a path should be probed given its state: faster while it is changing.

A path FALLING or RISING is between two decisions; probing it ``fast_probe_factor`` times
faster brings the samples that settle it sooner (the fall/rise counts are in measurements,
and the agent publishes one per probe). Every other state probes at the target's interval.
"""

from __future__ import annotations

from edge.health.state import HealthState

MIN_INTERVAL_S = 0.1  # the config's lowest target interval


def probe_interval(state: HealthState, normal_s: float, factor: float) -> float | None:
    """The override interval for a path in ``state`` (None: the target's own interval)."""
    if factor <= 1.0 or state not in (HealthState.FALLING, HealthState.RISING):
        return None
    return max(MIN_INTERVAL_S, normal_s / factor) if normal_s > MIN_INTERVAL_S else None
