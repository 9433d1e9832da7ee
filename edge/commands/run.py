"""``edgesteer run``: agent + engine + built-in DNS for one node, in one process."""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
import sys
from typing import Any

from aiohttp import web

from dns_backends.builtin.metrics import DnsCollector
from edge.api.engine_metrics import EngineCollector
from edge.api.metrics import bound_port, process_registry, start_metrics_server
from edge.commands.common import add_config_arg, load_or_report
from edge.health.tracker import Transition
from edge.lab.runner import parse_listen
from edge.runtime import NodeRuntime, PlanEvent, run_forever
from edge.steering.explain import explain_diff

log = logging.getLogger("edgesteer.run")


def add_parser(sub: Any) -> None:
    p: argparse.ArgumentParser = sub.add_parser(
        "run", help="run agent, engine and built-in DNS server for one node",
        description="Probe every (target, link) path of CONFIG, track health, plan, and serve "
        "the plan from the built-in authoritative DNS server, all in one process. "
        "SIGTERM or SIGINT stops it cleanly. Logs every health transition and plan change "
        "with its reason.")
    add_config_arg(p)
    p.add_argument("--listen", action="append", metavar="HOST:PORT",
                   help="DNS listen address (repeatable; default: dns.listen of CONFIG)")
    p.add_argument("--metrics", metavar="HOST:PORT",
                   help="serve Prometheus /metrics (link states and figures, plan in force, "
                   "plans applied/refused, backends behind, DNS counters, anycast routes) "
                   "and /healthz here")
    p.set_defaults(run=run)


def _on_transition(tr: Transition) -> None:
    log.info("health %s: %s -> %s (%s)", tr.path, tr.old, tr.new, tr.reason)


def _on_plan(ev: PlanEvent) -> None:
    if ev.error:
        log.error("plan v%d refused: %s", ev.plan.version, ev.error)
    else:
        log.info("plan v%d applied:\n%s", ev.plan.version, explain_diff(ev.diff))


async def _stop_on_signal() -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    log.info("signal received, stopping")


def _reload_on_sighup(runtime: NodeRuntime, path: str) -> None:
    """SIGHUP: re-read the config; if valid, the engine re-plans within one cycle (an
    invalid file is reported and the running config kept)."""
    def reload() -> None:
        config = load_or_report(path, "run")
        if config is None:
            log.error("SIGHUP: %s is invalid, keeping the running config", path)
            return
        runtime.reload(config)
        log.info("SIGHUP: %s reloaded", path)

    asyncio.get_running_loop().add_signal_handler(signal.SIGHUP, reload)


async def _start_metrics(runtime: NodeRuntime, at: tuple[str, int]) -> web.AppRunner:
    registry = process_registry(EngineCollector(runtime.engine, runtime.anycast),
                                DnsCollector(lambda: [runtime.dns.snapshot()]))
    runner = await start_metrics_server(*at, registry=registry)
    log.info("metrics on http://%s:%d/metrics", at[0], bound_port(runner))
    return runner


def run(args: argparse.Namespace) -> int:
    config = load_or_report(args.config, "run")
    if config is None:
        return 2
    try:
        listen = parse_listen(args.listen) if args.listen else None
    except ValueError as exc:
        print(f"edgesteer run: {exc}", file=sys.stderr)
        return 2
    try:
        metrics_at = parse_listen([args.metrics])[0] if args.metrics else None
    except ValueError as exc:
        print(f"edgesteer run: {str(exc).replace('--listen', '--metrics')}", file=sys.stderr)
        return 2
    if args.verbose == 0:
        logging.getLogger().setLevel(logging.INFO)  # a daemon says what it decided and why

    async def main() -> None:
        runtime = NodeRuntime(config, on_plan=_on_plan, on_transition=_on_transition,
                              listen=listen)
        _reload_on_sighup(runtime, args.config)
        runner = await _start_metrics(runtime, metrics_at) if metrics_at else None
        try:
            await run_forever(runtime, _stop_on_signal())
        finally:
            if runner is not None:
                await runner.cleanup()

    try:
        asyncio.run(main())
    except OSError as exc:
        print(f"edgesteer run: {exc}", file=sys.stderr)
        return 1
    return 0
