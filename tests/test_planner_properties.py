"""Invariants of plan() and guard() over random configs and random health."""

from __future__ import annotations

from dataclasses import dataclass, replace

from hypothesis import given, settings
from hypothesis import strategies as st

from edge.config.schema import Config, GuardSettings, Location, Service, Site
from edge.health.state import HealthSnapshot, HealthState
from edge.plan import AnswerSet
from edge.steering.guard import guard
from edge.steering.incremental import IncrementalPlanner
from edge.steering.planner import plan, rules
from geo.nearest import rank_sites
from geo.segment import Segment
from tests import builders as b

S = HealthState
SVC = "www.example.hk"
# sites for nearest routing, and places segments may be at (some far from every site)
SITES = {"hk": (22.3, 114.2), "sg": (1.35, 103.8), "tyo": (35.7, 139.7)}
PLACES = [(22.5, 114.0), (1.3, 103.9), (34.7, 135.5), (51.5, -0.1), (-33.9, 151.2)]
EPS = 1e-9


@dataclass(frozen=True)
class World:
    config: Config
    snapshot: HealthSnapshot
    other: HealthSnapshot


@st.composite
def worlds(draw: st.DrawFn) -> World:
    n = draw(st.integers(1, 6))
    links = [replace(b.link(f"l{i}", priority=draw(st.integers(1, 3)),
                            v4=[f"203.0.113.{i + 1}"],
                            v6=[f"2001:db8::{i + 1}"] if draw(st.booleans()) else []),
                     site=draw(st.sampled_from(sorted(SITES))))
             for i in range(n)]
    n_pools = draw(st.integers(1, n))
    members: list[list[int]] = [[] for _ in range(n_pools)]
    for i in range(n):  # every link in exactly one pool, every pool non-empty
        members[i if i < n_pools else draw(st.integers(0, n_pools - 1))].append(i)
    weight = st.sampled_from([0.0, 1.0, 10.0, 100.0, 250.0])
    min_healthy = st.sampled_from([0.0, 0.0, 0.0, 0.3, 0.5, 0.8, 1.0])
    pools = [replace(b.pool(f"p{k}", *(replace(b.endpoint(f"l{i}", draw(weight)),
                                               site=links[i].site) for i in idx),
                            tier=draw(st.none() | st.integers(1, 3))),
                     min_healthy=draw(min_healthy))
             for k, idx in enumerate(members)]
    threshold = draw(st.sampled_from([0.1, 0.25, 0.5, 0.75, 1.0]) | st.floats(0.01, 1.0))
    svc = replace(b.service(SVC, *pools, failover_threshold=threshold,
                            max_answers=draw(st.integers(1, 4))),
                  spill=draw(st.sampled_from(["cascade", "cascade", "capacity"])),
                  routing=draw(st.sampled_from(["weighted", "weighted", "nearest"])))
    policies = []
    if draw(st.booleans()):
        chosen = draw(st.lists(st.sampled_from([p.name for p in pools]), min_size=1,
                               unique=True))
        policies.append(b.policy(SVC, ("seg", chosen)))
    hs = b.health(degraded_weight=draw(st.sampled_from([0.1, 0.5, 1.0])))
    segments = [Segment(name, location=draw(st.none() | st.sampled_from(PLACES)))
                for name in ("seg", "far")]
    cfg = b.make_config(links, [svc], policies=policies, health_settings=hs,
                        fail_open=draw(st.booleans()), segments=segments)
    cfg = replace(cfg, sites=tuple(Site(name, Location(*where))
                                   for name, where in SITES.items()))
    state = st.sampled_from(list(HealthState))
    snap = b.snapshot({lk.name: draw(state) for lk in links}, version=draw(st.integers(1, 9)))
    other = b.snapshot({lk.name: draw(state) for lk in links}, version=draw(st.integers(1, 9)))
    return World(cfg, snap, other)


@dataclass(frozen=True)
class Cand:
    pool: str
    link: str
    tier: int
    weight: float
    state: HealthState
    values: frozenset[str]
    site: str | None = None
    out: bool = False  # its pool is below min_healthy

    @property
    def live(self) -> bool:
        return self.state.serving and not self.out

    def capacity(self, degraded_weight: float) -> float:
        if not self.live or self.weight <= 0:
            return 0.0
        return self.weight * (degraded_weight if self.state is S.DEGRADED else 1.0)


def oracle_candidates(w: World, svc: Service, pools: tuple[str, ...]) -> list[Cand]:
    out = []
    for name in pools:
        pool = svc.pool(name)
        for ep in pool.endpoints:
            lk = w.config.link(ep.link)
            tier = pool.tier if pool.tier is not None else lk.priority
            out.append(Cand(name, lk.name, tier, ep.weight, w.snapshot.link_state(lk.name),
                            frozenset(lk.answers_v4 + lk.answers_v6), ep.site))
    return out


def taken_out(svc: Service, cands: list[Cand]) -> list[Cand]:
    """min_healthy, said plainly: a pool whose serving share of its configured weight is
    below its min_healthy is out, unless that leaves nothing to serve (fail-open waives)."""
    out = set()
    for pool in {c.pool for c in cands}:
        limit = svc.pool(pool).min_healthy
        total = sum(c.weight for c in cands if c.pool == pool)
        healthy = sum(c.weight for c in cands if c.pool == pool and c.state.serving)
        if limit > 0 and total > 0 and healthy / total < limit:
            out.add(pool)
    marked = [replace(c, out=c.pool in out) for c in cands]
    if any(c.live for c in cands) and not any(c.live and c.weight > 0 for c in marked):
        return cands  # waived (every generated rule is all_down: fail_open)
    return marked


def expected_tier(cands: list[Cand], threshold: float) -> int | None:
    tiers = sorted({c.tier for c in cands})
    for t in tiers:
        m = [c for c in cands if c.tier == t]
        total = sum(c.weight for c in m)
        if total > 0 and sum(c.weight for c in m if c.live) / total >= threshold:
            return t
    for t in tiers:
        if any(c.tier == t and c.live and c.weight > 0 for c in cands):
            return t
    for t in tiers:
        if any(c.tier == t and c.live for c in cands):
            return t
    return None


def spilling(cands: list[Cand], threshold: float) -> tuple[int, float] | None:
    """(first tier, its demand) when ``spill: capacity`` spills: the first tier with
    configured weight is below the threshold and something has capacity."""
    weighted = sorted({c.tier for c in cands if c.weight > 0})
    if not weighted:
        return None
    first = weighted[0]
    m = [c for c in cands if c.tier == first]
    total = sum(c.weight for c in m)
    if sum(c.weight for c in m if c.live) / total >= threshold:
        return None
    if not any(c.live and c.weight > 0 and c.tier >= first for c in cands):
        return None
    return first, total


def nearest_site(cands: list[Cand], tier: int, where: tuple[float, float]) -> str | None:
    m = [c for c in cands if c.tier == tier]
    sites = list(dict.fromkeys(c.site or "(no site)" for c in m))
    for r in rank_sites(where, [(s, SITES.get(s)) for s in sites]):
        if sum(c.weight for c in m if (c.site or "(no site)") == r.site) > 0:
            return r.site
    return None


def check_capacity_spill(w: World, a: AnswerSet, cands: list[Cand], first: int,
                         demand: float) -> None:
    """The spill invariant: survivors of the failed tier keep their capacity, nobody gets
    more than its capacity, the total is the tier's demand while capacity allows, and a
    later tier takes a share only when the tiers before it are full."""
    dw = w.config.health.degraded_weight
    got = {ans.link: ans.weight for ans in a.answers}
    by_link = {c.link: c for c in cands}
    for link, weight in got.items():
        c = by_link[link]
        assert c.tier >= first and weight <= c.capacity(dw) * (1 + EPS), (link, weight)
    for c in cands:
        if c.tier == first and c.capacity(dw) > 0:
            assert abs(got.get(c.link, 0.0) - c.capacity(dw)) <= EPS * demand
    capacity = sum(c.capacity(dw) for c in cands if c.tier >= first)
    assert abs(sum(got.values()) - min(demand, capacity)) <= EPS * demand
    for t in sorted({c.tier for c in cands if c.tier > first}):
        before = sum(c.capacity(dw) for c in cands if first <= c.tier < t)
        if before >= demand * (1 + EPS):
            assert not any(by_link[link].tier == t for link in got), (t, before, demand)


def check_nearest(w: World, a: AnswerSet, cands: list[Cand], tier: int,
                  where: tuple[float, float]) -> None:
    """Nearest: the nearest site's survivors keep their capacity; other sites take only
    what it is short of, each at most its capacity; the total is its demand if it fits."""
    dw = w.config.health.degraded_weight
    site = nearest_site(cands, tier, where)
    assert site is not None
    m = [c for c in cands if c.tier == tier]
    head = [c for c in m if (c.site or "(no site)") == site]
    demand = sum(c.weight for c in head)
    kept = sum(c.capacity(dw) for c in head)
    got = {ans.link: ans.weight for ans in a.answers}
    by_link = {c.link: c for c in cands}
    for link, weight in got.items():
        c = by_link[link]
        assert c.tier == tier and weight <= c.capacity(dw) * (1 + EPS)
        if kept >= demand * (1 - EPS):
            assert (c.site or "(no site)") == site, f"{link} at {c.site}, {site} is whole"
    for c in head:
        assert abs(got.get(c.link, 0.0) - c.capacity(dw)) <= EPS * demand
    capacity = sum(c.capacity(dw) for c in m)
    assert abs(sum(got.values()) - min(demand, capacity)) <= EPS * demand


def check_answer_set(w: World, a: AnswerSet, cands: list[Cand],
                     where: tuple[float, float] | None = None) -> None:
    svc = w.config.service(SVC)
    by_value = {v: c for c in cands for v in c.values}
    # never empty when endpoints exist, unless the operator turned fail-open off
    anything_serves = any(c.state.serving for c in cands)
    if w.config.guard.fail_open or anything_serves:
        assert a.answers, a.reasons
    for ans in a.answers:
        c = by_value[ans.value]                       # belongs to the rule's pools
        assert (ans.pool, ans.link, ans.tier) == (c.pool, c.link, c.tier)
        assert ans.weight > 0
    if a.fail_open:
        assert not anything_serves and w.config.guard.fail_open
        assert a.failing_over and a.ttl == w.config.service(SVC).failover_ttl
        return
    for ans in a.answers:
        c = by_value[ans.value]
        assert c.state.serving, f"{c.link} is {c.state} but served"
    cands = taken_out(svc, cands)
    near = where if svc.routing == "nearest" else None
    spill = spilling(cands, svc.failover_threshold) if svc.spill == "capacity" else None
    if spill is not None:
        first = spill[0]
        assert min(ans.tier for ans in a.answers) == a.tier >= first
        if near is None:
            check_capacity_spill(w, a, cands, *spill)
        else:  # nearest inside the first tier, then the next tiers: capacity holds
            dw = w.config.health.degraded_weight
            for ans in a.answers:
                c = by_value[ans.value]
                assert ans.weight <= c.capacity(dw) * (1 + EPS) and c.tier >= first
    else:
        for ans in a.answers:
            c = by_value[ans.value]
            if c.state is S.DEGRADED and c.weight > 0 and near is None:
                assert ans.weight == c.weight * w.config.health.degraded_weight
        tier = expected_tier(cands, svc.failover_threshold)
        if tier is not None:
            assert {ans.tier for ans in a.answers} == {tier} == {a.tier}
            if near is not None and any(c.live and c.weight > 0 for c in cands if
                                        c.tier == tier):
                check_nearest(w, a, cands, tier, near)
    unsteady = any(c.state in (S.FALLING, S.RISING, S.DEGRADED, S.DOWN) for c in cands)
    if unsteady or a.failing_over:
        assert a.ttl == svc.failover_ttl
    else:
        assert a.ttl == svc.ttl


@settings(max_examples=300, deadline=None)
@given(worlds())
def test_plan_invariants(w: World) -> None:
    p = plan(w.config, w.snapshot, version=1, now=0.0)
    svc = w.config.service(SVC)
    assert [k for k in p.answers] == [(SVC, seg) for seg, _ in rules(w.config, svc)]
    for seg, pools in rules(w.config, svc):
        a = p.get(SVC, seg)
        assert a is not None and a.max_answers == svc.max_answers
        where = {s.name: s.location for s in w.config.segments}.get(seg)
        check_answer_set(w, a, oracle_candidates(w, svc, pools), where)


@settings(max_examples=150, deadline=None)
@given(worlds())
def test_plan_is_deterministic(w: World) -> None:
    p1 = plan(w.config, w.snapshot, version=1, now=0.0)
    p2 = plan(w.config, w.snapshot, version=1, now=0.0)
    assert p1 == p2
    assert p1.checksum() == p2.checksum() and p1.to_json() == p2.to_json()


@settings(max_examples=150, deadline=None)
@given(worlds())
def test_guard_accepts_its_own_unfrozen_plans(w: World) -> None:
    before = plan(w.config, w.other, version=1, now=0.0)
    after = plan(w.config, w.snapshot, version=2, now=1.0)
    gs = GuardSettings(freeze=False, fail_open=True)
    if w.config.guard.fail_open:
        assert guard(before, after, gs) is after
    assert guard(None, after, gs) is after
    assert guard(after, after, GuardSettings(freeze=True)) is after


@settings(max_examples=200, deadline=None)
@given(worlds(), st.lists(st.sampled_from(["seg", "seg2", "seg3"]), max_size=3, unique=True),
       st.lists(st.sampled_from(list(HealthState)), min_size=6, max_size=6))
def test_incremental_equals_full(w: World, extra: list[str],
                                 third: list[HealthState]) -> None:
    """Incremental re-plans give exactly the full plan, whatever changed, with several
    segments sharing pools."""
    cfg = w.config
    pools = tuple(p.name for p in cfg.service(SVC).pools)
    if extra:
        cfg = replace(cfg, policies=b.make_config(
            cfg.links, policies=[b.policy(SVC, *((seg, pools[::-1] if i % 2 else pools)
                                                 for i, seg in enumerate(extra)))]).policies)
    snaps = [w.other, w.snapshot,
             b.snapshot({lk.name: third[i] for i, lk in enumerate(cfg.links)}, version=11)]
    inc = IncrementalPlanner(cfg)
    for i, snap in enumerate(snaps):
        got = inc.plan(snap, version=i + 1, now=float(i))
        want = plan(cfg, snap, version=i + 1, now=float(i))
        assert got == want
        assert list(got.answers) == list(want.answers)
    changed = {lk.name for lk in cfg.links
               if snaps[2].link_state(lk.name) is not snaps[1].link_state(lk.name)}
    if not changed:
        assert inc.recomputed == 0


def test_incremental_equals_full_over_many_changes() -> None:
    """Many re-plans in a row stay exact, and every earlier plan (read before and after
    the later re-plans, which copy on write and share untouched groups) keeps its answers."""
    import random

    rng = random.Random(5)
    links = [b.link(f"l{i}", priority=1 + i % 2, index=10 + i) for i in range(6)]
    pools = [b.pool(f"p{i}", b.endpoint(f"l{i}"), b.endpoint(f"l{(i + 1) % 6}"))
             for i in range(6)]
    services = [b.service(f"s{k}.example.hk", *pools) for k in range(3)]
    policies = [b.policy(f"s{k}.example.hk",
                         *((f"g{j}", (f"p{(j + k) % 6}", f"p{(j + 2) % 6}")) for j in range(8)))
                for k in range(3)]
    cfg = b.make_config(links, services, policies=policies)
    inc = IncrementalPlanner(cfg)
    states = {lk.name: S.UP for lk in links}
    kept = []
    for i in range(60):
        states[rng.choice(links).name] = rng.choice(list(HealthState))
        snap = b.snapshot(dict(states), version=i + 1)
        got = inc.plan(snap, version=i + 1, now=float(i))
        want = plan(cfg, snap, version=i + 1, now=float(i))
        if i % 2:  # half of them read now (filling the per-segment copies), half only later
            assert got == want
            assert all(got.answers[k] == want.answers[k] for k in want.answers)
        kept.append((got, want))
    for got, want in kept:
        assert dict(got.answers.items()) == dict(want.answers.items())
        assert got == want
