"""Minimum healthy capacity per pool (``pool.min_healthy``) and capacity-aware spill across
tiers (``service.spill: capacity``): concrete scenarios with exact weights and reasons.

The planner docstring (steps 5 and 6) states the rules these pin down.
"""

from __future__ import annotations

from dataclasses import replace

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from edge.config.schema import AllDownPolicy, Config, Link, Pool, Service, SpillMode
from edge.health.state import HealthState
from edge.plan import AnswerSet
from edge.steering.capacity import fill
from edge.steering.explain import explain_answer_set
from edge.steering.incremental import IncrementalPlanner
from edge.steering.planner import plan
from tests import builders as b

S = HealthState
SVC = "www.example.hk"


def answer(config: Config, **states: HealthState) -> AnswerSet:
    full = {lk.name: states.get(lk.name, S.UP) for lk in config.links}
    p = plan(config, b.snapshot(full), version=1, now=0.0)
    inc = IncrementalPlanner(config)  # the incremental planner agrees, always
    assert inc.plan(b.snapshot(full), version=1, now=0.0) == p
    a = p.get(SVC, "default")
    assert a is not None
    return a


def by_link(a: AnswerSet) -> dict[str, float]:
    return {w.link: w.weight for w in a.answers}


def codes(a: AnswerSet) -> list[str]:
    return [r.code for r in a.reasons]


def reason(a: AnswerSet, code: str) -> str:
    (hit,) = [r for r in a.reasons if r.code == code]
    return hit.detail


def links(*spec: tuple[str, int, float]) -> list[Link]:
    return [b.link(name, priority=tier, weight=w, index=10 + i)
            for i, (name, tier, w) in enumerate(spec)]


# capacity.fill -----------------------------------------------------------------------------
@settings(max_examples=300, deadline=None)
@given(st.lists(st.lists(st.sampled_from([0.0, 0.5, 1.0, 10.0, 33.3, 100.0, 250.0]),
                         max_size=5), max_size=5),
       st.floats(0.0, 2000.0, allow_nan=False))
def test_fill_respects_capacity_order_and_demand(groups: list[list[float]],
                                                 demand: float) -> None:
    got = fill(groups, demand)
    assert [len(g) for g in got] == [len(g) for g in groups]
    for caps, given_ in zip(groups, got, strict=True):
        for cap, w in zip(caps, given_, strict=True):
            assert 0.0 <= w <= cap * (1 + 1e-12)
        if sum(caps) > 0:  # shared in proportion to capacity
            share = sum(given_) / sum(caps)
            assert all(abs(w - cap * share) <= 1e-9 * max(demand, 1.0)
                       for cap, w in zip(caps, given_, strict=True))
    total = sum(sum(g) for g in got)
    assert abs(total - min(demand, sum(sum(g) for g in groups))) <= 1e-9 * max(demand, 1.0)
    for i in range(1, len(groups)):  # a group takes a share only when those before are full
        if sum(got[i]) > 0:
            assert all(abs(sum(got[j]) - sum(groups[j])) <= 1e-9 * max(demand, 1.0)
                       for j in range(i))


# min_healthy -----------------------------------------------------------------------------
def edge_config(min_healthy: float, *, all_down: AllDownPolicy = "fail_open",
                with_backup: bool = True) -> Config:
    """Pool `edge` (tier 1): four links of 100; pool `backup` (tier 2): one link of 100."""
    lks = links(("e1", 1, 100.0), ("e2", 1, 100.0), ("e3", 1, 100.0), ("e4", 1, 100.0),
                ("bk", 2, 100.0), ("fb", 3, 100.0))
    edge = Pool("edge", tuple(b.endpoint(f"e{i}") for i in range(1, 5)),
                all_down=all_down, fallback="spare" if all_down == "fallback" else None,
                min_healthy=min_healthy)
    pools = [edge, b.pool("backup", b.endpoint("bk"))] if with_backup else [edge]
    spare = b.pool("spare", b.endpoint("fb"))
    svc = b.service(SVC, *pools, spare, failover_threshold=0.1)
    policy = b.policy(SVC, ("default", [p.name for p in pools]))
    return b.make_config(lks, [svc], policies=[policy])


def test_pool_at_min_healthy_keeps_serving() -> None:
    a = answer(edge_config(0.5), e1=S.DOWN, e2=S.DOWN)  # 200 of 400 = 50%: not below
    assert by_link(a) == {"e3": 100.0, "e4": 100.0}
    assert "pool.below_min_healthy" not in codes(a)


def test_pool_below_min_healthy_is_taken_out_whole() -> None:
    """One survivor of four would carry the whole pool's share: the pool goes, its share
    fails over (here to the backup tier) although the threshold alone (10%) would keep it."""
    off = answer(edge_config(0.0), e1=S.DOWN, e2=S.DOWN, e3=S.DOWN)
    assert by_link(off) == {"e4": 100.0}                      # without: one survivor serves
    a = answer(edge_config(0.5), e1=S.DOWN, e2=S.DOWN, e3=S.DOWN)
    assert by_link(a) == {"bk": 100.0}
    assert (a.tier, a.ttl, a.failing_over) == (2, 15, True)
    assert reason(a, "pool.below_min_healthy") == (
        "pool edge serves 100 of its 400 (25%) < min_healthy 50%: taken out whole, its "
        "share spills")
    inputs = next(r.inputs for r in a.reasons if r.code == "pool.below_min_healthy")
    assert (inputs["healthy_weight"], inputs["total_weight"], inputs["capacity"]) == \
        (100.0, 400.0, 0.25)
    # the tier walk sees the taken-out pool as not serving: tier 1 at 0%
    skipped = next(r for r in a.reasons if r.code == "tier.skipped")
    assert skipped.inputs["capacity"] == 0.0
    assert skipped.inputs["links"] == {f"e{i}": ("up" if i == 4 else "down")
                                       for i in range(1, 5)}  # true states stay visible


def test_min_healthy_with_a_degraded_survivor_counts_its_configured_weight() -> None:
    """Capacity for min_healthy is configured weight of serving links, as for the failover
    threshold: a degraded link still counts whole (it serves)."""
    a = answer(edge_config(0.5), e1=S.DOWN, e2=S.DOWN, e3=S.DEGRADED)
    assert by_link(a) == {"e3": 50.0, "e4": 100.0}


def test_min_healthy_waived_under_fail_open_when_nothing_else_can_serve() -> None:
    cfg = edge_config(0.5, with_backup=False)
    a = answer(cfg, e1=S.DOWN, e2=S.DOWN, e3=S.DOWN)
    assert by_link(a) == {"e4": 100.0}           # the survivor, never the dead links
    assert not a.fail_open
    assert codes(a)[3:6] == ["pool.below_min_healthy", "pool.min_healthy_waived",
                             "tier.selected"]
    assert reason(a, "pool.min_healthy_waived") == (
        "nothing else can serve: the survivors of edge serve after all (all_down: fail_open)")


def test_min_healthy_all_out_fail_closed_answers_nodata() -> None:
    cfg = edge_config(0.5, all_down="fail_closed", with_backup=False)
    a = answer(cfg, e1=S.DOWN, e2=S.DOWN, e3=S.DOWN)
    assert a.answers == ()
    assert "pool.min_healthy_all_out" in codes(a) and "all_down.fail_closed" in codes(a)
    assert answer(cfg, e1=S.DOWN, e2=S.DOWN).answers  # at 50% it serves


def test_min_healthy_all_out_fallback_serves_the_fallback_pool() -> None:
    cfg = edge_config(0.5, all_down="fallback", with_backup=False)
    a = answer(cfg, e1=S.DOWN, e2=S.DOWN, e3=S.DOWN)
    assert by_link(a) == {"fb": 100.0}
    order = codes(a)
    assert order.index("pool.min_healthy_all_out") < order.index("all_down.fallback")


def test_min_healthy_of_one_pool_spills_to_its_tier_mates() -> None:
    """Two pools in one tier: the one below min_healthy goes; the other carries the tier."""
    lks = links(("a1", 1, 100.0), ("a2", 1, 100.0), ("c1", 1, 200.0), ("z", 2, 100.0))
    svc = b.service(SVC, Pool("a", (b.endpoint("a1"), b.endpoint("a2")), min_healthy=0.6),
                    b.pool("c", b.endpoint("c1", 200.0)), b.pool("z", b.endpoint("z")),
                    failover_threshold=0.5)
    cfg = b.make_config(lks, [svc])
    assert by_link(answer(cfg, a1=S.DOWN)) == {"c1": 200.0}   # a at 50% < 60%: out
    assert by_link(answer(cfg, a1=S.DEGRADED)) == {"a1": 50.0, "a2": 100.0, "c1": 200.0}


def test_drained_pool_is_not_below_min_healthy() -> None:
    """A pool with no configured weight has no capacity to fall short of."""
    lks = links(("a1", 1, 0.0), ("z", 1, 100.0))
    svc = b.service(SVC, Pool("a", (b.endpoint("a1", 0.0),), min_healthy=1.0),
                    b.pool("z", b.endpoint("z")))
    a = answer(b.make_config(lks, [svc]), z=S.DOWN)
    assert "pool.below_min_healthy" not in codes(a)
    assert by_link(a) == {"a1": 1.0}  # only the drained endpoint can serve: equal weight


# spill: capacity -------------------------------------------------------------------------
def spill_config(spill: SpillMode, threshold: float = 0.75,
                 *spec: tuple[str, int, float]) -> Config:
    spec = spec or (("a", 1, 100.0), ("b", 1, 100.0), ("c", 2, 100.0), ("d", 2, 300.0))
    lks = links(*spec)
    svc: Service = b.one_pool_per_link(lks, failover_threshold=threshold)
    return b.make_config(lks, [replace(svc, spill=spill)])


def test_cascade_moves_everything_to_the_next_tier() -> None:
    a = answer(spill_config("cascade"), a=S.DOWN)
    assert by_link(a) == {"c": 100.0, "d": 300.0} and a.tier == 2


def test_capacity_spill_keeps_survivors_and_spreads_the_missing_share() -> None:
    """Tier 1 at 50% < 75%: b keeps its 100; the missing 100 goes to tier 2 by capacity
    (c 100, d 300 -> 25 and 75), not all onto tier 2 at its full weight."""
    a = answer(spill_config("capacity"), a=S.DOWN)
    assert by_link(a) == {"b": 100.0, "c": 25.0, "d": 75.0}
    assert sum(by_link(a).values()) == 200.0  # the demand of tier 1, no more
    assert (a.tier, a.ttl, a.failing_over) == (1, 15, True)
    assert reason(a, "spill.capacity") == (
        "tier 1 healthy capacity 50% < threshold 75%: tier 1 keeps 100 of its 200; the "
        "missing 100 spreads by capacity: 100 to tier 2 (capacity 400, 25% used)")
    why = next(r for r in a.reasons if r.code == "spill.capacity").inputs
    assert (why["demand"], why["kept"], why["missing"], why["unserved"]) == \
        (200.0, 100.0, 100.0, 0.0)
    assert why["groups"] == (("tier 1", 100.0, 100.0), ("tier 2", 400.0, 100.0))
    assert "tier 1 short by 100" in reason(a, "ttl.failover")


def test_capacity_spill_is_cascade_while_the_tier_holds_its_threshold() -> None:
    cfg = spill_config("capacity", 0.5)
    casc = spill_config("cascade", 0.5)
    for states in ({}, {"a": S.DOWN}, {"a": S.DEGRADED, "c": S.DOWN}):
        assert answer(cfg, **states).content() == answer(casc, **states).content()
        assert "spill.capacity" not in codes(answer(cfg, **states))


def test_capacity_spill_overflows_to_the_tier_after() -> None:
    """Tier 1 (200) is all down; tier 2 can take 50; tier 3 takes the other 150 of its 400."""
    cfg = spill_config("capacity", 0.5, ("a", 1, 100.0), ("b", 1, 100.0), ("c", 2, 50.0),
                       ("e", 3, 100.0), ("f", 3, 300.0))
    a = answer(cfg, a=S.DOWN, b=S.DOWN)
    assert by_link(a) == {"c": 50.0, "e": 37.5, "f": 112.5}
    assert a.tier == 2  # the lowest tier that serves
    assert reason(a, "spill.capacity").endswith(
        "50 to tier 2 (capacity 50, 100% used), 150 to tier 3 (capacity 400, 38% used)")


def test_capacity_spill_short_of_capacity_serves_everything_it_has() -> None:
    cfg = spill_config("capacity", 0.5, ("a", 1, 300.0), ("c", 2, 50.0), ("e", 3, 100.0))
    a = answer(cfg, a=S.DOWN)
    assert by_link(a) == {"c": 50.0, "e": 100.0}
    assert reason(a, "spill.capacity").endswith("; 150 finds no capacity")


def test_capacity_spill_counts_degraded_links_at_their_reduced_capacity() -> None:
    """a degraded (x 0.5) keeps 50 of its 100; b is down: 150 missing over c and d."""
    a = answer(spill_config("capacity"), a=S.DEGRADED, b=S.DOWN)
    assert by_link(a) == {"a": 50.0, "c": 37.5, "d": 112.5}
    assert "weight.scaled" in codes(a)


def test_capacity_spill_to_a_degraded_tier_caps_it_at_its_reduced_capacity() -> None:
    a = answer(spill_config("capacity"), a=S.DOWN, b=S.DOWN, d=S.DEGRADED)
    assert by_link(a) == {"c": 80.0, "d": 120.0}  # capacities 100 and 150, demand 200


@pytest.mark.parametrize("spill", ["cascade", "capacity"])
def test_everything_down_is_fail_open_in_both_modes(spill: SpillMode) -> None:
    a = answer(spill_config(spill), a=S.DOWN, b=S.DOWN, c=S.DOWN, d=S.DOWN)
    assert a.fail_open and by_link(a) == {"a": 100.0, "b": 100.0, "c": 100.0, "d": 300.0}


def test_capacity_spill_with_min_healthy_spills_the_taken_out_pool() -> None:
    lks = links(("a1", 1, 100.0), ("a2", 1, 100.0), ("c", 2, 100.0), ("d", 2, 100.0))
    svc = replace(b.service(SVC, Pool("a", (b.endpoint("a1"), b.endpoint("a2")),
                                      min_healthy=0.6),
                            b.pool("t2", b.endpoint("c"), b.endpoint("d")),
                            failover_threshold=0.9), spill="capacity")
    a = answer(b.make_config(lks, [svc]), a1=S.DOWN)
    assert by_link(a) == {"c": 100.0, "d": 100.0}  # a2 is out with its pool: 200 to tier 2
    assert codes(a).index("pool.below_min_healthy") < codes(a).index("spill.capacity")


def test_explain_reads_the_spill() -> None:
    text = explain_answer_set(answer(spill_config("capacity"), a=S.DOWN))
    assert "    - [spill.capacity] tier 1 healthy capacity 50% < threshold 75%" in text
    assert "A     203.0.113.12" in text and "weight 25 " in text
