"""Leaf types telling a probe what to measure (TargetSpec) and how to leave (LinkBinding).

The config loader builds these directly, so the probe stage needs nothing from ``edge``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from probes.measurement import ProbeKind


@dataclass(frozen=True, slots=True)
class TargetSpec:
    """What a probe measures toward. ``links`` empty means: over every link."""

    name: str
    kind: ProbeKind
    host: str
    port: int
    interval_s: float
    timeout_s: float
    links: tuple[str, ...] = ()
    # http
    path: str = "/"
    scheme: Literal["http", "https"] = "http"
    expect_status: tuple[int, ...] = (200,)
    body_match: str | None = None
    # dns
    qname: str = "."
    qtype: str = "SOA"
    transport: Literal["udp", "tcp"] = "udp"
    expect_rcode: str = "NOERROR"
    expect_answer: str | None = None
    # where the target is (a region code, as in segments' ``regions``): the rtt measured
    # toward it over a link is that link's site's latency toward the region (nearest
    # routing blends it in; edge.health.tracker, edge.steering.planner)
    region: str | None = None


@dataclass(frozen=True, slots=True)
class LinkBinding:
    """How probes leave over one link: source address, and on Linux SO_MARK / SO_BINDTODEVICE."""

    link: str
    source: str | None = None
    fwmark: int | None = None
    device: str | None = None
