"""Sliding window of probe samples for one path, folded into a Measurement.

The window is bounded by count (``max_samples``) and optionally by age (``max_age_s``,
compared with ``Sample.at`` against the ``now`` given to :meth:`Window.measurement`).

With ``span_s`` the window is a span of *time* with a floor in count: it holds every sample
sent within ``span_s`` of ``now``, and never fewer than the newest ``max_samples`` (at most
``limit`` in all). The agent uses ``span_s = max_samples x interval``: at the target's own
cadence that is the same ``max_samples`` samples, and when the agent probes faster (a path
in doubt, see probes/agent.py) the extra samples *add* to the evidence instead of pushing
older samples out sooner. This matters because a lost probe enters the window only when
its timeout expires (two intervals by default), after the probes sent behind it: with a
count window, probing 4 x faster meant that two losses sent 3 intervals apart were more
than 10 samples apart by the time the second one was known, and never counted together.
Over a span, two losses count together when they were *sent* within ``span_s``, whatever
the cadence in between; the loss ratio over more samples is a better estimate, not a
looser one (2 losses in 40 samples are 5 %, under a 10 % down band).

Statistics, all over the samples still in the window, in the order they were added:

- ``loss`` = (sent - received) / sent; 0.0 for an empty window (check ``sent``).
- percentiles use the **nearest-rank** method: the p-th percentile of n sorted rtts is the
  ``ceil(p/100 * n)``-th smallest. Every reported percentile is an observed rtt, and
  p50 <= p95 <= p99 <= max always holds. With a 10-sample window p95 and p99 equal the max,
  which is the honest answer for so few samples.
- ``jitter_s`` is the RFC 3550 (section 6.4.1) estimator applied to consecutive *successful*
  rtts (failed probes in between are skipped): ``J += (|D| - J) / 16`` with ``D`` the
  difference of two consecutive rtts, starting from J = 0 at the oldest sample in the window.
- ``mean_abs_diff_s`` is the plain mean of those ``|D|`` (0.0 with fewer than two rtts); it
  reacts faster than the RFC 3550 estimator on small windows.
- ``ewma_rtt`` is an exponentially weighted moving average, ``e = a*x + (1-a)*e`` with
  ``a = EWMA_ALPHA = 0.3``, seeded with the oldest rtt in the window.
- ``last_error`` is the error of the newest failed sample still in the window.
- ``window_s`` is the age of the oldest sample in the window at ``now`` (0.0 when empty).
"""

from __future__ import annotations

import itertools
import math
from collections import Counter, deque
from collections.abc import Sequence
from types import MappingProxyType

from probes.measurement import Measurement, PathKey, ProbeError, ProbeKind, Sample

EWMA_ALPHA = 0.3
_RFC3550_GAIN = 1.0 / 16.0


class Window:
    """The newest ``max_samples`` samples of one path, none older than ``max_age_s``; with
    ``span_s``, also every older one sent within ``span_s`` (at most ``limit`` in all)."""

    __slots__ = ("_max_age_s", "_max_samples", "_samples", "span_s")

    def __init__(self, max_samples: int, max_age_s: float | None = None, *,
                 span_s: float | None = None, limit: int | None = None) -> None:
        if max_samples < 1:
            raise ValueError(f"max_samples must be >= 1, got {max_samples}")
        if max_age_s is not None and not max_age_s > 0:
            raise ValueError(f"max_age_s must be > 0 or None, got {max_age_s}")
        if span_s is not None and not span_s > 0:
            raise ValueError(f"span_s must be > 0 or None, got {span_s}")
        if limit is not None and limit < max_samples:
            raise ValueError(f"limit must be >= max_samples ({max_samples}), got {limit}")
        if span_s is None:
            limit = max_samples
        elif limit is None:
            limit = 8 * max_samples
        self._samples: deque[Sample] = deque(maxlen=limit)
        self._max_samples = max_samples
        self._max_age_s = max_age_s
        self.span_s = span_s  # the agent follows its target's interval with it

    @property
    def max_samples(self) -> int:
        return self._max_samples

    def __len__(self) -> int:
        return len(self._samples)

    def add(self, sample: Sample) -> None:
        self._samples.append(sample)

    def samples(self, now: float | None = None) -> tuple[Sample, ...]:
        """The samples in the window, oldest first (age-evicted against ``now`` if given)."""
        if now is not None:
            self._evict(now)
        return tuple(self._samples)

    def measurement(self, path: PathKey, kind: ProbeKind, now: float) -> Measurement:
        self._evict(now)
        samples = self._samples
        sent = len(samples)
        rtts = [s.rtt_s for s in samples if s.ok and s.rtt_s is not None]
        received = len(rtts)
        errors: Counter[str] = Counter()
        last_error: ProbeError | None = None
        for s in samples:
            if s.error is not None and not s.ok:
                errors[s.error.kind] += 1
                last_error = s.error
        diffs = [abs(b - a) for a, b in itertools.pairwise(rtts)]
        ordered = sorted(rtts)
        return Measurement(
            path=path,
            kind=kind,
            at=now,
            window_s=max(0.0, now - samples[0].at) if samples else 0.0,
            sent=sent,
            received=received,
            loss=(sent - received) / sent if sent else 0.0,
            rtt_min=ordered[0] if ordered else None,
            rtt_p50=percentile(ordered, 50.0),
            rtt_p95=percentile(ordered, 95.0),
            rtt_p99=percentile(ordered, 99.0),
            rtt_max=ordered[-1] if ordered else None,
            rtt_mean=_mean(ordered),
            jitter_s=rfc3550_jitter(diffs),
            mean_abs_diff_s=math.fsum(diffs) / len(diffs) if diffs else 0.0,
            ewma_rtt=ewma(rtts, EWMA_ALPHA),
            last_error=last_error,
            errors=MappingProxyType(dict(errors)),
        )

    def _evict(self, now: float) -> None:
        samples = self._samples
        if self.span_s is not None:  # oldest first, as added; a late one leaves when first
            span_start = now - self.span_s
            while len(samples) > self._max_samples and samples[0].at <= span_start:
                samples.popleft()
        else:  # the count bound, also after span_s was set and cleared
            while len(samples) > self._max_samples:
                samples.popleft()
        if self._max_age_s is None:
            return
        horizon = now - self._max_age_s
        while samples and samples[0].at < horizon:
            samples.popleft()


def percentile(ordered: Sequence[float], p: float) -> float | None:
    """Nearest-rank percentile of an ascending sequence; None when it is empty."""
    if not ordered:
        return None
    rank = max(1, math.ceil(p / 100.0 * len(ordered)))
    return ordered[min(rank, len(ordered)) - 1]


def rfc3550_jitter(abs_diffs: Sequence[float]) -> float:
    """RFC 3550 interarrival jitter fed with ``|D|`` values, starting from 0."""
    jitter = 0.0
    for d in abs_diffs:
        jitter += (d - jitter) * _RFC3550_GAIN
    return jitter


def ewma(values: Sequence[float], alpha: float) -> float | None:
    """EWMA of ``values`` in order, seeded with the first one; None when empty."""
    if not values:
        return None
    acc = values[0]
    for v in values[1:]:
        acc = alpha * v + (1.0 - alpha) * acc
    return acc


def _mean(ordered: Sequence[float]) -> float | None:
    # Clamped: the rounded mean of n equal floats can land one ulp outside [min, max].
    if not ordered:
        return None
    return min(max(math.fsum(ordered) / len(ordered), ordered[0]), ordered[-1])
