"""`edgesteer steer` as real processes on a real redis-server: the leader is SIGKILLed and the
standby process takes over within the lease; the warehouse shows who applied what with which
token; SIGTERM resigns the lease cleanly."""

from __future__ import annotations

import asyncio
import signal
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import aiohttp

from edge.history import PolicyWarehouse
from edge.leader import LeaderElector
from probes.bus.redis_streams import RedisSettings, connect
from tests.conftest import free_port
from tests.servers_redis import RedisServer, redis_server
from tests.test_edge_leader import LEASE, config_text

__all__ = ["redis_server"]


def steer(config: Path, identity: str, log: Path,
          metrics_port: int | None = None) -> subprocess.Popen[bytes]:
    out = log.open("wb")
    extra = ["--metrics", f"127.0.0.1:{metrics_port}"] if metrics_port else []
    try:
        return subprocess.Popen([sys.executable, "-m", "edge", "steer", "--config", str(config),
                                 "--identity", identity, "--tick", "0.1", *extra],
                                stdout=out, stderr=subprocess.STDOUT)
    finally:
        out.close()


async def poll(check: Callable[[], Awaitable[object]], within: float) -> None:
    """Until ``check()`` (which asks Redis) is truthy; fails after ``within`` seconds."""
    for _ in range(int(within / 0.05)):
        if await check():
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"not within {within} s")


async def test_steer_processes_leader_killed_standby_takes_over(
        redis_server: RedisServer, tmp_path: Path) -> None:
    cfg = tmp_path / "cluster.yaml"
    cfg.write_text(config_text(redis_server.url))
    client = connect(RedisSettings(url=redis_server.url))
    wh = PolicyWarehouse(client, prefix="t")
    probe = LeaderElector(client, prefix="t", identity="observer")
    ports = {"p1": free_port(), "p2": free_port()}
    procs = {name: steer(cfg, name, tmp_path / f"{name}.log", ports[name])
             for name in ("p1", "p2")}
    try:
        await poll(lambda: wh.plans(1), 30)
        first = (await wh.plans(1))[0]
        leader, standby = first.author, ({"p1", "p2"} - {first.author}).pop()
        assert await probe.leader() == (first.token, leader)
        procs[leader].send_signal(signal.SIGKILL)
        procs[leader].wait(10)
        killed = time.monotonic()
        async def standby_applied() -> bool:
            return (await wh.plans(1))[0].author == standby

        await poll(standby_applied, 15)
        took = time.monotonic() - killed
        assert took < LEASE + LEASE / 3 + 2.0, took  # "within a few seconds"
        records = list(reversed(await wh.plans(50)))
        authors = [r.author for r in records]
        assert authors == sorted(authors, key=lambda a: a == standby)  # never interleaved
        new = records[-1]
        assert new.token > first.token and new.version >= first.version
        assert (await probe.leader()) == (new.token, standby)
        async with aiohttp.ClientSession() as http, \
                http.get(f"http://127.0.0.1:{ports[standby]}/metrics") as resp:
            metrics = await resp.text()  # the new leader's engine: it applied plans
        applied = [line for line in metrics.splitlines()
                   if line.startswith("edgesteer_plans_applied_total ")]
        assert applied and float(applied[0].split()[1]) >= 1, metrics
        assert 'edgesteer_link_state{link="cn2",state=' in metrics
        procs[standby].send_signal(signal.SIGTERM)
        assert procs[standby].wait(15) == 0
        assert await probe.leader() is None  # resigned on the way out
        assert (await wh.configs())[0].reason.startswith("deployed")
    finally:
        for p in procs.values():
            if p.poll() is None:
                p.kill()
                p.wait(10)
        await client.aclose()
        for name in procs:
            log = (tmp_path / f"{name}.log").read_text(errors="replace")
            assert "Traceback" not in log, log
