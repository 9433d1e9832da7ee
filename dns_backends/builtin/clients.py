"""Client -> segment, and the ECS scope that goes with the answer (RFC 7871 section 7.2.1).

The scope prefix length tells a resolver over how wide a prefix it may reuse the answer.
It is derived from the segment rules, not echoed blindly: the scope is the shortest
prefix around the client address inside which every segment's CIDR set is all-in or
all-out, so the segment (and so the answer) is the same for every address of the scope.
For a CIDR ``c`` of length ``L`` the prefix ``a/p`` is uniform with respect to ``c``
unless ``L > p`` and ``a`` agrees with ``c`` on its first ``p`` bits; hence

    scope(a) = max over c of min(L(c), common_prefix_len(a, c) + 1)

(0 when no segment has a CIDR). Hash buckets decide per /24 (IPv4) or /56 (IPv6), so
they raise the scope to at least that. The scope may exceed the source prefix length:
that tells the resolver the answer is valid for a narrower prefix than it sent (RFC 7871
7.2.1).

GeoIP. With a GeoIP source (``geo``, e.g. ``geo.geoip.GeoIP`` over the ``geo.databases``
of the config) the client is enriched before matching: country, region, ASN and line
of the ECS address, else of the resolver address. Criteria on those (``asns``,
``countries``, ``regions``, ``lines``: a line also matches by the ``line`` a database
gives) depend on the database's record for the address, and the lookup also returns the
prefix length ``G`` of the database network holding the address: every address of
``a/G`` has the same record (``GeoIP.lookup_scoped``). So

    scope = max(cidr scope, bucket prefix, G)

is a prefix over which CIDR membership, bucket and GeoIP data are all constant, hence
the segment too. ``G`` may be shorter than the source prefix (a /13 of one ISP answers a
/24 query with scope 13, which resolvers then reuse across the /13) or longer (a
database that splits the client's /24 gives a scope above 24). Without a GeoIP source
those criteria can still be configured (the ASN and country of a client are then never
known, so they never match); the scope is then kept at least the source prefix length,
the conservative answer, as it always was.

Lookups (GeoIP included) are cached per resolver address and per ECS option in bounded
dicts (cleared when full): the same resolvers and client subnets come back all the time.
Without a GeoIP source the code path is the one it was before GeoIP existed.
"""

from __future__ import annotations

import ipaddress
from typing import Protocol

import netaddr

from geo.client import ClientInfo
from geo.segment import SegmentMatcher

CACHE_LIMIT = 65536
_BUCKET_PREFIX = {4: 24, 6: 56}


class GeoSource(Protocol):
    """What the mapper needs of GeoIP (``geo.geoip.GeoIP`` is one)."""

    def enrich_scoped(self, client: ClientInfo) -> tuple[ClientInfo, int]:
        """The client with GeoIP fields filled, and the prefix length over which they hold."""
        ...


class ClientMapper:
    """Segment (and ECS scope) for a resolver address or an ECS option, cached.

    ``geo``: enrich clients with GeoIP before matching (module docstring). It is only
    consulted when a segment has a criterion that GeoIP data decides.
    """

    def __init__(self, matcher: SegmentMatcher, *, geo: GeoSource | None = None,
                 cache_limit: int = CACHE_LIMIT) -> None:
        self._matcher = matcher
        self._limit = cache_limit
        self._geo = geo if any(s.uses_geo for s in matcher.segments) else None
        # Segments with criteria make answers depend on the client address.
        self.address_dependent = any(not s.is_catch_all for s in matcher.segments)
        cidrs: dict[int, list[tuple[int, int]]] = {4: [], 6: []}
        self._opaque = False
        self._bucket = False
        for seg in matcher.segments:
            sets = [seg.cidrs, *(line.cidrs for line in seg.lines)]
            for ipset in sets:
                for net in ipset.iter_cidrs():
                    cidrs[net.version].append((int(net.network), net.prefixlen))
            if seg.asns or seg.countries or seg.regions or any(line.asns
                                                               for line in seg.lines):
                self._opaque = True
            if seg.bucket is not None:
                self._bucket = True
        self._cidrs = {v: tuple(sorted(set(c))) for v, c in cidrs.items()}
        self._peer_cache: dict[str, str] = {}
        self._ecs_cache: dict[bytes, tuple[str, int]] = {}

    def for_peer(self, peer: str) -> str:
        """The segment of a resolver address (no ECS, or ECS with source prefix 0)."""
        found = self._peer_cache.get(peer)
        if found is None:
            address = netaddr.IPAddress(peer)
            if address.is_ipv4_mapped():
                address = address.ipv4()
            full = 32 if address.version == 4 else 128
            client = ClientInfo(address, full)
            if self._geo is not None:
                client = self._geo.enrich_scoped(client)[0]
            found = self._matcher.match(client)
            if len(self._peer_cache) >= self._limit:
                self._peer_cache.clear()
            self._peer_cache[peer] = found
        return found

    def for_ecs(self, family: int, srclen: int, addr: bytes) -> tuple[str, int]:
        """(segment, scope) for a valid ECS option with ``srclen`` > 0.

        ``addr`` is the option's address field (``ceil(srclen / 8)`` bytes, zero padded).
        """
        key = bytes((family, srclen)) + addr
        found = self._ecs_cache.get(key)
        if found is None:
            width = 4 if family == 1 else 16
            packed = addr + b"\x00" * (width - len(addr))
            ip = ipaddress.ip_address(packed)
            address = netaddr.IPAddress(int(ip), ip.version)
            client = ClientInfo(address, srclen, from_ecs=True)
            if self._geo is None:
                found = (self._matcher.match(client),
                         self.scope(int(ip), ip.version, srclen))
            else:
                client, geo_prefix = self._geo.enrich_scoped(client)
                found = (self._matcher.match(client),
                         self.scope(int(ip), ip.version, srclen, geo_prefix))
            if len(self._ecs_cache) >= self._limit:
                self._ecs_cache.clear()
            self._ecs_cache[key] = found
        return found

    def scope(self, address: int, version: int, srclen: int,
              geo_prefix: int | None = None) -> int:
        """The widest prefix around ``address`` over which the segment cannot change.

        ``geo_prefix``: the prefix length over which the GeoIP data of ``address`` holds,
        when the client was enriched with it (module docstring); None: no GeoIP source.
        """
        if not self.address_dependent:
            return 0
        bits = 32 if version == 4 else 128
        scope = 0
        for network, length in self._cidrs[version]:
            diff = address ^ network
            common = bits - diff.bit_length()  # leading bits the two agree on
            scope = max(scope, min(length, common + 1))
        if self._bucket:
            scope = max(scope, _BUCKET_PREFIX[version])
        if geo_prefix is not None:
            scope = max(scope, geo_prefix)
        elif self._opaque:
            scope = max(scope, srclen)
        return min(scope, bits)
