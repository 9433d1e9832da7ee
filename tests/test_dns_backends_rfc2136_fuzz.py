"""The AXFR reader faces the network: broken, truncated and mutated transfers from a real
loopback TCP server must end in a clear error (never a hang, never an odd exception)."""

from __future__ import annotations

import asyncio
import random
import struct
from collections.abc import AsyncIterator, Callable

import dns.message
import dns.opcode
import dns.rdatatype
import dns.rrset
import pytest

from dns_backends.base import BackendError
from dns_backends.reconcile import Target, Transient
from dns_backends.records import A, Change, RecordSet, name_of
from dns_backends.rfc2136 import Rfc2136Store
from tests.conftest import free_port
from tests.servers_dns import ZONE, services

SOA_VALUE = f"ns1.{ZONE}. hostmaster.{ZONE}. 7 3600 600 604800 60"


def soa() -> dns.rrset.RRset:
    return dns.rrset.from_text(f"{ZONE}.", 3600, "IN", "SOA", SOA_VALUE)


def transfer(query: dns.message.Message, middle: list[str], close: bool = True) -> bytes:
    r = dns.message.make_response(query)
    r.answer.append(soa())
    for text in middle:
        name, ttl, cls, rdtype, value = text.split(" ", 4)
        r.answer.append(dns.rrset.from_text(name, int(ttl), cls, rdtype, value))
    if close:
        r.answer.append(soa())
    wire = r.to_wire()
    return struct.pack("!H", len(wire)) + wire


class Peer:
    """Answers each AXFR query with ``respond(query)`` bytes, then closes."""

    def __init__(self) -> None:
        self.respond: Callable[[dns.message.Message], bytes] = lambda q: b""
        self.port = free_port()
        self.connections = 0

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        try:
            (n,) = struct.unpack("!H", await reader.readexactly(2))
            q = dns.message.from_wire(await reader.readexactly(n))
            writer.write(self.respond(q))
            await writer.drain()
        except (OSError, asyncio.IncompleteReadError):
            pass
        finally:
            writer.close()


@pytest.fixture
async def peer() -> AsyncIterator[Peer]:
    p = Peer()
    server = await asyncio.start_server(p.handle, "127.0.0.1", p.port)
    try:
        yield p
    finally:
        server.close()
        await server.wait_closed()


def store(peer: Peer) -> Rfc2136Store:
    return Rfc2136Store("fuzz", ("127.0.0.1", peer.port), [ZONE], services("www.example.hk"),
                        timeout=0.5)


async def test_a_good_transfer_is_read(peer: Peer) -> None:
    peer.respond = lambda q: transfer(q, [f"www.{ZONE}. 60 IN A 192.0.2.1",
                                          f"www.{ZONE}. 60 IN A 192.0.2.2",
                                          f"other.{ZONE}. 60 IN A 192.0.2.3"])
    s = store(peer)
    state = await s.read(Target(ZONE, "default"))
    assert [list(r.values) for r in state.values()] == [
        ["192.0.2.1", "192.0.2.2"]]  # split RRs merged; other names are not ours
    assert s.serials[Target(ZONE, "default")] == 7


@pytest.mark.parametrize("case", ["no closing SOA", "garbage", "no SOA first", "empty",
                                  "wrong id"])
async def test_broken_transfers_are_clear_errors(peer: Peer, case: str) -> None:
    def respond(q: dns.message.Message) -> bytes:
        if case == "no closing SOA":
            return transfer(q, [f"www.{ZONE}. 60 IN A 192.0.2.1"], close=False)
        if case == "garbage":
            return struct.pack("!H", 40) + bytes(range(40))
        if case == "no SOA first":
            r = dns.message.make_response(q)
            r.answer.append(dns.rrset.from_text(f"www.{ZONE}.", 60, "IN", "A", "192.0.2.1"))
            w = r.to_wire()
            return struct.pack("!H", len(w)) + w
        if case == "wrong id":
            q.id ^= 0xFFFF
            return transfer(q, [])
        return b""

    peer.respond = respond
    with pytest.raises(Transient) as info:
        async with asyncio.timeout(5):
            await store(peer).read(Target(ZONE, "default"))
    assert "zone transfer" in str(info.value)


async def test_mutated_transfers_never_escape_as_odd_exceptions(peer: Peer) -> None:
    rng = random.Random(2136)
    good: list[bytes] = []

    def respond(q: dns.message.Message) -> bytes:
        data = bytearray(transfer(q, [f"www.{ZONE}. 60 IN A 192.0.2.{i}" for i in range(1, 6)]
                                  + [f"api.{ZONE}. 60 IN CNAME edge.example.net."]))
        for _ in range(rng.randint(1, 4)):
            i = rng.randrange(4, len(data))  # keep the length prefix and the id
            data[i] = rng.randrange(256)
        if rng.random() < 0.2:
            del data[rng.randrange(4, len(data)):]
        good.append(bytes(data))
        return bytes(data)

    peer.respond = respond
    s = store(peer)
    s.full_read_s = 0  # always transfer (no SOA shortcut): every pass parses a mutant
    outcomes = {"ok": 0, "error": 0}
    for _ in range(150):
        try:
            async with asyncio.timeout(5):
                await s.read(Target(ZONE, "default"))
            outcomes["ok"] += 1
        except (Transient, BackendError) as exc:
            assert "fuzz" in str(exc) or "zone transfer" in str(exc)
            outcomes["error"] += 1
    assert outcomes["error"] > 0 and sum(outcomes.values()) == 150
    assert len(good) == 150


def _one_message_server(serial: list[int], answer_updates: bool = True
                        ) -> Callable[[dns.message.Message], bytes]:
    """Answers an SOA query with ``serial[0]``; an UPDATE bumps it (or gets no answer)."""
    def respond(q: dns.message.Message) -> bytes:
        r = dns.message.make_response(q)
        if q.opcode() == dns.opcode.UPDATE:
            if not answer_updates:
                return b""
            serial[0] += 1
        else:
            r.answer.append(dns.rrset.from_text(f"{ZONE}.", 3600, "IN", "SOA",
                                                SOA_VALUE.replace(" 7 ", f" {serial[0]} ")))
        w = r.to_wire()
        return struct.pack("!H", len(w)) + w
    return respond


def _change() -> Change:
    name = name_of(f"www.{ZONE}")
    return Change(name, A, None, RecordSet.of(name, A, 60, ["192.0.2.1"]))


async def test_the_soa_check_after_an_update_survives_a_closed_connection(peer: Peer) -> None:
    """The UPDATE and the SOA query that checks it share one connection; a server that
    closed it after the UPDATE (idle timeout) gets the query again on a new one."""
    serial = [7]
    peer.respond = _one_message_server(serial)
    s, t = store(peer), Target(ZONE, "default")
    assert await s.soa_serial(t) == 7
    await s.write(t, [_change()], {})
    assert s.serials[t] == 8 and serial == [8]
    assert dict(s.sent) == {"query": 2, "update": 1}
    assert peer.connections == 3  # the query, the UPDATE, the query again on a new one


async def test_an_update_without_answer_is_not_sent_again(peer: Peer) -> None:
    """An UPDATE is not idempotent: a connection closed before its answer is an error
    (retried by SyncBackend after a fresh read), never a silent resend."""
    peer.respond = _one_message_server([7], answer_updates=False)
    s, t = store(peer), Target(ZONE, "default")
    await s.soa_serial(t)
    with pytest.raises(Transient, match="update: IncompleteReadError"):
        await s.write(t, [_change()], {})
    assert peer.connections == 2 and s.sent["update"] == 1
