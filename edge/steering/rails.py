"""Stateful safety rails that *shape* a proposed plan (``guard`` only accepts or refuses).

``shape(previous, proposed, snapshot, settings, frozen)`` returns the plan to apply, each
changed answer set carrying a reason:

1. per-service freeze: a frozen service keeps its previous answer sets (``guard.frozen``);
2. last-known-good: an answer set whose links all have no health data (UNKNOWN) now,
   while some had data when the plan in force was made (``before``), keeps its previous
   answers (``guard.last_known_good``): losing the data never moves traffic (a config
   change with no data at all still applies);
3. ramp: the share of an answer set's weight that moves in one step is at most
   ``max_shift`` (total variation distance of the per-type weight shares), so a
   failback or a re-weighting goes in steps, one per engine cycle (``guard.ramp``).
   Answers on a link that is not serving (DOWN, RISING: hard down) leave at once, and
   their share goes to the rest, before the ramp is measured; a ramp never delays a
   failover away from a dead link.

Pure: the engine keeps ``previous`` and calls this every cycle until the ramp is done.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping
from dataclasses import replace
from types import MappingProxyType

from edge.config.schema import GuardSettings
from edge.health.state import HealthSnapshot, HealthState
from edge.plan import AnswerKey, AnswerSet, Plan, Reason, RRType, WeightedAnswer
from edge.steering.incremental import Overlay, group_delta, layers, with_segment

_EPS = 1e-9


def _reason(code: str, detail: str, **inputs: object) -> Reason:
    return Reason(code, detail, MappingProxyType(inputs))


def _shares(answers: tuple[WeightedAnswer, ...]) -> dict[tuple[RRType, str], float]:
    totals: dict[RRType, float] = defaultdict(float)
    for a in answers:
        totals[a.rrtype] += a.weight
    return {(a.rrtype, a.value): (a.weight / totals[a.rrtype] if totals[a.rrtype] > 0 else 0.0)
            for a in answers}


def _alive(a: WeightedAnswer, snapshot: HealthSnapshot) -> bool:
    return snapshot.link_state(a.link).serving


def shift(before: tuple[WeightedAnswer, ...], after: tuple[WeightedAnswer, ...]) -> float:
    """Share of weight moved from ``before`` to ``after`` (max over record types)."""
    b, a = _shares(before), _shares(after)
    moved: dict[RRType, float] = defaultdict(float)
    for key in set(b) | set(a):
        moved[key[0]] += abs(a.get(key, 0.0) - b.get(key, 0.0)) / 2.0
    return max(moved.values(), default=0.0)


def _ramp(prev: AnswerSet, new: AnswerSet, snapshot: HealthSnapshot,
          max_shift: float) -> AnswerSet:
    if new.fail_open or prev.fail_open or not new.answers:
        return new
    base = tuple(a for a in prev.answers if _alive(a, snapshot))
    if not base:
        return new
    moved = shift(base, new.answers)
    if moved <= max_shift + _EPS:
        return new
    f = max_shift / moved
    b, n = _shares(base), _shares(new.answers)
    totals: dict[RRType, float] = defaultdict(float)
    for a in new.answers:
        totals[a.rrtype] += a.weight
    info = {(a.rrtype, a.value): a for a in base}
    info.update({(a.rrtype, a.value): a for a in new.answers})
    out = []
    for key in sorted(set(b) | set(n)):
        share = b.get(key, 0.0) + f * (n.get(key, 0.0) - b.get(key, 0.0))
        if share <= _EPS:
            continue
        a = info[key]
        total = totals.get(key[0]) or 1.0
        out.append(replace(a, weight=round(share * total, 9)))
    reason = _reason("guard.ramp", f"ramp: {moved * 100:.0f}% of the weight would move, at "
                     f"most {max_shift * 100:.0f}% per step; the rest follows next cycles",
                     wanted=round(moved, 6), max_shift=max_shift)
    return replace(new, answers=tuple(out), reasons=(*new.reasons, reason))


def _links(aset: AnswerSet | None) -> set[str]:
    return {a.link for a in aset.answers} if aset is not None else set()


def _shape_one(key: AnswerKey, prev: AnswerSet | None, new: AnswerSet,
               snapshot: HealthSnapshot, settings: GuardSettings, frozen: frozenset[str],
               before: Mapping[str, HealthState] | None) -> AnswerSet:
    """The answer set to apply for ``key`` (module docstring, steps 1-3)."""
    if prev is new and key[0] not in frozen:
        return new  # kept as it was (an incremental plan shares it): nothing to shape
    if prev is None:
        return new
    if key[0] in frozen:
        return replace(prev, reasons=(*prev.reasons, _reason(
            "guard.frozen", f"service {key[0]} is frozen by an operator: answers "
            "kept", service=key[0])))
    if prev.answers and (links := _links(prev) | _links(new)) and all(
            snapshot.link_state(lk) is HealthState.UNKNOWN for lk in links) and any(
            (before or {}).get(lk, HealthState.UNKNOWN) is not HealthState.UNKNOWN
            for lk in links):
        if prev.content() != new.content():
            return replace(prev, reasons=(*prev.reasons, _reason(
                "guard.last_known_good", "no health data for any of its links: "
                "last known good answers kept", links=tuple(sorted(links)))))
        return new
    if settings.max_shift < 1.0:
        return _ramp(prev, new, snapshot, settings.max_shift)
    return new


def shape(previous: Plan | None, proposed: Plan, snapshot: HealthSnapshot,
          settings: GuardSettings, *, frozen: frozenset[str] = frozenset(),
          before: Mapping[str, HealthState] | None = None, walk_all: bool = False) -> Plan:
    """The plan to apply after ``previous`` (module docstring).

    Only the keys whose answer set is not the very object it was in ``previous`` (and the
    frozen services' keys) can be shaped. When both plans come from one incremental
    planner those are known without a walk (``incremental.group_delta``: the groups the
    link changes since ``previous`` touched, and the keys replaced in either plan), and
    the result is the proposal with the shaped sets laid over it (an ``Overlay``);
    otherwise, or with ``walk_all``, every key is visited. Both give equal plans (a
    property test holds them to it).
    """
    if previous is None:
        return proposed
    delta = None if walk_all else group_delta(previous.answers, proposed.answers)
    parts = layers(proposed.answers)
    if delta is None or parts is None:
        out: dict[AnswerKey, AnswerSet] = {}
        changed = False
        for key, new in proposed.answers.items():
            shaped = _shape_one(key, previous.answers.get(key), new, snapshot, settings,
                                frozen, before)
            changed |= shaped is not new
            out[key] = shaped
        if not changed:
            return proposed
        return replace(proposed, answers=MappingProxyType(out))
    base, over = parts
    where, was, now, groups, loose = delta
    todo = set(loose)  # one by one: replaced in either plan, or frozen
    for service in frozen:
        todo.update(where.service_keys(service))
    shaped_sets: dict[AnswerKey, AnswerSet] = {}
    for gi in groups:
        # the group's other keys are copies of its answer set on both sides, and shaping
        # reads a key only for its service: shape the group once, copy for each segment
        keys = where.group_keys(gi)
        if not keys or keys[0][0] in frozen:
            continue
        shaped = _shape_one(keys[0], was[gi], now[gi], snapshot, settings, frozen, before)
        if shaped is now[gi]:
            continue
        for key in keys:
            if key not in todo:
                shaped_sets[key] = (shaped if shaped.segment == key[1]
                                    else with_segment(shaped, key[1]))
    for key in todo:
        proposal = proposed.answers.get(key)
        if proposal is None:
            continue
        shaped = _shape_one(key, previous.answers.get(key), proposal, snapshot, settings,
                            frozen, before)
        if shaped is not proposal:
            shaped_sets[key] = shaped
    if not shaped_sets:
        return proposed
    return replace(proposed, answers=Overlay(base, {**over, **shaped_sets}))


def demoted(before: Mapping[str, HealthState], after: Mapping[str, HealthState]) -> set[str]:
    """Links that went from serving to not serving."""
    return {name for name, st in after.items()
            if not st.serving and before.get(name, HealthState.UNKNOWN).serving}
