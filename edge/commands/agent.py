"""``edgesteer agent``: the probe agent of one node as a daemon.

Probes every (target, link) path of the config and publishes one Measurement per path per
interval to the config's bus. Signals: SIGTERM / SIGINT stop cleanly; SIGHUP re-reads the
config and swaps targets and links (paths that did not change keep their windows); a config
that does not load is refused with its errors logged, and the running one stays.

``--metrics HOST:PORT`` serves Prometheus ``/metrics`` (per path: rtt quantiles, loss,
jitter, probes sent, errors by reason). ``--record FILE`` appends every raw sample as a JSON
line (:mod:`probes.trace`).

A path that cannot be probed (unresolvable name, bad address, a source not on this host, no
ICMP socket allowed) fails on its own, with its reason in its samples and one log line naming
the path; every other path keeps running.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
import sys
from typing import Any

from edge.buses import BusConfigError, make_bus
from edge.commands.common import add_config_arg, load_or_report
from edge.config.loader import ConfigInvalid, load_config
from edge.config.schema import Config
from edge.lab.runner import parse_listen
from edge.runtime import link_bindings
from probes.agent import Agent
from probes.bus import MeasurementBus
from probes.measurement import Measurement, PathKey, Sample
from probes.metrics import ProbeMetrics
from probes.trace import TraceWriter

log = logging.getLogger("edgesteer.agent")


def add_parser(sub: Any) -> None:
    p: argparse.ArgumentParser = sub.add_parser(
        "agent", help="run the probe agent of one node (daemon)",
        description="Probe every (target, link) path of the config and publish measurements "
        "to its bus. SIGTERM/SIGINT stop; SIGHUP reloads targets and links, keeping the "
        "windows of unchanged paths (a bad config is refused and the running one kept).")
    add_config_arg(p)
    p.add_argument("--metrics", metavar="HOST:PORT",
                   help="serve Prometheus /metrics and /healthz here")
    p.add_argument("--record", metavar="FILE",
                   help="append every raw sample to FILE as JSON lines")
    p.set_defaults(run=run)


class _MetricsBus:
    """Passes Measurements on to the real bus, updating the path gauges on the way."""

    def __init__(self, inner: MeasurementBus, metrics: ProbeMetrics) -> None:
        self._inner = inner
        self._metrics = metrics

    async def publish(self, measurement: Measurement) -> None:
        self._metrics.on_measurement(measurement)
        await self._inner.publish(measurement)

    def subscribe(self) -> Any:
        return self._inner.subscribe()

    async def aclose(self) -> None:
        await self._inner.aclose()


class AgentDaemon:
    """Agent + metrics + recorder + reload, for one config file."""

    def __init__(self, path: str, config: Config, bus: MeasurementBus,
                 metrics: ProbeMetrics | None = None, record: TraceWriter | None = None) -> None:
        self.path = path
        self.config = config
        self.metrics = metrics if metrics is not None else ProbeMetrics()
        self._record = record
        self._failing: dict[PathKey, str] = {}
        self.bus = _MetricsBus(bus, self.metrics)
        self.agent = Agent(config.node.name, config.targets, link_bindings(config), self.bus,
                           window=config.health.window, on_sample=self._on_sample,
                           suspect_factor=config.health.fast_probe_factor)

    def reload(self) -> bool:
        """Re-read the config file; True when applied, False when refused (logged)."""
        try:
            new = load_config(self.path)
        except ConfigInvalid as exc:
            log.error("reload refused, keeping the running config: %s is invalid:\n%s",
                      self.path, exc)
            return False
        except OSError as exc:
            log.error("reload refused, keeping the running config: %s", exc)
            return False
        if new.node.name != self.config.node.name:
            log.error("reload refused, keeping the running config: node.name changed "
                      "(%s -> %s) and needs a restart", self.config.node.name, new.node.name)
            return False
        self.agent.update(new.targets, link_bindings(new))
        self.metrics.forget(self.agent.paths)
        for key in [k for k in self._failing if k not in set(self.agent.paths)]:
            del self._failing[key]
        self.config = new
        log.info("reloaded %s: %d paths", self.path, len(self.agent.paths))
        return True

    def _on_sample(self, sample: Sample) -> None:
        self.metrics.on_sample(sample)
        if self._record is not None:
            try:
                self._record.write(sample)
            except (OSError, ValueError) as exc:
                log.error("--record: writing failed, recording stops: %s", exc)
                self._record = None
        self._log_path_state(sample)

    def _log_path_state(self, sample: Sample) -> None:
        """One line when a path starts failing (or fails differently), one when it recovers."""
        before = self._failing.get(sample.path)
        if sample.error is None:
            if before is not None:
                del self._failing[sample.path]
                log.info("path %s (%s) answers again", sample.path, sample.kind)
            return
        now = str(sample.error) if sample.error.kind != "timeout" else "timeout"
        if now != before:
            self._failing[sample.path] = now
            log.warning("path %s (%s) failing: %s", sample.path, sample.kind, sample.error)


async def serve(daemon: AgentDaemon, metrics_at: tuple[str, int] | None,
                stop: asyncio.Event) -> None:
    """Run ``daemon`` until ``stop`` is set (or the agent fails)."""
    runner = None
    if metrics_at is not None:
        from edge.api.metrics import start_metrics_server

        runner = await start_metrics_server(*metrics_at)
    task = asyncio.create_task(daemon.agent.run(), name="agent")
    try:
        log.info("agent %s: %d paths", daemon.config.node.name, len(daemon.agent.paths))
        waiter = asyncio.create_task(stop.wait())
        done, _ = await asyncio.wait({task, waiter}, return_when=asyncio.FIRST_COMPLETED)
        waiter.cancel()
        if task in done:
            task.result()
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        if runner is not None:
            await runner.cleanup()
        await daemon.bus.aclose()


def run(args: argparse.Namespace) -> int:
    config = load_or_report(args.config, "agent")
    if config is None:
        return 2
    try:
        metrics_at = parse_listen([args.metrics])[0] if args.metrics else None
    except ValueError as exc:
        print(f"edgesteer agent: {str(exc).replace('--listen', '--metrics')}", file=sys.stderr)
        return 2
    if args.verbose == 0:
        logging.getLogger().setLevel(logging.INFO)

    async def main() -> None:
        bus = make_bus(config)
        record = TraceWriter(args.record) if args.record else None
        try:
            daemon = AgentDaemon(args.config, config, bus, record=record)
            stop = asyncio.Event()
            loop = asyncio.get_running_loop()
            for sig in (signal.SIGTERM, signal.SIGINT):
                loop.add_signal_handler(sig, stop.set)
            loop.add_signal_handler(signal.SIGHUP, daemon.reload)
            await serve(daemon, metrics_at, stop)
            log.info("stopped")
        finally:
            if record is not None:
                record.close()

    try:
        asyncio.run(main())
    except (OSError, BusConfigError) as exc:
        print(f"edgesteer agent: {exc}", file=sys.stderr)
        return 1
    return 0
