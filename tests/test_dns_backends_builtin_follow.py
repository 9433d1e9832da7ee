"""``edgesteer serve --follow``: answers follow the steering engine's plans.

The engine is the real one (``edge.runtime.Engine``) writing ``engine.json`` in the
config's ``guard.state_dir`` through its own save path, or (Redis bus) recording its plans
in the Redis plan history through ``HistoryBackend`` as the fenced leader; an operator
override (``cn2`` down) makes it plan differently. ``serve`` runs as a subprocess with two workers
(SO_REUSEPORT), so the kernel spreads the checks over both, and the plan-version gauge (the
oldest across workers) shows that every worker swapped. ``StateFileFeed`` itself is driven
in process for the cases that need no sockets.
"""

from __future__ import annotations

import json
import logging
import os
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path
from types import MappingProxyType

import dns.edns
import dns.message
import dns.query
import pytest

from edge.config.loader import load_config
from edge.config.schema import Config
from edge.history import HistoryBackend, PolicyWarehouse
from edge.leader import LeaderElector
from edge.plan import Plan
from edge.planfeed import FeedError, StateFileFeed, engine_file, history_key, read_plan
from edge.runtime import Engine
from edge.steering.overrides import Overrides, save_overrides
from edge.steering.statefile import state_dir
from probes.bus.redis_streams import RedisSettings, connect
from tests.conftest import free_port
from tests.servers_dns_peers import MAIN_ANSWER, SERVE_CONFIG, ServeProcess
from tests.servers_redis import RedisServer, redis_server

__all__ = ["redis_server"]

PCCW = {"198.51.100.20"}  # the default segment's answer once cn2 is down
SWAP_BOUND_S = 10.0  # poll every 0.05 s; generous for a loaded 2-core machine


def write_config(directory: Path, extra: str = "") -> Config:
    path = directory / "serve.yaml"
    path.write_text(SERVE_CONFIG + "guard:\n  state_dir: state\n" + extra)
    return load_config(path)


def ask(port: int) -> tuple[frozenset[str], int]:
    """www.example.hk A from a client outside every segment (ECS 192.0.2.0/24): the
    default segment's answer, and its TTL. A new source port per query."""
    q = dns.message.make_query("www.example.hk", "A", use_edns=0, options=[
        dns.edns.ECSOption.from_text("192.0.2.0/24")])
    r = dns.query.udp(q, "127.0.0.1", port=port, timeout=2)
    return frozenset(rd.to_text() for rrset in r.answer for rd in rrset), r.answer[0].ttl


def metric(port: int, name: str) -> float:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as resp:
        for line in resp.read().decode().splitlines():
            if line.startswith(name + " "):
                return float(line.rpartition(" ")[2])
    return 0.0


def until(check: Callable[[], bool], bound: float = SWAP_BOUND_S) -> float:
    """Seconds until ``check()`` holds; fails past ``bound``."""
    started = time.monotonic()
    while not check():
        assert time.monotonic() - started < bound, "not within the bound"
        time.sleep(0.02)
    return time.monotonic() - started


def all_answer(port: int, expected: set[str], n: int = 30) -> bool:
    return all(ask(port)[0] == expected for _ in range(n))


async def test_serve_follows_the_engines_plans_in_every_worker(tmp_path: Path) -> None:
    config = write_config(tmp_path)
    directory = state_dir(config)
    assert directory is not None
    engine = Engine(config, [])
    await engine.start()  # plan v1, every link unknown (serving), saved to engine.json
    assert engine.current is not None and engine.current.version == 1
    port, mport = free_port(), free_port()
    srv = ServeProcess(Path(config.source), "--listen", f"127.0.0.1:{port}",
                       "--workers", "2", "--follow", "--follow-interval", "0.05",
                       "--metrics", f"127.0.0.1:{mport}", log=tmp_path / "err")
    with srv:
        assert "plan v1" in srv.banner and "following" in srv.banner
        assert all_answer(port, MAIN_ANSWER)

        save_overrides(directory, Overrides(MappingProxyType({"cn2": "down"})))
        event = await engine.replan()
        assert event is not None and event.plan.version == 2
        took = until(lambda: ask(port)[0] == PCCW)
        assert took < SWAP_BOUND_S
        until(lambda: metric(mport, "edgesteer_dns_plan_version") == 2)  # both workers
        assert all_answer(port, PCCW)
        assert ask(port)[1] == 15  # failing over: the plan's lower TTL

        # a half-written file (no rename): the last good plan stays, the reject is counted
        good = engine_file(directory).read_text()
        with engine_file(directory).open("w") as fh:
            fh.write(good[:len(good) // 2])
        # at least once per worker (a worker that polls between the truncation and the
        # write sees an empty file first, and rejects that too)
        until(lambda: metric(mport, 'edgesteer_dns_events_total{event="plan_feed_rejected"}')
              >= 2)
        assert all_answer(port, PCCW)
        assert metric(mport, "edgesteer_dns_plan_version") == 2

        save_overrides(directory, Overrides(MappingProxyType({"cn2": "up", "pccw": "down"})))
        event = await engine.replan()
        assert event is not None and event.plan.version == 3
        until(lambda: metric(mport, "edgesteer_dns_plan_version") == 3)
        assert all_answer(port, MAIN_ANSWER)
        assert metric(mport, 'edgesteer_dns_events_total{event="plan_feed_applied"}') == 4
    log = srv.stderr()
    assert "keeping the plan in force" in log and "Traceback" not in log


async def test_serve_without_an_engine_file_serves_the_config_plan_until_one_appears(
        tmp_path: Path) -> None:
    config = write_config(tmp_path)
    directory = state_dir(config)
    assert directory is not None
    save_overrides(directory, Overrides(MappingProxyType({"cn2": "down"})))
    port = free_port()
    srv = ServeProcess(Path(config.source), "--listen", f"127.0.0.1:{port}", "--follow",
                       "--follow-interval", "0.05", log=tmp_path / "err")
    with srv:
        assert all_answer(port, MAIN_ANSWER, n=3)  # every link assumed up
        engine = Engine(config, [])
        await engine.start()  # the first plan honours the override: cn2 down
        until(lambda: ask(port)[0] == PCCW)


async def test_serve_follows_the_leaders_plan_history_in_redis(
        tmp_path: Path, redis_server: RedisServer) -> None:
    config = write_config(tmp_path, f'bus: {{kind: redis, url: "{redis_server.url}", '
                                    'prefix: t}\n')
    directory = state_dir(config)
    assert directory is not None
    client = connect(RedisSettings(url=redis_server.url))
    try:
        elector = LeaderElector(client, prefix="t", identity="leader", ttl_s=60)
        assert await elector.step() is not None
        recorder = HistoryBackend(PolicyWarehouse(client, prefix="t"), elector,
                                  config_version=lambda: 1, links=dict)
        engine = Engine(config, [recorder])
        await engine.start()  # plan v1, recorded in the history by the leader
        port, mport = free_port(), free_port()
        srv = ServeProcess(Path(config.source), "--listen", f"127.0.0.1:{port}", "--workers",
                           "2", "--follow", "--follow-interval", "0.05", "--metrics",
                           f"127.0.0.1:{mport}", log=tmp_path / "err")
        with srv:
            assert "plan v1" in srv.banner and "Redis plan history" in srv.banner
            assert all_answer(port, MAIN_ANSWER)
            save_overrides(directory, Overrides(MappingProxyType({"cn2": "down"})))
            event = await engine.replan()
            assert event is not None and event.plan.version == 2
            until(lambda: metric(mport, "edgesteer_dns_plan_version") == 2)  # both workers
            assert all_answer(port, PCCW)
            # a record without a usable plan: the last good plan stays, counted per worker
            await client.xadd(history_key("t"), {"version": 9, "plan": "{"})
            until(lambda: metric(
                mport, 'edgesteer_dns_events_total{event="plan_feed_rejected"}') == 2)
            assert all_answer(port, PCCW)
            save_overrides(directory,
                           Overrides(MappingProxyType({"cn2": "up", "pccw": "down"})))
            event = await engine.replan()
            assert event is not None and event.plan.version == 3
            until(lambda: metric(mport, "edgesteer_dns_plan_version") == 3)
            assert all_answer(port, MAIN_ANSWER)
        log = srv.stderr()
        assert "keeping the plan in force" in log and "Traceback" not in log
    finally:
        await client.aclose()


# -- the feed in process ----------------------------------------------------------------

class Sink:
    def __init__(self, refuse: bool = False) -> None:
        self.plans: list[Plan] = []
        self.rejected: list[str] = []
        self.refuse = refuse

    def apply(self, plan: Plan) -> None:
        if self.refuse:
            raise ValueError("refused by the server")
        self.plans.append(plan)


async def test_feed_swaps_once_per_new_plan_and_keeps_the_last_good_one(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    config = write_config(tmp_path)
    directory = state_dir(config)
    assert directory is not None
    path = engine_file(directory)
    sink = Sink()
    feed = StateFileFeed(path, sink.apply, on_reject=sink.rejected.append)
    assert await feed.poll() is None and sink.plans == []  # no file yet: nothing to do
    engine = Engine(config, [])
    await engine.start()
    got = await feed.poll()
    assert got is not None and got.version == 1 and len(sink.plans) == 1
    assert got.checksum() == engine.current.checksum()  # type: ignore[union-attr]
    assert await feed.poll() is None  # unchanged file: not even re-read

    # the engine rewrites the file with the same plan (only link states moved): no swap
    body = json.loads(path.read_text())
    body["saved_at"] += 1
    _replace(path, json.dumps(body))
    assert await feed.poll() is None and len(sink.plans) == 1

    with caplog.at_level(logging.WARNING, "edgesteer.planfeed"):
        for bad in ("{", json.dumps({"format": 99}), json.dumps({"format": 1, "plan": {}}),
                    json.dumps({"format": 1, "plan": {"version": 1, "created_at": 0,
                                                      "answers": [{"service": "x"}]}})):
            _replace(path, bad)
            assert await feed.poll() is None
            assert await feed.poll() is None  # logged and counted once per file version
        assert len(sink.rejected) == 4 and len(sink.plans) == 1
    assert sum("keeping the plan in force" in r.message for r in caplog.records) == 4

    save_overrides(directory, Overrides(MappingProxyType({"cn2": "down"})))
    await engine.replan()
    got = await feed.poll()
    assert got is not None and got.version == 2 and len(sink.plans) == 2


async def test_a_plan_the_server_refuses_is_a_reject(tmp_path: Path) -> None:
    config = write_config(tmp_path)
    directory = state_dir(config)
    assert directory is not None
    await Engine(config, []).start()
    sink = Sink(refuse=True)
    feed = StateFileFeed(engine_file(directory), sink.apply, on_reject=sink.rejected.append)
    assert await feed.poll() is None
    assert sink.plans == [] and len(sink.rejected) == 1 and "refused" in sink.rejected[0]
    assert feed.rejects == 1 and feed.swaps == 0


def test_read_plan_names_what_is_wrong(tmp_path: Path) -> None:
    path = tmp_path / "engine.json"
    assert read_plan(path) is None
    path.write_text(json.dumps({"format": 1, "saved_at": 0, "links": {}, "plan": None}))
    assert read_plan(path) is None  # the engine has not planned yet
    path.write_text("[1, 2")
    with pytest.raises(FeedError, match="not JSON"):
        read_plan(path)
    path.write_text("[]")
    with pytest.raises(FeedError, match="not an edgesteer engine state"):
        read_plan(path)


def _replace(path: Path, text: str) -> None:
    """Write ``text`` the way the engine does (temp file + rename: a new inode)."""
    tmp = path.with_suffix(".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)
