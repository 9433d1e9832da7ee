"""Prometheus metrics of a probe agent, per path (node, link, target, kind).

Counters come from every Sample (probes sent, errors by reason); gauges from every
Measurement (rtt quantiles, mean, loss, jitter), so ``/metrics`` shows the window the
steering engine sees. Paths that go away on a reload are removed with :meth:`forget`.
"""

from __future__ import annotations

from collections.abc import Iterable

from prometheus_client import REGISTRY, CollectorRegistry, Counter, Gauge

from probes.measurement import Measurement, PathKey, Sample

_PATH = ("node", "link", "target", "kind")
_QUANTILES = (("0", "rtt_min"), ("0.5", "rtt_p50"), ("0.95", "rtt_p95"), ("0.99", "rtt_p99"),
              ("1", "rtt_max"))


class ProbeMetrics:
    """The agent's metrics on ``registry`` (one instance per registry)."""

    def __init__(self, registry: CollectorRegistry = REGISTRY) -> None:
        self.sent = Counter("edgesteer_probes_sent", "Probes sent", _PATH, registry=registry)
        self.errors = Counter("edgesteer_probe_errors", "Failed probes by reason",
                              (*_PATH, "reason"), registry=registry)
        self.rtt = Gauge("edgesteer_path_rtt_seconds",
                         "Round-trip time over the window (quantile 0 = min, 1 = max)",
                         (*_PATH, "quantile"), registry=registry)
        self.rtt_mean = Gauge("edgesteer_path_rtt_mean_seconds", "Mean rtt over the window",
                              _PATH, registry=registry)
        self.loss = Gauge("edgesteer_path_loss_ratio", "Loss ratio over the window (0..1)",
                          _PATH, registry=registry)
        self.jitter = Gauge("edgesteer_path_jitter_seconds",
                            "RFC 3550 jitter over the window", _PATH, registry=registry)
        self.samples = Gauge("edgesteer_path_window_samples", "Samples in the window",
                             _PATH, registry=registry)
        self._kinds: dict[PathKey, str] = {}
        self._reasons: dict[PathKey, set[str]] = {}

    def on_sample(self, s: Sample) -> None:
        labels = _labels(s.path, str(s.kind))
        self._kinds[s.path] = str(s.kind)
        self.sent.labels(*labels).inc()
        if s.error is not None:
            self.errors.labels(*labels, s.error.kind).inc()
            self._reasons.setdefault(s.path, set()).add(s.error.kind)

    def on_measurement(self, m: Measurement) -> None:
        labels = _labels(m.path, str(m.kind))
        self._kinds[m.path] = str(m.kind)
        for q, field in _QUANTILES:
            value = getattr(m, field)
            self.rtt.labels(*labels, q).set(float("nan") if value is None else value)
        self.rtt_mean.labels(*labels).set(float("nan") if m.rtt_mean is None else m.rtt_mean)
        self.loss.labels(*labels).set(m.loss)
        self.jitter.labels(*labels).set(m.jitter_s)
        self.samples.labels(*labels).set(m.sent)

    def forget(self, keep: Iterable[PathKey]) -> None:
        """Drop the series of every path not in ``keep``."""
        wanted = set(keep)
        for path in [p for p in self._kinds if p not in wanted]:
            labels = _labels(path, self._kinds.pop(path))
            for metric in (self.sent, self.rtt_mean, self.loss, self.jitter, self.samples):
                metric.remove(*labels)
            for q, _ in _QUANTILES:
                self.rtt.remove(*labels, q)
            for reason in self._reasons.pop(path, set()):
                self.errors.remove(*labels, reason)


def _labels(path: PathKey, kind: str) -> tuple[str, str, str, str]:
    return (path.node, path.link, path.target, kind)
