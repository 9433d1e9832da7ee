"""The per-path state machine, driven by sequences of measurements with advancing ``at``."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from edge.config.schema import HealthSettings, Thresholds
from edge.health.machine import Grade, Transition, classify, stale, step
from edge.health.state import HealthState, PathHealth
from probes.measurement import Measurement, ProbeError
from tests.builders import THRESHOLDS, health, measurement

S = HealthState

# Shorthands for one window's figures (bands: degraded 2% / 150 ms / 20 ms,
# down 10% / 300 ms / 50 ms, recover_ratio 0.8).
G: dict[str, float] = {}                 # clean
B = {"loss": 0.15}                      # bad on loss
BJ = {"jitter_ms": 62.1}                # bad on jitter only
BR = {"p95_ms": 320.0}                  # bad on rtt p95 only
NR = {"received": 0}                    # no replies at all
# Loss figures below 10 % use 100-sample windows so that enough lost samples back them
# (a figure condemns a window only with MIN_EVIDENCE samples over the bound).
D = {"loss": 0.05, "sent": 100}         # degraded on loss
DJ = {"jitter_ms": 30.0}                # degraded on jitter only
GAP_DOWN = {"loss": 0.09, "sent": 100}             # between down exit (8%) and enter (10%)
OVER_DOWN = {"loss": 0.11, "sent": 100}             # just over the down enter bound
GAP_DEG = {"loss": 0.018, "sent": 100}              # between degraded exit (1.6%) and enter (2%)


def run(seq: Sequence[dict[str, float]], hs: HealthSettings | None = None, *,
        th: Thresholds = THRESHOLDS, start: float = 100.0, dt: float = 1.0,
        prev: PathHealth | None = None) -> list[PathHealth]:
    """Feed one measurement per ``dt`` seconds; the path health after each."""
    hs = hs or health(hold_down_s=0.0)
    out = []
    for i, figures in enumerate(seq):
        m = measurement(start + i * dt, **figures)  # type: ignore[arg-type]
        prev, _ = step(prev, m, th, hs)
        out.append(prev)
    return out


def states(seq: Sequence[dict[str, float]], hs: HealthSettings | None = None,
           **kw: object) -> list[HealthState]:
    return [p.state for p in run(seq, hs, **kw)]  # type: ignore[arg-type]


U, F, DN, R, DG = S.UP, S.FALLING, S.DOWN, S.RISING, S.DEGRADED

SEQUENCES = [
    # name, sequence, expected states (rise=3, fall=3, no hold-down)
    ("cold start good is up at once", [G], [U]),
    ("cold start bad falls, down after fall", [B, B, B], [F, F, DN]),
    ("cold start degraded is degraded", [D], [DG]),
    ("one spike never flips", [G, B, G, G, B, G], [U, F, U, U, F, U]),
    ("two spikes never flip", [G, B, B, G], [U, F, F, U]),
    ("fall count", [G, B, B, B, B], [U, F, F, DN, DN]),
    ("no replies count as bad", [G, NR, NR, NR], [U, F, F, DN]),
    ("rise count", [G, B, B, B, G, G, G], [U, F, F, DN, R, R, U]),
    ("bad while rising goes back down", [G, B, B, B, G, G, B, G, G, G],
     [U, F, F, DN, R, R, DN, R, R, U]),
    ("jitter alone takes a link down", [G, BJ, BJ, BJ], [U, F, F, DN]),
    ("rtt p95 alone takes a link down", [G, BR, BR, BR], [U, F, F, DN]),
    ("loss alone takes a link down", [G, B, B, B], [U, F, F, DN]),
    ("degraded after fall consecutive", [G, D, D, D], [U, U, U, DG]),
    ("one degraded window never degrades", [G, D, G, D, D, G], [U, U, U, U, U, U]),
    ("jitter alone degrades", [G, DJ, DJ, DJ], [U, U, U, DG]),
    ("degraded recovers after rise good", [D, G, G, G], [DG, DG, DG, U]),
    ("degraded recovery is reset by a degraded window", [D, G, G, D, G, G, G],
     [DG, DG, DG, DG, DG, DG, U]),
    ("a spike while degraded returns to degraded", [D, B, G, G, G], [DG, F, DG, DG, U]),
    ("degraded to down", [D, B, B, B], [DG, F, F, DN]),
    ("rising on degraded windows lands degraded", [B, B, B, D, D, D], [F, F, DN, R, R, DG]),
    # hysteresis: a down link with loss oscillating between exit (8%) and enter (10%)
    ("hysteresis keeps a down link down", [B, B, B, GAP_DOWN, OVER_DOWN, GAP_DOWN, GAP_DOWN,
                                            GAP_DOWN], [F, F, DN, DN, DN, DN, DN, DN]),
    ("hysteresis keeps a degraded link degraded", [D, GAP_DEG, D, GAP_DEG, GAP_DEG, GAP_DEG],
     [DG, DG, DG, DG, DG, DG]),
    ("below the enter bound an up link stays up", [G, GAP_DEG, GAP_DEG, GAP_DEG],
     [U, U, U, U]),
    ("a link back from down must be clean to be up", [B, B, B, GAP_DEG, GAP_DEG, GAP_DEG],
     [F, F, DN, R, R, DG]),
]


@pytest.mark.parametrize(("seq", "expected"), [(s, e) for _, s, e in SEQUENCES],
                         ids=[n for n, _, _ in SEQUENCES])
def test_sequences(seq: list[dict[str, float]], expected: list[HealthState]) -> None:
    assert states(seq) == expected


def test_fall_and_rise_of_one() -> None:
    hs = health(rise=1, fall=1, hold_down_s=0.0)
    assert states([G, B, G, D, G], hs) == [U, DN, U, DG, U]


def test_without_hysteresis_the_oscillation_would_flap() -> None:
    """Control for the hysteresis cases: with recover_ratio 1 the same input does flap."""
    no_gap = replace(THRESHOLDS, recover_ratio=1.0)
    got = states([B, B, B, GAP_DOWN, OVER_DOWN, GAP_DOWN, GAP_DOWN, GAP_DOWN], th=no_gap)
    assert got == [F, F, DN, R, DN, R, R, DG]


def test_hold_down_respected() -> None:
    hs = health(hold_down_s=10.0)
    seq = [B, B, B] + [G] * 14   # DOWN at t=102; hold-down over at t=112
    got = run(seq, hs, start=100.0)
    assert got[2].state is S.DOWN and got[2].since == 102.0
    for p in got[3:12]:           # t = 103 .. 111: good windows do not count
        assert p.state is S.DOWN
        assert p.reason.startswith("hold-down ")
    assert [p.state for p in got[12:]] == [R, R, U, U, U]
    assert got[12].quality.at == 112.0


def test_hold_down_restarts_when_rising_fails() -> None:
    hs = health(hold_down_s=5.0)
    seq = [B, B, B, G, G, G, G, G, G, B] + [G] * 6   # down t=2, rising t=7, bad t=9
    got = [p.state for p in run(seq, hs, start=0.0)]
    assert got[7] is R and got[9] is DN
    assert got[10:14] == [DN, DN, DN, DN]            # t=10..13 within 5 s of t=9
    assert got[14:] == [R, R]


def test_transitions_carry_old_new_at_and_reason() -> None:
    hs = health(hold_down_s=0.0)
    prev = None
    seen: list[Transition] = []
    for i, fig in enumerate([G, G, B, B, B]):
        prev, tr = step(prev, measurement(50.0 + i, **fig), THRESHOLDS, hs)  # type: ignore[arg-type]
        if tr is not None:
            seen.append(tr)
    assert [(t.old, t.new, t.at) for t in seen] == [
        (S.UNKNOWN, S.UP, 50.0), (S.UP, S.FALLING, 52.0), (S.FALLING, S.DOWN, 54.0)]
    assert seen[1].reason == "bad 1/3: loss 15.0% >= 10.0% (down)"
    assert seen[2].reason == "bad 3/3: loss 15.0% >= 10.0% (down)"
    assert prev is not None and prev.since == 54.0 and prev.bad_streak == 3


def test_no_transition_when_state_holds() -> None:
    hs = health()
    prev, _ = step(None, measurement(1.0), THRESHOLDS, hs)
    nxt, tr = step(prev, measurement(2.0), THRESHOLDS, hs)
    assert tr is None and nxt.state is S.UP and nxt.good_streak == 2


@pytest.mark.parametrize(("figures", "current", "grade", "reason"), [
    (B, S.UP, Grade.BAD, "loss 15.0% >= 10.0% (down)"),
    (BJ, S.UP, Grade.BAD, "jitter 62.1 ms >= 50 ms (down)"),
    (BR, S.UP, Grade.BAD, "rtt p95 320.0 ms >= 300 ms (down)"),
    (D, S.UP, Grade.DEGRADED, "loss 5.0% >= 2.0% (degraded)"),
    (DJ, S.UP, Grade.DEGRADED, "jitter 30.0 ms >= 20 ms (degraded)"),
    (GAP_DOWN, S.DOWN, Grade.BAD, "loss 9.0% >= 8.0% (down, exit bound 10.0% x 0.8)"),
    (GAP_DOWN, S.UP, Grade.DEGRADED, "loss 9.0% >= 2.0% (degraded)"),
    (GAP_DEG, S.DEGRADED, Grade.DEGRADED,
     "loss 1.8% >= 1.6% (degraded, exit bound 2.0% x 0.8)"),
    ({"jitter_ms": 45.0}, S.RISING, Grade.BAD,
     "jitter 45.0 ms >= 40 ms (down, exit bound 50 ms x 0.8)"),
    ({"loss": 0.15, "jitter_ms": 70.0}, S.UP, Grade.BAD,
     "loss 15.0% >= 10.0% (down); jitter 70.0 ms >= 50 ms (down)"),
    (G, S.UP, Grade.GOOD, "ok: loss 0.0%, rtt p95 40.0 ms, jitter 2.0 ms"),
])
def test_classify_names_figure_and_bound(figures: dict[str, float], current: HealthState,
                                         grade: Grade, reason: str) -> None:
    v = classify(measurement(1.0, **figures), THRESHOLDS, current)  # type: ignore[arg-type]
    assert (v.grade, v.reason) == (grade, reason)


def test_classify_no_replies_names_the_error() -> None:
    m = replace(measurement(1.0, received=0), last_error=ProbeError("timeout", "after 1.0 s"))
    v = classify(m, THRESHOLDS, S.UP)
    assert v.grade is Grade.BAD
    assert v.reason == "no replies (10 sent, last error timeout: after 1.0 s)"


def test_unset_bounds_are_ignored() -> None:
    th = replace(THRESHOLDS, down=replace(THRESHOLDS.down, jitter_ms=None),
                 degraded=replace(THRESHOLDS.degraded, jitter_ms=None))
    assert classify(measurement(1.0, jitter_ms=500.0), th, S.UP).grade is Grade.GOOD


def _m_missing_rtt(at: float) -> Measurement:
    return replace(measurement(at), rtt_p95=None)


def test_missing_rtt_is_not_a_breach() -> None:
    assert classify(_m_missing_rtt(1.0), THRESHOLDS, S.UP).grade is Grade.GOOD


# --- staleness -------------------------------------------------------------------------


def test_stale_goes_unknown_with_reason() -> None:
    hs = health(stale_after_s=5.0)
    up = run([G], hs, start=10.0)[-1]
    same, tr = stale(up, 14.9, hs)
    assert same is up and tr is None
    gone, tr = stale(up, 15.0, hs)
    assert gone.state is S.UNKNOWN and gone.since == 15.0
    assert gone.reason == "stale: no data for 5.0 s (last state up)"
    assert tr == Transition(up.path, S.UP, S.UNKNOWN, 15.0, gone.reason)
    again, tr2 = stale(gone, 100.0, hs)
    assert again is gone and tr2 is None


def test_stale_down_path_must_rise_again() -> None:
    hs = health(stale_after_s=5.0, hold_down_s=0.0)
    down = run([B, B, B], hs, start=0.0)[-1]
    unknown, _ = stale(down, 30.0, hs)
    assert unknown.reason == "stale: no data for 28.0 s (last state down)"
    got = run([G, G, G], hs, start=31.0, prev=unknown)
    assert [p.state for p in got] == [R, R, U]


def test_stale_up_path_resumes_like_a_cold_start() -> None:
    hs = health(stale_after_s=5.0)
    unknown, _ = stale(run([G], hs, start=0.0)[-1], 10.0, hs)
    assert [p.state for p in run([G], hs, start=11.0, prev=unknown)] == [U]
    assert [p.state for p in run([B, B, B], hs, start=11.0, prev=unknown)] == [F, F, DN]


def test_stale_rising_path_resumes_through_rising() -> None:
    hs = health(stale_after_s=5.0, hold_down_s=0.0)
    rising = run([B, B, B, G], hs, start=0.0)[-1]
    assert rising.state is S.RISING
    unknown, _ = stale(rising, 20.0, hs)
    assert [p.state for p in run([B, G], hs, start=21.0, prev=unknown)] == [DN, R]


# --- invariants over random sequences ---------------------------------------------------

GRADES = {"G": G, "D": D, "B": B}   # grades that do not depend on hysteresis


@settings(max_examples=300, deadline=None)
@given(seq=st.lists(st.sampled_from("GDB"), min_size=1, max_size=40),
       rise=st.integers(1, 4), fall=st.integers(1, 4),
       hold_down=st.sampled_from([0.0, 2.5, 7.0]))
def test_damping_invariants(seq: list[str], rise: int, fall: int, hold_down: float) -> None:
    hs = health(rise=rise, fall=fall, hold_down_s=hold_down)
    got = run([GRADES[g] for g in seq], hs, start=0.0, dt=1.0)
    prev_state = S.UNKNOWN
    down_since = None
    for i, p in enumerate(got):
        recent = seq[max(0, i - fall + 1):i + 1]
        if p.state is S.DOWN and prev_state not in (S.DOWN, S.RISING):
            # a serving path goes down only after `fall` consecutive bad windows
            assert len(recent) == fall and set(recent) == {"B"}, (seq[:i + 1], p)
        if p.state is S.DOWN and prev_state is not S.DOWN:
            down_since = float(i)
        if prev_state is S.DOWN and p.state is not S.DOWN:
            assert down_since is not None and i - down_since >= hold_down
        if p.state in (S.UP, S.DEGRADED) and prev_state in (S.DOWN, S.RISING):
            back = seq[max(0, i - rise + 1):i + 1]
            assert len(back) == rise and "B" not in back
        if seq[i] == "B":
            assert p.state not in (S.UP, S.DEGRADED, S.RISING)  # a bad window always shows
        if p.state in (S.FALLING, S.UP, S.DEGRADED):
            assert p.settled in (S.UP, S.DEGRADED, None)
        assert p.state is not S.UNKNOWN
        prev_state = p.state
