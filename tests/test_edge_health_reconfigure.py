"""A config reload swaps the tracker's bands: the next measurements are judged by the new ones."""

from __future__ import annotations

from edge.config.schema import Band, Thresholds
from edge.health.state import HealthState
from edge.health.tracker import HealthTracker
from tests.builders import THRESHOLDS, health, measurement, path

S = HealthState
A = path("cn2", "pop-a")
TIGHT = Thresholds(degraded=Band(loss=0.02, rtt_p95_ms=20.0, jitter_ms=20.0),
                   down=Band(loss=0.10, rtt_p95_ms=30.0, jitter_ms=50.0), recover_ratio=0.8)


def _up_tracker() -> HealthTracker:
    t = HealthTracker(health(hold_down_s=0.0), {"cn2": THRESHOLDS})
    for i in range(5):
        t.feed(measurement(float(i), key=A, p95_ms=40.0))
    assert t.snapshot.link_state("cn2") is S.UP
    return t


def test_same_measurements_keep_the_link_up_under_the_old_bands() -> None:
    t = _up_tracker()
    for i in range(5, 15):
        t.feed(measurement(float(i), key=A, p95_ms=40.0))
    assert t.snapshot.link_state("cn2") is S.UP


def test_reconfigured_bands_judge_the_next_measurements() -> None:
    t = _up_tracker()
    t.reconfigure(health(hold_down_s=0.0), {"cn2": TIGHT, "ntt": THRESHOLDS})
    assert t.snapshot.link_state("ntt") is S.UNKNOWN  # a link added by the reload
    assert t.snapshot.link_state("cn2") is S.UP  # states are kept across the reload
    for i in range(5, 15):
        t.feed(measurement(float(i), key=A, p95_ms=40.0))
    assert t.snapshot.link_state("cn2") is S.DOWN  # 40 ms is beyond TIGHT's down band
