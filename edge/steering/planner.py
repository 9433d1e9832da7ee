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
4. If nothing serves anywhere and ``guard.fail_open``: every candidate at its configured
   weight (fail-open, as Route 53 does). With fail-open off the set is empty and the guard
   decides whether that may go out.

Served weights are the configured weights x ``health.degraded_weight`` for DEGRADED links.
The TTL drops to ``failover_ttl`` while failing over: the serving tier is not the best
configured one, fail-open, or any candidate link is not steady (FALLING, RISING, DEGRADED,
DOWN), so resolvers come back soon. Two endpoints giving the same answer value: the first
(in pool order) wins. Every decision is recorded as a Reason with a stable code.
"""

from __future__ import annotations

import hashlib
import ipaddress
import json
from dataclasses import dataclass
from types import MappingProxyType

from edge.config.schema import Config, Service
from edge.health.state import HealthSnapshot, HealthState
from edge.plan import AnswerKey, AnswerSet, Plan, Reason, RRType, WeightedAnswer
from geo.segment import DEFAULT_SEGMENT

S = HealthState
_UNSTEADY = frozenset({S.FALLING, S.RISING, S.DEGRADED, S.DOWN})


@dataclass(frozen=True, slots=True)
class Candidate:
    """One endpoint of a rule, resolved against config and health."""

    pool: str
    link: str
    tier: int
    weight: float
    state: HealthState
    records: tuple[tuple[RRType, str], ...]

    @property
    def serving(self) -> bool:
        return self.state.serving


def _reason(code: str, detail: str, **inputs: object) -> Reason:
    return Reason(code, detail, MappingProxyType(inputs))


def _pct(x: float) -> str:
    return f"{x * 100:.0f}%"


def _records(values: tuple[str, ...]) -> tuple[tuple[RRType, str], ...]:
    out: list[tuple[RRType, str]] = []
    for v in values:
        out.append(("A" if ipaddress.ip_address(v).version == 4 else "AAAA", v))
    return tuple(out)


def rules(config: Config, service: Service) -> tuple[tuple[str, tuple[str, ...]], ...]:
    """(segment, pool names) for every segment key of ``service``, ``default`` included."""
    every = tuple(p.name for p in service.pools)
    policy = config.policies.get(service.name)
    if policy is None:
        return ((DEFAULT_SEGMENT, every),)
    out: dict[str, tuple[str, ...]] = {}
    for rule in policy.rules:
        out.setdefault(rule.segment, rule.pools)
    out.setdefault(DEFAULT_SEGMENT, every)
    return tuple(out.items())


def plan_key_order(config: Config) -> tuple[AnswerKey, ...]:
    """The answer keys of a plan in their deterministic order: config order of services,
    then policy order of rules, ``default`` last unless the policy names it."""
    return tuple((svc.name, seg) for svc in config.services for seg, _ in rules(config, svc))


def candidates(config: Config, service: Service, pools: tuple[str, ...],
               snapshot: HealthSnapshot) -> tuple[Candidate, ...]:
    out = []
    for pool_name in pools:
        pool = service.pool(pool_name)
        for ep in pool.endpoints:
            link = config.link(ep.link)
            if ep.cname is not None:
                records: tuple[tuple[RRType, str], ...] = (("CNAME", ep.cname),)
            else:
                records = _records(ep.addresses or (link.answers_v4 + link.answers_v6))
            tier = pool.tier if pool.tier is not None else link.priority
            out.append(Candidate(pool.name, link.name, tier, ep.weight,
                                 snapshot.link_state(link.name), records))
    return tuple(out)


def _link_reasons(cands: tuple[Candidate, ...], degraded_weight: float) -> list[Reason]:
    seen: dict[str, HealthState] = {}
    for c in cands:
        seen.setdefault(c.link, c.state)
    out = []
    for link, st in seen.items():
        if st in (S.DOWN, S.RISING):
            out.append(_reason("link.down", f"link {link} is {st}: not served",
                               link=link, state=str(st)))
        elif st is S.DEGRADED:
            out.append(_reason("link.degraded",
                               f"link {link} is degraded: served at weight x {degraded_weight:g}",
                               link=link, state=str(st), factor=degraded_weight))
        elif st is S.FALLING:
            out.append(_reason("link.falling", f"link {link} is falling: still served",
                               link=link, state=str(st)))
        elif st is S.UNKNOWN:
            out.append(_reason("link.unknown",
                               f"link {link} has no health data: served (no data is not "
                               f"failure)", link=link, state=str(st)))
    return out


@dataclass(frozen=True, slots=True)
class _Choice:
    tier: int
    served: tuple[Candidate, ...]
    fail_open: bool = False
    equal_weights: bool = False


def _choose(cands: tuple[Candidate, ...], threshold: float, fail_open: bool,
            reasons: list[Reason]) -> _Choice | None:
    """Walk the tiers (module docstring, steps 2-4). None: nothing may be served."""
    tiers = sorted({c.tier for c in cands})
    for tier in tiers:
        members = [c for c in cands if c.tier == tier]
        total = sum(c.weight for c in members)
        healthy = sum(c.weight for c in members if c.serving)
        cap = healthy / total if total > 0 else 0.0
        inputs: dict[str, object] = {
            "tier": tier, "capacity": round(cap, 6), "threshold": threshold,
            "healthy_weight": healthy, "total_weight": total,
            "links": {c.link: str(c.state) for c in members}}
        if total > 0 and cap >= threshold:
            reasons.append(Reason("tier.selected", f"tier {tier} serves: healthy capacity "
                                  f"{_pct(cap)} >= threshold {_pct(threshold)}",
                                  MappingProxyType(inputs)))
            return _Choice(tier, tuple(c for c in members if c.serving and c.weight > 0))
        reasons.append(Reason("tier.skipped", f"tier {tier} skipped: healthy capacity "
                              f"{_pct(cap)} < threshold {_pct(threshold)}",
                              MappingProxyType(inputs)))
    for tier in tiers:
        served = tuple(c for c in cands if c.tier == tier and c.serving and c.weight > 0)
        if served:
            reasons.append(_reason("tier.best_effort", f"no tier reaches the threshold: tier "
                                   f"{tier} serves what it has", tier=tier,
                                   threshold=threshold))
            return _Choice(tier, served)
    for tier in tiers:
        served = tuple(c for c in cands if c.tier == tier and c.serving)
        if served:
            reasons.append(_reason("endpoint.drained_only", f"only drained endpoints can "
                                   f"serve: tier {tier} drained endpoints at equal weight",
                                   tier=tier))
            return _Choice(tier, served, equal_weights=True)
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
        for rrtype, value in c.records:
            out.setdefault((rrtype, value), WeightedAnswer(rrtype, value, weight, c.link,
                                                           c.pool, c.tier))
    return tuple(out.values())


def answer_set(config: Config, service: Service, segment: str, pools: tuple[str, ...],
               snapshot: HealthSnapshot) -> AnswerSet:
    """The answer set of one (service, segment) rule."""
    cands = candidates(config, service, pools, snapshot)
    dw = config.health.degraded_weight
    reasons = _link_reasons(cands, dw)
    if not cands:
        reasons.append(_reason("no_endpoints", "the rule's pools have no endpoints"))
        return AnswerSet(service.name, segment, service.ttl, 0, (), tuple(reasons),
                         max_answers=service.max_answers)
    weighted = [c.tier for c in cands if c.weight > 0]
    best = min(weighted) if weighted else min(c.tier for c in cands)
    choice = _choose(cands, service.failover_threshold, config.guard.fail_open, reasons)
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
        reasons.append(_reason("ttl.steady", f"ttl {ttl}: steady", ttl=ttl))
    return AnswerSet(service=service.name, segment=segment, ttl=ttl, tier=tier,
                     answers=answers, reasons=tuple(reasons), failing_over=failing_over,
                     fail_open=choice is not None and choice.fail_open,
                     max_answers=service.max_answers)


def _config_identity(config: Config) -> str:
    """Digest of the config source's name and of every config value the planner reads.

    Built from reprs of tuples, numbers and strings only (no sets), so it is stable across
    processes.
    """
    links = [(lk.name, lk.priority, lk.weight, lk.answers_v4, lk.answers_v6)
             for lk in config.links]
    policies = sorted((name, repr(p)) for name, p in config.policies.items())
    body = repr((config.source, links, config.services, policies, config.guard,
                 config.health.degraded_weight))
    return hashlib.sha256(body.encode()).hexdigest()


def inputs_digest(config: Config, snapshot: HealthSnapshot) -> str:
    """Identity of the plan's inputs: the config (source and content the planner reads) and
    the snapshot's version and link states."""
    body = {"config": _config_identity(config),
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


__all__ = ["Candidate", "answer_set", "candidates", "inputs_digest", "plan", "plan_key_order",
           "rules"]
