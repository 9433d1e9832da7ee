"""``edgesteer steer``: one steering engine of a cluster (health + planner + appliers) that
reads measurements from the Redis bus and applies only while it is the elected leader.

Every engine of the cluster runs the same CONFIG (its ``node`` section is not used here;
agents have their own). Each engine reads every measurement through its own consumer group,
so a standby's health is as warm as the leader's. The leader's applies carry its fencing
token (``edge.leader``); each applied plan is recorded in the policy warehouse
(``edge.history``). A new leader first adopts the last recorded plan, so its guard compares
against what is really in force and its versions continue the sequence.

The policy the engines run is the warehouse's current configuration version: CONFIG is
recorded as a new version when its text is new to the warehouse (a deploy); a file whose
text is an older version does not undo a rollback. ``edgesteer rollback`` moves the current
version; every engine reloads it within a tick and the leader re-plans through the guard.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
import socket
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, cast

from redis.exceptions import RedisError

from dns_backends.base import Backend
from edge import plancodec
from edge.api.engine_metrics import EngineCollector
from edge.api.metrics import bound_port, process_registry, start_metrics_server
from edge.buses import BusConfigError, engine_group, make_bus, redis_client
from edge.commands.common import add_config_arg, config_arg
from edge.config.loader import ConfigInvalid, parse_config
from edge.config.schema import Config
from edge.health.tracker import Transition
from edge.history import HistoryBackend, PolicyWarehouse, digest
from edge.lab.runner import parse_listen
from edge.leader import FencedBackend, LeaderElector
from edge.runtime import Engine, PlanEvent
from edge.steering.explain import explain_diff
from probes.bus import MeasurementBus
from probes.bus.redis_streams import close_client, reraise_if_cancelled

log = logging.getLogger("edgesteer.steer")


def add_parser(sub: Any) -> None:
    p: argparse.ArgumentParser = sub.add_parser(
        "steer", help="run a steering engine of a Redis cluster (leader-elected)",
        description="Read measurements from the Redis bus (bus.kind: redis), track health, "
        "plan, and apply to the configured backends while this engine holds the leader "
        "lease; standbys keep their health warm and take over within about bus.lease "
        "seconds. Applied plans and config versions go to the policy warehouse "
        "(`edgesteer history`). SIGTERM or SIGINT resign the lease and stop.")
    add_config_arg(p)
    p.add_argument("--identity", metavar="NAME",
                   help="this engine's name in the lease and the history "
                   "(default: the host name; unique per engine)")
    p.add_argument("--tick", type=float, default=1.0, metavar="S",
                   help="seconds between plan cycles when nothing changes (default 1)")
    p.add_argument("--metrics", metavar="HOST:PORT",
                   help="serve Prometheus /metrics (link states and figures, plan in force, "
                   "plans applied/refused, backends behind, backend applies and drift) and "
                   "/healthz here")
    p.set_defaults(run=run)


class SteerRuntime:
    """Bus + elector + engine + warehouse for one steering engine (see module doc)."""

    def __init__(self, config: Config, config_text: str, *, identity: str,
                 backends: Sequence[Backend] = (), source: str = "CONFIG",
                 on_plan: Callable[[PlanEvent], None] | None = None,
                 on_transition: Callable[[Transition], None] | None = None,
                 tick_s: float = 1.0) -> None:
        if config.bus.kind != "redis":
            raise BusConfigError("steer needs bus.kind: redis (one node: `edgesteer run`)")
        self.identity = identity
        self.source = source
        self._file_config, self._file_text = config, config_text
        self.client = redis_client(config)
        self.bus: MeasurementBus = make_bus(config, group=engine_group(config, identity),
                                            consumer=identity)
        self.elector = LeaderElector(self.client, prefix=config.bus.prefix, identity=identity,
                                     ttl_s=config.bus.lease_s, on_change=self._on_leader)
        self.warehouse = PolicyWarehouse(self.client, prefix=config.bus.prefix,
                                         keep=config.bus.history)
        self.config_version = 0
        self.history = HistoryBackend(self.warehouse, self.elector,
                                      config_version=lambda: self.config_version,
                                      links=self._link_states)
        self.fenced = [FencedBackend(b, self.elector) for b in backends]
        self.engine = Engine(config, [*self.fenced, self.history], on_plan=on_plan,
                             on_transition=on_transition, tick_s=tick_s, gate=self._may_plan)
        self._adopted: int | None = None  # token under which the last plan was adopted
        self._tasks: list[asyncio.Task[None]] = []
        self._takeover: asyncio.Task[None] | None = None
        self._closing = False

    def _link_states(self) -> dict[str, str]:
        return {name: str(lh.state) for name, lh in self.engine.tracker.snapshot.links.items()}

    def _may_plan(self) -> bool:
        token = self.elector.token
        return token is not None and token == self._adopted

    def _on_leader(self, token: int | None) -> None:
        if token is not None:
            self._takeover = asyncio.get_running_loop().create_task(self._adopt(token),
                                                                    name="steer-adopt")

    async def _adopt(self, token: int) -> None:
        """Take over the plan in force before applying anything under ``token``."""
        delay = 0.1
        while self.elector.token == token:
            try:
                last = await self.warehouse.last_plan()
                break
            except (RedisError, OSError, TimeoutError) as exc:
                reraise_if_cancelled()
                log.warning("steer: cannot read the last plan (%s); retrying", exc)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 1.0)
        else:
            return
        plan = plancodec.from_json(last.plan) if last is not None else None
        self.engine.adopt(plan)
        self.history.previous = plan
        self._adopted = token
        log.warning("steer: %s leads with token %d from plan v%s (applied by %s)",
                    self.identity, token, plan.version if plan else "-",
                    last.author if last else "nobody")

    async def start(self) -> None:
        """Record or adopt the policy version, then start the loops."""
        await self._sync_config(initial=True)
        self._tasks = [
            asyncio.create_task(self.elector.run(), name="steer-elector"),
            asyncio.create_task(self.engine.run(self.bus), name="steer-engine"),
            asyncio.create_task(self._follow_config(), name="steer-config"),
        ]

    async def _sync_config(self, *, initial: bool = False) -> None:
        wh = self.warehouse
        if initial:
            known = {c.digest for c in await wh.configs(limit=wh.keep)}
            if digest(self._file_text) not in known:
                version, _ = await wh.record_config(
                    self._file_text, author=f"{self.identity} (steer)",
                    reason=f"deployed: {self.source} is new to the warehouse")
                log.warning("steer: %s recorded as config v%d", self.source, version.version)
        current = await wh.current_config_version()
        if current is None or current == self.config_version:
            return
        stored = await wh.config(current)
        if stored is None:
            log.error("steer: config v%d is current but no longer stored; keeping v%d",
                      current, self.config_version)
            return
        if stored.digest == digest(self._file_text):
            config = self._file_config
        else:
            try:
                config = parse_config(stored.text, f"warehouse config v{current}")
            except ConfigInvalid as exc:
                log.error("steer: config v%d is invalid, keeping v%d:\n%s", current,
                          self.config_version, exc)
                return
        if self.config_version:
            log.warning("steer: config v%d -> v%d (%s)", self.config_version, current,
                        stored.reason or "no reason given")
        self.config_version = current
        self.engine.reload(config)

    async def _follow_config(self) -> None:
        while not self._closing:
            await asyncio.sleep(self.engine._tick_s)
            try:
                await self._sync_config()
            except (RedisError, OSError, TimeoutError) as exc:
                reraise_if_cancelled()
                log.debug("steer: config check failed: %s", exc)

    async def wait(self) -> None:
        done, _ = await asyncio.wait(self._tasks, return_when=asyncio.FIRST_EXCEPTION)
        for task in done:
            task.result()

    async def stop_tasks(self) -> None:
        """Cancel every loop and wait for them to end."""
        self._closing = True
        await stop_tasks([*self._tasks, *([self._takeover] if self._takeover else [])])
        self._tasks = []

    async def aclose(self) -> None:
        await self.stop_tasks()
        await self.engine.flush()  # a state file write under way ends before we do
        await self.elector.resign()
        await self.bus.aclose()
        for backend in self.fenced:
            await backend.aclose()
        await close_client(self.client)


async def stop_tasks(tasks: Sequence[asyncio.Task[Any]]) -> None:
    """Cancel ``tasks`` and wait until each has ended, cancelling again any that is still
    running after 0.1 s (a Redis client may swallow a cancellation that hits mid-read)."""
    pending = [t for t in tasks if not t.done()]
    while pending:
        for task in pending:
            task.cancel()
        await asyncio.wait(pending, timeout=0.1)
        pending = [t for t in pending if not t.done()]
    for task in tasks:
        if not task.cancelled() and task.exception() is not None:
            log.debug("task %s ended with %r", task.get_name(), task.exception())


def _on_plan(ev: PlanEvent) -> None:
    if ev.error:
        log.error("plan v%d refused: %s", ev.plan.version, ev.error)
    else:
        log.info("plan v%d applied:\n%s", ev.plan.version, explain_diff(ev.diff))


def _on_transition(tr: Transition) -> None:
    log.info("health %s: %s -> %s (%s)", tr.path, tr.old, tr.new, tr.reason)


def run(args: argparse.Namespace) -> int:
    path = config_arg(args)
    if path is None:
        print("edgesteer steer: give the config file (CONFIG or --config FILE)",
              file=sys.stderr)
        return 2
    try:
        text = Path(path).read_text(encoding="utf-8")
        config = parse_config(text, path)
    except OSError as exc:
        print(f"edgesteer steer: cannot read {path}: {exc.strerror or exc}", file=sys.stderr)
        return 2
    except ConfigInvalid as exc:
        print(f"edgesteer steer: {path} is invalid, nothing done:\n{exc}", file=sys.stderr)
        return 2
    if args.verbose == 0:
        logging.getLogger().setLevel(logging.INFO)
    try:
        metrics_at = parse_listen([args.metrics])[0] if args.metrics else None
    except ValueError as exc:
        print(f"edgesteer steer: {str(exc).replace('--listen', '--metrics')}", file=sys.stderr)
        return 2
    identity = args.identity or socket.gethostname()
    from dns_backends import build_backends

    async def main() -> None:
        # SyncBackend's name is a read-only property: a Backend in all but the Protocol's eyes
        backends = cast("list[Backend]", build_backends(config))
        runtime = SteerRuntime(config, text, identity=identity, backends=backends,
                               source=path, on_plan=_on_plan, on_transition=_on_transition,
                               tick_s=args.tick)
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        runner = None
        try:
            if metrics_at is not None:
                runner = await start_metrics_server(
                    *metrics_at, registry=process_registry(EngineCollector(runtime.engine)))
                log.info("metrics on http://%s:%d/metrics", metrics_at[0], bound_port(runner))
            await runtime.start()
            waiter = asyncio.ensure_future(stop.wait())
            failure = asyncio.ensure_future(runtime.wait())
            await asyncio.wait({waiter, failure}, return_when=asyncio.FIRST_COMPLETED)
            waiter.cancel()
            failure.cancel()
            if failure.done() and not failure.cancelled():
                failure.result()
        finally:
            await runtime.aclose()
            if runner is not None:
                await runner.cleanup()

    try:
        asyncio.run(main())
    except (BusConfigError, ValueError) as exc:
        print(f"edgesteer steer: {exc}", file=sys.stderr)
        return 2
    except (RedisError, OSError) as exc:
        print(f"edgesteer steer: {exc}", file=sys.stderr)
        return 1
    return 0
