"""ICMP echo probe (one echo request per probe) with icmplib.

Socket choice: a raw socket (icmplib "privileged") when running as root, otherwise the
Linux unprivileged ICMP datagram socket, each falling back to the other. When neither is
allowed the probe fails with ProbeError("permission") naming what to grant.

This is the basic prober: one socket per echo. A shared-socket scheduler for many targets
is a separate concern.
"""

from __future__ import annotations

import os
import socket
import time
from collections.abc import Sequence
from typing import Any

from icmplib import (
    AsyncSocket,
    DestinationUnreachable,
    ICMPLibError,
    ICMPRequest,
    ICMPv4Socket,
    ICMPv6Socket,
    SocketAddressError,
    SocketBroadcastError,
    SocketPermissionError,
    TimeExceeded,
    TimeoutExceeded,
)
from icmplib.utils import unique_identifier

from probes.kinds._net import BindingError, apply_link_options, classify, resolve
from probes.kinds.base import Outcome, ProbeContext
from probes.measurement import ProbeError
from probes.spec import LinkBinding, TargetSpec

_PING_GROUP_RANGE = "/proc/sys/net/ipv4/ping_group_range"


async def probe_icmp(spec: TargetSpec, ctx: ProbeContext) -> Outcome:
    root = hasattr(os, "geteuid") and os.geteuid() == 0
    return await ping(spec, ctx, privileged=(True, False) if root else (False, True))


async def ping(spec: TargetSpec, ctx: ProbeContext, privileged: Sequence[bool]) -> Outcome:
    """One echo to ``spec.host``, trying the socket modes in ``privileged`` in order."""
    try:
        family, address = await resolve(spec.host, 0, ctx.binding, socket.SOCK_DGRAM)
        icmp_sock = open_icmp_socket(family, ctx.binding, privileged)
    except OSError as exc:
        return Outcome.failed(classify(exc))
    with AsyncSocket(icmp_sock) as sock:
        request = ICMPRequest(destination=address[0], id=unique_identifier(), sequence=0)
        try:
            started = time.perf_counter()
            sock.send(request)
            reply = await sock.receive(request, ctx.timeout_s)
            rtt = time.perf_counter() - started
            reply.raise_for_status()
        except (TimeoutExceeded, TimeoutError):
            return Outcome.failure("timeout", f"no echo reply within {ctx.timeout_s:g}s")
        except (DestinationUnreachable, TimeExceeded) as exc:
            return Outcome.failure("unreachable", str(exc))
        except SocketBroadcastError:
            detail = "sending not permitted (broadcast address or a firewall rule)"
            return Outcome.failure("permission", detail)
        except ICMPLibError as exc:
            return Outcome.failure("error", f"{type(exc).__name__}: {exc}")
    return Outcome.success(rtt, {"echo": rtt})


def open_icmp_socket(family: int, binding: LinkBinding, privileged: Sequence[bool]) -> Any:
    """An icmplib socket bound to the link; BindingError("permission") when none is allowed."""
    cls = ICMPv6Socket if family == socket.AF_INET6 else ICMPv4Socket
    for mode in privileged:
        try:
            icmp_sock = cls(binding.source, mode)
        except SocketPermissionError:
            continue
        except SocketAddressError as exc:
            msg = f"cannot bind source {binding.source} for link {binding.link!r}: {exc}"
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
