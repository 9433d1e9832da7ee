"""Scheduling arithmetic for the agent: splay, next tick, overlap cap, the probe deadline.

Pure functions (plus one small async wrapper) so the timing rules are testable without
running an agent.
"""

from __future__ import annotations

import asyncio
import logging
import math
import zlib

from probes.kinds.base import Outcome, ProbeContext, ProbeFn
from probes.measurement import PathKey
from probes.spec import TargetSpec

log = logging.getLogger(__name__)


def splay(path: PathKey, interval_s: float) -> float:
    """Deterministic start offset in [0, interval_s) for ``path``.

    A stable hash (crc32, not ``hash()``, which is salted per process) spreads paths over
    the interval, so a restart or another node starts them at the same phases and many
    paths with the same interval never probe in one burst.
    """
    fraction = zlib.crc32(str(path).encode()) / 2**32
    return fraction * interval_s


def next_tick(scheduled: float, interval_s: float, now: float) -> float:
    """The tick after ``scheduled``; missed ticks are skipped rather than run in a burst."""
    following = scheduled + interval_s
    return following if following > now else now + interval_s


def max_overlap(interval_s: float, timeout_s: float) -> int:
    """Probes of one path that may be in flight at once: enough to keep the cadence when
    the timeout is longer than the interval, and no more (a dead target costs bounded work).
    """
    return math.ceil(timeout_s / interval_s) + 1


async def run_probe(fn: ProbeFn, spec: TargetSpec, ctx: ProbeContext) -> Outcome:
    """Run one probe under the deadline ``ctx.timeout_s``; never raises but CancelledError.

    A probe that raises is a bug in the probe, not a verdict on the link: it is logged with
    its traceback and reported as ProbeError("error", "probe crashed: ...").
    """
    try:
        async with asyncio.timeout(ctx.timeout_s):
            return await fn(spec, ctx)
    except TimeoutError:
        return Outcome.failure("timeout", f"no result within {ctx.timeout_s:g}s")
    except Exception as exc:
        log.exception("probe %s (%s) over %s crashed", spec.name, spec.kind, ctx.binding.link)
        return Outcome.failure("error", f"probe crashed: {type(exc).__name__}: {exc}")
