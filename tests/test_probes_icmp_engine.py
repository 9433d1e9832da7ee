"""The ICMP echo engine: many echoes in flight on one socket per link, matched by sequence.

Loopback targets (127.0.0.0/8, the kernel answers) plus, as root, lab namespaces for the
datagram socket mode, timeouts and late replies.
"""

from __future__ import annotations

import asyncio

from hypothesis import given
from hypothesis import strategies as st
from icmplib import ICMPv4Socket

from edge.lab.netns import echo_pair, stop, wait_ready
from probes.agent import Agent
from probes.bus.memory import MemoryBus
from probes.kinds.icmp_engine import EchoPackets, IcmpEngine
from probes.measurement import ProbeKind
from probes.spec import LinkBinding, TargetSpec
from tests.conftest import IS_ROOT, require

LO = LinkBinding("lo", source="127.0.0.1")


def root_only() -> None:
    require(IS_ROOT, "raw ICMP sockets need root")


async def test_hundreds_in_flight_on_one_socket_all_match() -> None:
    root_only()
    engine = IcmpEngine()
    try:
        hosts = [f"127.0.{i // 250}.{i % 250 + 1}" for i in range(400)]
        outcomes = await asyncio.gather(*(engine.ping(h, LO, 2.0) for h in hosts))
        assert all(o.ok for o in outcomes), [o.error for o in outcomes if not o.ok][:3]
        assert all(o.rtt_s is not None and 0 < o.rtt_s < 0.5 for o in outcomes)
        (sock,) = engine.sockets  # one socket for the link, not one per target
        assert sock.raw and sock.kernel_timestamps
        assert sock.in_flight == 0
    finally:
        engine.close()


async def test_ipv6_echoes_share_their_own_socket() -> None:
    root_only()
    engine = IcmpEngine()
    try:
        outcomes = await asyncio.gather(
            *(engine.ping(h, LinkBinding("lo"), 2.0) for h in ["::1", "127.0.0.1"] * 50))
        assert all(o.ok for o in outcomes)
        assert len(engine.sockets) == 2  # one per family on the link
    finally:
        engine.close()


async def test_two_engines_on_raw_sockets_never_take_each_others_replies() -> None:
    root_only()
    a, b = IcmpEngine(), IcmpEngine()
    try:
        jobs = [e.ping("127.0.0.1", LO, 2.0) for _ in range(150) for e in (a, b)]
        outcomes = await asyncio.gather(*jobs)
        assert all(o.ok for o in outcomes)
        assert a.sockets[0].ident != b.sockets[0].ident
    finally:
        a.close()
        b.close()


async def test_agent_shares_one_socket_for_all_icmp_targets_of_a_link() -> None:
    root_only()
    engine = IcmpEngine()
    targets = [TargetSpec(f"t{i}", ProbeKind.ICMP, f"127.0.3.{i + 1}", 0, 0.05, 0.5)
               for i in range(20)]
    bus = MemoryBus()
    sub = bus.subscribe()
    agent = Agent("hk", targets, [LO], bus, icmp=engine)
    task = asyncio.create_task(agent.run())
    seen: set[str] = set()
    async with asyncio.timeout(10):
        async for m in sub:
            assert m.loss == 0.0, m
            seen.add(m.path.target)
            if len(seen) == len(targets):
                break
    assert len(engine.sockets) == 1
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    assert len(engine.sockets) == 0  # closed with the agent
    await bus.aclose()


async def test_bad_source_is_a_clear_error_naming_the_link() -> None:
    engine = IcmpEngine()
    try:
        out = await engine.ping("127.0.0.1", LinkBinding("cn2", source="not-an-ip"), 0.5)
        assert out.error is not None and "'cn2'" in out.error.detail
        out = await engine.ping("127.0.0.1", LinkBinding("cn2", source="::1"), 0.5)
        assert not out.ok  # v4 target over a v6 source: never silently over another family
    finally:
        engine.close()


async def test_timeout_releases_the_probe_and_a_late_reply_is_ignored() -> None:
    root_only()
    with echo_pair() as pair:
        proc = pair.server.python("edge.lab.echo", "--delay-ms", "150")
        try:
            wait_ready(proc, "echo")
            engine = IcmpEngine()
            binding = LinkBinding("lab", source=pair.client_addr)
            with pair.client.entered():
                out = await engine.ping(pair.server_addr, binding, 0.05)
                assert out.error is not None and out.error.kind == "timeout"
                (sock,) = engine.sockets
                assert sock.in_flight == 0
                await asyncio.sleep(0.3)
                assert sock.late == 1
                ok = await engine.ping(pair.server_addr, binding, 1.0)
                assert ok.ok and ok.rtt_s is not None and 0.145 < ok.rtt_s < 0.2
            engine.close()
        finally:
            stop(proc)


async def test_datagram_socket_mode_follows_ping_group_range() -> None:
    root_only()
    with echo_pair(kernel_echo=True) as pair:
        binding = LinkBinding("lab", source=pair.client_addr)
        engine = IcmpEngine(privileged=(False,))
        try:
            pair.client.sysctl("net.ipv4.ping_group_range", "1 0")  # nobody
            with pair.client.entered():
                denied = await engine.ping(pair.server_addr, binding, 0.5)
            assert denied.error is not None and denied.error.kind == "permission"
            assert "net.ipv4.ping_group_range" in denied.error.detail
            assert "CAP_NET_RAW" not in denied.error.detail
            pair.client.sysctl("net.ipv4.ping_group_range", "0 2147483647")
            with pair.client.entered():
                outcomes = await asyncio.gather(
                    *(engine.ping(pair.server_addr, binding, 1.0) for _ in range(50)))
            assert all(o.ok for o in outcomes)
            (sock,) = engine.sockets
            assert not sock.raw
        finally:
            engine.close()



@given(ident=st.integers(0, 0xFFFF), seq=st.integers(0, 0xFFFF),
       payload=st.binary(max_size=120))
def test_incremental_checksum_builds_exactly_what_icmplib_builds(
    ident: int, seq: int, payload: bytes
) -> None:
    # an unbound instance: the packet builder needs no socket
    builder = ICMPv4Socket.__new__(ICMPv4Socket)
    builder._sock = None  # nothing to close
    assert EchoPackets(builder, ident, payload).build(seq) == builder._create_packet(
        ident, seq, payload)
