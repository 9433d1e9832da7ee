"""The built-in authoritative server over real UDP and TCP on loopback."""

from __future__ import annotations

import asyncio
import random
import socket
from collections import Counter
from collections.abc import AsyncIterator, Sequence

import dns.edns
import dns.flags
import dns.message
import dns.rcode
import dns.rdataclass
import dns.rdatatype
import dns.update
import pytest

from dns_backends.base import BackendError
from dns_backends.builtin.server import BuiltinDnsServer
from edge.plan import WeightedAnswer
from geo.client import ClientInfo
from geo.segment import SegmentMatcher
from tests import dnsfixtures as fx
from tests.conftest import require

BIG = "big.hk"  # a zone whose NS RRset does not fit in 512 bytes
BIG_NS = tuple(f"ns{i:02d}-a-rather-long-label-for-a-name-server.big.hk" for i in range(12))
ZONES = (fx.zone(), fx.zone(BIG, ns=BIG_NS, ns_addresses={}))
SERVICES = (fx.service(), fx.service(fx.CDN, max_answers=1))
MATCHER = fx.matcher(fx.segment("ct", "10.1.0.0/16"), fx.segment("cu", "10.2.0.0/16"),
                     fx.segment("local", "127.0.0.0/8", "::1/128"))

DEFAULT_V4, CT_V4, CU_V4, LOCAL_V4 = "192.0.2.1", "198.51.100.1", "198.51.100.2", "203.0.113.1"
PLAN = fx.plan(
    fx.answer_set([DEFAULT_V4, "2001:db8::1"], ttl=60),
    fx.answer_set([CT_V4], segment="ct", ttl=30),
    fx.answer_set([CU_V4], segment="cu", ttl=30),
    fx.answer_set([LOCAL_V4, "2001:db8::7"], segment="local", ttl=20),
    fx.answer_set([fx.answer("192.0.2.30", 3.0), fx.answer("192.0.2.31", 1.0)],
                  service_name=fx.CDN, ttl=10),
)


async def started(listen: Sequence[tuple[str, int]] = (("127.0.0.1", 0),),
                  matcher: SegmentMatcher = MATCHER, *, tcp_idle_timeout: float = 10.0,
                  max_tcp_connections: int = 256, udp_batch: bool = False) -> BuiltinDnsServer:
    srv = BuiltinDnsServer(ZONES, SERVICES, matcher, listen, rng=random.Random(5),
                           tcp_idle_timeout=tcp_idle_timeout,
                           max_tcp_connections=max_tcp_connections, udp_batch=udp_batch)
    await srv.start()
    return srv


@pytest.fixture
async def server() -> AsyncIterator[BuiltinDnsServer]:
    srv = await started()
    await srv.apply(PLAN)
    try:
        yield srv
    finally:
        await srv.aclose()


def port_of(srv: BuiltinDnsServer) -> int:
    return srv.bound[0][1]


def ecs_of(response: dns.message.Message) -> dns.edns.ECSOption:
    (ecs,) = [o for o in response.options if isinstance(o, dns.edns.ECSOption)]
    return ecs


# -- answers ------------------------------------------------------------------------------

async def test_a_and_aaaa_from_the_plan_with_ttl_and_aa(server: BuiltinDnsServer) -> None:
    port = port_of(server)
    q = fx.make_query("www.example.hk", "A", ecs="100.64.0.0/24")
    r = await fx.udp(q, port)
    assert r.rcode() == dns.rcode.NOERROR
    assert r.flags & dns.flags.AA and not r.flags & dns.flags.RA
    assert fx.values(r) == {DEFAULT_V4} and r.answer[0].ttl == 60
    r6 = await fx.udp(fx.make_query("www.example.hk", "AAAA", ecs="100.64.0.0/24"), port)
    assert fx.values(r6) == {"2001:db8::1"} and r6.answer[0].rdtype == dns.rdatatype.AAAA
    assert r6.edns == 0 and r6.payload == 1232


async def test_max_answers_respected_and_weights_honoured(server: BuiltinDnsServer) -> None:
    port = port_of(server)
    seen: Counter[str] = Counter()
    for _ in range(1000):
        r = await fx.udp(fx.make_query(fx.CDN, "A"), port)
        assert len(r.answer) == 1 and len(r.answer[0]) == 1  # max_answers = 1
        seen.update(fx.values(r))
    assert set(seen) == {"192.0.2.30", "192.0.2.31"}
    assert 2.3 < seen["192.0.2.30"] / seen["192.0.2.31"] < 3.9  # 3:1


async def test_segments_by_ecs_with_scope_echoed(server: BuiltinDnsServer) -> None:
    port = port_of(server)
    # The scope is the widest prefix over which the segment rules give the same answer:
    # ct and cu are /16s; 100.64.0.0/4 .. 96.0.0.0/4 holds no segment's CIDR at all;
    # a /8 client is told the answer holds for 10.0.0.0/16 only.
    for subnet, expected, scope in [("10.1.2.0/24", CT_V4, 16), ("10.2.0.0/16", CU_V4, 16),
                                    ("100.64.9.0/24", DEFAULT_V4, 4),
                                    ("10.0.0.0/8", DEFAULT_V4, 16)]:
        r = await fx.udp(fx.make_query("www.example.hk", "A", ecs=subnet), port)
        assert fx.values(r) == {expected}, subnet
        ecs = ecs_of(r)
        address, srclen = subnet.split("/")
        assert (ecs.address, ecs.srclen, ecs.scopelen) == (address, int(srclen), scope)
    apex = await fx.udp(fx.make_query("example.hk", "SOA", ecs="10.1.2.0/24"), port)
    assert ecs_of(apex).scopelen == 0  # the SOA is the same for everyone
    assert server.stats["segment"]["ct"] >= 1 and server.stats["segment"]["cu"] >= 1


async def test_resolver_address_used_without_ecs(server: BuiltinDnsServer) -> None:
    port = port_of(server)
    r = await fx.udp(fx.make_query("www.example.hk", "A"), port)
    assert fx.values(r) == {LOCAL_V4} and r.answer[0].ttl == 20
    assert not [o for o in r.options if isinstance(o, dns.edns.ECSOption)]
    zero = await fx.udp(fx.make_query("www.example.hk", "A", ecs="0.0.0.0/0"), port)
    assert fx.values(zero) == {LOCAL_V4} and ecs_of(zero).scopelen == 0
    plain = await fx.udp(fx.make_query("www.example.hk", "A", payload=None), port)
    assert fx.values(plain) == {LOCAL_V4} and plain.edns == -1


async def test_scope_is_zero_when_no_segment_has_criteria() -> None:
    srv = await started(matcher=fx.matcher())
    try:
        await srv.apply(PLAN)
        r = await fx.udp(fx.make_query("www.example.hk", "A", ecs="10.1.2.0/24"), port_of(srv))
        assert fx.values(r) == {DEFAULT_V4} and ecs_of(r).scopelen == 0
    finally:
        await srv.aclose()


async def test_apex_soa_and_ns_with_glue(server: BuiltinDnsServer) -> None:
    port = port_of(server)
    soa = await fx.udp(fx.make_query("example.hk", "SOA"), port)
    assert soa.flags & dns.flags.AA and soa.answer[0][0].serial == server.table.serial
    ns = await fx.udp(fx.make_query("example.hk", "NS"), port)
    assert fx.values(ns) == {"ns1.example.hk.", "ns2.example.hk."}
    glue = {(r.name.to_text(), dns.rdatatype.to_text(r.rdtype)) for r in ns.additional}
    assert glue == {("ns1.example.hk.", "A"), ("ns1.example.hk.", "AAAA")}


async def test_nxdomain_and_nodata_carry_the_soa(server: BuiltinDnsServer) -> None:
    port = port_of(server)
    nx = await fx.udp(fx.make_query("nope.example.hk", "A"), port)
    assert nx.rcode() == dns.rcode.NXDOMAIN and nx.flags & dns.flags.AA and not nx.answer
    assert nx.authority[0].rdtype == dns.rdatatype.SOA and nx.authority[0].ttl == 60
    nodata = await fx.udp(fx.make_query("www.example.hk", "TXT"), port)
    assert nodata.rcode() == dns.rcode.NOERROR and not nodata.answer
    assert nodata.authority[0].rdtype == dns.rdatatype.SOA


async def test_refused_outside_zone_other_class_and_for_transfers(
        server: BuiltinDnsServer) -> None:
    port = port_of(server)
    out = await fx.udp(fx.make_query("example.com", "A"), port)
    assert out.rcode() == dns.rcode.REFUSED and not out.flags & dns.flags.AA
    chaos = dns.message.make_query("version.bind", "TXT", rdclass=dns.rdataclass.CH)
    assert (await fx.udp(chaos, port)).rcode() == dns.rcode.REFUSED
    axfr = await fx.tcp(fx.make_query("example.hk", "AXFR"), port)
    assert axfr.rcode() == dns.rcode.REFUSED and not axfr.answer


async def test_notimp_for_update(server: BuiltinDnsServer) -> None:
    update = dns.update.UpdateMessage("example.hk")
    update.add("x", 60, "A", "192.0.2.99")
    r = await fx.udp(update, port_of(server))
    assert r.rcode() == dns.rcode.NOTIMP


async def test_badvers_for_edns_version_1(server: BuiltinDnsServer) -> None:
    r = await fx.udp(fx.make_query("www.example.hk", "A", edns=1), port_of(server))
    assert r.rcode() == dns.rcode.BADVERS and r.edns == 0 and not r.answer


async def test_bad_ecs_is_formerr(server: BuiltinDnsServer) -> None:
    bad = [b"\x00\x03\x18\x00\x0a\x01\x02",  # family 3
           b"\x00\x01\x21\x00\x0a\x01\x02\x03\x04\x05",  # /33 for IPv4
           b"\x00\x01\x14\x00\x0a\x01\x0f",  # /20 with bits set past the prefix
           b"\x00\x01\x18\x00\x0a\x01\x02\x03"]  # /24 with a fourth octet
    async with fx.raw_udp(port_of(server)) as client:
        for data in bad:
            q = dns.message.make_query("www.example.hk", "A", use_edns=0, options=[
                dns.edns.GenericOption(dns.edns.OptionType.ECS, data)])
            client.send(q.to_wire())
            r = dns.message.from_wire(await client.recv())
            assert r.id == q.id and r.rcode() == dns.rcode.FORMERR, data


async def test_truncation_over_udp_and_whole_answer_over_tcp(server: BuiltinDnsServer) -> None:
    port = port_of(server)
    for q in (fx.make_query(BIG, "NS", payload=512), fx.make_query(BIG, "NS", payload=None)):
        small = await fx.udp(q, port)
        assert small.flags & dns.flags.TC
        assert sum(len(r) for r in small.answer) < len(BIG_NS)
    roomy = await fx.udp(fx.make_query(BIG, "NS", payload=1232), port)
    assert not roomy.flags & dns.flags.TC and len(roomy.answer[0]) == len(BIG_NS)
    whole = await fx.tcp(fx.make_query(BIG, "NS", payload=512), port)
    assert not whole.flags & dns.flags.TC and len(whole.answer[0]) == len(BIG_NS)
    assert server.stats["events"]["truncated"] == 2


async def test_tcp_pipelining(server: BuiltinDnsServer) -> None:
    queries = [fx.make_query("www.example.hk", "A", ecs="10.1.0.0/16"),
               fx.make_query("example.hk", "SOA"),
               fx.make_query("nope.example.hk", "A")]
    reader, writer = await asyncio.open_connection("127.0.0.1", port_of(server))
    try:
        writer.write(b"".join(q.to_wire(prepend_length=True) for q in queries))
        await writer.drain()
        replies = []
        for _ in queries:
            size = int.from_bytes(await reader.readexactly(2), "big")
            replies.append(dns.message.from_wire(await reader.readexactly(size)))
    finally:
        writer.close()
        await writer.wait_closed()
    assert [r.id for r in replies] == [q.id for q in queries]
    assert fx.values(replies[0]) == {CT_V4}
    assert replies[1].answer[0].rdtype == dns.rdatatype.SOA
    assert replies[2].rcode() == dns.rcode.NXDOMAIN


async def test_tcp_idle_timeout_and_connection_bound() -> None:
    srv = await started(tcp_idle_timeout=0.3, max_tcp_connections=1)
    port = port_of(srv)
    soa = fx.make_query("example.hk", "SOA").to_wire(prepend_length=True)
    try:
        r1, w1 = await asyncio.open_connection("127.0.0.1", port)
        w1.write(soa)
        await w1.drain()
        size = int.from_bytes(await r1.readexactly(2), "big")
        await r1.readexactly(size)  # served: this connection now holds the only slot
        idle_since = asyncio.get_running_loop().time()
        r2, w2 = await asyncio.open_connection("127.0.0.1", port)
        async with asyncio.timeout(1.0):
            assert await r2.read() == b""  # turned away at once
        assert srv.stats["events"]["tcp_rejected"] == 1
        async with asyncio.timeout(2.0):
            assert await r1.read() == b""  # closed by the server at the idle timeout
        assert asyncio.get_running_loop().time() - idle_since >= 0.25
        r3, w3 = await asyncio.open_connection("127.0.0.1", port)  # the slot is free again
        w3.write(soa)
        await w3.drain()
        assert await r3.readexactly(2)
        for w in (w1, w2, w3):
            w.close()
            await w.wait_closed()
    finally:
        await srv.aclose()


# -- plans --------------------------------------------------------------------------------

async def test_servfail_before_the_first_plan() -> None:
    srv = await started()
    try:
        port = port_of(srv)
        before = srv.current_plan
        assert before is None
        r = await fx.udp(fx.make_query("www.example.hk", "A"), port)
        assert r.rcode() == dns.rcode.SERVFAIL
        assert (await fx.udp(fx.make_query("example.hk", "SOA"), port)).answer
        result = await srv.apply(PLAN)
        assert result.backend == "builtin" and result.changed == len(PLAN.answers)
        assert srv.current_plan is PLAN
        assert fx.values(await fx.udp(fx.make_query("www.example.hk", "A"), port)) == {LOCAL_V4}
    finally:
        await srv.aclose()


async def test_dry_run_and_bad_plans_leave_the_table_alone(server: BuiltinDnsServer) -> None:
    before = server.table
    other = fx.plan(fx.answer_set(["192.0.2.77"]), version=2)
    result = await server.apply(other, dry_run=True)
    assert result.dry_run and result.changed == len(PLAN.answers)
    assert server.table is before
    bad = fx.plan(fx.answer_set([fx.answer("192.0.2.1"), WeightedAnswer(
        "A", "not-an-ip", 1.0, "l", "p", 1)]), version=3)
    with pytest.raises(BackendError, match="builtin"):
        await server.apply(bad)
    assert server.table is before


async def test_atomic_hot_swap(server: BuiltinDnsServer) -> None:
    port = port_of(server)
    xs, ys = {"192.0.2.10", "192.0.2.11"}, {"198.51.100.10", "198.51.100.11"}
    plan_x = fx.plan(fx.answer_set(sorted(xs), segment="local", ttl=30))
    plan_y = fx.plan(fx.answer_set(sorted(ys), segment="local", ttl=40))
    seen: list[dns.message.Message] = []
    progress = asyncio.Event()
    stop = asyncio.Event()

    async def querier() -> None:
        while not stop.is_set():
            seen.append(await fx.udp(fx.make_query("www.example.hk", "A"), port))
            progress.set()

    task = asyncio.create_task(querier())
    serials = []
    try:
        for i in range(30):
            await server.apply(plan_x if i % 2 == 0 else plan_y)
            serials.append((await fx.udp(fx.make_query("example.hk", "SOA"), port))
                           .answer[0][0].serial)
            progress.clear()
            await asyncio.wait_for(progress.wait(), 2.0)
    finally:
        stop.set()
        await task
    kinds: Counter[str] = Counter()
    for r in seen:
        got = fx.values(r)
        assert len(got) == 2
        if got == xs:
            assert r.answer[0].ttl == 30
            kinds["x"] += 1
        else:
            assert got == ys and r.answer[0].ttl == 40, got
            kinds["y"] += 1
    assert kinds["x"] and kinds["y"]
    assert serials == sorted(set(serials)) and serials[-1] - serials[0] == 29


async def test_an_exception_is_answered_servfail_and_the_server_lives(
        caplog: pytest.LogCaptureFixture) -> None:
    class Broken(SegmentMatcher):
        def match(self, client: ClientInfo) -> str:
            raise RuntimeError("matcher blew up")

    srv = await started(matcher=Broken(MATCHER.segments))
    try:
        await srv.apply(PLAN)
        port = port_of(srv)
        r = await fx.udp(fx.make_query("www.example.hk", "A"), port)
        assert r.rcode() == dns.rcode.SERVFAIL
        assert "matcher blew up" in caplog.text
        assert (await fx.udp(fx.make_query("example.hk", "SOA"), port)).answer
        assert srv.stats["events"]["errors"] == 1
    finally:
        await srv.aclose()


async def test_recvmmsg_batches_answer_a_burst_in_order_of_arrival() -> None:
    """Many datagrams queued before the server reads: one recvmmsg batch answers all."""
    srv = await started(udp_batch=True)
    try:
        await srv.apply(PLAN)
        queries = [fx.make_query("www.example.hk", "A", ecs=f"10.1.{i}.0/24")
                   for i in range(150)]  # more than one batch of 64
        async with fx.raw_udp(port_of(srv)) as client:
            for q in queries:
                client.send(q.to_wire())
            replies = [dns.message.from_wire(await client.recv()) for _ in queries]
        assert sorted(r.id for r in replies) == sorted(q.id for q in queries)
        assert all(fx.values(r) == {CT_V4} for r in replies)
        assert srv.stats["events"]["fast"] >= 150
    finally:
        await srv.aclose()


async def test_responses_are_never_answered(server: BuiltinDnsServer) -> None:
    q = fx.make_query("example.hk", "SOA")
    fake = dns.message.make_response(q)
    async with fx.raw_udp(port_of(server)) as client:
        client.send(fake.to_wire())
        client.send(b"\x00\x01")  # no header: dropped
        follow = fx.make_query("example.hk", "NS")
        client.send(follow.to_wire())
        assert dns.message.from_wire(await client.recv()).id == follow.id
    assert server.stats["rcode"]["dropped"] == 2


def has_ipv6_loopback() -> bool:
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_DGRAM) as s:
            s.bind(("::1", 0))
        return True
    except OSError:
        return False


@pytest.mark.parametrize("udp_batch", [False, True], ids=["transport", "recvmmsg"])
async def test_ipv6_listener(udp_batch: bool) -> None:
    require(has_ipv6_loopback(), "no IPv6 loopback (::1) on this machine")
    srv = await started(listen=(("127.0.0.1", 0), ("::1", 0)), udp_batch=udp_batch)
    try:
        await srv.apply(PLAN)
        host, port = srv.bound[1]
        assert host == "::1" and port > 0
        r = await fx.udp(fx.make_query("www.example.hk", "AAAA"), port, host="::1")
        assert fx.values(r) == {"2001:db8::7"}  # ::1 is in the "local" segment
        t = await fx.tcp(fx.make_query("www.example.hk", "A"), port, host="::1")
        assert fx.values(t) == {LOCAL_V4}
    finally:
        await srv.aclose()
