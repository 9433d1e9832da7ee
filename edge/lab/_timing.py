"""Sub-millisecond release times for delayed packets on an asyncio loop.

``loop.call_at`` alone is late by up to a millisecond: the epoll wait behind the loop counts
in whole milliseconds, rounded up. An emulated 30 ms link must not read 31 ms, so packets
are kept in a heap; the loop timer fires a little early (``EARLY_S``) and the last stretch
is waited out by spinning on the monotonic clock. Spinning is bounded by ``EARLY_S`` per
wake-up, and every packet due within that stretch is released in the same wake-up.
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import itertools
import os
import socket
import struct
import time
from collections.abc import Callable
from typing import Any

EARLY_S = 0.0015
SO_TIMESTAMPNS: int = getattr(socket, "SO_TIMESTAMPNS", 35)  # Linux value; absent in 3.11
_TIMESPEC = struct.Struct("@qq")


def set_realtime(priority: int = 20) -> bool:
    """Run this process under SCHED_FIFO (root), so that a loaded host does not make the
    emulated link late; False when not allowed. The spin in PreciseScheduler is bounded,
    and the kernel's RT throttling keeps the host usable."""
    try:
        os.sched_setscheduler(0, os.SCHED_FIFO, os.sched_param(priority))
    except (OSError, AttributeError):
        return False
    return True


def enable_rx_timestamps(sock: socket.socket) -> None:
    with contextlib.suppress(OSError):
        sock.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPNS, 1)


def arrival(ancdata: list[tuple[int, int, bytes]]) -> float:
    """When the packet reached the host, on the ``time.monotonic`` clock: from the kernel
    receive timestamp when there is one (the time it waited for us does not count as delay),
    else now."""
    now = time.monotonic()
    for level, kind, value in ancdata:
        if level == socket.SOL_SOCKET and kind == SO_TIMESTAMPNS and len(value) >= 16:
            sec, nsec = _TIMESPEC.unpack_from(value)
            age = (time.time_ns() - (int(sec) * 1_000_000_000 + int(nsec))) / 1e9
            if 0.0 <= age < 1.0:
                return now - age
    return now


class PreciseScheduler:
    """``at(due, fn, *args)`` calls ``fn(*args)`` at ``due`` (``time.monotonic`` clock)."""

    def __init__(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._heap: list[tuple[float, int, Callable[..., Any], tuple[Any, ...]]] = []
        self._seq = itertools.count()
        self._timer: asyncio.TimerHandle | None = None
        self._timer_due = float("inf")

    def __len__(self) -> int:
        return len(self._heap)

    def at(self, due: float, fn: Callable[..., Any], *args: Any) -> None:
        heapq.heappush(self._heap, (due, next(self._seq), fn, args))
        self._arm()

    def close(self) -> None:
        self._heap.clear()
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _arm(self) -> None:
        if not self._heap:
            return
        wake = self._heap[0][0] - EARLY_S
        if self._timer is not None and self._timer_due <= wake:
            return
        if self._timer is not None:
            self._timer.cancel()
        delay = max(0.0, wake - time.monotonic())
        self._timer_due = wake
        self._timer = self._loop.call_later(delay, self._fire)

    def _fire(self) -> None:
        self._timer = None
        self._timer_due = float("inf")
        heap = self._heap
        horizon = time.monotonic() + EARLY_S
        while heap and heap[0][0] <= horizon:
            due, _, fn, args = heapq.heappop(heap)
            while time.monotonic() < due:
                pass
            fn(*args)
        self._arm()
