"""TCP probe: the time to complete a TCP handshake from the link's source to host:port.

The socket gets the link's SO_MARK / SO_BINDTODEVICE and source address before connect(),
so the SYN itself leaves over the link. The connection is closed right after it is up.
"""

from __future__ import annotations

import asyncio
import socket
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
    except TimeoutError:
        return Outcome.failure("timeout", f"no TCP handshake within {ctx.timeout_s:g}s")
    except OSError as exc:
        return Outcome.failed(classify(exc))
    finally:
        sock.close()
    return Outcome.success(rtt, {"connect": rtt})
