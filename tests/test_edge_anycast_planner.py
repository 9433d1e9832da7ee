"""The anycast part of the plan: config keys, the per-session rules, the never-blackhole rule,
Plan diff / checksum / JSON, and the explain text. Pure: no sockets."""

from __future__ import annotations

import functools
import json
import time
from collections.abc import Mapping
from pathlib import Path

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from edge.config.loader import ConfigInvalid, parse_config
from edge.config.schema import Config
from edge.health.state import HealthSnapshot, HealthState, LinkHealth
from edge.health.tracker import HealthTracker
from edge.plan import Announcement, Plan
from edge.steering.anycast import (
    announcement_from_json,
    explain_announcements,
    plan_anycast,
    with_anycast,
)
from edge.steering.planner import plan as make_plan
from tests.builders import measurement, path

S = HealthState

BASE = """
version: 1
node: {name: hk-1, site: hk}
sites: [{name: hk}, {name: hk-tko}]
links:
  - name: cn2
    priority: 1
    answers: {v4: [203.0.113.10]}
    bgp: {peer: 127.0.0.1, peer_as: 65001, local_address: 127.0.0.11,
          communities: ["4809:100"], next_hop_v6: "2001:db8:ffff::11"}
  - name: pccw
    priority: 1
    answers: {v4: [198.51.100.20]}
    bgp: {peer: 127.0.0.1, peer_as: 65002, local_address: 127.0.0.12}
  - name: ntt
    priority: 2
    answers: {v4: [198.51.100.30]}
    bgp: {peer: 127.0.0.1, peer_as: 65003, local_address: 127.0.0.13,
          next_hop_v6: "2001:db8:ffff::13"}
  - name: hkix
    priority: 3
    answers: {v4: [198.51.100.40]}
zones: [{name: example.hk, ns: [ns1.example.hk]}]
services:
  - name: www.example.hk
    pools: [{name: main, endpoints: [{link: cn2}, {link: pccw}, {link: ntt}]}]
anycast:
  local_as: 64500
  med: 50
  degraded_med: 900
  degraded_prepend: 3
  prepend_by_tier: [0, 2]
  communities: ["64500:1"]
  large_communities: ["64500:7:1"]
  degraded_communities: ["64500:666"]
  speakers: [{name: main, kind: bird, socket: /tmp/x.ctl, include: /tmp/x.conf}]
  prefixes:
    - prefix: 192.0.2.0/24
      communities: ["64500:2"]
    - prefix: 2001:db8::/32
      sessions: [cn2, ntt]
      announced_by: [hk-tko]
"""


def config(text: str = BASE) -> Config:
    return parse_config(text, "anycast.yaml")


def snap(**states: HealthState) -> HealthSnapshot:
    now = time.time()
    return HealthSnapshot(version=1, taken_at=now, links={
        name: LinkHealth(name, st, now, "test") for name, st in states.items()})


def test_config_defaults_and_references() -> None:
    cfg = config()
    cn2 = cfg.link("cn2").bgp
    assert cn2 is not None and cn2.local_as == 64500 and cn2.speaker == "main"
    assert cn2.peer_port == 179 and cn2.communities == ("4809:100",)
    assert cfg.link("hkix").bgp is None
    p4, p6 = cfg.anycast.prefixes
    assert p4.sessions == ("cn2", "pccw", "ntt")  # default: every link with bgp
    assert p6.sessions == ("cn2", "ntt") and p6.announced_by == ("hk-tko",)
    assert cfg.anycast.speakers[0].kind == "bird"
    assert cfg.anycast.withdraw_when_site_unhealthy is True


@pytest.mark.parametrize(("old", "new", "message"), [
    ("sessions: [cn2, ntt]", "sessions: [cn2, hkix]", "link `hkix` has no bgp session"),
    ("sessions: [cn2, ntt]", "sessions: [cn2, nope]", "`nope` does not name a link"),
    ('communities: ["64500:2"]', 'communities: ["70000:2"]', "expected a BGP community"),
    ('large_communities: ["64500:7:1"]', 'large_communities: ["1:2"]',
     "expected a BGP large community"),
    ("  local_as: 64500\n", "", "no local AS for this BGP session"),
    ("announced_by: [hk-tko]", "announced_by: [hk-xx]", "`hk-xx` does not name a site"),
    ("kind: bird, socket: /tmp/x.ctl, include: /tmp/x.conf", "kind: bird",
     "include"),
    ("sessions: [cn2, ntt]", "sessions: [cn2, pccw]",
     "IPv6 prefix over the IPv4 BGP session of link `pccw` needs a next hop"),
])
def test_config_errors(old: str, new: str, message: str) -> None:
    assert old in BASE
    with pytest.raises(ConfigInvalid) as err:
        config(BASE.replace(old, new, 1))
    assert message in str(err.value)


def test_all_up_preferred_clean_backup_prepended() -> None:
    ann = plan_anycast(config(), snap(cn2=S.UP, pccw=S.UP, ntt=S.UP))
    a = ann[("192.0.2.0/24", "cn2")]
    assert (a.action, a.prepend, a.med) == ("announce", 0, 50)
    assert a.communities == ("64500:1", "64500:2", "4809:100")
    assert a.large_communities == ("64500:7:1",)
    assert ann[("192.0.2.0/24", "pccw")].prepend == 0
    assert ann[("192.0.2.0/24", "pccw")].communities == ("64500:1", "64500:2")
    backup = ann[("192.0.2.0/24", "ntt")]
    assert (backup.action, backup.prepend, backup.tier) == ("announce", 2, 2)
    assert set(ann) == {("192.0.2.0/24", s) for s in ("cn2", "pccw", "ntt")} | {
        ("2001:db8::/32", "cn2"), ("2001:db8::/32", "ntt")}
    assert all(r.code for r in a.reasons)


@pytest.mark.parametrize("state", [S.DEGRADED, S.FALLING])
def test_degraded_is_depreferred_not_withdrawn(state: HealthState) -> None:
    a = plan_anycast(config(), snap(cn2=state, pccw=S.UP, ntt=S.UP))[("192.0.2.0/24", "cn2")]
    assert (a.action, a.prepend, a.med) == ("announce", 3, 900)
    assert "64500:666" in a.communities
    assert "bgp.degraded" in {r.code for r in a.reasons}


@pytest.mark.parametrize("state", [S.DOWN, S.RISING])
def test_down_and_hold_down_withdraw(state: HealthState) -> None:
    ann = plan_anycast(config(), snap(cn2=state, pccw=S.UP, ntt=S.UP))
    assert ann[("192.0.2.0/24", "cn2")].action == "withdraw"
    assert ann[("192.0.2.0/24", "pccw")].action == "announce"


def test_unknown_is_announced() -> None:
    a = plan_anycast(config(), snap())[("192.0.2.0/24", "cn2")]
    assert a.action == "announce" and "bgp.unknown" in {r.code for r in a.reasons}


def test_site_unhealthy_without_other_site_fails_open() -> None:
    ann = plan_anycast(config(), snap(cn2=S.DOWN, pccw=S.DOWN, ntt=S.RISING))
    v4 = [ann[("192.0.2.0/24", s)] for s in ("cn2", "pccw", "ntt")]
    assert all(a.action == "announce" for a in v4)
    assert [a.prepend for a in v4] == [3, 3, 5] and all(a.med == 900 for a in v4)
    assert all("bgp.fail_open" in {r.code for r in a.reasons} for a in v4)


def test_site_unhealthy_with_other_site_withdraws_everywhere() -> None:
    ann = plan_anycast(config(), snap(cn2=S.DOWN, pccw=S.DOWN, ntt=S.DOWN))
    v6 = [ann[("2001:db8::/32", s)] for s in ("cn2", "ntt")]
    assert all(a.action == "withdraw" for a in v6)
    assert "bgp.site_unhealthy" in {r.code for r in v6[0].reasons}
    off = config(BASE.replace("local_as: 64500\n", "local_as: 64500\n"
                              "  withdraw_when_site_unhealthy: false\n"))
    ann = plan_anycast(off, snap(cn2=S.DOWN, pccw=S.DOWN, ntt=S.DOWN))
    assert all(ann[("2001:db8::/32", s)].action == "announce" for s in ("cn2", "ntt"))


def test_drained_link() -> None:
    text = BASE.replace("    priority: 1\n    answers: {v4: [203.0.113.10]}",
                        "    priority: 1\n    weight: 0\n    answers: {v4: [203.0.113.10]}")
    ann = plan_anycast(config(text), snap(cn2=S.UP, pccw=S.UP, ntt=S.UP))
    assert ann[("192.0.2.0/24", "cn2")].action == "withdraw"
    pre = config(text.replace("local_as: 64500\n", "local_as: 64500\n"
                              "  drained_action: prepend\n"))
    a = plan_anycast(pre, snap(cn2=S.UP, pccw=S.UP, ntt=S.UP))[("192.0.2.0/24", "cn2")]
    assert a.action == "announce" and a.prepend == 3


_STATES = st.sampled_from(list(HealthState))


@functools.cache
def _configs(flag: bool) -> tuple[Config, Mapping[tuple[str, str], Announcement]]:
    text = BASE if flag else BASE.replace("local_as: 64500\n", "local_as: 64500\n"
                                          "  withdraw_when_site_unhealthy: false\n")
    cfg = config(text)
    return cfg, plan_anycast(cfg, snap(cn2=S.UP, pccw=S.UP, ntt=S.UP))


@settings(max_examples=200, deadline=None)
@given(_STATES, _STATES, _STATES, st.booleans())
def test_never_withdrawn_everywhere_while_a_link_serves(a: HealthState, b: HealthState,
                                                       c: HealthState, flag: bool) -> None:
    """Invariant: a prefix is withdrawn from every session only when no link serves and
    the config allows it (another site announces it); a serving link is never withdrawn,
    a degraded one never looks better than it would up."""
    cfg, up = _configs(flag)
    states = {"cn2": a, "pccw": b, "ntt": c}
    ann = plan_anycast(cfg, snap(**states))
    for prefix in cfg.anycast.prefixes:
        entries = [ann[(prefix.prefix, s)] for s in prefix.sessions]
        serving = [s for s in prefix.sessions if states[s].serving]
        if all(e.action == "withdraw" for e in entries):
            assert not serving and flag and prefix.announced_by
        for e in entries:
            if states[e.session].serving:
                assert e.action == "announce"
                clean = up[(e.prefix, e.session)]
                assert e.prepend >= clean.prepend


def test_plan_diff_checksum_json() -> None:
    cfg = config()
    snapshot = snap(cn2=S.UP, pccw=S.UP, ntt=S.UP)
    dns_only = make_plan(cfg, snapshot, version=1, now=0.0)
    full = with_anycast(dns_only, cfg, snapshot)
    assert full.answers == dns_only.answers
    assert "announcements" not in dns_only.to_json()  # DNS-only JSON unchanged
    assert full.checksum() != dns_only.checksum()
    body = json.loads(json.dumps(full.to_json()))
    assert {(a["prefix"], a["session"]) for a in body["announcements"]} == set(
        full.announcements)
    assert not dns_only.diff(dns_only) and not full.diff(full)
    d = dns_only.diff(full)
    assert d and not d.changes and len(d.announcement_changes) == 5
    worse = with_anycast(dns_only, cfg, snap(cn2=S.DEGRADED, pccw=S.UP, ntt=S.UP))
    changed = full.diff(worse).announcement_changes
    assert [c.key for c in changed] == [("192.0.2.0/24", "cn2"), ("2001:db8::/32", "cn2")]
    assert Plan().checksum() == Plan(announcements={}).checksum()


def test_explain_text() -> None:
    cfg = config()
    text = explain_announcements(plan_anycast(cfg, snap(cn2=S.DOWN, pccw=S.UP,
                                                        ntt=S.DEGRADED)))
    assert "192.0.2.0/24         via cn2          WITHDRAW" in text
    assert "[bgp.withdraw] link cn2 is down (hard down): withdrawn" in text
    assert "via ntt          announce, tier 2, prepend 5, med 900" in text
    assert explain_announcements({}) == "anycast: no prefixes"


@pytest.mark.parametrize("fragment", ["bird/edgesteer-anycast.yaml",
                                      "exabgp/edgesteer-anycast.yaml"])
def test_example_fragments_load(fragment: str) -> None:
    """The deploy/examples anycast fragments, merged into a minimal config, are valid."""
    root = Path(__file__).resolve().parent.parent / "deploy" / "examples"
    part = yaml.safe_load((root / fragment).read_text())
    full = {"version": 1, "node": {"name": "hk-kwaichung-1", "site": "hk-kwaichung"},
            "sites": [{"name": "hk-kwaichung"}, {"name": "hk-tseungkwano"}], **part}
    cfg = parse_config(yaml.safe_dump(full), fragment)
    ann = plan_anycast(cfg, snap())
    assert ann and all(a.action == "announce" for a in ann.values())


def test_announcement_json_round_trip() -> None:
    ann = plan_anycast(config(), snap(cn2=S.DEGRADED, pccw=S.DOWN, ntt=S.UP))
    for a in ann.values():
        back = announcement_from_json(json.loads(json.dumps(a.to_json())))
        assert back == a
    with pytest.raises(ValueError, match="unknown announcement action"):
        announcement_from_json({"prefix": "192.0.2.0/24", "session": "x", "action": "maybe"})


def test_bgp_follows_the_health_machine_like_dns() -> None:
    """Real tracker, real measurements: one bad window de-prefers (FALLING) but keeps the
    route; `fall` bad windows withdraw; the hold-down and rise count keep it withdrawn; DNS
    serves the link exactly while BGP announces it."""
    cfg = config()
    tracker = HealthTracker(cfg.health, {lk.name: lk.thresholds for lk in cfg.links})
    key = path("cn2")
    steps: list[tuple[str, int | None, bool]] = []

    def observe() -> None:
        snap_ = tracker.snapshot
        a = plan_anycast(cfg, snap_)[("192.0.2.0/24", "cn2")]
        dns_plan = make_plan(cfg, snap_, version=1, now=0.0)
        served = any(w.link == "cn2" for aset in dns_plan.answers.values()
                     for w in aset.answers)
        assert (a.action == "announce") == served
        steps.append((str(snap_.link_state("cn2")),
                      a.prepend if a.action == "announce" else None, served))

    t = 1000.0
    tracker.feed(measurement(t, key=key))
    observe()
    for _ in range(cfg.health.fall):
        t += 1
        tracker.feed(measurement(t, key=key, loss=0.5))
        observe()
    t += 1
    tracker.feed(measurement(t, key=key))  # good, but inside the hold-down
    observe()
    t += cfg.health.hold_down_s
    for _ in range(cfg.health.rise + 1):
        t += 1
        tracker.feed(measurement(t, key=key))
        observe()
    assert steps[0] == ("up", 0, True)
    assert steps[1] == ("falling", 3, True)  # de-preferred first, still served and announced
    assert steps[cfg.health.fall] == ("down", None, False)
    assert steps[cfg.health.fall + 1] == ("down", None, False)  # hold-down
    assert ("rising", None, False) in steps  # rise count not reached: still withdrawn
    assert steps[-1] == ("up", 0, True)
