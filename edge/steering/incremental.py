"""The planner, incrementally: after a link changes state, recompute only the answer sets
whose candidates use that link. Gives exactly ``planner.plan`` (a property test holds it
to that), faster:

* sharing: an answer set depends on its segment only by name, so the rules of a service
  that list the same pools are computed once (a *group*) and the result is copied per
  segment (``dataclasses.replace`` of the segment field; answers and reasons are shared);
* an index link -> groups: a new snapshot recomputes the groups of the links whose state
  changed, and nothing else; the plan's mapping is copied and only those keys replaced;
* the plan's mapping after a change is a layered view (:class:`Layered`, as an LSM tree):
  the base plus one small layer of changed keys per re-plan; past 8 layers they are merged
  into one, and that one into the base once it exceeds a quarter of it, so a re-plan
  never copies the whole plan (500,000 entries take ~10 ms to copy);
* the cyclic garbage collector is paused while a plan is built (every object made is
  acyclic; with a large plan alive its full collections dominated the time);
* the config's identity digest (the expensive part of ``inputs_digest``) is computed once.
"""

from __future__ import annotations

import gc
import hashlib
import json
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from types import MappingProxyType

from edge.config.schema import Config, Service
from edge.health.state import HealthSnapshot, HealthState
from edge.plan import AnswerKey, AnswerSet, Plan
from edge.steering.planner import (
    Static,
    answer_set,
    config_identity,
    rules,
    static_candidates,
)


class Layered(Mapping[AnswerKey, AnswerSet]):
    """An immutable mapping: ``layers`` (newest first) over ``base``; same keys as ``base``."""

    __slots__ = ("_base", "_layers")

    def __init__(self, base: Mapping[AnswerKey, AnswerSet],
                 layers: tuple[Mapping[AnswerKey, AnswerSet], ...]) -> None:
        self._base = base
        self._layers = layers

    def __getitem__(self, key: AnswerKey) -> AnswerSet:
        for layer in self._layers:
            hit = layer.get(key)
            if hit is not None:
                return hit
        return self._base[key]

    def __iter__(self) -> Iterator[AnswerKey]:
        return iter(self._base)

    def __len__(self) -> int:
        return len(self._base)

    def __contains__(self, key: object) -> bool:
        return key in self._base

    @property
    def depth(self) -> int:
        return len(self._layers)


def _with_segment(a: AnswerSet, segment: str) -> AnswerSet:
    # the constructor directly: dataclasses.replace costs several times more
    return AnswerSet(a.service, segment, a.ttl, a.tier, a.answers, a.reasons, a.failing_over,
                     a.fail_open, a.max_answers)


@dataclass(slots=True)
class _Group:
    service: Service
    pools: tuple[str, ...]
    segments: list[str]
    links: frozenset[str]
    static: Static


class IncrementalPlanner:
    """Holds the last plan and recomputes what a link change touches."""

    def __init__(self, config: Config) -> None:
        self.config = config
        self._identity = config_identity(config)
        self._groups: list[_Group] = []
        self._by_link: dict[str, list[int]] = {}
        self._order: list[AnswerKey] = []
        for svc in config.services:
            by_pools: dict[tuple[str, ...], int] = {}
            for segment, pools in rules(config, svc):
                self._order.append((svc.name, segment))
                gi = by_pools.get(pools)
                if gi is None:
                    static = static_candidates(config, svc, pools)
                    links = frozenset(c[1] for c in static)
                    gi = by_pools[pools] = len(self._groups)
                    self._groups.append(_Group(svc, pools, [], links, static))
                    for link in links:
                        self._by_link.setdefault(link, []).append(gi)
                self._groups[gi].segments.append(segment)
        self._base: Mapping[AnswerKey, AnswerSet] = {}
        self._layers: tuple[Mapping[AnswerKey, AnswerSet], ...] = ()  # newest first
        self._states: dict[str, HealthState] = {}
        self.recomputed = 0  # groups recomputed by the last call (for benchmarks and tests)

    def _digest(self, snapshot: HealthSnapshot) -> str:
        body = {"config": self._identity, "snapshot": snapshot.version,
                "links": sorted((name, str(lh.state)) for name, lh in snapshot.links.items())}
        return hashlib.sha256(json.dumps(body).encode()).hexdigest()[:16]

    def _compute(self, gi: int, snapshot: HealthSnapshot,
                 out: dict[AnswerKey, AnswerSet]) -> None:
        g = self._groups[gi]
        name = g.service.name
        first = answer_set(self.config, g.service, g.segments[0], g.pools, snapshot,
                           static=g.static)
        out[(name, g.segments[0])] = first
        for seg in g.segments[1:]:
            out[(name, seg)] = _with_segment(first, seg)

    def plan(self, snapshot: HealthSnapshot, *, version: int, now: float) -> Plan:
        """The plan under ``snapshot``: in full the first time, then incrementally."""
        paused = gc.isenabled()
        gc.disable()
        try:
            return self._plan(snapshot, version=version, now=now)
        finally:
            if paused:
                gc.enable()

    def _plan(self, snapshot: HealthSnapshot, *, version: int, now: float) -> Plan:
        states = {name: lh.state for name, lh in snapshot.links.items()}
        answers: Mapping[AnswerKey, AnswerSet]
        if not self._base:
            fresh: dict[AnswerKey, AnswerSet] = {}
            for gi in range(len(self._groups)):
                self._compute(gi, snapshot, fresh)
            self._base = MappingProxyType({key: fresh[key] for key in self._order})
            self._layers = ()
            answers = self._base
            self.recomputed = len(self._groups)
        else:
            changed = {n for n in set(states) | set(self._states)
                       if states.get(n) is not self._states.get(n)}
            touched = sorted({gi for link in changed for gi in self._by_link.get(link, ())})
            layer: dict[AnswerKey, AnswerSet] = {}
            for gi in touched:
                self._compute(gi, snapshot, layer)
            layers = (MappingProxyType(layer), *self._layers) if layer else self._layers
            if len(layers) > 8:  # merge the layers into one, oldest first
                merged: dict[AnswerKey, AnswerSet] = {}
                for older in reversed(layers):
                    merged.update(older)
                layers = (MappingProxyType(merged),)
                if len(merged) * 4 > len(self._base):  # ... and that one into the base
                    self._base = MappingProxyType({k: merged.get(k) or v
                                                   for k, v in self._base.items()})
                    layers = ()
            self._layers = layers
            answers = Layered(self._base, layers) if layers else self._base
            self.recomputed = len(touched)
        self._states = states
        return Plan(version=version, created_at=now, inputs_digest=self._digest(snapshot),
                    answers=answers)
