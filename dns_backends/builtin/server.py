"""The built-in authoritative DNS server: asyncio UDP + TCP, answers from an ``AnswerTable``.

Query path: wire -> ``dns.message.from_wire`` -> checks -> ``AnswerTable.resolve`` -> wire.
It never computes health or plans; ``apply`` builds a whole new table and swaps it in with
one attribute assignment, so a query sees one plan or the next, never a mix.

Choices worth knowing:

* Malformed queries: FORMERR (header only) when the 12-byte header is there and the QR bit
  is clear; otherwise the datagram is dropped. Messages with QR set are always dropped
  (never answer an answer: that is how reflection loops start).
* ECS (RFC 7871): dnspython rejects a bad family, a source prefix longer than the family
  and non-zero bits past the prefix while parsing, so such queries get FORMERR. The
  response echoes ECS with scope = source prefix when the answer came from segment
  matching and some segment has criteria, else scope 0 (valid for every client). A source
  prefix of 0 carries no client information: the resolver address is used instead.
* ANY (RFC 8482): one RRset (the steered A, else AAAA, else CNAME; at the apex the SOA).
* UDP responses are limited to min(client payload, 1232) (512 without EDNS); over that,
  dnspython truncates and sets TC when required data was left out (RFC 2181 section 9).
* TSIG is not supported: a signed query gets NOTAUTH.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections import Counter
from collections.abc import Sequence
from typing import TYPE_CHECKING, cast

import dns.edns
import dns.flags
import dns.message
import dns.opcode
import dns.rcode
import dns.rdataclass
import dns.rdatatype
import netaddr

from dns_backends.base import ApplyResult, BackendError
from dns_backends.builtin.answers import AnswerTable, Resolution
from edge.plan import Plan
from geo.client import ClientInfo
from geo.segment import SegmentMatcher

if TYPE_CHECKING:
    from edge.config.schema import Service, Zone

log = logging.getLogger(__name__)

OUR_PAYLOAD = 1232  # DNS flag day 2020: no IP fragmentation
NO_EDNS_PAYLOAD = 512
TCP_MAX = 65535
_HEADER = 12


class BuiltinDnsServer:
    """The embedded authoritative server; a ``Backend`` (see ``dns_backends.base``).

    ``stats`` holds counters: ``rcode`` (plus ``dropped``), ``qtype``, ``segment`` (counted
    only for queries whose answer depended on the segment) and ``events`` (``errors``,
    ``truncated``, ``tcp_rejected``). The SOA serial starts at ``int(time.time())`` and
    moves +1 per applied plan (dry runs do not move it). After a restart it starts again
    from the clock, so more than one apply per second on average before a restart could
    make it go back; resolvers ignore it, and this server has no secondaries.
    """

    name = "builtin"

    def __init__(self, zones: Sequence[Zone], services: Sequence[Service],
                 matcher: SegmentMatcher, listen: Sequence[tuple[str, int]], *,
                 rng: random.Random | None = None, tcp_idle_timeout: float = 10.0,
                 max_tcp_connections: int = 256) -> None:
        self._zones = tuple(zones)
        self._services = tuple(services)
        self._matcher = matcher
        self._listen = tuple(listen)
        self._rng = rng if rng is not None else random.Random()
        self._tcp_idle = tcp_idle_timeout
        self._max_tcp = max_tcp_connections
        # Segments with criteria make answers depend on the client address (ECS scope).
        self._address_dependent = any(not s.is_catch_all for s in matcher.segments)
        self._table = AnswerTable.empty(self._zones, self._services, int(time.time()))
        self.bound: list[tuple[str, int]] = []
        self.stats: dict[str, Counter[str]] = {
            "rcode": Counter(), "qtype": Counter(), "segment": Counter(), "events": Counter()}
        self._udp: list[asyncio.DatagramTransport] = []
        self._tcp_servers: list[asyncio.Server] = []
        self._tcp_tasks: set[asyncio.Task[None]] = set()

    # -- Backend protocol ---------------------------------------------------------------

    @property
    def current_plan(self) -> Plan | None:
        return self._table.plan

    @property
    def table(self) -> AnswerTable:
        return self._table

    async def apply(self, plan: Plan, *, dry_run: bool = False) -> ApplyResult:
        """Build the table for ``plan`` and swap it in whole. The SOA serial moves +1."""
        current = self._table
        try:
            table = AnswerTable.build(self._zones, self._services, plan, current.serial + 1)
        except ValueError as exc:
            raise BackendError(self.name, f"plan v{plan.version} not applied: {exc}") from exc
        changed = len((current.plan or Plan()).diff(plan).changes)
        if not dry_run:
            self._table = table  # the atomic swap
        return ApplyResult(self.name, plan.version, changed, dry_run, table.notes)

    async def start(self) -> None:
        """Bind UDP and TCP on every listener (same port for both; 0 = a free one)."""
        try:
            for host, port in self._listen:
                self.bound.append(await self._bind(host, port))
        except BaseException:
            await self.aclose()
            raise

    async def aclose(self) -> None:
        for transport in self._udp:
            transport.close()  # the socket itself closes on the next loop iteration
        for server in self._tcp_servers:
            server.close()
        for task in list(self._tcp_tasks):
            task.cancel()
        await asyncio.gather(*self._tcp_tasks, return_exceptions=True)
        for server in self._tcp_servers:
            await server.wait_closed()
        await asyncio.sleep(0)  # let the UDP transports finish closing their sockets
        self._udp, self._tcp_servers, self._tcp_tasks = [], [], set()
        self.bound = []

    async def _bind(self, host: str, port: int) -> tuple[str, int]:
        loop = asyncio.get_running_loop()
        for _attempt in range(20 if port == 0 else 1):
            server = await asyncio.start_server(self._serve_tcp, host, port)
            actual: int = server.sockets[0].getsockname()[1]
            try:
                transport, _ = await loop.create_datagram_endpoint(
                    lambda: _UdpProtocol(self), local_addr=(host, actual))
            except OSError:
                server.close()
                await server.wait_closed()
                if port != 0:
                    raise
                continue  # the kernel's free TCP port is taken for UDP: try another
            self._tcp_servers.append(server)
            self._udp.append(transport)
            log.info("builtin DNS listening on %s port %d (udp+tcp)", host, actual)
            return host, actual
        raise OSError(f"no port free for both UDP and TCP on {host}")

    # -- transports ---------------------------------------------------------------------

    async def _serve_tcp(self, reader: asyncio.StreamReader,
                         writer: asyncio.StreamWriter) -> None:
        """RFC 7766: length-prefixed messages, several per connection, answered in order."""
        task = asyncio.current_task()
        if len(self._tcp_tasks) >= self._max_tcp or task is None:
            self.stats["events"]["tcp_rejected"] += 1
            writer.close()
            with contextlib.suppress(OSError):
                await writer.wait_closed()
            return
        self._tcp_tasks.add(task)
        peer = _peer_host(writer.get_extra_info("peername"))
        try:
            while True:
                try:
                    size = int.from_bytes(
                        await asyncio.wait_for(reader.readexactly(2), self._tcp_idle), "big")
                    wire = await asyncio.wait_for(reader.readexactly(size), self._tcp_idle)
                except (TimeoutError, asyncio.IncompleteReadError, OSError):
                    break
                reply = self.handle(wire, peer, tcp=True)
                if reply is not None:
                    writer.write(len(reply).to_bytes(2, "big") + reply)
                    await writer.drain()
        except OSError:
            pass  # the client went away mid-write
        finally:
            self._tcp_tasks.discard(task)
            writer.close()
            with contextlib.suppress(OSError, asyncio.CancelledError):
                await writer.wait_closed()

    # -- query handling -----------------------------------------------------------------

    def handle(self, wire: bytes, peer: str, *, tcp: bool) -> bytes | None:
        """The reply to one query (None = send nothing). Never raises: errors -> SERVFAIL."""
        try:
            return self._handle(wire, peer, tcp)
        except Exception:
            log.exception("builtin DNS: query from %s failed; answering SERVFAIL", peer)
            self.stats["events"]["errors"] += 1
            self._count(dns.rcode.SERVFAIL)
            try:
                return _header_reply(wire, dns.rcode.SERVFAIL)
            except Exception:  # pragma: no cover - a header reply only packs integers
                log.exception("builtin DNS: cannot even answer SERVFAIL")
                return None

    def _handle(self, wire: bytes, peer: str, tcp: bool) -> bytes | None:
        try:
            query = dns.message.from_wire(wire, keyring=False)
        except Exception as exc:  # untrusted input: any parse failure is a format error
            log.debug("builtin DNS: unparseable query from %s: %r", peer, exc)
            reply = _header_reply(wire, dns.rcode.FORMERR)
            self._count(dns.rcode.FORMERR if reply else None)
            return reply
        if query.flags & dns.flags.QR:
            self._count(None)
            return None
        response = dns.message.make_response(query, our_payload=OUR_PAYLOAD)
        # make_response echoes RD; RA stays 0: we never recurse.
        early = _early_rcode(query)
        if early is not None:
            return self._finish(query, response, early, tcp)
        question = query.question[0]
        self.stats["qtype"][dns.rdatatype.to_text(question.rdtype)] += 1
        if question.rdclass != dns.rdataclass.IN:
            return self._finish(query, response, dns.rcode.REFUSED, tcp)
        ecs = _ecs_option(query)
        table = self._table  # one read: this query uses this table throughout
        result = table.resolve(question.name, question.rdtype,
                               lambda: self._matcher.match(self._client(ecs, peer)), self._rng)
        self._fill(response, result)
        if ecs is not None:
            scope = ecs.srclen if result.segment is not None and self._address_dependent else 0
            response.use_edns(0, 0, OUR_PAYLOAD, query.payload, pad=response.pad,
                              options=[dns.edns.ECSOption(ecs.address, ecs.srclen, scope)])
        return self._finish(query, response, result.rcode, tcp)

    def _client(self, ecs: dns.edns.ECSOption | None, peer: str) -> ClientInfo:
        if ecs is not None and ecs.srclen > 0:
            return ClientInfo(netaddr.IPAddress(ecs.address), ecs.srclen, from_ecs=True)
        address = netaddr.IPAddress(peer)
        if address.is_ipv4_mapped():
            address = address.ipv4()
        return ClientInfo(address, 32 if address.version == 4 else 128)

    def _fill(self, response: dns.message.Message, result: Resolution) -> None:
        response.answer.extend(result.answer)
        response.authority.extend(result.authority)
        response.additional.extend(result.additional)
        if result.authoritative:
            response.flags |= dns.flags.AA
        if result.segment is not None:
            self.stats["segment"][result.segment] += 1

    def _finish(self, query: dns.message.Message, response: dns.message.Message,
                rcode: dns.rcode.Rcode, tcp: bool) -> bytes:
        response.set_rcode(rcode)
        self._count(rcode)
        if tcp:
            limit = TCP_MAX
        elif query.edns >= 0:
            limit = min(max(query.payload, NO_EDNS_PAYLOAD), OUR_PAYLOAD)
        else:
            limit = NO_EDNS_PAYLOAD
        wire = response.to_wire(max_size=limit, prefer_truncation=True)
        if int.from_bytes(wire[2:4], "big") & dns.flags.TC:
            self.stats["events"]["truncated"] += 1
        return wire

    def _count(self, rcode: dns.rcode.Rcode | None) -> None:
        key = "dropped" if rcode is None else dns.rcode.to_text(rcode)
        self.stats["rcode"][key] += 1


def _early_rcode(query: dns.message.Message) -> dns.rcode.Rcode | None:
    """The rcode for a query refused before any lookup, in order of precedence."""
    if query.opcode() != dns.opcode.QUERY:
        return dns.rcode.NOTIMP
    if query.had_tsig:
        return dns.rcode.NOTAUTH  # no TSIG keys here (RFC 8945 would add BADKEY)
    if query.edns > 0:
        return dns.rcode.BADVERS
    if len(query.question) != 1:
        return dns.rcode.FORMERR
    if query.question[0].rdtype in (dns.rdatatype.AXFR, dns.rdatatype.IXFR):
        return dns.rcode.REFUSED  # no zone transfers
    return None


def _ecs_option(query: dns.message.Message) -> dns.edns.ECSOption | None:
    for option in query.options:
        if isinstance(option, dns.edns.ECSOption):
            return option
    return None


def _header_reply(wire: bytes, rcode: dns.rcode.Rcode) -> bytes | None:
    """A question-less reply built from the header alone; None when there is none to use."""
    if len(wire) < _HEADER:
        return None
    qid = int.from_bytes(wire[0:2], "big")
    flags = int.from_bytes(wire[2:4], "big")
    if flags & dns.flags.QR:
        return None
    reply = dns.message.Message(id=qid)
    reply.flags = dns.flags.QR | (flags & dns.flags.RD)
    reply.set_opcode(dns.opcode.from_flags(flags))
    reply.set_rcode(rcode)
    return reply.to_wire()


def _peer_host(peername: object) -> str:
    """The address part of a socket peer name, without an IPv6 zone suffix."""
    if isinstance(peername, tuple) and peername:
        return str(peername[0]).split("%", 1)[0]
    return "0.0.0.0"


class _UdpProtocol(asyncio.DatagramProtocol):
    def __init__(self, server: BuiltinDnsServer) -> None:
        self._server = server
        self._transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = cast(asyncio.DatagramTransport, transport)

    def datagram_received(self, data: bytes, addr: tuple[str | int, ...]) -> None:
        reply = self._server.handle(data, _peer_host(addr), tcp=False)
        if reply is not None and self._transport is not None:
            self._transport.sendto(reply, addr)

    def error_received(self, exc: Exception) -> None:
        log.debug("builtin DNS: UDP error: %r", exc)
