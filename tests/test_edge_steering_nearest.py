"""Nearest routing in the planner (``service.routing: nearest``; planner docstring, step 7):
a segment's nearest site serves; when it falls short its share spreads by capacity over
the other sites, not onto the single next-nearest one. Configs come through the real
loader, and ``edgesteer explain`` shows the ranking.
"""

from __future__ import annotations

import textwrap
from dataclasses import replace
from pathlib import Path

import pytest

from edge.cli import main
from edge.config.loader import load_config
from edge.config.schema import Config
from edge.health.state import HealthSnapshot, HealthState
from edge.plan import AnswerSet
from edge.steering.incremental import IncrementalPlanner
from edge.steering.planner import config_identity, plan
from geo.segment import Segment
from tests import builders as b

S = HealthState
SVC = "www.example.hk"

# Hong Kong, Singapore, Tokyo; users in Shenzhen (next to HK), Jakarta (near SG) and
# Osaka (near Tokyo); every address a documentation one, nothing is sent anywhere.
CONFIG = """\
version: 1
node: {name: hk-1, site: hk}
sites:
  - {name: hk, region: HK, location: {lat: 22.30, lon: 114.17}}
  - {name: sg, region: SG, location: {lat: 1.35, lon: 103.82}}
  - {name: tokyo, region: JP, location: {lat: 35.68, lon: 139.69}}
links:
  - {name: cn2, priority: 1, site: hk, answers: {v4: [203.0.113.1]}}
  - {name: pccw, priority: 1, site: hk, answers: {v4: [203.0.113.2]}}
  - {name: singtel, priority: 1, site: sg, answers: {v4: [203.0.113.3]}}
  - {name: ntt, priority: 1, site: tokyo, weight: 300, answers: {v4: [203.0.113.4]}}
  - {name: backup, priority: 2, site: hk, answers: {v4: [198.51.100.9]}}
zones:
  - {name: example.hk, ns: [ns1.example.hk]}
segments:
  - {name: shenzhen, cidrs: [192.0.2.0/26], location: {lat: 22.54, lon: 114.06}}
  - {name: jakarta, cidrs: [192.0.2.64/26], location: {lat: -6.2, lon: 106.85}}
  - {name: osaka, cidrs: [192.0.2.128/26], location: {lat: 34.69, lon: 135.5}}
  - {name: osaka-too, cidrs: [192.0.2.192/26], location: {lat: 34.69, lon: 135.5}}
services:
  - name: www.example.hk
    routing: nearest
    failover_threshold: 0.5
    pools:
      - name: edge
        tier: 1
        endpoints:
          - {link: cn2}
          - {link: pccw}
          - {link: singtel}
          - {link: ntt}
          # an answer served from Tokyo over the HK backup link: the endpoint's own site
          - {link: backup, site: tokyo, addresses: [198.51.100.10]}
      - name: spare
        endpoints: [{link: backup}]
{extra}
"""


@pytest.fixture(scope="module")
def config(tmp_path_factory: pytest.TempPathFactory) -> Config:
    return load(tmp_path_factory.mktemp("nearest"))


def load(directory: Path, extra: str = "", **replacements: str) -> Config:
    text = CONFIG.replace("{extra}", textwrap.dedent(extra))
    for old, new in replacements.items():
        assert old in text
        text = text.replace(old, new)
    path = directory / "edgesteer.yaml"
    path.write_text(text)
    return load_config(path)


def answers(config: Config, **states: HealthState) -> dict[str, AnswerSet]:
    full = {lk.name: states.get(lk.name, S.UP) for lk in config.links}
    snap = config_snapshot(full)
    p = plan(config, snap, version=1, now=0.0)
    assert IncrementalPlanner(config).plan(snap, version=1, now=0.0) == p
    return {seg: a for (svc, seg), a in p.answers.items() if svc == SVC}


def config_snapshot(states: dict[str, HealthState]) -> HealthSnapshot:
    return b.snapshot(states)


def by_link(a: AnswerSet) -> dict[str, float]:
    return {f"{w.link}@{w.value}": w.weight for w in a.answers}


def codes(a: AnswerSet) -> list[str]:
    return [r.code for r in a.reasons]


def reason(a: AnswerSet, code: str) -> str:
    (hit,) = [r for r in a.reasons if r.code == code]
    return hit.detail


def ranking(a: AnswerSet) -> list[str]:
    got = next(r for r in a.reasons if r.code == "nearest.ranked").inputs["ranking"]
    assert isinstance(got, tuple)
    return [str(x) for x in got]


HK = {"cn2@203.0.113.1": 100.0, "pccw@203.0.113.2": 100.0}


def test_loader_resolves_sites_and_locations(config: Config) -> None:
    eps = {ep.link + (ep.addresses[0] if ep.link == "backup" else ""): ep.site
           for ep in config.service(SVC).pools[0].endpoints}
    assert eps == {"cn2": "hk", "pccw": "hk", "singtel": "sg", "ntt": "tokyo",
                   "backup198.51.100.10": "tokyo"}
    assert config.service(SVC).pools[1].endpoints[0].site == "hk"  # the link's site
    assert config.link("ntt").site == "tokyo"
    assert {s.name: s.location for s in config.segments}["jakarta"] == (-6.2, 106.85)
    svc = config.service(SVC)
    assert (svc.routing, svc.spill, svc.pools[0].min_healthy) == ("nearest", "cascade", 0.0)


def test_each_segment_is_served_by_its_nearest_site(config: Config) -> None:
    got = answers(config)
    assert by_link(got["shenzhen"]) == HK
    assert by_link(got["jakarta"]) == {"singtel@203.0.113.3": 100.0}
    assert by_link(got["osaka"]) == {"ntt@203.0.113.4": 300.0, "backup@198.51.100.10": 100.0}
    for a in got.values():
        assert (a.ttl, a.failing_over) in ((60, False),)
    ranked = reason(got["shenzhen"], "nearest.ranked")
    assert ranked.startswith("nearest first from (22.54, 114.06): 1. hk: score 0.3 ms (29 km);"
                             " 2. sg: score")
    assert ranked.endswith("site hk serves first")
    assert ranking(got["jakarta"])[0].startswith("sg: ")


def test_default_segment_without_location_is_weighted(config: Config) -> None:
    a = answers(config)["default"]
    assert len(a.answers) == 5  # every serving endpoint of tier 1, by weight
    assert "nearest.no_location" in codes(a) and "nearest.ranked" not in codes(a)
    assert reason(a, "nearest.no_location") == (
        "this segment has no location: nearest routing degrades to weighted")


def test_a_failed_nearest_site_spreads_by_capacity_not_onto_the_next_nearest(
        config: Config) -> None:
    """HK (200) is down for Shenzhen: Singapore is the next nearest, but the 200 spread
    over all other sites of the tier by capacity: sg 100, tokyo 300 + 100 -> 40 / 160."""
    a = answers(config, cn2=S.DOWN, pccw=S.DOWN)["shenzhen"]
    assert by_link(a) == {"singtel@203.0.113.3": 40.0, "ntt@203.0.113.4": 120.0,
                          "backup@198.51.100.10": 40.0}
    assert sum(w.weight for w in a.answers) == 200.0
    assert (a.ttl, a.failing_over) == (15, True)
    assert reason(a, "nearest.spill") == (
        "nearest site hk falls short: site hk keeps 0 of its 200; the missing 200 spreads "
        "by capacity: 200 to the other sites (capacity 500, 40% used)")
    assert "site hk short by 200" in reason(a, "ttl.failover")


def test_a_partly_failed_nearest_site_keeps_its_survivors(config: Config) -> None:
    a = answers(config, cn2=S.DOWN)["shenzhen"]
    assert by_link(a) == {"pccw@203.0.113.2": 100.0, "singtel@203.0.113.3": 20.0,
                          "ntt@203.0.113.4": 60.0, "backup@198.51.100.10": 20.0}
    # a degraded link at the nearest site: its lost capacity spills the same way
    c = answers(config, cn2=S.DEGRADED)["shenzhen"]
    assert by_link(c) == {"cn2@203.0.113.1": 50.0, "pccw@203.0.113.2": 100.0,
                          "singtel@203.0.113.3": 10.0, "ntt@203.0.113.4": 30.0,
                          "backup@198.51.100.10": 10.0}


def test_other_segments_are_untouched_by_a_far_failure(config: Config) -> None:
    got = answers(config, cn2=S.DOWN, pccw=S.DOWN)
    assert by_link(got["jakarta"]) == {"singtel@203.0.113.3": 100.0}
    assert "nearest.spill" not in codes(got["jakarta"])


def test_below_threshold_the_next_tier_serves_nearest_first(tmp_path: Path) -> None:
    """Cascade: tier 1 below the threshold, tier 2 serves; nearest still ranks inside it."""
    cfg = load(tmp_path, **{"failover_threshold: 0.5": "failover_threshold: 0.9"})
    a = answers(cfg, ntt=S.DOWN)["osaka"]  # tier 1 at 400 of 700 < 90%
    assert by_link(a) == {"backup@198.51.100.9": 100.0} and a.tier == 2


def test_capacity_spill_with_nearest_fills_the_tier_then_the_next(tmp_path: Path) -> None:
    """spill: capacity: Osaka's nearest site (tokyo, 400) keeps 100 (ntt is down) and the
    rest of tier 1 is small (hk is down, sg 100): 100 to sg, 100 to tier 2 (capacity 100),
    100 unserved."""
    cfg = load(tmp_path, **{"routing: nearest": "routing: nearest\n    spill: capacity",
                            "failover_threshold: 0.5": "failover_threshold: 0.9"})
    a = answers(cfg, ntt=S.DOWN, cn2=S.DOWN, pccw=S.DOWN)["osaka"]
    assert by_link(a) == {"backup@198.51.100.10": 100.0, "singtel@203.0.113.3": 100.0,
                          "backup@198.51.100.9": 100.0}
    assert reason(a, "spill.capacity") == (
        "tier 1 healthy capacity 29% < threshold 90%: site tokyo keeps 100 of its 400; the "
        "missing 300 spreads by capacity: 100 to the other sites of tier 1 (capacity 100, "
        "100% used), 100 to tier 2 (capacity 100, 100% used); 100 finds no capacity")
    assert a.tier == 1


def test_min_healthy_takes_the_nearest_sites_pool_out(tmp_path: Path) -> None:
    """The HK pool below min_healthy is out whole: its survivor serves nobody; Shenzhen's
    share goes by capacity to the other sites of the tier."""
    extra = """\
    policies:
      - service: www.example.hk
        rules:
          - {segment: shenzhen, pools: [hk, far]}
    """
    pools = """\
      - name: hk
        min_healthy: 0.75
        endpoints: [{link: cn2}, {link: pccw}]
      - name: far
        endpoints: [{link: singtel}, {link: ntt}]
      - name: spare"""
    cfg = load(tmp_path, extra, **{"      - name: spare": pools})
    a = answers(cfg, cn2=S.DOWN)["shenzhen"]
    assert by_link(a) == {"singtel@203.0.113.3": 50.0, "ntt@203.0.113.4": 150.0}
    assert codes(a).index("pool.below_min_healthy") < codes(a).index("nearest.spill")


def test_equal_distances_rank_by_site_name(tmp_path: Path) -> None:
    cfg = load(tmp_path, **{"{name: sg, region: SG, location: {lat: 1.35, lon: 103.82}}":
                            "{name: sg, region: SG, location: {lat: 35.68, lon: 139.69}}"})
    a = answers(cfg)["osaka"]  # sg and tokyo at one place: sg first by name
    assert by_link(a) == {"singtel@203.0.113.3": 100.0}
    assert [r.split(":")[0] for r in ranking(a)] == ["sg", "tokyo", "hk"]


def test_incremental_groups_segments_by_location(config: Config) -> None:
    """Rules with the same pools share one computation only at the same location: Osaka
    and Osaka-too do, Shenzhen does not (it would get Osaka's answers otherwise)."""
    inc = IncrementalPlanner(config)
    states = {lk.name: S.UP for lk in config.links}
    first = inc.plan(config_snapshot(states), version=1, now=0.0)
    assert first.get(SVC, "osaka-too") == replace(first.answers[(SVC, "osaka")],
                                                  segment="osaka-too")
    assert first.answers[(SVC, "shenzhen")].values() != first.answers[(SVC, "osaka")].values()
    assert inc.recomputed == 4  # shenzhen, jakarta, osaka(+too), default
    states["singtel"] = S.DOWN
    again = inc.plan(config_snapshot(states), version=2, now=1.0)
    assert again == plan(config, config_snapshot(states), version=2, now=1.0)


def test_identity_covers_the_new_keys(config: Config) -> None:
    base = config_identity(config)
    moved = replace(config, segments=tuple(
        replace(s, location=(0.0, 0.0)) if s.name == "osaka" else s for s in config.segments))
    relinked = replace(config, links=tuple(replace(lk, site="sg") if lk.name == "cn2" else lk
                                           for lk in config.links))
    svc = config.service(SVC)
    other = [replace(svc, spill="capacity"), replace(svc, routing="weighted"),
             replace(svc, pools=(replace(svc.pools[0], min_healthy=0.5), svc.pools[1]))]
    variants = [moved, relinked] + [replace(config, services=(s,)) for s in other]
    digests = {config_identity(c) for c in variants}
    assert base not in digests and len(digests) == len(variants)


def test_segment_location_is_not_a_criterion() -> None:
    assert Segment("here", location=(22.3, 114.2)).is_catch_all


def test_explain_shows_the_ranking_and_the_spill(tmp_path: Path,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    load(tmp_path)
    path = str(tmp_path / "edgesteer.yaml")
    assert main(["explain", "--config", path, "--ecs", "192.0.2.0/26", SVC, "A",
                 "--state", "cn2=down", "--state", "pccw=down"]) == 0
    out = capsys.readouterr().out
    assert "matches segment 'shenzhen'" in out
    assert "- [nearest.ranked] nearest first from (22.54, 114.06): 1. hk: score" in out
    assert ("- [nearest.spill] nearest site hk falls short: site hk keeps 0 of its 200; the "
            "missing 200 spreads by capacity: 200 to the other sites") in out
    assert "203.0.113.3" in out and "203.0.113.1 " not in out
