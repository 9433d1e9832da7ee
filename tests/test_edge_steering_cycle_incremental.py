"""The engine cycle walks only what changed, and decides exactly as a walk of every key.

``Steering`` (edge/steering/cycle.py) shapes, diffs and guards only the answer sets that
are not the same object as in the plan in force (``incremental.changed_keys``); with
``walk_all=True`` it visits every key (the code before). Run side by side on random
configs and random sequences of link states, operator freezes, commits and reads, the two
must give equal proposals, diffs and refusals at every step.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from hypothesis import given, settings
from hypothesis import strategies as st

from edge.config.schema import Config
from edge.health.state import HealthState
from edge.plan import Plan
from edge.steering.cycle import Outcome, Steering
from edge.steering.incremental import GroupedAnswers, Overlay, changed_keys, diff_plans
from edge.steering.overrides import Overrides
from edge.steering.planner import plan
from edge.steering.rails import shape
from tests import builders as b

S = HealthState
STATES = [S.UP, S.UP, S.UP, S.DOWN, S.DEGRADED, S.FALLING, S.RISING, S.UNKNOWN]


@dataclass(frozen=True)
class Step:
    states: dict[str, HealthState]
    frozen: frozenset[str]
    commit: bool
    reads: tuple[int, ...]  # answer sets read from the plan in force before the cycle


@st.composite
def configs(draw: st.DrawFn) -> Config:
    n = draw(st.integers(2, 6))
    links = [b.link(f"l{i}", priority=draw(st.integers(1, 2)), v4=[f"203.0.113.{i + 1}"])
             for i in range(n)]
    services, policies = [], []
    for s in range(draw(st.integers(1, 3))):
        name = f"s{s}.example.hk"
        pools = []
        for k in range(draw(st.integers(1, 3))):
            chosen = draw(st.lists(st.integers(0, n - 1), min_size=1, max_size=3, unique=True))
            pools.append(b.pool(f"p{k}", *(b.endpoint(f"l{i}", draw(st.sampled_from(
                [0.0, 50.0, 100.0]))) for i in chosen), tier=draw(st.none() | st.integers(1, 2)),
                all_down=draw(st.sampled_from(["fail_open", "fail_open", "fail_closed"]))))
        services.append(b.service(name, *pools,
                                  failover_threshold=draw(st.sampled_from([0.3, 0.5, 1.0]))))
        names = [p.name for p in pools]
        rules = [(f"seg{j}", draw(st.lists(st.sampled_from(names), min_size=1, max_size=2,
                                           unique=True)))
                 for j in range(draw(st.integers(0, 5)))]
        if rules:
            policies.append(b.policy(name, *rules))
    cfg = b.make_config(links, services, policies=policies,
                        freeze=draw(st.booleans()) and draw(st.booleans()),
                        fail_open=draw(st.booleans()))
    guard = dataclasses.replace(cfg.guard, max_shift=draw(st.sampled_from([0.25, 0.5, 1.0])),
                                max_demotions=draw(st.sampled_from([0, 0, 1, 2])))
    return dataclasses.replace(cfg, guard=guard)


@st.composite
def runs(draw: st.DrawFn) -> tuple[Config, list[Step]]:
    cfg = draw(configs())
    names = [lk.name for lk in cfg.links]
    services = [svc.name for svc in cfg.services]
    states = {n: S.UP for n in names}
    steps = []
    for _ in range(draw(st.integers(1, 12))):
        states = dict(states)
        for n in draw(st.lists(st.sampled_from(names), max_size=3)):  # 0-3 links change
            states[n] = draw(st.sampled_from(STATES))
        frozen = frozenset(draw(st.lists(st.sampled_from(services), max_size=1))
                           if draw(st.integers(0, 4)) == 0 else [])
        steps.append(Step(states, frozen, draw(st.integers(0, 5)) > 0,
                          tuple(draw(st.lists(st.integers(0, 10_000), max_size=4)))))
    return cfg, steps


def _same(a: Outcome, b_: Outcome) -> None:
    assert a.error == b_.error
    assert a.diff == b_.diff
    assert dict(a.plan.answers) == dict(b_.plan.answers)
    assert list(a.plan.answers) == list(b_.plan.answers)  # the same order too


@settings(max_examples=150, deadline=None)
@given(runs())
def test_incremental_cycle_equals_the_full_walk(run: tuple[Config, list[Step]]) -> None:
    cfg, steps = run
    fast, full = Steering(cfg), Steering(cfg, walk_all=True)
    for i, step in enumerate(steps):
        for st_ in (fast, full):
            st_.overrides = Overrides(frozen=step.frozen)
            if st_.current is not None:  # reading makes per-segment copies: either order
                keys = list(st_.current.answers)
                for r in step.reads:
                    st_.current.answers.get(keys[r % len(keys)])
        snap = b.snapshot(step.states, version=i + 1)
        one, two = fast.propose(snap, float(i)), full.propose(snap, float(i))
        _same(one, two)
        if step.commit and one.error is None and (one.diff or fast.current is None):
            fast.commit(one.plan)
            full.commit(two.plan)


def _scaled() -> Config:
    """20 services x 10 segments over 8 links; each service's pools on two links."""
    links = [b.link(f"l{i}", priority=1 + i % 2, v4=[f"203.0.113.{i + 1}"]) for i in range(8)]
    services, policies = [], []
    for s in range(20):
        name = f"s{s}.example.hk"
        services.append(b.service(name, b.pool("a", b.endpoint(f"l{s % 8}")),
                                  b.pool("b", b.endpoint(f"l{(s + 1) % 8}"))))
        policies.append(b.policy(name, *((f"seg{j}", ["a", "b"] if j % 2 else ["b", "a"])
                                         for j in range(10))))
    return b.make_config(links, services, policies=policies)


def test_one_link_change_visits_only_what_it_touches() -> None:
    cfg = _scaled()
    st_ = Steering(cfg)
    up = {lk.name: S.UP for lk in cfg.links}
    first = st_.propose(b.snapshot(up, version=1), 0.0)
    st_.commit(first.plan)
    assert isinstance(first.plan.answers, GroupedAnswers)
    down = {**up, "l3": S.DOWN}
    out = st_.propose(b.snapshot(down, version=2), 1.0)
    assert out.error is None
    keys = changed_keys(first.plan.answers, out.plan.answers)
    assert keys is not None
    # l3 serves the services s with s % 8 == 3 (pool a) or (s + 1) % 8 == 3 (pool b):
    # their 11 keys each, nothing else
    users = [s for s in range(20) if 3 in (s % 8, (s + 1) % 8)]
    assert users == [2, 3, 10, 11, 18, 19]
    assert sorted(keys) == sorted((f"s{s}.example.hk", seg) for s in users
                                  for seg in [*(f"seg{j}" for j in range(10)), "default"])
    # every other answer set is the very object of the plan in force, per-segment copies
    # included (made on first read, from either plan): nothing else needs a look
    touched = set(keys)
    assert all(out.plan.answers[k] is first.plan.answers[k]
               for k in out.plan.answers if k not in touched)
    # the diff equals the one a full walk makes, and the plan a plain planner makes
    assert out.diff == first.plan.diff(out.plan)
    reference = plan(cfg, b.snapshot(down, version=2), version=2, now=1.0)
    changed = {c.key for c in out.diff.changes}
    assert changed == {k for k in reference.answers
                       if reference.answers[k].content() != first.plan.answers[k].content()}
    assert {k[0] for k in changed} == {f"s{s}.example.hk" for s in users}
    assert {k: a.content() for k, a in out.plan.answers.items()} == \
        {k: a.content() for k, a in reference.answers.items()}


def test_shaped_sets_lie_over_the_plan_and_follow_it() -> None:
    """A ramp shapes a few sets: the rest of the plan is the planner's, shared."""
    links = [b.link(f"l{i}", v4=[f"203.0.113.{i + 1}"]) for i in range(8)]
    services = [b.service(f"s{s}.example.hk", b.pool("a", b.endpoint(f"l{s % 8}"),
                                                     b.endpoint(f"l{(s + 1) % 8}")))
                for s in range(20)]
    cfg = b.make_config(links, services)
    cfg = dataclasses.replace(cfg, guard=dataclasses.replace(cfg.guard, max_shift=0.1))
    st_ = Steering(cfg)
    up = {lk.name: S.UP for lk in cfg.links}
    st_.commit(st_.propose(b.snapshot(up, version=1), 0.0).plan)
    # l2 degraded: its services would move 1/6 of their weight, ramped to 1/10
    degraded = b.snapshot({**up, "l2": S.DEGRADED}, version=2)
    st_.commit(st_.propose(degraded, 1.0).plan)
    current = st_.current
    assert current is not None and isinstance(current.answers, Overlay)
    users = [s for s in range(20) if 2 in (s % 8, (s + 1) % 8)]  # 1, 2, 9, 10, 17, 18
    assert set(current.answers.overrides) == {(f"s{s}.example.hk", "default") for s in users}
    assert all(any(r.code == "guard.ramp" for r in a.reasons)
               for a in current.answers.overrides.values())
    # the ramp goes on in later cycles with no link change, then settles on the plan
    for i in range(3, 12):
        out = st_.propose(degraded, float(i))
        assert out.error is None
        if not out.diff:
            break
        st_.commit(out.plan)
    final = st_.current
    assert final is not None
    reference = plan(cfg, degraded, version=9, now=0.0)
    assert {k: a.content() for k, a in final.answers.items()} == \
        {k: a.content() for k, a in reference.answers.items()}


def test_plans_of_different_planners_are_walked_in_full() -> None:
    cfg = _scaled()
    snap = b.snapshot({lk.name: S.UP for lk in cfg.links})
    mine = Steering(cfg).propose(snap, 0.0).plan
    other = Steering(cfg).propose(snap, 0.0).plan
    plain = plan(cfg, snap, version=1, now=0.0)
    assert changed_keys(mine.answers, other.answers) is None
    assert changed_keys(plain.answers, mine.answers) is None
    assert not diff_plans(mine, other) and not diff_plans(plain, mine)
    assert diff_plans(Plan(), mine) == Plan().diff(mine)
    assert shape(plain, mine, snap, cfg.guard).answers == mine.answers
