"""PowerDNS HTTP API backend against a real pdns_server with the sqlite3 backend."""

from __future__ import annotations

import asyncio
import logging
import secrets
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web

from dns_backends.base import BackendError
from dns_backends.powerdns import PowerDnsStore
from dns_backends.reconcile import SyncBackend
from tests.conftest import free_port
from tests.servers_dns import (
    FAST,
    PLAN1,
    PLAN2,
    SERVICES,
    ServerProcess,
    plan,
    query,
    start_pdns,
    zone_config,
)


class Pdns:
    def __init__(self, server: ServerProcess, key: str) -> None:
        self.server, self.key = server, key
        self.made: list[SyncBackend] = []
        self.url = f"http://127.0.0.1:{server.extra['api_port']}"

    def backend(self, *, key: str | None = None, create: bool = True,
                name: str = "pdns") -> SyncBackend:
        store = PowerDnsStore(name, self.url, key or self.key, [zone_config()], SERVICES,
                              create_zones=create, timeout=2.0)
        self.made.append(SyncBackend(store, retry=FAST))
        return self.made[-1]

    def q(self, name: str, rdtype: str = "A") -> tuple[str, set[str], int]:
        return query("127.0.0.1", self.server.port, name, rdtype)

    async def patch(self, rrsets: list[dict[str, object]]) -> None:
        async with aiohttp.ClientSession(headers={"X-API-Key": self.key}) as s, s.patch(
                f"{self.url}/api/v1/servers/localhost/zones/example.hk.",
                json={"rrsets": rrsets}) as r:
            assert r.status == 204, await r.text()


@pytest.fixture
async def pdns(tmp_path: Path) -> AsyncIterator[Pdns]:
    key = secrets.token_hex(16)
    server = start_pdns(tmp_path / "pdns", key)
    p = Pdns(server, key)
    try:
        yield p
    finally:
        for backend in p.made:
            await backend.aclose()
        server.stop()


def store_of(b: SyncBackend) -> PowerDnsStore:
    assert isinstance(b.store, PowerDnsStore)
    return b.store


async def test_creates_zone_applies_and_verifies_by_queries(pdns: Pdns) -> None:
    backend = pdns.backend()
    result = await backend.apply(PLAN1)
    assert result.changed == 4
    assert store_of(backend).requests["POST"] == 1  # the zone was created
    assert pdns.q("www.example.hk") == ("NOERROR", {"192.0.2.1", "192.0.2.2"}, 60)
    assert pdns.q("www.example.hk", "AAAA")[1] == {"2001:db8::1"}
    assert pdns.q("cdn.example.hk", "CNAME")[1] == {"edge.cdn.example.net."}
    assert pdns.q("example.hk", "NS")[1] == {"ns1.example.hk."}
    assert (await backend.apply(PLAN2)).changed == 6
    assert pdns.q("www.example.hk")[1] == {"192.0.2.3"}
    assert pdns.q("www.example.hk", "AAAA")[1] == set()
    assert pdns.q("api.example.hk", "CNAME")[1] == {"api.cdn.example.net."}
    assert pdns.q("cdn.example.hk")[1] == {"192.0.2.20"}
    await backend.aclose()


async def test_same_plan_twice_patches_nothing(pdns: Pdns) -> None:
    backend = pdns.backend()
    await backend.apply(PLAN1)
    assert store_of(backend).requests["PATCH"] == 1  # every change in one PATCH
    assert (await backend.apply(PLAN1)).changed == 0
    assert store_of(backend).requests["PATCH"] == 1
    await backend.aclose()


async def test_drift_is_put_back_and_logged(pdns: Pdns,
                                            caplog: pytest.LogCaptureFixture) -> None:
    backend = pdns.backend()
    await backend.apply(PLAN1)
    await pdns.patch([{"name": "www.example.hk.", "type": "A", "ttl": 300,
                       "changetype": "REPLACE",
                       "records": [{"content": "198.51.100.66", "disabled": False}]}])
    assert pdns.q("www.example.hk")[1] == {"198.51.100.66"}
    caplog.set_level(logging.WARNING, "edgesteer.backends")
    assert (await backend.apply(PLAN1)).changed == 1
    assert pdns.q("www.example.hk") == ("NOERROR", {"192.0.2.1", "192.0.2.2"}, 60)
    drift = [r.getMessage() for r in caplog.records if "drift" in r.getMessage()]
    assert len(drift) == 1 and "198.51.100.66" in drift[0] and "pdns: example.hk" in drift[0]
    await backend.aclose()


async def test_wrong_api_key_is_a_clear_error(pdns: Pdns) -> None:
    backend = pdns.backend(key="wrong", name="pdns-hk")
    with pytest.raises(BackendError) as info:
        await backend.apply(PLAN1)
    text = str(info.value)
    assert text.startswith("pdns-hk: ") and "HTTP 401" in text and "API key" in text
    assert backend.stats.retries == 0  # not worth retrying
    await backend.aclose()


async def test_missing_zone_without_create_is_a_clear_error(pdns: Pdns) -> None:
    backend = pdns.backend(create=False)
    with pytest.raises(BackendError, match=r"HTTP 404: the zone does not exist on the server "
                       r"\(create it, or set create_zones: true\)"):
        await backend.apply(PLAN1)
    await backend.aclose()


async def test_server_down_then_back_converges(pdns: Pdns) -> None:
    backend = pdns.backend()
    await backend.apply(PLAN1)
    pdns.server.stop()
    with pytest.raises(BackendError) as info:
        await backend.apply(PLAN2)
    text = str(info.value)
    assert "cannot connect" in text and "gave up after 3 attempts" in text
    assert "nothing applied" in text
    pdns.server.start()
    assert (await backend.apply(PLAN2)).changed == 6
    assert pdns.q("www.example.hk")[1] == {"192.0.2.3"}
    await backend.aclose()


@pytest.fixture
async def failing_api() -> AsyncIterator[str]:
    """A real HTTP server on loopback answering 503, as a PowerDNS behind a sick proxy."""
    calls = {"n": 0}

    async def handler(request: web.Request) -> web.Response:
        calls["n"] += 1
        return web.json_response({"error": "backend database locked"}, status=503)

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", handler)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        await runner.cleanup()


async def test_http_5xx_is_retried_then_reported(failing_api: str) -> None:
    store = PowerDnsStore("pdns-5xx", failing_api, "k", [zone_config()], SERVICES)
    backend = SyncBackend(store, retry=FAST)
    try:
        with pytest.raises(BackendError, match=r"pdns-5xx: .*HTTP 503: backend database "
                           "locked"):
            await backend.apply(PLAN1)
    finally:
        await backend.aclose()
    assert store.requests["GET"] == 3


async def test_lua_records_carry_segments_and_weights(tmp_path: Path) -> None:
    """LUA mode: the resolver address (or ECS) picks the segment, answers drawn by weight."""
    import dns.edns
    import dns.message
    import dns.query
    import netaddr

    from geo.segment import Segment

    key = secrets.token_hex(16)
    server = start_pdns(tmp_path / "lua", key, lua=True)
    segments = [Segment("cn", cidrs=netaddr.IPSet(["127.0.0.2/32", "198.51.100.0/24"])),
                Segment("asn-only", asns=frozenset({4134}))]
    store = PowerDnsStore("pdns-lua", f"http://127.0.0.1:{server.extra['api_port']}", key,
                          [zone_config()], SERVICES, create_zones=True, lua=True,
                          segments=segments)
    backend = SyncBackend(store, retry=FAST)
    p = plan(1, {
        ("www.example.hk", "default"): [("A", "192.0.2.1", 100), ("A", "192.0.2.2", 50)],
        ("www.example.hk", "cn"): [("A", "192.0.2.50", 100)],
        ("www.example.hk", "asn-only"): [("A", "192.0.2.99", 100)],
        ("cdn.example.hk", "default"): [("CNAME", "edge.cdn.example.net", 100)],
    })
    try:
        assert (await backend.apply(p)).changed == 2  # one LUA RRset per name
        assert (await backend.apply(p)).changed == 0 and store.requests["PATCH"] == 1

        def ask(source: str, ecs: str | None = None) -> set[str]:
            q = dns.message.make_query("www.example.hk", "A",
                                       use_edns=0 if ecs else None,
                                       options=[dns.edns.ECSOption(ecs, 24)] if ecs else None)
            r = dns.query.udp(q, "127.0.0.1", timeout=2, port=server.port, source=source)
            return {rd.to_text() for rrset in r.answer for rd in rrset}

        assert ask("127.0.0.2") == {"192.0.2.50"}
        assert ask("127.0.0.1", ecs="198.51.100.0") == {"192.0.2.50"}
        seen = [frozenset(ask("127.0.0.1")) for _ in range(40)]
        assert set(seen) == {frozenset({"192.0.2.1"}), frozenset({"192.0.2.2"})}
        assert seen.count(frozenset({"192.0.2.1"})) > seen.count(frozenset({"192.0.2.2"})) / 2
        assert "192.0.2.99" not in str(seen)  # ASN-only segment cannot be carried
        assert query("127.0.0.1", server.port, "cdn.example.hk", "CNAME")[1] == \
            {"edge.cdn.example.net."}
    finally:
        await backend.aclose()
        server.stop()


async def test_a_primary_zone_is_notified_after_a_write(pdns: Pdns) -> None:
    async with aiohttp.ClientSession(headers={"X-API-Key": pdns.key}) as s, s.post(
            f"{pdns.url}/api/v1/servers/localhost/zones",
            json={"name": "example.hk.", "kind": "Master",
                  "nameservers": ["ns1.example.hk."]}) as r:
        assert r.status == 201, await r.text()
    backend = pdns.backend(create=False)
    assert (await backend.apply(PLAN1)).changed == 4
    assert store_of(backend).requests["PUT"] == 1  # PUT .../notify
    assert (await backend.apply(PLAN1)).changed == 0
    assert store_of(backend).requests["PUT"] == 1  # nothing written, nobody notified


# Skipping the read before a write: the zone's serial proves our last full GET -----------

PLAN3 = plan(3, {  # PLAN1 with api moved: www is left as PLAN1 wrote it
    ("www.example.hk", "default"): [("A", "192.0.2.1", 100), ("A", "192.0.2.2", 50),
                                    ("AAAA", "2001:db8::1", 100)],
    ("api.example.hk", "default"): [("A", "192.0.2.11", 100)],
    ("cdn.example.hk", "default"): [("CNAME", "edge.cdn.example.net", 100)],
})


async def zone_info(pdns: Pdns) -> dict[str, object]:
    async with aiohttp.ClientSession(headers={"X-API-Key": pdns.key}) as s, s.get(
            f"{pdns.url}/api/v1/servers/localhost/zones/example.hk.?rrsets=false") as r:
        assert r.status == 200, await r.text()
        info = await r.json()
    assert isinstance(info, dict)
    return info


async def test_a_write_after_a_verified_write_checks_only_the_serial(pdns: Pdns) -> None:
    backend = pdns.backend()
    store = store_of(backend)
    await backend.apply(PLAN1)  # creates the zone: full GETs
    info = await zone_info(pdns)
    assert info["soa_edit_api"] == "DEFAULT"  # so that every API edit moves the serial
    serial = info["serial"]
    assert isinstance(serial, int) and serial > 0
    reads, gets = store.full_reads, store.requests["GET"]
    assert (await backend.apply(PLAN2)).changed == 6
    assert store.skipped_reads == 1
    assert store.full_reads == reads + 1  # the verify only
    assert store.requests["GET"] == gets + 2  # ?rrsets=false, then the verify
    assert (await zone_info(pdns))["serial"] != serial  # our PATCH moved it
    assert pdns.q("www.example.hk")[1] == {"192.0.2.3"}
    assert pdns.q("api.example.hk", "CNAME")[1] == {"api.cdn.example.net."}
    # a pass with nothing to write always reads in full
    assert (await backend.apply(PLAN2)).changed == 0
    assert store.full_reads == reads + 2 and store.skipped_reads == 1


async def test_an_api_edit_between_applies_is_read_logged_and_put_back(
        pdns: Pdns, caplog: pytest.LogCaptureFixture) -> None:
    backend = pdns.backend()
    store = store_of(backend)
    await backend.apply(PLAN1)
    await pdns.patch([{"name": "www.example.hk.", "type": "A", "ttl": 60,
                       "changetype": "REPLACE",
                       "records": [{"content": "198.51.100.66", "disabled": False}]}])
    caplog.set_level(logging.WARNING, "edgesteer.backends")
    reads = store.full_reads
    assert (await backend.apply(PLAN3)).changed == 2  # api, and www put back
    assert store.skipped_reads == 0  # the serial moved: a full read before the PATCH
    assert store.full_reads == reads + 2
    assert backend.stats.drift == 1
    drift = [r.getMessage() for r in caplog.records if "drift" in r.getMessage()]
    assert len(drift) == 1 and "www.example.hk" in drift[0] and "198.51.100.66" in drift[0]
    assert pdns.q("www.example.hk")[1] == {"192.0.2.1", "192.0.2.2"}
    assert pdns.q("api.example.hk")[1] == {"192.0.2.11"}


async def test_an_api_edit_of_an_unmanaged_name_also_forces_the_full_read(pdns: Pdns) -> None:
    backend = pdns.backend()
    store = store_of(backend)
    await backend.apply(PLAN1)
    await pdns.patch([{"name": "other.example.hk.", "type": "TXT", "ttl": 60,
                       "changetype": "REPLACE",
                       "records": [{"content": '"hello"', "disabled": False}]}])
    assert (await backend.apply(PLAN3)).changed == 1
    assert store.skipped_reads == 0 and backend.stats.drift == 0
    assert pdns.q("other.example.hk", "TXT")[1] == {'"hello"'}  # not ours: left alone


async def test_stale_or_untrusted_serials_fall_back_to_the_full_read(pdns: Pdns) -> None:
    backend = pdns.backend()
    store = store_of(backend)
    await backend.apply(PLAN1)
    store.full_read_s = 0.0  # the state of the last full GET is too old to be used
    reads = store.full_reads
    assert (await backend.apply(PLAN3)).changed == 1
    assert store.skipped_reads == 0 and store.full_reads == reads + 2
    store.full_read_s = 300.0
    # a zone whose API edits do not move the serial (EPOCH: two in one second share it)
    async with aiohttp.ClientSession(headers={"X-API-Key": pdns.key}) as s, s.put(
            f"{pdns.url}/api/v1/servers/localhost/zones/example.hk.",
            json={"soa_edit_api": "EPOCH"}) as r:
        assert r.status == 204, await r.text()
    assert (await backend.apply(PLAN1)).changed == 1  # read: the known state was older
    reads = store.full_reads
    assert (await backend.apply(PLAN3)).changed == 1
    assert store.skipped_reads == 0 and store.full_reads == reads + 2
    assert pdns.q("api.example.hk")[1] == {"192.0.2.11"}


async def test_a_zone_deleted_since_the_last_read_is_read_and_created_again(
        pdns: Pdns) -> None:
    backend = pdns.backend()
    store = store_of(backend)
    await backend.apply(PLAN1)
    async with aiohttp.ClientSession(headers={"X-API-Key": pdns.key}) as s, s.delete(
            f"{pdns.url}/api/v1/servers/localhost/zones/example.hk.") as r:
        assert r.status == 204, await r.text()
    assert (await backend.apply(PLAN3)).changed == 4  # all of PLAN3, into a new zone
    assert store.skipped_reads == 0 and store.requests["POST"] == 2
    assert pdns.q("api.example.hk")[1] == {"192.0.2.11"}


async def test_an_edit_that_bypasses_the_api_is_found_by_the_next_pass_with_nothing_to_write(
        pdns: Pdns, caplog: pytest.LogCaptureFixture) -> None:
    """pdnsutil writes to the database without moving the serial: the serial cannot prove
    anything about such edits, which is why a pass with nothing to write always reads."""
    backend = pdns.backend()
    await backend.apply(PLAN1)
    serial = (await zone_info(pdns))["serial"]
    proc = await asyncio.create_subprocess_exec(
        "pdnsutil", f"--config-dir={pdns.server.workdir}", "replace-rrset", "example.hk",
        "www", "A", "60", "198.51.100.77", stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE)
    async with asyncio.timeout(30):
        _, err = await proc.communicate()
    assert proc.returncode == 0, err
    assert (await zone_info(pdns))["serial"] == serial  # as documented: no proof
    assert pdns.q("www.example.hk")[1] == {"198.51.100.77"}
    caplog.set_level(logging.WARNING, "edgesteer.backends")
    assert (await backend.apply(PLAN1)).changed == 1
    assert backend.stats.drift == 1 and any("198.51.100.77" in r.getMessage()
                                            for r in caplog.records)
    assert pdns.q("www.example.hk")[1] == {"192.0.2.1", "192.0.2.2"}
