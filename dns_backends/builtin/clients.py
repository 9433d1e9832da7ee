"""Client -> segment, and the ECS scope that goes with the answer (RFC 7871 section 7.2.1).

The scope prefix length tells a resolver over how wide a prefix it may reuse the answer.
It is derived from the segment rules, not echoed blindly: the scope is the shortest
prefix around the client address inside which every segment's CIDR set is all-in or
all-out, so the segment (and so the answer) is the same for every address of the scope.
For a CIDR ``c`` of length ``L`` the prefix ``a/p`` is uniform with respect to ``c``
unless ``L > p`` and ``a`` agrees with ``c`` on its first ``p`` bits; hence

    scope(a) = max over c of min(L(c), common_prefix_len(a, c) + 1)

(0 when no segment has a CIDR). Hash buckets decide per /24 (IPv4) or /56 (IPv6), so
they raise the scope to at least that. Criteria the server cannot see across a prefix
(ASN, country: GeoIP data) keep the scope at least the source prefix length, the
conservative answer. The scope may exceed the source prefix length: that tells the
resolver the answer is valid for a narrower prefix than it sent (RFC 7871 7.2.1).

Lookups are cached in bounded dicts (cleared when full): the same resolvers and client
subnets come back all the time, and ``SegmentMatcher.match`` costs microseconds.
"""

from __future__ import annotations

import ipaddress

import netaddr

from geo.client import ClientInfo
from geo.segment import SegmentMatcher

CACHE_LIMIT = 65536
_BUCKET_PREFIX = {4: 24, 6: 56}


class ClientMapper:
    """Segment (and ECS scope) for a resolver address or an ECS option, cached."""

    def __init__(self, matcher: SegmentMatcher, *, cache_limit: int = CACHE_LIMIT) -> None:
        self._matcher = matcher
        self._limit = cache_limit
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
            if seg.asns or seg.countries or any(line.asns for line in seg.lines):
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
            found = self._matcher.match(ClientInfo(address, full))
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
            segment = self._matcher.match(ClientInfo(address, srclen, from_ecs=True))
            found = (segment, self.scope(int(ip), ip.version, srclen))
            if len(self._ecs_cache) >= self._limit:
                self._ecs_cache.clear()
            self._ecs_cache[key] = found
        return found

    def scope(self, address: int, version: int, srclen: int) -> int:
        """The widest prefix around ``address`` over which the segment cannot change."""
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
        if self._opaque:
            scope = max(scope, srclen)
        return min(scope, bits)
