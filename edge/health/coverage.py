"""Latency toward regions, measured over each link: the input nearest routing blends in.

A target may name the region it stands in (``targets[].region``); the rtt a link's paths
measure toward it is then that link's site's latency toward the region. Per link and
region the figure is the best (lowest) p50 over the link's serving paths (UP or
DEGRADED) toward targets in the region: the route users of that region would take from
the site, at its best.

The figure is an input of the plan, so it must not move with every window: it is
*reported* (``LinkHealth.toward``) only when it leaves a band around the last reported
value (more than ``MOVE_RATIO`` of it and more than ``MOVE_MS``), so an rtt wandering by
a few percent re-plans nothing, and a site whose latency really changes is re-ranked at
once. A region no serving path reaches any more is dropped (the geography alone ranks it).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from types import MappingProxyType

from edge.health.state import HealthState, PathHealth

MOVE_RATIO = 0.2  # a reported rtt moves when the measured one is more than 20 % away ...
MOVE_MS = 5.0  # ... and more than 5 ms away

_SERVING = frozenset({HealthState.UP, HealthState.DEGRADED})
NOTHING: Mapping[str, float] = MappingProxyType({})


def moved(reported: float, measured: float) -> bool:
    """Whether ``measured`` is clearly away from ``reported`` (module docstring)."""
    gap = abs(measured - reported)
    return gap > MOVE_MS and gap > MOVE_RATIO * reported


def toward(paths: Iterable[PathHealth], regions: Mapping[str, str],
           reported: Mapping[str, float]) -> Mapping[str, float]:
    """Region -> rtt (ms) for one link's ``paths`` (``regions``: target -> region), with
    ``reported`` (the link's last figures) kept where they have not clearly moved. Returns
    ``reported`` itself when nothing changed."""
    if not regions:
        return NOTHING
    best = _best(paths, regions)
    out = {}
    for region, ms in sorted(best.items()):
        last = reported.get(region)
        out[region] = last if last is not None and not moved(last, ms) else round(ms, 1)
    if out == reported:
        return reported
    return MappingProxyType(out) if out else NOTHING


def holds(paths: Iterable[PathHealth], region: str, regions: Mapping[str, str],
          reported: Mapping[str, float]) -> bool:
    """Whether ``toward`` would keep ``reported``'s figure for ``region`` as it is, judged
    from ``paths`` (which must include every path of the link toward that region): the
    check a tracker makes after one path toward ``region`` was measured, instead of
    walking all the link's paths."""
    ms = _best(paths, regions).get(region)
    last = reported.get(region)
    if ms is None or last is None:
        return ms is None and last is None
    return not moved(last, ms)


def _best(paths: Iterable[PathHealth], regions: Mapping[str, str]) -> dict[str, float]:
    """Region -> the lowest p50 (ms) of the serving ``paths`` toward it."""
    best: dict[str, float] = {}
    for p in paths:
        region = regions.get(p.path.target)
        rtt = p.quality.rtt_p50
        if region is None or rtt is None or p.state not in _SERVING:
            continue
        ms = rtt * 1000.0
        if ms < best.get(region, float("inf")):
            best[region] = ms
    return best
