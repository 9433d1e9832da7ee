"""Conformance with external clients: BIND's ``dig`` and Knot's ``kdig`` against the server.

The server runs in the test's event loop; the clients run as subprocesses (asyncio, so
the loop keeps serving) and their text output is checked.
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator

import pytest

from tests import dnsfixtures as fx

BIG = "big.hk"
BIG_NS = tuple(f"ns{i:02d}-a-rather-long-label-for-a-name-server.big.hk" for i in range(12))
ZONES = (fx.zone(), fx.zone(BIG, ns=BIG_NS, ns_addresses={}))
MATCHER = fx.matcher(fx.segment("ct", "10.1.0.0/16"), fx.segment("local", "127.0.0.0/8"))
PLAN = fx.plan(fx.answer_set(["192.0.2.1", "2001:db8::1"], ttl=60),
               fx.answer_set(["198.51.100.1"], segment="ct", ttl=30),
               fx.answer_set(["203.0.113.1"], segment="local", ttl=20))


@pytest.fixture(params=[False, True], ids=["transport", "recvmmsg"])
async def port(request: pytest.FixtureRequest) -> AsyncIterator[int]:
    """The server with UDP through the loop's transport, and through recvmmsg batches."""
    async with fx.serving(ZONES, MATCHER, PLAN, udp_batch=request.param) as bound:
        yield bound




def status(out: str) -> list[str]:
    return re.findall(r"status: (\w+)", out)


async def test_dig_subnet_answer_with_scope(port: int) -> None:
    out = await fx.dns_tool("dig", port, "www.example.hk", "A", "+subnet=10.1.2.0/24", "+norec")
    assert status(out) == ["NOERROR"]
    assert re.search(r"flags: qr aa;", out)
    assert "CLIENT-SUBNET: 10.1.2.0/24/16" in out  # the ct segment is a /16
    assert re.search(r"www\.example\.hk\.\s+30\s+IN\s+A\s+198\.51\.100\.1", out)
    v6 = await fx.dns_tool("dig", port, "www.example.hk", "AAAA", "+subnet=2001:db8:ff::/56")
    assert "CLIENT-SUBNET: 2001:db8:ff::/56/0" in v6  # no IPv6 rules: valid for all
    assert "2001:db8::1" in v6


async def test_dig_resolver_address_without_subnet_and_over_tcp(port: int) -> None:
    udp = await fx.dns_tool("dig", port, "www.example.hk", "A")
    assert "203.0.113.1" in udp and "CLIENT-SUBNET" not in udp  # 127.0.0.1 is "local"
    tcp = await fx.dns_tool("dig", port, "+tcp", "WWW.EXAMPLE.HK", "A")
    assert re.search(r"WWW\.EXAMPLE\.HK\.\s+20\s+IN\s+A\s+203\.0\.113\.1", tcp)
    assert "(TCP)" in tcp


async def test_dig_rcodes(port: int) -> None:
    nx = await fx.dns_tool("dig", port, "nope.example.hk", "A")
    assert status(nx) == ["NXDOMAIN"] and re.search(r"AUTHORITY: 1", nx)
    assert re.search(r"example\.hk\.\s+60\s+IN\s+SOA", nx)
    nodata = await fx.dns_tool("dig", port, "www.example.hk", "MX")
    assert status(nodata) == ["NOERROR"] and "ANSWER: 0" in nodata and "AUTHORITY: 1" in nodata
    assert status(await fx.dns_tool("dig", port, "example.com", "A")) == ["REFUSED"]
    assert status(await fx.dns_tool("dig", port, "+opcode=2", "www.example.hk")) == ["NOTIMP"]
    badvers = await fx.dns_tool("dig", port, "+edns=1", "+noednsnegotiation", "www.example.hk")
    assert status(badvers) == ["BADVERS"]
    axfr = await fx.dns_tool("dig", port, "example.hk", "AXFR")
    assert "Transfer failed" in axfr or "REFUSED" in axfr
    anyq = await fx.dns_tool("dig", port, "example.hk", "ANY")
    assert status(anyq) == ["NOERROR"] and "ANSWER: 1" in anyq  # RFC 8482: one RRset


async def test_dig_truncation_then_tcp(port: int) -> None:
    cut = await fx.dns_tool("dig", port, BIG, "NS", "+bufsize=512", "+ignore")
    assert re.search(r"flags: qr aa tc", cut)
    full = await fx.dns_tool("dig", port, BIG, "NS", "+bufsize=512")  # dig retries over TCP
    assert "Truncated, retrying in TCP mode" in full and "ANSWER: 12" in full
    roomy = await fx.dns_tool("dig", port, BIG, "NS", "+bufsize=1232")
    assert "ANSWER: 12" in roomy and "Truncated" not in roomy


async def test_kdig_tcp_connection_reuse_and_subnet(port: int) -> None:
    out = await fx.dns_tool("kdig", port, "+tcp", "+keepopen", "www.example.hk", "A",
                       "example.hk", "SOA", "nope.example.hk", "A", "+subnet=10.1.2.0/24")
    assert status(out) == ["NOERROR", "NOERROR", "NXDOMAIN"]
    sources = set(re.findall(r"From 127\.0\.0\.1@\d+\(TCP\)", out))
    assert len(sources) == 1  # one connection carried all three
    assert "CLIENT-SUBNET: 10.1.2.0/24/0" in out  # NXDOMAIN holds for everyone: scope 0


async def test_kdig_subnet_and_edns(port: int) -> None:
    out = await fx.dns_tool("kdig", port, "www.example.hk", "A", "+subnet=10.1.2.0/24", "+dnssec")
    assert status(out) == ["NOERROR"] and "198.51.100.1" in out
    assert re.search(r"CLIENT-SUBNET: 10\.1\.2\.0/24/16", out)
    assert re.search(r"EDNS PSEUDOSECTION:\s*\n;; Version: 0; flags: do;", out)
