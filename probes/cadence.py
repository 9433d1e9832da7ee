"""Probe cadence shared by the agent, the health engine and replay (pure: no sockets).

``fast_interval``: how fast a path in doubt (a mixed window, an overdue probe, or a
FALLING / RISING state) is probed: ``interval / factor``, never below 50 ms (so the default
factor 4 is honoured at 200 ms probing); ``overdue_after``: when a probe in flight puts
its path in doubt. ``path_window``: the window a path's samples go into — a span of
``window`` target intervals when the path may be probed faster, so that faster samples add
evidence instead of pushing older ones out (see probes/agent.py and probes/window.py).
"""

from __future__ import annotations

import math

from probes.spec import TargetSpec
from probes.window import Window

FAST_INTERVAL_FLOOR_S = 0.05  # never probe one path faster than 20 times a second
OVERDUE_RTT_FACTOR = 3.0  # a probe unanswered after 3 x the window's p95 rtt is overdue
OVERDUE_FLOOR_S = 0.05  # ... and never sooner than 50 ms after it was sent


def fast_interval(normal_s: float, factor: float) -> float:
    """``normal_s / factor``, not below FAST_INTERVAL_FLOOR_S (nor above ``normal_s``)."""
    if factor <= 1.0 or normal_s <= FAST_INTERVAL_FLOOR_S:
        return normal_s
    return max(FAST_INTERVAL_FLOOR_S, normal_s / factor)


def overdue_after(rtt_p95_s: float | None, timeout_s: float) -> float | None:
    """When an unanswered probe becomes *overdue*: ``OVERDUE_RTT_FACTOR`` x the window's
    p95 rtt, not below ``OVERDUE_FLOOR_S``; None (never) without answered probes in the
    window or when that is not sooner than the timeout.

    An overdue probe is not lost (only its timeout says so, and a late answer still counts
    as answered): it only puts the path in doubt, so that its probes run at the fast
    interval *before* the timeout confirms a loss. At 200 ms probing with 0.4 s timeouts
    and a 2 ms rtt, doubt starts 50 ms after a lost probe was sent instead of 400 ms.
    """
    if rtt_p95_s is None:
        return None
    after = max(OVERDUE_FLOOR_S, OVERDUE_RTT_FACTOR * rtt_p95_s)
    return after if after < timeout_s else None


def path_window(spec: TargetSpec, window_size: int, suspect_factor: float,
                max_age_s: float | None = None) -> Window:
    """The window of a path to ``spec``: ``window_size`` samples, spanning ``window_size``
    of the target's own intervals when the path may be probed faster while in doubt (module
    doc), so that faster samples add evidence instead of pushing older ones out. Replay
    (``edge.replay``) builds its windows with this too, so a recorded trace is judged as
    the live agent judged it."""
    span = window_span(spec, window_size, suspect_factor)
    if span is None:
        return Window(window_size, max_age_s)
    # room for a span probed at the fast interval, and the late (lost) samples
    limit = 2 * math.ceil(window_size * suspect_factor)
    return Window(window_size, max_age_s, span_s=span, limit=limit)


def window_span(spec: TargetSpec, window_size: int, suspect_factor: float) -> float | None:
    """A path window's time span: ``window_size`` of the target's own intervals, or None
    (a plain count window) when the path is never probed faster than its interval."""
    if fast_interval(spec.interval_s, suspect_factor) >= spec.interval_s:
        return None
    return window_size * spec.interval_s
