"""The planner, incrementally: after a link changes state, recompute only the answer sets
whose candidates use that link. Gives exactly ``planner.plan`` (a property test holds it
to that), faster:

* sharing: an answer set depends on its segment only by name (and, for a service with
  ``routing: nearest``, by its location), so the rules of a service that list the same
  pools (at the same location) are computed once (a *group*); the plan's mapping
  (:class:`GroupedAnswers`) holds one answer set per group and makes a segment's copy on
  first access (500,000 eager copies took longer than all the planning);
* an index link -> groups (the rule's pools, and the fallback pool of a ``fallback``
  rule): a new snapshot recomputes the groups of the links whose state changed, and
  nothing else; the per-group list (30,000 entries, not 500,000) is copied on write, so
  the previous plan stays as it was;
* the cyclic garbage collector is paused while a plan is built (every object made is
  acyclic; with a large plan alive its full collections dominated the time);
* the config's identity digest (the expensive part of ``inputs_digest``) is computed once.
* a :class:`~edge.steering.planner.PlanMemo` per plan call shares a tier's verdict and
  answers between the groups of a service that meet the same candidates (its rules list
  the same pools in other orders or subsets).
"""

from __future__ import annotations

import gc
from collections.abc import ItemsView, Iterator, Mapping
from dataclasses import dataclass
from itertools import compress
from operator import attrgetter, is_not, itemgetter

from edge.config.schema import Config, Service
from edge.health.state import HealthSnapshot, HealthState
from edge.plan import AnswerChange, AnswerKey, AnswerSet, Plan, PlanDiff
from edge.steering.planner import (
    PlanMemo,
    PoolPart,
    Static,
    answer_set,
    config_identity,
    digest_with,
    rules,
    segment_place,
    static_candidates,
)


def with_segment(a: AnswerSet, segment: str) -> AnswerSet:
    """``a`` for another segment (the rest of an answer set never depends on it)."""
    # the constructor directly: dataclasses.replace costs several times more
    return AnswerSet(a.service, segment, a.ttl, a.tier, a.answers, a.reasons, a.failing_over,
                     a.fail_open, a.max_answers)


_FIRST = itemgetter(0)
_SECOND = itemgetter(1)


class Where(Mapping[AnswerKey, int]):
    """(service, segment) -> group, stored per service as segment -> pools -> group (built
    from the rules in C loops: no 500,000 tuple keys to make)."""

    __slots__ = ("_by_service", "_owners", "_size")

    def __init__(self, by_service: dict[str, tuple[dict[str, tuple[str, ...]],
                                                   dict[tuple[str, ...], int]]],
                 size: int) -> None:
        self._by_service = by_service
        self._size = size
        self._owners: list[tuple[str, tuple[str, ...]]] | None = None

    def group_keys(self, gi: int) -> list[AnswerKey]:
        """The keys (service, segment) that group ``gi`` answers, in plan order."""
        owners = self._owners
        if owners is None:  # group -> (service, pools key), made on first use
            count = sum(len(by_pools) for _, by_pools in self._by_service.values())
            owners = self._owners = [("", ())] * count
            for svc, (_, by_pools) in self._by_service.items():
                for key, gi_ in by_pools.items():
                    owners[gi_] = (svc, key)
        service, key = owners[gi]
        return [(service, seg) for seg, k in self._by_service[service][0].items() if k == key]

    def service_keys(self, service: str) -> list[AnswerKey]:
        """The keys of ``service``, in plan order (none for an unknown service)."""
        hit = self._by_service.get(service)
        return [(service, seg) for seg in hit[0]] if hit is not None else []

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

    @property
    def where(self) -> Where:
        """Key -> group, shared by every plan of one planner."""
        return self._where

    @property
    def results(self) -> list[AnswerSet]:
        """The answer set of each group (the same object in two plans while not recomputed)."""
        return self._results

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
            hit = copies[segment] = with_segment(first, segment)
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
                        hit = copies[segment] = with_segment(first, segment)
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


# what a plan reads of a link: its state, and its latency toward regions (nearest routing)
_LinkInput = tuple[HealthState, Mapping[str, float]]


def _moved(new: _LinkInput | None, old: _LinkInput | None) -> bool:
    if new is None or old is None:
        return new is not old
    return new[0] is not old[0] or (new[1] is not old[1] and new[1] != old[1])


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
        layouts: dict[tuple[tuple[str, tuple[str, ...]], ...],
                      tuple[dict[str, tuple[str, ...]], dict[tuple[str, ...], str],
                            tuple[tuple[str, ...], ...]]] = {}
        for svc in config.services:
            rl = rules(config, svc)
            nearest = svc.routing == "nearest"
            if nearest:
                # the answer set depends on the segment's location and regions too: they
                # join the group key, as a last element no pool name can be (NUL-led)
                rl = tuple((seg, (*pools, f"\0{segment_place(config, svc, seg)}"))
                           for seg, pools in rl)
            layout = layouts.get(rl)
            if layout is None:  # services with equal rules share it (generated policies)
                # key -> its first segment, in order of first appearance (C loops)
                layout = layouts[rl] = (dict(rl), dict(zip(
                    map(_SECOND, reversed(rl)), map(_FIRST, reversed(rl)), strict=True)),
                    tuple(dict.fromkeys(map(_SECOND, rl))))
            segments, first, order = layout
            by_pools: dict[tuple[str, ...], int] = {}
            memo: dict[str, PoolPart] = {}
            for key in order:
                gi = by_pools[key] = len(groups)
                pools = key[:-1] if nearest else key
                group = self._group(config, svc, pools, first[key], memo)
                groups.append(group)
                for link in group.links:
                    by_link.setdefault(link, []).append(gi)
            where[svc.name] = (segments, by_pools)  # shared: read only
            size += len(rl)
        self._where = Where(where, size)
        self._results: list[AnswerSet] = []
        self._cache: list[dict[str, AnswerSet] | None] = []
        self._states: dict[str, _LinkInput] = {}
        self.recomputed = 0  # groups recomputed by the last call (for benchmarks and tests)

    @staticmethod
    def _group(config: Config, svc: Service, pools: tuple[str, ...], segment: str,
               memo: dict[str, PoolPart]) -> _Group:
        static = static_candidates(config, svc, pools, memo=memo)
        links = static.links
        lead = static.lead
        if lead is not None and lead.all_down == "fallback" and lead.fallback:
            # the fallback pool's health scales its weights: it is an input too
            links = links | static_candidates(config, svc, (lead.fallback,), memo=memo).links
        return _Group(svc, pools, segment, links, static)

    def _digest(self, snapshot: HealthSnapshot) -> str:
        return digest_with(self._identity, snapshot)

    def _compute(self, gi: int, snapshot: HealthSnapshot, memo: PlanMemo) -> AnswerSet:
        g = self._groups[gi]
        return answer_set(self.config, g.service, g.segment, g.pools, snapshot,
                          static=g.static, memo=memo)

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
        states = {name: (lh.state, lh.toward) for name, lh in snapshot.links.items()}
        if not self._results and self._groups:
            config = self.config
            memo = PlanMemo()  # the statics live as long as the planner: one for all
            self._results = [answer_set(config, g.service, g.segment, g.pools, snapshot,
                                        static=g.static, memo=memo) for g in self._groups]
            # a dict per group, never None: the copies of a group kept by a re-plan are
            # then the same objects in both plans (changed_keys relies on it)
            self._cache = [{} for _ in range(len(self._groups))]
            self.recomputed = len(self._groups)
        else:
            changed = {n for n in set(states) | set(self._states)
                       if _moved(states.get(n), self._states.get(n))}
            touched = sorted({gi for link in changed for gi in self._by_link.get(link, ())})
            if touched:
                # copy-on-write: the previous plan keeps its lists
                self._results = list(self._results)
                self._cache = list(self._cache)
                memo = PlanMemo()
                for gi in touched:
                    self._results[gi] = self._compute(gi, snapshot, memo)
                    self._cache[gi] = {}
            self.recomputed = len(touched)
        self._states = states
        answers = GroupedAnswers(self._where, self._results, self._cache)
        return Plan(version=version, created_at=now, inputs_digest=self._digest(snapshot),
                    answers=answers)


class _OverlayItems(ItemsView[AnswerKey, AnswerSet]):
    _mapping: Overlay

    def __iter__(self) -> Iterator[tuple[AnswerKey, AnswerSet]]:
        over = self._mapping.overrides
        for key, aset in self._mapping.base.items():
            yield key, over.get(key, aset)


class Overlay(Mapping[AnswerKey, AnswerSet]):
    """A planner's answers with a few answer sets replaced: what ``rails.shape`` makes of
    an incremental plan (the frozen, last-known-good and ramped sets), without copying the
    other 500,000. Same keys and order as ``base``; immutable."""

    __slots__ = ("_base", "_over")

    def __init__(self, base: GroupedAnswers, overrides: Mapping[AnswerKey, AnswerSet]) -> None:
        self._base = base
        self._over = dict(overrides)

    @property
    def base(self) -> GroupedAnswers:
        return self._base

    @property
    def overrides(self) -> Mapping[AnswerKey, AnswerSet]:
        return self._over

    def __getitem__(self, key: AnswerKey) -> AnswerSet:
        hit = self._over.get(key)
        return hit if hit is not None else self._base[key]

    def __iter__(self) -> Iterator[AnswerKey]:
        return iter(self._base)

    def __len__(self) -> int:
        return len(self._base)

    def __contains__(self, key: object) -> bool:
        return key in self._base

    def items(self) -> ItemsView[AnswerKey, AnswerSet]:
        return _OverlayItems(self)

    __hash__ = None  # type: ignore[assignment]


def layers(answers: Mapping[AnswerKey, AnswerSet]
            ) -> tuple[GroupedAnswers, Mapping[AnswerKey, AnswerSet]] | None:
    if isinstance(answers, GroupedAnswers):
        return answers, {}
    if isinstance(answers, Overlay):
        return answers.base, answers.overrides
    return None


def group_delta(old: Mapping[AnswerKey, AnswerSet], new: Mapping[AnswerKey, AnswerSet]
           ) -> tuple[Where, list[AnswerSet], list[AnswerSet], list[int], set[AnswerKey]] | None:
    """(where, old results, new results, the groups whose answer set is not the same
    object, the overlays' keys), or None when the two do not come from one planner."""
    a, b = layers(old), layers(new)
    if a is None or b is None or a[0].where is not b[0].where:
        return None
    ra, rb = a[0].results, b[0].results
    groups = [] if ra is rb else list(compress(range(len(rb)), map(is_not, ra, rb)))
    return a[0].where, ra, rb, groups, {*a[1], *b[1]}


def changed_keys(old: Mapping[AnswerKey, AnswerSet],
                 new: Mapping[AnswerKey, AnswerSet]) -> list[AnswerKey] | None:
    """The keys whose answer set may not be the same object in ``old`` and ``new`` (a
    superset, unordered), or None when only a walk of every key can tell (the mappings
    do not come from one incremental planner).

    Two plans of one planner share every group it did not recompute in between, and each
    group's per-segment copies with it; an Overlay adds its replaced keys. So the keys
    that can differ are those of the groups whose answer set is not the same object, plus
    the overlays' keys: what the last link changes touched, not the whole plan.
    """
    delta = group_delta(old, new)
    if delta is None:
        return None
    where, _, _, groups, loose = delta
    keys = [key for gi in groups for key in where.group_keys(gi)]
    keys.extend(loose)
    return keys


def diff_plans(old: Plan, new: Plan) -> PlanDiff:
    """``old.diff(new)``, walking only the keys that can differ (``changed_keys``).

    The keys of a recomputed group that no overlay replaces are copies of the group's
    answer set on either side: one comparison of the two decides for all of them."""
    delta = group_delta(old.answers, new.answers)
    if delta is None:
        return old.diff(new)
    where, ra, rb, groups, loose = delta
    changes = []
    for gi in groups:
        if ra[gi].content() == rb[gi].content():
            continue
        for key in where.group_keys(gi):
            if key not in loose:  # those are compared one by one below
                changes.append(AnswerChange(key, old.answers[key], new.answers[key]))
    for key in loose:
        before, after = old.answers.get(key), new.answers.get(key)
        if before is after is not None:
            continue
        if before is None or after is None or before.content() != after.content():
            changes.append(AnswerChange(key, before, after))
    changes.sort(key=_KEY)
    routes = Plan(announcements=old.announcements).diff(
        Plan(announcements=new.announcements)).announcement_changes
    return PlanDiff(tuple(changes), routes)


_KEY = attrgetter("key")
