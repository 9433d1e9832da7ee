"""``/metrics`` (Prometheus text format) and ``/healthz`` over aiohttp.

Metrics are defined next to the code they measure, with ``prometheus_client`` on its
default registry (or one passed in); this module only serves them.
"""

from __future__ import annotations

from collections.abc import Iterator

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, CollectorRegistry, generate_latest
from prometheus_client.core import Metric
from prometheus_client.registry import Collector

REGISTRY_KEY = web.AppKey("registry", CollectorRegistry)


async def _metrics(request: web.Request) -> web.Response:
    body = generate_latest(request.app[REGISTRY_KEY])
    return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})


async def _healthz(request: web.Request) -> web.Response:
    return web.Response(text="ok\n")


class _Default(Collector):
    """The metrics defined on the default registry (backends, probes), in another registry."""

    def collect(self) -> Iterator[Metric]:
        yield from REGISTRY.collect()


def process_registry(*collectors: Collector) -> CollectorRegistry:
    """A registry with ``collectors`` and everything on the default registry: one per
    daemon, so that an in-process test can make several without duplicate names."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_Default())
    for c in collectors:
        registry.register(c)
    return registry


def metrics_app(registry: CollectorRegistry = REGISTRY) -> web.Application:
    app = web.Application()
    app[REGISTRY_KEY] = registry
    app.router.add_get("/metrics", _metrics)
    app.router.add_get("/healthz", _healthz)
    return app


async def start_metrics_server(host: str, port: int, *,
                               registry: CollectorRegistry = REGISTRY) -> web.AppRunner:
    """Serve /metrics and /healthz on host:port (0 = a free port). Close with ``cleanup()``.

    The bound port is ``bound_port(runner)``.
    """
    runner = web.AppRunner(metrics_app(registry), access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, host, port)
    await site.start()
    return runner


def bound_port(runner: web.AppRunner) -> int:
    for addr in runner.addresses:
        return int(addr[1])
    raise RuntimeError("metrics server is not listening")
