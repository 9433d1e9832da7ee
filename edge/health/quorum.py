"""Combine the paths measured over one link (several targets, several nodes) into its health.

A link takes the worst state that a quorum of its *known* (non-UNKNOWN) paths agrees on,
walking from worst to best: DOWN, then RISING (a quorum is down or only coming back, so the
link does not serve yet), then FALLING (a quorum is failing or worse; still serving), then
DEGRADED (a quorum is degraded or worse), else UP. UNKNOWN paths are left out of the count,
so one silent vantage point neither takes a link down nor keeps it up; with no known path
the link is UNKNOWN.

Quorum of n known paths: ``all`` = n, ``majority`` = n // 2 + 1, ``any`` = 1.

Quality is the worst case over the known paths (highest p50 and p95, highest loss, highest
jitter, latest time), or over all paths' last figures when none is known: it is shown to
operators and never drives a decision, so it errs on the pessimistic side. Its time is
the link's last data (the stale grace counts from it).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence

from edge.config.schema import QuorumMode
from edge.health.state import HealthState, LinkHealth, PathHealth, Quality

S = HealthState

# Worst first: each entry is a link state and the path states that count toward it.
_LADDER: tuple[tuple[HealthState, frozenset[HealthState]], ...] = (
    (S.DOWN, frozenset({S.DOWN})),
    (S.RISING, frozenset({S.DOWN, S.RISING})),
    (S.FALLING, frozenset({S.DOWN, S.RISING, S.FALLING})),
    (S.DEGRADED, frozenset({S.DOWN, S.RISING, S.FALLING, S.DEGRADED})),
)
_COUNTED = dict(_LADDER)  # link state -> the path states that count toward it


def needed(mode: QuorumMode, known: int) -> int:
    """How many of ``known`` paths make a quorum."""
    if mode == "all":
        return known
    if mode == "majority":
        return known // 2 + 1
    return 1


def decide(counts: Mapping[HealthState, int], mode: QuorumMode) -> HealthState:
    """The link state from how many of its paths are in each state (module docstring).

    Needs only the counts, so a tracker that keeps them up to date decides a link in
    constant time however many paths measure it.
    """
    known = sum(n for s, n in counts.items() if s is not S.UNKNOWN)
    if not known:
        return S.UNKNOWN
    need = needed(mode, known)
    for candidate, counted in _LADDER:
        if sum(counts.get(s, 0) for s in counted) >= need:
            return candidate
    return S.UP


def _max(values: list[float | None]) -> float | None:
    present = [v for v in values if v is not None]
    return max(present) if present else None


def aggregate(paths: Sequence[PathHealth]) -> Quality:
    """Worst-case quality over ``paths`` (see the module docstring)."""
    if not paths:
        return Quality()
    qs = [p.quality for p in paths]
    return Quality(rtt_p50=_max([q.rtt_p50 for q in qs]), rtt_p95=_max([q.rtt_p95 for q in qs]),
                   loss=max(q.loss for q in qs), jitter_s=max(q.jitter_s for q in qs),
                   at=max(q.at for q in qs))


def _describe(paths: Sequence[PathHealth]) -> str:
    return "; ".join(f"{p.path} {p.state}: {p.reason}" for p in paths)


def combine(link: str, paths: Sequence[PathHealth], mode: QuorumMode, now: float, *,
            previous: LinkHealth | None = None) -> LinkHealth:
    """The health of ``link`` from its paths' health.

    ``since`` is kept from ``previous`` when the state does not change, else ``now``;
    nothing else comes from ``previous``.
    """
    known = sorted((p for p in paths if p.state is not S.UNKNOWN), key=lambda p: p.path.order)
    if not known:
        state = S.UNKNOWN
        stale = [p for p in paths if p.reason]
        reason = "no path has data" + (f" ({_describe(stale)})" if stale else "")
        quality = aggregate(paths)  # their last figures (a stale link shows what it had)
    else:
        need = needed(mode, len(known))
        state = decide(Counter(p.state for p in known), mode)
        if state is S.UP:
            up = [p for p in known if p.state is S.UP]
            reason = (f"up on {len(up)}/{len(known)} paths (no quorum of {need} ({mode}) "
                      f"for worse): {', '.join(str(p.path) for p in up)}")
        else:
            counted = _COUNTED[state]
            deciding = [p for p in known if p.state in counted]
            reason = (f"{state} on {len(deciding)}/{len(known)} paths (quorum {mode}"
                      f" needs {need}): {_describe(deciding)}")
        quality = aggregate(known)
    since = previous.since if previous is not None and previous.state is state else now
    return LinkHealth(link=link, state=state, since=since, reason=reason, quality=quality)
