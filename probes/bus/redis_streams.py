"""Measurement bus on Redis Streams (many nodes): agents XADD, engines read via a consumer group.

Wire format (one stream entry carries a *batch* of measurements, so that 20 agents publishing
at full rate cost a few hundred XADDs per second, not tens of thousands)::

    XADD <stream> MAXLEN ~ <maxlen> * v 1 m <JSON array of rows>

    row = [node, link, target, kind, at, window_s, sent, received, loss,
           rtt_min, rtt_p50, rtt_p95, rtt_p99, rtt_max, rtt_mean,
           jitter_s, mean_abs_diff_s, ewma_rtt, error_kind, error_detail, errors]

Times are seconds as JSON numbers (``repr`` round-trips a float exactly); absent rtts and a
missing last error are ``null``; ``errors`` is ``{kind: count}`` or ``null``. ``v`` is the
row format; an entry with an unknown ``v`` or a malformed row is skipped and counted, never
fatal. ``MAXLEN ~`` bounds the stream in *entries* (batches of at most ``batch_max`` rows):
trimming is approximate (whole radix-tree nodes), which keeps XADD O(1).

Publishing never waits for Redis: ``publish`` appends to a bounded buffer that a background
task flushes with one pipeline of XADDs. While Redis is unreachable the buffer keeps the newest
``buffer_max`` measurements, drops the oldest first and counts each drop
(``edgesteer_bus_dropped_total``); when Redis is back the rest is sent. Delivery is at least
once: an XADD whose reply was lost is sent again.

Reading: each subscription is one consumer (``consumer``) in the group ``group``. It first
re-reads its own pending entries (a restart under the same name), takes over entries that
another consumer has left pending for ``claim_idle_s`` (XAUTOCLAIM: a dead engine), then reads
new entries (XREADGROUP ``>``). A batch is acknowledged (XACK) when the reader asks for the
item after its last row, i.e. after it was processed. Redelivered duplicates are filtered: a
measurement that is not newer than the last one delivered for its path is dropped. Engines that
each need every measurement use *different* groups (the default group is per engine); engines
that share a group split the stream between them. Redis errors never end a subscription: it
logs once per outage, backs off and resumes (a restarted, empty Redis gets its group back).

Works with a single Redis, Sentinel (the client follows the master) and Cluster. The stream is
one key, so it lives in one slot; the coordination keys of ``edge.leader`` and ``edge.history``
use the hash tag ``{prefix}`` so that each Lua script's keys share a slot.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import socket
from collections import deque
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any, TypeAlias, get_args

import redis.asyncio as aioredis
from prometheus_client import Counter, Gauge
from redis.asyncio.cluster import ClusterNode, RedisCluster
from redis.asyncio.sentinel import Sentinel
from redis.exceptions import RedisError, ResponseError

from probes.measurement import Measurement, PathKey, ProbeError, ProbeErrorKind, ProbeKind

log = logging.getLogger(__name__)

RedisClient: TypeAlias = "aioredis.Redis | RedisCluster"

FORMAT = b"1"
_KINDS = {k.value: k for k in ProbeKind}
_ROW_LEN = 21

DROPPED = Counter("edgesteer_bus_dropped_total",
                  "Measurements dropped by an agent's Redis buffer (full while Redis was away)")
PUBLISHED = Counter("edgesteer_bus_published_total", "Measurements written to the Redis stream")
BUFFERED = Gauge("edgesteer_bus_buffered", "Measurements waiting in agents' Redis buffers")
BAD_ENTRIES = Counter("edgesteer_bus_bad_entries_total",
                      "Stream entries skipped because they could not be decoded")
BUS_ERRORS = Counter("edgesteer_bus_redis_errors_total", "Redis errors met by the bus",
                     ["side"])


class BusClosed(RuntimeError):
    """Publishing to a bus after ``aclose()``."""


class BadEntry(ValueError):
    """A stream entry or row that is not a measurement in the documented format."""


# --- connection -------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class RedisSettings:
    """Where Redis is and how to log in. Exactly one of ``url``, ``sentinels``, ``cluster``
    decides the mode (``url`` is used when the other two are empty)."""

    url: str = "redis://127.0.0.1:6379/0"
    sentinels: tuple[tuple[str, int], ...] = ()
    master: str = "mymaster"
    cluster: tuple[tuple[str, int], ...] = ()
    username: str | None = None
    password: str | None = None
    tls: bool = False
    tls_ca_file: str | None = None
    tls_cert_file: str | None = None
    tls_key_file: str | None = None
    tls_verify: bool = True
    connect_timeout_s: float = 2.0
    socket_timeout_s: float = 5.0

    @property
    def mode(self) -> str:
        return "cluster" if self.cluster else "sentinel" if self.sentinels else "single"


def _tls_kwargs(s: RedisSettings) -> dict[str, Any]:
    if not s.tls:
        return {}
    return {"ssl": True, "ssl_ca_certs": s.tls_ca_file, "ssl_certfile": s.tls_cert_file,
            "ssl_keyfile": s.tls_key_file,
            "ssl_cert_reqs": "required" if s.tls_verify else "none",
            "ssl_check_hostname": s.tls_verify}


def connect(s: RedisSettings) -> RedisClient:
    """A client for ``s`` (no I/O yet). Raw bytes replies: the bus decodes JSON itself."""
    common: dict[str, Any] = {"username": s.username, "password": s.password,
                              "socket_connect_timeout": s.connect_timeout_s,
                              "socket_timeout": s.socket_timeout_s}
    tls = _tls_kwargs(s)
    if s.cluster:
        return RedisCluster(startup_nodes=[ClusterNode(h, p) for h, p in s.cluster],
                            **common, **tls)
    if s.sentinels:
        sentinel_kwargs = {"socket_connect_timeout": s.connect_timeout_s,
                           "socket_timeout": s.socket_timeout_s, **tls}
        sentinel = Sentinel(  # type: ignore[no-untyped-call]
            list(s.sentinels), sentinel_kwargs=sentinel_kwargs, **common, **tls)
        client: aioredis.Redis = sentinel.master_for(s.master)
        return client
    if s.tls and s.url.startswith("redis://"):
        tls.pop("ssl")  # from_url picks the connection class from the scheme
        return aioredis.Redis.from_url("rediss://" + s.url.removeprefix("redis://"),
                                       **common, **tls)
    return aioredis.Redis.from_url(s.url, **common, **tls)


async def close_client(client: RedisClient) -> None:
    """Close ``client`` and, for Sentinel mode, its connections to the sentinels too."""
    manager = getattr(getattr(client, "connection_pool", None), "sentinel_manager", None)
    await client.aclose()
    for sentinel in getattr(manager, "sentinels", ()):
        await sentinel.aclose()


# --- wire format ------------------------------------------------------------------------


def encode_row(m: Measurement) -> list[Any]:
    err = m.last_error
    return [m.path.node, m.path.link, m.path.target, m.kind.value, m.at, m.window_s, m.sent,
            m.received, m.loss, m.rtt_min, m.rtt_p50, m.rtt_p95, m.rtt_p99, m.rtt_max,
            m.rtt_mean, m.jitter_s, m.mean_abs_diff_s, m.ewma_rtt,
            err.kind if err is not None else None, err.detail if err is not None else None,
            dict(m.errors) if m.errors else None]


def encode_batch(ms: Iterable[Measurement]) -> dict[bytes, bytes]:
    """The fields of one stream entry holding ``ms``."""
    body = json.dumps([encode_row(m) for m in ms], separators=(",", ":"), allow_nan=False)
    return {b"v": FORMAT, b"m": body.encode()}


_NUMBER = (float, int)  # exact types: a JSON true/false is a bool and is refused


def _bad_number(values: tuple[Any, ...]) -> bool:
    """True unless every value is a finite int/float (None allowed: callers pass only what
    must be set, plus the optional ones that are)."""
    for x in values:  # noqa: SIM110 - a plain loop: this runs per measurement
        if type(x) not in _NUMBER or x - x != 0:  # x - x is nan for inf and nan
            return True
    return False


def _count(x: object, what: str) -> int:
    if type(x) is not int or x < 0:
        raise BadEntry(f"{what}: expected a count, found {x!r}")
    return x


def _text(x: object, what: str) -> str:
    if type(x) is not str or not x:
        raise BadEntry(f"{what}: expected a non-empty string, found {x!r}")
    return x


_NO_ERRORS: Mapping[str, int] = MappingProxyType({})
_ERROR_KINDS = frozenset(get_args(ProbeErrorKind))


def decode_row(row: object) -> Measurement:
    """One row (see the module docstring); raises BadEntry. Kept lean: it runs per
    measurement on the engine (tens of thousands a second)."""
    if type(row) is not list or len(row) != _ROW_LEN:
        raise BadEntry(f"expected a row of {_ROW_LEN} items, found {str(row)[:80]}")
    (node, link, target, kind_text, at, window_s, sent, received, loss, rtt_min, rtt_p50,
     rtt_p95, rtt_p99, rtt_max, rtt_mean, jitter_s, mad, ewma, err_kind, err_detail,
     errors) = row
    kind = _KINDS.get(kind_text) if type(kind_text) is str else None
    if kind is None:
        raise BadEntry(f"unknown probe kind {kind_text!r}")
    optional = tuple(x for x in (rtt_min, rtt_p50, rtt_p95, rtt_p99, rtt_max, rtt_mean, ewma)
                     if x is not None)
    if _bad_number((at, window_s, loss, jitter_s, mad, *optional)):
        raise BadEntry(f"expected finite numbers in at..ewma_rtt, found {row[4:18]!r}")
    if not 0.0 <= loss <= 1.0:
        raise BadEntry(f"loss: expected 0..1, found {loss}")
    last_error = None
    if err_kind is not None:
        if err_kind not in _ERROR_KINDS or type(err_detail) is not str:
            raise BadEntry(f"bad last error {err_kind!r}: {err_detail!r}")
        last_error = ProbeError(err_kind, err_detail)
    counts = _NO_ERRORS
    if errors is not None:
        if type(errors) is not dict:
            raise BadEntry(f"errors: expected a mapping, found {errors!r}")
        counts = MappingProxyType({_text(k, "error kind"): _count(v, "error count")
                                   for k, v in errors.items()})
    if type(node) is not str or type(link) is not str or type(target) is not str \
            or not (node and link and target):
        raise BadEntry(f"expected node, link and target names, found {row[:3]!r}")
    return Measurement(
        PathKey(node, link, target), kind, at, window_s, _count(sent, "sent"),
        _count(received, "received"), loss, rtt_min, rtt_p50, rtt_p95, rtt_p99, rtt_max,
        rtt_mean, jitter_s, mad, ewma, last_error, counts)


def decode_entry(fields: Mapping[Any, Any]) -> list[Measurement]:
    """The measurements of one stream entry; raises BadEntry (nothing half-decoded)."""
    version = fields.get(b"v", fields.get("v"))
    body = fields.get(b"m", fields.get("m"))
    if version not in (FORMAT, FORMAT.decode()) or not isinstance(body, bytes | str):
        raise BadEntry(f"unknown entry format v={version!r}")
    try:
        rows = json.loads(body)
    except (ValueError, RecursionError) as exc:
        raise BadEntry(f"not JSON: {exc}") from None
    if not isinstance(rows, list):
        raise BadEntry("expected a JSON array of rows")
    return [decode_row(r) for r in rows]


# --- the bus ----------------------------------------------------------------------------


def default_consumer() -> str:
    return f"{socket.gethostname()}-{os.getpid()}"


def _transient(exc: BaseException) -> bool:
    return isinstance(exc, RedisError | OSError | TimeoutError)


def reraise_if_cancelled() -> None:
    """Call in a handler of Redis errors inside a retry loop: a cancellation that the client
    turned into an error (it can, mid-read) must still end the task."""
    task = asyncio.current_task()
    if task is not None and task.cancelling():
        raise asyncio.CancelledError


class RedisStreamsBus:
    """Implements :class:`probes.bus.MeasurementBus` over one Redis stream."""

    def __init__(self, client: RedisClient, *, stream: str = "edgesteer:measurements",
                 maxlen: int = 100_000, group: str = "engines", consumer: str | None = None,
                 buffer_max: int = 100_000, batch_max: int = 256, pipeline_max: int = 64,
                 read_count: int = 64, block_ms: int = 500, claim_idle_s: float = 10.0,
                 retry_max_s: float = 2.0) -> None:
        if buffer_max < 1 or batch_max < 1 or maxlen < 1:
            raise ValueError("buffer_max, batch_max and maxlen must be >= 1")
        self.client = client
        self.stream = stream
        self.maxlen = maxlen
        self.group = group
        self.consumer = consumer or default_consumer()
        self._buffer: deque[Measurement] = deque()
        self._buffer_max = buffer_max
        self._batch_max = batch_max
        self._pipeline_max = pipeline_max
        self.read_count = read_count
        self.block_ms = block_ms
        self.claim_idle_s = claim_idle_s
        self.retry_max_s = retry_max_s
        self._wake = asyncio.Event()
        self._idle = asyncio.Event()
        self._idle.set()
        self._sender: asyncio.Task[None] | None = None
        self._closed = False
        self.dropped = 0  # measurements dropped from the buffer (oldest first)
        self.sent = 0  # measurements written to the stream
        self.outages = 0  # times the sender lost Redis

    # publishing -------------------------------------------------------------------------

    @property
    def closed(self) -> bool:
        return self._closed

    @property
    def buffered(self) -> int:
        return len(self._buffer)

    async def publish(self, measurement: Measurement) -> None:
        """Queue ``measurement`` for the stream; never waits for Redis."""
        if self._closed:
            raise BusClosed("publish on a closed RedisStreamsBus")
        self._put([measurement])
        if self._sender is None or self._sender.done():
            self._sender = asyncio.create_task(self._send_loop(), name="redis-bus-sender")

    def _put(self, items: Sequence[Measurement], *, front: bool = False) -> None:
        if front:
            self._buffer.extendleft(reversed(items))
        else:
            self._buffer.extend(items)
        over = len(self._buffer) - self._buffer_max
        if over > 0:
            for _ in range(over):
                self._buffer.popleft()  # the oldest go first: newest data is worth more
            self.dropped += over
            DROPPED.inc(over)
        BUFFERED.set(len(self._buffer))
        self._idle.clear()
        self._wake.set()

    async def flush(self, wait_s: float | None = None) -> bool:
        """Wait until the buffer has been written (True) or ``wait_s`` passed (False)."""
        try:
            async with asyncio.timeout(wait_s):
                await self._idle.wait()
        except TimeoutError:
            return False
        return True

    async def _send_loop(self) -> None:
        delay = 0.05
        while not self._closed or self._buffer:
            if not self._buffer:
                self._idle.set()
                self._wake.clear()
                await self._wake.wait()
                continue
            batches = self._take()
            try:
                await self._xadd(batches)
            except Exception as exc:
                if not _transient(exc):
                    raise
                self._put([m for b in batches for m in b], front=True)
                reraise_if_cancelled()
                if delay == 0.05:
                    self.outages += 1
                    BUS_ERRORS.labels("agent").inc()
                    log.warning("redis bus: cannot write to %s (%s); buffering up to %d "
                                "measurements", self.stream, exc, self._buffer_max)
                if self._closed:
                    return
                await asyncio.sleep(delay)
                delay = min(delay * 2, self.retry_max_s)
                continue
            if delay > 0.05:
                log.warning("redis bus: writing to %s again", self.stream)
            delay = 0.05
            n = sum(len(b) for b in batches)
            self.sent += n
            PUBLISHED.inc(n)
            BUFFERED.set(len(self._buffer))

    def _take(self) -> list[list[Measurement]]:
        batches: list[list[Measurement]] = []
        while self._buffer and len(batches) < self._pipeline_max:
            n = min(self._batch_max, len(self._buffer))
            batches.append([self._buffer.popleft() for _ in range(n)])
        return batches

    async def _xadd(self, batches: list[list[Measurement]]) -> None:
        pipe = self.client.pipeline(transaction=False)
        for batch in batches:
            pipe.xadd(self.stream, encode_batch(batch),  # type: ignore[arg-type]
                      maxlen=self.maxlen, approximate=True)
        await pipe.execute()

    # reading ----------------------------------------------------------------------------

    def subscribe(self) -> RedisSubscription:
        """Read the stream through the consumer group (created at the end if missing)."""
        return RedisSubscription(self)

    async def aclose(self, flush_timeout: float = 2.0) -> None:
        """Try to write what is buffered (up to ``flush_timeout``), then close the client."""
        if self._closed:
            return
        self._closed = True
        self._wake.set()
        if self._sender is not None:
            try:
                async with asyncio.timeout(flush_timeout):
                    await asyncio.shield(self._sender)
            except TimeoutError:
                self._sender.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await self._sender
            if self._buffer:
                log.warning("redis bus: closing with %d measurements unsent", len(self._buffer))
        await close_client(self.client)


class RedisSubscription:
    """One consumer of the group: an async iterator of Measurements (see module docstring)."""

    def __init__(self, bus: RedisStreamsBus) -> None:
        self._bus = bus
        self._rows: deque[Measurement] = deque()
        self._to_ack: list[bytes] = []
        self._last_at: dict[PathKey, float] = {}
        self._phase = "pending"  # pending -> claim -> new
        self._group_start = "$"  # a first group starts at the end: history is old news
        self._claim_cursor: bytes | str = "0-0"
        self._next_claim = 0.0
        self._closed = False
        self._down_since: float | None = None
        self.received = 0  # measurements handed out
        self.duplicates = 0  # redelivered measurements filtered out
        self.bad = 0  # entries skipped as undecodable
        self.claimed = 0  # entries taken over from other consumers

    def __aiter__(self) -> RedisSubscription:
        return self

    async def __anext__(self) -> Measurement:
        while not self._rows:
            if self._closed or self._bus.closed:
                raise StopAsyncIteration
            await self._fill()
        self.received += 1
        return self._rows.popleft()

    async def aclose(self) -> None:
        self._closed = True
        if self._to_ack and not self._bus.closed:
            with contextlib.suppress(RedisError, OSError, TimeoutError):
                await self._ack()

    async def _fill(self) -> None:
        delay = 0.05
        while not self._rows and not self._closed and not self._bus.closed:
            try:
                if self._to_ack:
                    await self._ack()
                await self._read()
            except Exception as exc:
                if not _transient(exc):
                    raise
                reraise_if_cancelled()
                if isinstance(exc, ResponseError) and "NOGROUP" in str(exc):
                    # Redis lost its data (restart without persistence) or the stream was
                    # deleted: the stream is new, so read it from its start.
                    self._phase, self._group_start = "pending", "0"
                    self._to_ack = []  # entries of the lost stream
                    continue
                if self._down_since is None:
                    self._down_since = asyncio.get_running_loop().time()
                    BUS_ERRORS.labels("engine").inc()
                    log.warning("redis bus: cannot read %s (%s); retrying",
                                self._bus.stream, exc)
                await asyncio.sleep(delay)
                delay = min(delay * 2, self._bus.retry_max_s)
                continue
            if self._down_since is not None:
                log.warning("redis bus: reading %s again", self._bus.stream)
                self._down_since = None
            delay = 0.05

    async def _ensure_group(self) -> None:
        try:
            await self._bus.client.xgroup_create(self._bus.stream, self._bus.group,
                                                 id=self._group_start, mkstream=True)
        except ResponseError as exc:
            if "BUSYGROUP" not in str(exc):
                raise
        self._group_start = "$"

    async def _ack(self) -> None:
        ids, self._to_ack = self._to_ack, []
        try:
            await self._bus.client.xack(self._bus.stream, self._bus.group, *ids)
        except BaseException:
            self._to_ack = ids + self._to_ack
            raise

    async def _read(self) -> None:
        bus = self._bus
        now = asyncio.get_running_loop().time()
        reply: Any
        if self._phase == "pending":
            await self._ensure_group()
            reply = await bus.client.xreadgroup(bus.group, bus.consumer, {bus.stream: "0"},
                                                count=bus.read_count)
            entries = _entries(reply)
            if not entries:
                self._phase = "claim"
            self._take(entries)
            return
        if self._phase == "claim" or now >= self._next_claim:
            reply = await bus.client.xautoclaim(
                bus.stream, bus.group, bus.consumer, int(bus.claim_idle_s * 1000),
                start_id=self._claim_cursor, count=bus.read_count)
            cursor: bytes | str = reply[0]
            claimed: list[Any] = reply[1]
            self.claimed += len(claimed)
            self._take([e for e in claimed if e is not None and e[1] is not None])
            done = cursor in (b"0-0", "0-0")
            self._claim_cursor = "0-0" if done else cursor
            if done:
                self._phase = "new"
                self._next_claim = now + max(bus.claim_idle_s / 2, 0.5)
            return
        reply = await bus.client.xreadgroup(bus.group, bus.consumer, {bus.stream: ">"},
                                            count=bus.read_count, block=bus.block_ms)
        self._take(_entries(reply))

    def _take(self, entries: Sequence[Any]) -> None:
        for entry_id, fields in entries:
            self._to_ack.append(entry_id)
            if not fields:
                continue
            try:
                batch = decode_entry(fields)
            except BadEntry as exc:
                self.bad += 1
                BAD_ENTRIES.inc()
                log.warning("redis bus: skipping entry %r of %s: %s", entry_id,
                            self._bus.stream, exc)
                continue
            for m in batch:
                last = self._last_at.get(m.path)
                if last is not None and m.at <= last:
                    self.duplicates += 1
                    continue
                self._last_at[m.path] = m.at
                self._rows.append(m)


def _entries(reply: Any) -> list[Any]:
    """The entries of an XREADGROUP reply for one stream (RESP2 list or RESP3 mapping)."""
    if not reply:
        return []
    if isinstance(reply, dict):
        for value in reply.values():
            return list(value[0] if value and isinstance(value[0], list) else value)
        return []
    return list(reply[0][1])
