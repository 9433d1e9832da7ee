"""Segments: named sets of users, and the matcher that puts a client in the first that fits."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass, field

import netaddr

from geo.client import ClientInfo

DEFAULT_SEGMENT = "default"


@dataclass(frozen=True, slots=True)
class Line:
    """An ISP "line" (China Telecom, China Unicom, ...), defined by ASNs and/or CIDRs."""

    name: str
    asns: frozenset[int] = frozenset()
    cidrs: netaddr.IPSet = field(default_factory=netaddr.IPSet)

    def contains(self, client: ClientInfo) -> bool:
        if client.line is not None:
            return client.line == self.name
        if client.asn is not None and client.asn in self.asns:
            return True
        return client.address in self.cidrs


@dataclass(frozen=True, slots=True)
class Segment:
    """A set of users. Every non-empty criterion must hold (AND); within one, any value (OR).

    ``regions`` are matched against ``ClientInfo.region`` (a City database's subdivision,
    e.g. ``GD``, or the ``region`` of an operator's map): a value matches a client whose
    region is that value, and a value in ISO 3166-2 form ``CC-SUB`` (e.g. ``CN-GD``) also
    matches a client in (two-letter) country ``CC`` whose region is ``SUB``, since City
    databases give the subdivision code without its country.

    ``bucket`` = (lo, hi) in percent selects a stable hash bucket of the client's /24 (v4) or
    /56 (v6) network, so a given subnet always lands in the same bucket.
    """

    name: str
    cidrs: netaddr.IPSet = field(default_factory=netaddr.IPSet)
    asns: frozenset[int] = frozenset()
    countries: frozenset[str] = frozenset()
    lines: tuple[Line, ...] = ()
    bucket: tuple[float, float] | None = None
    regions: frozenset[str] = frozenset()
    # where the segment's users are, (lat, lon): not a criterion, the place nearest
    # routing measures from (edge.steering.planner)
    location: tuple[float, float] | None = None
    # not a criterion either: the regions whose measured latency stands for these users
    # under nearest routing (targets[].region); empty: the ``regions`` criterion's
    measured_regions: frozenset[str] = frozenset()

    @property
    def measured_from(self) -> frozenset[str]:
        """The regions nearest routing blends measured latency from for this segment."""
        return self.measured_regions or self.regions

    @property
    def is_catch_all(self) -> bool:
        return not (self.cidrs or self.asns or self.countries or self.regions or self.lines
                    or self.bucket is not None)

    @property
    def uses_geo(self) -> bool:
        """Whether matching needs GeoIP data (ASN, country, region or line of the client)."""
        return bool(self.asns or self.countries or self.regions or self.lines)

    def matches(self, client: ClientInfo) -> bool:
        if self.cidrs and client.address not in self.cidrs:
            return False
        if self.asns and client.asn not in self.asns:
            return False
        if self.countries and client.country not in self.countries:
            return False
        if self.regions and not in_regions(client, self.regions):
            return False
        if self.lines and not any(line.contains(client) for line in self.lines):
            return False
        if self.bucket is not None:
            lo, hi = self.bucket
            if not lo <= hash_bucket(client) < hi:
                return False
        return True


def in_regions(client: ClientInfo, regions: frozenset[str]) -> bool:
    """Whether the client's region is one of ``regions`` (see ``Segment``)."""
    region = client.region
    if region is None:
        return False
    if region in regions:
        return True
    country = client.country
    return country is not None and len(country) == 2 and f"{country}-{region}" in regions


def hash_bucket(client: ClientInfo) -> float:
    """A stable value in [0, 100) for the client's network (/24 for IPv4, /56 for IPv6)."""
    plen = 24 if client.address.version == 4 else 56
    net = netaddr.IPNetwork(f"{client.address}/{plen}").cidr
    digest = hashlib.blake2b(str(net).encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") % 10000 / 100.0


class SegmentMatcher:
    """Puts a client in the first segment (in config order) that matches, else ``default``."""

    def __init__(self, segments: Sequence[Segment]) -> None:
        self._segments = tuple(segments)

    @property
    def segments(self) -> tuple[Segment, ...]:
        return self._segments

    def match(self, client: ClientInfo) -> str:
        for seg in self._segments:
            if seg.matches(client):
                return seg.name
        return DEFAULT_SEGMENT
