"""The node runtime with anycast: the engine plans announcements next to DNS answers and
hands them to the speaker; a clean shutdown withdraws every route (seen at a real BIRD peer)
while the built-in DNS server still answers, and only then stops it."""

from __future__ import annotations

import asyncio
import io
from pathlib import Path

import dns.asyncquery
import dns.exception
import dns.message
import pytest

from edge.anycast.applier import AnycastApplier
from edge.config.loader import parse_config
from edge.health.state import HealthSnapshot
from edge.lab.display import anycast_rows, screen
from edge.lab.runner import LabOptions, load_lab_config, run_lab
from edge.plan import Plan
from edge.runtime import Engine, NodeRuntime
from edge.steering.anycast import plan_anycast
from tests.builders import measurement, path
from tests.conftest import free_port
from tests.servers_bgp import RouteSeen
from tests.test_edge_anycast_speakers import (
    P4,
    Lab,
    _exabgp,
    config_text,
    expect,
    lab,  # noqa: F401  (fixture)
    mine,
)


async def _answers(port: int) -> bool:
    q = dns.message.make_query("www.example.hk", "A")
    try:
        r = await dns.asyncquery.udp(q, "127.0.0.1", port=port, timeout=0.5)
    except (dns.exception.Timeout, OSError):
        return False
    return bool(r.answer)


@pytest.mark.parametrize("lab", ["127.8.4"], indirect=True)
async def test_shutdown_withdraws_while_dns_still_answers(lab: Lab) -> None:  # noqa: F811
    cmd = _exabgp()
    cfg = parse_config(config_text(lab.net, lab.port, f"{{name: exa, kind: exabgp, "
                                   f"command: {cmd}", drain_wait=3.0))
    dns_port = free_port()
    runtime = NodeRuntime(cfg, listen=[("127.0.0.1", dns_port)])
    await runtime.start()
    closing: asyncio.Task[None] | None = None
    try:
        assert runtime.engine.current is not None
        assert set(runtime.engine.current.announcements) == {
            (P4, "cn2"), (P4, "pccw"), (P4, "ntt"), ("198.51.100.0/24", "cn2"),
            ("2001:db8::/32", "cn2"), ("2001:db8::/32", "ntt")}
        await lab.peer.wait_routes(expect(cn2=0, pccw=0, ntt=2))
        assert await _answers(dns_port)
        closing = asyncio.create_task(runtime.aclose())

        def withdrawn(routes: dict[tuple[str, str], RouteSeen]) -> bool:
            return not routes

        await lab.peer.wait_routes(withdrawn, wait_s=10)
        assert not closing.done()
        assert await _answers(dns_port), "DNS stopped before the routes were withdrawn"
        await closing
        assert not await _answers(dns_port)
    finally:
        if closing is None:
            await runtime.aclose()


async def test_lab_shows_anycast_beside_dns(tmp_path: Path) -> None:
    """The lab's embedded config plans anycast (no speaker): the events and the screen
    show the announcements next to the DNS answers."""
    calm = tmp_path / "calm.yaml"
    calm.write_text("name: calm\nduration: 1\n")
    out = io.StringIO()
    result = await run_lab(LabOptions(scenario=str(calm), headless=True,
                                      listen=(("127.0.0.1", free_port()),)), out)
    assert result.passed
    text = out.getvalue()
    for link in ("cn2-gia", "pccw", "ntt"):
        assert f"anycast 192.0.2.0/24 via {link}: announce" in text
    cfg = load_lab_config(None)
    plan = Plan(announcements=plan_anycast(cfg, HealthSnapshot()))
    rows = anycast_rows(plan)
    assert rows[0].split() == ["192.0.2.0/24", "via", "cn2-gia", "announced,", "prepend",
                               "0"]
    assert "Anycast (BGP):" in screen(cfg, "x", 0, 1, HealthSnapshot(), plan, [], [])


@pytest.mark.parametrize("lab", ["127.8.6"], indirect=True)
async def test_engine_health_changes_reach_the_peer(lab: Lab) -> None:  # noqa: F811
    """The whole path: measurements -> health tracker -> steering cycle (planner + anycast
    + rails + guard) -> applier -> ExaBGP -> the BIRD peer's table, after each change."""
    cmd = _exabgp()
    cfg = parse_config(config_text(lab.net, lab.port, f"{{name: exa, kind: exabgp, "
                                   f"command: {cmd}"))
    applier = AnycastApplier(cfg)
    engine = Engine(cfg, [applier])
    await applier.start()
    try:
        t = 1000.0

        async def feed(link: str, **figures: float) -> None:
            nonlocal t
            t += 1
            engine.tracker.feed(measurement(t, key=path(link), **figures))
            await engine.replan()

        for link in ("cn2", "pccw", "ntt"):
            await feed(link)
        await lab.peer.wait_routes(expect(cn2=0, pccw=0, ntt=2))
        await feed("cn2", loss=0.5)  # one bad window: FALLING, de-preferred, not withdrawn
        m = mine(await lab.peer.wait_routes(expect(cn2=3, pccw=0, ntt=2)))
        assert m[(P4, "cn2")].med == 900
        for _ in range(cfg.health.fall - 1):
            await feed("cn2", loss=0.5)
        await lab.peer.wait_routes(expect(pccw=0, ntt=2, gone=((P4, "cn2"),)))
        assert engine.current is not None
        assert engine.current.announcements[(P4, "cn2")].action == "withdraw"
    finally:
        await applier.aclose()
