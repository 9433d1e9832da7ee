"""Prometheus metrics of the built-in DNS server, read from its counters at scrape time.

The query path only bumps plain ``Counter`` entries (a few tens of nanoseconds); this
collector turns them into metric families when /metrics is scraped. With several worker
processes each sends its ``snapshot`` to the parent, which sums them here.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any

from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector

from dns_backends.builtin.server import LATENCY_BUCKETS

Snapshot = Mapping[str, Any]


class DnsCollector(Collector):
    """Sums the snapshots ``source()`` returns (one per server process)."""

    def __init__(self, source: Callable[[], Sequence[Snapshot]]) -> None:
        self._source = source

    def collect(self) -> Iterator[Metric]:
        snaps = list(self._source())
        families = [
            ("edgesteer_dns_responses", "DNS queries answered (or dropped), by rcode", "rcode",
             "rcode"),
            ("edgesteer_dns_queries_by_qtype", "DNS queries by question type", "qtype",
             "qtype"),
            ("edgesteer_dns_queries_by_segment",
             "DNS queries whose answer depended on the client segment, by segment", "segment",
             "segment"),
            ("edgesteer_dns_events", "DNS server events (fast path answers, truncations, "
             "errors, TCP connections refused, RRL drops and slips)", "events", "event"),
        ]
        for name, doc, key, label in families:
            family = CounterMetricFamily(name, doc, labels=[label])
            for value, count in sorted(_sum(s.get(key, {}) for s in snaps).items()):
                family.add_metric([value], count)
            yield family
        counts = [0] * (len(LATENCY_BUCKETS) + 1)
        total = 0.0
        for s in snaps:
            for i, c in enumerate(s.get("latency", ())):
                counts[i] += c
            total += float(s.get("latency_sum", 0.0))
        buckets: list[tuple[str, float]] = []
        running = 0
        for bound, c in zip([*(repr(b) for b in LATENCY_BUCKETS), "+Inf"], counts,
                            strict=True):
            running += c
            buckets.append((bound, running))
        yield HistogramMetricFamily("edgesteer_dns_answer_seconds",
                                    "Time to build one DNS answer (excluding socket I/O)",
                                    buckets=buckets, sum_value=total)
        if snaps:
            yield GaugeMetricFamily("edgesteer_dns_plan_version",
                                    "Plan version served (the oldest across workers)",
                                    value=min(int(s.get("plan_version", 0)) for s in snaps))
            yield GaugeMetricFamily("edgesteer_dns_soa_serial", "SOA serial served",
                                    value=min(int(s.get("serial", 0)) for s in snaps))
            yield GaugeMetricFamily("edgesteer_dns_tcp_connections", "Open TCP connections",
                                    value=sum(int(s.get("tcp_connections", 0)) for s in snaps))
            yield GaugeMetricFamily("edgesteer_dns_workers", "Server processes reporting",
                                    value=len(snaps))


def _sum(maps: Iterator[Mapping[str, int]]) -> dict[str, int]:
    out: dict[str, int] = {}
    for m in maps:
        for k, v in m.items():
            out[k] = out.get(k, 0) + int(v)
    return out
