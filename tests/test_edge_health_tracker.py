"""The health tracker: feeding, link recombination, snapshot versions, staleness, seeding."""

from __future__ import annotations

import asyncio
import logging
from dataclasses import replace

import pytest

from edge.config.schema import Band, HealthSettings
from edge.health.machine import Transition
from edge.health.state import HealthState
from edge.health.tracker import HealthTracker
from probes.bus.memory import MemoryBus
from tests.builders import THRESHOLDS, health, measurement, path

S = HealthState
A = path("cn2", "pop-a")
B = path("cn2", "pop-b")
C = path("cn2", "pop-c")
P = path("pccw", "pop-a")


def tracker(hs: HealthSettings | None = None,
            seen: list[Transition] | None = None) -> HealthTracker:
    return HealthTracker(hs or health(hold_down_s=0.0),
                         {"cn2": THRESHOLDS, "pccw": THRESHOLDS},
                         on_transition=seen.append if seen is not None else None)


def test_configured_links_start_unknown() -> None:
    t = tracker()
    snap = t.snapshot
    assert snap.version == 0
    assert {n: lh.state for n, lh in snap.links.items()} == {"cn2": S.UNKNOWN,
                                                             "pccw": S.UNKNOWN}


def test_feed_reports_link_changes_and_bumps_version() -> None:
    t = tracker()
    assert t.feed(measurement(1.0, key=A)) is True           # unknown -> up
    assert t.snapshot.version == 1 and t.snapshot.link_state("cn2") is S.UP
    assert t.feed(measurement(2.0, key=A)) is False          # still up
    assert t.snapshot.version == 1
    assert t.feed(measurement(3.0, key=A, loss=0.5)) is True  # up -> falling
    assert t.snapshot.version == 2 and t.snapshot.link_state("cn2") is S.FALLING


def test_quality_refreshes_without_version_bump() -> None:
    t = tracker()
    t.feed(measurement(1.0, key=A, p95_ms=40.0))
    before = t.snapshot
    assert t.feed(measurement(2.0, key=A, p95_ms=60.0)) is False
    after = t.snapshot
    assert after.version == before.version
    assert after.paths[A].quality.rtt_p95 == pytest.approx(0.060)
    assert after.links["cn2"].quality.rtt_p95 == pytest.approx(0.060)
    assert after.taken_at == 2.0
    assert before.paths[A].quality.rtt_p95 == pytest.approx(0.040)  # snapshots are immutable


def test_snapshot_is_cached_until_something_changes() -> None:
    t = tracker()
    t.feed(measurement(1.0, key=A))
    assert t.snapshot is t.snapshot


def test_majority_of_paths_decides() -> None:
    seen: list[Transition] = []
    t = tracker(health(fall=1, hold_down_s=0.0), seen)
    for k in (A, B, C):
        t.feed(measurement(1.0, key=k))
    assert t.snapshot.link_state("cn2") is S.UP
    assert t.feed(measurement(2.0, key=A, loss=1.0, received=0)) is False  # 1/3 down
    assert t.snapshot.link_state("cn2") is S.UP
    assert t.snapshot.paths[A].state is S.DOWN
    assert t.feed(measurement(2.1, key=B, loss=0.5)) is True                # 2/3 down
    lh = t.snapshot.links["cn2"]
    assert lh.state is S.DOWN and "pop-a" in lh.reason and "pop-b" in lh.reason
    assert [(tr.path, tr.old, tr.new) for tr in seen[-2:]] == [
        (A, S.UP, S.DOWN), (B, S.UP, S.DOWN)]
    assert seen[-2].reason.startswith("bad 1/1: no replies")


def test_links_are_independent() -> None:
    t = tracker(health(fall=1))
    t.feed(measurement(1.0, key=A))
    t.feed(measurement(1.0, key=P))
    t.feed(measurement(2.0, key=P, loss=0.5))
    assert t.snapshot.link_state("cn2") is S.UP
    assert t.snapshot.link_state("pccw") is S.DOWN


def test_per_link_thresholds() -> None:
    strict = replace(THRESHOLDS, down=Band(loss=0.10, rtt_p95_ms=50.0, jitter_ms=50.0))
    t = HealthTracker(health(fall=1), {"cn2": strict, "pccw": THRESHOLDS})
    t.feed(measurement(1.0, key=A, p95_ms=80.0))
    t.feed(measurement(1.0, key=P, p95_ms=80.0))
    assert t.snapshot.paths[A].state is S.DOWN
    assert t.snapshot.paths[P].state is S.UP


def test_unknown_link_uses_default_thresholds() -> None:
    t = tracker(health(fall=1))
    other = path("ntt", "pop-a")
    assert t.feed(measurement(1.0, key=other, loss=0.5)) is True
    assert t.snapshot.link_state("ntt") is S.DOWN


def test_check_stale_goes_unknown() -> None:
    seen: list[Transition] = []
    t = tracker(health(stale_after_s=5.0), seen)
    t.feed(measurement(10.0, key=A))
    t.feed(measurement(12.0, key=P))
    assert t.check_stale(14.9) is False
    assert t.check_stale(15.0) is True
    snap = t.snapshot
    assert snap.link_state("cn2") is S.UNKNOWN and snap.link_state("pccw") is S.UP
    assert snap.paths[A].reason == "stale: no data for 5.0 s (last state up)"
    assert seen[-1].new is S.UNKNOWN and seen[-1].path == A
    assert snap.version == 3
    assert t.check_stale(16.0) is False                 # already unknown, nothing new


def test_seed_down_link_must_rise() -> None:
    t = tracker(health(rise=3, hold_down_s=10.0))
    t.seed({"cn2": S.DOWN, "pccw": S.UP}, at=0.0)
    snap = t.snapshot
    assert snap.link_state("cn2") is S.DOWN and snap.link_state("pccw") is S.UP
    assert snap.version == 1
    states = []
    for i in range(3):
        t.feed(measurement(1.0 + i, key=A))
        states.append(t.snapshot.link_state("cn2"))
    assert states == [S.RISING, S.RISING, S.UP]     # no hold-down: it was out already
    t.feed(measurement(1.0, key=P))
    assert t.snapshot.link_state("pccw") is S.UP


def test_seed_applies_to_every_path_of_the_first_round_only() -> None:
    t = tracker(health(stale_after_s=5.0))
    t.seed({"cn2": S.DOWN}, at=0.0)
    t.feed(measurement(1.0, key=A))
    t.feed(measurement(2.0, key=B))
    pb = t.path(B)
    assert pb is not None and pb.state is S.RISING
    t.feed(measurement(7.0, key=C))                       # first seen a round later
    pc = t.path(C)
    assert pc is not None and pc.state is S.UP


def test_seeded_link_without_data_goes_unknown() -> None:
    t = tracker(health(stale_after_s=5.0))
    t.seed({"cn2": S.DOWN}, at=100.0)
    assert t.check_stale(104.0) is False
    assert t.check_stale(105.0) is True
    lh = t.snapshot.links["cn2"]
    assert lh.state is S.UNKNOWN
    assert lh.reason == "stale: no data for 5.0 s since seeding (last state down)"


@pytest.mark.parametrize("stale_down", ["serve", "hold"])
def test_a_down_link_that_goes_silent_serves_again_unless_held(stale_down: str) -> None:
    """Staleness is not failure by default; ``stale_down: hold`` keeps a link that was out
    of service out until its probes speak again (and then it must rise)."""
    hs = replace(health(fall=1, rise=2, hold_down_s=0.0, stale_after_s=5.0, stale_grace_s=3.0),
                 stale_down=stale_down)
    t = tracker(hs)
    t.feed(measurement(10.0, key=A, loss=0.5))
    t.feed(measurement(10.0, key=P))
    assert t.snapshot.link_state("cn2") is S.DOWN
    t.check_stale(15.0)                                # path stale, link in its grace
    assert t.snapshot.link_state("cn2") is S.DOWN
    assert "stale grace" in t.snapshot.links["cn2"].reason
    t.check_stale(18.5)                                # grace over
    lh = t.snapshot.links["cn2"]
    if stale_down == "serve":
        assert lh.state is S.UNKNOWN and lh.state.serving
        return
    assert lh.state is S.DOWN and "held until data comes back" in lh.reason
    assert t.check_stale(600.0) is False and t.snapshot.link_state("cn2") is S.DOWN
    assert t.feed(measurement(601.0, key=A)) is True   # data again: it rises, not jumps
    assert t.snapshot.link_state("cn2") is S.RISING
    t.feed(measurement(602.0, key=A))
    assert t.snapshot.link_state("cn2") is S.UP


def test_a_link_seeded_down_without_data_is_held_down_when_asked() -> None:
    t = tracker(replace(health(stale_after_s=5.0, rise=2, hold_down_s=0.0), stale_down="hold"))
    t.seed({"cn2": S.DOWN, "pccw": S.UP}, at=100.0)
    assert t.check_stale(106.0) is True                # pccw (serving) goes unknown
    snap = t.snapshot
    assert snap.link_state("pccw") is S.UNKNOWN
    assert snap.link_state("cn2") is S.DOWN and "held" in snap.links["cn2"].reason
    assert t.check_stale(300.0) is False
    t.feed(measurement(301.0, key=A))                  # first data: back through RISING
    assert t.snapshot.link_state("cn2") is S.RISING


def test_transitions_logged_at_info(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="edge.health.tracker")
    t = tracker(health(fall=1))
    t.feed(measurement(1.0, key=A))
    t.feed(measurement(2.0, key=A, jitter_ms=62.1))
    text = caplog.text
    assert "path hk-1/cn2/pop-a: up -> down: bad 1/1: jitter 62.1 ms >= 50 ms (down)" in text
    assert "link cn2: up -> down:" in text


# --- the async loop on the real in-process bus -----------------------------------------


async def test_run_feeds_from_the_bus_and_checks_staleness() -> None:
    now = [1000.0]
    seen: list[Transition] = []
    t = HealthTracker(health(fall=1, stale_after_s=5.0), {"cn2": THRESHOLDS},
                      on_transition=seen.append, clock=lambda: now[0])
    bus = MemoryBus()
    changed = asyncio.Event()
    task = asyncio.create_task(t.run(bus, changed, stale_interval_s=0.01))
    await asyncio.sleep(0)                       # let run() subscribe
    async with asyncio.timeout(5):
        await bus.publish(measurement(1000.0, key=A))
        await changed.wait()
        assert t.snapshot.link_state("cn2") is S.UP
        changed.clear()
        await bus.publish(measurement(1001.0, key=A, p95_ms=41.0))   # no link change
        await bus.publish(measurement(1002.0, key=A, loss=0.5))
        await changed.wait()
        assert t.snapshot.link_state("cn2") is S.DOWN
        assert t.snapshot.paths[A].quality.at == 1002.0
        changed.clear()
        now[0] = 1010.0                          # silence: the watcher turns it UNKNOWN
        await changed.wait()
        assert t.snapshot.link_state("cn2") is S.UNKNOWN
        assert [tr.new for tr in seen] == [S.UP, S.DOWN, S.UNKNOWN]
        await bus.aclose()                       # subscription ends -> run() returns
        await task
    assert task.done() and task.exception() is None


async def test_run_cancelled_cleans_up() -> None:
    t = tracker()
    bus = MemoryBus()
    task = asyncio.create_task(t.run(bus, asyncio.Event(), stale_interval_s=0.01))
    await asyncio.sleep(0.05)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    pending = [x for x in asyncio.all_tasks() if x.get_name() == "health-stale-watch"]
    assert pending == []
    await bus.aclose()


def test_a_falling_link_remembers_the_state_it_fell_from() -> None:
    t = tracker()
    seen = []
    for i, p95 in enumerate([40.0] * 5 + [200.0] * 6 + [400.0] * 3):  # up, degraded, worse
        t.feed(measurement(float(i), key=A, p95_ms=p95))
        lh = t.snapshot.links["cn2"]
        seen.append((lh.state, lh.falling_from))
    assert (S.DEGRADED, None) in seen
    assert (S.FALLING, S.DEGRADED) in seen                # fell from degraded, remembered
    assert seen[-1] == (S.DOWN, None)
    fresh = tracker()
    for i, loss in enumerate([0.0] * 5 + [0.5]):            # up, then straight to falling
        fresh.feed(measurement(float(i), key=A, loss=loss))
    lh = fresh.snapshot.links["cn2"]
    assert (lh.state, lh.falling_from) == (S.FALLING, S.UP)
