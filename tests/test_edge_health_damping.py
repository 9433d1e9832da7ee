"""Flap damping (pure and in the tracker), stale grace and the seed hold."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from edge.config.schema import DampingSettings
from edge.health.damping import Damping, current, flap, is_flap, reuse_in, settle
from edge.health.state import HealthState
from edge.health.tracker import HealthTracker
from tests.builders import THRESHOLDS, health, measurement, path

S = HealthState
DS = DampingSettings()
A = path("cn2", "pop-a")


def test_is_flap_only_between_known_serving_and_not() -> None:
    assert is_flap(S.FALLING, S.DOWN) and is_flap(S.RISING, S.UP)
    assert not is_flap(S.UP, S.FALLING) and not is_flap(S.DOWN, S.RISING)
    assert not is_flap(S.UNKNOWN, S.DOWN) and not is_flap(S.DOWN, S.UNKNOWN)


def test_penalty_halves_every_half_life() -> None:
    d = flap(Damping(), 0.0, DS)
    assert current(d, 120.0, DS) == pytest.approx(500.0)
    assert current(d, 240.0, DS) == pytest.approx(250.0)


def test_one_outage_is_not_damped_a_third_flap_is() -> None:
    d = flap(Damping(), 0.0, DS)          # down
    d = flap(d, 15.0, DS)                 # back up
    assert not d.suppressed
    d = flap(d, 20.0, DS)                 # down again
    assert d.suppressed and d.flaps == 3


def test_reuse_after_decay() -> None:
    d = flap(flap(flap(Damping(), 0.0, DS), 5.0, DS), 10.0, DS)
    wait = reuse_in(d, 10.0, DS)
    assert 0 < wait < DS.max_suppress_s
    assert settle(d, 10.0 + wait - 1.0, DS).suppressed
    assert not settle(d, 10.0 + wait + 1.0, DS).suppressed


@settings(max_examples=200, deadline=None)
@given(st.lists(st.floats(0.0, 50.0), min_size=1, max_size=30))
def test_suppression_never_exceeds_max(gaps: list[float]) -> None:
    d, t = Damping(), 0.0
    for g in gaps:
        t += g
        d = settle(flap(d, t, DS), t, DS)
    if d.suppressed_at is not None:
        # (t + max) - t may come out a hair under max in floating point: 1 us of slack
        assert not settle(d, d.suppressed_at + DS.max_suppress_s + 1e-6, DS).suppressed


def test_disabled_damping_never_suppresses() -> None:
    off = DampingSettings(penalty=0.0)
    d = Damping()
    for i in range(20):
        d = flap(d, float(i), off)
    assert not d.suppressed


def _tracker(**kw: object) -> HealthTracker:
    return HealthTracker(health(fall=1, rise=1, hold_down_s=0.0, **kw),  # type: ignore[arg-type]
                         {"cn2": THRESHOLDS})


def test_tracker_suppresses_a_flapping_link_and_reuses_it() -> None:
    t = _tracker()
    seq = ["G", "B", "G", "B", "G", "G"]
    got = []
    for i, g in enumerate(seq):
        t.feed(measurement(float(i), key=A, **({"loss": 0.5} if g == "B" else {})))
        got.append(t.snapshot.link_state("cn2"))
    assert got == [S.UP, S.DOWN, S.UP, S.DOWN, S.DOWN, S.DOWN]
    lh = t.snapshot.links["cn2"]
    assert lh.reason.startswith("suppressed (flap damping)") and "measured up" in lh.reason
    wait = reuse_in(t.damping("cn2"), 5.0, DS)
    for k in range(int(wait) + 2):  # good data keeps coming; the penalty decays
        t.feed(measurement(6.0 + k, key=A))
        t.check_stale(6.0 + k)
    assert t.snapshot.link_state("cn2") is S.UP


def test_stale_link_keeps_its_state_for_the_grace_then_unknown() -> None:
    t = _tracker(stale_after_s=5.0, stale_grace_s=4.0)
    t.feed(measurement(0.0, key=A, loss=0.5))
    assert t.snapshot.link_state("cn2") is S.DOWN
    t.check_stale(5.0)                                    # path stale, link in grace
    assert t.snapshot.paths[A].state is S.UNKNOWN
    assert t.snapshot.link_state("cn2") is S.DOWN
    assert t.snapshot.links["cn2"].reason.startswith("stale grace")
    t.check_stale(8.9)
    assert t.snapshot.link_state("cn2") is S.DOWN
    assert t.check_stale(9.0) is True
    assert t.snapshot.link_state("cn2") is S.UNKNOWN


def test_seeded_state_holds_through_warm_up() -> None:
    t = HealthTracker(health(window=10, hold_down_s=0.0), {"cn2": THRESHOLDS})
    t.seed({"cn2": S.DOWN}, at=0.0)
    for n in range(1, 5):                                  # warming up: no verdict
        t.feed(measurement(float(n), key=A, sent=n))
        t.check_stale(float(n))
        assert t.snapshot.link_state("cn2") is S.DOWN
    t.feed(measurement(5.0, key=A, sent=5))
    assert t.snapshot.link_state("cn2") is S.RISING       # came back through rising
