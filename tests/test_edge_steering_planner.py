"""The planner on concrete HK scenarios: CN2 GIA and PCCW in tier 1, NTT in tier 2."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace
from types import MappingProxyType

import pytest

from edge.config.schema import Config
from edge.health.state import HealthState
from edge.plan import AnswerSet, Plan
from edge.steering.planner import inputs_digest, plan, plan_key_order
from tests import builders as b

S = HealthState
SVC = "www.example.hk"
CN2, PCCW, NTT = "203.0.113.10", "203.0.113.20", "203.0.113.30"


def hk_config(*, cn2_weight: float = 100.0, threshold: float = 0.5, fail_open: bool = True,
              source: str = "hk") -> Config:
    links = [b.link("cn2", priority=1, weight=cn2_weight, v4=[CN2]),
             b.link("pccw", priority=1, v4=[PCCW]),
             b.link("ntt", priority=2, v4=[NTT])]
    return b.make_config(links, [b.one_pool_per_link(links, failover_threshold=threshold)],
                         fail_open=fail_open, source=source)


def states(**overrides: HealthState) -> Mapping[str, HealthState]:
    base = {"cn2": S.UP, "pccw": S.UP, "ntt": S.UP}
    base.update(overrides)
    return base


def answer(config: Config, segment: str = "default", service: str = SVC,
           **overrides: HealthState) -> AnswerSet:
    p = plan(config, b.snapshot(states(**overrides)), version=1, now=1000.0)
    a = p.get(service, segment)
    assert a is not None
    return a


def codes(a: AnswerSet) -> list[str]:
    return [r.code for r in a.reasons]


def weights(a: AnswerSet) -> dict[str, float]:
    return {w.value: w.weight for w in a.answers}


def test_all_up_serves_tier_1() -> None:
    a = answer(hk_config())
    assert weights(a) == {CN2: 100.0, PCCW: 100.0}
    assert (a.tier, a.ttl, a.failing_over, a.fail_open, a.max_answers) == (1, 60, False,
                                                                           False, 2)
    assert codes(a) == ["tier.selected", "ttl.steady"]
    assert a.reasons[0].inputs["capacity"] == 1.0
    assert {w.rrtype for w in a.answers} == {"A"}


def test_cn2_down_pccw_carries_tier_1_at_threshold() -> None:
    a = answer(hk_config(threshold=0.5), cn2=S.DOWN)
    assert weights(a) == {PCCW: 100.0}
    assert a.tier == 1 and a.ttl == 15 and a.failing_over
    assert codes(a) == ["link.down", "tier.selected", "ttl.failover"]
    assert a.reasons[1].inputs["capacity"] == 0.5
    assert a.reasons[1].inputs["links"] == {"cn2": "down", "pccw": "up"}


def test_cn2_down_below_threshold_fails_over_to_tier_2() -> None:
    a = answer(hk_config(threshold=0.6), cn2=S.DOWN)
    assert weights(a) == {NTT: 100.0}
    assert a.tier == 2 and a.ttl == 15
    assert codes(a) == ["link.down", "tier.skipped", "tier.selected", "ttl.failover"]
    skipped = a.reasons[1]
    assert skipped.inputs["tier"] == 1 and skipped.inputs["capacity"] == 0.5
    assert "50% < threshold 60%" in skipped.detail


def test_capacity_is_weighted() -> None:
    a = answer(hk_config(cn2_weight=300.0), cn2=S.DOWN)   # pccw holds 25% of tier 1
    assert weights(a) == {NTT: 100.0}
    a2 = answer(hk_config(cn2_weight=300.0), pccw=S.DOWN)  # cn2 holds 75%
    assert weights(a2) == {CN2: 300.0}


def test_degraded_link_weight_is_scaled() -> None:
    a = answer(hk_config(), cn2=S.DEGRADED)
    assert weights(a) == {CN2: 50.0, PCCW: 100.0}
    assert a.tier == 1 and a.ttl == 15
    assert codes(a) == ["link.degraded", "tier.selected", "weight.scaled", "ttl.failover"]
    scaled = a.reasons[2]
    assert (scaled.inputs["weight"], scaled.inputs["factor"], scaled.inputs["result"]) == (
        100.0, 0.5, 50.0)


def test_falling_link_still_serves_with_failover_ttl() -> None:
    a = answer(hk_config(), cn2=S.FALLING)
    assert weights(a) == {CN2: 100.0, PCCW: 100.0}
    assert a.ttl == 15 and "link.falling" in codes(a)


def _falling(origin: HealthState) -> AnswerSet:
    snap = b.snapshot(states(cn2=S.FALLING))
    cn2 = replace(snap.links["cn2"], falling_from=origin)
    snap = replace(snap, links=MappingProxyType({**snap.links, "cn2": cn2}))
    a = plan(hk_config(), snap, version=1, now=1000.0).get(SVC, "default")
    assert a is not None
    return a


def test_a_link_falling_from_degraded_stays_at_the_degraded_weight() -> None:
    a = _falling(S.DEGRADED)
    assert weights(a) == {CN2: 50.0, PCCW: 100.0}  # a ramp down: 50, not back to 100
    assert a.ttl == 15 and "weight.scaled" in codes(a) and "link.degraded" not in codes(a)
    why = next(r for r in a.reasons if r.code == "link.falling")
    assert why.detail == ("link cn2 is falling from degraded: still served at weight x 0.5 "
                          "until it is down")
    assert weights(_falling(S.UP)) == {CN2: 100.0, PCCW: 100.0}  # may still recover


def test_rising_link_is_not_served_yet() -> None:
    a = answer(hk_config(), cn2=S.RISING)
    assert weights(a) == {PCCW: 100.0}
    assert a.reasons[0].code == "link.down" and a.reasons[0].inputs["state"] == "rising"


def test_unknown_link_serves_and_is_steady() -> None:
    a = answer(hk_config(), cn2=S.UNKNOWN)
    assert weights(a) == {CN2: 100.0, PCCW: 100.0}
    assert a.ttl == 60 and not a.failing_over and "link.unknown" in codes(a)


def test_backup_tier_trouble_lowers_ttl_only() -> None:
    a = answer(hk_config(), ntt=S.DOWN)
    assert weights(a) == {CN2: 100.0, PCCW: 100.0}
    assert a.tier == 1 and a.ttl == 15


def test_best_effort_when_no_tier_reaches_threshold() -> None:
    a = answer(hk_config(threshold=0.9), cn2=S.DOWN, ntt=S.DOWN)
    assert weights(a) == {PCCW: 100.0} and a.tier == 1
    assert codes(a) == ["link.down", "link.down", "tier.skipped", "tier.skipped",
                        "tier.best_effort", "ttl.failover"]


def test_fail_open_serves_everything() -> None:
    a = answer(hk_config(), cn2=S.DOWN, pccw=S.DOWN, ntt=S.RISING)
    assert weights(a) == {CN2: 100.0, PCCW: 100.0, NTT: 100.0}
    assert a.fail_open and a.failing_over and a.ttl == 15 and a.tier == 1
    assert "fail_open" in codes(a)
    assert {w.tier for w in a.answers} == {1, 2}


def test_fail_open_off_gives_no_answers() -> None:
    a = answer(hk_config(fail_open=False), cn2=S.DOWN, pccw=S.DOWN, ntt=S.DOWN)
    assert a.answers == () and not a.fail_open
    assert "no_answers" in codes(a)


def test_cname_pool() -> None:
    links = [b.link("cn2", v4=[CN2]), b.link("ntt", priority=2, v4=[NTT])]
    svc = b.service(SVC,
                    b.pool("cdn-a", b.endpoint("cn2", cname="edge.cdn-a.example.net")),
                    b.pool("cdn-b", b.endpoint("ntt", cname="edge.cdn-b.example.net")))
    cfg = b.make_config(links, [svc])
    up = plan(cfg, b.snapshot({"cn2": S.UP, "ntt": S.UP}), version=1, now=0.0).get(SVC,
                                                                                   "default")
    assert up is not None
    assert [(w.rrtype, w.value, w.pool) for w in up.answers] == [
        ("CNAME", "edge.cdn-a.example.net", "cdn-a")]
    down = plan(cfg, b.snapshot({"cn2": S.DOWN, "ntt": S.UP}), version=1, now=0.0).get(
        SVC, "default")
    assert down is not None and down.values("CNAME") == {"edge.cdn-b.example.net"}


def test_v4_and_v6_answers_and_explicit_addresses() -> None:
    links = [b.link("cn2", v4=[CN2], v6=["2001:db8:10::10"]), b.link("pccw", v4=[PCCW])]
    svc = b.service(SVC, b.pool("main", b.endpoint("cn2"),
                                b.endpoint("pccw", 50, addresses=["198.51.100.7"])))
    a = plan(b.make_config(links, [svc]), b.snapshot({}), version=1, now=0.0).get(SVC,
                                                                                  "default")
    assert a is not None
    assert [(w.rrtype, w.value, w.weight) for w in a.answers] == [
        ("A", CN2, 100.0), ("AAAA", "2001:db8:10::10", 100.0), ("A", "198.51.100.7", 50.0)]


def test_pool_tier_overrides_link_priority() -> None:
    links = [b.link("cn2", priority=1, v4=[CN2]), b.link("ntt", priority=2, v4=[NTT])]
    svc = b.service(SVC, b.pool("cn2", b.endpoint("cn2"), tier=3), b.pool("ntt",
                                                                          b.endpoint("ntt")))
    a = answer(b.make_config(links, [svc]))
    assert weights(a) == {NTT: 100.0} and a.tier == 2


def test_per_segment_rules() -> None:
    cfg = hk_config()
    cfg = b.make_config(cfg.links, cfg.services,
                        policies=[b.policy(SVC, ("china-telecom", ["cn2", "ntt"]),
                                           ("overseas", ["ntt"]))])
    assert plan_key_order(cfg) == ((SVC, "china-telecom"), (SVC, "overseas"), (SVC, "default"))
    p = plan(cfg, b.snapshot(states(cn2=S.DOWN)), version=1, now=0.0)
    assert list(p.answers) == list(plan_key_order(cfg))
    ct, ov, df = (p.get(SVC, s) for s in ("china-telecom", "overseas", "default"))
    assert ct is not None and ov is not None and df is not None
    assert weights(ct) == {NTT: 100.0} and ct.tier == 2      # its tier 1 is only cn2
    assert weights(ov) == {NTT: 100.0} and ov.tier == 2 and ov.ttl == 60
    assert weights(df) == {PCCW: 100.0}                      # default = every pool


def test_explicit_default_rule_is_used() -> None:
    cfg = hk_config()
    cfg = b.make_config(cfg.links, cfg.services,
                        policies=[b.policy(SVC, ("default", ["ntt"]), ("x", ["cn2"]))])
    assert plan_key_order(cfg) == ((SVC, "default"), (SVC, "x"))
    assert weights(answer(cfg)) == {NTT: 100.0}


def test_drained_endpoint_not_served_unless_nothing_else() -> None:
    links = [b.link("cn2", v4=[CN2]), b.link("pccw", v4=[PCCW])]
    svc = b.service(SVC, b.pool("main", b.endpoint("cn2", 0), b.endpoint("pccw", 100)))
    cfg = b.make_config(links, [svc])
    snap_up = b.snapshot({"cn2": S.UP, "pccw": S.UP})
    a = plan(cfg, snap_up, version=1, now=0.0).get(SVC, "default")
    assert a is not None and weights(a) == {PCCW: 100.0}
    only_drained = plan(cfg, b.snapshot({"cn2": S.UP, "pccw": S.DOWN}), version=1,
                        now=0.0).get(SVC, "default")
    assert only_drained is not None and weights(only_drained) == {CN2: 1.0}
    assert "endpoint.drained_only" in codes(only_drained)


def test_several_services_in_config_order() -> None:
    links = [b.link("cn2", v4=[CN2])]
    cfg = b.make_config(links, [b.one_pool_per_link(links, "www.example.hk"),
                                b.one_pool_per_link(links, "api.example.hk")])
    p = plan(cfg, b.snapshot({}), version=7, now=5.0)
    assert list(p.answers) == [("www.example.hk", "default"), ("api.example.hk", "default")]
    assert (p.version, p.created_at) == (7, 5.0)


def test_deterministic_and_digest() -> None:
    cfg = hk_config()
    snap = b.snapshot(states(cn2=S.DEGRADED))
    p1 = plan(cfg, snap, version=1, now=1.0)
    p2 = plan(cfg, snap, version=2, now=2.0)
    assert p1.checksum() == p2.checksum() and p1.to_json()["answers"] == p2.to_json()["answers"]
    assert p1.inputs_digest == p2.inputs_digest == inputs_digest(cfg, snap)
    assert inputs_digest(cfg, b.snapshot(states())) != p1.inputs_digest
    assert inputs_digest(hk_config(source="other"), snap) != p1.inputs_digest
    assert inputs_digest(hk_config(threshold=0.7), snap) != p1.inputs_digest
    assert inputs_digest(hk_config(), snap) == p1.inputs_digest   # equal content, equal id
    assert plan(cfg, b.snapshot(states()), version=1, now=1.0).checksum() != p1.checksum()


def test_diff_between_plans() -> None:
    cfg = hk_config()
    before = plan(cfg, b.snapshot(states()), version=1, now=1.0)
    after = plan(cfg, b.snapshot(states(cn2=S.DOWN)), version=2, now=2.0)
    diff = before.diff(after)
    assert [c.key for c in diff.changes] == [(SVC, "default")]
    assert not Plan().diff(Plan())


@pytest.mark.parametrize("state", [S.DOWN, S.RISING])
def test_out_of_service_reasons_name_the_link(state: HealthState) -> None:
    a = answer(hk_config(), cn2=state)
    r = a.reasons[0]
    assert r.code == "link.down" and r.inputs == {"link": "cn2", "state": str(state)}
    assert r.detail == f"link cn2 is {state}: not served"
