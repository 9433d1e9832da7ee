"""The bus, the leader lease with its fence, and the warehouse on a real 3-master Redis
Cluster (hash tags keep each script's keys in one slot), and the bus on a Sentinel set that
fails over to its replica while agents publish."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest

from edge.history import PolicyWarehouse
from edge.leader import Fence, LeaderElector, StaleToken
from edge.plan import Plan
from probes.bus.redis_streams import RedisSettings, RedisStreamsBus, connect
from tests.builders import measurement
from tests.servers_redis import (
    RedisClusterSet,
    SentinelSet,
    redis_cluster,
    redis_sentinels,
)
from tests.test_probes_bus_redis import P1, meas, take

__all__ = ["redis_cluster", "redis_sentinels"]


async def test_bus_leader_fence_and_history_on_a_cluster(
        redis_cluster: RedisClusterSet) -> None:
    settings = RedisSettings(cluster=redis_cluster.nodes)
    agent = RedisStreamsBus(connect(settings), batch_max=50)
    engine = RedisStreamsBus(connect(settings), group="e1", consumer="c1")
    client: Any = connect(settings)
    sub = engine.subscribe()
    try:
        first = asyncio.ensure_future(anext(sub))
        await asyncio.sleep(0.3)
        for i in range(500):
            await agent.publish(meas(i))
        got = [await first, *await take(sub, 499, within=10)]
        assert [m.sent for m in got] == [i + 1 for i in range(500)]
        # coordination keys of one prefix land in one slot, on one of the three masters
        slots = {await client.cluster_keyslot(k) for k in
                 ("{edgesteer}:leader", "{edgesteer}:fence", "{edgesteer}:plan:log",
                  "{edgesteer}:fence:history", "{edgesteer}:config:log")}
        assert len(slots) == 1
        a = LeaderElector(client, identity="a", ttl_s=5)
        b = LeaderElector(client, identity="b", ttl_s=5)
        assert await a.step() == 1 and await b.step() is None
        fence = Fence(client, "edgesteer", "dns")
        await fence.admit(1, "a")
        wh = PolicyWarehouse(client)
        v, _ = await wh.record_config("a: 1\n", author="ops", reason="first")
        kw: dict[str, Any] = {"reason": "r", "diff": Plan().diff(Plan()), "config_version": 1,
                              "links": {}}
        await wh.record_plan(Plan(version=1), token=1, identity="a", **kw)
        await a.resign()
        assert await b.step() == 2
        with pytest.raises(StaleToken):
            await fence.admit(1, "a")
        with pytest.raises(StaleToken):
            await wh.record_plan(Plan(version=2), token=1, identity="a", **kw)
        assert [(p.author, p.token) for p in await wh.plans()] == [("a", 1)]
        assert v.version == 1 and (await wh.config(1)).text == "a: 1\n"  # type: ignore[union-attr]
    finally:
        await sub.aclose()
        await agent.aclose()
        await engine.aclose()
        await client.aclose()


async def test_bus_follows_a_sentinel_failover(redis_sentinels: SentinelSet) -> None:
    settings = RedisSettings(sentinels=redis_sentinels.addresses, master=redis_sentinels.name,
                             socket_timeout_s=1, connect_timeout_s=0.5)
    agent = RedisStreamsBus(connect(settings), retry_max_s=0.2)
    engine = RedisStreamsBus(connect(settings), group="e1", consumer="c1", retry_max_s=0.2)
    sub = engine.subscribe()
    try:
        first = asyncio.ensure_future(anext(sub))
        await asyncio.sleep(0.3)
        await agent.publish(meas(0))
        assert (await first).sent == 1
        redis_sentinels.master.kill()  # the sentinels promote the replica
        t0 = time.time()
        n = 0
        received: list[int] = []
        # a sentinel election that splits is retried after failover-timeout x 2 (6 s):
        # on a loaded box two of them fit, with room
        async with asyncio.timeout(40):
            while not received or received[-1] < n - 1 or n < 10:
                await agent.publish(measurement(t0 + n, key=P1, sent=1000 + n))
                n += 1
                try:
                    async with asyncio.timeout(0.2):
                        while True:
                            received.append((await anext(sub)).sent - 1000)
                except TimeoutError:
                    pass
        # after the failover the stream continues on the new master: the newest arrive
        assert received and received == sorted(set(received)) and received[-1] == n - 1
        assert agent.outages >= 1
    finally:
        await sub.aclose()
        await agent.aclose(flush_timeout=0.5)
        await engine.aclose()
