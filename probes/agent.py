"""Probe agent: for every path, probe on schedule, fold into a window, publish Measurements.

A path is (node, link, target) for each link the target allows (``links`` empty = every
link). Per path, a ticker starts one probe every ``interval_s`` (or the engine's override),
the first one at a deterministic splay so paths do not probe in one burst. Each probe runs
under a global in-flight semaphore and the target's deadline; its Sample goes into the
path's Window, and the window's Measurement is published: one Measurement per probe, i.e.
one per path per interval. Probes of one path may overlap when the timeout is longer than
the interval (bounded by ``schedule.max_overlap``); samples enter the window as they finish.

Time: ``Sample.at`` / ``Measurement.at`` are wall clock (time.time()); rtts and the
schedule use monotonic clocks.

HTTP probes share one aiohttp ClientSession per link binding, owned here: made on first
use, closed when no path uses the binding any more and when ``run()`` ends. ICMP probes
share one :class:`IcmpEngine` (one socket per link, all targets' echoes in flight on it),
closed when ``run()`` ends.

Cadence while in doubt (``suspect_factor``, the engine passes ``health.fast_probe_factor``):
a path whose window is *mixed*, holding both answered and failed probes, is probed every
``fast_interval(interval, suspect_factor)`` (200 ms / 4 = 50 ms by default) until the window
is unanimous again. A unanimous window is not in doubt: a clean path and a dead one both
probe at their own interval. A mixed one is the start of a blip or of sustained loss, and
only more samples tell which; probing faster brings them sooner. So that the faster
samples add evidence rather than push the first lost probe out sooner, the window is then
a span of ``window`` target intervals, never fewer than ``window`` samples (see
probes/window.py: a lost probe enters the window only at its timeout, behind the probes
sent after it). At the target's own cadence that is the same window as before, so the
health rules (two lost probes, a 10 % band, ``fall`` measurements) keep their meaning; over
more samples the loss ratio is a better estimate, so a lone loss weighs less, not more.
The engine's own override (edge.health.cadence) does the same for FALLING and RISING
paths; the faster of the two applies.

Doubt starts before a loss is known: a probe still unanswered ``overdue_after`` (3 x the
window's p95 rtt, at least 50 ms; probes.cadence) after it was sent is *overdue*, and while
a path has an overdue probe in flight it is probed at the fast interval too. A lost probe
is otherwise known only at its timeout (0.4 s at 200 ms probing), which is most of the
time a random 20 % loss takes to show twice (bench/loss_detection.py). Nothing is judged
on it: an overdue probe that is answered counts as answered. A path whose window has no
answered probe (a dead target) has no overdue time and keeps its own interval.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

import aiohttp

from probes.bus import MeasurementBus
from probes.cadence import fast_interval, overdue_after, path_window, window_span
from probes.kinds import PROBERS, ProbeContext, ProbeFn, make_http_session
from probes.kinds.icmp_engine import IcmpEngine
from probes.measurement import PathKey, ProbeKind, Sample
from probes.schedule import max_overlap, next_tick, run_probe, splay
from probes.spec import LinkBinding, TargetSpec
from probes.window import Window

log = logging.getLogger(__name__)

SampleHook = Callable[[Sample], None]

@dataclass(eq=False)
class _Path:
    key: PathKey
    spec: TargetSpec
    binding: LinkBinding
    window: Window
    waker: asyncio.Future[bool] | None = None  # the ticker's sleep, while it sleeps
    ticker: asyncio.Task[None] | None = None
    probes: set[asyncio.Task[None]] = field(default_factory=set)
    last_start: float | None = None
    mixed: bool = False  # the window holds answered and failed probes (module docstring)
    overdue: int = 0  # probes in flight past their overdue time (module docstring)
    overdue_after: float | None = None  # from the last measurement: cadence.overdue_after

    def stop(self) -> list[asyncio.Task[None]]:
        """Cancel the ticker and in-flight probes; return them to be awaited."""
        tasks = [*self.probes, *([self.ticker] if self.ticker is not None else [])]
        for task in tasks:
            task.cancel()
        self.ticker = None
        return tasks


def plan_paths(
    node: str, targets: Sequence[TargetSpec], bindings: Sequence[LinkBinding]
) -> dict[PathKey, tuple[TargetSpec, LinkBinding]]:
    """Every (target, link) pair to probe; a target's unknown link names are ignored."""
    by_link = {b.link: b for b in bindings}
    paths: dict[PathKey, tuple[TargetSpec, LinkBinding]] = {}
    for spec in targets:
        for link in spec.links or tuple(by_link):
            binding = by_link.get(link)
            if binding is not None:
                paths[PathKey(node, link, spec.name)] = (spec, binding)
    return paths


def _probe_identity(spec: TargetSpec) -> TargetSpec:
    """What a window's samples are about: the spec without its timing, link list and
    region."""
    return dataclasses.replace(spec, interval_s=0.0, timeout_s=0.0, links=(), region=None)


class Agent:
    """Probes every path of one node and publishes one Measurement per path per interval."""

    def __init__(
        self,
        node: str,
        targets: Sequence[TargetSpec],
        bindings: Sequence[LinkBinding],
        bus: MeasurementBus,
        *,
        window: int = 10,
        max_in_flight: int = 256,
        max_age_s: float | None = None,
        on_sample: SampleHook | None = None,
        probers: Mapping[ProbeKind, ProbeFn] = PROBERS,
        icmp: IcmpEngine | None = None,
        suspect_factor: float = 1.0,
    ) -> None:
        if max_in_flight < 1:
            raise ValueError(f"max_in_flight must be >= 1, got {max_in_flight}")
        if not suspect_factor >= 1.0:
            raise ValueError(f"suspect_factor must be >= 1, got {suspect_factor}")
        self._suspect_factor = suspect_factor
        self._node = node
        self._bus = bus
        self._window_size = window
        self._max_age_s = max_age_s
        self._on_sample = on_sample
        self._probers = probers
        self._in_flight = asyncio.Semaphore(max_in_flight)
        self._paths: dict[PathKey, _Path] = {}
        self._overrides: dict[PathKey, float] = {}
        self._sessions: dict[LinkBinding, aiohttp.ClientSession] = {}
        self._icmp = icmp if icmp is not None else IcmpEngine()
        self._retiring: set[asyncio.Task[None]] = set()
        self._running = False
        self.update(targets, bindings)

    @property
    def node(self) -> str:
        return self._node

    @property
    def paths(self) -> tuple[PathKey, ...]:
        return tuple(sorted(self._paths))

    def update(self, targets: Sequence[TargetSpec], bindings: Sequence[LinkBinding]) -> None:
        """Swap targets and links. A path whose key, binding and probe are unchanged keeps
        its window (its timing may change); other paths start afresh, gone ones stop."""
        desired = plan_paths(self._node, targets, bindings)
        for key in [k for k in self._paths if k not in desired]:
            self._retire(self._paths.pop(key))
            self._overrides.pop(key, None)
        for key, (spec, binding) in desired.items():
            old = self._paths.get(key)
            if old is not None and old.spec == spec and old.binding == binding:
                continue
            same = (
                old is not None
                and old.binding == binding
                and _probe_identity(old.spec) == _probe_identity(spec)
            )
            window = old.window if old is not None and same else self._new_window(spec)
            window.span_s = window_span(spec, self._window_size, self._suspect_factor)
            if old is not None:
                self._retire(old)
            path = _Path(key, spec, binding, window)
            self._paths[key] = path
            if self._running:
                self._start(path)
        if self._running:
            self._close_unused_sessions()
            self._icmp.retain([p.binding for p in self._paths.values()])

    def set_interval_override(self, path: PathKey, interval_s: float | None) -> None:
        """Probe ``path`` every ``interval_s`` instead of its target's interval (None: back
        to normal). Takes effect at once: a faster override pulls the next probe in."""
        if interval_s is None:
            self._overrides.pop(path, None)
        elif interval_s > 0:
            self._overrides[path] = interval_s
        else:
            raise ValueError(f"interval_s must be > 0 or None, got {interval_s}")
        state = self._paths.get(path)
        if state is not None:
            _wake_early(state)

    async def run(self) -> None:
        """Probe until cancelled; on the way out stop every probe and close the sessions."""
        if self._running:
            raise RuntimeError("Agent.run() is already running")
        self._running = True
        try:
            for path in self._paths.values():
                self._start(path)
            await asyncio.Event().wait()
        finally:
            self._running = False
            await self._shutdown()

    # internals -------------------------------------------------------------------------

    def _new_window(self, spec: TargetSpec) -> Window:
        return path_window(spec, self._window_size, self._suspect_factor, self._max_age_s)

    def _interval(self, path: _Path) -> float:
        interval = self._overrides.get(path.key, path.spec.interval_s)
        if path.mixed or path.overdue:
            interval = min(interval, fast_interval(path.spec.interval_s,
                                                   self._suspect_factor))
        return interval

    def _start(self, path: _Path) -> None:
        path.ticker = asyncio.get_running_loop().create_task(
            self._tick(path), name=f"edgesteer-probe-ticker {path.key}"
        )

    def _retire(self, path: _Path) -> None:
        for task in path.stop():
            self._retiring.add(task)
            task.add_done_callback(self._retiring.discard)

    async def _tick(self, path: _Path) -> None:
        loop = asyncio.get_running_loop()
        due = loop.time() + splay(path.key, self._interval(path))
        while True:
            if due > loop.time() and await _sleep(path, due):
                base = path.last_start if path.last_start is not None else loop.time()
                due = min(due, base + self._interval(path))
                continue
            path.last_start = loop.time()
            self._launch(path)
            due = next_tick(due, self._interval(path), loop.time())

    def _launch(self, path: _Path) -> None:
        cap = max_overlap(self._interval(path), path.spec.timeout_s)
        if len(path.probes) >= cap:
            log.debug("%s: %d probes still in flight, skipping a tick", path.key, cap)
            return
        task = asyncio.get_running_loop().create_task(
            self._probe(path, path.spec, path.binding), name=f"edgesteer-probe {path.key}"
        )
        path.probes.add(task)
        task.add_done_callback(path.probes.discard)

    async def _probe(self, path: _Path, spec: TargetSpec, binding: LinkBinding) -> None:
        async with self._in_flight:
            http = self._session(binding) if spec.kind is ProbeKind.HTTP else None
            ctx = ProbeContext(binding, spec.timeout_s, http, self._icmp)
            at = time.time()
            watch = self._watch_overdue(path)
            try:
                outcome = await run_probe(self._probers[spec.kind], spec, ctx)
            finally:
                if watch is not None:
                    watch.done()
        sample = outcome.to_sample(path.key, spec.kind, at)
        path.window.add(sample)
        if self._on_sample is not None:
            try:
                self._on_sample(sample)
            except Exception:
                log.exception("on_sample hook failed for %s", path.key)
        measurement = path.window.measurement(path.key, spec.kind, time.time())
        path.overdue_after = overdue_after(measurement.rtt_p95, spec.timeout_s)
        mixed = 0 < measurement.received < measurement.sent
        if mixed != path.mixed:
            path.mixed = mixed
            if mixed and self._suspect_factor > 1.0:
                _wake_early(path)  # pull the next probe in; leaving doubt needs no wake
        try:
            await self._bus.publish(measurement)
        except Exception:
            log.exception("publishing the measurement of %s failed", path.key)

    def _watch_overdue(self, path: _Path) -> _OverdueWatch | None:
        """Mark ``path``'s probe overdue (and wake its ticker) at its overdue time."""
        after = path.overdue_after
        if after is None or self._suspect_factor <= 1.0:
            return None
        watch = _OverdueWatch(path)
        watch.handle = asyncio.get_running_loop().call_later(after, watch.fire)
        return watch

    def _session(self, binding: LinkBinding) -> aiohttp.ClientSession:
        session = self._sessions.get(binding)
        if session is None or session.closed:
            session = self._sessions[binding] = make_http_session(binding)
        return session

    def _close_unused_sessions(self) -> None:
        used = {p.binding for p in self._paths.values() if p.spec.kind is ProbeKind.HTTP}
        for binding in [b for b in self._sessions if b not in used]:
            task = asyncio.get_running_loop().create_task(self._sessions.pop(binding).close())
            self._retiring.add(task)
            task.add_done_callback(self._retiring.discard)

    async def _shutdown(self) -> None:
        tasks = [t for path in self._paths.values() for t in path.stop()]
        tasks.extend(self._retiring)
        await asyncio.gather(*tasks, return_exceptions=True)
        self._icmp.close()
        sessions = list(self._sessions.values())
        self._sessions.clear()
        await asyncio.gather(*(s.close() for s in sessions), return_exceptions=True)


class _OverdueWatch:
    """One probe's overdue timer: counts it in ``path.overdue`` from when it fires to
    when the probe ends."""

    __slots__ = ("fired", "handle", "path")

    def __init__(self, path: _Path) -> None:
        self.path = path
        self.fired = False
        self.handle: asyncio.TimerHandle | None = None

    def fire(self) -> None:
        self.fired = True
        self.path.overdue += 1
        if self.path.overdue == 1:
            _wake_early(self.path)  # pull the next probe in

    def done(self) -> None:
        if self.fired:
            self.path.overdue -= 1
        elif self.handle is not None:
            self.handle.cancel()


async def _sleep(path: _Path, due: float) -> bool:
    """Sleep until ``due`` (loop time); True when woken early by an interval override.

    A bare future and one timer: an agent sleeps once per probe, so this is on the hot path
    (an Event plus asyncio.timeout costs several times more).
    """
    loop = asyncio.get_running_loop()
    waker: asyncio.Future[bool] = loop.create_future()
    handle = loop.call_at(due, _wake, waker)
    path.waker = waker
    try:
        return await waker
    finally:
        handle.cancel()
        path.waker = None


def _wake_early(path: _Path) -> None:
    """Wake ``path``'s ticker so that it reschedules at its (new) interval."""
    if path.waker is not None and not path.waker.done():
        path.waker.set_result(True)


def _wake(waker: asyncio.Future[bool]) -> None:
    if not waker.done():
        waker.set_result(False)
