"""Rails (ramp, freeze, last-known-good), the demotion limit, overrides and their command."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from edge.cli import main
from edge.config.schema import GuardSettings
from edge.health.state import HealthState
from edge.plan import AnswerSet, Plan, WeightedAnswer
from edge.steering.cycle import Steering
from edge.steering.overrides import Overrides, apply_overrides, load_overrides
from edge.steering.planner import plan as make_plan
from edge.steering.rails import shape, shift
from tests.builders import endpoint, link, make_config, one_pool_per_link, pool, service, snapshot

S = HealthState
LINKS = ["a", "b", "c", "d"]
ROOT = Path(__file__).parent


def aset(weights: dict[str, float]) -> AnswerSet:
    answers = tuple(WeightedAnswer("A", f"203.0.113.{10 + LINKS.index(lk)}", w, lk, lk, 1)
                    for lk, w in sorted(weights.items()) if w > 0)
    return AnswerSet("www.example.hk", "default", 60, 1, answers)


def as_plan(a: AnswerSet, version: int = 1) -> Plan:
    return Plan(version=version, answers={(a.service, a.segment): a})


WEIGHTS = st.dictionaries(st.sampled_from(LINKS), st.floats(1.0, 100.0), min_size=1)


@settings(max_examples=300, deadline=None)
@given(before=WEIGHTS, after=WEIGHTS, step=st.sampled_from([0.1, 0.25, 0.5]),
       dead=st.sets(st.sampled_from(LINKS)))
def test_ramp_moves_at_most_max_shift_unless_hard_down(
        before: dict[str, float], after: dict[str, float], step: float,
        dead: set[str]) -> None:
    after = {lk: w for lk, w in after.items() if lk not in dead}
    if not after:
        return
    snap = snapshot({lk: (S.DOWN if lk in dead else S.UP) for lk in LINKS})
    g = GuardSettings(max_shift=step)
    prev, target = as_plan(aset(before)), as_plan(aset(after), 2)
    key = ("www.example.hk", "default")
    for _ in range(int(1 / step) + 2):
        out = shape(prev, target, snap, g)
        got = out.answers[key]
        assert not any(a.link in dead for a in got.answers)       # hard down: out at once
        alive = tuple(a for a in prev.answers[key].answers if a.link not in dead)
        if alive:
            assert shift(alive, got.answers) <= step + 1e-6
        prev = out
    assert prev.answers[key].values() == target.answers[key].values()   # converged
    assert shift(prev.answers[key].answers, target.answers[key].answers) < 1e-6


def test_ramp_reason_and_failback_in_steps() -> None:
    snap = snapshot({"a": S.UP, "b": S.UP})
    prev = as_plan(aset({"b": 100.0}))
    target = as_plan(aset({"a": 100.0}), 2)
    first = shape(prev, target, snap, GuardSettings(max_shift=0.5))
    got = first.answers[("www.example.hk", "default")]
    assert {a.link: a.weight for a in got.answers} == {"a": 50.0, "b": 50.0}
    assert got.reasons[-1].code == "guard.ramp"
    second = shape(first, target, snap, GuardSettings(max_shift=0.5))
    assert second.answers[("www.example.hk", "default")].values() == frozenset({"203.0.113.10"})


def test_frozen_service_keeps_its_answers() -> None:
    snap = snapshot({"a": S.DOWN, "b": S.UP})
    prev, target = as_plan(aset({"a": 100.0})), as_plan(aset({"b": 100.0}), 2)
    out = shape(prev, target, snap, GuardSettings(), frozen=frozenset({"www.example.hk"}))
    kept = out.answers[("www.example.hk", "default")]
    assert kept.content() == prev.answers[("www.example.hk", "default")].content()
    assert kept.reasons[-1].code == "guard.frozen"


def test_last_known_good_when_no_data() -> None:
    snap = snapshot({"a": S.UNKNOWN, "b": S.UNKNOWN})
    prev, target = as_plan(aset({"a": 100.0})), as_plan(aset({"a": 50.0, "b": 50.0}), 2)
    out = shape(prev, target, snap, GuardSettings(), before={"a": S.UP, "b": S.DOWN})
    kept = out.answers[("www.example.hk", "default")]
    assert kept.values() == frozenset({"203.0.113.10"})
    assert kept.reasons[-1].code == "guard.last_known_good"
    # never had data (a cold start, a config change): the proposal goes out
    fresh = shape(prev, target, snap, GuardSettings(), before={})
    assert fresh.answers[("www.example.hk", "default")].values() == {"203.0.113.10",
                                                                   "203.0.113.11"}


def _two_tier_config(**guard: object) -> Steering:
    links = [link("a", priority=1, index=10), link("b", priority=1, index=11),
             link("c", priority=2, index=12)]
    cfg = make_config(links, [one_pool_per_link(links)])
    cfg = replace(cfg, guard=replace(cfg.guard, **guard))  # type: ignore[arg-type]
    return Steering(cfg)


def test_demotion_limit_waits_for_an_operator() -> None:
    st_ = _two_tier_config(max_demotions=1, demotion_window_s=60.0)
    up = snapshot({"a": S.UP, "b": S.UP, "c": S.UP})
    st_.commit(st_.propose(up, 0.0).plan)
    one = st_.propose(snapshot({"a": S.DOWN, "b": S.UP, "c": S.UP}, version=2), 1.0)
    assert one.error is None
    st_.commit(one.plan)
    two = st_.propose(snapshot({"a": S.DOWN, "b": S.DOWN, "c": S.UP}, version=3), 2.0)
    assert two.error is not None and "guard.max_demotions 1" in two.error
    assert "a, b" in two.error
    st_.overrides = Overrides(links={"b": "down"})             # the operator confirms
    three = st_.propose(snapshot({"a": S.DOWN, "b": S.DOWN, "c": S.UP}, version=3), 3.0)
    assert three.error is None
    assert three.plan.answers[("www.example.hk", "default")].values() == {"203.0.113.12"}


def test_demotion_window_passes() -> None:
    st_ = _two_tier_config(max_demotions=1, demotion_window_s=10.0)
    st_.commit(st_.propose(snapshot({"a": S.UP, "b": S.UP, "c": S.UP}), 0.0).plan)
    assert st_.propose(snapshot({"a": S.DOWN, "b": S.DOWN, "c": S.UP}, version=2),
                       1.0).error is not None
    assert st_.propose(snapshot({"a": S.DOWN, "b": S.DOWN, "c": S.UP}, version=2),
                       12.0).error is None


def test_overrides_drain_force_and_pin() -> None:
    links = [link("a", priority=1, index=10), link("b", priority=2, index=11)]
    svc = service("www.example.hk", pool("p", endpoint("a"), endpoint("b")))
    cfg = make_config(links, [svc])
    snap = snapshot({"a": S.UP, "b": S.UP})
    key = ("www.example.hk", "default")

    def values(ov: Overrides) -> frozenset[str]:
        c, s = apply_overrides(cfg, snap, ov)
        return make_plan(c, s, version=1, now=0.0).answers[key].values()

    assert values(Overrides()) == {"203.0.113.10"}
    assert values(Overrides(links={"a": "down"})) == {"203.0.113.11"}
    assert values(Overrides(links={"a": "drain"})) == {"203.0.113.11"}
    assert values(Overrides(pins={"www.example.hk": 2})) == {"203.0.113.11"}
    assert values(Overrides(pins={"www.example.hk": 7})) == {"203.0.113.10"}  # empty tier
    _, s = apply_overrides(cfg, snapshot({"a": S.DOWN, "b": S.UP}), Overrides(links={"a": "up"}))
    assert s.links["a"].reason.startswith("operator override: forced up (measured down")


def test_override_command(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    cfg = tmp_path / "edge.yaml"
    cfg.write_text((ROOT / "config" / "good-minimal.yaml").read_text()
                   + "guard: {state_dir: st}\n")
    c = str(cfg)
    assert main(["override", "--config", c, "drain", "cn2"]) == 0
    assert main(["override", "--config", c, "pin", "WWW.example.hk.", "2"]) == 0
    assert main(["override", "--config", c, "freeze", "www.example.hk"]) == 0
    capsys.readouterr()
    assert main(["override", "--config", c, "list", "--json"]) == 0
    body = json.loads(capsys.readouterr().out)
    assert body == {"format": 1, "links": {"cn2": "drain"}, "pins": {"www.example.hk": 2},
                    "frozen": ["www.example.hk"]}
    assert load_overrides(tmp_path / "st").links == {"cn2": "drain"}
    assert main(["override", "--config", c, "down", "nope"]) == 2
    assert "no link 'nope' (links: cn2, pccw)" in capsys.readouterr().err
    assert main(["override", "--config", c, "pin", "www.example.hk", "x"]) == 2
    assert main(["override", "--config", c, "clear", "www.example.hk"]) == 0
    assert main(["override", "--config", c, "clear", "all"]) == 0
    assert capsys.readouterr().out.strip().endswith("no overrides")
    assert not load_overrides(tmp_path / "st")


def test_override_command_needs_a_state_dir(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["override", "--config", str(ROOT / "config" / "good-minimal.yaml"),
                 "list"]) == 2
    assert "sets no guard.state_dir" in capsys.readouterr().err
