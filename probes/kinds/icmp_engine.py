"""ICMP echo engine: many echoes in flight over one socket per (link, address family).

Why not icmplib's own ``async_ping`` / ``async_multiping``: they open one socket per target,
and every raw ICMP socket receives every reply on the host, so beyond a few dozen echoes in
flight each reply is parsed N times, rtts inflate and false loss appears; a lost echo also
holds its socket for a full timeout. Here each link has one socket, the echoes of all its
targets are told apart by **sequence number** (and, on raw sockets, by our identifier), and
a single reader callback on the event loop matches replies to the waiting probes.

Timing: the send time is taken right before ``sendto``; the receive time is the kernel's
receive timestamp of the reply (``SO_TIMESTAMPNS`` ancillary data from ``recvmsg``), so the
time a reply waits in the socket buffer for a busy event loop is not counted. Both are wall
clock (the kernel stamps with CLOCK_REALTIME); if that difference is not plausible (a clock
step) the monotonic userspace difference is used instead.

Sockets: a raw socket (root or CAP_NET_RAW) or the Linux unprivileged ICMP datagram socket
(gid within ``net.ipv4.ping_group_range``), in the order asked for; icmplib creates and binds
them, builds the echo requests and parses the replies. On datagram sockets the kernel owns
the identifier and delivers only our replies; raw sockets get an ICMP type filter so the
kernel hands us only echo replies and errors.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import os
import random
import socket
import struct
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from icmplib import (
    ICMPLibError,
    ICMPv4Socket,
    ICMPv6Socket,
    SocketAddressError,
    SocketPermissionError,
)

from probes.kinds._net import BindingError, apply_link_options, classify, resolve
from probes.kinds.base import Outcome
from probes.measurement import ProbeError
from probes.spec import LinkBinding

log = logging.getLogger(__name__)

_PING_GROUP_RANGE = "/proc/sys/net/ipv4/ping_group_range"
SO_TIMESTAMPNS: int = getattr(socket, "SO_TIMESTAMPNS", 35)  # Linux value; absent in 3.11
_TIMESPEC = struct.Struct("@qq")
_U16 = struct.Struct("!H")
_SOL_RAW = 255
_ICMP_FILTER = 1  # Linux: bitmask of ICMPv4 types the kernel must NOT deliver
_ICMP6_FILTER = 1  # Linux: 256-bit mask of ICMPv6 types to block (set bit = block)
# v4: 0 echo reply, 3 destination unreachable, 11 time exceeded, 12 parameter problem
_V4_WANTED = (0, 3, 11, 12)
_V4_ECHO_REPLY = 0
# v6: 1 unreachable, 2 packet too big, 3 time exceeded, 4 parameter problem, 129 echo reply
_V6_WANTED = (1, 2, 3, 4, 129)
_V6_ECHO_REPLY = 129
_V4_UNREACHABLE = frozenset({3, 11})
_V6_UNREACHABLE = frozenset({1, 3})
_READ_BURST = 512
_RCVBUF = 4 << 20


def default_privileged() -> tuple[bool, ...]:
    """Raw first when root (no sysctl needed), datagram first otherwise."""
    root = hasattr(os, "geteuid") and os.geteuid() == 0
    return (True, False) if root else (False, True)


@dataclass(eq=False, slots=True)
class _Pending:
    future: asyncio.Future[Outcome]
    dest: str
    sent_ns: int
    sent_mono: float


class EchoSocket:
    """One ICMP socket of one link and family, with the echoes it has in flight."""

    def __init__(self, family: int, binding: LinkBinding, privileged: Sequence[bool],
                 payload_size: int = 56) -> None:
        self._loop = asyncio.get_running_loop()
        self._icmp: Any = open_icmp_socket(family, binding, privileged)
        self.sock: socket.socket = self._icmp.sock
        self.family = family
        self.raw: bool = bool(self._icmp.is_privileged)
        self._echo_reply = _V6_ECHO_REPLY if family == socket.AF_INET6 else _V4_ECHO_REPLY
        self._pending: dict[int, _Pending] = {}
        self._payload = bytes(random.getrandbits(8) for _ in range(payload_size))
        self._seq = random.getrandbits(16)
        self.kernel_timestamps = False
        self.late = 0  # replies that came after their probe gave up
        try:
            self._setup()
        except BaseException:
            self._icmp.close()
            raise
        self._packets = EchoPackets(self._icmp, self.ident, self._payload)
        self._loop.add_reader(self.sock.fileno(), self._readable)

    def _setup(self) -> None:
        sock = self.sock
        sock.setblocking(False)
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, _RCVBUF)
        try:
            sock.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPNS, 1)
            self.kernel_timestamps = True
        except OSError:
            log.debug("SO_TIMESTAMPNS not available; timing replies in userspace")
        if self.raw:
            self.ident = random.getrandbits(16)
            if self.family == socket.AF_INET:
                blocked = ~sum(1 << t for t in _V4_WANTED) & 0xFFFFFFFF
                with contextlib.suppress(OSError):
                    sock.setsockopt(_SOL_RAW, _ICMP_FILTER, struct.pack("=I", blocked))
            else:
                words = [0xFFFFFFFF] * 8
                for t in _V6_WANTED:
                    words[t >> 5] &= ~(1 << (t & 31)) & 0xFFFFFFFF
                with contextlib.suppress(OSError):
                    sock.setsockopt(socket.IPPROTO_ICMPV6, _ICMP6_FILTER,
                                    struct.pack("=8I", *words))
        else:
            # The kernel picks the identifier (the socket's "port") at bind time.
            if not self._icmp.address:
                wildcard = "::" if self.family == socket.AF_INET6 else "0.0.0.0"
                sock.bind((wildcard, 0))
            self.ident = int(sock.getsockname()[1])

    @property
    def in_flight(self) -> int:
        return len(self._pending)

    def close(self) -> None:
        if self.sock.fileno() >= 0:
            self._loop.remove_reader(self.sock.fileno())
        self._icmp.close()
        for pending in self._pending.values():
            if not pending.future.done():
                pending.future.cancel()
        self._pending.clear()

    async def echo(self, dest: str, sockaddr: Any, timeout_s: float) -> Outcome:
        """Send one echo request to ``sockaddr`` and wait for its reply or an ICMP error."""
        seq = self._next_seq()
        if seq is None:
            return Outcome.failure("error", "65536 echoes in flight on one socket")
        packet = self._packets.build(seq)
        loop = self._loop
        future: asyncio.Future[Outcome] = loop.create_future()
        # one timer per echo (cheaper than asyncio.timeout, which an agent pays per probe)
        expiry = loop.call_later(timeout_s, _expire, future, timeout_s)
        pending = _Pending(future, dest, time.time_ns(), time.perf_counter())
        self._pending[seq] = pending
        try:
            try:
                self.sock.sendto(packet, sockaddr)
            except BlockingIOError:
                return Outcome.failure("error", "ICMP socket send buffer full")
            except PermissionError:
                return Outcome.failure(
                    "permission", f"sending to {dest} not permitted (broadcast or firewall)")
            except OSError as exc:
                return Outcome.failed(classify(exc))
            return await future
        finally:
            expiry.cancel()
            if self._pending.get(seq) is pending:
                del self._pending[seq]

    def _next_seq(self) -> int | None:
        for _ in range(65536):
            self._seq = (self._seq + 1) & 0xFFFF
            if self._seq not in self._pending:
                return self._seq
        return None

    def _readable(self) -> None:
        sock = self.sock
        for _ in range(_READ_BURST):
            try:
                data, ancdata, _flags, addr = sock.recvmsg(4096, 64)
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:
                # datagram sockets may report a queued ICMP error this way; keep reading
                if exc.errno in (errno.EBADF, errno.ENOTSOCK):
                    return
                continue
            self._on_packet(data, ancdata, addr)

    def _on_packet(self, data: bytes, ancdata: list[tuple[int, int, bytes]], addr: Any) -> None:
        mono = time.perf_counter()
        reply = self._icmp._parse_reply(data, addr[0], 0.0)
        if reply is None:
            return
        if self.raw and reply.id != self.ident:
            return  # another program's echo: raw sockets see every reply on the host
        pending = self._pending.get(reply.sequence)
        if pending is None or pending.future.done():
            self.late += 1
            return
        if reply.type == self._echo_reply:
            if reply.source != pending.dest:
                return
            rx_ns = _kernel_ns(ancdata)
            user_rtt = mono - pending.sent_mono
            rtt = user_rtt
            if rx_ns is not None:
                kernel_rtt = (rx_ns - pending.sent_ns) / 1e9
                if 0.0 < kernel_rtt <= user_rtt + 0.001:
                    rtt = kernel_rtt
            pending.future.set_result(Outcome.success(rtt, {"echo": rtt}))
            return
        # unreachable or time exceeded (a loop or a TTL too small): the path does not work
        unreachable = _V4_UNREACHABLE if self.family == socket.AF_INET else _V6_UNREACHABLE
        detail = f"ICMP type {reply.type} code {reply.code} from {reply.source}"
        if reply.type in unreachable:
            pending.future.set_result(Outcome.failure("unreachable", detail))
        else:
            pending.future.set_result(Outcome.failure("error", detail))


def _expire(future: asyncio.Future[Outcome], timeout_s: float) -> None:
    if not future.done():
        future.set_result(Outcome.failure("timeout", f"no echo reply within {timeout_s:g}s"))


class EchoPackets:
    """Echo requests of one identifier and payload, built by icmplib once.

    Only the sequence number changes from one request to the next, so the checksum is
    updated incrementally (RFC 1624: one's complement sum plus the new sequence) instead of
    summing the whole packet again per echo; :meth:`build` returns exactly what icmplib's
    packet builder would for that sequence number.
    """

    __slots__ = ("_base_sum", "_head", "_tail", "_tail_payload")

    def __init__(self, icmp_sock: Any, ident: int, payload: bytes) -> None:
        template: bytes = icmp_sock._create_packet(ident, 0, payload)
        checksum = struct.unpack_from("!H", template, 2)[0]
        self._base_sum = ~checksum & 0xFFFF  # one's complement sum with sequence 0
        self._head = template[:2]
        self._tail = template[4:6]  # identifier
        self._tail_payload = template[8:]

    def build(self, seq: int) -> bytes:
        total = self._base_sum + seq
        total = (total & 0xFFFF) + (total >> 16)
        checksum = ~total & 0xFFFF
        return b"".join((self._head, _U16.pack(checksum), self._tail, _U16.pack(seq),
                         self._tail_payload))


def _kernel_ns(ancdata: list[tuple[int, int, bytes]]) -> int | None:
    for level, kind, value in ancdata:
        if level == socket.SOL_SOCKET and kind == SO_TIMESTAMPNS and len(value) >= 16:
            sec, nsec = _TIMESPEC.unpack_from(value)
            return int(sec) * 1_000_000_000 + int(nsec)
    return None


class IcmpEngine:
    """Echo probes for many targets over one socket per (link binding, family).

    Sockets are opened on first use and kept; a socket that cannot be opened is not cached,
    so a fixed permission or a new address is picked up by the next probe.
    """

    def __init__(self, *, privileged: Sequence[bool] | None = None,
                 payload_size: int = 56) -> None:
        self._privileged = tuple(privileged) if privileged is not None else default_privileged()
        self._payload_size = payload_size
        self._sockets: dict[tuple[LinkBinding, int], EchoSocket] = {}

    @property
    def sockets(self) -> tuple[EchoSocket, ...]:
        return tuple(self._sockets.values())

    async def ping(self, host: str, binding: LinkBinding, timeout_s: float) -> Outcome:
        """One echo to ``host`` over ``binding``; every failure is an Outcome."""
        try:
            family, sockaddr = await resolve(host, 0, binding, socket.SOCK_DGRAM)
            sock = self._socket(family, binding)
        except OSError as exc:
            return Outcome.failed(classify(exc))
        return await sock.echo(str(sockaddr[0]), sockaddr, timeout_s)

    def retain(self, bindings: Sequence[LinkBinding]) -> None:
        """Close the sockets of links no longer in ``bindings``."""
        keep = set(bindings)
        for key in [k for k in self._sockets if k[0] not in keep]:
            self._sockets.pop(key).close()

    def close(self) -> None:
        for sock in self._sockets.values():
            sock.close()
        self._sockets.clear()

    def _socket(self, family: int, binding: LinkBinding) -> EchoSocket:
        key = (binding, family)
        sock = self._sockets.get(key)
        if sock is None:
            sock = self._sockets[key] = EchoSocket(family, binding, self._privileged,
                                                   self._payload_size)
        return sock


def open_icmp_socket(family: int, binding: LinkBinding, privileged: Sequence[bool]) -> Any:
    """An icmplib socket bound to the link; BindingError("permission") when none is allowed."""
    cls = ICMPv6Socket if family == socket.AF_INET6 else ICMPv4Socket
    for mode in privileged:
        try:
            icmp_sock = cls(binding.source, mode)
        except SocketPermissionError:
            continue
        except SocketAddressError as exc:
            msg = (f"cannot bind source {binding.source} for link {binding.link!r}: {exc} "
                   "(is the address configured on this host?)")
            raise BindingError(ProbeError("error", msg)) from exc
        except ICMPLibError as exc:
            msg = f"cannot open an ICMP socket for link {binding.link!r}: {exc}"
            raise BindingError(ProbeError("error", msg)) from exc
        try:
            apply_link_options(icmp_sock.sock, binding)
        except BaseException:
            icmp_sock.close()
            raise
        return icmp_sock
    raise BindingError(ProbeError("permission", permission_help(privileged)))


def permission_help(tried: Sequence[bool]) -> str:
    """What to grant so that one of the ``tried`` socket modes works here."""
    parts: list[str] = []
    if True in tried:
        parts.append("raw ICMP sockets need root or CAP_NET_RAW "
                     "(setcap cap_net_raw+ep on the python binary)")
    if False in tried:
        current = _read(_PING_GROUP_RANGE)
        parts.append(
            f"unprivileged ICMP needs gid {os.getgid()} inside sysctl net.ipv4.ping_group_range"
            f" (now {current!r}; e.g. sysctl -w net.ipv4.ping_group_range='0 2147483647')"
        )
    return "no ICMP socket allowed: " + "; ".join(parts)


def _read(path: str) -> str:
    try:
        with open(path, encoding="ascii") as f:
            return " ".join(f.read().split())
    except OSError:
        return "unknown"
