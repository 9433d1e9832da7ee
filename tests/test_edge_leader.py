"""Leader election, fencing and the steering runtime against a real redis-server: who leads,
what was applied and by whom, a leader killed, a stale token refused, an agent cut off and
Redis down (the last good plan is kept)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field

import pytest

from dns_backends.base import ApplyResult
from edge import plancodec
from edge.commands.steer import SteerRuntime
from edge.config.loader import parse_config
from edge.config.schema import Config
from edge.health.state import HealthState
from edge.leader import Fence, FencedBackend, LeaderElector, NotLeader, StaleToken
from edge.plan import Plan
from probes.bus.redis_streams import RedisSettings, RedisStreamsBus, connect
from probes.measurement import PathKey
from tests.builders import measurement
from tests.servers_redis import CuttableLink, RedisServer, redis_server

__all__ = ["redis_server"]

LEASE = 1.0


def config_text(url: str, *, lease: float = LEASE, stale_after: float = 0.6,
                freeze: bool = False) -> str:
    return f"""
version: 1
node: {{name: hk-1, site: hk}}
sites: [{{name: hk}}]
health: {{rise: 1, fall: 1, hold_down: 0, stale_after: {stale_after}}}
links:
  - {{name: cn2, priority: 1, answers: {{v4: [203.0.113.10]}}}}
  - {{name: pccw, priority: 1, answers: {{v4: [203.0.113.20]}}}}
zones: [{{name: example.hk, ns: [ns1.example.hk]}}]
services:
  - name: www.example.hk
    pools:
      - {{name: main, endpoints: [{{link: cn2}}, {{link: pccw}}]}}
guard: {{freeze: {str(freeze).lower()}}}
bus: {{kind: redis, url: "{url}", lease: {lease}, prefix: t}}
"""


@dataclass
class Applied:
    who: str
    token: int | None
    version: int
    values: frozenset[str]
    at: float


@dataclass
class RecordingBackend:
    """Stands for one external DNS server shared by the engines: logs every apply."""

    log: list[Applied]
    who: str
    name: str = "dns"
    token: Callable[[], int | None] = field(default=lambda: None)

    async def apply(self, plan: Plan, *, dry_run: bool = False) -> ApplyResult:
        aset = plan.get("www.example.hk", "default")
        self.log.append(Applied(self.who, self.token(), plan.version,
                                aset.values() if aset else frozenset(), time.monotonic()))
        return ApplyResult(self.name, plan.version, 1)

    async def aclose(self) -> None:
        return None


async def eventually(check: Callable[[], bool], within: float, what: str) -> float:
    start = time.monotonic()
    while not check():
        if time.monotonic() - start > within:
            raise AssertionError(f"not within {within} s: {what}")
        await asyncio.sleep(0.02)
    return time.monotonic() - start


def make_engine(config: Config, text: str, who: str, log: list[Applied]) -> SteerRuntime:
    backend = RecordingBackend(log, who)
    rt = SteerRuntime(config, text, identity=who, backends=[backend], tick_s=0.05)
    backend.token = lambda: rt.elector.token
    return rt


async def hard_kill(rt: SteerRuntime) -> None:
    """The process dies: no resign, no flush; its lease just expires."""
    await rt.stop_tasks()
    await rt.bus.aclose(flush_timeout=0)
    await rt.client.aclose()


@pytest.fixture
async def agent(redis_server: RedisServer) -> AsyncIterator[RedisStreamsBus]:
    bus = RedisStreamsBus(connect(RedisSettings(url=redis_server.url)))
    yield bus
    await bus.aclose(flush_timeout=0.5)


def path(link: str, node: str = "hk-1") -> PathKey:
    return PathKey(node, link, "pop")


async def feed(bus: RedisStreamsBus, until: Awaitable[object] | float, *,
               loss: dict[str, float] | None = None, nodes: tuple[str, ...] = ("hk-1",),
               buses: dict[str, RedisStreamsBus] | None = None) -> None:
    """Publish a measurement per (node, link) every 50 ms until ``until`` is done / elapsed."""
    loss = loss or {}
    deadline = time.monotonic() + until if isinstance(until, float) else None
    fut = None if isinstance(until, float) else asyncio.ensure_future(until)
    while (fut is None or not fut.done()) and (deadline is None or time.monotonic() < deadline):
        for node in nodes:
            out = (buses or {}).get(node, bus)
            for link in ("cn2", "pccw"):
                await out.publish(measurement(time.time(), key=path(link, node),
                                              loss=loss.get(link, 0.0)))
        await asyncio.sleep(0.05)
    if fut is not None:
        await fut


# --- the elector and the fence alone ------------------------------------------------------


async def test_one_leader_at_a_time_and_tokens_rise(redis_server: RedisServer) -> None:
    client = connect(RedisSettings(url=redis_server.url))
    a = LeaderElector(client, prefix="t", identity="a", ttl_s=LEASE)
    b = LeaderElector(client, prefix="t", identity="b", ttl_s=LEASE)
    try:
        assert await a.step() == 1 and await b.step() is None
        assert await a.step() == 1  # renewal keeps the token
        assert await a.leader() == (1, "a") and b.seen == 1
        await a.resign()
        assert await b.step() == 2 and a.token is None
        assert await b.leader() == (2, "b")
    finally:
        await client.aclose()


async def test_local_lease_ends_before_redis_lets_a_standby_in(
        redis_server: RedisServer) -> None:
    client = connect(RedisSettings(url=redis_server.url))
    a = LeaderElector(client, prefix="t", identity="a", ttl_s=LEASE)
    b = LeaderElector(client, prefix="t", identity="b", ttl_s=LEASE)
    try:
        await a.step()
        a_lost = await eventually(lambda: a.token is None, 2 * LEASE, "a's local lease ends")
        assert a_lost < LEASE  # 0.9 x ttl
        assert await b.step() is None  # Redis still has a's lease: nobody leads for a moment
        await asyncio.sleep(LEASE - a_lost + 0.05)
        assert await b.step() == 2
    finally:
        await client.aclose()


async def test_fence_refuses_a_deposed_leader_and_a_stale_token(
        redis_server: RedisServer) -> None:
    client = connect(RedisSettings(url=redis_server.url))
    a = LeaderElector(client, prefix="t", identity="a", ttl_s=LEASE)
    b = LeaderElector(client, prefix="t", identity="b", ttl_s=LEASE)
    fence = Fence(client, "t", "dns")
    try:
        await a.step()
        await fence.admit(1, "a")
        await a.resign()
        await b.step()
        await fence.admit(2, "b")
        with pytest.raises(StaleToken, match="no longer holds the lease"):
            await fence.admit(1, "a")  # a wakes up from a long pause: refused
        # the lease holder with a token below what the backend has seen: refused too
        await client.set("{t}:fence:dns", 7)
        with pytest.raises(StaleToken, match="stale fencing token 2"):
            await fence.admit(2, "b")
        assert await fence.highest() == 7
    finally:
        await client.aclose()


async def test_fenced_backend_applies_only_as_leader(redis_server: RedisServer) -> None:
    client = connect(RedisSettings(url=redis_server.url))
    log: list[Applied] = []
    a = LeaderElector(client, prefix="t", identity="a", ttl_s=LEASE)
    fenced = FencedBackend(RecordingBackend(log, "a"), a)
    try:
        with pytest.raises(NotLeader):
            await fenced.apply(Plan(version=1))
        await a.step()
        await fenced.apply(Plan(version=2))
        assert fenced.applied == [(1, 2)] and [x.version for x in log] == [2]
        await fenced.apply(Plan(version=3), dry_run=True)  # a dry run needs no token
    finally:
        await client.aclose()


# --- the steering runtime -----------------------------------------------------------------


async def test_leader_killed_standby_takes_over_and_never_double_applies(
        redis_server: RedisServer, agent: RedisStreamsBus) -> None:
    text = config_text(redis_server.url)
    config = parse_config(text)
    log: list[Applied] = []
    e1, e2 = make_engine(config, text, "e1", log), make_engine(config, text, "e2", log)
    await e1.start()
    try:
        await feed(agent, eventually(lambda: any(x.who == "e1" for x in log), 5, "e1 applies"))
        await e2.start()
        # pccw goes bad: the leader fails over; the standby sees the same health but is silent
        await feed(agent, eventually(
            lambda: log[-1].values == {"203.0.113.10"}, 5, "failover"), loss={"pccw": 1.0})
        await feed(agent, eventually(
            lambda: e2.engine.tracker.snapshot.links["pccw"].state is HealthState.DOWN, 5,
            "standby sees pccw down"), loss={"pccw": 1.0})
        assert {x.who for x in log} == {"e1"}
        e1_last = log[-1]
        await hard_kill(e1)
        killed = time.monotonic()
        await feed(agent, eventually(lambda: log[-1].who == "e2", 4 * LEASE, "e2 takes over"),
                   loss={"pccw": 1.0})
        took = log[-1].at - killed
        assert took < LEASE + LEASE / 3 + 1.0, took
        # what was kept: the failover; the new leader continues the version sequence
        assert log[-1].values == {"203.0.113.10"}
        assert log[-1].version >= e1_last.version
        assert log[-1].token is not None and e1_last.token is not None
        assert log[-1].token > e1_last.token
        # never both: every e1 apply precedes every e2 apply
        whos = [x.who for x in log]
        assert whos == sorted(whos) and whos.count("e2") >= 1
        plans = await e2.warehouse.plans(50)
        assert [p.author for p in reversed(plans)] == whos
        assert plans[0].author == "e2" and plans[0].token == log[-1].token
        assert plancodec.from_json(plans[0].plan).get("www.example.hk", "default") is not None
    finally:
        await e2.aclose()


async def test_a_clean_stop_hands_over_at_once(redis_server: RedisServer,
                                               agent: RedisStreamsBus) -> None:
    text = config_text(redis_server.url, lease=5.0)
    config = parse_config(text)
    log: list[Applied] = []
    e1, e2 = make_engine(config, text, "e1", log), make_engine(config, text, "e2", log)
    await e1.start()
    await e2.start()
    try:
        await feed(agent, eventually(lambda: bool(log), 5, "someone applies"))
        first = log[0].who
        leader, standby = (e1, e2) if first == "e1" else (e2, e1)
        await leader.aclose()  # resigns the lease
        took = await eventually(lambda: standby.elector.is_leader, 5.0 / 3 + 1.0,
                                "standby leads after resign")
        assert took < 5.0  # well before the 5 s lease would have expired
    finally:
        await e1.aclose()
        await e2.aclose()


async def test_one_agent_cut_off_goes_stale_not_down(
        redis_server: RedisServer, agent: RedisStreamsBus) -> None:
    text = config_text(redis_server.url, stale_after=0.5)
    config = parse_config(text)
    log: list[Applied] = []
    link = await CuttableLink(redis_server.port).start()
    cut_agent = RedisStreamsBus(connect(RedisSettings(url=link.url, socket_timeout_s=0.5,
                                                      connect_timeout_s=0.5)),
                                retry_max_s=0.1)
    e1 = make_engine(config, text, "e1", log)
    await e1.start()
    buses = {"hk-1": cut_agent, "hk-2": agent}
    try:
        snap = lambda: e1.engine.tracker.snapshot  # noqa: E731
        await feed(agent, eventually(
            lambda: bool(log) and snap().paths.get(path("cn2")) is not None
            and snap().paths[path("cn2")].state is HealthState.UP, 5, "both up"),
            nodes=("hk-1", "hk-2"), buses=buses)
        applies = len(log)
        link.set_cut(True)
        await feed(agent, eventually(
            lambda: snap().paths[path("cn2")].state is HealthState.UNKNOWN, 5,
            "hk-1's paths go stale"), nodes=("hk-1", "hk-2"), buses=buses)
        await feed(agent, 0.5, nodes=("hk-1", "hk-2"), buses=buses)
        s = snap()
        assert s.paths[path("cn2", "hk-1")].state is HealthState.UNKNOWN  # stale, not down
        assert s.paths[path("pccw", "hk-1")].state is HealthState.UNKNOWN
        assert s.paths[path("cn2", "hk-2")].state is HealthState.UP
        assert s.links["cn2"].state is HealthState.UP and s.links["pccw"].state is \
            HealthState.UP
        assert len(log) == applies  # nothing re-planned: no failover on missing data
        assert cut_agent.buffered > 0  # the cut-off agent keeps its measurements
        link.set_cut(False)
        await feed(agent, eventually(lambda: cut_agent.buffered == 0, 5, "resent"),
                   nodes=("hk-1", "hk-2"), buses=buses)
        await feed(agent, eventually(
            lambda: snap().paths[path("cn2")].state is HealthState.UP, 5, "hk-1 back"),
            nodes=("hk-1", "hk-2"), buses=buses)
        assert cut_agent.dropped == 0 and len(log) == applies
    finally:
        await e1.aclose()
        await cut_agent.aclose(flush_timeout=0.2)
        await link.aclose()


async def test_redis_down_keeps_the_last_good_plan(redis_server: RedisServer,
                                                  agent: RedisStreamsBus) -> None:
    text = config_text(redis_server.url)
    config = parse_config(text)
    log: list[Applied] = []
    e1 = make_engine(config, text, "e1", log)
    await e1.start()
    try:
        await feed(agent, eventually(lambda: log[-1].values == {"203.0.113.10"} if log
                                     else False, 5, "failover applied"), loss={"pccw": 1.0})
        applies, kept = len(log), log[-1]
        redis_server.kill()
        await eventually(lambda: not e1.elector.is_leader, 2 * LEASE, "leadership lapses")
        await asyncio.sleep(1.0)  # measurements and leadership both gone for a while
        assert len(log) == applies  # nothing applied without data and without the lease
        assert log[-1] == kept  # the backend still has the last good plan
        redis_server.start()  # empty: no persistence
        await feed(agent, eventually(lambda: len(log) > applies, 10, "re-elected, applies"),
                   loss={"pccw": 1.0})
        assert log[-1].who == "e1" and log[-1].token is not None
        assert kept.token is not None and log[-1].token > kept.token  # tokens keep rising
        assert e1.elector.terms == 2
    finally:
        await e1.aclose()
