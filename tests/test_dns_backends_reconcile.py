"""The daemon side: Engine -> Reconciler -> a real BIND; drift repair, outage, convergence."""

from __future__ import annotations

import asyncio
import dataclasses
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from prometheus_client import REGISTRY

from dns_backends import build_backends
from dns_backends.reconcile import Reconciler, RetryPolicy, SyncBackend
from dns_backends.rfc2136 import Rfc2136Store
from edge.config.schema import BackendSettings, Config, TsigSettings
from edge.runtime import Engine
from edge.steering.planner import plan as make_plan
from tests.builders import endpoint, link, make_config, pool, service
from tests.servers_dns import (
    ZONE,
    ServerProcess,
    new_key,
    query,
    start_named_primary,
)


@pytest.fixture
def named(tmp_path: Path) -> Iterator[tuple[ServerProcess, str]]:
    key = new_key()
    secret_file = tmp_path / "edgesteer.key"
    secret_file.write_text(f'key "{key.name}" {{\n  algorithm {key.algorithm};\n'
                           f'  secret "{key.secret}";\n}};\n')  # a BIND key file
    server = start_named_primary(tmp_path / "named", key)
    try:
        yield server, str(secret_file)
    finally:
        server.stop()


def config_for(server: ServerProcess, secret_file: str, vip: str = "203.0.113.10") -> Config:
    base = make_config([link("cn2", v4=[vip])],
                       [service("www.example.hk", pool("main", endpoint("cn2")))])
    settings = BackendSettings(name="bind", kind="rfc2136", server=(server.host, server.port),
                               tsig=TsigSettings(name="edgesteer", secret_file=secret_file),
                               timeout_s=1.0)
    return dataclasses.replace(base, backends=(settings,))


def www(server: ServerProcess) -> set[str]:
    return query(server.host, server.port, "www.example.hk")[1]


def failing(name: str) -> float | None:
    return REGISTRY.get_sample_value("edgesteer_backend_failing", {"backend": name})


async def test_engine_plans_reach_bind_and_drift_is_repaired(
        named: tuple[ServerProcess, str]) -> None:
    server, secret_file = named
    config = config_for(server, secret_file)
    (backend,) = build_backends(config)
    rec = Reconciler(backend, interval_s=0.1,
                     backoff=RetryPolicy(backoff_s=0.05, max_backoff_s=0.2))
    engine = Engine(config, [rec])
    try:
        await engine.start()
        async with asyncio.timeout(10):
            await rec.wait_converged(1)
        assert www(server) == {"203.0.113.10"}
        store = backend.store
        assert isinstance(store, Rfc2136Store)
        # idempotent: several reconcile passes, not one more UPDATE
        sent = store.sent["update"]
        async with asyncio.timeout(10):
            await rec.wait_passes(rec.passes + 3)
        assert store.sent["update"] == sent
        # a hand edit is put back by the next pass, and counted
        key = f"hmac-sha256:edgesteer:{store.key.secret if store.key else ''}"
        await asyncio.to_thread(
            subprocess.run, ["/usr/bin/nsupdate", "-y", key], check=True, timeout=10, text=True,
            input=f"server {server.host} {server.port}\nzone {ZONE}\n"
            "update delete www.example.hk A\nupdate add www.example.hk 60 A "
            "198.51.100.1\nsend\n")
        async with asyncio.timeout(10):
            while www(server) != {"203.0.113.10"}:
                await rec.wait_passes(rec.passes + 1)
        assert backend.stats.drift == 1
        # a newer plan goes out (the latest one wins)
        newer = make_plan(config_for(server, secret_file, vip="203.0.113.77"),
                          engine.tracker.snapshot, version=7, now=time.time())
        await rec.apply(newer)
        async with asyncio.timeout(10):
            await rec.wait_converged(7)
        assert www(server) == {"203.0.113.77"}
    finally:
        await rec.aclose()


async def test_outage_keeps_plan_raises_metric_and_converges(
        named: tuple[ServerProcess, str]) -> None:
    server, secret_file = named
    config = config_for(server, secret_file)
    store = Rfc2136Store("bind-outage", (server.host, server.port), [ZONE], config.services,
                         key=build_backends(config)[0].store.key,  # type: ignore[attr-defined]
                         timeout=0.5)
    rec = Reconciler(SyncBackend(store, retry=RetryPolicy(attempts=1)), interval_s=30,
                     backoff=RetryPolicy(backoff_s=0.05, max_backoff_s=0.2))
    engine = Engine(config, [rec])
    server.stop()
    try:
        await engine.start()  # the engine is not held up by a dead backend
        async with asyncio.timeout(10):
            await rec.wait_passes(3)
        assert rec.failures >= 3 and rec.applied is None
        assert rec.last_error is not None and "bind-outage" in rec.last_error
        assert "connection refused" in rec.last_error
        assert failing("bind-outage") == 1.0
        server.start()
        async with asyncio.timeout(10):
            await rec.wait_converged(1)  # backoff retries, no new plan needed
        assert www(server) == {"203.0.113.10"}
        assert failing("bind-outage") == 0.0 and rec.failures == 0
    finally:
        await rec.aclose()


def test_runtime_builds_a_reconciler_per_backend(named: tuple[ServerProcess, str]) -> None:
    from edge.runtime import NodeRuntime

    server, secret_file = named
    runtime = NodeRuntime(config_for(server, secret_file), listen=[("127.0.0.1", 0)])
    assert [r.name for r in runtime.external] == ["bind"]
    assert runtime.external[0] in runtime.engine.backends
