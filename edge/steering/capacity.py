"""Capacity arithmetic of the planner: share a demand over ordered groups of endpoints so
that no endpoint gets more than its capacity.

Pure numbers, no config: the planner decides what the groups are (the survivors of a
failed tier, then the next tier, ...; or the nearest site, then the other sites) and what
the demand is (the configured weight the failed part was carrying).
"""

from __future__ import annotations

from collections.abc import Sequence


def fill(groups: Sequence[Sequence[float]], demand: float) -> list[list[float]]:
    """The weight each member of each group takes, given its capacity.

    Groups are served in order. A group takes ``min(its capacity, what is still unserved)``,
    shared among its members in proportion to their capacity, so a member takes at most
    its capacity. What a group cannot take flows on to the next one; what no group can take
    is left unserved (the total is then the sum of all capacities, below ``demand``).
    """
    remaining = max(demand, 0.0)
    out: list[list[float]] = []
    for caps in groups:
        total = sum(caps)
        if remaining <= 0.0 or total <= 0.0:
            out.append([0.0] * len(caps))
            continue
        if total <= remaining:  # the whole group at capacity: exact, no rounding
            out.append([float(c) for c in caps])
            remaining -= total
            continue
        share = remaining / total
        out.append([c * share for c in caps])
        remaining = 0.0
    return out


__all__ = ["fill"]
