"""Cold start: stop and start the engine while a link is down; the answers after the restart
equal those before it, from the first query (real runtime, built-in DNS, real UDP, real
TCP probes on loopback). Also: the state directory's files, and operator overrides taking
effect on a running engine and surviving a restart."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from pathlib import Path
from types import MappingProxyType

import dns.asyncquery
import dns.message
import dns.rdatatype
import pytest

from edge import plancodec
from edge.config.loader import load_config
from edge.health.state import HealthSnapshot, HealthState, LinkHealth
from edge.health.tracker import HealthTracker
from edge.runtime import NodeRuntime
from edge.steering.overrides import Overrides, save_overrides
from edge.steering.planner import plan
from edge.steering.statefile import load_engine_state, save_engine_state
from tests import builders as b
from tests.conftest import free_port

SVC = "www.example.hk"

CN2 = frozenset({"203.0.113.10"})
PCCW = frozenset({"198.51.100.20"})

CONFIG = """
version: 1
node: {{name: hk-1, site: hk}}
sites: [{{name: hk}}]
health: {{window: 10, rise: 3, fall: 3, hold_down: 30, stale_after: 5}}
guard: {{state_dir: {state}}}
links:
  - {{name: cn2, priority: 1, answers: {{v4: [203.0.113.10]}}}}
  - {{name: pccw, priority: 2, answers: {{v4: [198.51.100.20]}}}}
targets:
  - {{name: pop-cn2, kind: tcp, host: 127.0.0.1, port: {dead}, interval: 0.1, timeout: 0.5,
     links: [cn2]}}
  - {{name: pop-pccw, kind: tcp, host: 127.0.0.1, port: {alive}, interval: 0.1,
     timeout: 0.5, links: [pccw]}}
zones: [{{name: example.hk, ns: [ns1.example.hk]}}]
services:
  - name: www.example.hk
    pools:
      - {{name: main, endpoints: [{{link: cn2}}, {{link: pccw}}]}}
"""


@pytest.fixture
async def listener() -> AsyncIterator[int]:
    """A TCP listener for the healthy link's target."""
    async def accept(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.close()

    server = await asyncio.start_server(accept, "127.0.0.1", 0)
    port: int = server.sockets[0].getsockname()[1]
    yield port
    server.close()
    await server.wait_closed()


async def _answers(port: int) -> frozenset[str]:
    q = dns.message.make_query("www.example.hk", "A")
    r = await dns.asyncquery.udp(q, "127.0.0.1", port=port, timeout=1.0)
    return frozenset(rd.to_text() for rrset in r.answer for rd in rrset
                     if rrset.rdtype == dns.rdatatype.A)


async def _until(port: int, want: frozenset[str], limit_s: float = 10.0) -> None:
    seen: frozenset[str] = frozenset()
    for _ in range(int(limit_s / 0.05)):
        seen = await _answers(port)
        if seen == want:
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"answers stayed {sorted(seen)}, expected {sorted(want)}")


def _config(tmp_path: Path, alive: int) -> Path:
    path = tmp_path / "edge.yaml"
    path.write_text(CONFIG.format(state="state", dead=free_port(), alive=alive))
    return path


async def _first_answers(cfg: Path, dns_port: int, n: int = 10) -> list[frozenset[str]]:
    """Start a runtime, query right away ``n`` times (through the warm-up), stop it."""
    rt = NodeRuntime(load_config(str(cfg)), listen=[("127.0.0.1", dns_port)])
    await rt.start()
    try:
        out = []
        for _ in range(n):
            out.append(await _answers(dns_port))
            await asyncio.sleep(0.03)
        return out
    finally:
        await rt.aclose()


async def test_restart_while_a_link_is_down_serves_the_same_answers(
        tmp_path: Path, listener: int) -> None:
    cfg = _config(tmp_path, listener)
    dns_port = free_port()
    rt = NodeRuntime(load_config(str(cfg)), listen=[("127.0.0.1", dns_port)])
    await rt.start()
    try:
        await _until(dns_port, PCCW)         # cn2's target refuses: failed over
        before = await _answers(dns_port)
    finally:
        await rt.aclose()
    state = json.loads((tmp_path / "state" / "engine.json").read_text())
    assert state["links"]["cn2"]["state"] == "down"
    persisted = plancodec.decode(state["plan"])
    assert [a.value for a in persisted.answers[("www.example.hk", "default")].answers] == [
        "198.51.100.20"]
    assert not list((tmp_path / "state").glob(".*.tmp"))   # atomic writes leave no temp

    after = await _first_answers(cfg, dns_port)
    assert after == [before] * len(after)

    # control: without the persisted state the first answers are the cold default (cn2)
    (tmp_path / "state" / "engine.json").unlink()
    cold = await _first_answers(cfg, dns_port, n=1)
    assert cold == [CN2]


async def test_overrides_apply_live_and_survive_a_restart(tmp_path: Path,
                                                          listener: int) -> None:
    cfg = _config(tmp_path, listener)
    dns_port = free_port()
    config = load_config(str(cfg))
    rt = NodeRuntime(config, listen=[("127.0.0.1", dns_port)])
    await rt.start()
    try:
        await _until(dns_port, PCCW)
        save_overrides(tmp_path / "state", Overrides(links={"cn2": "up", "pccw": "drain"}))
        await _until(dns_port, CN2, 5.0)     # forced up, the other drained: within a cycle
    finally:
        await rt.aclose()
    after = await _first_answers(cfg, dns_port, n=3)
    assert after == [CN2] * 3


def test_a_link_falling_from_degraded_keeps_its_weight_across_a_restart(
        tmp_path: Path) -> None:
    """The engine file keeps where a FALLING link fell from: restarted mid-fall, the plan
    still serves it at the degraded weight (a ramp), not at full weight again."""
    cfg = b.make_config([b.link("cn2", index=1), b.link("pccw", index=2)],
                        [b.service(SVC, b.pool("main", b.endpoint("cn2"), b.endpoint("pccw")))])
    falling = LinkHealth("cn2", HealthState.FALLING, 5.0, "x", falling_from=HealthState.DEGRADED)
    before = HealthSnapshot(version=3, taken_at=10.0, links=MappingProxyType({
        "cn2": falling, "pccw": LinkHealth("pccw", HealthState.UP, 1.0, "x")}))
    served = plan(cfg, before, version=3, now=10.0)
    save_engine_state(tmp_path, before, served, 10.0)
    persisted = load_engine_state(tmp_path)
    assert persisted is not None and persisted.falling_from == {"cn2": HealthState.DEGRADED}

    def weights(snapshot: HealthSnapshot) -> dict[str, float]:
        a = plan(cfg, snapshot, version=4, now=20.0).get(SVC, "default")
        assert a is not None
        return {w.link: w.weight for w in a.answers}

    restarted = HealthTracker(cfg.health, {lk.name: lk.thresholds for lk in cfg.links})
    restarted.seed(persisted.links, at=20.0, toward=persisted.toward,
                   falling_from=persisted.falling_from)
    assert weights(restarted.snapshot) == weights(before)
    assert weights(restarted.snapshot)["cn2"] < weights(restarted.snapshot)["pccw"]
    # control: forgetting where it fell from serves it at full weight again
    forgetful = HealthTracker(cfg.health, {lk.name: lk.thresholds for lk in cfg.links})
    forgetful.seed(persisted.links, at=20.0)
    assert weights(forgetful.snapshot)["cn2"] == weights(forgetful.snapshot)["pccw"]
