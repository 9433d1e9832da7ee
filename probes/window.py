"""Sliding window of probe samples for one path, folded into a Measurement.

The window is bounded by count (``max_samples``) and optionally by age (``max_age_s``,
compared with ``Sample.at`` against the ``now`` given to :meth:`Window.measurement`).

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
    """The newest ``max_samples`` samples of one path, none older than ``max_age_s``."""

    __slots__ = ("_max_age_s", "_samples")

    def __init__(self, max_samples: int, max_age_s: float | None = None) -> None:
        if max_samples < 1:
            raise ValueError(f"max_samples must be >= 1, got {max_samples}")
        if max_age_s is not None and not max_age_s > 0:
            raise ValueError(f"max_age_s must be > 0 or None, got {max_age_s}")
        self._samples: deque[Sample] = deque(maxlen=max_samples)
        self._max_age_s = max_age_s

    @property
    def max_samples(self) -> int:
        maxlen = self._samples.maxlen
        assert maxlen is not None
        return maxlen

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
        if self._max_age_s is None:
            return
        horizon = now - self._max_age_s
        samples = self._samples
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
