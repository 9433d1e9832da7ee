"""ICMP echo probe: one echo request per probe, through the shared :class:`IcmpEngine`.

The agent passes its engine in ``ProbeContext.icmp`` (one socket per link for all targets,
see :mod:`probes.kinds.icmp_engine`); without one, the probe opens an engine for this one
echo and closes it after.

Socket choice: a raw socket (icmplib "privileged") when running as root, otherwise the
Linux unprivileged ICMP datagram socket, each falling back to the other. When neither is
allowed the probe fails with ProbeError("permission") naming what to grant.
"""

from __future__ import annotations

from collections.abc import Sequence

from probes.kinds.base import Outcome, ProbeContext
from probes.kinds.icmp_engine import (
    IcmpEngine,
    default_privileged,
    open_icmp_socket,
    permission_help,
)
from probes.spec import TargetSpec

__all__ = ["open_icmp_socket", "permission_help", "ping", "probe_icmp"]


async def probe_icmp(spec: TargetSpec, ctx: ProbeContext) -> Outcome:
    if ctx.icmp is not None:
        return await ctx.icmp.ping(spec.host, ctx.binding, ctx.timeout_s)
    return await ping(spec, ctx, default_privileged())


async def ping(spec: TargetSpec, ctx: ProbeContext, privileged: Sequence[bool]) -> Outcome:
    """One echo to ``spec.host`` on a socket of its own, trying ``privileged`` modes in order."""
    engine = IcmpEngine(privileged=privileged)
    try:
        return await engine.ping(spec.host, ctx.binding, ctx.timeout_s)
    finally:
        engine.close()
