"""The anycast applier: the engine's backend for the plan's anycast part.

It hands each speaker the announcements of its sessions, with two rules of its own:

* Rate limit per session: a session's routes change at most once per the speaker's
  ``min_interval_s``. A change that comes sooner is held back (the session keeps what it
  announces) and applied when the interval is over, with the latest plan's state then.
  Damping of the *decisions* is the health layer's job (rise/fall, hold-down, flap damping);
  this only bounds how often a peer sees updates.
* Maintenance order: ``drain()`` withdraws every route (no rate limit), waits for every
  speaker to confirm, then waits ``anycast.drain_wait_s`` for the withdrawal to propagate,
  and only then returns, so the caller may stop the service. While drained, plans are
  applied as all-withdrawn. ``aclose()`` (clean shutdown) drains first, then stops the
  speakers. So the order is always: withdraw -> confirmed -> wait -> stop answering, and
  there is no window where a route is announced while its address no longer answers.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import time
from collections.abc import Awaitable, Callable, Mapping

from dns_backends.base import ApplyResult, BackendError
from edge.anycast.base import Routes, Speaker, SpeakerError, make_speaker, sessions_of
from edge.config.schema import Config
from edge.plan import Announcement, AnnouncementKey, Plan, Reason

log = logging.getLogger("edgesteer.anycast")

_DRAINED = Reason("bgp.node_drained", "the node is drained (maintenance or shutdown): "
                  "withdrawn")


def _content(routes: Routes, session: str) -> list[tuple[AnnouncementKey, tuple[object, ...]]]:
    return sorted((k, a.content()) for k, a in routes.items()
                  if k[1] == session and a.action == "announce")


class AnycastApplier:
    """Backend for ``plan.announcements``: speakers by name (default: made from config)."""

    name = "anycast"

    def __init__(self, config: Config, speakers: Mapping[str, Speaker] | None = None, *,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.config = config
        self.speakers: dict[str, Speaker] = dict(speakers) if speakers is not None else {
            s.name: make_speaker(s, sessions_of(config, s.name))
            for s in config.anycast.speakers}
        self._settings = {s.name: s for s in config.anycast.speakers}
        self._speaker_of = {lk.name: lk.bgp.speaker for lk in config.links
                            if lk.bgp is not None}
        self._clock = clock
        self._desired: dict[AnnouncementKey, Announcement] = {}
        self._applied: dict[AnnouncementKey, Announcement] = {}
        self._last_change: dict[str, float] = {}
        self._drained = False
        self._timer: asyncio.TimerHandle | None = None
        self._flush: asyncio.Task[None] | None = None
        self._lock = asyncio.Lock()
        self.deferred: set[str] = set()  # sessions held back by the rate limit right now
        self.problems: dict[str, str] = {}  # speaker -> what is wrong, from the last check

    @property
    def drained(self) -> bool:
        return self._drained

    @property
    def speaker_names(self) -> tuple[str, ...]:
        return tuple(self.speakers)

    @property
    def applied(self) -> Mapping[AnnouncementKey, Announcement]:
        """What the speakers were last told (announce and withdraw entries)."""
        return dict(self._applied)

    async def start(self) -> None:
        for name, sp in self.speakers.items():
            try:
                await sp.start()
            except SpeakerError as exc:
                log.error("speaker %s did not start: %s", name, exc)
                raise BackendError(self.name, str(exc)) from None

    def _withdrawn(self, routes: Routes) -> dict[AnnouncementKey, Announcement]:
        return {k: dataclasses.replace(a, action="withdraw", reasons=(*a.reasons, _DRAINED))
                for k, a in routes.items()}

    def _min_interval(self, session: str) -> float:
        s = self._settings.get(self._speaker_of.get(session, ""))
        return s.min_interval_s if s is not None else 0.0

    def _effective(self, now: float, force: bool) -> tuple[dict[AnnouncementKey, Announcement],
                                                          dict[str, float]]:
        """What to apply now, and the sessions held back (session -> when it may change)."""
        want = self._withdrawn(self._desired) if self._drained else dict(self._desired)
        sessions = {k[1] for k in want} | {k[1] for k in self._applied}
        out: dict[AnnouncementKey, Announcement] = {}
        held: dict[str, float] = {}
        for session in sorted(sessions):
            new = {k: a for k, a in want.items() if k[1] == session}
            old = {k: a for k, a in self._applied.items() if k[1] == session}
            if _content(new, session) != _content(old, session) and not force:
                last = self._last_change.get(session)
                due = last + self._min_interval(session) if last is not None else now
                if now < due:
                    held[session] = due
                    out.update(old)
                    continue
            out.update(new)
        return out, held

    async def _push(self, force: bool = False) -> int:
        async with self._lock:
            now = self._clock()
            effective, held = self._effective(now, force)
            changed_sessions = {k[1] for k in set(effective) | set(self._applied)
                                if _content(effective, k[1]) != _content(self._applied, k[1])}
            total = 0
            errors = []
            for name, sp in self.speakers.items():
                routes = {k: a for k, a in effective.items()
                          if self._speaker_of.get(k[1]) == name}
                try:
                    total += await sp.apply(routes)
                except SpeakerError as exc:
                    errors.append(str(exc))
                    continue
                for k in [k for k in self._applied if self._speaker_of.get(k[1]) == name]:
                    del self._applied[k]
                self._applied.update(routes)
                for session in changed_sessions:
                    if self._speaker_of.get(session) == name:
                        self._last_change[session] = now
            self.deferred = set(held)
            if held:
                self._schedule(min(held.values()) - now)
            if errors:
                raise BackendError(self.name, "; ".join(errors))
            return total

    def _schedule(self, delay: float) -> None:
        if self._timer is not None:
            self._timer.cancel()
        loop = asyncio.get_running_loop()
        self._timer = loop.call_later(max(0.0, delay), self._on_timer)

    def _on_timer(self) -> None:
        self._timer = None
        if self._flush is None or self._flush.done():
            self._flush = asyncio.create_task(self._flush_held(), name="anycast-rate-limit")

    async def _flush_held(self) -> None:
        try:
            await self._push()
        except BackendError as exc:
            log.error("deferred anycast change failed, retrying in 1 s: %s", exc)
            self._schedule(1.0)

    async def apply(self, plan: Plan, *, dry_run: bool = False) -> ApplyResult:
        if dry_run:
            diff = Plan(announcements=self._applied).diff(
                Plan(announcements=plan.announcements))
            return ApplyResult(self.name, plan.version, len(diff.announcement_changes),
                               dry_run=True)
        self._desired = dict(plan.announcements)
        changed = await self._push()
        notes = tuple(f"{s}: held by the rate limit" for s in sorted(self.deferred))
        return ApplyResult(self.name, plan.version, changed, notes=notes)

    async def check(self) -> dict[str, str]:
        """Speaker name -> what is wrong, for every speaker not running. A speaker that was
        reported and is back gets the applied state again (a BIRD restarted by its
        supervisor, an ExaBGP restarted by ours: both already came back with their routes;
        this re-push covers changes they missed while down)."""
        problems: dict[str, str] = {}
        for name, sp in self.speakers.items():
            problem = await sp.check()
            if problem is not None:
                problems[name] = problem
                if name not in self.problems:
                    log.error("anycast speaker %s is down: %s", name, problem)
            elif name in self.problems:
                log.info("anycast speaker %s is back", name)
        back = set(self.problems) - set(problems)
        self.problems = problems
        if back:
            try:
                await self._push(force=True)
            except BackendError as exc:
                log.error("re-applying after %s came back failed: %s", ", ".join(back), exc)
        return problems

    async def watch(self, interval_s: float = 5.0) -> None:
        """Check the speakers every ``interval_s`` until cancelled (NodeRuntime runs it)."""
        while True:
            await self.check()
            await asyncio.sleep(interval_s)

    async def drain(self) -> None:
        """Withdraw everything now (no rate limit), confirmed by the speakers, then wait
        ``drain_wait_s``. Raises BackendError when a speaker could not confirm."""
        self._drained = True
        await self._push(force=True)
        if self.config.anycast.drain_wait_s > 0:
            await asyncio.sleep(self.config.anycast.drain_wait_s)

    async def undrain(self) -> None:
        self._drained = False
        await self._push(force=True)

    async def drain_then(self, stop: Callable[[], Awaitable[None]]) -> None:
        """Maintenance: withdraw (confirmed, plus the drain wait), and only then ``stop``.
        If the withdrawal fails, ``stop`` still runs (the caller asked to stop) but the
        failure is logged loudly: routes may still point at the stopped service."""
        try:
            await self.drain()
        except BackendError as exc:
            log.error("drain: withdraw not confirmed before stopping: %s", exc)
        await stop()

    async def aclose(self) -> None:
        """Clean shutdown: withdraw everything first, then stop the speakers."""
        if self._timer is not None:
            self._timer.cancel()
        if self._flush is not None:
            self._flush.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._flush
        try:
            await self.drain()
        except BackendError as exc:
            log.error("shutdown: withdraw not confirmed: %s", exc)
        for sp in self.speakers.values():
            await sp.aclose()
