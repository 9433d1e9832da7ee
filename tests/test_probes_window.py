"""Window statistics: exact values on known samples, eviction, and invariants."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from probes.measurement import Measurement, PathKey, ProbeError, ProbeErrorKind, ProbeKind, Sample
from probes.window import EWMA_ALPHA, Window, ewma, percentile, rfc3550_jitter

PATH = PathKey("hk-1", "cn2", "pop")
MS = 1e-3


def ok(at: float, rtt_ms: float) -> Sample:
    return Sample(PATH, ProbeKind.TCP, at, True, rtt_ms * MS)


def fail(at: float, kind: ProbeErrorKind = "timeout", detail: str = "") -> Sample:
    return Sample(PATH, ProbeKind.TCP, at, False, None, error=ProbeError(kind, detail))


def measure(samples: list[Sample], now: float = 100.0, size: int = 100) -> Measurement:
    window = Window(size)
    for s in samples:
        window.add(s)
    return window.measurement(PATH, ProbeKind.TCP, now)


def test_exact_statistics_on_known_samples() -> None:
    samples = [ok(1, 10), ok(2, 20), fail(3, "refused", "first"), ok(4, 15), ok(5, 15),
               fail(6, "timeout", "second"), ok(7, 30)]
    m = measure(samples, now=11.0)
    assert (m.sent, m.received) == (7, 5)
    assert m.loss == pytest.approx(2 / 7)
    assert m.rtt_min == pytest.approx(10 * MS)
    # nearest rank over [10, 15, 15, 20, 30]: p50 -> 3rd, p95 and p99 -> 5th
    assert m.rtt_p50 == pytest.approx(15 * MS)
    assert m.rtt_p95 == pytest.approx(30 * MS)
    assert m.rtt_p99 == pytest.approx(30 * MS)
    assert m.rtt_max == pytest.approx(30 * MS)
    assert m.rtt_mean == pytest.approx(18 * MS)
    # consecutive successful rtts 10, 20, 15, 15, 30 -> |D| = 10, 5, 0, 15 (ms)
    assert m.mean_abs_diff_s == pytest.approx(7.5 * MS)
    # 0.3*20 + 0.7*10 = 13; 13.6; 14.02; 0.3*30 + 0.7*14.02 = 18.814
    assert m.ewma_rtt == pytest.approx(18.814 * MS)
    assert dict(m.errors) == {"refused": 1, "timeout": 1}
    assert m.last_error == ProbeError("timeout", "second")
    assert m.window_s == pytest.approx(10.0)
    assert (m.path, m.kind, m.at) == (PATH, ProbeKind.TCP, 11.0)


def test_jitter_matches_a_hand_computation_of_rfc3550() -> None:
    m = measure([ok(1, 10), ok(2, 20), ok(3, 15), ok(4, 15), ok(5, 30)])
    j = 0.0
    j += (10 - j) / 16  # 0.625
    j += (5 - j) / 16  # 0.8984375
    j += (0 - j) / 16  # 0.84228515625
    j += (15 - j) / 16  # 1.727142333984375
    assert j == pytest.approx(1.727142333984375)
    assert m.jitter_s == pytest.approx(j * MS)
    assert rfc3550_jitter([10, 5, 0, 15]) == pytest.approx(1.727142333984375)


def test_jitter_skips_failures_between_successes() -> None:
    with_gap = measure([ok(1, 10), fail(2), fail(3), ok(4, 26)])
    assert with_gap.jitter_s == pytest.approx(16 * MS / 16)
    assert with_gap.mean_abs_diff_s == pytest.approx(16 * MS)


def test_nearest_rank_percentiles_on_1_to_100() -> None:
    values = [float(v) for v in range(1, 101)]
    assert percentile(values, 50) == 50
    assert percentile(values, 95) == 95
    assert percentile(values, 99) == 99
    assert percentile(values, 100) == 100
    assert percentile(values, 0) == 1
    assert percentile([], 50) is None


def test_ewma_alpha_is_documented_value() -> None:
    assert EWMA_ALPHA == 0.3
    assert ewma([1.0, 2.0], EWMA_ALPHA) == pytest.approx(1.3)
    assert ewma([], EWMA_ALPHA) is None


def test_count_eviction_keeps_the_newest() -> None:
    window = Window(3)
    for i in range(5):
        window.add(ok(i, 10 + i))
    m = window.measurement(PATH, ProbeKind.TCP, 10.0)
    assert m.sent == 3
    assert m.rtt_min == pytest.approx(12 * MS)
    assert [s.at for s in window.samples()] == [2, 3, 4]


def test_age_eviction_drops_samples_older_than_max_age() -> None:
    window = Window(100, max_age_s=10.0)
    for at in range(21):
        window.add(fail(at) if at < 10 else ok(at, 5))
    m = window.measurement(PATH, ProbeKind.TCP, 20.0)
    assert m.sent == 11  # at 10..20; 0..9 are older than 20 - 10
    assert m.loss == 0.0
    assert m.last_error is None
    assert m.window_s == pytest.approx(10.0)
    later = window.measurement(PATH, ProbeKind.TCP, 100.0)
    assert later.sent == 0
    assert later.rtt_p50 is None


def test_empty_and_all_failed_windows() -> None:
    empty = Window(5).measurement(PATH, ProbeKind.TCP, 1.0)
    assert (empty.sent, empty.received, empty.loss) == (0, 0, 0.0)
    assert empty.rtt_p50 is None and empty.ewma_rtt is None
    assert (empty.jitter_s, empty.mean_abs_diff_s, empty.window_s) == (0.0, 0.0, 0.0)
    assert empty.last_error is None and dict(empty.errors) == {}

    dead = measure([fail(1, "refused", "a"), fail(2, "timeout", "b")])
    assert dead.loss == 1.0
    assert dead.rtt_min is None and dead.rtt_mean is None
    assert dead.last_error == ProbeError("timeout", "b")


def test_last_error_survives_a_later_success_while_in_the_window() -> None:
    m = measure([fail(1, "reset", "x"), ok(2, 10)])
    assert m.last_error == ProbeError("reset", "x")


def test_mean_of_equal_values_is_exactly_that_value() -> None:
    m = measure([ok(i, 0.1 / MS) for i in range(7)])
    assert m.rtt_mean == m.rtt_min == m.rtt_max


def test_invalid_window_arguments() -> None:
    with pytest.raises(ValueError, match="max_samples"):
        Window(0)
    with pytest.raises(ValueError, match="max_age_s"):
        Window(5, max_age_s=0)


outcomes = st.lists(
    st.one_of(st.none(), st.floats(min_value=0.0, max_value=10.0, allow_nan=False)),
    min_size=0,
    max_size=60,
)


@given(outcomes, st.integers(min_value=1, max_value=40))
def test_invariants_hold_for_any_samples(rtts: list[float | None], size: int) -> None:
    window = Window(size)
    for i, rtt in enumerate(rtts):
        window.add(fail(i) if rtt is None else Sample(PATH, ProbeKind.TCP, i, True, rtt))
    m = window.measurement(PATH, ProbeKind.TCP, float(len(rtts)))
    assert 0.0 <= m.loss <= 1.0
    assert m.sent == min(len(rtts), size)
    assert 0 <= m.received <= m.sent
    assert m.jitter_s >= 0.0 and m.mean_abs_diff_s >= 0.0
    if m.received:
        assert m.rtt_min is not None and m.rtt_max is not None and m.rtt_mean is not None
        assert m.rtt_p50 is not None and m.rtt_p95 is not None and m.rtt_p99 is not None
        assert m.ewma_rtt is not None
        assert m.rtt_min <= m.rtt_p50 <= m.rtt_p95 <= m.rtt_p99 <= m.rtt_max
        assert m.rtt_min <= m.rtt_mean <= m.rtt_max
        assert m.rtt_min - 1e-12 <= m.ewma_rtt <= m.rtt_max + 1e-12
        assert m.jitter_s <= m.rtt_max - m.rtt_min + 1e-12
    else:
        assert m.rtt_p50 is None and m.rtt_mean is None
