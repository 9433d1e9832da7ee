"""The per-path health state machine: pure functions of (previous state, measurement).

``classify`` grades one measurement against a link's bands (good / degraded / bad);
``step`` moves a path's state on that grade; ``stale`` turns a silent path UNKNOWN. Times
come from the measurements (``m.at``) and the caller (``now``), never from the clock, so
every sequence is testable without sleeping.

States and moves (``rise``/``fall`` from HealthSettings):

* cold start (no previous state): good -> UP, degraded -> DEGRADED straight away, so a
  node starting up does not start with its links down; bad -> FALLING (it keeps serving,
  as UNKNOWN did) and DOWN only after ``fall`` consecutive bad, so one bad first window
  never takes a link out.
* UP -> FALLING on the first bad; FALLING -> DOWN after ``fall`` consecutive bad; FALLING
  returns to the settled state it fell from (UP or DEGRADED) on the first non-bad.
* DOWN -> RISING on a good (or degraded) measurement, but only once ``hold_down_s`` has
  passed since entering DOWN; RISING -> UP after ``rise`` consecutive good (DEGRADED when
  the last of them was degraded); any bad while RISING -> DOWN, and the hold-down restarts.
* UP -> DEGRADED after ``fall`` consecutive degraded; DEGRADED -> UP after ``rise``
  consecutive good; a bad while DEGRADED -> FALLING.
* a path without data for ``stale_after_s`` -> UNKNOWN. When data resumes, a path that was
  DOWN or RISING goes through RISING again (no hold-down: it has been out at least
  ``stale_after_s``); any other path resumes like a cold start.

Hysteresis: a band is entered at its bound and left only below bound x ``recover_ratio``.
The down band uses the exit bound while the path is DOWN or RISING; the degraded band
while it is DEGRADED, DOWN or RISING (a link coming back from down must be clean to be UP).

Evidence (why one spike never flips a decision): the agent publishes one Measurement per
probe over a *sliding* window, so one lost probe or one slow rtt stays in ``window``
consecutive measurements, and ``fall`` would count the same sample ``fall`` times. With a
10-sample window one lost probe is 10 % loss and the nearest-rank p95 is the max, i.e. one
sample. So a figure may condemn a window against an *enter* bound only when at least
``MIN_EVIDENCE`` distinct samples in the window are over it:

* loss: the lost samples, ``sent - received``;
* rtt p95: the samples known to be at or over the bound from the order statistics the
  window reports (nearest rank: a p-th percentile of n rtts has ``n - ceil(p n) + 1``
  samples at or above it). With fewer than 20 samples the p95 rests on one sample, so in
  practice the band is then judged on the p50 (half the window); use ``window >= 20`` for a
  p95 that can trigger on its own;
* jitter: one excursion (a single slow sample, or one contiguous slow stretch, and back)
  adds at most 2 x (max - min) to the total variation sum |D| of the window's rtts; the
  jitter figure counts only when the total variation exceeds that, i.e. when more than
  one excursion is behind it (a level shift is the rtt band's business, not jitter's).

Exit bounds (keeping a DOWN or DEGRADED path where it is) need no such evidence: taking a
link out needs evidence, bringing it back needs a clean window.

Speed (issue 4: sustained 20 % loss in under 3 s at 200 ms probing): the rules above count
samples, so the time to a verdict is the time to gather them. The agent probes a path in
doubt faster (its window holds both answered and lost probes: probes/agent.py; FALLING and
RISING: edge.health.cadence), at interval / ``fast_probe_factor``, and its window then
spans ``window`` target intervals rather than ``window`` samples (probes/window.py), so
two losses *sent* within that span count together even though each lost probe enters the
window only at its timeout, behind the faster probes sent after it. At the target's own
cadence that window is the count window, so nothing here changes meaning. Doubt starts
as soon as a probe is overdue (probes.cadence.overdue_after), before its timeout confirms
the loss. Random 20 % loss still has a tail no two-loss rule can remove: the first lost
probe may simply come late (no loss in the first 12 probes: 7 %), which bounds even an
oracle to about 92 % of runs under 3 s with 0.4 s timeouts (docs/benchmarks.md: the
trade-off against false DOWNs on a lightly lossy link, and the default chosen).

Warm-up: a window holding fewer than ``warmup_samples(hs)`` = min(window, WARMUP_SAMPLES)
samples gives no verdict (grade WARMING): the path keeps its state (UNKNOWN at a cold
start) and only its figures are refreshed, so nothing is judged on one or two probes.
"""

from __future__ import annotations

import enum
import math
from collections.abc import Callable
from dataclasses import dataclass, replace

from edge.config.schema import Band, HealthSettings, Thresholds
from edge.health.state import HealthState, PathHealth, Quality
from probes.measurement import Measurement, PathKey

S = HealthState

MIN_EVIDENCE = 2  # distinct samples over an enter bound before a figure condemns a window
WARMUP_SAMPLES = 5  # no verdict on a window holding fewer samples (capped at health.window)


def warmup_samples(hs: HealthSettings) -> int:
    return max(1, min(hs.window, WARMUP_SAMPLES))


class Grade(enum.StrEnum):
    GOOD = "good"
    DEGRADED = "degraded"
    BAD = "bad"
    WARMING = "warming"  # too few samples for a verdict


@dataclass(frozen=True, slots=True)
class Verdict:
    """The grade of one measurement and why, naming the figure and the bound."""

    grade: Grade
    reason: str


@dataclass(frozen=True, slots=True)
class Transition:
    """A path changed state at ``at`` (the measurement's time, or the staleness check's)."""

    path: PathKey
    old: HealthState
    new: HealthState
    at: float
    reason: str

    def __str__(self) -> str:
        return f"{self.path}: {self.old} -> {self.new}: {self.reason}"


# --- classify -------------------------------------------------------------------------

_DOWN_HYSTERESIS = frozenset({S.DOWN, S.RISING})
_DEGRADED_HYSTERESIS = frozenset({S.DEGRADED, S.DOWN, S.RISING})


@dataclass(frozen=True, slots=True)
class _Figure:
    label: str
    value: float | None  # in the band's unit (ratio or ms)
    band_key: str
    percent: bool
    support: Callable[[float], int] | None = None  # samples at or over a bound; None: n/a

    def show(self, x: float, *, bound: bool) -> str:
        if self.percent:
            return f"{x * 100:.1f}%"
        return f"{x:g} ms" if bound else f"{x:.1f} ms"


def _at_or_above(n: int, p: float) -> int:
    """Samples at or above the nearest-rank p-th percentile of ``n`` values."""
    return n - max(1, math.ceil(p / 100.0 * n)) + 1


def rtt_support(m: Measurement, bound_ms: float) -> int:
    """How many rtts of ``m``'s window are known to be at or over ``bound_ms``."""
    n = m.received
    known = 0
    for p, value in ((50.0, m.rtt_p50), (95.0, m.rtt_p95), (99.0, m.rtt_p99),
                     (100.0, m.rtt_max)):
        if value is not None and value * 1000.0 >= bound_ms:
            known = max(known, _at_or_above(n, p))
    return known


def jitter_support(m: Measurement) -> int:
    """1 when the window's rtt variation is at most one excursion's worth, else 2."""
    if m.rtt_max is None or m.rtt_min is None or m.received < 2:
        return 0
    total = m.mean_abs_diff_s * (m.received - 1)
    one_excursion = 2.0 * (m.rtt_max - m.rtt_min)
    return 2 if total > one_excursion * (1.0 + 1e-9) + 1e-12 else 1


def _figures(m: Measurement) -> tuple[_Figure, ...]:
    p95 = None if m.rtt_p95 is None else m.rtt_p95 * 1000.0
    lost = m.sent - m.received
    return (
        _Figure("loss", m.loss, "loss", True, lambda _bound: lost),
        _Figure("rtt p95", p95, "rtt_p95_ms", False, lambda bound: rtt_support(m, bound)),
        _Figure("jitter", m.jitter_s * 1000.0, "jitter_ms", False,
                lambda _bound: jitter_support(m)),
    )


def _exceeded(figures: tuple[_Figure, ...], band: Band, name: str,
              ratio: float | None, thin: list[str]) -> list[str]:
    """Descriptions of the figures at or over ``band`` (its exit bound when ``ratio``).

    Against an enter bound a figure counts only with ``MIN_EVIDENCE`` samples behind it;
    the others are described in ``thin``.
    """
    out = []
    for f in figures:
        enter: float | None = getattr(band, f.band_key)
        if enter is None or f.value is None:
            continue
        bound = enter if ratio is None else enter * ratio
        if f.value >= bound:
            text = (f"{f.label} {f.show(f.value, bound=False)} >= "
                    f"{f.show(bound, bound=True)}")
            if ratio is None and f.support is not None:
                support = f.support(bound)
                if support < MIN_EVIDENCE:
                    thin.append(f"{text} ({name}) on {support} sample(s), needs "
                                f"{MIN_EVIDENCE}")
                    continue
            where = (f"({name})" if ratio is None else
                     f"({name}, exit bound {f.show(enter, bound=True)} x {ratio:g})")
            out.append(f"{text} {where}")
    return out


def classify(m: Measurement, th: Thresholds, current: HealthState, *,
             warmup: int = 1) -> Verdict:
    """Grade ``m`` against ``th``; ``current`` decides which bounds apply (hysteresis).

    A window of fewer than ``warmup`` samples is graded WARMING (no verdict).
    """
    if m.sent < warmup:
        return Verdict(Grade.WARMING, f"warming up: {m.sent}/{warmup} samples")
    if m.received == 0:
        detail = f"{m.sent} sent"
        if m.last_error is not None:
            detail += f", last error {m.last_error}"
        return Verdict(Grade.BAD, f"no replies ({detail})")
    figures = _figures(m)
    ratio = th.recover_ratio
    thin: list[str] = []
    bad = _exceeded(figures, th.down, "down", ratio if current in _DOWN_HYSTERESIS else None,
                    thin)
    if bad:
        return Verdict(Grade.BAD, "; ".join(bad))
    degraded = _exceeded(figures, th.degraded, "degraded",
                         ratio if current in _DEGRADED_HYSTERESIS else None, thin)
    if degraded:
        return Verdict(Grade.DEGRADED, "; ".join(degraded))
    shown = ", ".join(f"{f.label} {f.show(f.value, bound=False)}"
                      for f in figures if f.value is not None)
    if thin:
        shown += " (not enough evidence: " + "; ".join(thin) + ")"
    return Verdict(Grade.GOOD, f"ok: {shown}")


# --- step -----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Ctx:
    path: PathKey
    at: float
    verdict: Verdict
    quality: Quality
    hs: HealthSettings


def _make(c: _Ctx, state: HealthState, since: float, reason: str, *, good: int = 0,
          bad: int = 0, settled: HealthState | None) -> PathHealth:
    return PathHealth(path=c.path, state=state, since=since, reason=reason,
                      quality=c.quality, good_streak=good, bad_streak=bad, settled=settled)


def _arrived(c: _Ctx, prefix: str = "", good: int = 1) -> PathHealth:
    """Land in UP or DEGRADED according to the current (non-bad) verdict.

    ``good_streak`` counts consecutive good windows in UP, and rise progress in DEGRADED.
    """
    if c.verdict.grade is Grade.GOOD:
        return _make(c, S.UP, c.at, prefix + c.verdict.reason, good=good, settled=S.UP)
    return _make(c, S.DEGRADED, c.at, prefix + c.verdict.reason, settled=S.DEGRADED)


def _falling(c: _Ctx, settled: HealthState | None, bad: int, since: float) -> PathHealth:
    reason = f"bad {bad}/{c.hs.fall}: {c.verdict.reason}"
    if bad >= c.hs.fall:
        return _make(c, S.DOWN, c.at, reason, bad=bad, settled=S.DOWN)
    return _make(c, S.FALLING, since, reason, bad=bad, settled=settled)


def _rising(c: _Ctx, good: int, since: float) -> PathHealth:
    reason = f"good {good}/{c.hs.rise}: {c.verdict.reason}"
    if good >= c.hs.rise:
        return _arrived(c, f"good {good}/{c.hs.rise}: ", good)
    return _make(c, S.RISING, since, reason, good=good, settled=S.DOWN)


def _from_settled(c: _Ctx, state: HealthState, since: float, good: int,
                  bad: int) -> PathHealth:
    """A non-bad verdict in UP or DEGRADED (streaks as given)."""
    grade = c.verdict.grade
    if state is S.UP:
        if grade is Grade.GOOD:
            return _make(c, S.UP, since, c.verdict.reason, good=good + 1, settled=S.UP)
        n = bad + 1
        reason = f"degraded {n}/{c.hs.fall}: {c.verdict.reason}"
        if n >= c.hs.fall:
            return _make(c, S.DEGRADED, c.at, reason, settled=S.DEGRADED)
        return _make(c, S.UP, since, reason, bad=n, settled=S.UP)
    # DEGRADED
    if grade is Grade.DEGRADED:
        return _make(c, S.DEGRADED, since, c.verdict.reason, settled=S.DEGRADED)
    n = good + 1
    reason = f"good {n}/{c.hs.rise}: {c.verdict.reason}"
    if n >= c.hs.rise:
        return _make(c, S.UP, c.at, reason, good=n, settled=S.UP)
    return _make(c, S.DEGRADED, since, reason, good=n, settled=S.DEGRADED)


def _landing(grade: Grade) -> HealthState:
    return S.UP if grade is Grade.GOOD else S.DEGRADED


def _next(prev: PathHealth, c: _Ctx) -> PathHealth:
    state, grade, bad_v = prev.state, c.verdict.grade, c.verdict.grade is Grade.BAD
    if state is S.UNKNOWN:
        if prev.settled is S.DOWN:  # resuming a path that was out of service
            if bad_v:
                return _make(c, S.DOWN, c.at, c.verdict.reason, bad=1, settled=S.DOWN)
            return _rising(c, 1, c.at)
        return _falling(c, None, 1, c.at) if bad_v else _arrived(c)
    if state in (S.UP, S.DEGRADED):
        if bad_v:
            return _falling(c, state, 1, c.at)
        return _from_settled(c, state, prev.since, prev.good_streak, prev.bad_streak)
    if state is S.FALLING:
        if bad_v:
            return _falling(c, prev.settled, prev.bad_streak + 1, prev.since)
        base = prev.settled if prev.settled in (S.UP, S.DEGRADED) else _landing(grade)
        return _from_settled(c, base, c.at, 0, 0)
    if state is S.DOWN:
        if bad_v:
            return _make(c, S.DOWN, prev.since, c.verdict.reason, bad=prev.bad_streak + 1,
                         settled=S.DOWN)
        left = c.hs.hold_down_s - (c.at - prev.since)
        if left > 0:
            return _make(c, S.DOWN, prev.since,
                         f"hold-down {left:.1f} s left: {c.verdict.reason}", settled=S.DOWN)
        return _rising(c, 1, c.at)
    # RISING
    if bad_v:
        return _make(c, S.DOWN, c.at, f"bad while rising: {c.verdict.reason}", bad=1,
                     settled=S.DOWN)
    return _rising(c, prev.good_streak + 1, prev.since)


def _band_state(prev: PathHealth | None) -> HealthState:
    """The state whose bounds apply: FALLING/UNKNOWN use the settled state's."""
    if prev is None:
        return S.UNKNOWN
    if prev.state in (S.FALLING, S.UNKNOWN):
        return prev.settled or prev.state
    return prev.state


def step(prev: PathHealth | None, m: Measurement, th: Thresholds,
         hs: HealthSettings) -> tuple[PathHealth, Transition | None]:
    """Apply one measurement. Returns the new path health and the transition, if any."""
    verdict = classify(m, th, _band_state(prev), warmup=warmup_samples(hs))
    quality = Quality(rtt_p50=m.rtt_p50, rtt_p95=m.rtt_p95, loss=m.loss,
                      jitter_s=m.jitter_s, at=m.at)
    c = _Ctx(path=m.path, at=m.at, verdict=verdict, quality=quality, hs=hs)
    if prev is None:
        prev = PathHealth(path=m.path, state=S.UNKNOWN, since=m.at, reason="no data yet")
    if verdict.grade is Grade.WARMING:  # no verdict: keep the state, refresh the figures
        reason = verdict.reason if prev.state is S.UNKNOWN else prev.reason
        return replace(prev, quality=quality, reason=reason), None
    new = _next(prev, c)
    if new.state is prev.state:
        return new, None
    return new, Transition(m.path, prev.state, new.state, m.at, new.reason)


def stale(prev: PathHealth, now: float,
          hs: HealthSettings) -> tuple[PathHealth, Transition | None]:
    """UNKNOWN when ``prev`` has had no data for ``stale_after_s``; otherwise unchanged."""
    if prev.state is S.UNKNOWN:
        return prev, None
    age = now - prev.quality.at
    if age < hs.stale_after_s:
        return prev, None
    if prev.state in (S.DOWN, S.RISING):
        settled: HealthState | None = S.DOWN
    elif prev.state is S.FALLING:
        settled = prev.settled
    else:
        settled = prev.state
    reason = f"stale: no data for {age:.1f} s (last state {prev.state})"
    new = PathHealth(path=prev.path, state=S.UNKNOWN, since=now, reason=reason,
                     quality=prev.quality, settled=settled)
    return new, Transition(prev.path, prev.state, S.UNKNOWN, now, reason)
