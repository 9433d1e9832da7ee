"""Userspace link impairment: DNS, HTTP and TCP responders that delay, jitter and drop.

There is no netem here, so links are told apart the way policy routing would: by the
**client source address**. Each emulated link's probes leave from their own loopback
address (127.0.1.1, 127.0.2.1, ... all local on Linux without setup), and every responder
looks the source of each request up in a shared :class:`ImpairmentTable`.

What userspace can and cannot emulate:

- DNS (UDP and TCP): each reply is held back by the sampled delay, or never sent when the
  sample says "lost" (the client times out, as with real loss). Replies are scheduled with
  ``loop.call_later``, so a slow query never blocks the others.
- HTTP: the response waits for the sampled delay. A lost request is answered by aborting
  the connection (the client sees a reset): loss at the TCP level cannot be emulated in
  userspace, the kernel retransmits for us, and an abort is what the probe gets instead.
- TCP: the kernel completes the handshake before ``accept()``, so connect time cannot be
  delayed without netem. With a ``banner`` the impairment applies to the banner (the first
  byte the server sends); a lost banner aborts the connection.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import math
import random
import ssl
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import dns.exception
import dns.message
import dns.name
import dns.rcode
import dns.rdataclass
import dns.rdatatype
import dns.rrset
from aiohttp import web

TTL = 60


@dataclass(frozen=True, slots=True)
class Impairment:
    """One link's impairment: fixed delay, uniform jitter of +- ``jitter_ms``, loss ratio."""

    delay_ms: float = 0.0
    jitter_ms: float = 0.0
    loss: float = 0.0

    def __post_init__(self) -> None:
        for name in ("delay_ms", "jitter_ms"):
            value = getattr(self, name)
            if not (math.isfinite(value) and value >= 0):
                raise ValueError(f"{name} must be a finite number >= 0, got {value}")
        if not 0.0 <= self.loss <= 1.0:
            raise ValueError(f"loss must be within 0..1, got {self.loss}")

    def sample(self, rng: random.Random) -> float | None:
        """The delay in seconds for one packet, or None when it is lost. Never negative."""
        if self.loss > 0.0 and rng.random() < self.loss:
            return None
        delay = self.delay_ms
        if self.jitter_ms > 0.0:
            delay += rng.uniform(-self.jitter_ms, self.jitter_ms)
        return max(0.0, delay) / 1000.0


class ImpairmentTable:
    """Source address -> Impairment, shared by the responders; unknown sources get the default.

    Mutable on purpose: the lab changes a link's impairment while the responders run.
    Sampling uses one seeded ``random.Random``, so a run is reproducible given the same
    order of requests.
    """

    def __init__(self, default: Impairment | None = None, *, seed: int | None = 0) -> None:
        self._default = default if default is not None else Impairment()
        self._by_source: dict[str, Impairment] = {}
        self._rng = random.Random(seed)

    def set(self, source: str, impairment: Impairment) -> None:
        self._by_source[_normal(source)] = impairment

    def get(self, source: str) -> Impairment:
        return self._by_source.get(_normal(source), self._default)

    def clear(self, source: str | None = None) -> None:
        """Back to the default for ``source``, or for every source."""
        if source is None:
            self._by_source.clear()
        else:
            self._by_source.pop(_normal(source), None)

    def sample(self, source: str) -> float | None:
        """Delay in seconds for one packet from ``source``, or None when it is lost."""
        return self.get(source).sample(self._rng)


def _normal(source: str) -> str:
    try:
        addr = ipaddress.ip_address(source)
    except ValueError:
        return source
    if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped is not None:
        return str(addr.ipv4_mapped)
    return str(addr)


# --------------------------------------------------------------------------- TCP plumbing

StreamHandler = Callable[[str, asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


class _TcpListener:
    """asyncio.start_server that tracks its connections so that ``aclose`` ends them all."""

    def __init__(self, handler: StreamHandler) -> None:
        self._handler = handler
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[Any]] = set()
        self._writers: set[asyncio.StreamWriter] = set()

    async def start(self, host: str, port: int) -> int:
        self._server = await asyncio.start_server(self._serve, host, port)
        bound: int = self._server.sockets[0].getsockname()[1]
        return bound

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        if task is not None:
            self._tasks.add(task)
        self._writers.add(writer)
        peer = writer.get_extra_info("peername")
        try:
            await self._handler(str(peer[0]) if peer else "", reader, writer)
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            self._writers.discard(writer)
            if task is not None:
                self._tasks.discard(task)
            writer.close()

    async def aclose(self) -> None:
        if self._server is None:
            return
        self._server.close()
        for writer in list(self._writers):
            writer.transport.abort()
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await self._server.wait_closed()
        self._server = None


async def _read_until_eof(reader: asyncio.StreamReader) -> None:
    while await reader.read(65536):
        pass


# --------------------------------------------------------------------------- DNS


class DnsResponder:
    """Answers every DNS query (UDP and TCP on one port) after the source's sampled delay.

    For the question's name it answers A (or AAAA) with ``zone_answer`` and SOA with a
    synthesized SOA of that name; other types get NOERROR/NODATA with the SOA in the
    authority section. ``rcode`` (e.g. "SERVFAIL") replaces the whole answer when set to
    anything but NOERROR. Both are attributes the lab may change while running.
    """

    def __init__(
        self,
        table: ImpairmentTable,
        host: str = "127.0.0.1",
        port: int = 0,
        zone_answer: str = "192.0.2.1",
        rcode: str = "NOERROR",
    ) -> None:
        self.table = table
        self.host = host
        self.zone_answer = zone_answer
        self.rcode = rcode
        self.queries: Counter[str] = Counter()  # per client source address
        self._want_port = port
        self._port: int | None = None
        self._udp: asyncio.DatagramTransport | None = None
        self._tcp = _TcpListener(self._serve_tcp)
        self._pending: set[asyncio.TimerHandle] = set()

    @property
    def port(self) -> int:
        if self._port is None:
            raise RuntimeError("DnsResponder is not started")
        return self._port

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        for _ in range(20):
            udp, _proto = await loop.create_datagram_endpoint(
                lambda: _DnsUdp(self), local_addr=(self.host, self._want_port)
            )
            port: int = udp.get_extra_info("sockname")[1]
            try:
                await self._tcp.start(self.host, port)
            except OSError:
                udp.close()
                if self._want_port:
                    raise
                continue  # the TCP side of this UDP port is taken: try another port
            self._udp, self._port = udp, port
            return
        raise OSError(f"no port free for both UDP and TCP on {self.host}")

    async def aclose(self) -> None:
        for handle in self._pending:
            handle.cancel()
        self._pending.clear()
        if self._udp is not None:
            self._udp.close()
            self._udp = None
        await self._tcp.aclose()

    def respond(self, wire: bytes) -> bytes | None:
        """The response to one query in wire format; None for garbage (it is ignored)."""
        try:
            query = dns.message.from_wire(wire)
        except dns.exception.DNSException:
            return None
        response = dns.message.make_response(query)
        rcode = dns.rcode.from_text(self.rcode)
        response.set_rcode(rcode)
        if rcode == dns.rcode.NOERROR and query.question:
            question = query.question[0]
            answer_type = _address_type(self.zone_answer)
            if question.rdtype == answer_type:
                response.answer.append(
                    dns.rrset.from_text(question.name, TTL, "IN", answer_type, self.zone_answer)
                )
            elif question.rdtype == dns.rdatatype.SOA:
                response.answer.append(_soa(question.name))
            else:
                response.authority.append(_soa(question.name))
        return response.to_wire()

    def _later(self, source: str, wire: bytes, send: Callable[[bytes], None]) -> None:
        """Answer ``wire`` through ``send`` after the sampled delay, unless it is lost."""
        self.queries[source] += 1
        delay = self.table.sample(source)
        if delay is None:
            return
        reply = self.respond(wire)
        if reply is None:
            return

        def fire() -> None:
            self._pending.discard(handle)
            send(reply)

        handle = asyncio.get_running_loop().call_later(delay, fire)
        self._pending.add(handle)

    def _send_udp(self, addr: Any) -> Callable[[bytes], None]:
        def send(reply: bytes) -> None:
            if self._udp is not None and not self._udp.is_closing():
                self._udp.sendto(reply, addr)

        return send

    async def _serve_tcp(
        self, source: str, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        def send(reply: bytes) -> None:
            if not writer.is_closing():
                writer.write(len(reply).to_bytes(2, "big") + reply)

        while True:
            try:
                size = int.from_bytes(await reader.readexactly(2), "big")
            except asyncio.IncompleteReadError:
                return
            self._later(source, await reader.readexactly(size), send)


class _DnsUdp(asyncio.DatagramProtocol):
    def __init__(self, responder: DnsResponder) -> None:
        self._responder = responder

    def datagram_received(self, data: bytes, addr: tuple[str | Any, int]) -> None:
        self._responder._later(str(addr[0]), data, self._responder._send_udp(addr))


def _address_type(value: str) -> dns.rdatatype.RdataType:
    return dns.rdatatype.AAAA if ipaddress.ip_address(value).version == 6 else dns.rdatatype.A


def _soa(name: dns.name.Name) -> dns.rrset.RRset:
    mname = dns.name.from_text("ns1", origin=name)
    rname = dns.name.from_text("hostmaster", origin=name)
    return dns.rrset.from_text(
        name, TTL, "IN", "SOA", f"{mname} {rname} 1 3600 600 604800 {TTL}"
    )


# --------------------------------------------------------------------------- HTTP


class HttpResponder:
    """aiohttp server answering every path with ``status`` / ``body`` after the delay
    (HTTPS when given an ``ssl_context``).

    A request the impairment loses is answered by aborting its connection (see the module
    docstring). ``status`` and ``body`` are attributes the lab and tests may change.
    """

    def __init__(
        self,
        table: ImpairmentTable,
        host: str = "127.0.0.1",
        port: int = 0,
        status: int = 200,
        body: bytes = b"ok",
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        self.table = table
        self.ssl_context = ssl_context
        self.host = host
        self.status = status
        self.body = body
        self.requests: Counter[str] = Counter()  # per client source address
        self._want_port = port
        self._port: int | None = None
        self._runner: web.AppRunner | None = None

    @property
    def port(self) -> int:
        if self._port is None:
            raise RuntimeError("HttpResponder is not started")
        return self._port

    async def start(self) -> None:
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self._handle)
        runner = web.AppRunner(app, access_log=None, shutdown_timeout=0.1)
        await runner.setup()
        try:
            site = web.TCPSite(runner, self.host, self._want_port, ssl_context=self.ssl_context)
            await site.start()
        except BaseException:
            await runner.cleanup()
            raise
        self._runner = runner
        self._port = int(runner.addresses[0][1])

    async def aclose(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        source = request.remote or ""
        self.requests[source] += 1
        delay = self.table.sample(source)
        if delay is None:
            if request.transport is not None:
                request.transport.abort()
            raise web.HTTPServiceUnavailable  # never reaches the client: it is gone
        await asyncio.sleep(delay)
        return web.Response(status=self.status, body=self.body)


# --------------------------------------------------------------------------- TCP


class TcpResponder:
    """Accepts TCP connections; with a ``banner``, sends it after the sampled delay.

    The handshake itself is completed by the kernel and cannot be delayed (see the module
    docstring); without a banner the connection is held until the client closes it.
    """

    def __init__(
        self,
        table: ImpairmentTable,
        host: str = "127.0.0.1",
        port: int = 0,
        banner: bytes | None = None,
    ) -> None:
        self.table = table
        self.host = host
        self.banner = banner
        self.connections: Counter[str] = Counter()  # per client source address
        self._want_port = port
        self._port: int | None = None
        self._tcp = _TcpListener(self._serve)

    @property
    def port(self) -> int:
        if self._port is None:
            raise RuntimeError("TcpResponder is not started")
        return self._port

    async def start(self) -> None:
        self._port = await self._tcp.start(self.host, self._want_port)

    async def aclose(self) -> None:
        await self._tcp.aclose()

    async def _serve(
        self, source: str, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        self.connections[source] += 1
        if self.banner is not None:
            delay = self.table.sample(source)
            if delay is None:
                writer.transport.abort()
                return
            await asyncio.sleep(delay)
            writer.write(self.banner)
            with contextlib.suppress(ConnectionError):
                await writer.drain()
        await _read_until_eof(reader)
