"""Policy warehouse against a real redis-server: config versions with author, time, diff and
reason; applied plans fenced by the leader's token; bounded retention; `history` and
`rollback` (through the guard) and a running engine following a rollback."""

from __future__ import annotations

import argparse
import asyncio
import json
import time
from pathlib import Path
from typing import Any

import pytest

from edge.commands import history as history_cmd
from edge.commands import rollback as rollback_cmd
from edge.commands.rollback import RollbackRefused, rollback
from edge.config.loader import parse_config
from edge.health.state import HealthState
from edge.history import PolicyWarehouse
from edge.leader import LeaderElector, StaleToken
from edge.plan import Plan, plan_from_json
from edge.steering.planner import plan as make_plan
from probes.bus.redis_streams import RedisClient, RedisSettings, connect
from tests.builders import snapshot
from tests.servers_redis import RedisServer, redis_server
from tests.test_edge_leader import Applied, config_text, eventually, make_engine

__all__ = ["redis_server"]

UP = HealthState.UP


def with_pccw_drained(text: str) -> str:
    return text.replace("{link: pccw}]", "{link: pccw, weight: 0}]")


@pytest.fixture
async def client(redis_server: RedisServer) -> Any:
    c = connect(RedisSettings(url=redis_server.url))
    yield c
    await c.aclose()


async def test_config_versions_with_author_time_reason_and_diff(client: RedisClient) -> None:
    wh = PolicyWarehouse(client, prefix="t", keep=3)
    before = time.time()
    v1, new1 = await wh.record_config("a: 1\n", author="ops@hk", reason="first")
    same, new_same = await wh.record_config("a: 1\n", author="someone", reason="again")
    v2, new2 = await wh.record_config("a: 2\n", author="ops@hk", reason="raise a")
    assert (v1.version, new1, same.version, new_same, v2.version, new2) == \
        (1, True, 1, False, 2, True)
    assert v2.author == "ops@hk" and v2.reason == "raise a" and before <= v2.at <= time.time()
    assert v2.base == 1 and "-a: 1" in v2.diff and "+a: 2" in v2.diff
    assert await wh.current_config_version() == 2
    assert (await wh.config(1)).text == "a: 1\n"  # type: ignore[union-attr]
    for i in range(3, 6):
        await wh.record_config(f"a: {i}\n", author="x", reason="")
    assert [c.version for c in await wh.configs()] == [5, 4, 3]  # bounded: newest 3
    assert await wh.config(1) is None and await wh.config(9) is None


def test_plan_json_round_trip_keeps_substance() -> None:
    config = parse_config(config_text("redis://127.0.0.1:1/0"))
    plan = make_plan(config, snapshot({"cn2": UP, "pccw": HealthState.DOWN}), version=7,
                     now=5.0)
    stored = json.loads(json.dumps(plan.to_json()))
    back = plan_from_json(stored)
    assert back.checksum() == plan.checksum() and not plan.diff(back)
    assert back.version == 7 and json.loads(json.dumps(back.to_json())) == stored


async def test_plan_records_are_fenced(client: RedisClient) -> None:
    wh = PolicyWarehouse(client, prefix="t")
    a = LeaderElector(client, prefix="t", identity="a", ttl_s=5)
    b = LeaderElector(client, prefix="t", identity="b", ttl_s=5)
    kw: dict[str, Any] = {"reason": "r", "diff": Plan().diff(Plan()), "config_version": 1,
                          "links": {"cn2": "up"}}
    with pytest.raises(StaleToken):
        await wh.record_plan(Plan(version=1), token=1, identity="a", **kw)  # no lease yet
    await a.step()
    await wh.record_plan(Plan(version=1), token=1, identity="a", **kw)
    await a.resign()
    await b.step()
    await wh.record_plan(Plan(version=2), token=2, identity="b", **kw)
    with pytest.raises(StaleToken):  # a, paused past its lease, tries to write
        await wh.record_plan(Plan(version=3), token=1, identity="a", **kw)
    records = await wh.plans()
    assert [(r.version, r.author, r.token) for r in records] == [(2, "b", 2), (1, "a", 1)]
    assert records[0].links == {"cn2": "up"} and records[0].config_version == 1


async def _seed(wh: PolicyWarehouse, url: str, *, freeze_v2: bool = False) -> None:
    """v1: both links serve; v2: pccw drained; plan of v2 applied by leader `e`."""
    v1 = config_text(url)
    v2 = with_pccw_drained(config_text(url, freeze=freeze_v2))
    await wh.record_config(v1, author="ops", reason="initial")
    await wh.record_config(v2, author="ops", reason="drain pccw")
    elector = LeaderElector(wh.client, prefix="t", identity="e", ttl_s=5)
    await elector.step()
    plan = make_plan(parse_config(v2), snapshot({"cn2": UP, "pccw": UP}), version=4,
                     now=1.0)
    await wh.record_plan(plan, token=1, identity="e", reason="r", diff=Plan().diff(plan),
                         config_version=2, links={"cn2": "up", "pccw": "up"})


async def test_rollback_goes_through_the_guard(client: RedisClient,
                                               redis_server: RedisServer) -> None:
    wh = PolicyWarehouse(client, prefix="t")
    await _seed(wh, redis_server.url, freeze_v2=True)
    with pytest.raises(RollbackRefused, match=r"guard\.freeze") as refused:
        await rollback(wh, 1, author="ops", reason="undo")
    assert refused.value.code == 1 and await wh.current_config_version() == 2  # nothing done
    with pytest.raises(RollbackRefused, match="not in the warehouse"):
        await rollback(wh, 42, author="ops", reason="")
    with pytest.raises(RollbackRefused, match="already current"):
        await rollback(wh, 2, author="ops", reason="")
    out = await rollback(wh, 1, author="ops", reason="undo", force=True)
    assert out["version"] == 3 and await wh.current_config_version() == 3
    v3 = await wh.config(3)
    assert v3 is not None and v3.text == (await wh.config(1)).text  # type: ignore[union-attr]
    assert v3.reason == "rollback to v1: undo" and v3.author == "ops"
    assert out["changes"] and "pccw" in json.dumps(out["changes"])


async def test_rollback_of_a_config_that_is_invalid_today(client: RedisClient) -> None:
    wh = PolicyWarehouse(client, prefix="t")
    await wh.record_config("version: 1\nnodes: oops\n", author="x", reason="bad")
    await wh.record_config("version: 1\n", author="x", reason="other")
    with pytest.raises(RollbackRefused, match="invalid today") as refused:
        await rollback(wh, 1, author="ops", reason="")
    assert refused.value.code == 2 and await wh.current_config_version() == 2


def _args(command: Any, argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    parser.add_argument("-v", "--verbose", action="count", default=0)
    command.add_parser(parser.add_subparsers())
    return parser.parse_args(argv)


async def test_history_and_rollback_commands(redis_server: RedisServer, tmp_path: Path,
                                             capsys: pytest.CaptureFixture[str]) -> None:
    c = connect(RedisSettings(url=redis_server.url))
    await _seed(PolicyWarehouse(c, prefix="t"), redis_server.url)
    await c.aclose()
    cfg = tmp_path / "cluster.yaml"
    cfg.write_text(config_text(redis_server.url))

    def cli(command: Any, argv: list[str]) -> int:
        args = _args(command, argv)
        code: int = args.run(args)
        return code

    assert await asyncio.to_thread(cli, history_cmd, ["history", "--config", str(cfg),
                                                      "--json"]) == 0
    listed = json.loads(capsys.readouterr().out)
    assert listed["current"] == 2 and [v["version"] for v in listed["configs"]] == [2, 1]
    assert listed["plans"][0]["author"] == "e" and listed["plans"][0]["token"] == 1
    assert await asyncio.to_thread(cli, rollback_cmd, ["rollback", "1", str(cfg),
                                                       "--reason", "undo", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["version"] == 3
    assert await asyncio.to_thread(cli, history_cmd, ["history", str(cfg)]) == 0
    text = capsys.readouterr().out
    assert "* v3" in text and "rollback to v1: undo" in text and "by e (token 1)" in text
    assert await asyncio.to_thread(cli, rollback_cmd, ["rollback", "9", str(cfg)]) == 2


async def test_a_running_leader_follows_a_rollback(redis_server: RedisServer) -> None:
    from probes.bus.redis_streams import RedisStreamsBus
    from tests.test_edge_leader import feed

    v1 = config_text(redis_server.url)
    v2 = with_pccw_drained(v1)
    client = connect(RedisSettings(url=redis_server.url))
    wh = PolicyWarehouse(client, prefix="t")
    await wh.record_config(v1, author="ops", reason="initial")
    log: list[Applied] = []
    engine = make_engine(parse_config(v2), v2, "e1", log)
    agent = RedisStreamsBus(connect(RedisSettings(url=redis_server.url)))
    await engine.start()
    try:
        assert engine.config_version == 2  # the file was new: recorded and current
        await feed(agent, eventually(lambda: bool(log), 5, "v2 applied"))
        assert log[-1].values == {"203.0.113.10"}  # pccw drained (weight 0)
        out = await rollback(wh, 1, author="ops", reason="undo drain")
        await feed(agent, eventually(lambda: log[-1].values == {"203.0.113.10",
                                                                "203.0.113.20"},
                                     5, "rollback applied"))
        record = (await wh.plans(1))[0]
        assert record.config_version == out["version"] == 3 and record.author == "e1"
    finally:
        await engine.aclose()
        await agent.aclose()
        await client.aclose()
