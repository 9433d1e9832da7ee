"""The tracker's constant-time path (counts of path states, one region looked at) against
the reference that re-combines every link from all its paths on every measurement.

Both trackers get the same random run (measurements over several nodes, targets and
regions; staleness checks; seeds; flap damping that suppresses) and must agree on every
``feed``/``check_stale`` result and on every snapshot, reasons and quality included.
"""

from __future__ import annotations

import random
from dataclasses import replace

from hypothesis import given, settings
from hypothesis import strategies as st

from edge.config.schema import DampingSettings, HealthSettings, QuorumMode, StaleDown
from edge.health.state import HealthState
from edge.health.tracker import HealthTracker
from tests.builders import THRESHOLDS, health, measurement, path

LINKS = ("cn2", "ntt")
NODES = ("hk-1", "hk-2", "hk-3")
TARGETS = ("sh-pop", "bj-pop", "tyo-pop", "origin")
REGIONS = {"sh-pop": "cn-east", "bj-pop": "cn-north", "tyo-pop": "jp"}  # origin: none
KEYS = [path(link, target, node) for link in LINKS for node in NODES for target in TARGETS]
# (loss, p95 ms): clean, wandering, degraded, down by rtt, down by loss, dead
READINGS = ((0.0, 40.0), (0.0, 44.0), (0.0, 70.0), (0.05, 60.0), (0.0, 200.0),
            (0.0, 400.0), (0.3, 40.0), (1.0, 40.0))


def pair(hs: HealthSettings) -> tuple[HealthTracker, HealthTracker]:
    bands = {link: THRESHOLDS for link in LINKS}
    return (HealthTracker(hs, bands, regions=REGIONS, clock=lambda: 0.0),
            HealthTracker(hs, bands, regions=REGIONS, clock=lambda: 0.0, incremental=False))


@settings(max_examples=150, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), steps=st.integers(20, 400),
       quorum=st.sampled_from(["all", "majority", "any"]),
       grace=st.sampled_from([0.0, 3.0]),
       seeded=st.sampled_from([None, HealthState.DOWN, HealthState.UP]),
       stale_down=st.sampled_from(["serve", "hold"]))
def test_incremental_tracker_agrees_with_full_recombination(
        seed: int, steps: int, quorum: QuorumMode, grace: float,
        seeded: HealthState | None, stale_down: StaleDown) -> None:
    rng = random.Random(seed)
    damping = DampingSettings(penalty=1000.0, suppress=2000.0, reuse=750.0,
                              half_life_s=15.0, max_suppress_s=60.0)
    hs = replace(health(rise=2, fall=2, hold_down_s=rng.choice([0.0, 2.0]), stale_after_s=2.0,
                        quorum=quorum, stale_grace_s=grace, damping=damping),
                 stale_down=stale_down)
    fast, full = pair(hs)
    now = 100.0
    if seeded is not None:
        for t in (fast, full):
            t.seed({"cn2": seeded}, at=now, toward={"cn2": {"cn-east": 40.0}})
    # a few paths carry most measurements, as when one node is busy; others go silent
    busy = rng.sample(KEYS, 6)
    reading = {k: rng.choice(READINGS) for k in KEYS}
    for _ in range(steps):
        now += rng.choice([0.01, 0.1, 0.2, 0.5, 1.5])
        if rng.random() < 0.1:
            assert fast.check_stale(now) == full.check_stale(now)
        else:
            key = rng.choice(busy) if rng.random() < 0.7 else rng.choice(KEYS)
            if rng.random() < 0.15:
                reading[key] = rng.choice(READINGS)
            loss, p95 = reading[key]
            m = measurement(now, key=key, loss=loss, p95_ms=p95 + rng.random())
            assert fast.feed(m) == full.feed(m), m
        if rng.random() < 0.3:
            assert fast.snapshot == full.snapshot
            for link in LINKS:
                assert fast.damping(link) == full.damping(link)
    assert fast.snapshot == full.snapshot


def test_a_settled_link_shows_fresh_reason_and_quality_in_the_next_snapshot() -> None:
    fast, _ = pair(health(hold_down_s=0.0))
    a, b = path("cn2", "sh-pop"), path("cn2", "origin")  # origin: no region
    fast.feed(measurement(1.0, key=a, p95_ms=40.0))
    fast.feed(measurement(1.0, key=b, p95_ms=40.0))
    before = fast.snapshot
    assert fast.feed(measurement(2.0, key=b, p95_ms=90.0)) is False  # still up: settled
    after = fast.snapshot
    assert after.version == before.version
    assert after.links["cn2"].state is HealthState.UP
    assert after.links["cn2"].quality.rtt_p95 == 0.090
    assert before.links["cn2"].quality.rtt_p95 == 0.040


@given(st.lists(st.tuples(st.sampled_from(["hk-1", "hk-10", "hk-2", ""]),
                          st.sampled_from(["cn2", "CN2", "ntt"]), st.text(max_size=3))))
def test_the_path_sort_key_orders_as_the_keys_compare(parts: list[tuple[str, str, str]]) -> None:
    keys = [path(link, target, node) for node, link, target in parts]
    assert sorted(keys, key=lambda k: k.order) == sorted(keys)
