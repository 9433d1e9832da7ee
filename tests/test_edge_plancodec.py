"""The grouped JSON form of plans in the engine's file (edge.plancodec): exact round trips,
one body per group, malformed input refused with a lookup or value error, and files of the
previous format still read."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path
from types import MappingProxyType
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from edge import plancodec
from edge.health.state import HealthState
from edge.plan import Plan, Reason, WeightedAnswer
from edge.planfeed import FeedError, read_plan
from edge.steering.incremental import IncrementalPlanner, with_segment
from edge.steering.planner import plan
from edge.steering.statefile import ENGINE_FILE, load_engine_state, save_engine_state
from tests import builders as b
from tests.dnsfixtures import answer_set
from tests.test_edge_plan_json import anycast_plan
from tests.test_planner_properties import World, worlds


def through_text(p: Plan) -> Plan:
    return plancodec.decode(json.loads(json.dumps(plancodec.encode(p))))


def assert_same(a: Plan, back: Plan) -> None:
    assert back == a  # answers (reasons included), announcements, version, digest
    assert dict(back.answers) == dict(a.answers)
    assert back.checksum() == a.checksum() and not a.diff(back)


@settings(max_examples=150, deadline=None)
@given(worlds())
def test_planner_output_round_trips_exactly(w: World) -> None:
    full = plan(w.config, w.snapshot, version=3, now=7.0)
    assert_same(full, through_text(full))
    grouped = IncrementalPlanner(w.config).plan(w.snapshot, version=3, now=7.0)
    assert_same(grouped, through_text(grouped))


def test_a_group_is_written_once_whatever_its_segments() -> None:
    """500 segments served by one group: one body, 500 keys."""
    base = answer_set(["203.0.113.10", "198.51.100.20"])
    base = replace(base, reasons=(Reason("tier.selected", "tier 1 serves"),))
    sets = {("www.example.hk", f"seg{i}"): with_segment(base, f"seg{i}") for i in range(500)}
    p = Plan(version=2, answers=MappingProxyType(sets))
    encoded = plancodec.encode(p)
    assert len(encoded["bodies"]) == 1 and len(encoded["reasons"]) == 1
    assert len(encoded["keys"]["www.example.hk"]) == 500
    assert_same(p, through_text(p))
    assert len(json.dumps(encoded)) < len(json.dumps(p.to_json())) / 10


answers = st.builds(WeightedAnswer, st.sampled_from(["A", "AAAA", "CNAME"]),
                    st.text(min_size=1, max_size=12), st.floats(0, 1000, allow_nan=False),
                    st.sampled_from(["cn2", "pccw"]), st.sampled_from(["p1", "p2"]),
                    st.integers(1, 4))
reasons = st.builds(Reason, st.sampled_from(["tier.selected", "ttl.failover"]),
                    st.text(max_size=30),
                    st.dictionaries(st.sampled_from(["link", "share"]),
                                    st.integers(0, 9) | st.text(max_size=5)).map(
                                        MappingProxyType))


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.sampled_from(["a.example.hk", "b.example.hk"]),
                          st.text(min_size=1, max_size=8),
                          st.lists(answers, max_size=4), st.lists(reasons, max_size=3),
                          st.integers(0, 86400), st.integers(0, 5), st.booleans(),
                          st.booleans(), st.integers(0, 8)), max_size=12))
def test_any_plan_round_trips(rows: list[tuple[Any, ...]]) -> None:
    sets = {}
    for service, segment, ans, why, ttl, tier, fo, fopen, mx in rows:
        a = answer_set([], service_name=service, segment=segment)
        sets[(service, segment)] = replace(a, answers=tuple(ans), reasons=tuple(why),
                                             ttl=ttl, tier=tier, failing_over=fo,
                                             fail_open=fopen, max_answers=mx)
    p = Plan(version=9, created_at=1.5, inputs_digest="d", answers=MappingProxyType(sets),
             announcements=anycast_plan().announcements)
    assert_same(p, through_text(p))


def _mutations(doc: Any) -> st.SearchStrategy[Any]:
    """The document with one value somewhere replaced by junk."""
    junk = st.none() | st.integers(-5, 5) | st.text(max_size=3) | st.just([]) | st.just({})

    def paths(node: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
        out = [prefix]
        if isinstance(node, dict):
            for k, v in node.items():
                out += paths(v, (*prefix, k))
        elif isinstance(node, list):
            for i, v in enumerate(node):
                out += paths(v, (*prefix, i))
        return out

    def put(path: tuple[Any, ...], value: Any) -> Any:
        if not path:
            return value
        copy = json.loads(json.dumps(doc))
        node = copy
        for part in path[:-1]:
            node = node[part]
        node[path[-1]] = value
        return copy

    return st.tuples(st.sampled_from(paths(doc)), junk).map(lambda pv: put(*pv))


GOOD = plancodec.encode(Plan(version=1, answers=MappingProxyType({
    ("www.example.hk", "default"): replace(
        answer_set(["203.0.113.10"]), reasons=(Reason("tier.selected", "tier 1"),)),
    ("www.example.hk", "hk"): answer_set(["198.51.100.20"], segment="hk")}),
    announcements=anycast_plan().announcements))


@settings(max_examples=400, deadline=None)
@given(_mutations(GOOD))
def test_a_damaged_plan_is_refused_with_a_lookup_or_value_error(doc: Any) -> None:
    """Only those errors (the file's readers turn them into "unreadable"); what decodes
    anyway is a whole plan that survives its own round trip."""
    try:
        back = plancodec.decode(doc)
    except (KeyError, TypeError, ValueError, IndexError, AttributeError):
        return
    assert isinstance(back, Plan)
    assert_same(back, through_text(back))


def test_a_damaged_engine_file_keeps_the_feed_on_its_last_plan(tmp_path: Path) -> None:
    save_engine_state(tmp_path, b.snapshot({"cn2": HealthState.UP}), anycast_plan(), 1.0)
    path = tmp_path / ENGINE_FILE
    body = json.loads(path.read_text())
    body["plan"]["bodies"][0][5] = [["A"]]  # an answer row cut short
    path.write_text(json.dumps(body))
    with pytest.raises(FeedError, match="plan unreadable"):
        read_plan(path)
    assert load_engine_state(tmp_path) is None  # reported, then the configured defaults


def test_an_engine_file_of_the_previous_format_still_loads(tmp_path: Path) -> None:
    """Written by the version before the grouped form: plans in full (Plan.to_json)."""
    p = anycast_plan()
    (tmp_path / ENGINE_FILE).write_text(json.dumps({
        "format": 1, "saved_at": 5.0, "plan": p.to_json(),
        "links": {"cn2": {"state": "down", "since": 1.0, "reason": "x"}}}, indent=1))
    state = load_engine_state(tmp_path)
    assert state is not None and state.plan is not None
    assert state.links == {"cn2": HealthState.DOWN}
    assert_same(p, state.plan)
    assert read_plan(tmp_path / ENGINE_FILE) == p


def test_the_engine_file_reuses_the_plans_text_while_the_plan_stands(tmp_path: Path) -> None:
    p = anycast_plan()
    save_engine_state(tmp_path, b.snapshot({"cn2": HealthState.UP}), p, 1.0)
    save_engine_state(tmp_path, b.snapshot({"cn2": HealthState.DOWN}), p, 2.0)
    state = load_engine_state(tmp_path)
    assert state is not None and state.links == {"cn2": HealthState.DOWN}
    assert state.plan is not None and state.plan == p and state.saved_at == 2.0


def test_either_form_is_read_where_plans_are_read_back() -> None:
    """Redis plan history records and engine files of earlier versions hold the full form."""
    p = anycast_plan()
    assert_same(p, plancodec.from_json(json.loads(json.dumps(p.to_json()))))
    assert_same(p, plancodec.from_json(json.loads(json.dumps(plancodec.encode(p)))))
