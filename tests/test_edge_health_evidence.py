"""Evidence and warm-up: one lost probe or one slow rtt never takes a path down, however
many overlapping windows it stays in; nothing is judged on a nearly empty window."""

from __future__ import annotations

from dataclasses import replace

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from edge.health.machine import Grade, classify, rtt_support, step
from edge.health.state import HealthState, PathHealth
from probes.measurement import Measurement, PathKey, ProbeError, ProbeKind, Sample
from probes.window import Window
from tests.builders import THRESHOLDS, health, measurement

S = HealthState
KEY = PathKey("hk-1", "cn2", "pop")


def _sample(at: float, rtt_ms: float | None) -> Sample:
    if rtt_ms is None:
        return Sample(KEY, ProbeKind.TCP, at, False, None, error=ProbeError("timeout", "1 s"))
    return Sample(KEY, ProbeKind.TCP, at, True, rtt_ms / 1000.0)


def _drive(rtts: list[float | None], window: int = 10) -> list[PathHealth]:
    """Samples one per second through a real Window and the state machine."""
    hs = health(window=window, hold_down_s=0.0)
    w = Window(window)
    prev: PathHealth | None = None
    out = []
    for i, rtt in enumerate(rtts):
        w.add(_sample(float(i), rtt))
        m = w.measurement(KEY, ProbeKind.TCP, float(i))
        prev, _ = step(prev, m, THRESHOLDS, hs)
        out.append(prev)
    return out


def test_one_lost_probe_in_a_ten_sample_window_never_flips() -> None:
    rtts: list[float | None] = [40.0] * 12 + [None] + [40.0] * 15
    got = _drive(rtts)
    assert all(p.state is S.UP for p in got[5:]), [p.state for p in got]
    assert "not enough evidence" in got[14].reason


def test_one_rtt_spike_never_flips() -> None:
    rtts: list[float | None] = [100.0] * 12 + [400.0] + [100.0] * 15  # 4x, over the 300 ms bound
    got = _drive(rtts)
    assert all(p.state is S.UP for p in got[5:])


def test_two_lost_probes_in_a_window_are_evidence() -> None:
    rtts: list[float | None] = [40.0] * 10 + [None, 40.0, None] + [40.0] * 3
    got = _drive(rtts)
    assert [p.state for p in got[12:15]] == [S.FALLING, S.FALLING, S.DOWN]


def test_sustained_slow_rtts_are_evidence() -> None:
    rtts: list[float | None] = [40.0] * 10 + [400.0] * 8
    states = [p.state for p in _drive(rtts)]
    assert S.DOWN in states[10:]


def test_hard_down_within_fall_plus_one() -> None:
    rtts: list[float | None] = [40.0] * 10 + [None] * 5
    states = [p.state for p in _drive(rtts)]
    assert states[10] is S.UP                  # one failure: not yet evidence
    assert states[11:14] == [S.FALLING, S.FALLING, S.DOWN]


def test_rtt_support_from_order_statistics() -> None:
    m = measurement(1.0)
    slow_max = replace(m, received=10, rtt_max=0.5, rtt_p99=0.5, rtt_p95=0.5, rtt_p50=0.04)
    assert rtt_support(slow_max, 300.0) == 1
    assert rtt_support(replace(slow_max, received=40), 300.0) == 3   # rank 38 of 40: 3 at or above
    assert rtt_support(replace(slow_max, rtt_p50=0.4), 300.0) == 6
    assert rtt_support(m, 300.0) == 0


def test_exit_bounds_need_no_evidence() -> None:
    """Keeping a down path down takes any bad figure: bringing it back needs a clean window."""
    one_lost = measurement(1.0, loss=0.1, received=9)
    assert classify(one_lost, THRESHOLDS, S.UP).grade is Grade.GOOD
    assert classify(one_lost, THRESHOLDS, S.DOWN).grade is Grade.BAD


def test_warm_up_gives_no_verdict() -> None:
    hs = health(window=10)
    prev: PathHealth | None = None
    for n in range(1, 5):
        m: Measurement = measurement(float(n), sent=n, received=0)
        prev, tr = step(prev, m, THRESHOLDS, hs)
        assert tr is None and prev.state is S.UNKNOWN
        assert prev.reason == f"warming up: {n}/5 samples"
    prev, tr = step(prev, measurement(5.0, sent=5, received=0), THRESHOLDS, hs)
    assert tr is not None and prev.state is S.FALLING


def test_warm_up_keeps_a_known_state() -> None:
    hs = health(window=10)
    up, _ = step(None, measurement(1.0), THRESHOLDS, hs)
    same, tr = step(up, measurement(2.0, sent=1, received=0), THRESHOLDS, hs)
    assert tr is None and same.state is S.UP and same.quality.at == 2.0


def test_warm_up_is_capped_by_the_window() -> None:
    hs = health(window=2)
    p, _ = step(None, measurement(1.0, sent=2), THRESHOLDS, hs)
    assert p.state is S.UP


# --- a window spanning time: faster probing adds evidence (probes/window.py) ---------------


def _doubtful_path(window: Window) -> list[HealthState]:
    """Clean at 200 ms, then two probes lost 0.6 s apart *sent*, with the agent probing
    every 50 ms from the moment the first loss is known (its 0.4 s timeout): samples are
    added in completion order, so each lost one lands 8 fast samples late."""
    hs = health(window=10)
    sends: list[tuple[float, bool]] = [(i * 0.2, True) for i in range(20)]   # up to 3.8 s
    sends += [(4.0, False), (4.2, True)]                    # lost at 4.0, known at 4.4
    sends += [(4.4 + k * 0.05, k != 4) for k in range(30)]  # lost at 4.6, known at 5.0
    done = sorted((at + (0.4 if not ok else 0.001), at, ok) for at, ok in sends)
    prev: PathHealth | None = None
    states = []
    for now, at, ok in done:
        window.add(_sample(at, 40.0 if ok else None))
        prev, _ = step(prev, window.measurement(KEY, ProbeKind.TCP, now), THRESHOLDS, hs)
        states.append(prev.state)
    return states


def test_two_losses_sent_within_the_span_count_together_whatever_the_cadence() -> None:
    assert S.DOWN in _doubtful_path(Window(10, span_s=2.0))
    # control: a count window forgets the first loss before the second is known
    assert S.DOWN not in _doubtful_path(Window(10))


@settings(max_examples=60, deadline=None)
@given(st.floats(0.05, 2.0), st.integers(1, 40),
       st.lists(st.tuples(st.booleans(), st.floats(0.0, 0.24)), min_size=1, max_size=60))
def test_a_span_window_at_the_targets_cadence_is_the_count_window(
        interval: float, n: int, probes: list[tuple[bool, float]]) -> None:
    """At the target's own interval (replies within a quarter of it) the span of n
    intervals holds exactly the newest n samples: the health rules keep their meaning."""
    count, span = Window(n), Window(n, span_s=n * interval)
    for i, (ok, rtt_share) in enumerate(probes):
        at = 1000.0 + i * interval
        s = _sample(at, 40.0 if ok else None)
        now = at + rtt_share * interval + 1e-6
        count.add(s)
        span.add(s)
        assert span.measurement(KEY, ProbeKind.TCP, now) == count.measurement(
            KEY, ProbeKind.TCP, now)


def test_a_span_window_is_bounded() -> None:
    w = Window(10, span_s=100.0, limit=25)
    for i in range(100):
        w.add(_sample(float(i) * 0.01, 40.0))
    assert w.measurement(KEY, ProbeKind.TCP, 1.0).sent == 25
    with pytest.raises(ValueError, match="limit"):
        Window(10, span_s=1.0, limit=5)
    with pytest.raises(ValueError, match="span_s"):
        Window(10, span_s=0.0)
