"""Integration: the real speakers (ExaBGP, BIRD 2) driven by the applier, a real BIRD 2 peer
receiving, all on loopback. After each health change the peer's routing table shows the
expected announce / withdraw / prepend / MED / communities; a speaker that dies comes back
with its routes; drains withdraw before the service stops; changes are rate limited.
"""

from __future__ import annotations

import asyncio
import os
import signal
import sys
import time
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from dns_backends.base import BackendError
from edge.anycast.applier import AnycastApplier
from edge.anycast.base import Session, SpeakerError, sessions_of
from edge.anycast.bird import BirdSpeaker
from edge.anycast.exabgp import ExaBgpSpeaker
from edge.config.loader import parse_config
from edge.config.schema import Config
from edge.health.state import HealthSnapshot, HealthState, LinkHealth
from edge.plan import Announcement, Plan
from edge.steering.anycast import plan_anycast
from tests.conftest import free_port, require, require_binary
from tests.servers_bgp import Bird, PeerSession, RouteSeen, peer_config, speaker_config

S = HealthState
P4 = "192.0.2.0/24"
P4B = "198.51.100.0/24"
P6 = "2001:db8::/32"
LINKS = (("cn2", 1, 65001), ("pccw", 1, 65002), ("ntt", 2, 65003))


def _exabgp() -> str:
    path = Path(sys.executable).parent / "exabgp"
    require(path.exists(), "exabgp not installed: pip install exabgp (in the dev extras)")
    return str(path)


def config_text(net: str, port: int, speaker: str, *, local_port: int | None = None,
                min_interval: float = 0.0, drain_wait: float = 0.0) -> str:
    links = []
    for i, (name, tier, peer_as) in enumerate(LINKS, start=1):
        lp = f", local_port: {local_port}" if local_port else ""
        links.append(f"""
  - name: {name}
    priority: {tier}
    answers: {{v4: [203.0.113.{i}]}}
    bgp: {{peer: {net}.{i}, peer_as: {peer_as}, local_address: {net}.{10 + i},
          peer_port: {port}, hold_time: 3, multihop: true{lp},
          next_hop_v6: "2001:db8:ffff::{10 + i}",
          communities: ["{peer_as - 60000}:{i}"]}}""")
    return f"""
version: 1
node: {{name: hk-1, site: hk}}
sites: [{{name: hk}}, {{name: hk-tko}}]
links:{"".join(links)}
zones: [{{name: example.hk, ns: [ns1.example.hk]}}]
services:
  - name: www.example.hk
    pools: [{{name: main, endpoints: [{{link: cn2}}, {{link: pccw}}, {{link: ntt}}]}}]
anycast:
  local_as: 64500
  med: 50
  degraded_med: 900
  degraded_prepend: 3
  prepend_by_tier: [0, 2]
  large_communities: ["64500:7:1"]
  degraded_communities: ["64500:666"]
  drain_wait: {drain_wait}
  speakers: [{speaker}, min_interval: {min_interval}, timeout: 5}}]
  prefixes:
    - prefix: {P4}
    - prefix: {P4B}
      sessions: [cn2]
      announced_by: [hk-tko]
    - prefix: {P6}
      sessions: [cn2, ntt]
"""


def snap(**states: HealthState) -> HealthSnapshot:
    now = time.time()
    full = {"cn2": S.UP, "pccw": S.UP, "ntt": S.UP} | states
    return HealthSnapshot(version=1, taken_at=now, links={
        n: LinkHealth(n, st, now, "test") for n, st in full.items()})


def plan_for(cfg: Config, **states: HealthState) -> Plan:
    return Plan(version=1, announcements=plan_anycast(cfg, snap(**states)))


@dataclass
class Lab:
    peer: Bird
    port: int
    net: str
    workdir: Path


@pytest.fixture
def lab(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[Lab]:
    require_binary("bird", "bird2")
    net = getattr(request, "param", "127.8.0")
    port = free_port()
    peer = Bird(tmp_path, "peer")
    sessions = [PeerSession(name, f"{net}.{i}", f"{net}.{10 + i}", peer_as)
                for i, (name, _, peer_as) in enumerate(LINKS, start=1)]
    peer.start(peer_config(sessions, port))
    try:
        yield Lab(peer, port, net, tmp_path)
    finally:
        peer.stop()


def mine(routes: dict[tuple[str, str], RouteSeen]) -> dict[tuple[str, str], RouteSeen]:
    """Keyed by (prefix, session name) instead of the peer's protocol name."""
    return {(p, proto.removeprefix("r_")): r for (p, proto), r in routes.items()}


Check = Callable[[dict[tuple[str, str], RouteSeen]], bool]


def expect(*, gone: tuple[tuple[str, str], ...] = (),
           present: tuple[tuple[str, str], ...] = (), **paths: int) -> Check:
    """A check: session=prepends for P4 on each named session, ``gone`` keys absent,
    ``present`` keys there."""
    def check(routes: dict[tuple[str, str], RouteSeen]) -> bool:
        m = mine(routes)
        return all((P4, s) in m and m[(P4, s)].prepends == n for s, n in paths.items()) \
            and all(k not in m for k in gone) and all(k in m for k in present)
    return check


async def run_health_sequence(lab: Lab, applier: AnycastApplier, cfg: Config) -> None:
    """The same health story against either speaker, checking the peer after each step."""
    await applier.apply(plan_for(cfg))
    m = mine(await lab.peer.wait_routes(expect(cn2=0, pccw=0, ntt=2, present=(
        (P4B, "cn2"), (P6, "cn2"), (P6, "ntt")))))
    cn2 = m[(P4, "cn2")]
    assert cn2.as_path == (64500,) and cn2.med == 50
    assert cn2.communities == {"5001:1"} and cn2.large_communities == {"64500:7:1"}
    assert m[(P4, "ntt")].as_path == (64500, 64500, 64500)
    assert (P4B, "cn2") in m and (P4B, "pccw") not in m
    assert m[(P6, "cn2")].as_path == (64500,) and m[(P6, "ntt")].prepends == 2
    assert (P6, "pccw") not in m

    # degraded: de-preferred (prepends, MED, community), not withdrawn
    await applier.apply(plan_for(cfg, cn2=S.DEGRADED))
    m = mine(await lab.peer.wait_routes(expect(cn2=3, pccw=0, ntt=2)))
    assert m[(P4, "cn2")].med == 900 and "64500:666" in m[(P4, "cn2")].communities

    # hard down: withdrawn from that session only
    await applier.apply(plan_for(cfg, cn2=S.DOWN))
    await lab.peer.wait_routes(expect(pccw=0, ntt=2, gone=((P4, "cn2"), (P4B, "cn2"),
                                                           (P6, "cn2"))))

    # every link down, the site is unhealthy: P4 (no other site) fails open at the worst
    # preference; P4B (hk-tko announces it too) is withdrawn everywhere
    await applier.apply(plan_for(cfg, cn2=S.DOWN, pccw=S.DOWN, ntt=S.DOWN))
    await lab.peer.wait_routes(expect(cn2=3, pccw=3, ntt=5, gone=((P4B, "cn2"),)))

    # recovery
    await applier.apply(plan_for(cfg))
    await lab.peer.wait_routes(expect(cn2=0, pccw=0, ntt=2))


def _since(protocols: str) -> dict[str, str]:
    """Established peer sessions -> the time they were established (``show protocols``)."""
    out = {}
    for line in protocols.splitlines():
        f = line.split()
        if len(f) >= 6 and f[0].startswith("r_") and f[5] == "Established":
            out[f[0]] = f[4]
    return out


@pytest.fixture
async def exabgp_applier(lab: Lab) -> AsyncIterator[tuple[AnycastApplier, Config]]:
    cmd = _exabgp()
    cfg = parse_config(config_text(lab.net, lab.port,
                                   f"{{name: exa, kind: exabgp, command: {cmd}"))
    speaker = ExaBgpSpeaker(cfg.anycast.speakers[0], sessions_of(cfg, "exa"),
                            workdir=str(lab.workdir), restart_delay_s=0.2)
    applier = AnycastApplier(cfg, {"exa": speaker})
    await applier.start()
    try:
        yield applier, cfg
    finally:
        await applier.aclose()


async def test_exabgp_follows_health(lab: Lab,
                                     exabgp_applier: tuple[AnycastApplier, Config]) -> None:
    applier, cfg = exabgp_applier
    await run_health_sequence(lab, applier, cfg)


async def test_exabgp_dies_is_restarted_and_routes_come_back(
        lab: Lab, exabgp_applier: tuple[AnycastApplier, Config]) -> None:
    applier, cfg = exabgp_applier
    speaker = applier.speakers["exa"]
    assert isinstance(speaker, ExaBgpSpeaker)
    await applier.apply(plan_for(cfg, ntt=S.DEGRADED))
    await lab.peer.wait_routes(expect(cn2=0, pccw=0, ntt=5))
    pid = speaker.pid
    assert pid is not None
    before = _since(await asyncio.to_thread(lab.peer.birdc, "show", "protocols"))
    assert len(before) == 3
    os.killpg(pid, signal.SIGKILL)
    # the peer's sessions drop and come back (new "since" times), and with them the routes
    # the restarted ExaBGP was given again (replayed: no new plan was applied)
    async with asyncio.timeout(20):
        while True:
            now = _since(await asyncio.to_thread(lab.peer.birdc, "show", "protocols"))
            if speaker.restarts and all(now.get(k) not in (None, v) for k, v in before.items()):
                break
            await asyncio.sleep(0.1)
    m = mine(await lab.peer.wait_routes(expect(cn2=0, pccw=0, ntt=5), wait_s=20))
    assert speaker.restarts == 1 and speaker.pid not in (None, pid)
    assert m[(P4, "ntt")].med == 900
    # and it keeps taking changes
    await applier.apply(plan_for(cfg, ntt=S.DOWN))
    await lab.peer.wait_routes(expect(cn2=0, pccw=0, gone=((P4, "ntt"),)))


async def test_exabgp_refusal_is_reported_and_state_kept(
        lab: Lab, exabgp_applier: tuple[AnycastApplier, Config]) -> None:
    """ExaBGP answers `error` to a command it cannot parse: the apply fails loudly
    (BackendError naming the command), and the next good state still goes through."""
    applier, cfg = exabgp_applier
    good = plan_for(cfg)
    await applier.apply(good)
    await lab.peer.wait_routes(expect(cn2=0, pccw=0, ntt=2))
    bad = dict(good.announcements)
    bad[(P4, "pccw")] = Announcement(P4, "pccw", "announce", communities=("not-a-community",))
    with pytest.raises(BackendError, match=r"exabgp refused: .*not-a-community"):
        await applier.apply(Plan(version=2, announcements=bad))
    await applier.apply(plan_for(cfg, pccw=S.DEGRADED))
    await lab.peer.wait_routes(expect(cn2=0, pccw=3, ntt=2))


async def test_exabgp_drain_withdraws_before_the_service_stops(lab: Lab) -> None:
    """Order of operations: withdraw -> confirmed by the speaker -> drain_wait -> only then
    stop the service. When stop runs the peer has no route while every session is still
    established and the speaker alive: withdrawn over BGP, not dropped with the session."""
    cmd = _exabgp()
    cfg = parse_config(config_text(lab.net, lab.port, f"{{name: exa, kind: exabgp, "
                                   f"command: {cmd}", drain_wait=1.0))
    speaker = ExaBgpSpeaker(cfg.anycast.speakers[0], sessions_of(cfg, "exa"),
                            workdir=str(lab.workdir))
    applier = AnycastApplier(cfg, {"exa": speaker})
    await applier.start()
    try:
        await applier.apply(plan_for(cfg))
        await lab.peer.wait_routes(expect(cn2=0, pccw=0, ntt=2, present=((P4B, "cn2"),)))
        seen: list[tuple[int, int, int | None]] = []

        async def stop_service() -> None:
            routes = await asyncio.to_thread(lab.peer.routes)
            protocols = await asyncio.to_thread(lab.peer.birdc, "show", "protocols")
            seen.append((len(routes), protocols.count("Established"), speaker.pid))

        await applier.drain_then(stop_service)
        assert seen and seen[0][:2] == (0, 3) and seen[0][2] is not None
        # while drained, new plans stay withdrawn
        await applier.apply(plan_for(cfg, ntt=S.DEGRADED))
        await asyncio.sleep(0.5)
        assert not await asyncio.to_thread(lab.peer.routes)
        await applier.undrain()
        await lab.peer.wait_routes(expect(cn2=0, pccw=0, ntt=5))
    finally:
        await applier.aclose()


@pytest.fixture
def bird_speaker_daemon(lab: Lab) -> Iterator[Bird]:
    include = lab.workdir / "edgesteer-anycast.conf"
    daemon = Bird(lab.workdir, "speaker")
    daemon.conf.write_text(speaker_config(f"{lab.net}.11", include))
    yield daemon
    daemon.stop()


def bird_cfg(lab: Lab, daemon: Bird, **kw: float) -> Config:
    include = lab.workdir / "edgesteer-anycast.conf"
    spk = (f"{{name: bird, kind: bird, socket: {daemon.socket}, include: {include}, "
           f"birdc: {require_binary('birdc', 'bird2')}")
    return parse_config(config_text(lab.net, lab.port, spk, local_port=free_port(), **kw))


@pytest.mark.parametrize("lab", ["127.8.1"], indirect=True)
async def test_bird_follows_health_and_survives_a_crash(lab: Lab,
                                                        bird_speaker_daemon: Bird) -> None:
    cfg = bird_cfg(lab, bird_speaker_daemon)
    applier = AnycastApplier(cfg)
    await applier.start()  # writes an all-withdrawn include so bird.conf loads
    bird_speaker_daemon.start()
    try:
        await run_health_sequence(lab, applier, cfg)
        await applier.apply(plan_for(cfg, ntt=S.FALLING))
        await lab.peer.wait_routes(expect(cn2=0, pccw=0, ntt=5))
        # BIRD crashes: the peer loses the routes; applying now is reported, not hidden
        assert await applier.check() == {}
        bird_speaker_daemon.kill()
        await lab.peer.wait_routes(lambda r: not r)
        problems = await applier.check()
        assert set(problems) == {"bird"} and "Unable to connect" in problems["bird"]
        with pytest.raises(Exception, match="include file is written"):
            await applier.apply(plan_for(cfg, ntt=S.DOWN))
        # BIRD is restarted (as systemd would): it reads the include edgesteer wrote last
        bird_speaker_daemon.start()
        await lab.peer.wait_routes(expect(cn2=0, pccw=0, gone=((P4, "ntt"),)))
        assert await applier.check() == {} and applier.problems == {}
        await applier.apply(plan_for(cfg))
        await lab.peer.wait_routes(expect(cn2=0, pccw=0, ntt=2))
    finally:
        await applier.aclose()
    # clean shutdown withdrew everything while BIRD kept running
    await lab.peer.wait_routes(lambda r: not r)
    assert "Established" in bird_speaker_daemon.birdc("show", "protocols")


@pytest.mark.parametrize("lab", ["127.8.2"], indirect=True)
async def test_bird_refused_config_keeps_previous_file(lab: Lab,
                                                       bird_speaker_daemon: Bird) -> None:
    cfg = bird_cfg(lab, bird_speaker_daemon)
    include = lab.workdir / "edgesteer-anycast.conf"
    settings = cfg.anycast.speakers[0]
    speaker = BirdSpeaker(settings, sessions_of(cfg, "bird"))
    await speaker.start()
    bird_speaker_daemon.start()
    good = plan_for(cfg).announcements
    assert await speaker.apply(good) == 6  # P4 x 3, P4B x 1, P6 x 2
    before = include.read_text()
    bad = dict(good)
    key = (P4, "cn2")
    bad[key] = Announcement(P4, "cn2", "announce", communities=("99999999:1",))
    with pytest.raises(SpeakerError, match="refused"):
        await speaker.apply(bad)
    assert include.read_text() == before
    assert await speaker.apply(good) == 0
    await lab.peer.wait_routes(expect(cn2=0, pccw=0, ntt=2))
    assert not list(lab.workdir.glob(".edgesteer-anycast.conf.*"))  # no temp files left


@pytest.mark.parametrize("lab", ["127.8.3"], indirect=True)
async def test_rate_limit_holds_changes_per_session(lab: Lab,
                                                    bird_speaker_daemon: Bird) -> None:
    cfg = bird_cfg(lab, bird_speaker_daemon, min_interval=4.0)
    applier = AnycastApplier(cfg)
    await applier.start()
    bird_speaker_daemon.start()
    try:
        t0 = time.monotonic()
        await applier.apply(plan_for(cfg))  # first change of every session: immediate
        await lab.peer.wait_routes(expect(cn2=0, pccw=0, ntt=2))
        result = await applier.apply(plan_for(cfg, cn2=S.DEGRADED))
        assert applier.deferred == {"cn2"} and "cn2: held by the rate limit" in result.notes
        await asyncio.sleep(0.5)
        m = mine(await asyncio.to_thread(lab.peer.routes))
        assert m[(P4, "cn2")].prepends == 0  # still the old state
        await lab.peer.wait_routes(expect(cn2=3, pccw=0, ntt=2))
        assert time.monotonic() - t0 >= 4.0  # not before min_interval after the last change
        assert applier.deferred == set()
    finally:
        await applier.aclose()


def test_sessions_of_and_registry() -> None:
    cfg = parse_config(config_text("127.8.9", 1790, "{name: b, kind: bird, socket: /x, "
                                   "include: /tmp/never-written.conf"))
    assert [s.name for s in sessions_of(cfg, "b")] == ["cn2", "pccw", "ntt"]
    applier = AnycastApplier(cfg)
    assert isinstance(applier.speakers["b"], BirdSpeaker)
    assert isinstance(sessions_of(cfg, "b")[0], Session)
