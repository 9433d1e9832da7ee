"""How often a path should be probed given its state: faster while it is changing.

A path FALLING or RISING is between two decisions; probing it ``fast_probe_factor`` times
faster brings the samples that settle it sooner (the fall/rise counts are in measurements,
and the agent publishes one per probe). Every other state probes at the target's interval.

The agent applies the same speed-up on its own, before any state changes, while a path's
window is mixed (answered and failed probes): see probes/agent.py. Both use
``probes.cadence.fast_interval``: ``interval / factor``, never below 50 ms, so the default
factor 4 is honoured at 200 ms probing (a 100 ms floor used to make it 2).
"""

from __future__ import annotations

from edge.health.state import HealthState
from probes.cadence import fast_interval


def probe_interval(state: HealthState, normal_s: float, factor: float) -> float | None:
    """The override interval for a path in ``state`` (None: the target's own interval)."""
    if state not in (HealthState.FALLING, HealthState.RISING):
        return None
    fast = fast_interval(normal_s, factor)
    return fast if fast < normal_s else None
