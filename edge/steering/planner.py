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
The TTL drops to ``failover_ttl`` while failing over: the serving tier is not the best
configured one, fail-open, or any candidate link is not steady (FALLING, RISING, DEGRADED,
DOWN), so resolvers come back soon. Two endpoints giving the same answer value: the first
(in pool order) wins. Every decision is recorded as a Reason with a stable code.
"""

from __future__ import annotations

import hashlib
import io
import json
import pickle
from types import MappingProxyType
from typing import NamedTuple

from edge.config.schema import Config, Link, Pool, Service
from edge.health.state import HealthSnapshot, HealthState
from edge.plan import AnswerKey, AnswerSet, Plan, Reason, RRType, WeightedAnswer
from geo.segment import DEFAULT_SEGMENT

S = HealthState
_UNSTEADY = frozenset({S.FALLING, S.RISING, S.DEGRADED, S.DOWN})


class Candidate(NamedTuple):
    """One endpoint of a rule, resolved against config and health (a tuple: the planner
    makes 240,000 of them for a large plan)."""

    pool: str
    link: str
    tier: int
    weight: float
    state: HealthState
    records: tuple[tuple[RRType, str], ...]
    preset: tuple[WeightedAnswer, ...] = ()  # the answers at ``weight``

    @property
    def serving(self) -> bool:
        return self.state in _SERVING


_SERVING = frozenset(st for st in HealthState if st.serving)


def _reason(code: str, detail: str, **inputs: object) -> Reason:
    return Reason(code, detail, MappingProxyType(inputs))


def _pct(x: float) -> str:
    return f"{x * 100:.0f}%"


def _records(values: tuple[str, ...]) -> tuple[tuple[RRType, str], ...]:
    # The loader validated every address: an IPv6 address has a colon, an IPv4 one never.
    return tuple(("AAAA" if ":" in v else "A", v) for v in values)


_Rules = tuple[tuple[str, tuple[str, ...]], ...]


def _rules(config: Config, service: Service) -> _Rules:
    every = tuple(p.name for p in service.pools)
    policy = config.policies.get(service.name)
    if policy is None:
        return ((DEFAULT_SEGMENT, every),)
    out = {rule.segment: rule.pools for rule in policy.rules}
    if len(out) != len(policy.rules):  # a segment listed twice: its first rule wins
        out = {}
        for rule in policy.rules:
            out.setdefault(rule.segment, rule.pools)
    out.setdefault(DEFAULT_SEGMENT, every)
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


StaticEntry = tuple[str, str, int, float, tuple[tuple[RRType, str], ...],
                    tuple[WeightedAnswer, ...], dict[HealthState, "Candidate"]]
Static = tuple[StaticEntry, ...]


def _pool_static(by_name: dict[str, Link], pool: Pool) -> Static:
    out: list[StaticEntry] = []
    for ep in pool.endpoints:
        link = by_name[ep.link]
        if ep.cname is not None:
            records: tuple[tuple[RRType, str], ...] = (("CNAME", ep.cname),)
        else:
            records = _records(ep.addresses or (link.answers_v4 + link.answers_v6))
        tier = pool.tier if pool.tier is not None else link.priority
        # the answers at the configured weight, made once: most plans serve exactly these
        preset = tuple(WeightedAnswer(rrtype, value, ep.weight, link.name, pool.name, tier)
                       for rrtype, value in records)
        # the last: this endpoint's Candidate per link state, made on first use (immutable)
        out.append((pool.name, link.name, tier, ep.weight, records, preset, {}))
    return tuple(out)


def static_candidates(config: Config, service: Service, pools: tuple[str, ...], *,
                      memo: dict[str, Static] | None = None) -> Static:
    """What of a rule's candidates depends on the config only: (pool, link, tier, weight,
    records, answers at the configured weight) per endpoint, in pool order. The incremental
    planner keeps these; ``memo`` (pool name -> its part, for one service) shares the work
    between the rules of a service."""
    by_name = _links_of(config)
    if memo is None:
        memo = {}
    out: list[StaticEntry] = []
    for pool_name in pools:
        part = memo.get(pool_name)
        if part is None:
            part = memo[pool_name] = _pool_static(by_name, service.pool(pool_name))
        out.extend(part)
    return tuple(out)


def candidates(config: Config, service: Service, pools: tuple[str, ...],
               snapshot: HealthSnapshot, *, static: Static | None = None
               ) -> tuple[Candidate, ...]:
    if static is None:
        static = static_candidates(config, service, pools)
    health = snapshot.links
    unknown = S.UNKNOWN
    out = []
    for pool, link, tier, weight, records, preset, made in static:
        lh = health.get(link)
        state = lh.state if lh is not None else unknown
        cand = made.get(state)
        if cand is None:
            cand = made[state] = Candidate(pool, link, tier, weight, state, records, preset)
        out.append(cand)
    return tuple(out)


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


_LINK_REASONS: dict[tuple[str, HealthState, float], Reason | None] = {}


def _link_reasons(cands: tuple[Candidate, ...], degraded_weight: float) -> list[Reason]:
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
        key = (link, st, degraded_weight)
        if key in memo:
            why = memo[key]
        else:  # Reasons are immutable: one per (link, state) is shared by every answer set
            if len(memo) > 65536:
                memo.clear()
            why = memo[key] = _link_reason(link, st, degraded_weight)
        if why is not None:
            out.append(why)
    return out


class _Choice(NamedTuple):
    tier: int
    served: tuple[Candidate, ...]
    fail_open: bool = False
    equal_weights: bool = False


def _choose(cands: tuple[Candidate, ...], threshold: float, fail_open: bool,
            reasons: list[Reason], policy: str = "fail_open") -> _Choice | None:
    """Walk the tiers (module docstring, steps 2-4). None: nothing may be served."""
    tiers = sorted({c.tier for c in cands})
    for tier in tiers:
        members = [c for c in cands if c.tier == tier]
        total = sum(c.weight for c in members)
        healthy = sum(c.weight for c in members if c.state in _SERVING)
        cap = healthy / total if total > 0 else 0.0
        inputs: dict[str, object] = {
            "tier": tier, "capacity": round(cap, 6), "threshold": threshold,
            "healthy_weight": healthy, "total_weight": total,
            "links": {c.link: str(c.state) for c in members}}
        if total > 0 and cap >= threshold:
            reasons.append(Reason("tier.selected", f"tier {tier} serves: healthy capacity "
                                  f"{_pct(cap)} >= threshold {_pct(threshold)}",
                                  MappingProxyType(inputs)))
            return _Choice(tier, tuple(c for c in members if c.state in _SERVING and c.weight > 0))
        reasons.append(Reason("tier.skipped", f"tier {tier} skipped: healthy capacity "
                              f"{_pct(cap)} < threshold {_pct(threshold)}",
                              MappingProxyType(inputs)))
    for tier in tiers:
        served = tuple(c for c in cands if c.tier == tier and c.state in _SERVING and c.weight > 0)
        if served:
            reasons.append(_reason("tier.best_effort", f"no tier reaches the threshold: tier "
                                   f"{tier} serves what it has", tier=tier,
                                   threshold=threshold))
            return _Choice(tier, served)
    for tier in tiers:
        served = tuple(c for c in cands if c.tier == tier and c.state in _SERVING)
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
    for c in choice.served:
        weight = 1.0 if choice.equal_weights else c.weight
        if c.state is S.DEGRADED and not choice.fail_open and not choice.equal_weights:
            scaled = weight * degraded_weight
            reasons.append(_reason("weight.scaled", f"{c.pool}/{c.link} weight {weight:g} x "
                                   f"{degraded_weight:g} = {scaled:g} (degraded)",
                                   pool=c.pool, link=c.link, weight=weight,
                                   factor=degraded_weight, result=scaled))
            weight = scaled
        if weight == c.weight and c.preset:
            for wa in c.preset:
                out.setdefault((wa.rrtype, wa.value), wa)
            continue
        for rrtype, value in c.records:
            out.setdefault((rrtype, value), WeightedAnswer(rrtype, value, weight, c.link,
                                                           c.pool, c.tier))
    return tuple(out.values())


def answer_set(config: Config, service: Service, segment: str, pools: tuple[str, ...],
               snapshot: HealthSnapshot, *, static: Static | None = None) -> AnswerSet:
    """The answer set of one (service, segment) rule (``static``: its precomputed
    ``static_candidates``)."""
    cands = candidates(config, service, pools, snapshot, static=static)
    dw = config.health.degraded_weight
    reasons = _link_reasons(cands, dw)
    if not cands:
        reasons.append(_reason("no_endpoints", "the rule's pools have no endpoints"))
        return AnswerSet(service.name, segment, service.ttl, 0, (), tuple(reasons),
                         max_answers=service.max_answers)
    weighted = [c.tier for c in cands if c.weight > 0]
    best = min(weighted) if weighted else min(c.tier for c in cands)
    lead = next((p for p in service.pools if p.name == pools[0]), None)
    policy = lead.all_down if lead is not None else "fail_open"
    choice = _choose(cands, service.failover_threshold, config.guard.fail_open, reasons,
                     policy)
    if choice is None and policy == "fallback" and lead is not None and lead.fallback:
        fb = candidates(config, service, (lead.fallback,), snapshot)
        weighted_fb = tuple(c for c in fb if c.weight > 0)
        reasons.append(_reason("all_down.fallback", f"every endpoint is down: the fallback "
                               f"pool {lead.fallback} serves, whatever its health",
                               pool=lead.fallback, endpoints=len(fb)))
        if fb:
            choice = _Choice(min(c.tier for c in fb), weighted_fb or fb,
                             equal_weights=not weighted_fb)
    answers = _answers(choice, dw, reasons) if choice is not None else ()
    tier = choice.tier if choice is not None else best
    why = []
    if choice is None or choice.fail_open:
        why.append("nothing healthy")
    elif tier != best:
        why.append(f"tier {tier} serves instead of tier {best}")
    unsteady = sorted({f"{c.link} {c.state}" for c in cands if c.state in _UNSTEADY})
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
    links = tuple((lk.name, lk.priority, lk.weight, lk.answers_v4, lk.answers_v6)
                  for lk in config.links)
    services = tuple(
        (svc.name, svc.zone, svc.ttl, svc.failover_ttl, svc.max_answers,
         svc.failover_threshold,
         tuple((p.name, p.tier, p.all_down, p.fallback,
                tuple((ep.link, ep.weight, ep.addresses, ep.cname) for ep in p.endpoints))
               for p in svc.pools),
         rules(config, svc))
        for svc in config.services)
    buf = io.BytesIO()
    pickler = pickle.Pickler(buf, protocol=5)
    pickler.fast = True
    pickler.dump((config.source, links, services, repr(config.guard),
                  config.health.degraded_weight))
    return hashlib.sha256(buf.getvalue()).hexdigest()


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
    the snapshot's version and link states."""
    body = {"config": config_identity(config),
            "snapshot": snapshot.version,
            "links": sorted((name, str(lh.state)) for name, lh in snapshot.links.items())}
    return hashlib.sha256(json.dumps(body).encode()).hexdigest()[:16]


def plan(config: Config, snapshot: HealthSnapshot, *, version: int, now: float) -> Plan:
    """The plan for ``config`` under ``snapshot``. Pure: same inputs, same plan."""
    answers: dict[AnswerKey, AnswerSet] = {}
    for svc in config.services:
        for segment, pools in rules(config, svc):
            answers[(svc.name, segment)] = answer_set(config, svc, segment, pools, snapshot)
    return Plan(version=version, created_at=now, inputs_digest=inputs_digest(config, snapshot),
                answers=MappingProxyType(answers))


__all__ = ["Candidate", "answer_set", "candidates", "config_identity", "inputs_digest", "plan",
           "plan_key_order", "rules", "static_candidates"]
