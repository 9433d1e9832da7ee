"""The guard: freeze and empty-answer rails, and the --force override."""

from __future__ import annotations

import pytest

from edge.config.schema import GuardSettings
from edge.health.state import HealthState
from edge.plan import Plan
from edge.steering.guard import EmptyAnswers, Frozen, UnsafePlan, guard
from edge.steering.planner import plan
from tests import builders as b

S = HealthState
SVC = "www.example.hk"


def hk_plans(*, fail_open: bool = True) -> tuple[Plan, Plan, Plan]:
    links = [b.link("cn2", index=10), b.link("pccw", index=20)]
    cfg = b.make_config(links, [b.one_pool_per_link(links)], fail_open=fail_open)
    up = plan(cfg, b.snapshot({"cn2": S.UP, "pccw": S.UP}), version=1, now=1.0)
    up_again = plan(cfg, b.snapshot({"cn2": S.UP, "pccw": S.UP}), version=2, now=2.0)
    down = plan(cfg, b.snapshot({"cn2": S.DOWN, "pccw": S.DOWN}), version=3, now=3.0)
    return up, up_again, down


def test_accepts_a_changed_plan_when_not_frozen() -> None:
    up, _, down = hk_plans()
    assert guard(up, down, GuardSettings()) is down
    assert guard(None, up, GuardSettings()) is up


def test_frozen_refuses_changes() -> None:
    up, _, down = hk_plans()
    with pytest.raises(Frozen) as exc:
        guard(up, down, GuardSettings(freeze=True))
    assert exc.value.keys == ((SVC, "default"),)
    assert "guard.freeze is on and 1 answer set(s) would change (www.example.hk[default])" in (
        str(exc.value))
    assert isinstance(exc.value, UnsafePlan)


def test_frozen_accepts_the_same_substance_and_a_first_plan() -> None:
    up, up_again, _ = hk_plans()
    assert guard(up, up_again, GuardSettings(freeze=True)) is up_again
    assert guard(None, up, GuardSettings(freeze=True)) is up


def test_empty_answers_refused_when_previous_had_some() -> None:
    up, _, down = hk_plans(fail_open=False)
    assert down.answers[(SVC, "default")].answers == ()
    with pytest.raises(EmptyAnswers) as exc:
        guard(up, down, GuardSettings(fail_open=False))
    assert exc.value.keys == ((SVC, "default"),)
    assert "enable guard.fail_open" in str(exc.value)
    assert guard(None, down, GuardSettings(fail_open=False)) is down   # nothing to lose
    assert guard(down, down, GuardSettings(fail_open=False)) is down   # was empty already


def test_force_overrides_every_rail() -> None:
    up, _, down = hk_plans(fail_open=False)
    assert guard(up, down, GuardSettings(freeze=True), force=True) is down
