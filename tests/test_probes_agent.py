"""The agent against real responders: paths, loss per link, update(), overrides, shutdown."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import gc
import time
from collections import defaultdict
from collections.abc import AsyncIterator, Callable

import aiohttp
import pytest

from edge.lab.responders import DnsResponder, HttpResponder, Impairment, ImpairmentTable
from probes.agent import Agent, plan_paths
from probes.bus.memory import MemoryBus, Subscription
from probes.kinds import PROBERS, Outcome, ProbeContext
from probes.measurement import Measurement, PathKey, ProbeKind, Sample
from probes.schedule import splay
from probes.spec import LinkBinding, TargetSpec

NODE = "hk-1"
A = LinkBinding("cn2", source="127.0.1.1")
B = LinkBinding("pccw", source="127.0.2.1")
Got = dict[PathKey, list[Measurement]]


def key(link: LinkBinding, target: TargetSpec) -> PathKey:
    return PathKey(NODE, link.link, target.name)


@pytest.fixture
def table() -> ImpairmentTable:
    t = ImpairmentTable(seed=11)
    t.set(B.source or "", Impairment(loss=1.0))
    return t


@pytest.fixture
async def servers(table: ImpairmentTable) -> AsyncIterator[tuple[TargetSpec, TargetSpec]]:
    dns_r, http_r = DnsResponder(table), HttpResponder(table)
    await dns_r.start()
    await http_r.start()
    # timeouts generous for a loaded CI box; lost probes overlap to keep the cadence
    dns_t = TargetSpec("pop-dns", ProbeKind.DNS, "127.0.0.1", dns_r.port, 0.05, 0.5,
                       qname="example.hk", qtype="A", expect_answer="192.0.2.1")
    http_t = TargetSpec("pop-http", ProbeKind.HTTP, "127.0.0.1", http_r.port, 0.05, 0.5)
    yield dns_t, http_t
    await dns_r.aclose()
    await http_r.aclose()


@contextlib.asynccontextmanager
async def running(agent: Agent) -> AsyncIterator[asyncio.Task[None]]:
    task = asyncio.create_task(agent.run())
    try:
        yield task
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def collect(sub: Subscription, done: Callable[[Got], bool], limit_s: float = 5.0) -> Got:
    got: Got = defaultdict(list)
    async with asyncio.timeout(limit_s):
        async for m in sub:
            got[m.path].append(m)
            if done(got):
                break
    return got


def each_at_least(paths: set[PathKey], n: int) -> Callable[[Got], bool]:
    return lambda got: all(len(got.get(p, ())) >= n for p in paths)


async def test_two_links_by_two_targets_loss_follows_the_link(
    servers: tuple[TargetSpec, TargetSpec],
) -> None:
    dns_t, http_t = servers
    bus = MemoryBus()
    sub = bus.subscribe()
    agent = Agent(NODE, [dns_t, http_t], [A, B], bus)
    expected = {key(lk, t) for lk in (A, B) for t in (dns_t, http_t)}
    assert set(agent.paths) == expected
    async with running(agent):
        got = await collect(sub, each_at_least(expected, 4))
    assert set(got) == expected
    for path, ms in got.items():
        assert [m.sent for m in ms[:4]] == [1, 2, 3, 4]  # one measurement per probe
        assert all(m.path == path for m in ms)
        last = ms[-1]
        assert abs(last.at - time.time()) < 5
        if path.link == A.link:
            assert last.loss == 0.0 and last.received == last.sent
            assert last.rtt_p50 is not None and last.rtt_p50 < 0.5
        else:
            assert last.loss == 1.0 and last.rtt_p50 is None
            assert last.last_error is not None
            # a lost HTTP request is aborted (reset); on a loaded box it may time out first
            expect = "timeout" if path.target == dns_t.name else "reset"
            assert expect in last.errors and set(last.errors) <= {expect, "timeout"}
            assert sum(last.errors.values()) == last.sent
    assert {m.kind for m in got[key(A, dns_t)]} == {ProbeKind.DNS}
    await bus.aclose()


async def test_partial_loss_is_measured(
    servers: tuple[TargetSpec, TargetSpec], table: ImpairmentTable
) -> None:
    dns_t, _ = servers
    table.set(A.source or "", Impairment(loss=0.5))
    bus = MemoryBus()
    sub = bus.subscribe()
    fast = dataclasses.replace(dns_t, interval_s=0.02, timeout_s=0.08)
    agent = Agent(NODE, [fast], [A], bus, window=40)
    async with running(agent):
        got = await collect(sub, lambda g: any(m.sent >= 40 for m in g.get(key(A, fast), [])))
    last = got[key(A, fast)][-1]
    assert 0.2 <= last.loss <= 0.8  # 40 draws of p=0.5: far outside is a bug, not bad luck
    await bus.aclose()


def test_paths_follow_the_links_a_target_allows() -> None:
    only_a = TargetSpec("only-a", ProbeKind.TCP, "127.0.0.1", 9, 1, 1, links=("cn2", "gone"))
    every = TargetSpec("every", ProbeKind.TCP, "127.0.0.1", 9, 1, 1)
    paths = plan_paths(NODE, [only_a, every], [A, B])
    assert set(paths) == {key(A, only_a), key(A, every), key(B, every)}
    assert paths[key(B, every)] == (every, B)


async def test_update_keeps_windows_of_unchanged_paths(
    servers: tuple[TargetSpec, TargetSpec],
) -> None:
    dns_t, http_t = servers
    bus = MemoryBus()
    sub = bus.subscribe()
    agent = Agent(NODE, [dns_t, http_t], [A, B], bus, window=1000)
    kept = key(A, dns_t)
    async with running(agent):
        before = await collect(sub, each_at_least({kept}, 3))
        sent_before = before[kept][-1].sent

        http2 = dataclasses.replace(http_t, name="pop-http-2")
        slower = dataclasses.replace(dns_t, interval_s=0.04)  # timing only: same window
        agent.update([slower, http2], [A])
        sub.drain()  # published before update()
        assert set(agent.paths) == {kept, key(A, http2)}
        after = await collect(sub, each_at_least({kept, key(A, http2)}, 3))
        assert set(after) == {kept, key(A, http2)}  # removed paths publish nothing more
        assert after[kept][0].sent > sent_before  # the window went on
        assert after[key(A, http2)][0].sent == 1  # a new path starts afresh

        other = dataclasses.replace(slower, qname="www.example.hk")  # measures something else
        agent.update([other, http2], [A])
        sub.drain()
        fresh = await collect(sub, each_at_least({kept}, 1))
        assert fresh[kept][0].sent == 1
    await bus.aclose()


async def test_interval_override_speeds_up_and_back(
    servers: tuple[TargetSpec, TargetSpec],
) -> None:
    dns_t, _ = servers
    slow = dataclasses.replace(dns_t, name="slow-dns", interval_s=60.0)
    path = key(A, slow)
    assert splay(path, 60.0) > 1.0  # so without the override nothing arrives soon
    bus = MemoryBus()
    sub = bus.subscribe()
    agent = Agent(NODE, [slow], [A], bus)
    async with running(agent):
        await asyncio.sleep(0.2)
        assert len(sub) == 0
        agent.set_interval_override(path, 0.02)
        got = await collect(sub, each_at_least({path}, 5), limit_s=3)
        assert got[path][-1].sent == 5
        agent.set_interval_override(path, None)
        await asyncio.sleep(0.05)
        sub.drain()
        await asyncio.sleep(0.2)
        assert len(sub) <= 1  # back to one probe a minute (at most one was already due)
    with pytest.raises(ValueError, match="interval_s"):
        agent.set_interval_override(path, 0)
    await bus.aclose()


async def test_cancellation_leaves_no_tasks_or_sessions(
    servers: tuple[TargetSpec, TargetSpec],
) -> None:
    dns_t, http_t = servers
    bus = MemoryBus()
    sub = bus.subscribe()
    agent = Agent(NODE, [dns_t, http_t], [A, B], bus)
    paths = set(agent.paths)
    task = asyncio.create_task(agent.run())
    await collect(sub, each_at_least(paths, 2))
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    leftovers = [t for t in asyncio.all_tasks() if t.get_name().startswith("edgesteer-probe")]
    assert leftovers == []
    gc.collect()
    open_sessions = [o for o in gc.get_objects()
                     if isinstance(o, aiohttp.ClientSession) and not o.closed]
    assert open_sessions == []

    # it can run again, and the windows survived the restart
    sub.drain()
    async with running(agent):
        again = await collect(sub, each_at_least({key(A, dns_t)}, 1))
        assert again[key(A, dns_t)][0].sent > 1
    await bus.aclose()


async def test_run_twice_is_refused(servers: tuple[TargetSpec, TargetSpec]) -> None:
    agent = Agent(NODE, [servers[0]], [A], MemoryBus())
    async with running(agent):
        await asyncio.sleep(0)
        with pytest.raises(RuntimeError, match="already running"):
            await agent.run()


async def test_hooks_crashing_probes_and_a_closed_bus_do_not_stop_the_agent() -> None:
    calls = 0

    async def crashing(spec: TargetSpec, ctx: ProbeContext) -> Outcome:
        nonlocal calls
        calls += 1
        raise RuntimeError("probe bug")

    samples: list[Sample] = []

    def hook(sample: Sample) -> None:
        samples.append(sample)
        raise ValueError("hook bug")

    spec = TargetSpec("t", ProbeKind.TCP, "127.0.0.1", 9, 0.01, 0.05)
    bus = MemoryBus()
    sub = bus.subscribe()
    agent = Agent(NODE, [spec], [A], bus, on_sample=hook,
                  probers={**PROBERS, ProbeKind.TCP: crashing})
    async with running(agent) as task:
        got = await collect(sub, each_at_least({key(A, spec)}, 3))
        last = got[key(A, spec)][-1]
        assert dict(last.errors) == {"error": 3}
        assert last.last_error is not None and "probe bug" in last.last_error.detail
        await bus.aclose()  # publishing now raises BusClosed: logged, not fatal
        seen = calls
        async with asyncio.timeout(2):
            while calls < seen + 3:  # noqa: ASYNC110 - waiting on a counter
                await asyncio.sleep(0.01)
        assert not task.done()
    assert len(samples) >= 3 and all(s.path == key(A, spec) and not s.ok for s in samples)
    assert all(abs(s.at - time.time()) < 5 for s in samples)


async def test_max_in_flight_bounds_concurrent_probes() -> None:
    active = peak = done = 0

    async def slowish(spec: TargetSpec, ctx: ProbeContext) -> Outcome:
        nonlocal active, peak, done
        active += 1
        peak = max(peak, active)
        await asyncio.sleep(0.01)
        active -= 1
        done += 1
        return Outcome.success(0.01)

    specs = [TargetSpec(f"t{i}", ProbeKind.TCP, "127.0.0.1", 9, 0.01, 0.5) for i in range(4)]
    bus = MemoryBus()
    agent = Agent(NODE, specs, [A, B], bus, max_in_flight=2,
                  probers={**PROBERS, ProbeKind.TCP: slowish})
    async with running(agent):
        async with asyncio.timeout(3):
            while done < 20:  # noqa: ASYNC110 - waiting on a counter
                await asyncio.sleep(0.01)
    assert peak == 2
    await bus.aclose()
