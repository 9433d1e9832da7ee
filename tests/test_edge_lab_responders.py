"""Impairment sampling (seeded distributions) and per-source impairment over real sockets."""

from __future__ import annotations

import asyncio
import contextlib
import random
import statistics
import time
from collections import defaultdict
from collections.abc import AsyncIterator

import aiohttp
import dns.asyncquery
import dns.exception
import dns.message
import dns.rcode
import dns.rdatatype
import pytest

from edge.lab.responders import (
    DnsResponder,
    HttpResponder,
    Impairment,
    ImpairmentTable,
    TcpResponder,
)

FAST, SLOW, LOST = "127.0.1.1", "127.0.2.1", "127.0.3.1"


def sample_many(imp: Impairment, n: int = 20000, seed: int = 7) -> list[float | None]:
    rng = random.Random(seed)
    return [imp.sample(rng) for _ in range(n)]


# ------------------------------------------------------------------ sampling


def test_no_impairment_means_no_delay_and_no_loss() -> None:
    assert set(sample_many(Impairment(), 100)) == {0.0}


def test_fixed_delay_is_returned_in_seconds() -> None:
    assert set(sample_many(Impairment(delay_ms=38), 100)) == {0.038}


def test_loss_ratio_matches_the_setting() -> None:
    samples = sample_many(Impairment(delay_ms=5, loss=0.3))
    lost = sum(1 for s in samples if s is None) / len(samples)
    assert lost == pytest.approx(0.3, abs=0.015)
    assert set(sample_many(Impairment(loss=1.0), 200)) == {None}


def test_jitter_is_uniform_around_the_delay() -> None:
    values = [s for s in sample_many(Impairment(delay_ms=50, jitter_ms=10)) if s is not None]
    assert min(values) >= 0.040 and max(values) <= 0.060
    assert statistics.fmean(values) == pytest.approx(0.050, abs=0.0005)
    # uniform on [-10, 10] ms has a standard deviation of 10 / sqrt(3) ms
    assert statistics.pstdev(values) == pytest.approx(0.010 / 3**0.5, rel=0.05)
    assert min(values) < 0.041 and max(values) > 0.059  # the whole range is used


def test_jitter_never_makes_a_negative_delay() -> None:
    values = [s for s in sample_many(Impairment(delay_ms=5, jitter_ms=10)) if s is not None]
    assert min(values) == 0.0
    # P(5 + U(-10, 10) < 0) = 5 / 20
    assert sum(1 for v in values if v == 0.0) / len(values) == pytest.approx(0.25, abs=0.015)


def test_same_seed_same_sequence() -> None:
    imp = Impairment(delay_ms=20, jitter_ms=5, loss=0.2)
    a, b = ImpairmentTable(imp, seed=3), ImpairmentTable(imp, seed=3)
    assert [a.sample(FAST) for _ in range(50)] == [b.sample(FAST) for _ in range(50)]


@pytest.mark.parametrize(
    "kwargs",
    [{"delay_ms": -1}, {"jitter_ms": -0.5}, {"loss": 1.5}, {"loss": -0.1},
     {"delay_ms": float("inf")}, {"delay_ms": float("nan")}],
)
def test_invalid_impairments_are_refused(kwargs: dict[str, float]) -> None:
    with pytest.raises(ValueError):
        Impairment(**kwargs)


def test_table_keys_by_source_with_a_default() -> None:
    table = ImpairmentTable(Impairment(delay_ms=1))
    table.set(SLOW, Impairment(delay_ms=80))
    assert table.get(SLOW) == Impairment(delay_ms=80)
    assert table.get("::ffff:127.0.2.1") == Impairment(delay_ms=80)  # v4-mapped is the same
    assert table.get(FAST) == Impairment(delay_ms=1)
    assert table.sample(SLOW) == pytest.approx(0.080)
    table.clear(SLOW)
    assert table.get(SLOW) == Impairment(delay_ms=1)
    table.set(FAST, Impairment(loss=1.0))
    table.clear()
    assert table.get(FAST) == Impairment(delay_ms=1)


# ------------------------------------------------------------------ real sockets


@pytest.fixture
def table() -> ImpairmentTable:
    t = ImpairmentTable(seed=1)
    t.set(SLOW, Impairment(delay_ms=150))
    t.set(LOST, Impairment(loss=1.0))
    return t


@pytest.fixture
async def dns_responder(table: ImpairmentTable) -> AsyncIterator[DnsResponder]:
    responder = DnsResponder(table)
    await responder.start()
    yield responder
    await responder.aclose()


async def query(
    responder: DnsResponder, source: str, qname: str = "example.hk", qtype: str = "A",
    tcp: bool = False, limit_s: float = 2.0,
) -> tuple[dns.message.Message, float]:
    q = dns.message.make_query(qname, qtype)
    started = time.perf_counter()
    if tcp:
        r = await dns.asyncquery.tcp(q, "127.0.0.1", limit_s, responder.port, source)
    else:
        r = await dns.asyncquery.udp(q, "127.0.0.1", limit_s, responder.port, source)
    return r, time.perf_counter() - started


@pytest.mark.parametrize("tcp", [False, True], ids=["udp", "tcp"])
async def test_dns_delay_and_loss_follow_the_client_source(
    dns_responder: DnsResponder, tcp: bool
) -> None:
    # best of 3 for the undelayed source: one load spike on a busy box is no verdict
    fast = [await query(dns_responder, FAST, tcp=tcp) for _ in range(3)]
    slow, slow_rtt = await query(dns_responder, SLOW, tcp=tcp)
    assert min(rtt for _, rtt in fast) < 0.1
    assert 0.14 <= slow_rtt < 1.0
    assert fast[0][0].answer == slow.answer
    with pytest.raises(dns.exception.Timeout):
        await query(dns_responder, LOST, tcp=tcp, limit_s=0.3)
    assert dns_responder.queries == {FAST: 3, SLOW: 1, LOST: 1}


async def test_dns_answers_what_was_asked(dns_responder: DnsResponder) -> None:
    a, _ = await query(dns_responder, FAST, "www.example.hk", "A")
    assert a.rcode() == dns.rcode.NOERROR
    assert [rd.to_text() for rd in a.answer[0]] == ["192.0.2.1"]
    assert a.answer[0].name.to_text() == "www.example.hk."

    soa, _ = await query(dns_responder, FAST, "example.hk", "SOA")
    assert soa.answer[0].rdtype == dns.rdatatype.SOA
    assert soa.answer[0][0].mname.to_text() == "ns1.example.hk."

    root, _ = await query(dns_responder, FAST, ".", "SOA")
    assert root.answer[0].name.to_text() == "."

    nodata, _ = await query(dns_responder, FAST, "example.hk", "MX")
    assert nodata.rcode() == dns.rcode.NOERROR and nodata.answer == []
    assert nodata.authority[0].rdtype == dns.rdatatype.SOA

    dns_responder.zone_answer = "2001:db8::1"
    v6, _ = await query(dns_responder, FAST, "example.hk", "AAAA")
    assert [rd.to_text() for rd in v6.answer[0]] == ["2001:db8::1"]

    dns_responder.rcode = "SERVFAIL"
    failed, _ = await query(dns_responder, FAST, "example.hk", "A", tcp=True)
    assert failed.rcode() == dns.rcode.SERVFAIL and failed.answer == []


async def test_dns_slow_queries_do_not_block_fast_ones(
    dns_responder: DnsResponder, table: ImpairmentTable
) -> None:
    table.set(SLOW, Impairment(delay_ms=500))
    slow = asyncio.create_task(query(dns_responder, SLOW))
    await asyncio.sleep(0.01)
    for tcp in (False, True):
        await query(dns_responder, FAST, tcp=tcp)
    assert not slow.done()  # the fast answers came back while the slow one was held
    await slow


async def test_dns_garbage_is_ignored(dns_responder: DnsResponder) -> None:
    loop = asyncio.get_running_loop()
    transport, _ = await loop.create_datagram_endpoint(
        asyncio.DatagramProtocol, remote_addr=("127.0.0.1", dns_responder.port)
    )
    transport.sendto(b"\x00\x01garbage")
    transport.close()
    await query(dns_responder, FAST)  # still answering
    assert dns_responder.respond(b"\x00") is None


async def test_dns_udp_and_tcp_share_the_port_and_close_cleanly(table: ImpairmentTable) -> None:
    responder = DnsResponder(table)
    await responder.start()
    await query(responder, FAST, tcp=True)
    pending = asyncio.create_task(query(responder, SLOW, tcp=True, limit_s=5))
    await asyncio.sleep(0.02)
    await responder.aclose()  # closes the open TCP connection and drops the held reply
    with pytest.raises((EOFError, ConnectionError, dns.exception.DNSException)):
        await pending
    with pytest.raises(RuntimeError, match="not started"):
        _ = DnsResponder(table).port


@pytest.fixture
async def http_responder(table: ImpairmentTable) -> AsyncIterator[HttpResponder]:
    responder = HttpResponder(table, status=200, body=b"healthy")
    await responder.start()
    yield responder
    await responder.aclose()


async def http_get(port: int, source: str) -> tuple[int, bytes, float]:
    connector = aiohttp.TCPConnector(local_addr=(source, 0), force_close=True)
    async with aiohttp.ClientSession(connector=connector) as session:
        session._retry_connection = False
        started = time.perf_counter()
        async with session.get(f"http://127.0.0.1:{port}/any/path") as resp:
            body = await resp.read()
            return resp.status, body, time.perf_counter() - started


async def test_http_delay_and_loss_follow_the_client_source(
    http_responder: HttpResponder,
) -> None:
    fast = [await http_get(http_responder.port, FAST) for _ in range(3)]
    assert fast[0][:2] == (200, b"healthy")
    assert min(rtt for _, _, rtt in fast) < 0.12  # best of 3
    _, _, slow_rtt = await http_get(http_responder.port, SLOW)
    assert 0.14 <= slow_rtt < 1.0
    with pytest.raises((aiohttp.ServerDisconnectedError, aiohttp.ClientOSError)):
        await http_get(http_responder.port, LOST)
    assert http_responder.requests == {FAST: 3, SLOW: 1, LOST: 1}
    http_responder.status, http_responder.body = 503, b"down"
    assert (await http_get(http_responder.port, FAST))[:2] == (503, b"down")


async def test_tcp_banner_delay_and_loss_follow_the_client_source(
    table: ImpairmentTable,
) -> None:
    responder = TcpResponder(table, banner=b"hello\n")
    await responder.start()
    try:
        waits: dict[str, list[float]] = defaultdict(list)
        for source in (FAST, FAST, FAST, SLOW):
            reader, writer = await asyncio.open_connection(
                "127.0.0.1", responder.port, local_addr=(source, 0)
            )
            started = time.perf_counter()
            assert await reader.readline() == b"hello\n"
            waits[source].append(time.perf_counter() - started)
            writer.close()
            await writer.wait_closed()
        assert min(waits[FAST]) < 0.1  # best of 3
        assert 0.14 <= waits[SLOW][0] < 1.0
        reader, writer = await asyncio.open_connection(
            "127.0.0.1", responder.port, local_addr=(LOST, 0)
        )
        with contextlib.suppress(ConnectionResetError):
            assert await reader.read() == b""  # aborted: no banner, ever
        writer.close()
        assert responder.connections == {FAST: 3, SLOW: 1, LOST: 1}
    finally:
        await responder.aclose()


async def test_tcp_without_banner_holds_the_connection_until_aclose(
    table: ImpairmentTable,
) -> None:
    responder = TcpResponder(table)
    await responder.start()
    reader, writer = await asyncio.open_connection(
        "127.0.0.1", responder.port, local_addr=(SLOW, 0)
    )
    read = asyncio.create_task(reader.read())
    await asyncio.sleep(0.05)
    assert not read.done()
    assert responder.connections == {SLOW: 1}
    await responder.aclose()
    async with asyncio.timeout(2):
        with contextlib.suppress(ConnectionResetError):
            assert await read == b""
    writer.close()
