"""The planner, incrementally: after a link changes state, recompute only the answer sets
whose candidates use that link. Gives exactly ``planner.plan`` (a property test holds it
to that), faster:

* sharing: an answer set depends on its segment only by name, so the rules of a service
  that list the same pools are computed once (a *group*); the plan's mapping
  (:class:`GroupedAnswers`) holds one answer set per group and makes a segment's copy on
  first access (500,000 eager copies took longer than all the planning);
* an index link -> groups (the rule's pools, and the fallback pool of a ``fallback``
  rule): a new snapshot recomputes the groups of the links whose state changed, and
  nothing else; the per-group list (30,000 entries, not 500,000) is copied on write, so
  the previous plan stays as it was;
* the cyclic garbage collector is paused while a plan is built (every object made is
  acyclic; with a large plan alive its full collections dominated the time);
* the config's identity digest (the expensive part of ``inputs_digest``) is computed once.
"""

from __future__ import annotations

import gc
import hashlib
import json
from collections.abc import ItemsView, Iterator, Mapping
from dataclasses import dataclass
from operator import itemgetter

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


def _with_segment(a: AnswerSet, segment: str) -> AnswerSet:
    # the constructor directly: dataclasses.replace costs several times more
    return AnswerSet(a.service, segment, a.ttl, a.tier, a.answers, a.reasons, a.failing_over,
                     a.fail_open, a.max_answers)


_FIRST = itemgetter(0)
_SECOND = itemgetter(1)


class Where(Mapping[AnswerKey, int]):
    """(service, segment) -> group, stored per service as segment -> pools -> group (built
    from the rules in C loops: no 500,000 tuple keys to make)."""

    __slots__ = ("_by_service", "_size")

    def __init__(self, by_service: dict[str, tuple[dict[str, tuple[str, ...]],
                                                   dict[tuple[str, ...], int]]],
                 size: int) -> None:
        self._by_service = by_service
        self._size = size

    @property
    def by_service(self) -> dict[str, tuple[dict[str, tuple[str, ...]],
                                         dict[tuple[str, ...], int]]]:
        return self._by_service

    def __getitem__(self, key: AnswerKey) -> int:
        hit = self._by_service.get(key[0])
        if hit is None:
            raise KeyError(key)
        return hit[1][hit[0][key[1]]]

    def __iter__(self) -> Iterator[AnswerKey]:
        for service, (segments, _) in self._by_service.items():
            for segment in segments:
                yield (service, segment)

    def __len__(self) -> int:
        return self._size

    def __contains__(self, key: object) -> bool:
        if not isinstance(key, tuple) or len(key) != 2:
            return False
        hit = self._by_service.get(key[0])
        return hit is not None and key[1] in hit[0]


class _Items(ItemsView[AnswerKey, AnswerSet]):
    _mapping: GroupedAnswers

    def __iter__(self) -> Iterator[tuple[AnswerKey, AnswerSet]]:
        return self._mapping._items()


class GroupedAnswers(Mapping[AnswerKey, AnswerSet]):
    """An immutable mapping (service, segment) -> AnswerSet that stores one answer set per
    *group* (the rules of a service that list the same pools) and makes the per-segment
    copy on first access (then keeps it).

    ``where`` (key -> group, in plan order) is shared by every plan of one planner;
    ``results[g]`` is group g's answer set for its first segment; ``cache[g]`` the copies
    made so far (shared with the previous plan for the groups a re-plan did not touch:
    their answer sets are the same objects).
    """

    __slots__ = ("_cache", "_results", "_where")

    def __init__(self, where: Where, results: list[AnswerSet],
                 cache: list[dict[str, AnswerSet] | None]) -> None:
        self._where = where
        self._results = results
        self._cache = cache

    def __getitem__(self, key: AnswerKey) -> AnswerSet:
        try:
            gi = self._where[key]
        except (KeyError, TypeError, IndexError):
            raise KeyError(key) from None
        first = self._results[gi]
        segment = key[1]
        if first.segment == segment:
            return first
        copies = self._cache[gi]
        if copies is None:
            copies = self._cache[gi] = {}
        hit = copies.get(segment)
        if hit is None:
            hit = copies[segment] = _with_segment(first, segment)
        return hit

    def __iter__(self) -> Iterator[AnswerKey]:
        return iter(self._where)

    def __len__(self) -> int:
        return len(self._where)

    def items(self) -> ItemsView[AnswerKey, AnswerSet]:
        return _Items(self)

    def _items(self) -> Iterator[tuple[AnswerKey, AnswerSet]]:
        """Every (key, answer set), walking the groups directly (a backend reads them all)."""
        # all of them at once with the cyclic GC paused (they are acyclic; with a large plan
        # alive its collections took most of the time), never while the caller holds the
        # generator
        paused = gc.isenabled()
        gc.disable()
        try:
            batch = self._all()
        finally:
            if paused:
                gc.enable()
        yield from batch

    def _all(self) -> list[tuple[AnswerKey, AnswerSet]]:
        results, cache = self._results, self._cache
        out = []
        for service, (segments, by_pools) in self._where.by_service.items():
            for segment, pools in segments.items():
                gi = by_pools[pools]
                first = results[gi]
                if first.segment != segment:
                    copies = cache[gi]
                    if copies is None:
                        copies = cache[gi] = {}
                    hit = copies.get(segment)
                    if hit is None:
                        hit = copies[segment] = _with_segment(first, segment)
                    first = hit
                out.append(((service, segment), first))
        return out

    def __contains__(self, key: object) -> bool:
        return key in self._where

    def __eq__(self, other: object) -> bool:
        if isinstance(other, GroupedAnswers) and other._where is self._where:
            return self._results == other._results  # same grouping: groups decide
        return super().__eq__(other)

    __hash__ = None  # type: ignore[assignment]


@dataclass(slots=True)
class _Group:
    service: Service
    pools: tuple[str, ...]
    segment: str  # the first segment: the one whose answer set is computed
    links: frozenset[str]
    static: Static


class IncrementalPlanner:
    """Holds the last plan and recomputes what a link change touches."""

    def __init__(self, config: Config) -> None:
        paused = gc.isenabled()
        gc.disable()  # as in plan(): acyclic objects only, and many of them
        try:
            self._index(config)
        finally:
            if paused:
                gc.enable()

    def _index(self, config: Config) -> None:
        self.config = config
        self._identity = config_identity(config)
        self._groups: list[_Group] = []
        self._by_link: dict[str, list[int]] = {}
        self._order: list[AnswerKey] = []
        where: dict[str, tuple[dict[str, tuple[str, ...]], dict[tuple[str, ...], int]]] = {}
        groups = self._groups
        by_link = self._by_link
        size = 0
        for svc in config.services:
            rl = rules(config, svc)
            # pools -> its first segment, in order of first appearance (C loops, no Python)
            first = dict(zip(map(_SECOND, reversed(rl)), map(_FIRST, reversed(rl)), strict=True))
            by_pools: dict[tuple[str, ...], int] = {}
            memo: dict[str, Static] = {}
            for pools in dict.fromkeys(map(_SECOND, rl)):
                gi = by_pools[pools] = len(groups)
                group = self._group(config, svc, pools, first[pools], memo)
                groups.append(group)
                for link in group.links:
                    by_link.setdefault(link, []).append(gi)
            where[svc.name] = (dict(rl), by_pools)
            size += len(rl)
        self._where = Where(where, size)
        self._results: list[AnswerSet] = []
        self._cache: list[dict[str, AnswerSet] | None] = []
        self._states: dict[str, HealthState] = {}
        self.recomputed = 0  # groups recomputed by the last call (for benchmarks and tests)

    @staticmethod
    def _group(config: Config, svc: Service, pools: tuple[str, ...], segment: str,
               memo: dict[str, Static]) -> _Group:
        static = static_candidates(config, svc, pools, memo=memo)
        links = {c[1] for c in static}
        lead = next((p for p in svc.pools if p.name == pools[0]), None) if pools else None
        if lead is not None and lead.all_down == "fallback" and lead.fallback:
            # the fallback pool's health scales its weights: it is an input too
            links |= {c[1] for c in static_candidates(config, svc, (lead.fallback,),
                                                              memo=memo)}
        return _Group(svc, pools, segment, frozenset(links), static)

    def _digest(self, snapshot: HealthSnapshot) -> str:
        body = {"config": self._identity, "snapshot": snapshot.version,
                "links": sorted((name, str(lh.state)) for name, lh in snapshot.links.items())}
        return hashlib.sha256(json.dumps(body).encode()).hexdigest()[:16]

    def _compute(self, gi: int, snapshot: HealthSnapshot) -> AnswerSet:
        g = self._groups[gi]
        return answer_set(self.config, g.service, g.segment, g.pools, snapshot,
                          static=g.static)

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
        if not self._results and self._groups:
            self._results = [self._compute(gi, snapshot) for gi in range(len(self._groups))]
            self._cache = [None] * len(self._groups)
            self.recomputed = len(self._groups)
        else:
            changed = {n for n in set(states) | set(self._states)
                       if states.get(n) is not self._states.get(n)}
            touched = sorted({gi for link in changed for gi in self._by_link.get(link, ())})
            if touched:
                # copy-on-write: the previous plan keeps its lists
                self._results = list(self._results)
                self._cache = list(self._cache)
                for gi in touched:
                    self._results[gi] = self._compute(gi, snapshot)
                    self._cache[gi] = None
            self.recomputed = len(touched)
        self._states = states
        answers = GroupedAnswers(self._where, self._results, self._cache)
        return Plan(version=version, created_at=now, inputs_digest=self._digest(snapshot),
                    answers=answers)
