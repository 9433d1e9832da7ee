"""In-process measurement bus: asyncio fan-out to every subscriber (single node, default).

Each subscription has its own bounded buffer. ``publish`` never waits for a slow consumer:
when a buffer is full its oldest measurement is dropped and counted, because for health
decisions the newest data is worth more than a complete history.
"""

from __future__ import annotations

import asyncio
import weakref
from collections import deque

from probes.measurement import Measurement


class BusClosed(RuntimeError):
    """Publishing to a bus after ``aclose()``."""


class Subscription:
    """One subscriber's view of the bus; an async iterator of Measurements.

    Iteration ends once the bus is closed and everything published before has been read.
    ``aclose()`` unsubscribes early. A subscription that is no longer referenced drops out
    of the bus by itself.
    """

    __slots__ = ("__weakref__", "_buffer", "_bus", "_closed", "_max", "_ready", "dropped")

    def __init__(self, bus: MemoryBus, max_queue: int) -> None:
        self._bus = bus
        self._buffer: deque[Measurement] = deque()
        self._max = max_queue
        self._ready = asyncio.Event()
        self._closed = False
        self.dropped = 0  # measurements this subscriber lost by falling behind

    def _push(self, measurement: Measurement) -> bool:
        """Buffer ``measurement``; True when the oldest one had to be dropped for it."""
        dropped = len(self._buffer) >= self._max
        if dropped:
            self._buffer.popleft()
            self.dropped += 1
        self._buffer.append(measurement)
        self._ready.set()
        return dropped

    def _end(self) -> None:
        self._closed = True
        self._ready.set()

    def __aiter__(self) -> Subscription:
        return self

    async def __anext__(self) -> Measurement:
        while not self._buffer:
            if self._closed:
                raise StopAsyncIteration
            self._ready.clear()
            await self._ready.wait()
        return self._buffer.popleft()

    def __len__(self) -> int:
        """Measurements buffered and not yet read."""
        return len(self._buffer)

    def drain(self) -> list[Measurement]:
        """Take everything buffered right now, without waiting."""
        items = list(self._buffer)
        self._buffer.clear()
        return items

    async def aclose(self) -> None:
        self._bus._unsubscribe(self)
        self._buffer.clear()
        self._end()


class MemoryBus:
    """Fan-out bus for one process; implements :class:`probes.bus.MeasurementBus`."""

    def __init__(self, max_queue: int = 10000) -> None:
        if max_queue < 1:
            raise ValueError(f"max_queue must be >= 1, got {max_queue}")
        self._max_queue = max_queue
        self._subscribers: weakref.WeakSet[Subscription] = weakref.WeakSet()
        self._closed = False
        self._dropped = 0

    @property
    def dropped(self) -> int:
        """Measurements dropped so far because a subscriber fell behind (summed over all)."""
        return self._dropped

    @property
    def closed(self) -> bool:
        return self._closed

    async def publish(self, measurement: Measurement) -> None:
        if self._closed:
            raise BusClosed("publish on a closed MemoryBus")
        for sub in list(self._subscribers):
            if sub._push(measurement):
                self._dropped += 1

    def subscribe(self) -> Subscription:
        """A new subscription; it sees what is published from now on."""
        sub = Subscription(self, self._max_queue)
        if self._closed:
            sub._end()
        else:
            self._subscribers.add(sub)
        return sub

    def _unsubscribe(self, sub: Subscription) -> None:
        self._subscribers.discard(sub)

    async def aclose(self) -> None:
        """End every subscriber's iteration (after what it has buffered) and refuse publish."""
        self._closed = True
        for sub in list(self._subscribers):
            sub._end()
        self._subscribers = weakref.WeakSet()
