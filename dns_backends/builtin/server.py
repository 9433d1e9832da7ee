"""The built-in authoritative DNS server: asyncio UDP + TCP, answers from an ``AnswerTable``.

Two query paths give the same bytes (tests/test_dns_backends_builtin_fastpath.py):

* the fast path (``fastpath``): header, question and OPT/ECS read at their offsets, the
  response copied from a prebuilt one with ID, RD, question case, DO and ECS patched;
* the dnspython path: ``dns.message.from_wire`` -> checks -> ``AnswerTable.resolve`` ->
  ``to_wire``. It builds the fast path's responses and answers everything else.

It never computes health or plans; ``apply`` builds a whole new table (and an empty fast
cache for it) and swaps both in with one attribute assignment, so a query sees one plan
or the next, never a mix.

Choices worth knowing:

* Malformed queries: FORMERR (header only) when the 12-byte header is there and the QR bit
  is clear; otherwise the datagram is dropped. Messages with QR set are always dropped
  (never answer an answer: that is how reflection loops start).
* ECS (RFC 7871): dnspython rejects a bad family, a source prefix longer than the family
  and non-zero bits past the prefix while parsing, so such queries get FORMERR. The
  response echoes ECS; its scope is the widest prefix over which the segment rules give
  the same answer (``clients.ClientMapper.scope``) when the answer came from segment
  matching, else 0 (valid for every client). A source prefix of 0 carries no client
  information: the resolver address is used instead, and the scope is 0.
* The DO bit is copied into the response (RFC 3225); there is no DNSSEC data to add.
* ANY (RFC 8482): one RRset (the steered A, else AAAA, else CNAME; at the apex the SOA).
* UDP responses are limited to min(client payload, 1232) (512 without EDNS); over that,
  dnspython truncates and sets TC when required data was left out (RFC 2181 section 9).
* TSIG is not supported: a signed query gets NOTAUTH.
* DNS Cookies (RFC 7873): a COOKIE option is answered with the client cookie and a fresh
  server cookie (``cookies``: RFC 9018 layout, keyed BLAKE2b); a malformed one gets
  FORMERR. Cookies are never required (no BADCOOKIE); a valid server cookie exempts the
  query from response rate limiting (its source address is not spoofed).
* Repeated queries: a query whose response depends on nothing but its own bytes (segment
  from ECS, or no segment) has every possible response, minus the ID (and the server
  cookie, appended per query), kept per plan keyed on its bytes after the ID
  (``_Served.memo``, bounded); the next identical query costs a dict lookup, a weighted
  pick and a concatenation.
* Optional response rate limiting per client prefix over UDP (``rrl.RateLimiter``), and
  sampled query logging with client addresses cut to their /24 or /48.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
import random
import socket
import time
from bisect import bisect_left, bisect_right
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, cast

import dns.edns
import dns.flags
import dns.message
import dns.opcode
import dns.rcode
import dns.rdataclass
import dns.rdatatype

from dns_backends.base import ApplyResult, BackendError
from dns_backends.builtin import cookies as dns_cookies
from dns_backends.builtin import udpbatch
from dns_backends.builtin.answers import AnswerTable
from dns_backends.builtin.clients import ClientMapper, GeoSource
from dns_backends.builtin.fastpath import (
    Entry,
    FastCache,
    Info,
    Query,
    TooManyOutcomes,
    Variants,
    enumerate_outcomes,
    parse,
)
from dns_backends.builtin.rrl import RateLimiter, Verdict, truncated
from edge.plan import Plan
from geo.segment import SegmentMatcher

if TYPE_CHECKING:
    from edge.config.schema import Service, Zone

log = logging.getLogger(__name__)
qlog = logging.getLogger("edgesteer.dns.query")

OUR_PAYLOAD = 1232  # DNS flag day 2020: no IP fragmentation
NO_EDNS_PAYLOAD = 512
TCP_MAX = 65535
_HEADER = 12
# Answer latency histogram bounds, seconds (Prometheus "le" buckets).
_MISSING = Entry(None)  # sentinel: a key not compiled yet
MEMO_MAX = 32768  # remembered queries per plan (each a few hundred bytes); cleared when full
LATENCY_BUCKETS = (0.00001, 0.000025, 0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025,
                   0.005, 0.01, 0.05)


@dataclass(frozen=True, slots=True)
class _Served:
    """What one plan serves: the table and the fast path's prebuilt responses for it."""

    table: AnswerTable
    cache: FastCache
    # query bytes after the ID -> (variants, response bodies after the ID, cumulative
    # weights, client cookie or None): see the module docstring
    memo: dict[bytes, tuple[Variants, tuple[bytes, ...], tuple[float, ...], bytes | None]] = (
        field(default_factory=dict))


class Latency:
    """A cumulative-less histogram (counts per bucket) of answer times; cheap to observe."""

    def __init__(self) -> None:
        self.counts = [0] * (len(LATENCY_BUCKETS) + 1)
        self.total = 0.0

    def observe(self, seconds: float) -> None:
        self.counts[bisect_left(LATENCY_BUCKETS, seconds)] += 1
        self.total += seconds


class BuiltinDnsServer:
    """The embedded authoritative server; a ``Backend`` (see ``dns_backends.base``).

    ``stats`` holds counters: ``rcode`` (plus ``dropped``), ``qtype``, ``segment`` (counted
    only for queries whose answer depended on the segment) and ``events`` (``errors``,
    ``truncated``, ``tcp_rejected``, ``fast`` answers from the fast path, ``rrl_dropped``,
    ``rrl_slipped``). ``latency`` is the answer-time histogram. The SOA serial starts at
    ``int(time.time())`` and moves +1 per applied plan (dry runs do not move it). After a
    restart it starts again from the clock, so more than one apply per second on average
    before a restart could make it go back; resolvers ignore it, and this server has no
    secondaries.
    """

    name = "builtin"

    def __init__(self, zones: Sequence[Zone], services: Sequence[Service],
                 matcher: SegmentMatcher, listen: Sequence[tuple[str, int]], *,
                 rng: random.Random | None = None, tcp_idle_timeout: float = 10.0,
                 max_tcp_connections: int = 256, fast_path: bool = True,
                 reuse_port: bool = False, rrl: RateLimiter | None = None,
                 query_log_every: int = 0, initial_serial: int | None = None,
                 udp_batch: bool = False, geo: GeoSource | None = None,
                 cookies: dns_cookies.ServerCookies | None = None) -> None:
        self._zones = tuple(zones)
        self._services = tuple(services)
        self._matcher = matcher
        self._clients = ClientMapper(matcher, geo=geo)  # geo: not owned, caller closes
        self._listen = tuple(listen)
        self._rng = rng if rng is not None else random.Random()
        self._tcp_idle = tcp_idle_timeout
        self._max_tcp = max_tcp_connections
        self._fast_enabled = fast_path
        self._reuse_port = reuse_port
        self._udp_batch = udp_batch and udpbatch.available()
        self.rrl = rrl
        self.cookies = cookies if cookies is not None else dns_cookies.DEFAULT
        self._query_log_every = query_log_every
        self._queries = 0
        self._served = self._serve(AnswerTable.empty(
            self._zones, self._services,
            int(time.time()) if initial_serial is None else initial_serial))
        self.bound: list[tuple[str, int]] = []
        self._stats: dict[str, Counter[str]] = {
            "rcode": Counter(), "qtype": Counter(), "segment": Counter(), "events": Counter()}
        # fast-path answers counted per prebuilt set (one dict bump per query), folded
        # into _stats when read or when it grows
        self._fast_hits: dict[Variants, int] = {}
        self._parsed: dict[bytes, Query | None] = {}
        self.latency = Latency()
        self._udp: list[asyncio.DatagramTransport] = []
        self._batched: list[udpbatch.BatchedUdp] = []
        self._tcp_servers: list[asyncio.Server] = []
        self._tcp_tasks: set[asyncio.Task[None]] = set()

    @property
    def stats(self) -> dict[str, Counter[str]]:
        """The counters (see the class docstring), fast-path answers included."""
        self._fold_hits()
        return self._stats

    def _fold_hits(self) -> None:
        hits, self._fast_hits = self._fast_hits, {}
        stats = self._stats
        for variants, count in hits.items():
            info = variants.info
            stats["rcode"][info.rcode] += count
            if info.qtype:
                stats["qtype"][info.qtype] += count
            if info.segment is not None:
                stats["segment"][info.segment] += count
            stats["events"]["fast"] += count

    # -- Backend protocol ---------------------------------------------------------------

    @property
    def current_plan(self) -> Plan | None:
        return self._served.table.plan

    @property
    def table(self) -> AnswerTable:
        return self._served.table

    @property
    def fast_cache(self) -> FastCache:
        return self._served.cache

    async def apply(self, plan: Plan, *, dry_run: bool = False) -> ApplyResult:
        """Build the table for ``plan`` and swap it in whole. The SOA serial moves +1."""
        return self.apply_now(plan, dry_run=dry_run)

    def apply_now(self, plan: Plan, *, dry_run: bool = False) -> ApplyResult:
        """``apply`` without the coroutine, for callers on the loop that must not yield."""
        current = self._served.table
        try:
            table = AnswerTable.build(self._zones, self._services, plan, current.serial + 1)
        except ValueError as exc:
            raise BackendError(self.name, f"plan v{plan.version} not applied: {exc}") from exc
        changed = len((current.plan or Plan()).diff(plan).changes)
        if not dry_run:
            self._served = self._serve(table)  # the atomic swap
        return ApplyResult(self.name, plan.version, changed, dry_run, table.notes)

    def _serve(self, table: AnswerTable) -> _Served:
        return _Served(table, FastCache(
            lambda canonical, segment_of: self._compile(table, canonical, segment_of)))

    def snapshot(self) -> dict[str, Any]:
        """Counters and state as plain data (picklable: worker processes send it over)."""
        table = self._served.table
        return {
            **{key: dict(counter) for key, counter in self.stats.items()},
            "latency": list(self.latency.counts), "latency_sum": self.latency.total,
            "plan_version": table.plan.version if table.plan is not None else 0,
            "serial": table.serial, "tcp_connections": len(self._tcp_tasks),
            "fast_cache_entries": len(self._served.cache),
        }

    async def start(self) -> None:
        """Bind UDP and TCP on every listener (same port for both; 0 = a free one)."""
        try:
            for host, port in self._listen:
                self.bound.append(await self._bind(host, port))
        except BaseException:
            await self.aclose()
            raise

    async def aclose(self) -> None:
        for batched in self._batched:
            batched.close()
        self._batched = []
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
        reuse = self._reuse_port or None
        for _attempt in range(20 if port == 0 else 1):
            server = await asyncio.start_server(self._serve_tcp, host, port, reuse_port=reuse,
                                                backlog=max(self._max_tcp, 100))
            actual: int = server.sockets[0].getsockname()[1]
            try:
                if self._udp_batch:
                    self._batched.append(self._bind_batched(loop, host, actual))
                else:
                    transport, _ = await loop.create_datagram_endpoint(
                        lambda: _UdpProtocol(self), local_addr=(host, actual),
                        reuse_port=reuse)
                    sock = transport.get_extra_info("socket")
                    if sock is not None:  # room for bursts: the default queue is small
                        with contextlib.suppress(OSError):
                            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
                    self._udp.append(transport)
            except OSError:
                server.close()
                await server.wait_closed()
                if port != 0:
                    raise
                continue  # the kernel's free TCP port is taken for UDP: try another
            self._tcp_servers.append(server)
            log.info("builtin DNS listening on %s port %d (udp+tcp)", host, actual)
            return host, actual
        raise OSError(f"no port free for both UDP and TCP on {host}")

    def _bind_batched(self, loop: asyncio.AbstractEventLoop, host: str,
                      port: int) -> udpbatch.BatchedUdp:
        info = socket.getaddrinfo(host, port, type=socket.SOCK_DGRAM,
                                  flags=socket.AI_NUMERICHOST | socket.AI_PASSIVE)[0]
        sock = socket.socket(info[0], socket.SOCK_DGRAM)
        try:
            if info[0] == socket.AF_INET6:
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            if self._reuse_port:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
            sock.bind(info[4])
            batched = udpbatch.BatchedUdp(sock, self._udp_handler(),
                                          self._count_send_drops)
        except BaseException:
            sock.close()
            raise
        batched.start(loop)
        return batched

    def _udp_handler(self) -> Callable[[bytes, str], bytes | None]:
        return self.handle if self.rrl is None else self.handle_udp

    def _count_send_drops(self, count: int) -> None:
        self._stats["events"]["udp_send_dropped"] += count

    # -- transports ---------------------------------------------------------------------

    async def _serve_tcp(self, reader: asyncio.StreamReader,
                         writer: asyncio.StreamWriter) -> None:
        """RFC 7766: length-prefixed messages, several per connection, answered in order."""
        task = asyncio.current_task()
        if len(self._tcp_tasks) >= self._max_tcp or task is None:
            self._stats["events"]["tcp_rejected"] += 1
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

    def handle_udp(self, wire: bytes, peer: str) -> bytes | None:
        """``handle`` plus response rate limiting (UDP only)."""
        reply = self.handle(wire, peer, tcp=False)
        if reply is None or self.rrl is None:
            return reply
        verdict = self.rrl.check(peer)
        if verdict is Verdict.SEND or self._cookie_ok(wire, peer):
            return reply
        if verdict is Verdict.SLIP:
            self._stats["events"]["rrl_slipped"] += 1
            return truncated(reply)
        self._stats["events"]["rrl_dropped"] += 1
        return None

    def _cookie_ok(self, wire: bytes, peer: str) -> bool:
        """Whether ``wire`` carries a valid server cookie of ours for ``peer`` (only for
        queries the fast path parses: checked only over the rate limit)."""
        query = parse(wire, self._parsed)
        return query is not None and query.cookie is not None and self.cookies.valid(
            query.cookie, peer)

    # -- query handling -----------------------------------------------------------------

    def handle(self, wire: bytes, peer: str, tcp: bool = False) -> bytes | None:
        """The reply to one query (None = send nothing). Never raises: errors -> SERVFAIL."""
        started = time.perf_counter()
        reply: bytes | None
        try:
            hit = self._served.memo.get(wire[2:])
            if hit is not None:  # a repeated query: its responses are ready but for the ID
                variants, bodies, cum, client = hit
                reply = wire[:2] + (bodies[0] if len(bodies) == 1 else bodies[
                    bisect_right(cum, self._rng.random() * cum[-1])])
                if client is not None:  # the bodies end with the client cookie
                    reply += self.cookies.make(client, peer)
                hits = self._fast_hits
                hits[variants] = hits.get(variants, 0) + 1
            else:
                reply = self._fast(wire, peer, tcp) if self._fast_enabled else None
                if reply is None:
                    reply = self._handle(wire, peer, tcp)
        except Exception:
            log.exception("builtin DNS: query from %s failed; answering SERVFAIL", peer)
            self._stats["events"]["errors"] += 1
            self._count(dns.rcode.SERVFAIL)
            try:
                reply = _header_reply(wire, dns.rcode.SERVFAIL)
            except Exception:  # pragma: no cover - a header reply only packs integers
                log.exception("builtin DNS: cannot even answer SERVFAIL")
                return None
        elapsed = time.perf_counter() - started
        latency = self.latency  # Latency.observe, inlined: this runs for every query
        latency.counts[bisect_left(LATENCY_BUCKETS, elapsed)] += 1
        latency.total += elapsed
        if self._query_log_every:
            self._queries += 1
            if self._queries % self._query_log_every == 0:
                _log_query(peer, tcp, reply)
        return reply

    def _fast(self, wire: bytes, peer: str, tcp: bool) -> bytes | None:
        query = parse(wire, self._parsed)
        if query is None:
            return None
        served = self._served
        cache = served.cache
        entry = cache.entries.get(query.key, _MISSING)
        scope = 0
        depends = True
        variants: Variants | None
        if entry is _MISSING:
            scopes: list[int] = []

            def segment_of() -> str:
                segment, found = self._client(query, peer)
                scopes.append(found)
                return segment

            variants, depends = cache.compile(query.key, query.canonical(wire), segment_of)
            if depends and scopes:
                scope = scopes[0]
        elif entry is None:
            return None
        elif entry.static is not None:
            variants = entry.static
            depends = False
        else:
            segment, scope = self._client(query, peer)
            variants = entry.by_segment.get(segment)
            if variants is None:
                variants = cache.compile_segment(entry, query.canonical(wire), segment)
        if variants is None:
            return None
        cookie = query.cookie
        reply = variants.answer(self._rng, wire, query, scope,
                                b"" if cookie is None else self.cookies.option(cookie, peer))
        if len(reply) > query.limit:
            if not tcp:
                return None  # the dnspython path truncates it properly
        elif not depends or (query.ecs is not None and query.ecs[2]):
            memo = served.memo  # the responses depend on nothing but the query's bytes
            if len(memo) >= MEMO_MAX:
                memo.clear()
            client = None if cookie is None else cookie[:dns_cookies.CLIENT]
            pending = 0 if client is None else dns_cookies.SERVER
            bodies = variants.bodies(
                wire, query, scope, b"" if client is None else dns_cookies.PREFIX + client,
                pending)
            if 2 + max(map(len, bodies)) + pending <= query.limit:  # every draw fits UDP
                memo[wire[2:]] = (variants, bodies, variants.cum, client)
        hits = self._fast_hits
        hits[variants] = hits.get(variants, 0) + 1
        if len(hits) > 4096:
            self._fold_hits()
        return reply

    def _client(self, query: Query, peer: str) -> tuple[str, int]:
        """(segment, ECS scope) for a fast-path query: from its ECS option, else the peer."""
        ecs = query.ecs
        if ecs is not None and ecs[2]:
            found = query.client  # memoised on the (per-server) parsed query
            if found is None:
                found = query.client = self._clients.for_ecs(ecs[1], ecs[2], ecs[4:])
            return found
        return self._clients.for_peer(peer), 0

    def _compile(self, table: AnswerTable, canonical: bytes,
                 segment_of: Callable[[], str]) -> tuple[Variants | None, bool]:
        """Every response the dnspython path can give to ``canonical``, with its chance."""
        try:
            query = dns.message.from_wire(canonical, keyring=False)
        except Exception:
            return None, False
        asked = False

        def segment() -> str:
            nonlocal asked
            asked = True
            return segment_of()

        try:
            outcomes = enumerate_outcomes(
                lambda script: self._render(table, query, segment, script, None, TCP_MAX))
        except TooManyOutcomes:
            return None, asked
        infos = {info for _, (_, info) in outcomes}  # Info compares by value
        if len(infos) != 1:
            return None, asked  # e.g. one draw chases into NOERROR, another into SERVFAIL
        shape = parse(canonical)
        assert shape is not None  # canonical queries are what the fast path parses
        return Variants.build([(p, reply) for p, (reply, _) in outcomes], infos.pop(),
                              shape.qend, shape.edns), asked

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
        if tcp:
            limit = TCP_MAX
        elif query.edns >= 0:
            limit = min(max(query.payload, NO_EDNS_PAYLOAD), OUR_PAYLOAD)
        else:
            limit = NO_EDNS_PAYLOAD
        ecs = _ecs_option(query)
        cookie = _cookie_option(query)
        if cookie is not None:
            cookie = dns.edns.CookieOption(cookie.client,
                                           self.cookies.make(cookie.client, peer))
        clients = self._clients

        def segment_of() -> str:
            if ecs is not None and ecs.srclen > 0:
                return clients.for_ecs(*_ecs_key(ecs))[0]
            return clients.for_peer(peer)

        reply, info = self._render(self._served.table, query, segment_of, self._rng, ecs,
                                   limit, cookie)
        stats = self._stats
        stats["rcode"][info.rcode] += 1
        if info.qtype:
            stats["qtype"][info.qtype] += 1
        if info.segment is not None:
            stats["segment"][info.segment] += 1
        if int.from_bytes(reply[2:4], "big") & dns.flags.TC:
            stats["events"]["truncated"] += 1
        return reply

    def _render(self, table: AnswerTable, query: dns.message.Message,
                segment_of: Callable[[], str], rng: random.Random,
                ecs: dns.edns.ECSOption | None, limit: int,
                cookie: dns.edns.CookieOption | None = None) -> tuple[bytes, Info]:
        """The reply to a parsed query, and what to count. Pure: touches no counters.

        With EDNS the reply echoes DO (RFC 3225) and, when the query had one, the ECS
        option (scope 0 unless the answer came from segment matching), then ``cookie``
        (the response's COOKIE option) when given.
        """
        response = dns.message.make_response(query, our_payload=OUR_PAYLOAD)
        # make_response echoes RD; RA stays 0: we never recurse.
        info: Info
        rcode = _early_rcode(query)
        segment: str | None = None
        if rcode is not None:
            info = Info(dns.rcode.to_text(rcode), "", None)
        elif query.question[0].rdclass != dns.rdataclass.IN:
            rcode = dns.rcode.REFUSED
            info = Info("REFUSED", dns.rdatatype.to_text(query.question[0].rdtype), None)
        else:
            question = query.question[0]
            result = table.resolve(question.name, question.rdtype, segment_of, rng)
            response.answer.extend(result.answer)
            response.authority.extend(result.authority)
            response.additional.extend(result.additional)
            if result.authoritative:
                response.flags |= dns.flags.AA
            rcode, segment = result.rcode, result.segment
            info = Info(dns.rcode.to_text(rcode), dns.rdatatype.to_text(question.rdtype),
                        segment)
        if query.edns >= 0:
            options: list[dns.edns.Option] = []
            if ecs is not None:
                scope = 0
                if segment is not None and ecs.srclen > 0 and self._clients.address_dependent:
                    scope = self._clients.for_ecs(*_ecs_key(ecs))[1]
                options.append(dns.edns.ECSOption(ecs.address, ecs.srclen, scope))
            if cookie is not None:
                options.append(cookie)
            response.use_edns(0, query.ednsflags & dns.flags.DO, OUR_PAYLOAD, query.payload,
                              pad=response.pad, options=options)
        return _to_wire(query, response, rcode, limit), info

    def _count(self, rcode: dns.rcode.Rcode | None) -> None:
        key = "dropped" if rcode is None else dns.rcode.to_text(rcode)
        self._stats["rcode"][key] += 1


def _to_wire(query: dns.message.Message, response: dns.message.Message,
             rcode: dns.rcode.Rcode, limit: int) -> bytes:
    response.set_rcode(rcode)
    # No shuffle: dnspython would reorder RRsets with the global RNG; the order here is the
    # weighted draw order (``answers.select``), and fixed order keeps the two paths equal.
    return response.to_wire(max_size=limit, prefer_truncation=True, want_shuffle=False)


def _ecs_key(ecs: dns.edns.ECSOption) -> tuple[int, int, bytes]:
    """(family, source prefix, address bytes) of a parsed ECS option."""
    return (2 if ":" in ecs.address else 1), ecs.srclen, ecs.addrdata


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


def _cookie_option(query: dns.message.Message) -> dns.edns.CookieOption | None:
    for option in query.options:
        if isinstance(option, dns.edns.CookieOption):
            return option
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


def truncate_client(peer: str) -> str:
    """A client address cut to its /24 (IPv4) or /48 (IPv6) for logs: no full addresses."""
    try:
        address = ipaddress.ip_address(peer)
    except ValueError:
        return "?"
    plen = 24 if address.version == 4 else 48
    return str(ipaddress.ip_network(f"{address}/{plen}", strict=False))


def _log_query(peer: str, tcp: bool, reply: bytes | None) -> None:
    client = truncate_client(peer)
    if reply is None:
        qlog.info("client=%s proto=%s dropped", client, "tcp" if tcp else "udp")
        return
    try:
        msg = dns.message.from_wire(reply, keyring=False, ignore_trailing=True)
        question = (f"{msg.question[0].name} {dns.rdatatype.to_text(msg.question[0].rdtype)}"
                    if msg.question else "-")
        rcode = dns.rcode.to_text(msg.rcode())
    except Exception:
        question, rcode = "?", "?"
    qlog.info("client=%s proto=%s q=%s rcode=%s size=%d", client, "tcp" if tcp else "udp",
              question, rcode, len(reply))


class _UdpProtocol(asyncio.DatagramProtocol):
    def __init__(self, server: BuiltinDnsServer) -> None:
        self._server = server
        self._transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = cast(asyncio.DatagramTransport, transport)

    def datagram_received(self, data: bytes, addr: tuple[str | int, ...]) -> None:
        host = addr[0]
        peer = host if isinstance(host, str) and "%" not in host else _peer_host(addr)
        server = self._server
        reply = server.handle(data, peer, tcp=False) if server.rrl is None else (
            server.handle_udp(data, peer))
        if reply is not None and self._transport is not None:
            self._transport.sendto(reply, addr)

    def error_received(self, exc: Exception) -> None:
        log.debug("builtin DNS: UDP error: %r", exc)
