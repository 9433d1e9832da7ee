"""Probe cadence shared by the agent, the health engine and replay (pure: no sockets).

``fast_interval``: how fast a path in doubt (a mixed window, or a FALLING / RISING state)
is probed: ``interval / factor``, never below 50 ms (so the default factor 4 is honoured at
200 ms probing). ``path_window``: the window a path's samples go into — a span of
``window`` target intervals when the path may be probed faster, so that faster samples add
evidence instead of pushing older ones out (see probes/agent.py and probes/window.py).
"""

from __future__ import annotations

import math

from probes.spec import TargetSpec
from probes.window import Window

FAST_INTERVAL_FLOOR_S = 0.05  # never probe one path faster than 20 times a second


def fast_interval(normal_s: float, factor: float) -> float:
    """``normal_s / factor``, not below FAST_INTERVAL_FLOOR_S (nor above ``normal_s``)."""
    if factor <= 1.0 or normal_s <= FAST_INTERVAL_FLOOR_S:
        return normal_s
    return max(FAST_INTERVAL_FLOOR_S, normal_s / factor)


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
