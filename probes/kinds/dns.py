"""DNS probe: one query over UDP or TCP with dnspython, rcode and answer checked.

dnspython builds the query, sends it, matches the response (id, question, source) and
parses it. We only hand it a socket that leaves over the link: dnspython's own
``source=`` covers the source address but not SO_MARK / SO_BINDTODEVICE, so the probe
opens the socket itself (see ``_net.open_socket``) and passes it through dnspython's
``sock=`` extension point, wrapped in the tiny adapters below.

The UDP socket is connected, so an ICMP port-unreachable comes back as ``refused``
instead of a silent timeout. rtt covers connect (TCP only) and the exchange; phases are
``connect`` (TCP) and ``query``.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
import time
from typing import Any

import dns.asyncquery
import dns.exception
import dns.message
import dns.rcode
from dns._asyncbackend import DatagramSocket, StreamSocket

from probes.kinds._net import classify, open_socket, resolve
from probes.kinds.base import Outcome, ProbeContext
from probes.spec import TargetSpec


async def probe_dns(spec: TargetSpec, ctx: ProbeContext) -> Outcome:
    try:
        query = dns.message.make_query(spec.qname, spec.qtype)
        expect_rcode = dns.rcode.from_text(spec.expect_rcode)
    except (dns.exception.DNSException, ValueError) as exc:
        return Outcome.failure("error", f"bad query {spec.qname} {spec.qtype}: {exc}")
    tcp = spec.transport == "tcp"
    socktype = socket.SOCK_STREAM if tcp else socket.SOCK_DGRAM
    loop = asyncio.get_running_loop()
    try:
        family, address = await resolve(spec.host, spec.port, ctx.binding, socktype)
        sock = open_socket(family, socktype, ctx.binding)
    except OSError as exc:
        return Outcome.failed(classify(exc))
    phases: dict[str, float] = {}
    try:
        async with asyncio.timeout(ctx.timeout_s):
            started = time.perf_counter()
            await loop.sock_connect(sock, address)
            sent = time.perf_counter()
            if tcp:
                phases["connect"] = sent - started
                response = await dns.asyncquery.tcp(query, address[0], sock=_Stream(sock))
            else:
                response = await dns.asyncquery.udp(
                    query, address[0], port=address[1], sock=_Datagram(sock)
                )
            done = time.perf_counter()
    except (TimeoutError, dns.exception.Timeout):
        return Outcome.failure("timeout", f"no DNS response within {ctx.timeout_s:g}s", phases)
    except OSError as exc:
        return Outcome.failed(classify(exc), phases)
    except dns.exception.DNSException as exc:
        return Outcome.failure("bad_answer", f"unusable response: {exc}", phases)
    finally:
        sock.close()
    phases["query"] = done - sent
    return check_response(spec, response, done - started, phases, expect_rcode)


def check_response(
    spec: TargetSpec,
    response: dns.message.Message,
    rtt_s: float,
    phases: dict[str, float],
    expect_rcode: dns.rcode.Rcode,
) -> Outcome:
    rcode = response.rcode()
    if rcode != expect_rcode:
        got, want = dns.rcode.to_text(rcode), dns.rcode.to_text(expect_rcode)
        return Outcome.failure("rcode", f"rcode {got}, expected {want}", phases)
    if spec.expect_answer is not None:
        got_answers = [rd.to_text() for rrset in response.answer for rd in rrset]
        if _normal(spec.expect_answer) not in {_normal(a) for a in got_answers}:
            detail = f"{spec.expect_answer!r} not in answer {got_answers}"
            return Outcome.failure("bad_answer", detail, phases)
    return Outcome.success(rtt_s, phases)


def _normal(text: str) -> str:
    """Compare answers loosely: case, trailing dot, TXT quotes, IP spelling."""
    text = text.strip().strip('"').rstrip(".").lower()
    try:
        return str(ipaddress.ip_address(text))
    except ValueError:
        return text


# dnspython's socket interfaces (public as dns.asyncbackend.DatagramSocket / StreamSocket;
# imported from their defining module for the type checker). ``timeout`` is dnspython's
# parameter: seconds left, or None for no limit; on expiry TimeoutError propagates.


class _Datagram(DatagramSocket):
    """dnspython's datagram socket interface over a prepared, connected UDP socket."""

    def __init__(self, sock: socket.socket) -> None:
        super().__init__(sock.family, socket.SOCK_DGRAM)
        self._sock = sock

    async def sendto(self, what: bytes, destination: Any, timeout: float | None) -> int:  # noqa: ASYNC109
        loop = asyncio.get_running_loop()
        async with asyncio.timeout(timeout):
            return await loop.sock_sendto(self._sock, what, destination)

    async def recvfrom(self, size: int, timeout: float | None) -> tuple[bytes, Any]:  # noqa: ASYNC109
        loop = asyncio.get_running_loop()
        async with asyncio.timeout(timeout):
            return await loop.sock_recvfrom(self._sock, size)

    async def close(self) -> None:
        self._sock.close()

    async def getpeername(self) -> Any:
        return self._sock.getpeername()

    async def getsockname(self) -> Any:
        return self._sock.getsockname()


class _Stream(StreamSocket):
    """dnspython's stream socket interface over a prepared, connected TCP socket."""

    def __init__(self, sock: socket.socket) -> None:
        super().__init__(sock.family, socket.SOCK_STREAM)
        self._sock = sock

    async def sendall(self, what: bytes, timeout: float | None) -> None:  # noqa: ASYNC109
        loop = asyncio.get_running_loop()
        async with asyncio.timeout(timeout):
            await loop.sock_sendall(self._sock, what)

    async def recv(self, size: int, timeout: float | None) -> bytes:  # noqa: ASYNC109
        loop = asyncio.get_running_loop()
        async with asyncio.timeout(timeout):
            return await loop.sock_recv(self._sock, size)

    async def close(self) -> None:
        self._sock.close()

    async def getpeername(self) -> Any:
        return self._sock.getpeername()

    async def getsockname(self) -> Any:
        return self._sock.getsockname()
