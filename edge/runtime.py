"""Composition root: wires bus, agent, health tracker, planner loop and backends for one node.

Nothing imports this module except the CLI and the lab. Everything here is plumbing; the
decisions live in ``edge.health`` and ``edge.steering``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass

from dns_backends import build_backends
from dns_backends.base import Backend, BackendError
from dns_backends.builtin import cookies as dns_cookies
from dns_backends.builtin.server import BuiltinDnsServer
from dns_backends.reconcile import Reconciler
from edge.anycast.applier import AnycastApplier
from edge.config.schema import Config
from edge.health.cadence import probe_interval
from edge.health.state import HealthSnapshot
from edge.health.tracker import HealthTracker, Transition
from edge.plan import Plan, PlanDiff
from edge.steering.anycast import with_anycast
from edge.steering.cycle import Steering
from edge.steering.explain import explain_diff
from edge.steering.overrides import load_overrides
from edge.steering.statefile import (
    StateFileError,
    load_engine_state,
    save_engine_state,
    state_dir,
)
from geo.geoip import GeoIP
from geo.segment import SegmentMatcher
from probes.agent import Agent
from probes.bus import MeasurementBus
from probes.bus.memory import MemoryBus
from probes.spec import LinkBinding

log = logging.getLogger("edgesteer.engine")


@dataclass(frozen=True, slots=True)
class PlanEvent:
    """A new plan was applied (``diff`` against the previous one), or refused (``error``)."""

    at: float
    plan: Plan
    diff: PlanDiff
    snapshot: HealthSnapshot
    error: str | None = None


PlanListener = Callable[[PlanEvent], None]
TransitionListener = Callable[[Transition], None]


def _anycast(plan: Plan, config: Config, snapshot: HealthSnapshot) -> Plan:
    return with_anycast(plan, config, snapshot) if config.anycast.prefixes else plan


def link_bindings(config: Config) -> list[LinkBinding]:
    return [LinkBinding(link=lk.name, source=lk.source, fwmark=lk.fwmark, device=lk.device)
            for lk in config.links]


class Engine:
    """Health tracker + planner loop + guard + appliers. Keeps the last good plan.

    A plan is computed whenever a link changes state (and at least every ``tick_s`` so that
    staleness is noticed). It is applied only when it differs in substance from the current
    one. A backend that fails keeps its previous state; the engine retries on the next tick.
    """

    def __init__(self, config: Config, backends: Sequence[Backend], *,
                 on_plan: PlanListener | None = None,
                 on_transition: TransitionListener | None = None,
                 tick_s: float = 1.0, gate: Callable[[], bool] | None = None) -> None:
        self.config = config
        self._gate = gate  # plan only while gate() (a standby keeps its health warm)
        self.backends = list(backends)
        self.tracker = HealthTracker(config.health,
                                     {lk.name: lk.thresholds for lk in config.links},
                                     on_transition=on_transition,
                                     regions=config.target_regions())
        self.steering = Steering(config, transform=_anycast)
        self.state_dir = state_dir(config)
        self._on_plan = on_plan
        self._tick_s = tick_s
        self._changed = asyncio.Event()
        self._dirty_backends: set[str] = set()
        self._saved_version = -1
        self._saving: asyncio.Future[None] | None = None  # the state file write under way
        self.state_saves_failed = 0  # for /metrics: the state file could not be written
        self.state_saved_at = 0.0  # when it last was (0: never)
        self.plans_applied = 0  # for /metrics (edge.api.engine_metrics)
        self.plans_refused = 0

    @property
    def snapshot(self) -> HealthSnapshot:
        """The health snapshot the next plan is made from."""
        return self.tracker.snapshot

    @property
    def backend_names(self) -> tuple[str, ...]:
        return tuple(b.name for b in self.backends)

    @property
    def backends_behind(self) -> frozenset[str]:
        """Backends whose last apply failed (they keep their last state; retried each cycle)."""
        return frozenset(self._dirty_backends)

    @property
    def current(self) -> Plan | None:
        """The plan in force."""
        return self.steering.current

    @current.setter
    def current(self, plan: Plan | None) -> None:
        self.steering.current = plan

    async def start(self) -> None:
        """Apply the first plan: from the persisted link states and plan when
        ``guard.state_dir`` holds them (a restart serves what it served before), else from
        the configured defaults (every link unknown, which serves)."""
        if self.state_dir is not None:
            persisted = load_engine_state(self.state_dir)
            if persisted is not None:
                self.tracker.seed(persisted.links, toward=persisted.toward,
                                  falling_from=persisted.falling_from)
                self.steering.adopt(persisted.plan)
                self._dirty_backends = {b.name for b in self.backends}
                log.info("starting from the state saved at %.3f: %s", persisted.saved_at,
                         ", ".join(f"{k} {v}" for k, v in persisted.links.items()))
            self._refresh_overrides()
        await self.replan()

    async def run(self, bus: MeasurementBus) -> None:
        tracker_task = asyncio.create_task(self.tracker.run(bus, self._changed),
                                           name="health-tracker")
        try:
            while True:
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(self._tick_s):
                        await self._changed.wait()
                self._changed.clear()
                if tracker_task.done():
                    tracker_task.result()  # re-raise what killed the tracker
                if self._gate is None or self._gate():
                    await self.replan()
        finally:
            tracker_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await tracker_task

    def adopt(self, plan: Plan | None) -> None:
        """Continue from ``plan`` as the plan in force (a new leader takes over its
        predecessor's): the next replan is guarded against it and goes to every backend."""
        self.steering.adopt(plan)
        self._dirty_backends = {b.name for b in self.backends}
        self._changed.set()

    def reload(self, config: Config) -> None:
        """Plan from ``config`` from the next cycle on (health state is kept)."""
        self.config = config
        self.steering.config = config
        self.tracker.reconfigure(config.health, {lk.name: lk.thresholds for lk in config.links},
                                 regions=config.target_regions())
        self.state_dir = state_dir(config)
        self._changed.set()

    async def replan(self) -> PlanEvent | None:
        snapshot = self.tracker.snapshot
        now = time.time()
        self._refresh_overrides()
        out = self.steering.propose(snapshot, now)
        previous, proposed, diff = self.current, out.plan, out.diff
        if previous is not None and not diff and not self._dirty_backends:
            await self._save(snapshot, now)
            return None
        if out.error is not None:
            log.warning("plan v%d refused by guard, keeping v%d: %s", proposed.version,
                        previous.version if previous else 0, out.error)
            self.plans_refused += 1
            event = PlanEvent(now, proposed, diff, snapshot, error=out.error)
            self._emit(event)
            return event
        accepted = proposed
        await self._apply(accepted)
        self.plans_applied += 1  # to every backend (those that failed are retried)
        if diff or previous is None:
            self.steering.commit(accepted)
            await self._save(snapshot, now, force=True)
            log.info("plan v%d applied:\n%s", accepted.version, explain_diff(diff))
            event = PlanEvent(now, accepted, diff, snapshot)
            self._emit(event)
            return event
        return None

    def _refresh_overrides(self) -> None:
        if self.state_dir is None:
            return
        try:
            ov = load_overrides(self.state_dir)
        except StateFileError as exc:
            log.error("operator overrides unreadable, keeping the previous ones: %s", exc)
            return
        if ov != self.steering.overrides:
            log.info("operator overrides now: %s", "; ".join(ov.describe()) or "none")
            self.steering.overrides = ov

    async def _save(self, snapshot: HealthSnapshot, now: float, *, force: bool = False) -> None:
        """Persist link states and the plan in force (atomically) when they changed.

        In a worker thread: at 500,000 answer sets a save takes a second or two, during
        which the loop goes on answering queries and reading measurements (the snapshot and
        the plan are immutable). Saves run one at a time, in order; a save under way when
        the engine is stopped is finished by :meth:`flush`.
        """
        if self.state_dir is None or (not force and snapshot.version == self._saved_version):
            return
        await self.flush()
        job = self._saving = asyncio.ensure_future(asyncio.to_thread(
            save_engine_state, self.state_dir, snapshot, self.current, now))
        try:
            await asyncio.shield(job)
            self._saved_version = snapshot.version
            self.state_saved_at = now
        except OSError as exc:
            self.state_saves_failed += 1
            log.error("could not persist the engine state in %s (the plan in force is "
                      "served all the same; a restart would start from an older state): %s",
                      self.state_dir, exc)

    async def flush(self) -> None:
        """Wait for a save under way (the file is then the last one the engine wrote)."""
        job, self._saving = self._saving, None
        if job is not None:
            with contextlib.suppress(OSError):
                await job

    async def _apply(self, plan: Plan) -> None:
        for backend in self.backends:
            try:
                await backend.apply(plan)
            except BackendError as exc:
                self._dirty_backends.add(backend.name)
                log.error("apply of plan v%d failed, backend keeps its last plan: %s",
                          plan.version, exc)
            else:
                self._dirty_backends.discard(backend.name)

    def _emit(self, event: PlanEvent) -> None:
        if self._on_plan is not None:
            self._on_plan(event)


class NodeRuntime:
    """Everything one node runs in one process: agent -> bus -> engine -> built-in DNS."""

    def __init__(self, config: Config, *, on_plan: PlanListener | None = None,
                 on_transition: TransitionListener | None = None,
                 listen: Sequence[tuple[str, int]] | None = None) -> None:
        self.config = config
        self.bus = MemoryBus()
        # GeoIP for segments by ASN, country, region, line; closed in aclose
        self.geo = GeoIP(config.geo.databases) if config.geo.databases else None
        self.dns = BuiltinDnsServer(config.zones, config.services,
                                    SegmentMatcher(config.segments),
                                    list(listen) if listen is not None else list(config.dns.listen),
                                    udp_batch=True,  # recvmmsg/sendmmsg where the OS has them
                                    geo=self.geo,
                                    cookies=dns_cookies.keyed(config.dns.cookie_secret))
        # Anycast (issue 8): announcements go to the BGP speakers after the DNS server.
        self.anycast = AnycastApplier(config) if config.anycast.speakers else None
        # External DNS servers (issue 6, `backends:`), each in its own reconcile loop.
        self.external = [Reconciler(b, interval_s=settings.reconcile_s) for b, settings
                         in zip(build_backends(config), config.backends, strict=True)]
        self._on_transition = on_transition
        self.engine = Engine(config, [self.dns, *([self.anycast] if self.anycast else []),
                                      *self.external],
                             on_plan=on_plan, on_transition=self._transition)
        self.agent = Agent(config.node.name, config.targets, link_bindings(config), self.bus,
                           window=config.health.window,
                           suspect_factor=config.health.fast_probe_factor)
        self._tasks: list[asyncio.Task[None]] = []

    def _transition(self, tr: Transition) -> None:
        """Probe a path faster while it changes state (edge.health.cadence)."""
        spec = next((t for t in self.config.targets if t.name == tr.path.target), None)
        if spec is not None and tr.path.node == self.agent.node:
            self.agent.set_interval_override(tr.path, probe_interval(
                tr.new, spec.interval_s, self.config.health.fast_probe_factor))
        if self._on_transition is not None:
            self._on_transition(tr)

    async def start(self) -> None:
        await self.dns.start()
        if self.anycast is not None:
            await self.anycast.start()
        await self.engine.start()
        self._tasks = [
            asyncio.create_task(self.engine.run(self.bus), name="engine"),
            asyncio.create_task(self.agent.run(), name="agent"),
        ]
        if self.anycast is not None:  # reports a dead speaker, re-applies when it is back
            self._tasks.append(asyncio.create_task(self.anycast.watch(), name="anycast-watch"))

    def reload(self, config: Config) -> None:
        """A new config (SIGHUP): probes follow its targets and links, the engine plans from
        it within one cycle. Zones, services, segments, GeoIP databases and listen addresses
        of the built-in server are not swapped (the plan carries the answers; a new zone or
        database needs a restart)."""
        self.config = config
        self.agent.update(config.targets, link_bindings(config))
        self.engine.reload(config)

    async def wait(self) -> None:
        """Until a component dies (its exception is raised) or the runtime is cancelled."""
        done, _ = await asyncio.wait(self._tasks, return_when=asyncio.FIRST_EXCEPTION)
        for task in done:
            task.result()

    async def aclose(self) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._tasks = []
        await self.engine.flush()
        await self.bus.aclose()
        for backend in self.external:
            await backend.aclose()
        if self.anycast is not None:  # withdraw (confirmed, + drain_wait) before DNS stops
            await self.anycast.aclose()
        await self.dns.aclose()
        if self.geo is not None:
            self.geo.close()

    async def drain(self) -> None:
        """Maintenance: withdraw every anycast route (confirmed, + ``anycast.drain_wait``);
        when this returns the service may be stopped (see edge/anycast/applier.py)."""
        if self.anycast is not None:
            await self.anycast.drain()


async def run_forever(runtime: NodeRuntime, until: Awaitable[None]) -> None:
    """Start ``runtime``, run until ``until`` completes or a component fails, then close."""
    await runtime.start()
    waiter = asyncio.ensure_future(until)
    failure = asyncio.ensure_future(runtime.wait())
    try:
        await asyncio.wait({waiter, failure}, return_when=asyncio.FIRST_COMPLETED)
        if failure.done():
            failure.result()
    finally:
        waiter.cancel()
        failure.cancel()
        await runtime.aclose()
