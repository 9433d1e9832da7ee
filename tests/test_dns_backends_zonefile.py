"""Zone-file backend: atomic writes, serial bumps, reload command; checked by real BIND tools."""

from __future__ import annotations

import asyncio
import logging
import os
import time
from pathlib import Path

import dns.zone
import pytest

from dns_backends.base import BackendError
from dns_backends.reconcile import RetryPolicy, SyncBackend
from dns_backends.zonefile import ZoneFileStore
from tests.conftest import require_binary
from tests.servers_dns import ZONE, plan, query, services, start_named, zone_config

SERVICES = services("www.example.hk", "api.example.hk")
PLAN1 = plan(1, {("www.example.hk", "default"): [("A", "192.0.2.1", 1), ("A", "192.0.2.2", 1)],
                 ("api.example.hk", "default"): [("CNAME", "api.cdn.example.net", 1)]})
PLAN2 = plan(2, {("www.example.hk", "default"): [("A", "192.0.2.3", 1)],
                 ("api.example.hk", "default"): [("A", "192.0.2.4", 1)]})
FAST = RetryPolicy(attempts=2, backoff_s=0.01)


def backend(path: Path, reload: str | None = None, **kw: object) -> SyncBackend:
    store = ZoneFileStore("files", str(path), [zone_config()], SERVICES, reload=reload,
                          **kw)  # type: ignore[arg-type]
    return SyncBackend(store, retry=FAST)


def serial(path: Path) -> int:
    z = dns.zone.from_file(str(path), origin=ZONE, relativize=False)
    soa = z.get_rdataset(ZONE + ".", "SOA")
    assert soa is not None
    return int(soa[0].serial)


async def test_new_file_checked_by_named_checkzone(tmp_path: Path) -> None:
    checkzone = require_binary("named-checkzone", "bind9-utils")
    path = tmp_path / "zones" / f"{ZONE}.zone"
    b = backend(tmp_path / "zones" / "{zone}.zone", reload=f"{checkzone} -q {{zone}} {{path}}")
    assert (await b.apply(PLAN1)).changed == 2
    text = path.read_text()
    assert "www 60 IN A 192.0.2.1" in text and "api 60 IN CNAME api.cdn.example.net." in text
    assert "@ 3600 IN NS ns1" in text and "ns1 3600 IN A 127.0.0.1" in text
    assert serial(path) == 2  # created at 1, bumped by the write
    assert sorted(os.listdir(path.parent)) == [path.name]  # no temporary file left
    assert oct(path.stat().st_mode & 0o777) == "0o644"
    mtime = path.stat().st_mtime_ns
    assert (await b.apply(PLAN1)).changed == 0
    assert path.stat().st_mtime_ns == mtime  # idempotent: not even rewritten
    await b.apply(PLAN2)
    assert serial(path) == 3 and "192.0.2.3" in path.read_text()
    assert isinstance(b.store, ZoneFileStore) and b.store.reloads == 2


async def test_hand_edits_of_managed_names_are_put_back_others_kept(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    path = tmp_path / f"{ZONE}.zone"
    b = backend(path)
    await b.apply(PLAN1)
    text = path.read_text().replace("192.0.2.2", "198.51.100.9") + "mail 300 IN A 192.0.2.25\n"
    path.write_text(text)
    caplog.set_level(logging.WARNING, "edgesteer.backends")
    assert (await b.apply(PLAN1)).changed == 1
    final = path.read_text()
    assert "198.51.100.9" not in final and "192.0.2.2" in final
    assert "mail 300 IN A 192.0.2.25" in final  # not ours: kept
    assert any("drift" in r.getMessage() and "198.51.100.9" in r.getMessage()
               for r in caplog.records)


async def test_failing_reload_command_is_reported(tmp_path: Path) -> None:
    b = backend(tmp_path / "{zone}.zone", reload="sh -c 'echo cannot reach named >&2; exit 3'")
    with pytest.raises(BackendError) as info:
        await b.apply(PLAN1)
    text = str(info.value)
    assert text.startswith("files: ") and "reload command exited with 3" in text
    assert "cannot reach named" in text and "is written" in text


async def test_named_serves_what_was_written_after_reload(tmp_path: Path) -> None:
    path = tmp_path / "named" / f"{ZONE}.zone"
    first = backend(path)
    await first.apply(PLAN1)  # the file named starts from
    body = f'zone "{ZONE}" {{ type primary; file "{path}"; }};\n'
    server = start_named(tmp_path / "named", body, {}, [])
    try:
        assert query(server.host, server.port, "www.example.hk")[1] == {"192.0.2.1", "192.0.2.2"}
        assert server.proc is not None
        b = backend(path, reload=f"kill -HUP {server.proc.pid}")
        await b.apply(PLAN2)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            if query(server.host, server.port, "www.example.hk")[1] == {"192.0.2.3"}:
                break
            await asyncio.sleep(0.05)
        assert query(server.host, server.port, "www.example.hk")[1] == {"192.0.2.3"}
        assert query(server.host, server.port, "api.example.hk")[1] == {"192.0.2.4"}
    finally:
        server.stop()


async def test_one_file_per_view(tmp_path: Path) -> None:
    p = plan(1, {("www.example.hk", "default"): [("A", "192.0.2.1", 1)],
                 ("www.example.hk", "cn"): [("A", "192.0.2.50", 1)]})
    b = backend(tmp_path / "{zone}.{view}.zone", views=[("cn", "cn"), ("rest", "default")])
    assert (await b.apply(p)).changed == 2  # www in each view; api has no answers
    assert "192.0.2.50" in (tmp_path / f"{ZONE}.cn.zone").read_text()
    assert "192.0.2.50" not in (tmp_path / f"{ZONE}.rest.zone").read_text()


async def test_view_fragment_and_files_are_served_by_named(tmp_path: Path) -> None:
    """The zonefile backend's views: one file per view plus edgesteer-views.conf; named
    loads them and answers each client network from its view."""
    import dataclasses

    import netaddr

    from dns_backends import build_backends
    from edge.config.schema import BackendSettings, ViewSettings
    from geo.segment import Segment
    from tests.builders import make_config

    zones = tmp_path / "zones"
    base = make_config([], SERVICES, segments=[
        Segment("cn", cidrs=netaddr.IPSet(["127.0.0.2/32"]))])
    config = dataclasses.replace(base, zones=(zone_config(),), backends=(BackendSettings(
        name="files", kind="zonefile", path=str(zones / "{zone}.{view}.zone"),
        views=(ViewSettings(segment="cn"), ViewSettings(segment="default", name="world"))),))
    (b,) = build_backends(config)
    p = plan(1, {("www.example.hk", "default"): [("A", "192.0.2.1", 1)],
                 ("www.example.hk", "cn"): [("A", "192.0.2.50", 1)]})
    assert (await b.apply(p)).changed == 2
    fragment = zones / "edgesteer-views.conf"
    assert 'view "cn"' in fragment.read_text() and 'view "world"' in fragment.read_text()
    server = start_named(tmp_path / "named", f'include "{fragment}";\n', {}, [])
    try:
        assert query(server.host, server.port, "www.example.hk", source="127.0.0.2")[1] == \
            {"192.0.2.50"}
        assert query(server.host, server.port, "www.example.hk")[1] == {"192.0.2.1"}
    finally:
        server.stop()
