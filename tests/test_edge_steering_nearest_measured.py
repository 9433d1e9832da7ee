"""Nearest routing blended with measured latency (issue 4, geo item): targets name the
region they stand in, the tracker reports per link the rtt toward each region
(edge.health.coverage, moved only on a clear change), and the planner ranks a segment's
sites by 0.7 x measured + 0.3 x the distance estimate when probes cover its regions.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from types import MappingProxyType

import pytest

from edge.config.loader import ConfigInvalid, load_config
from edge.config.schema import Config
from edge.health.coverage import MOVE_MS, MOVE_RATIO, moved, toward
from edge.health.state import HealthSnapshot, HealthState, LinkHealth, PathHealth, Quality
from edge.health.tracker import HealthTracker
from edge.plan import AnswerSet
from edge.steering.incremental import IncrementalPlanner
from edge.steering.planner import inputs_digest, plan
from edge.steering.statefile import load_engine_state, save_engine_state
from tests import builders as b

S = HealthState
SVC = "www.example.hk"

# Hong Kong and Singapore; users in Manila (1,118 km from HK, 2,394 km from SG).
CONFIG = """\
version: 1
node: {name: hk-1, site: hk}
sites:
  - {name: hk, location: {lat: 22.30, lon: 114.17}}
  - {name: sg, location: {lat: 1.35, lon: 103.82}}
links:
  - {name: cn2, priority: 1, site: hk, answers: {v4: [203.0.113.1]}}
  - {name: singtel, priority: 1, site: sg, answers: {v4: [203.0.113.3]}}
targets:
  - {name: pop-mnl, kind: tcp, host: 127.0.0.1, port: 9, region: PH-00}
  - {name: pop-hk, kind: tcp, host: 127.0.0.1, port: 9}
zones:
  - {name: example.hk, ns: [ns1.example.hk]}
segments:
  - {name: manila, regions: [PH-00], location: {lat: 14.60, lon: 121.00}}
  - {name: manila-geo, cidrs: [192.0.2.0/26], location: {lat: 14.60, lon: 121.00}}
services:
  - name: www.example.hk
    routing: nearest
    pools:
      - name: edge
        endpoints: [{link: cn2}, {link: singtel}]
"""


@pytest.fixture(scope="module")
def config(tmp_path_factory: pytest.TempPathFactory) -> Config:
    path = tmp_path_factory.mktemp("measured") / "edgesteer.yaml"
    path.write_text(CONFIG)
    return load_config(path)


def snap(toward_ms: dict[str, dict[str, float]], version: int = 1) -> HealthSnapshot:
    links = {name: LinkHealth(link=name, state=S.UP, since=0.0, reason="test",
                              toward=MappingProxyType(toward_ms.get(name, {})))
             for name in ("cn2", "singtel")}
    return HealthSnapshot(version=version, taken_at=1.0, links=MappingProxyType(links))


def served(config: Config, s: HealthSnapshot, segment: str) -> AnswerSet:
    p = plan(config, s, version=1, now=0.0)
    assert IncrementalPlanner(config).plan(s, version=1, now=0.0) == p
    return p.answers[(SVC, segment)]


def links_of(a: AnswerSet) -> set[str]:
    return {w.link for w in a.answers}


def ranked(a: AnswerSet) -> str:
    return next(r.detail for r in a.reasons if r.code == "nearest.ranked")


def test_target_region_loads(config: Config) -> None:
    assert config.target_regions() == {"pop-mnl": "PH-00"}


def test_a_bad_target_region_is_refused_naming_it(tmp_path: Path) -> None:
    path = tmp_path / "edgesteer.yaml"
    path.write_text(CONFIG.replace("region: PH-00}", "region: 'PH 00'}"))
    with pytest.raises(ConfigInvalid) as err:
        load_config(path)
    text = str(err.value)
    assert "targets[0].region" in text and "a region code" in text, text


def test_geography_alone_ranks_hong_kong_first(config: Config) -> None:
    a = served(config, snap({}), "manila")
    assert links_of(a) == {"cn2"}
    assert "measured" not in ranked(a).split(": 1.")[1]


def test_a_measured_route_outweighs_the_map(config: Config) -> None:
    """HK is nearer, but its route to Manila measures 80 ms and Singapore's 30 ms:
    hk 0.7 x 80 + 0.3 x 11.2 = 59.4 against sg 0.7 x 30 + 0.3 x 23.9 = 28.2."""
    a = served(config, snap({"cn2": {"PH-00": 80.0}, "singtel": {"PH-00": 30.0}}), "manila")
    assert links_of(a) == {"singtel"}
    text = ranked(a)
    assert "measured toward PH-00" in text
    assert "1. sg: score 28.2 ms (2394 km, measured 30.0 ms)" in text
    assert "2. hk: score 59.4 ms (1118 km, measured 80.0 ms)" in text


def test_close_measurements_leave_the_map_to_decide(config: Config) -> None:
    a = served(config, snap({"cn2": {"PH-00": 31.0}, "singtel": {"PH-00": 30.0}}), "manila")
    assert links_of(a) == {"cn2"}


def test_a_segment_probes_do_not_cover_keeps_the_map(config: Config) -> None:
    """manila-geo has no regions: the same figures do not apply to it."""
    a = served(config, snap({"cn2": {"PH-00": 80.0}, "singtel": {"PH-00": 30.0}}),
               "manila-geo")
    assert links_of(a) == {"cn2"}


MEASURED_ISP = CONFIG.replace(
    "  - {name: manila-geo,",
    "  - {name: manila-isp, cidrs: [192.0.2.64/26], location: {lat: 14.60, lon: 121.00},\n"
    "     measured_regions: [PH-00]}\n"
    "  - {name: manila-geo,")


def test_a_segment_without_regions_takes_the_figures_of_its_measured_regions(
        tmp_path: Path) -> None:
    """An ISP segment (by CIDR here; ASN or line alike) is not a region, but its users sit
    behind the Manila PoP: ``measured_regions`` lets the same figures rank its sites."""
    path = tmp_path / "edgesteer.yaml"
    path.write_text(MEASURED_ISP)
    config = load_config(path)
    assert not [w for w in config.warnings if w.key_path.endswith(".measured_regions")]
    figures = snap({"cn2": {"PH-00": 80.0}, "singtel": {"PH-00": 30.0}})
    a = served(config, figures, "manila-isp")
    assert links_of(a) == {"singtel"}
    assert "measured toward PH-00" in ranked(a)
    assert links_of(served(config, figures, "manila-geo")) == {"cn2"}  # still the map


def test_measured_regions_no_target_stands_in_are_warned_about(tmp_path: Path) -> None:
    path = tmp_path / "edgesteer.yaml"
    path.write_text(MEASURED_ISP.replace("measured_regions: [PH-00]",
                                         "measured_regions: [PH-00, ID-JK]"))
    config = load_config(path)
    [warning] = [w for w in config.warnings if w.key_path.endswith(".measured_regions")]
    text = str(warning)
    assert "segments[1].measured_regions" in text and "manila-isp" in text, text
    assert "ID-JK" in text and "PH-00" not in text.split("ID-JK")[0].split("from")[-1], text
    # the covered region still counts
    figures = snap({"cn2": {"PH-00": 80.0}, "singtel": {"PH-00": 30.0}})
    assert links_of(served(config, figures, "manila-isp")) == {"singtel"}


def test_a_bad_measured_region_is_refused_naming_it(tmp_path: Path) -> None:
    path = tmp_path / "edgesteer.yaml"
    path.write_text(MEASURED_ISP.replace("measured_regions: [PH-00]",
                                         "measured_regions: ['PH 00']"))
    with pytest.raises(ConfigInvalid) as err:
        load_config(path)
    assert "segments[1].measured_regions[0]" in str(err.value), str(err.value)


def test_incremental_replans_on_a_latency_move_only_where_it_matters(config: Config) -> None:
    inc = IncrementalPlanner(config)
    before = snap({"cn2": {"PH-00": 20.0}, "singtel": {"PH-00": 30.0}})
    first = inc.plan(before, version=1, now=0.0)
    assert links_of(first.answers[(SVC, "manila")]) == {"cn2"}
    after = snap({"cn2": {"PH-00": 80.0}, "singtel": {"PH-00": 30.0}}, version=2)
    again = inc.plan(after, version=2, now=1.0)
    assert inc.recomputed >= 1
    assert again == plan(config, after, version=2, now=1.0)
    assert links_of(again.answers[(SVC, "manila")]) == {"singtel"}
    assert inputs_digest(config, before) != inputs_digest(config, after)
    same = inc.plan(replace(after, version=3), version=3, now=2.0)
    assert inc.recomputed == 0 and same.answers == again.answers


# --- the figures: edge.health.coverage and the tracker -------------------------------------

REGIONS = {"pop-mnl": "PH-00"}


def ph(state: HealthState, p50_ms: float, link: str = "cn2",
       target: str = "pop-mnl") -> PathHealth:
    return PathHealth(path=b.path(link, target), state=state, since=0.0, reason="",
                      quality=Quality(rtt_p50=p50_ms / 1000.0))


def test_toward_takes_the_best_serving_path_of_a_region() -> None:
    paths = [ph(S.UP, 50.0), ph(S.DEGRADED, 42.0, target="pop-mnl"),
             ph(S.DOWN, 5.0), ph(S.FALLING, 4.0), ph(S.UP, 1.0, target="pop-hk")]
    got = toward(paths, REGIONS, {})
    assert dict(got) == {"PH-00": 42.0}
    assert toward([ph(S.DOWN, 5.0)], REGIONS, got) == {}       # nothing serving: dropped
    assert toward(paths, {}, {}) == {}


@pytest.mark.parametrize(("reported", "measured", "expect"), [
    (40.0, 44.9, False), (40.0, 49.0, True), (40.0, 31.0, True), (40.0, 35.1, False),
    (10.0, 14.9, False), (10.0, 16.0, True), (200.0, 235.0, False), (200.0, 241.0, True)])
def test_a_reported_rtt_moves_only_on_a_clear_change(reported: float, measured: float,
                                                     expect: bool) -> None:
    assert moved(reported, measured) is expect
    gap = abs(measured - reported)
    assert expect is (gap > MOVE_MS and gap > MOVE_RATIO * reported)
    kept = toward([ph(S.UP, measured)], REGIONS, {"PH-00": reported})
    assert kept["PH-00"] == (round(measured, 1) if expect else reported)


def test_the_tracker_reports_latency_and_bumps_only_on_a_clear_move() -> None:
    tracker = HealthTracker(b.health(), {"cn2": b.THRESHOLDS}, regions=REGIONS)
    key = b.path("cn2", "pop-mnl")
    for i in range(5):
        tracker.feed(b.measurement(float(i), key=key, p95_ms=40.0))
    first = tracker.snapshot
    assert first.links["cn2"].state is S.UP
    assert dict(first.links["cn2"].toward) == {"PH-00": 40.0}
    assert not tracker.feed(b.measurement(5.0, key=key, p95_ms=43.0))   # wanders: kept
    assert tracker.snapshot.version == first.version
    assert tracker.snapshot.links["cn2"].toward["PH-00"] == 40.0
    assert tracker.feed(b.measurement(6.0, key=key, p95_ms=90.0))       # clearly moved
    assert tracker.snapshot.version == first.version + 1
    assert tracker.snapshot.links["cn2"].toward["PH-00"] == 90.0
    # a target without a region reports nothing
    other = HealthTracker(b.health(), {"cn2": b.THRESHOLDS})
    for i in range(5):
        other.feed(b.measurement(float(i), key=key))
    assert other.snapshot.links["cn2"].toward == {}


def test_latencies_survive_a_restart(tmp_path: Path, config: Config) -> None:
    """The engine file keeps them and a seeded tracker starts from them, so the first
    plan after a restart ranks the sites as the last one did."""
    before = snap({"cn2": {"PH-00": 80.0}, "singtel": {"PH-00": 30.0}})
    save_engine_state(tmp_path, before, None, now=5.0)
    persisted = load_engine_state(tmp_path)
    assert persisted is not None
    assert {k: dict(v) for k, v in persisted.toward.items()} == {
        "cn2": {"PH-00": 80.0}, "singtel": {"PH-00": 30.0}}
    tracker = HealthTracker(b.health(), {"cn2": b.THRESHOLDS, "singtel": b.THRESHOLDS},
                            regions=REGIONS)
    tracker.seed(persisted.links, toward=persisted.toward, at=5.0)
    again = tracker.snapshot
    assert links_of(served(config, again, "manila")) == links_of(served(config, before,
                                                                        "manila"))
    assert links_of(served(config, again, "manila")) == {"singtel"}


SINGTEL = "  - {name: singtel, priority: 1, site: sg, answers: {v4: [203.0.113.3]}}\n"
FALLBACK = CONFIG.replace(SINGTEL, SINGTEL + """\
  - {name: spare-hk, priority: 2, site: hk, answers: {v4: [198.51.100.1]}}
  - {name: spare-sg, priority: 2, site: sg, answers: {v4: [198.51.100.3]}}
""").replace("""        endpoints: [{link: cn2}, {link: singtel}]
""", """        endpoints: [{link: cn2}, {link: singtel}]
        all_down: fallback
        fallback: spare
      - name: spare
        endpoints: [{link: spare-hk}, {link: spare-sg}]
policies:
  - service: www.example.hk
    rules:
      - {segment: manila-geo, pools: [edge]}
      - {segment: default, pools: [edge, spare]}
""")


def test_the_fallback_pool_is_served_nearest_first(tmp_path: Path) -> None:
    path = tmp_path / "edgesteer.yaml"
    path.write_text(FALLBACK)
    cfg = load_config(path)
    states = {"cn2": S.DOWN, "singtel": S.DOWN, "spare-hk": S.UP, "spare-sg": S.UP}
    a = served(cfg, b.snapshot(states), "manila-geo")
    assert links_of(a) == {"spare-hk"}
    assert [r.code for r in a.reasons].count("all_down.fallback") == 1
    assert "site hk serves first" in ranked(a)
    # the nearest fallback site down: the other one takes its share
    states["spare-hk"] = S.DOWN
    assert links_of(served(cfg, b.snapshot(states), "manila-geo")) == {"spare-sg"}
    # every fallback endpoint down: the whole pool, whatever its health
    states["spare-sg"] = S.DOWN
    assert links_of(served(cfg, b.snapshot(states), "manila-geo")) == {"spare-hk", "spare-sg"}
