"""Redis Streams bus against a real redis-server: wire format, group reads and acks, dead
consumer takeover, bounded MAXLEN, Redis restart (buffer, drops, resend), ACL and TLS."""

from __future__ import annotations

import asyncio
import json
import math
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import redis.asyncio as aioredis
from hypothesis import given, settings
from hypothesis import strategies as st
from prometheus_client import REGISTRY
from redis.exceptions import AuthenticationError, ConnectionError, ResponseError

from probes.bus import MeasurementBus
from probes.bus.redis_streams import (
    BadEntry,
    BusClosed,
    RedisSettings,
    RedisStreamsBus,
    RedisSubscription,
    connect,
    decode_entry,
    decode_row,
    encode_batch,
    encode_row,
)
from probes.measurement import Measurement, PathKey, ProbeError, ProbeKind
from tests.builders import measurement
from tests.servers_redis import RedisServer, make_tls_files, redis_server, tls_redis

__all__ = ["redis_server"]  # the fixture, re-exported for pytest

P1 = PathKey("hk-1", "cn2", "pop")


def meas(i: int, key: PathKey = P1) -> Measurement:
    return measurement(1000.0 + i, key=key, sent=i + 1)


def dropped_total() -> float:
    return REGISTRY.get_sample_value("edgesteer_bus_dropped_total") or 0.0


def bus_for(server: RedisServer, **kw: object) -> RedisStreamsBus:
    return RedisStreamsBus(connect(RedisSettings(url=server.url)), **kw)  # type: ignore[arg-type]


async def take(sub: AsyncIterator[Measurement], n: int, within: float = 5.0) -> list[Measurement]:
    out: list[Measurement] = []
    async with asyncio.timeout(within):
        while len(out) < n:
            out.append(await anext(sub))
    return out


# --- wire format --------------------------------------------------------------------------

finite = st.floats(allow_nan=False, allow_infinity=False, width=64)
names = st.text(min_size=1, max_size=20)


@st.composite
def measurements(draw: st.DrawFn) -> Measurement:
    opt = st.none() | finite
    err = draw(st.none() | st.builds(ProbeError, st.sampled_from(["timeout", "refused", "tls"]),
                                     st.text(max_size=30)))
    return Measurement(
        path=PathKey(draw(names), draw(names), draw(names)),
        kind=draw(st.sampled_from(list(ProbeKind))), at=draw(finite), window_s=draw(finite),
        sent=draw(st.integers(0, 10**6)), received=draw(st.integers(0, 10**6)),
        loss=draw(st.floats(0, 1)), rtt_min=draw(opt), rtt_p50=draw(opt), rtt_p95=draw(opt),
        rtt_p99=draw(opt), rtt_max=draw(opt), rtt_mean=draw(opt), jitter_s=draw(finite),
        mean_abs_diff_s=draw(finite), ewma_rtt=draw(opt), last_error=err,
        errors=draw(st.dictionaries(st.sampled_from(["timeout", "refused"]),
                                    st.integers(0, 1000))))


@given(st.lists(measurements(), max_size=5))
def test_wire_format_round_trips_exactly(ms: list[Measurement]) -> None:
    assert decode_entry(encode_batch(ms)) == ms


def test_wire_row_is_the_documented_positional_array() -> None:
    m = measurement(1234.5, key=P1)
    row = json.loads(encode_batch([m])[b"m"])[0]
    assert row[:5] == ["hk-1", "cn2", "pop", "tcp", 1234.5]
    assert len(row) == 21 and row == json.loads(json.dumps(encode_row(m)))


@settings(max_examples=400)
@given(st.dictionaries(st.sampled_from([b"v", b"m", b"x"]),
                       st.binary(max_size=60) | st.just(b"1")
                       | st.builds(lambda r: json.dumps(r).encode(),
                                   st.recursive(st.none() | st.integers() | finite | names,
                                                lambda c: st.lists(c, max_size=22),
                                                max_leaves=40))))
def test_decoder_fuzz_only_raises_bad_entry(fields: dict[bytes, bytes]) -> None:
    try:
        for m in decode_entry(fields):
            assert math.isfinite(m.at) and 0.0 <= m.loss <= 1.0
    except BadEntry:
        pass


def test_decoder_rejects_wrong_rows_with_a_reason() -> None:
    good = encode_row(meas(1))
    for bad, why in [(good[:5], "row of 21"), ([*good[:3], "smtp", *good[4:]], "kind"),
                     ([*good[:8], 1.5, *good[9:]], "loss"),
                     ([*good[:4], "nan", *good[5:]], "at")]:
        with pytest.raises(BadEntry, match=why):
            decode_row(bad)


# --- over a real server -------------------------------------------------------------------


async def test_is_a_measurement_bus_and_delivers_in_order_then_acks(
        redis_server: RedisServer) -> None:
    agent, engine = bus_for(redis_server), bus_for(redis_server, group="e1", consumer="c1")
    protocol_check: MeasurementBus = agent
    sub = engine.subscribe()
    try:
        # The group is made on the first read; subscribe is "from now on", so start it first.
        first = asyncio.ensure_future(anext(sub))
        await asyncio.sleep(0.3)
        for i in range(300):
            await protocol_check.publish(meas(i))
        got = [await first, *await take(sub, 299)]
        assert [m.sent for m in got] == [i + 1 for i in range(300)]
        assert got[0] == meas(0)
        assert await agent.flush(2) and agent.sent == 300 and agent.dropped == 0
        await take_ack(sub)
        pending = await engine.client.xpending(engine.stream, "e1")
        assert pending["pending"] == 0
        # few entries for many measurements: they travel in batches
        assert await engine.client.xlen(engine.stream) < 300
    finally:
        await sub.aclose()
        await agent.aclose()
        await engine.aclose()


async def take_ack(sub: RedisSubscription) -> None:
    """Let the subscription acknowledge what it handed out (it acks on the next read)."""
    nxt = asyncio.ensure_future(anext(sub))
    await asyncio.sleep(0.2)
    nxt.cancel()
    with pytest.raises(asyncio.CancelledError):
        await nxt


async def test_maxlen_bounds_the_stream(redis_server: RedisServer) -> None:
    bus = bus_for(redis_server, maxlen=5, batch_max=1)
    try:
        for i in range(2000):
            await bus.publish(meas(i))
        assert await bus.flush(10)
        length = await bus.client.xlen(bus.stream)
        # "~": trimmed by whole stream nodes (stream-node-max-entries = 100 by default)
        assert length <= 5 + 100, length
    finally:
        await bus.aclose()


async def test_a_dead_consumers_pending_entries_are_taken_over(
        redis_server: RedisServer) -> None:
    agent = bus_for(redis_server, batch_max=10)
    dead = bus_for(redis_server, group="engines", consumer="engine-a", read_count=1)
    alive = bus_for(redis_server, group="engines", consumer="engine-b", claim_idle_s=0.3)
    sub_dead, sub_alive = dead.subscribe(), alive.subscribe()
    try:
        first = asyncio.ensure_future(anext(sub_dead))
        await asyncio.sleep(0.3)
        for i in range(10):
            await agent.publish(meas(i))
        assert (await first).sent == 1  # engine-a took the batch of 10 ... and died
        await dead.client.aclose()
        info = await alive.client.xpending(alive.stream, "engines")
        assert info["pending"] == 1 and info["consumers"][0]["name"] == b"engine-a"
        got = await take(sub_alive, 10, within=5)  # engine-b claims it after 0.3 s idle
        # engine-a never acked, so the whole batch is redone (at least once)
        assert [m.sent for m in got] == list(range(1, 11))
        assert sub_alive.claimed == 1
        await take_ack(sub_alive)
        info = await alive.client.xpending(alive.stream, "engines")
        assert info["pending"] == 0
    finally:
        await sub_alive.aclose()
        await agent.aclose()
        await alive.aclose()


async def test_restart_under_the_same_name_rereads_its_own_pending(
        redis_server: RedisServer) -> None:
    agent = bus_for(redis_server, batch_max=5)
    e1 = bus_for(redis_server, group="g", consumer="engine", read_count=1)
    sub = e1.subscribe()
    first = asyncio.ensure_future(anext(sub))
    await asyncio.sleep(0.3)
    for i in range(5):
        await agent.publish(meas(i))
    assert (await first).sent == 1
    await e1.client.aclose()  # crash before the ack
    e2 = bus_for(redis_server, group="g", consumer="engine", claim_idle_s=60)
    sub2 = e2.subscribe()
    try:
        got = await take(sub2, 5)
        assert [m.sent for m in got] == [1, 2, 3, 4, 5]  # nothing lost, redelivered
    finally:
        await sub2.aclose()
        await e2.aclose()
        await agent.aclose()


async def test_duplicates_are_filtered_per_path(redis_server: RedisServer) -> None:
    engine = bus_for(redis_server, group="g", consumer="c")
    sub = engine.subscribe()
    client = aioredis.Redis.from_url(redis_server.url)
    try:
        first = asyncio.ensure_future(anext(sub))
        await asyncio.sleep(0.3)
        p2 = PathKey("hk-2", "pccw", "pop")
        for batch in ([meas(1), meas(2)], [meas(2), meas(1), meas(3)], [meas(1, p2)]):
            await client.xadd(engine.stream, encode_batch(batch))  # type: ignore[arg-type]
        await client.xadd(engine.stream, {"v": "9", "m": "[]"})
        got = [await first, *await take(sub, 2)]
        assert [(m.path, m.sent) for m in got] == [(P1, 2), (P1, 3), (P1, 4)]
        assert (await take(sub, 1))[0].path == p2
        assert sub.duplicates == 2
        await take_ack(sub)
        assert sub.bad == 1  # the v=9 entry: skipped, counted, acked
        assert (await client.xpending(engine.stream, "g"))["pending"] == 0
    finally:
        await client.aclose()
        await sub.aclose()
        await engine.aclose()


async def test_redis_restart_buffers_drops_oldest_counted_and_resends(
        redis_server: RedisServer) -> None:
    agent = bus_for(redis_server, buffer_max=50, batch_max=20, retry_max_s=0.2)
    engine = bus_for(redis_server, group="g", consumer="c", retry_max_s=0.2)
    sub = engine.subscribe()
    dropped_before = dropped_total()
    try:
        first = asyncio.ensure_future(anext(sub))
        await asyncio.sleep(0.3)
        await agent.publish(meas(0))
        assert (await first).sent == 1
        redis_server.kill()
        for i in range(1, 81):  # 80 measurements while Redis is gone; room for 50
            await agent.publish(meas(i))
            await asyncio.sleep(0)
        await asyncio.sleep(0.3)
        assert agent.buffered == 50 and agent.dropped == 30
        assert dropped_total() - dropped_before == 30
        assert agent.outages >= 1
        redis_server.start()  # empty: no persistence, the group is gone too
        got = await take(sub, 50, within=15)
        # the oldest 30 were dropped: measurements 31..80 arrive, in order, none twice
        assert [m.sent for m in got] == [i + 1 for i in range(31, 81)]
        assert agent.buffered == 0 and agent.sent == 51
    finally:
        await sub.aclose()
        await agent.aclose()
        await engine.aclose()


async def test_publish_never_waits_for_an_unreachable_redis(redis_server: RedisServer) -> None:
    redis_server.kill()
    bus = bus_for(redis_server, buffer_max=10, retry_max_s=0.1)
    async with asyncio.timeout(1):
        for i in range(100):
            await bus.publish(meas(i))
    assert bus.buffered == 10 and bus.dropped == 90
    await bus.aclose(flush_timeout=0.2)
    with pytest.raises(BusClosed):
        await bus.publish(meas(0))


async def test_acl_user_and_password(tmp_path: Path) -> None:
    from tests.conftest import free_port
    from tests.servers_redis import redis_binary

    server = RedisServer(redis_binary(), free_port(), tmp_path, args=[
        "--user", "default", "off", "--user", "edge", "on", ">s3cret", "~*", "&*",
        "+@all"]).start()
    try:
        good = RedisStreamsBus(connect(RedisSettings(url=server.url, username="edge",
                                                     password="s3cret")), group="g")
        await good.publish(meas(0))
        assert await good.flush(5) and good.sent == 1
        await good.aclose()
        for user, pw in (("edge", "wrong"), (None, None)):
            client = connect(RedisSettings(url=server.url, username=user, password=pw))
            with pytest.raises((AuthenticationError, ResponseError, ConnectionError)):
                await client.xlen("edgesteer:measurements")
            await client.aclose()
    finally:
        server.stop()


async def test_tls(tmp_path: Path) -> None:
    files = make_tls_files(tmp_path / "pki")
    with tls_redis(tmp_path / "tls", files) as server:
        s = RedisSettings(url=server.url, tls=True, tls_ca_file=str(files["ca"]))
        bus = RedisStreamsBus(connect(s), group="g")
        await bus.publish(meas(0))
        assert await bus.flush(5) and bus.sent == 1
        await bus.aclose()
        plain = connect(RedisSettings(url=server.url, socket_timeout_s=1))
        with pytest.raises((ConnectionError, TimeoutError)):
            await plain.ping()
        await plain.aclose()


# --- from the config ----------------------------------------------------------------------


def test_bus_section_picks_the_bus(monkeypatch: pytest.MonkeyPatch) -> None:
    from edge.buses import BusConfigError, make_bus, redis_settings
    from edge.config.loader import ConfigInvalid, parse_config
    from probes.bus.memory import MemoryBus
    from tests.test_edge_leader import config_text

    text = config_text("redis://127.0.0.1:1/0")
    assert isinstance(make_bus(parse_config(text.split("\nbus:")[0])), MemoryBus)  # default
    with pytest.raises(ConfigInvalid, match="add `kind: redis`"):
        parse_config(text.replace("kind: redis, ", ""))
    sentinel = text.replace('url: "redis://127.0.0.1:1/0"', 'sentinels: ["10.0.0.1:26379", '
                            '"sentinel-b.example:26379"], master: edge, username: steer, '
                            'password_env: ES_TEST_PW, tls: {ca_file: /etc/ca.pem}')
    config = parse_config(sentinel)
    with pytest.raises(BusConfigError, match="ES_TEST_PW"):
        redis_settings(config.bus)
    monkeypatch.setenv("ES_TEST_PW", "pw")
    s = redis_settings(config.bus)
    assert (s.mode, s.sentinels, s.master, s.username, s.password, s.tls, s.tls_ca_file) == (
        "sentinel", (("10.0.0.1", 26379), ("sentinel-b.example", 26379)), "edge", "steer",
        "pw", True, "/etc/ca.pem")
    bus = make_bus(parse_config(text))
    assert isinstance(bus, RedisStreamsBus) and bus.group == "engine-hk-1"
    assert bus.stream == "edgesteer:measurements" and bus.maxlen == 100_000
    asyncio.run(bus.aclose())
