"""The parsed configuration: frozen dataclasses, built only by ``edge.config.loader``.

Every default lives in ``edge.config.defaults``; these classes hold validated values only.
Times are seconds unless the name says ``_ms``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Literal

from geo.segment import Line, Segment
from probes.spec import TargetSpec

Target = TargetSpec

QuorumMode = Literal["all", "majority", "any"]


@dataclass(frozen=True, slots=True)
class Location:
    lat: float
    lon: float


@dataclass(frozen=True, slots=True)
class Site:
    name: str
    location: Location | None = None
    region: str | None = None


@dataclass(frozen=True, slots=True)
class Node:
    name: str
    site: str


@dataclass(frozen=True, slots=True)
class Band:
    """A quality band: a link is outside it when any set bound is exceeded."""

    loss: float | None = None
    rtt_p95_ms: float | None = None
    jitter_ms: float | None = None


@dataclass(frozen=True, slots=True)
class Thresholds:
    """Enter bands for DEGRADED and DOWN; the exit band is the enter band x ``recover_ratio``.

    The gap between enter and exit is the hysteresis that keeps a link sitting on a
    threshold from flapping.
    """

    degraded: Band
    down: Band
    recover_ratio: float


@dataclass(frozen=True, slots=True)
class Link:
    name: str
    carrier: str
    priority: int
    weight: float
    answers_v4: tuple[str, ...]
    answers_v6: tuple[str, ...]
    thresholds: Thresholds
    source: str | None = None
    fwmark: int | None = None
    device: str | None = None


@dataclass(frozen=True, slots=True)
class HealthSettings:
    """How measurements turn into states (see ``edge.health.machine``)."""

    window: int
    rise: int
    fall: int
    hold_down_s: float
    stale_after_s: float
    quorum: QuorumMode
    degraded_weight: float
    thresholds: Thresholds


@dataclass(frozen=True, slots=True)
class Zone:
    name: str
    ns: tuple[str, ...]
    ns_addresses: Mapping[str, tuple[str, ...]]
    soa_mname: str
    soa_rname: str
    soa_refresh: int
    soa_retry: int
    soa_expire: int
    soa_minimum: int
    ttl: int


@dataclass(frozen=True, slots=True)
class Endpoint:
    """An answer bound to a link. With no ``addresses`` and no ``cname``, the link's VIPs."""

    link: str
    weight: float
    addresses: tuple[str, ...] = ()
    cname: str | None = None


@dataclass(frozen=True, slots=True)
class Pool:
    """Endpoints served together. ``tier`` overrides the links' priority when set."""

    name: str
    endpoints: tuple[Endpoint, ...]
    tier: int | None = None


@dataclass(frozen=True, slots=True)
class Service:
    name: str
    zone: str
    ttl: int
    failover_ttl: int
    max_answers: int
    failover_threshold: float
    pools: tuple[Pool, ...]

    def pool(self, name: str) -> Pool:
        for p in self.pools:
            if p.name == name:
                return p
        raise KeyError(name)


@dataclass(frozen=True, slots=True)
class PolicyRule:
    segment: str
    pools: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class Policy:
    service: str
    rules: tuple[PolicyRule, ...]


@dataclass(frozen=True, slots=True)
class GuardSettings:
    freeze: bool = False
    fail_open: bool = True


@dataclass(frozen=True, slots=True)
class DnsSettings:
    listen: tuple[tuple[str, int], ...]


_NO_POLICIES: Mapping[str, Policy] = MappingProxyType({})


@dataclass(frozen=True, slots=True)
class Config:
    source: str
    node: Node
    sites: tuple[Site, ...]
    links: tuple[Link, ...]
    targets: tuple[Target, ...]
    health: HealthSettings
    zones: tuple[Zone, ...]
    lines: tuple[Line, ...]
    segments: tuple[Segment, ...]
    services: tuple[Service, ...]
    policies: Mapping[str, Policy] = field(default_factory=lambda: _NO_POLICIES)
    guard: GuardSettings = field(default_factory=GuardSettings)
    dns: DnsSettings = field(default_factory=lambda: DnsSettings(listen=(("127.0.0.1", 5353),)))

    def link(self, name: str) -> Link:
        for link in self.links:
            if link.name == name:
                return link
        raise KeyError(name)

    def service(self, name: str) -> Service:
        for svc in self.services:
            if svc.name == name:
                return svc
        raise KeyError(name)

    def zone(self, name: str) -> Zone:
        for zone in self.zones:
            if zone.name == name:
                return zone
        raise KeyError(name)
