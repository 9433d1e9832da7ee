"""Builders for DNS tests: zones, services and hand-made plans, without the YAML loader.

Addresses are documentation ranges: they appear in answers only, nothing is sent to them.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
from collections.abc import AsyncIterator, Iterable, Mapping, Sequence
from types import MappingProxyType
from typing import cast

import dns.asyncquery
import dns.edns
import dns.message
import dns.rdatatype
import netaddr

from dns_backends.builtin.server import BuiltinDnsServer
from edge.config.schema import Endpoint, Pool, Service, Zone
from edge.plan import AnswerSet, Plan, RRType, WeightedAnswer
from geo.segment import Segment, SegmentMatcher
from tests.conftest import require_binary

ZONE = "example.hk"
WWW = "www.example.hk"
CDN = "cdn.example.hk"


def zone(name: str = ZONE, *, ns: Sequence[str] = ("ns1.example.hk", "ns2.example.hk"),
         ns_addresses: Mapping[str, tuple[str, ...]] | None = None, ttl: int = 3600,
         minimum: int = 60) -> Zone:
    addrs = ({"ns1.example.hk": ("127.0.0.1", "::1")} if ns_addresses is None
             else dict(ns_addresses))
    return Zone(name=name, ns=tuple(ns), ns_addresses=MappingProxyType(addrs),
                soa_mname=ns[0], soa_rname=f"hostmaster.{name}", soa_refresh=3600,
                soa_retry=600, soa_expire=604800, soa_minimum=minimum, ttl=ttl)


def service(name: str = WWW, zone_name: str = ZONE, *, ttl: int = 60,
            max_answers: int = 2) -> Service:
    pool = Pool(name="main", endpoints=(Endpoint(link="cn2-gia", weight=100.0),))
    return Service(name=name, zone=zone_name, ttl=ttl, failover_ttl=min(15, ttl),
                   max_answers=max_answers, failover_threshold=0.5, pools=(pool,))


def answer(value: str, weight: float = 1.0, *, link: str = "cn2-gia") -> WeightedAnswer:
    rrtype: RRType = ("A" if netaddr.valid_ipv4(value) else
                      "AAAA" if netaddr.valid_ipv6(value) else "CNAME")
    return WeightedAnswer(rrtype=rrtype, value=value, weight=weight, link=link, pool="main",
                          tier=1)


def answer_set(values: Iterable[str | WeightedAnswer], *, service_name: str = WWW,
               segment: str = "default", ttl: int = 60, max_answers: int = 0) -> AnswerSet:
    answers = tuple(v if isinstance(v, WeightedAnswer) else answer(v) for v in values)
    return AnswerSet(service=service_name, segment=segment, ttl=ttl, tier=1, answers=answers,
                     max_answers=max_answers)


def plan(*sets: AnswerSet, version: int = 1) -> Plan:
    return Plan(version=version, created_at=0.0,
                answers=MappingProxyType({(s.service, s.segment): s for s in sets}))


def segment(name: str, *cidrs: str) -> Segment:
    return Segment(name=name, cidrs=netaddr.IPSet(cidrs))


def matcher(*segments: Segment) -> SegmentMatcher:
    return SegmentMatcher(segments)


def make_query(qname: str, rdtype: str | dns.rdatatype.RdataType = "A", *,
               ecs: str | None = None, payload: int | None = 1232,
               edns: int = 0) -> dns.message.QueryMessage:
    """A query; ``ecs`` like ``"10.1.2.0/24"``; ``payload=None`` means no EDNS at all."""
    options = [dns.edns.ECSOption.from_text(ecs)] if ecs is not None else None
    if payload is None:
        return dns.message.make_query(qname, rdtype, use_edns=False)
    return dns.message.make_query(qname, rdtype, use_edns=edns, payload=payload,
                                  options=options)


async def udp(query: dns.message.Message, port: int,
              host: str = "127.0.0.1") -> dns.message.Message:
    return await dns.asyncquery.udp(query, host, port=port, timeout=2.0)


async def tcp(query: dns.message.Message, port: int,
              host: str = "127.0.0.1") -> dns.message.Message:
    return await dns.asyncquery.tcp(query, host, port=port, timeout=2.0)


def values(response: dns.message.Message) -> set[str]:
    return {rd.to_text() for rrset in response.answer for rd in rrset}



class RawUdp(asyncio.DatagramProtocol):
    """A bare UDP client for bytes dnspython would refuse to send or to read back."""

    def __init__(self) -> None:
        self.received: asyncio.Queue[bytes] = asyncio.Queue()
        self.transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.DatagramTransport, transport)

    def datagram_received(self, data: bytes, addr: object) -> None:
        self.received.put_nowait(data)

    def send(self, data: bytes) -> None:
        assert self.transport is not None
        self.transport.sendto(data)

    async def recv(self) -> bytes:
        async with asyncio.timeout(2.0):
            return await self.received.get()


@contextlib.asynccontextmanager
async def serving(zones: Sequence[Zone], matcher: SegmentMatcher, served: Plan, *,
                  udp_batch: bool = False) -> AsyncIterator[int]:
    """A BuiltinDnsServer for ``service()`` on a free loopback port with ``served``
    applied (seeded answer order); yields its port."""
    srv = BuiltinDnsServer(list(zones), [service()], matcher, [("127.0.0.1", 0)],
                           rng=random.Random(1), udp_batch=udp_batch)
    await srv.start()
    await srv.apply(served)
    try:
        yield srv.bound[0][1]
    finally:
        await srv.aclose()


@contextlib.asynccontextmanager
async def raw_udp(port: int, host: str = "127.0.0.1") -> AsyncIterator[RawUdp]:
    loop = asyncio.get_running_loop()
    transport, proto = await loop.create_datagram_endpoint(RawUdp, remote_addr=(host, port))
    try:
        yield proto
    finally:
        transport.close()


async def dns_tool(tool: str, port: int, *args: str) -> str:
    """Run ``dig`` or ``kdig`` against 127.0.0.1:``port`` once (no retries); its output."""
    binary = require_binary(tool, "bind9-dnsutils" if tool == "dig" else "knot-dnsutils")
    common = ["+time=2", "+tries=1"] if tool == "dig" else ["+time=2", "+retry=0"]
    proc = await asyncio.create_subprocess_exec(
        binary, "@127.0.0.1", "-p", str(port), *common, *args,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT)
    out, _ = await asyncio.wait_for(proc.communicate(), 20)
    return out.decode()
