"""MemoryBus: fan-out, drop-oldest with a count, and closing ends every iterator."""

from __future__ import annotations

import asyncio
import gc
from collections.abc import AsyncIterator

import pytest

from probes.bus import MeasurementBus
from probes.bus.memory import BusClosed, MemoryBus, Subscription
from probes.measurement import Measurement, PathKey, ProbeKind

PATH = PathKey("hk-1", "cn2", "pop")


def m(i: int) -> Measurement:
    return Measurement(
        path=PATH, kind=ProbeKind.TCP, at=float(i), window_s=0.0, sent=i, received=i,
        loss=0.0, rtt_min=None, rtt_p50=None, rtt_p95=None, rtt_p99=None, rtt_max=None,
        rtt_mean=None, jitter_s=0.0, mean_abs_diff_s=0.0, ewma_rtt=None,
    )


async def take(sub: Subscription, n: int) -> list[int]:
    out: list[int] = []
    async with asyncio.timeout(2):
        async for item in sub:
            out.append(item.sent)
            if len(out) == n:
                break
    return out


async def test_memory_bus_satisfies_the_protocol() -> None:
    bus: MeasurementBus = MemoryBus()
    sub = bus.subscribe()
    assert isinstance(sub, AsyncIterator)
    assert sub.__aiter__() is sub
    await bus.aclose()


async def test_every_subscriber_gets_every_measurement_in_order() -> None:
    bus = MemoryBus()
    a, b = bus.subscribe(), bus.subscribe()
    for i in range(5):
        await bus.publish(m(i))
    assert await take(a, 5) == [0, 1, 2, 3, 4]
    assert await take(b, 5) == [0, 1, 2, 3, 4]
    assert bus.dropped == 0
    await bus.aclose()


async def test_subscribe_sees_only_what_is_published_after_it() -> None:
    bus = MemoryBus()
    await bus.publish(m(1))
    sub = bus.subscribe()  # registered now, before its first iteration
    await bus.publish(m(2))
    assert await take(sub, 1) == [2]
    await bus.aclose()


async def test_a_waiting_consumer_is_woken_by_publish() -> None:
    bus = MemoryBus()
    sub = bus.subscribe()
    consumer = asyncio.create_task(take(sub, 2))
    await asyncio.sleep(0)
    await bus.publish(m(7))
    await bus.publish(m(8))
    assert await consumer == [7, 8]
    await bus.aclose()


async def test_full_queue_drops_the_oldest_and_counts_it() -> None:
    bus = MemoryBus(max_queue=3)
    slow, fast = bus.subscribe(), bus.subscribe()
    for i in range(5):
        await bus.publish(m(i))
        assert await take(fast, 1) == [i]  # fast keeps up: never drops
    assert bus.dropped == 2
    assert (slow.dropped, fast.dropped) == (2, 0)
    assert len(slow) == 3
    assert await take(slow, 1) == [2]
    assert [x.sent for x in slow.drain()] == [3, 4]
    assert len(slow) == 0
    await bus.aclose()


async def test_aclose_ends_iterators_after_buffered_items() -> None:
    bus = MemoryBus()
    sub = bus.subscribe()
    idle = bus.subscribe()

    async def drain(s: Subscription) -> list[int]:
        return [x.sent async for x in s]

    idle_task = asyncio.create_task(drain(idle))
    await bus.publish(m(1))
    await bus.publish(m(2))
    await bus.aclose()
    async with asyncio.timeout(2):
        assert await drain(sub) == [1, 2]
        assert await idle_task == [1, 2]
    assert bus.closed
    with pytest.raises(BusClosed):
        await bus.publish(m(3))
    late = bus.subscribe()
    async with asyncio.timeout(2):
        assert await drain(late) == []


async def test_subscription_aclose_unsubscribes() -> None:
    bus = MemoryBus(max_queue=1)
    sub = bus.subscribe()
    await sub.aclose()
    await bus.publish(m(1))
    await bus.publish(m(2))
    assert bus.dropped == 0  # nobody is buffering any more
    async with asyncio.timeout(2):
        assert [x async for x in sub] == []
    await bus.aclose()


async def test_forgotten_subscription_leaves_the_bus() -> None:
    bus = MemoryBus(max_queue=1)
    bus.subscribe()  # never referenced
    gc.collect()
    await bus.publish(m(1))
    await bus.publish(m(2))
    assert bus.dropped == 0
    await bus.aclose()


def test_max_queue_must_be_positive() -> None:
    with pytest.raises(ValueError, match="max_queue"):
        MemoryBus(max_queue=0)
