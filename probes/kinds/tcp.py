"""TCP probe: the time to complete a TCP handshake from the link's source to host:port.

The socket gets the link's SO_MARK / SO_BINDTODEVICE and source address before connect(),
so the SYN itself leaves over the link. The connection is closed right after it is up.

Timing: on Linux the kernel times the handshake itself (SYN sent -> SYN-ACK received, in
microseconds) and reports it as ``tcpi_rtt`` in ``TCP_INFO``; that reading does not include
the time the event loop takes to notice the connection, which on a busy host adds a
millisecond or more. It is used when plausible (positive, not above the userspace reading);
otherwise, e.g. after a retransmitted SYN (no kernel sample), the userspace time counts.
"""

from __future__ import annotations

import asyncio
import socket
import struct
import time

from probes.kinds._net import classify, open_socket, resolve
from probes.kinds.base import Outcome, ProbeContext
from probes.spec import TargetSpec


async def probe_tcp(spec: TargetSpec, ctx: ProbeContext) -> Outcome:
    loop = asyncio.get_running_loop()
    try:
        family, address = await resolve(spec.host, spec.port, ctx.binding)
        sock = open_socket(family, socket.SOCK_STREAM, ctx.binding)
    except OSError as exc:
        return Outcome.failed(classify(exc))
    try:
        async with asyncio.timeout(ctx.timeout_s):
            started = time.perf_counter()
            await loop.sock_connect(sock, address)
            rtt = time.perf_counter() - started
        rtt = _kernel_rtt(sock, rtt)
    except TimeoutError:
        return Outcome.failure("timeout", f"no TCP handshake within {ctx.timeout_s:g}s")
    except OSError as exc:
        return Outcome.failed(classify(exc))
    finally:
        sock.close()
    return Outcome.success(rtt, {"connect": rtt})


_TCPI_RTT = struct.Struct("=I")
_TCPI_RTT_OFFSET = 68  # struct tcp_info: 8 bytes of u8 fields, then u32s; tcpi_rtt is the 16th


def _kernel_rtt(sock: socket.socket, user_rtt: float) -> float:
    """The kernel's handshake rtt when it has a plausible one, else ``user_rtt``."""
    opt = getattr(socket, "TCP_INFO", None)
    if opt is None:
        return user_rtt
    try:
        info = sock.getsockopt(socket.IPPROTO_TCP, opt, 104)
    except OSError:
        return user_rtt
    if len(info) < _TCPI_RTT_OFFSET + 4:
        return user_rtt
    (rtt_us,) = _TCPI_RTT.unpack_from(info, _TCPI_RTT_OFFSET)
    kernel = rtt_us / 1e6
    return kernel if 0.0 < kernel <= user_rtt + 0.001 else user_rtt
