"""The planner: a pure function of (config, health snapshot) -> Plan.

For every service and every segment key (its policy's rule segments, plus ``default``),
the answer set is chosen like this:

1. Candidates: the endpoints of the rule's pools, in pool order. An endpoint's tier is its
   pool's ``tier`` or else its link's priority; its state is its link's state in the
   snapshot. Addresses give A / AAAA answers, a ``cname`` a CNAME answer.
2. Tiers are tried in ascending order. A tier's healthy capacity is the configured weight
   of its serving endpoints over its total configured weight. The first tier whose
   capacity reaches ``service.failover_threshold`` serves (its serving endpoints only).
3. If no tier reaches the threshold: the first tier with any serving endpoint serves
   (best effort). Drained endpoints (weight 0) serve only when nothing else can, then at
   equal weight.
4. If nothing serves anywhere, the rule's first pool's ``all_down`` decides: ``fail_open``
   (the default) with ``guard.fail_open``: every candidate at its configured weight
   (flagged, as Route 53 does; with guard.fail_open off the set is empty and the guard
   decides whether that may go out); ``fallback``: the pool it names, at its configured
   weights whatever its health; ``fail_closed``: no answers (NODATA), on purpose.

Served weights are the configured weights x ``health.degraded_weight`` for DEGRADED links.
A link FALLING from DEGRADED (``LinkHealth.falling_from``) is planned as DEGRADED until it
is DOWN, so its weight ramps down (100 % -> 50 % -> out) instead of going back to 100 %
while it falls; a link falling from UP keeps its full weight (it may still recover).
The TTL drops to ``failover_ttl`` while failing over: the serving tier is not the best
configured one, fail-open, or any candidate link is not steady (FALLING, RISING, DEGRADED,
DOWN), or a share spilled (below), so resolvers come back soon. Two endpoints giving the
same answer value: the first (in pool order) wins. Every decision is recorded as a Reason
with a stable code.

Three optional features change steps 2-4; with all of them off (the defaults) none of the
code below runs, and plans are exactly as described above. An endpoint's *capacity* is its
configured weight, x ``degraded_weight`` when DEGRADED, 0 when not serving.

5. Minimum healthy capacity, ``pool.min_healthy`` (0..1, 0 = off). A pool of the rule whose
   serving weight / configured weight (DEGRADED links count whole, as for the threshold)
   is below it is taken out whole (``pool.below_min_healthy``): its few survivors would be
   overloaded by the whole pool's share. Taken-out endpoints count as not serving in steps
   2-4 and below, so the pool's share spills like a failed pool's. If that leaves nothing
   with weight to serve while something could serve before, the all-down policy of the
   rule's first pool decides: ``fail_open`` keeps every pool in (``pool.min_healthy_
   waived``: overloaded survivors beat dead links and beat nothing), ``fallback`` serves
   the fallback pool, ``fail_closed`` answers NODATA (``pool.min_healthy_all_out``). A
   pool with no configured weight is never below it.
6. Capacity-aware spill across tiers, ``service.spill: capacity`` (default ``cascade`` =
   step 2). The first tier with configured weight (the one serving when all is well) keeps
   serving alone while its healthy capacity reaches the threshold, as in step 2. Below it,
   the tier's demand (its configured weight) is shared out in tier order: the tier's own
   survivors first, at their capacity; what they cannot carry goes to the next tier's
   serving endpoints in proportion to their capacity, each capped at its capacity; what
   that tier cannot take goes on to the next (``spill.capacity``, with the figures). So
   the answer weights add up to the demand while the capacity allows, and no endpoint gets
   more than its capacity. If nothing can take any of it, steps 3-4 decide.
7. Nearest routing, ``service.routing: nearest`` (default ``weighted``). For a segment with
   a ``location``, the sites of the tier that serves (the first tier, under ``spill:
   capacity``) are ranked by ``geo.nearest.rank_sites`` (great-circle distance from the
   segment to each endpoint's site; ties by site name; ``nearest.ranked`` carries the
   ranking). The nearest site with configured weight serves alone while it is whole. Its
   demand is its configured weight; when its capacity falls short (a link down, degraded,
   or its pool below min_healthy) its survivors keep their capacity and the missing share
   spreads over the tier's OTHER sites together in proportion to their capacity, capped
   (``nearest.spill``), not onto the single next-nearest one; under ``spill: capacity``,
   when the first tier is below its threshold, what the tier cannot take goes on to the
   next tiers (step 6; one ``spill.capacity`` reason tells it all). Measured latency is
   blended in where probes cover the segment: a site's measured rtt is the lowest that
   its candidate links report toward one of the segment's ``measured_regions`` (default: its
   ``regions`` criterion; ``LinkHealth.toward``:
   targets that name their ``region``; a figure moves only on a clear change,
   edge.health.coverage), and ``rank_sites`` scores it 0.7 x measured + 0.3 x the
   distance estimate. The fallback pool of an ``all_down: fallback`` rule is served
   nearest first the same way (its live endpoints; when none is live it serves whole,
   whatever its health, as always). A segment without a location (the
   implicit ``default`` always) is planned as ``weighted`` (``nearest.no_location``).
   A segment with a location but no rule of its own gets the default rule's pools under
   its own key (``rules``), so a located segment needs no policy rule to be served from
   its nearest site.
"""

from __future__ import annotations

import gc
import hashlib
import io
import json
import pickle
from collections.abc import Mapping
from operator import attrgetter
from types import MappingProxyType
from typing import NamedTuple, cast

from edge.config.schema import Config, Link, Pool, Service
from edge.health.state import HealthSnapshot, HealthState, LinkHealth
from edge.plan import AnswerKey, AnswerSet, Plan, Reason, RRType, WeightedAnswer
from edge.steering.capacity import fill
from geo.nearest import rank_sites
from geo.segment import DEFAULT_SEGMENT

S = HealthState
_UNSTEADY = frozenset({S.FALLING, S.RISING, S.DEGRADED, S.DOWN})


Preset = list[tuple[WeightedAnswer, ...]]  # empty, or the answers at the configured weight


class Candidate(NamedTuple):
    """One endpoint of a rule, resolved against config and health (a tuple: the planner
    makes 240,000 of them for a large plan)."""

    pool: str
    link: str
    tier: int
    weight: float
    state: HealthState
    records: tuple[tuple[RRType, str], ...]
    # the answers at ``weight``, once made (the box is the endpoint's, shared by its
    # Candidates of every state); None: made on each use
    preset: Preset | None = None
    site: str | None = None  # where the endpoint is (nearest routing)
    # may serve: its state serves and its pool is not taken out (min_healthy)
    live: bool = True

    @property
    def serving(self) -> bool:
        return self.live


_SERVING = frozenset(st for st in HealthState if st.serving)
_new_tuple = tuple.__new__


def _reason(code: str, detail: str, **inputs: object) -> Reason:
    return Reason(code, detail, MappingProxyType(inputs))


_PCT: dict[float, str] = {}


def _pct(x: float) -> str:
    hit = _PCT.get(x)
    if hit is None:
        if len(_PCT) >= 4096:
            _PCT.clear()
        hit = _PCT[x] = f"{x * 100:.0f}%"
    return hit


# str(state), once: the same text without the call
_STATE_TEXT = {st: str(st) for st in HealthState}


def _records(values: tuple[str, ...]) -> tuple[tuple[RRType, str], ...]:
    # The loader validated every address: an IPv6 address has a colon, an IPv4 one never.
    return tuple([("AAAA" if ":" in v else "A", v) for v in values])


_Rules = tuple[tuple[str, tuple[str, ...]], ...]


def _rules(config: Config, service: Service) -> _Rules:
    every = tuple(p.name for p in service.pools)
    policy = config.policies.get(service.name)
    if policy is None:
        if service.routing == "nearest":
            return _located(config, {}, every)
        return ((DEFAULT_SEGMENT, every),)
    # (segment, pools) pairs made in C: 500,000 rules in a large config
    pairs = tuple(map(_SEGMENT_POOLS, policy.rules))
    out = dict(pairs)
    if len(out) != len(pairs):  # a segment listed twice: its first rule wins
        out = {}
        for rule in policy.rules:
            out.setdefault(rule.segment, rule.pools)
        pairs = tuple(out.items())
    if service.routing == "nearest":
        return _located(config, out, out.get(DEFAULT_SEGMENT, every))
    if DEFAULT_SEGMENT not in out:
        pairs += ((DEFAULT_SEGMENT, every),)
    return pairs


_SEGMENT_POOLS = attrgetter("segment", "pools")


def _located(config: Config, out: dict[str, tuple[str, ...]],
             default: tuple[str, ...]) -> _Rules:
    """routing: nearest: every segment with a location and no rule of its own gets the
    default rule's pools under its own key (its answers depend on where it is), after the
    policy's rules, before ``default``."""
    for seg in config.segments:
        if seg.location is not None and seg.name not in out:
            out[seg.name] = default
    out.setdefault(DEFAULT_SEGMENT, default)
    return tuple(out.items())


_RULES: dict[int, tuple[Config, dict[int, tuple[Service, _Rules]]]] = {}


def rules(config: Config, service: Service) -> _Rules:
    """(segment, pool names) for every segment key of ``service``, ``default`` included.
    Cached per config object (the identity digest and the planner both ask)."""
    hit = _RULES.get(id(config))
    if hit is None or hit[0] is not config:
        if len(_RULES) >= 8:
            _RULES.clear()
        hit = _RULES[id(config)] = (config, {})
    memo = hit[1]
    got = memo.get(id(service))
    if got is None or got[0] is not service:
        got = memo[id(service)] = (service, _rules(config, service))
    return got[1]


def plan_key_order(config: Config) -> tuple[AnswerKey, ...]:
    """The answer keys of a plan in their deterministic order: config order of services,
    then policy order of rules, ``default`` last unless the policy names it."""
    return tuple((svc.name, seg) for svc in config.services for seg, _ in rules(config, svc))


_INDEX: dict[int, tuple[Config, dict[str, Link]]] = {}


def _links_of(config: Config) -> dict[str, Link]:
    """Link by name, cached per config object (``Config.link`` is a linear scan)."""
    hit = _INDEX.get(id(config))
    if hit is not None and hit[0] is config:
        return hit[1]
    if len(_INDEX) >= 8:
        _INDEX.clear()
    index = {lk.name: lk for lk in config.links}
    _INDEX[id(config)] = (config, index)
    return index


# per endpoint: (its link, its Candidate per link state: UP made with the entry, the others
# on first use; immutable)
StaticEntry = tuple[str, dict[HealthState, "Candidate"]]
# per tier, ascending: (tier, the positions of its endpoints, their configured weight)
TierLayout = tuple[tuple[int, tuple[int, ...], float], ...]


class Static(NamedTuple):
    """What of a rule's answer set depends on the config only (``static_candidates``)."""

    entries: tuple[StaticEntry, ...]  # per endpoint, in pool order
    links: frozenset[str]
    tiers: TierLayout
    best: int  # the best tier with configured weight (else the best tier; 0: no endpoints)
    lead: Pool | None  # the rule's first pool: its all_down decides


Shape = tuple[tuple[object, ...], ...]


class PoolPart(NamedTuple):
    """One pool of a service, resolved (shared by the rules that list it)."""

    entries: tuple[StaticEntry, ...]
    links: frozenset[str]
    shape: Shape  # (tier, weight) per endpoint (``_layout``)
    pool: Pool


def _pool_static(by_name: dict[str, Link], pool: Pool) -> PoolPart:
    out: list[StaticEntry] = []
    links: list[str] = []
    shape: list[tuple[object, ...]] = []
    name = pool.name
    for ep in pool.endpoints:
        link = by_name[ep.link]
        if ep.cname is not None:
            records: tuple[tuple[RRType, str], ...] = (("CNAME", ep.cname),)
        else:
            records = _records(ep.addresses or (link.answers_v4 + link.answers_v6))
        tier = pool.tier if pool.tier is not None else link.priority
        weight = ep.weight
        # the box for the answers at the configured weight is filled when first served
        # (most plans serve exactly these; many endpoints, the lower tiers', never serve)
        up = _new_tuple(Candidate, (name, link.name, tier, weight, S.UP, records, [], ep.site,
                                    True))
        out.append((link.name, {S.UP: up}))
        links.append(link.name)
        # a weight that is not a float keeps its type in the shape: 100 == 100.0, but a
        # total summed from ints prints differently
        shape.append((tier, weight) if type(weight) is float else (tier, weight, type(weight)))
    return PoolPart(tuple(out), frozenset(links), tuple(shape), pool)


_LAYOUTS: dict[Shape, tuple[TierLayout, int]] = {}


def _layout(shape: Shape) -> tuple[TierLayout, int]:
    """The tiers of a rule's endpoints given their (tier, weight), and its best tier; a
    function of that shape only, so shared by every rule with the same one."""
    hit = _LAYOUTS.get(shape)
    if hit is None:
        pairs = [(cast(int, x[0]), cast(float, x[1])) for x in shape]
        tiers = sorted({t for t, _ in pairs})
        layout = []
        for tier in tiers:
            where = tuple(i for i, (t, _) in enumerate(pairs) if t == tier)
            # summed as over the candidates, in the same order: the same number
            layout.append((tier, where, sum(pairs[i][1] for i in where)))
        weighted = [t for t, w in pairs if w > 0]
        best = min(weighted) if weighted else (tiers[0] if tiers else 0)
        if len(_LAYOUTS) >= 4096:
            _LAYOUTS.clear()
        hit = _LAYOUTS[shape] = (tuple(layout), best)
    return hit


def static_candidates(config: Config, service: Service, pools: tuple[str, ...], *,
                      memo: dict[str, PoolPart] | None = None) -> Static:
    """What of a rule's answer set depends on the config only (:class:`Static`). The
    incremental planner keeps these; ``memo`` (pool name -> its part, for one service)
    shares the work between the rules of a service."""
    if memo is None:
        memo = {}
    parts = []
    for pool_name in pools:
        part = memo.get(pool_name)
        if part is None:
            part = memo[pool_name] = _pool_static(_links_of(config),
                                                  service.pool(pool_name))
        parts.append(part)
    if not parts:
        return Static((), frozenset(), (), 0, None)
    entries, links, shape, lead = parts[0]
    for part in parts[1:]:  # a rule lists a pool or two: concatenations beat generators
        entries += part.entries
        links |= part.links
        shape += part.shape
    tiers, best = _layout(shape)
    return Static(entries, links, tiers, best, lead)


def _resolve(static: Static, health: Mapping[str, LinkHealth]
             ) -> tuple[tuple[Candidate, ...], bool]:
    """The candidates under ``health``, and whether every one is UP (the common case)."""
    unknown, up, falling, degraded = S.UNKNOWN, S.UP, S.FALLING, S.DEGRADED
    out = []
    all_up = True
    for link, made in static.entries:
        lh = health.get(link)
        state = lh.state if lh is not None else unknown
        if state is falling and lh is not None and lh.falling_from is degraded:
            state = degraded  # a ramp down, not back to full weight (module docstring)
        cand = made.get(state)
        if cand is None:  # tuple.__new__: the NamedTuple's own __new__ is Python code
            base = made[up]
            cand = made[state] = _new_tuple(Candidate, (*base[:4], state, *base[5:8],
                                                        state in _SERVING))
        if state is not up:
            all_up = False
        out.append(cand)
    return tuple(out), all_up


def candidates(config: Config, service: Service, pools: tuple[str, ...],
               snapshot: HealthSnapshot, *, static: Static | None = None
               ) -> tuple[Candidate, ...]:
    if static is None:
        static = static_candidates(config, service, pools)
    return _resolve(static, snapshot.links)[0]


def _link_reason(link: str, st: HealthState, degraded_weight: float) -> Reason | None:
    if st in (S.DOWN, S.RISING):
        return _reason("link.down", f"link {link} is {st}: not served",
                       link=link, state=str(st))
    if st is S.DEGRADED:
        return _reason("link.degraded",
                       f"link {link} is degraded: served at weight x {degraded_weight:g}",
                       link=link, state=str(st), factor=degraded_weight)
    if st is S.FALLING:
        return _reason("link.falling", f"link {link} is falling: still served",
                       link=link, state=str(st))
    if st is S.UNKNOWN:
        return _reason("link.unknown",
                       f"link {link} has no health data: served (no data is not "
                       f"failure)", link=link, state=str(st))
    return None


_LINK_REASONS: dict[tuple[str, str, float], Reason | None] = {}


def _link_reasons(cands: tuple[Candidate, ...], degraded_weight: float,
                  health: Mapping[str, LinkHealth]) -> list[Reason]:
    if all(c.state is S.UP for c in cands):
        return []  # the common case: nothing to say
    seen: dict[str, HealthState] = {}
    for c in cands:
        seen.setdefault(c.link, c.state)
    out = []
    memo = _LINK_REASONS
    for link, st in seen.items():
        if st is S.UP:
            continue
        lh = health.get(link)
        # a link falling from DEGRADED is planned as DEGRADED (_resolve): say what it is
        ramp = st is S.DEGRADED and lh is not None and lh.state is S.FALLING
        key = (link, "falling from degraded" if ramp else st.value, degraded_weight)
        if key in memo:
            why = memo[key]
        else:  # Reasons are immutable: one per (link, state) is shared by every answer set
            if len(memo) > 65536:
                memo.clear()
            why = memo[key] = (_falling_from_degraded(link, degraded_weight) if ramp
                               else _link_reason(link, st, degraded_weight))
        if why is not None:
            out.append(why)
    return out


def _falling_from_degraded(link: str, degraded_weight: float) -> Reason:
    return _reason("link.falling", f"link {link} is falling from degraded: still served at "
                   f"weight x {degraded_weight:g} until it is down", link=link,
                   state=str(S.FALLING), falling_from=str(S.DEGRADED), factor=degraded_weight)


class _Choice(NamedTuple):
    tier: int
    served: tuple[Candidate, ...]
    fail_open: bool = False
    equal_weights: bool = False
    weights: tuple[float, ...] | None = None  # per served candidate (capacity-shared)
    cause: str | None = None  # why this is a failover (a share spilled)


def _tier_verdict(tier: int, members: list[Candidate], total: float, threshold: float
                  ) -> tuple[Reason, _Choice | None]:
    """One tier of step 2: its reason, and the choice if it serves (None: skipped)."""
    healthy = sum([c.weight for c in members if c.live])
    cap = healthy / total if total > 0 else 0.0
    inputs: dict[str, object] = {
        "tier": tier, "capacity": round(cap, 6), "threshold": threshold,
        "healthy_weight": healthy, "total_weight": total,
        "links": {c.link: _STATE_TEXT[c.state] for c in members}}
    if total > 0 and cap >= threshold:
        return (Reason("tier.selected", f"tier {tier} serves: healthy capacity "
                       f"{_pct(cap)} >= threshold {_pct(threshold)}", MappingProxyType(inputs)),
                _Choice(tier, tuple([c for c in members if c.live and c.weight > 0])))
    return (Reason("tier.skipped", f"tier {tier} skipped: healthy capacity {_pct(cap)} < "
                   f"threshold {_pct(threshold)}", MappingProxyType(inputs)), None)


class PlanMemo:
    """What one plan (or one re-plan) has already worked out, for the rules that meet the
    same candidates again (a service's rules list the same pools in other orders or
    subsets, so their serving tier is often the same endpoints in the same states).

    Keyed by the ids of the Candidates; each entry keeps those objects, so an id cannot
    stand for another object while the entry lives. Shared objects are immutable."""

    __slots__ = ("answers", "tiers")

    def __init__(self) -> None:
        # (threshold, ids of the tier's members) -> (reason, choice or None, the members)
        self.tiers: dict[tuple[object, ...],
                         tuple[Reason, _Choice | None, list[Candidate]]] = {}
        # id(choice) -> (the choice, its answers, the reasons _answers added)
        self.answers: dict[int, tuple[_Choice, tuple[WeightedAnswer, ...],
                                      tuple[Reason, ...]]] = {}


def _choose(cands: tuple[Candidate, ...], threshold: float, fail_open: bool,
            reasons: list[Reason], policy: str = "fail_open",
            layout: TierLayout | None = None, memo: PlanMemo | None = None
            ) -> _Choice | None:
    """Walk the tiers (module docstring, steps 2-4). None: nothing may be served.
    ``layout``: the candidates' tiers (``Static.tiers``), else worked out here; ``memo``:
    tier verdicts already reached in this plan (``PlanMemo``)."""
    if layout is None:
        layout = _layout(tuple((c.tier, c.weight) if type(c.weight) is float
                               else (c.tier, c.weight, type(c.weight)) for c in cands))[0]
    tiers = [tier for tier, _, _ in layout]
    for tier, where, total in layout:
        members = [cands[i] for i in where]
        if memo is not None:
            key = (threshold, *map(id, members))
            hit = memo.tiers.get(key)
            if hit is not None:
                reasons.append(hit[0])
                if hit[1] is not None:
                    return hit[1]
                continue
            verdict = _tier_verdict(tier, members, total, threshold)
            memo.tiers[key] = (*verdict, members)  # members kept: their ids stay theirs
            reasons.append(verdict[0])
            if verdict[1] is not None:
                return verdict[1]
            continue
        reason, choice = _tier_verdict(tier, members, total, threshold)
        reasons.append(reason)
        if choice is not None:
            return choice
    for tier in tiers:
        served = tuple(c for c in cands if c.tier == tier and c.live and c.weight > 0)
        if served:
            reasons.append(_reason("tier.best_effort", f"no tier reaches the threshold: tier "
                                   f"{tier} serves what it has", tier=tier,
                                   threshold=threshold))
            return _Choice(tier, served)
    for tier in tiers:
        served = tuple(c for c in cands if c.tier == tier and c.live)
        if served:
            reasons.append(_reason("endpoint.drained_only", f"only drained endpoints can "
                                   f"serve: tier {tier} drained endpoints at equal weight",
                                   tier=tier))
            return _Choice(tier, served, equal_weights=True)
    if policy == "fail_closed":
        reasons.append(_reason("all_down.fail_closed", "every endpoint is down and the rule's "
                               "first pool is all_down: fail_closed: no answers (NODATA)",
                               endpoints=len(cands)))
        return None
    if policy == "fallback":
        return None  # the caller serves the fallback pool
    if not fail_open:
        reasons.append(_reason("no_answers", "every endpoint is down and guard.fail_open is "
                               "off: no answers", endpoints=len(cands)))
        return None
    weighted = tuple(c for c in cands if c.weight > 0)
    reasons.append(_reason("fail_open", "every endpoint is down: fail-open serves all "
                           f"{len(cands)} endpoints at their configured weights",
                           endpoints=len(cands)))
    return _Choice(tiers[0], weighted or cands, fail_open=True, equal_weights=not weighted)


def _answers(choice: _Choice, degraded_weight: float,
             reasons: list[Reason]) -> tuple[WeightedAnswer, ...]:
    out: dict[tuple[str, str], WeightedAnswer] = {}
    if choice.weights is not None:  # shared out by capacity (degraded scaling included)
        for c, weight in zip(choice.served, choice.weights, strict=True):
            _add_answers(out, c, weight)
        return tuple(out.values())
    if not choice.equal_weights and not choice.fail_open:
        # the common case, inline: every candidate at its configured weight, unless degraded
        degraded = S.DEGRADED
        for c in choice.served:
            box = c.preset
            if c.state is degraded or box is None:
                break
            if not box:
                box.append(tuple(WeightedAnswer(rrtype, value, c.weight, c.link, c.pool,
                                                c.tier) for rrtype, value in c.records))
            for wa in box[0]:
                out.setdefault((wa.rrtype, wa.value), wa)
        else:
            return tuple(out.values())
        out.clear()  # the general loop below, from the start
    for c in choice.served:
        weight = 1.0 if choice.equal_weights else c.weight
        if c.state is S.DEGRADED and not choice.fail_open and not choice.equal_weights:
            scaled = weight * degraded_weight
            reasons.append(_reason("weight.scaled", f"{c.pool}/{c.link} weight {weight:g} x "
                                   f"{degraded_weight:g} = {scaled:g} (degraded)",
                                   pool=c.pool, link=c.link, weight=weight,
                                   factor=degraded_weight, result=scaled))
            weight = scaled
        _add_answers(out, c, weight)
    return tuple(out.values())


def _add_answers(out: dict[tuple[str, str], WeightedAnswer], c: Candidate,
                 weight: float) -> None:
    """``c``'s answers at ``weight`` into ``out`` (the first endpoint giving a value wins)."""
    box = c.preset
    if weight == c.weight and box is not None:
        if not box:
            box.append(tuple(WeightedAnswer(rrtype, value, c.weight, c.link, c.pool,
                                            c.tier)
                             for rrtype, value in c.records))
        for wa in box[0]:
            out.setdefault((wa.rrtype, wa.value), wa)
        return
    for rrtype, value in c.records:
        out.setdefault((rrtype, value), WeightedAnswer(rrtype, value, weight, c.link,
                                                       c.pool, c.tier))


def answer_set(config: Config, service: Service, segment: str, pools: tuple[str, ...],
               snapshot: HealthSnapshot, *, static: Static | None = None,
               memo: PlanMemo | None = None) -> AnswerSet:
    """The answer set of one (service, segment) rule (``static``: its precomputed
    ``static_candidates``; ``memo``: shared by the answer sets of one plan, whose statics
    stay alive meanwhile)."""
    if static is None:
        static = static_candidates(config, service, pools)
    cands, all_up = _resolve(static, snapshot.links)
    dw = config.health.degraded_weight
    reasons = [] if all_up else _link_reasons(cands, dw, snapshot.links)
    if not cands:
        reasons.append(_reason("no_endpoints", "the rule's pools have no endpoints"))
        return AnswerSet(service.name, segment, service.ttl, 0, (), tuple(reasons),
                         max_answers=service.max_answers)
    best = static.best
    lead = static.lead
    policy = lead.all_down if lead is not None else "fail_open"
    if _extended(config, service):
        memo = None  # its candidates are remade per rule (min_healthy): nothing to share
        choice = _choose_extended(config, service, segment, cands, policy, reasons,
                                  static.tiers, snapshot)
    else:
        choice = _choose(cands, service.failover_threshold, config.guard.fail_open, reasons,
                         policy, static.tiers, memo)
    if choice is None and policy == "fallback" and lead is not None and lead.fallback:
        fb = candidates(config, service, (lead.fallback,), snapshot)
        weighted_fb = tuple(c for c in fb if c.weight > 0)
        reasons.append(_reason("all_down.fallback", f"every endpoint is down: the fallback "
                               f"pool {lead.fallback} serves, whatever its health",
                               pool=lead.fallback, endpoints=len(fb)))
        if fb:
            choice = _Choice(min(c.tier for c in fb), weighted_fb or fb,
                             equal_weights=not weighted_fb)
            where = _where(config, service, segment, snapshot)
            if where is not None and weighted_fb:  # nearest first here too (step 7)
                choice = _nearest(config, weighted_fb, choice, dw, where, reasons)
    if choice is None:
        answers: tuple[WeightedAnswer, ...] = ()
    elif memo is None:
        answers = _answers(choice, dw, reasons)
    else:
        made = memo.answers.get(id(choice))
        if made is not None and made[0] is choice:
            answers = made[1]
            reasons.extend(made[2])
        else:
            before = len(reasons)
            answers = _answers(choice, dw, reasons)
            # the choice kept in the entry: its id stays its own
            memo.answers[id(choice)] = (choice, answers, tuple(reasons[before:]))
    tier = choice.tier if choice is not None else best
    why = []
    if choice is None or choice.fail_open:
        why.append("nothing healthy")
    elif tier != best:
        why.append(f"tier {tier} serves instead of tier {best}")
    if choice is not None and choice.cause is not None:
        why.append(choice.cause)
    unsteady = () if all_up else sorted(
        {f"{c.link} {c.state}" for c in cands if c.state in _UNSTEADY})
    if unsteady:
        why.append("unsteady: " + ", ".join(unsteady))
    failing_over = bool(why)
    if failing_over:
        ttl = service.failover_ttl
        reasons.append(_reason("ttl.failover", f"ttl {ttl} (failover): {'; '.join(why)}",
                               ttl=ttl, causes=tuple(why)))
    else:
        ttl = service.ttl
        reasons.append(_steady(ttl))
    return AnswerSet(service.name, segment, ttl, tier, answers, tuple(reasons), failing_over,
                     choice is not None and choice.fail_open, service.max_answers)


# optional features (module docstring, steps 5-7) ----------------------------------------

_EXT: dict[int, tuple[Config, dict[int, tuple[Service, bool]]]] = {}


def _extended(config: Config, service: Service) -> bool:
    """Whether min_healthy, spill: capacity or routing: nearest is on for ``service``
    (cached per config and service object, as ``rules``; when none is, the plain path
    runs, paying nothing for them)."""
    hit = _EXT.get(id(config))
    if hit is None or hit[0] is not config:
        if len(_EXT) >= 8:
            _EXT.clear()
        hit = _EXT[id(config)] = (config, {})
    got = hit[1].get(id(service))
    if got is None or got[0] is not service:
        on = (service.spill != "cascade" or service.routing != "weighted"
              or any(p.min_healthy > 0 for p in service.pools))
        got = hit[1][id(service)] = (service, on)
    return got[1]


Place = tuple[float, float]
_Places = tuple[dict[str, Place | None], dict[str, Place], dict[str, tuple[str, ...]]]
_GEO: dict[int, tuple[Config, _Places]] = {}


def _places(config: Config) -> _Places:
    """(site -> location, segment -> location, segment -> its regions, sorted), cached per
    config object."""
    hit = _GEO.get(id(config))
    if hit is not None and hit[0] is config:
        return hit[1]
    if len(_GEO) >= 8:
        _GEO.clear()
    sites = {s.name: (s.location.lat, s.location.lon) if s.location is not None else None
             for s in config.sites}
    segments = {seg.name: seg.location for seg in config.segments if seg.location is not None}
    regions = {seg.name: tuple(sorted(seg.measured_from)) for seg in config.segments
               if seg.measured_from}
    places = _GEO[id(config)] = (config, (sites, segments, regions))
    return places[1]


class _Where(NamedTuple):
    """Where nearest routing measures a segment from: its location, its regions (for the
    measured latency toward them) and the links' health (which reports it)."""

    place: Place
    regions: tuple[str, ...]
    links: Mapping[str, LinkHealth]

    def measured(self, members: list[Candidate]) -> dict[str, float]:
        """Site -> the lowest rtt (ms) its candidates' links report toward the regions."""
        out: dict[str, float] = {}
        if not self.regions:
            return out
        for c in members:
            lh = self.links.get(c.link)
            if lh is None or not lh.toward:
                continue
            site = _site_of(c)
            for region in self.regions:
                ms = lh.toward.get(region)
                if ms is not None and ms < out.get(site, float("inf")):
                    out[site] = ms
        return out


def _where(config: Config, service: Service, segment: str,
           snapshot: HealthSnapshot | None) -> _Where | None:
    """Where nearest routing measures ``segment`` from (None: it does not)."""
    located = segment_location(config, service, segment)
    if located is None:
        return None
    return _Where(located, _places(config)[2].get(segment, ()),
                  snapshot.links if snapshot is not None else {})


def segment_place(config: Config, service: Service, segment: str) -> str | None:
    """What of ``segment`` besides its name an answer set of ``service`` depends on (its
    location and regions under nearest routing), as a key; None: nothing."""
    where = segment_location(config, service, segment)
    if where is None:
        return None
    return repr((where, _places(config)[2].get(segment, ())))


def segment_location(config: Config, service: Service, segment: str) -> Place | None:
    """Where nearest routing measures ``segment`` from for ``service`` (None: it does not;
    the answer set then depends on the segment by name only)."""
    if service.routing != "nearest":
        return None
    return _places(config)[1].get(segment)


def _choose_extended(config: Config, service: Service, segment: str,
                     cands: tuple[Candidate, ...], policy: str,
                     reasons: list[Reason], layout: TierLayout | None = None,
                     snapshot: HealthSnapshot | None = None) -> _Choice | None:
    """Steps 2-4 with min_healthy, capacity spill and nearest routing (docstring 5-7)."""
    dw = config.health.degraded_weight
    threshold = service.failover_threshold
    cands = _min_healthy(service, cands, policy, reasons)
    where = _where(config, service, segment, snapshot)
    if service.routing == "nearest" and where is None:
        reasons.append(_reason("nearest.no_location", "this segment has no location: nearest "
                               "routing degrades to weighted"))
    choice = None
    if service.spill == "capacity":
        choice = _spill(config, cands, threshold, dw, where, reasons)
    if choice is None:
        choice = _choose(cands, threshold, config.guard.fail_open, reasons, policy, layout)
        if where is not None and choice is not None and not choice.fail_open \
                and not choice.equal_weights:
            choice = _nearest(config, cands, choice, dw, where, reasons)
    return choice


def _min_healthy(service: Service, cands: tuple[Candidate, ...], policy: str,
                 reasons: list[Reason]) -> tuple[Candidate, ...]:
    """The candidates with every pool below its min_healthy taken out (not live)."""
    limits = {p.name: p.min_healthy for p in service.pools if p.min_healthy > 0}
    if not limits:
        return cands
    sums: dict[str, list[float]] = {}
    for c in cands:
        if c.pool in limits:
            acc = sums.setdefault(c.pool, [0.0, 0.0])
            acc[0] += c.weight
            if c.live:
                acc[1] += c.weight
    out: dict[str, tuple[float, float, float]] = {}
    for pool, (total, healthy) in sums.items():
        if total > 0 and healthy / total < limits[pool]:
            out[pool] = (healthy, total, healthy / total)
    if not out:
        return cands
    for pool, (healthy, total, share) in out.items():
        reasons.append(_reason(
            "pool.below_min_healthy", f"pool {pool} serves {healthy:g} of its {total:g} "
            f"({_pct(share)}) < min_healthy {_pct(limits[pool])}: taken out whole, its share "
            f"spills", pool=pool, healthy_weight=healthy, total_weight=total,
            capacity=round(share, 6), min_healthy=limits[pool]))
    kept = tuple(c._replace(live=False) if c.live and c.pool in out else c for c in cands)
    if any(c.live and c.weight > 0 for c in kept) or not any(c.live for c in cands):
        return kept
    pools = ", ".join(out)
    if policy == "fail_open":
        reasons.append(_reason("pool.min_healthy_waived", f"nothing else can serve: the "
                               f"survivors of {pools} serve after all (all_down: fail_open)",
                               pools=tuple(out)))
        return cands
    reasons.append(_reason("pool.min_healthy_all_out", f"nothing else can serve with {pools} "
                           f"taken out: all_down: {policy} decides", pools=tuple(out),
                           policy=policy))
    return kept


def _capacity(c: Candidate, degraded_weight: float) -> float:
    return c.weight * degraded_weight if c.state is S.DEGRADED else c.weight


def _live(cands: list[Candidate]) -> list[Candidate]:
    return [c for c in cands if c.live and c.weight > 0]


def _site_of(c: Candidate) -> str:
    return c.site if c.site is not None else "(no site)"


def _split_nearest(config: Config, members: list[Candidate], where: _Where,
                   reasons: list[Reason]) -> tuple[list[Candidate], list[Candidate], str] | None:
    """(the nearest site's candidates, the others', its name); None: no site has weight."""
    located = _places(config)[0]
    totals: dict[str, float] = {}
    for c in members:
        totals[_site_of(c)] = totals.get(_site_of(c), 0.0) + c.weight
    ranked = rank_sites(where.place, [(site, located.get(site)) for site in totals],
                        where.measured(members))
    pick = next((r for r in ranked if totals[r.site] > 0), None)
    if pick is None:
        return None
    ranking = tuple(r.reason for r in ranked)
    reasons.append(_reason(
        "nearest.ranked", f"nearest first from ({where.place[0]:g}, {where.place[1]:g})"
        + (f", measured toward {', '.join(where.regions)}" if where.regions else "") + ": "
        + "; ".join(f"{i}. {text}" for i, text in enumerate(ranking, 1))
        + f"; site {pick.site} serves first", location=where.place, ranking=ranking,
        site=pick.site))
    head = [c for c in members if _site_of(c) == pick.site]
    rest = [c for c in members if _site_of(c) != pick.site]
    return head, rest, pick.site


def _share(groups: list[list[Candidate]], labels: list[str], demand: float, dw: float,
           lead: str, code: str, reasons: list[Reason]) -> _Choice | None:
    """``demand`` shared over ``groups`` by capacity (``capacity.fill``); None: nothing can
    take any. ``lead`` says why the first group falls short, when it does."""
    caps = [[_capacity(c, dw) for c in g] for g in groups]
    given = fill(caps, demand)
    pairs = [(c, w) for g, ws in zip(groups, given, strict=True)
             for c, w in zip(g, ws, strict=True) if w > 0]
    if not pairs:
        return None
    kept, short = sum(given[0]), demand - sum(given[0])
    cause = None
    if short > demand * 1e-9:
        parts = [f"{sum(ws):g} to {label} (capacity {sum(cs):g}, "
                 f"{_pct(sum(ws) / sum(cs))} used)"
                 for label, cs, ws in zip(labels[1:], caps[1:], given[1:], strict=True)
                 if sum(cs) > 0]
        unserved = demand - sum(sum(ws) for ws in given)
        tail = f"; {unserved:g} finds no capacity" if unserved > demand * 1e-9 else ""
        reasons.append(_reason(
            code, f"{lead}: {labels[0]} keeps {kept:g} of its {demand:g}; the missing "
            f"{short:g} spreads by capacity: {', '.join(parts) or 'nothing can take it'}"
            f"{tail}", demand=demand, kept=kept, missing=short,
            groups=tuple((label, round(sum(cs), 6), round(sum(ws), 6))
                         for label, cs, ws in zip(labels, caps, given, strict=True)),
            unserved=round(max(unserved, 0.0), 6)))
        cause = f"{labels[0]} short by {short:g}"
    for c, _ in pairs:
        if c.state is S.DEGRADED:
            reasons.append(_reason("weight.scaled", f"{c.pool}/{c.link} capacity {c.weight:g} "
                                   f"x {dw:g} = {c.weight * dw:g} (degraded)", pool=c.pool,
                                   link=c.link, weight=c.weight, factor=dw,
                                   result=c.weight * dw))
    return _Choice(min(c.tier for c, _ in pairs), tuple(c for c, _ in pairs),
                   weights=tuple(w for _, w in pairs), cause=cause)


def _spill(config: Config, cands: tuple[Candidate, ...], threshold: float, dw: float,
           where: _Where | None, reasons: list[Reason]) -> _Choice | None:
    """spill: capacity (docstring, step 6); None: the first tier serves alone, or nothing
    can serve (steps 2-4 decide)."""
    totals: dict[int, float] = {}
    healthy: dict[int, float] = {}
    for c in cands:
        totals[c.tier] = totals.get(c.tier, 0.0) + c.weight
        healthy[c.tier] = healthy.get(c.tier, 0.0) + (c.weight if c.live else 0.0)
    tiers = sorted(totals)
    first = next((t for t in tiers if totals[t] > 0), None)
    if first is None or healthy[first] / totals[first] >= threshold:
        return None
    cap = healthy[first] / totals[first]
    lead = f"tier {first} healthy capacity {_pct(cap)} < threshold {_pct(threshold)}"
    members = [c for c in cands if c.tier == first]
    local: list[Reason] = []
    split = _split_nearest(config, members, where, local) if where is not None else None
    if split is not None:
        head, rest, site = split
        groups, labels = [_live(head), _live(rest)], [f"site {site}",
                                                      f"the other sites of tier {first}"]
        demand = sum(c.weight for c in head)
    else:
        groups, labels, demand = [_live(members)], [f"tier {first}"], totals[first]
    for t in tiers:
        if t > first:
            groups.append(_live([c for c in cands if c.tier == t]))
            labels.append(f"tier {t}")
    choice = _share(groups, labels, demand, dw, lead, "spill.capacity", local)
    if choice is not None:
        reasons.extend(local)
    return choice


def _nearest(config: Config, cands: tuple[Candidate, ...], choice: _Choice, dw: float,
             where: _Where, reasons: list[Reason]) -> _Choice:
    """routing: nearest inside the tier that serves (docstring, step 7)."""
    members = [c for c in cands if c.tier == choice.tier]
    local: list[Reason] = []
    split = _split_nearest(config, members, where, local)
    if split is None:
        return choice
    head, rest, site = split
    shared = _share([_live(head), _live(rest)], [f"site {site}", "the other sites"],
                    sum(c.weight for c in head), dw, f"nearest site {site} falls short",
                    "nearest.spill", local)
    if shared is None:
        return choice
    reasons.extend(local)
    return shared


_STEADY: dict[int, Reason] = {}


def _steady(ttl: int) -> Reason:
    """The ``ttl.steady`` reason, one shared immutable object per TTL."""
    hit = _STEADY.get(ttl)
    if hit is None:
        hit = _STEADY[ttl] = _reason("ttl.steady", f"ttl {ttl}: steady", ttl=ttl)
    return hit


def _config_identity(config: Config) -> str:
    """Digest of the config source's name and of every config value the planner reads.

    Built from tuples of numbers, strings and None only (no sets, no dataclasses), pickled
    without the memo (``fast``: equal values give equal bytes whatever the object identities),
    so it is stable across processes of one Python version; a repr of the dataclasses took
    seconds at 500,000 policy rules. A new config field the planner reads must be added here.
    """
    links = tuple((lk.name, lk.priority, lk.weight, lk.answers_v4, lk.answers_v6, lk.site)
                  for lk in config.links)
    # the tuples of many small objects made in C (attrgetter): the same values as spelled
    # out, so the same bytes
    services = tuple(
        (*_SERVICE_FIELDS(svc),
         tuple((*_POOL_FIELDS(p), tuple(map(_ENDPOINT_FIELDS, p.endpoints)))
               for p in svc.pools),
         rules(config, svc))
        for svc in config.services)
    sites, segments, regions = _places(config)
    buf = io.BytesIO()
    pickler = pickle.Pickler(buf, protocol=5)
    pickler.fast = True
    pickler.dump((config.source, links, services, repr(config.guard),
                  config.health.degraded_weight, tuple(sites.items()),
                  tuple(segments.items()), tuple(regions.items())))
    return hashlib.sha256(buf.getvalue()).hexdigest()


_SERVICE_FIELDS = attrgetter("name", "zone", "ttl", "failover_ttl", "max_answers",
                             "failover_threshold", "spill", "routing")
_POOL_FIELDS = attrgetter("name", "tier", "all_down", "fallback", "min_healthy")
_ENDPOINT_FIELDS = attrgetter("link", "weight", "addresses", "cname", "site")
_IDENTITY: dict[int, tuple[Config, str]] = {}


def config_identity(config: Config) -> str:
    """``_config_identity``, cached per config object (it reprs the whole config)."""
    hit = _IDENTITY.get(id(config))
    if hit is not None and hit[0] is config:
        return hit[1]
    if len(_IDENTITY) >= 8:
        _IDENTITY.clear()
    digest = _config_identity(config)
    _IDENTITY[id(config)] = (config, digest)
    return digest


def inputs_digest(config: Config, snapshot: HealthSnapshot) -> str:
    """Identity of the plan's inputs: the config (source and content the planner reads) and
    the snapshot's version, link states and latencies toward regions."""
    return digest_with(config_identity(config), snapshot)


def digest_with(identity: str, snapshot: HealthSnapshot) -> str:
    """``inputs_digest`` from the config's ``config_identity``, computed already."""
    body = {"config": identity, "snapshot": snapshot.version,
            "links": sorted((name, str(lh.state), sorted(lh.toward.items()))
                            for name, lh in snapshot.links.items())}
    return hashlib.sha256(json.dumps(body).encode()).hexdigest()[:16]


def plan(config: Config, snapshot: HealthSnapshot, *, version: int, now: float) -> Plan:
    """The plan for ``config`` under ``snapshot``. Pure: same inputs, same plan.

    The cyclic GC is paused meanwhile: every object made is acyclic, and with a large
    plan alive its collections took a large share of the time (as in ``incremental``)."""
    answers: dict[AnswerKey, AnswerSet] = {}
    paused = gc.isenabled()
    gc.disable()
    try:
        for svc in config.services:
            memo: dict[str, PoolPart] = {}  # the pools of a service, resolved once
            shared = PlanMemo()  # per service: its statics live as long
            for segment, pools in rules(config, svc):
                static = static_candidates(config, svc, pools, memo=memo)
                answers[(svc.name, segment)] = answer_set(config, svc, segment, pools,
                                                          snapshot, static=static,
                                                          memo=shared)
    finally:
        if paused:
            gc.enable()
    return Plan(version=version, created_at=now, inputs_digest=inputs_digest(config, snapshot),
                answers=MappingProxyType(answers))


__all__ = ["Candidate", "PlanMemo", "PoolPart", "Static", "answer_set", "candidates",
           "config_identity", "digest_with", "inputs_digest", "plan", "plan_key_order", "rules",
           "segment_location", "segment_place", "static_candidates"]
