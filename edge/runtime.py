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

from dns_backends.base import Backend, BackendError
from dns_backends.builtin.server import BuiltinDnsServer
from edge.config.schema import Config
from edge.health.state import HealthSnapshot
from edge.health.tracker import HealthTracker, Transition
from edge.plan import Plan, PlanDiff
from edge.steering.explain import explain_diff
from edge.steering.guard import UnsafePlan, guard
from edge.steering.planner import plan as make_plan
from geo.segment import SegmentMatcher
from probes.agent import Agent
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
                 tick_s: float = 1.0) -> None:
        self.config = config
        self.backends = list(backends)
        self.tracker = HealthTracker(config.health,
                                     {lk.name: lk.thresholds for lk in config.links},
                                     on_transition=on_transition)
        self.current: Plan | None = None
        self._on_plan = on_plan
        self._tick_s = tick_s
        self._changed = asyncio.Event()
        self._version = 0
        self._dirty_backends: set[str] = set()

    async def start(self) -> None:
        """Apply the first plan, from the seeded health (nothing is down at a cold start)."""
        await self.replan()

    async def run(self, bus: MemoryBus) -> None:
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
                await self.replan()
        finally:
            tracker_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await tracker_task

    async def replan(self) -> PlanEvent | None:
        snapshot = self.tracker.snapshot
        now = time.time()
        proposed = make_plan(self.config, snapshot, version=self._version + 1, now=now)
        previous = self.current
        diff = previous.diff(proposed) if previous is not None else Plan().diff(proposed)
        if previous is not None and not diff and not self._dirty_backends:
            return None
        try:
            accepted = guard(previous, proposed, self.config.guard)
        except UnsafePlan as exc:
            log.warning("plan v%d refused by guard, keeping v%d: %s", proposed.version,
                        previous.version if previous else 0, exc)
            event = PlanEvent(now, proposed, diff, snapshot, error=str(exc))
            self._emit(event)
            return event
        await self._apply(accepted)
        if diff or previous is None:
            self._version = accepted.version
            self.current = accepted
            log.info("plan v%d applied:\n%s", accepted.version, explain_diff(diff))
            event = PlanEvent(now, accepted, diff, snapshot)
            self._emit(event)
            return event
        return None

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
        self.dns = BuiltinDnsServer(config.zones, config.services,
                                    SegmentMatcher(config.segments),
                                    list(listen) if listen is not None else list(config.dns.listen))
        self.engine = Engine(config, [self.dns], on_plan=on_plan, on_transition=on_transition)
        self.agent = Agent(config.node.name, config.targets, link_bindings(config), self.bus,
                           window=config.health.window)
        self._tasks: list[asyncio.Task[None]] = []

    async def start(self) -> None:
        await self.dns.start()
        await self.engine.start()
        self._tasks = [
            asyncio.create_task(self.engine.run(self.bus), name="engine"),
            asyncio.create_task(self.agent.run(), name="agent"),
        ]

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
        await self.bus.aclose()
        await self.dns.aclose()


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
