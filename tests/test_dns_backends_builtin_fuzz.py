"""Fuzz the built-in server over real UDP: junk never kills it and gets FORMERR or silence.

The server runs in its own thread and event loop for the whole module, so hypothesis can
drive plain blocking sockets. After every junk datagram the test sends a valid query on
the same socket; loopback keeps order, so whatever arrives before the valid answer is the
reply to the junk.
"""

from __future__ import annotations

import asyncio
import importlib.util
import random
import socket
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import dns.flags
import dns.message
import dns.rcode
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from dns_backends.builtin.server import BuiltinDnsServer
from tests import dnsfixtures as fx

PLAN = fx.plan(fx.answer_set(["192.0.2.1", "2001:db8::1"]),
               fx.answer_set(["198.51.100.1"], segment="ct"))
SEED_QUERIES = [
    fx.make_query("www.example.hk", "A", ecs="10.1.2.0/24").to_wire(),
    fx.make_query("example.hk", "NS", payload=None).to_wire(),
    fx.make_query("nope.example.hk", "AAAA", payload=512).to_wire(),
]
FUZZ = settings(max_examples=300, deadline=None,
                suppress_health_check=[HealthCheck.function_scoped_fixture])


class ServerThread:
    """A BuiltinDnsServer on 127.0.0.1 in a background event loop."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.server = BuiltinDnsServer([fx.zone()], [fx.service()],
                                       fx.matcher(fx.segment("ct", "10.1.0.0/16")),
                                       [("127.0.0.1", 0)], rng=random.Random(3))
        self._thread = threading.Thread(target=self.loop.run_forever, daemon=True)

    def start(self) -> int:
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self._start(), self.loop).result(5)
        return self.server.bound[0][1]

    async def _start(self) -> None:
        await self.server.start()
        await self.server.apply(PLAN)

    def stop(self) -> None:
        asyncio.run_coroutine_threadsafe(self.server.aclose(), self.loop).result(5)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(5)
        self.loop.close()


@pytest.fixture(scope="module")
def server() -> Iterator[ServerThread]:
    srv = ServerThread()
    srv.start()
    try:
        yield srv
    finally:
        srv.stop()


@pytest.fixture(scope="module")
def client(server: ServerThread) -> Iterator[socket.socket]:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.settimeout(2.0)
    sock.connect(("127.0.0.1", server.server.bound[0][1]))
    try:
        yield sock
    finally:
        sock.close()


def exchange(sock: socket.socket, junk: bytes) -> list[bytes]:
    """Send ``junk`` then a valid query; the replies that came before the valid answer."""
    probe = fx.make_query("www.example.hk", "A")
    sock.send(junk)
    sock.send(probe.to_wire())
    before: list[bytes] = []
    while True:
        data = sock.recv(65535)  # a dead server times out here: the test fails
        try:
            msg = dns.message.from_wire(data)
        except Exception:  # pragma: no cover - would be a server bug
            before.append(data)
            continue
        if msg.id == probe.id and msg.question and msg.rcode() == dns.rcode.NOERROR:
            assert msg.answer, "the server must still answer a valid query"
            return before
        before.append(data)


def check_reply_to(junk: bytes, replies: list[bytes]) -> None:
    assert len(replies) <= 1
    try:
        parsed: dns.message.Message | None = dns.message.from_wire(junk, keyring=False)
    except Exception:
        parsed = None
    for data in replies:
        reply = dns.message.from_wire(data)  # every reply is well-formed
        assert reply.flags & dns.flags.QR
        assert reply.id == int.from_bytes(junk[:2], "big")
        if parsed is None:
            assert reply.rcode() == dns.rcode.FORMERR
    if len(junk) < 12 or (parsed is not None and parsed.flags & dns.flags.QR):
        assert not replies  # no header, or an answer: never replied to


@FUZZ
@given(st.binary(max_size=600))
def test_random_bytes(server: ServerThread, client: socket.socket, junk: bytes) -> None:
    check_reply_to(junk, exchange(client, junk))
    assert server.server.stats["events"]["errors"] == 0  # no handler crash behind a SERVFAIL


@st.composite
def mutated(draw: st.DrawFn) -> bytes:
    wire = bytearray(draw(st.sampled_from(SEED_QUERIES)))
    for _ in range(draw(st.integers(1, 6))):
        op = draw(st.sampled_from(["flip", "set", "cut", "insert"]))
        pos = draw(st.integers(0, max(len(wire) - 1, 0)))
        if op == "flip" and wire:
            wire[pos] ^= 1 << draw(st.integers(0, 7))
        elif op == "set" and wire:
            wire[pos] = draw(st.integers(0, 255))
        elif op == "cut":
            del wire[pos:pos + draw(st.integers(1, 8))]
        else:
            wire[pos:pos] = draw(st.binary(min_size=1, max_size=8))
    # keep the QR bit clear most of the time so the header-driven paths are exercised
    if len(wire) > 2 and draw(st.booleans()):
        wire[2] &= 0x7F
    return bytes(wire)


@FUZZ
@given(mutated())
def test_mutated_queries(server: ServerThread, client: socket.socket, junk: bytes) -> None:
    check_reply_to(junk, exchange(client, junk))
    assert server.server.stats["events"]["errors"] == 0


def test_junk_is_formerr_or_dropped_and_counted(client: socket.socket) -> None:
    (reply,) = exchange(client, b"\x12\x34\x01\x00" + b"\xff" * 20)
    msg = dns.message.from_wire(reply)
    assert msg.id == 0x1234 and msg.rcode() == dns.rcode.FORMERR and msg.flags & dns.flags.RD
    assert exchange(client, b"\x00") == []
    assert exchange(client, b"\x12\x34\x81\x00" + b"\xff" * 20) == []  # QR set: dropped


def test_what_the_fuzzers_reached(server: ServerThread) -> None:
    """The fuzz tests above must have exercised more than one code path."""
    rcodes = server.server.stats["rcode"]
    assert rcodes["FORMERR"] > 50 and rcodes["dropped"] > 10 and rcodes["NOERROR"] > 100


def _fuzz_driver() -> ModuleType:
    path = Path(__file__).resolve().parent.parent / "bench" / "dns_fuzz.py"
    spec = importlib.util.spec_from_file_location("dns_fuzz", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules.setdefault("dns_fuzz", module)  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def test_differential_fuzz_sample() -> None:
    """A CI-sized sample of bench/dns_fuzz.py (the documented run is one million inputs):
    mutated queries to the fast path and to the dnspython path give the same bytes, every
    reply is a well-formed response, nothing raises or hangs."""
    report = _fuzz_driver().fuzz(3000, seed=5)
    assert report.inputs == 3000
    assert not report.mismatches, report.mismatches[:3]
    assert not report.failures, report.failures[:3]
    assert report.fast > 300 and report.replies > 2000 and report.silent > 50
