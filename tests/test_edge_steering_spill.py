"""Capacity-aware spill inside the serving tier: when links fail, their share of the traffic
spreads over the remaining endpoints in proportion to their capacity (configured weight),
not onto one next endpoint."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from edge.health.state import HealthState
from edge.plan import AnswerSet
from edge.steering.incremental import IncrementalPlanner
from edge.steering.planner import plan
from tests import builders as b

S = HealthState
SVC = "www.example.hk"


def shares(aset: AnswerSet) -> dict[str, float]:
    total = sum(a.weight for a in aset.answers)
    return {a.link: a.weight / total for a in aset.answers}


@settings(max_examples=150, deadline=None)
@given(st.lists(st.integers(1, 500), min_size=2, max_size=7), st.data())
def test_failed_share_spreads_in_proportion_to_capacity(weights: list[int],
                                                        data: st.DataObject) -> None:
    names = [f"l{i}" for i in range(len(weights))]
    links = [b.link(n, index=10 + i) for i, n in enumerate(names)]
    svc = b.service(SVC, b.pool("p", *(b.endpoint(n, float(w))
                                      for n, w in zip(names, weights, strict=True))),
                    failover_threshold=0.0001)
    cfg = b.make_config(links, [svc])
    down = data.draw(st.sets(st.sampled_from(names), max_size=len(names) - 1))
    before = plan(cfg, b.snapshot({n: S.UP for n in names}), version=1, now=0.0)
    states = {n: S.DOWN if n in down else S.UP for n in names}
    inc = IncrementalPlanner(cfg)
    inc.plan(b.snapshot({n: S.UP for n in names}), version=1, now=0.0)
    after = inc.plan(b.snapshot(states, version=2), version=2, now=1.0)
    assert after == plan(cfg, b.snapshot(states, version=2), version=2, now=1.0)
    old, new = shares(before.answers[(SVC, "default")]), shares(after.answers[(SVC, "default")])
    assert set(new) == set(names) - down                 # the failed links get nothing
    failed = sum(old[n] for n in down)
    alive = sum(w for n, w in zip(names, weights, strict=True) if n not in down)
    for i, n in enumerate(names):
        if n in down:
            continue
        # each survivor takes a part of the failed share proportional to its capacity
        assert abs((new[n] - old[n]) - failed * weights[i] / alive) < 1e-9
    if down:
        assert after.answers[(SVC, "default")].ttl == svc.failover_ttl


def test_incremental_follows_the_fallback_pools_health() -> None:
    """A fallback rule's answers depend on the fallback pool's link (a degraded one serves
    at a reduced weight): the incremental planner must recompute them when it changes."""
    links = [b.link("main", index=10), b.link("spare", index=11), b.link("other", index=12)]
    svc = b.service(SVC, b.pool("p", b.endpoint("main"), all_down="fallback", fallback="f"),
                    b.pool("f", b.endpoint("spare"), b.endpoint("other", 50.0)))
    cfg = b.make_config(links, [svc], policies=[b.policy(SVC, ("cn", ["p"]))])
    inc = IncrementalPlanner(cfg)
    steps = [{"main": S.DOWN, "spare": S.UP, "other": S.UP},
             {"main": S.DOWN, "spare": S.DEGRADED, "other": S.UP},
             {"main": S.DOWN, "spare": S.DEGRADED, "other": S.DEGRADED}]
    seen = set()
    for i, states in enumerate(steps):
        snap = b.snapshot(states, version=i + 1)
        got = inc.plan(snap, version=i + 1, now=float(i))
        assert got == plan(cfg, snap, version=i + 1, now=float(i))
        seen.add(tuple(sorted((a.link, a.weight) for a in got.answers[(SVC, "cn")].answers)))
    assert len(seen) == 3  # the fallback's weights did follow its health
