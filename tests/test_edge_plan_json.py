"""Plans through their JSON form: the engine's state file keeps answers AND announcements."""

from __future__ import annotations

import json
from pathlib import Path
from types import MappingProxyType

import pytest

from edge.config.schema import GuardSettings
from edge.health.state import HealthState
from edge.plan import Announcement, Plan, Reason, plan_from_json
from edge.steering.explain import explain_diff
from edge.steering.guard import Frozen, check_frozen
from edge.steering.statefile import load_engine_state, save_engine_state
from tests.builders import snapshot
from tests.dnsfixtures import answer_set

WHY = Reason("anycast.link_up", "link cn2 is up: announced", MappingProxyType({"link": "cn2"}))


def anycast_plan() -> Plan:
    routes = {
        ("203.0.113.0/24", "cn2"): Announcement("203.0.113.0/24", "cn2", "announce", med=10,
                                                prepend=2, communities=("64500:100",),
                                                large_communities=("64500:1:2",),
                                                reasons=(WHY,), tier=1),
        ("203.0.113.0/24", "pccw"): Announcement("203.0.113.0/24", "pccw", "withdraw", tier=2),
    }
    aset = answer_set(["203.0.113.10", "198.51.100.20"])
    return Plan(version=4, created_at=12.5, inputs_digest="abc",
                answers=MappingProxyType({(aset.service, aset.segment): aset}),
                announcements=MappingProxyType(routes))


def test_json_round_trip_keeps_announcements() -> None:
    plan = anycast_plan()
    back = plan_from_json(json.loads(json.dumps(plan.to_json())))
    assert back.announcements == plan.announcements
    assert back.checksum() == plan.checksum() and not plan.diff(back)


def test_engine_file_keeps_announcements(tmp_path: Path) -> None:
    plan = anycast_plan()
    save_engine_state(tmp_path, snapshot({"cn2": HealthState.UP}), plan, 20.0)
    state = load_engine_state(tmp_path)
    assert state is not None and state.plan is not None
    assert state.plan.announcements == plan.announcements
    assert not plan.diff(state.plan)


@pytest.mark.parametrize("broken", [{}, {"version": 1, "created_at": 0.0},
                                    {"version": "x", "created_at": 0.0, "answers": []},
                                    {"version": 1, "created_at": 0.0, "answers": [{}]},
                                    {"version": 1, "created_at": 0.0, "answers": [],
                                     "announcements": [{"prefix": "p"}]}])
def test_not_a_plan_raises_a_lookup_or_value_error(broken: dict[str, object]) -> None:
    with pytest.raises((KeyError, TypeError, ValueError)):
        plan_from_json(broken)


def test_explain_diff_lists_route_changes() -> None:
    before = anycast_plan()
    routes = dict(before.announcements)
    routes[("203.0.113.0/24", "cn2")] = Announcement("203.0.113.0/24", "cn2", "withdraw",
                                                     reasons=(WHY,), tier=1)
    after = Plan(version=5, answers=before.answers, announcements=MappingProxyType(routes))
    text = explain_diff(before.diff(after))
    assert text.splitlines()[0] == ("~ route 203.0.113.0/24 via cn2: announced (med 10, "
                                    "prepend 2, community 64500:100, community 64500:1:2) "
                                    "-> withdrawn")
    assert "[anycast.link_up]" in text


def test_freeze_names_route_changes() -> None:
    before = anycast_plan()
    routes = dict(before.announcements)
    del routes[("203.0.113.0/24", "pccw")]
    after = Plan(version=5, answers=before.answers, announcements=MappingProxyType(routes))
    with pytest.raises(Frozen) as caught:
        check_frozen(before, after, GuardSettings(freeze=True), before.diff(after))
    assert str(caught.value).startswith(
        "guard.freeze is on and 1 route(s) would change (203.0.113.0/24 via pccw): unfreeze")
