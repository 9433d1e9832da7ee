"""The health tracker: feeds measurements to the state machine and keeps the snapshot.

It makes no decisions of its own (``machine`` and ``quorum`` do); it owns the mutable state
and the async loop that reads the bus.

Between the quorum and the published link state sit two holds and the damping:

* seed hold: a link seeded from persisted state keeps that state while none of its paths
  has a verdict yet (warm-up), so a restart serves what it served before;
* stale grace: a link whose paths all went stale (UNKNOWN) keeps its last known state for
  ``stale_grace_s`` more, then becomes UNKNOWN (serving: staleness is not failure), unless
  it was out of service (DOWN, RISING) and ``stale_down`` is ``hold``: then it stays so
  until a path has a verdict again;
* flap damping (``edge.health.damping``): a suppressed link is published DOWN.

Cost per measurement: a measurement that leaves its link's state where it was (the
common case) is settled in constant time from per-link counts of path states
(``quorum.decide``) and a look at the paths toward its target's region; only a link
whose state or regional latency changes is re-combined from all its paths. The link's
reason and worst-case quality, which only operators read, are brought up to date when a
snapshot is taken. So one engine can follow thousands of paths per link (a cluster
behind the Redis bus), and ``incremental=False``, which re-combines on every
measurement, is the reference the tests hold this to.

Snapshot versioning: ``version`` goes up exactly when some *link* state changes, or a
link's reported latency toward a region (``LinkHealth.toward``, edge.health.coverage)
moves: what the planner acts on. Path states and quality figures are refreshed in every
snapshot without a version bump, so two snapshots with the same version agree on every
link state but may show newer figures.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from types import MappingProxyType

from edge.config.schema import HealthSettings, Thresholds
from edge.health.coverage import holds, toward
from edge.health.damping import Damping, flap, is_flap, reuse_in, settle
from edge.health.machine import Transition, stale, step
from edge.health.quorum import combine, decide
from edge.health.state import HealthSnapshot, HealthState, LinkHealth, PathHealth
from probes.bus import MeasurementBus
from probes.measurement import Measurement, PathKey

__all__ = ["HealthTracker", "Transition"]

log = logging.getLogger(__name__)

TransitionListener = Callable[[Transition], None]


@dataclass(slots=True)
class _Seed:
    state: HealthState
    at: float
    first_data: float | None = None
    held: bool = False  # out of service, no data past stale_after, stale_down: hold


_NO_DAMPING = Damping()


def _show(figures: Mapping[str, float]) -> str:
    return ", ".join(f"{r} {ms:g} ms" for r, ms in figures.items()) or "none"


class HealthTracker:
    """Per-path state machines, combined per link, published as a versioned snapshot.

    ``thresholds`` maps link names to their bands; links not in it use
    ``settings.thresholds``. Links named there appear in the snapshot as UNKNOWN until
    data arrives. ``on_transition`` is called for every *path* transition.
    """

    def __init__(self, settings: HealthSettings, thresholds: Mapping[str, Thresholds], *,
                 on_transition: TransitionListener | None = None,
                 clock: Callable[[], float] = time.time,
                 regions: Mapping[str, str] | None = None,
                 incremental: bool = True) -> None:
        self._settings = settings
        self._incremental = incremental
        self._thresholds = dict(thresholds)
        self._regions = dict(regions or {})  # target -> region (edge.health.coverage)
        self._on_transition = on_transition
        self._clock = clock
        self._paths: dict[PathKey, PathHealth] = {}
        self._by_link: dict[str, list[PathKey]] = {}
        self._counts: dict[str, Counter[HealthState]] = {}  # link -> path states
        self._by_region: dict[tuple[str, str], list[PathKey]] = {}  # (link, region) -> paths
        self._unfinished: set[str] = set()  # links whose reason and quality lag
        self._recombine_next: set[str] = set()  # links whose figures came from elsewhere
        self._links: dict[str, LinkHealth] = {
            name: LinkHealth(link=name, state=HealthState.UNKNOWN, since=0.0,
                             reason="no data yet")
            for name in self._thresholds}
        self._under: dict[str, LinkHealth] = dict(self._links)  # before holds and damping
        self._damping: dict[str, Damping] = {}
        self._seeded: dict[str, _Seed] = {}
        self._version = 0
        self._taken_at = 0.0
        self._snapshot: HealthSnapshot | None = None
        self.measurements = 0  # fed so far (/metrics: is data flowing?)

    # --- state in -------------------------------------------------------------------

    def seed(self, links: Mapping[str, HealthState], *, at: float | None = None,
             toward: Mapping[str, Mapping[str, float]] | None = None,
             falling_from: Mapping[str, HealthState] | None = None) -> None:
        """Start from persisted (or assumed) link states.

        The paths of a link seeded DOWN (or RISING) whose first measurement comes within
        ``stale_after_s`` of the link's first data (one round of probes) must come back
        through RISING; paths of links seeded otherwise, or first seen later, start cold. A
        seeded link with no data for ``stale_after_s`` after ``at`` becomes UNKNOWN.
        ``toward``: the links' persisted latencies toward regions (kept until measurements
        clearly move them, edge.health.coverage). ``falling_from``: for links seeded
        FALLING, the state they fell from (a fall from DEGRADED stays at the degraded
        weight across the restart).
        """
        when = self._clock() if at is None else at
        changed = False
        for name, state in links.items():
            self._seeded[name] = _Seed(state, when)
            old = self._links.get(name)
            figures = (toward or {}).get(name)
            origin = (falling_from or {}).get(name) if state is HealthState.FALLING else None
            self._links[name] = LinkHealth(link=name, state=state, since=when,
                                           reason=f"seeded {state} (no data yet)",
                                           toward=MappingProxyType(dict(figures or {})),
                                           falling_from=origin)
            self._under[name] = self._links[name]
            self._recombine_next.add(name)
            changed |= old is None or old.state is not state
        self._touch(when, bump=changed)

    def reconfigure(self, settings: HealthSettings, thresholds: Mapping[str, Thresholds], *,
                    regions: Mapping[str, str] | None = None) -> None:
        """New settings, bands and target regions (a config reload); states and windows are
        kept, new links appear UNKNOWN. Takes effect from the next measurement."""
        self._settings = settings
        self._thresholds = dict(thresholds)
        self._regions = dict(regions or {})
        self._recombine_next.update(self._links)
        self._by_region = {}
        for key in self._paths:
            self._index_region(key)
        for name in self._thresholds:
            if name not in self._links:
                self._links[name] = self._under[name] = LinkHealth(
                    link=name, state=HealthState.UNKNOWN, since=self._taken_at,
                    reason="no data yet")
                self._touch(self._taken_at, bump=True)

    def feed(self, m: Measurement) -> bool:
        """Step the path's machine with ``m``; True when its link's state changed."""
        self.measurements += 1
        key = m.path
        stored = prev = self._paths.get(key)
        if prev is None:
            prev = self._seed_path(key, m.at)
            self._by_link.setdefault(key.link, []).append(key)
            self._index_region(key)
        seed = self._seeded.get(key.link)
        if seed is not None and seed.first_data is None:
            seed.first_data = m.at
        th = self._thresholds.get(key.link, self._settings.thresholds)
        new, tr = step(prev, m, th, self._settings)
        self._put(new, stored)
        if tr is not None:
            self._report(tr)
        if self._incremental and self._settled(key, m.at):
            return False
        return self._recombine(key.link, m.at)

    def check_stale(self, now: float) -> bool:
        """Turn silent paths (and seeded links never measured) UNKNOWN; True on link changes."""
        touched: set[str] = set()
        for key, prev in list(self._paths.items()):
            new, tr = stale(prev, now, self._settings)
            if tr is not None:
                self._put(new, prev)
                self._report(tr)
                touched.add(key.link)
        changed = self._expire_seeds(now)
        # every link: grace periods and suppressions expire with time alone
        for link in sorted(set(self._by_link) | touched):
            changed |= self._recombine(link, now)
        return changed

    # --- state out ------------------------------------------------------------------

    @property
    def snapshot(self) -> HealthSnapshot:
        if self._snapshot is None:
            for link in sorted(self._unfinished):
                self._finish(link)
            self._snapshot = HealthSnapshot(
                version=self._version, taken_at=self._taken_at,
                links=MappingProxyType(dict(sorted(self._links.items()))),
                paths=MappingProxyType(dict(sorted(self._paths.items(),
                                                   key=lambda kv: kv[0].order))))
        return self._snapshot

    def path_states(self) -> Counter[HealthState]:
        """How many paths are in each state, over every link (from the kept counts)."""
        total: Counter[HealthState] = Counter()
        for counts in self._counts.values():
            total.update(counts)
        return total

    def path(self, key: PathKey) -> PathHealth | None:
        return self._paths.get(key)

    def damping(self, link: str) -> Damping:
        """The flap-damping record of ``link`` (penalty as of its last update)."""
        return self._damping.get(link, Damping())

    # --- loop -----------------------------------------------------------------------

    async def run(self, bus: MeasurementBus, changed: asyncio.Event, *,
                  stale_interval_s: float = 1.0) -> None:
        """Consume ``bus`` until its subscription ends; set ``changed`` on link changes.

        Staleness is checked every ``stale_interval_s`` against the tracker's clock. The
        subscription is taken when the task first runs: what is published before is not seen.
        """
        watcher = asyncio.create_task(self._watch_stale(changed, stale_interval_s),
                                      name="health-stale-watch")
        subscription = bus.subscribe()
        try:
            async for m in subscription:
                if self.feed(m):
                    changed.set()
        finally:
            watcher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await watcher
            aclose = getattr(subscription, "aclose", None)  # generators and bus subscriptions
            if aclose is not None:
                await aclose()

    async def _watch_stale(self, changed: asyncio.Event, interval_s: float) -> None:
        while True:
            await asyncio.sleep(interval_s)
            if self.check_stale(self._clock()):
                changed.set()

    # --- internals ------------------------------------------------------------------

    def _seed_path(self, key: PathKey, at: float) -> PathHealth | None:
        seed = self._seeded.get(key.link)
        if seed is None or seed.state not in (HealthState.DOWN, HealthState.RISING):
            return None
        if seed.first_data is not None and at - seed.first_data >= self._settings.stale_after_s:
            return None
        return PathHealth(path=key, state=HealthState.UNKNOWN, since=at,
                          reason=f"seeded {seed.state}", settled=HealthState.DOWN)

    def _put(self, new: PathHealth, old: PathHealth | None) -> None:
        """Store a path's health (every write goes through here: it keeps the counts)."""
        self._paths[new.path] = new
        counts = self._counts.setdefault(new.path.link, Counter())
        if old is not None:
            counts[old.state] -= 1
        counts[new.state] += 1

    def _index_region(self, key: PathKey) -> None:
        region = self._regions.get(key.target)
        if region is not None:
            self._by_region.setdefault((key.link, region), []).append(key)

    def _settled(self, key: PathKey, now: float) -> bool:
        """Whether ``key``'s new health leaves its link as published (state and regional
        latency): then nothing but the link's reason and quality can differ, and those are
        brought up to date with the next snapshot (:meth:`_finish`). False when the link
        must be re-combined: its state may change, or it is held or suppressed (their
        reasons and timers run per update)."""
        link = key.link
        if link in self._recombine_next:
            return False
        published, under = self._links.get(link), self._under.get(link)
        if published is None or under is None or under.state is HealthState.UNKNOWN:
            return False
        if published.state is not under.state or self._damping.get(link, _NO_DAMPING).suppressed:
            return False
        if decide(self._counts[link], self._settings.quorum) is not under.state:
            return False
        region = self._regions.get(key.target)
        if region is not None:
            toward_region = (self._paths[k] for k in self._by_region[(link, region)])
            if not holds(toward_region, region, self._regions, published.toward):
                return False
        self._unfinished.add(link)
        self._touch(now, bump=False)
        return True

    def _finish(self, link: str) -> None:
        """Bring a settled link's reason and quality up to date (its state is right)."""
        self._unfinished.discard(link)
        under = self._under[link]
        paths = [self._paths[k] for k in self._by_link.get(link, ())]
        full = combine(link, paths, self._settings.quorum, self._taken_at, previous=under)
        self._under[link] = replace(under, reason=full.reason, quality=full.quality)
        self._links[link] = replace(self._links[link], reason=full.reason, quality=full.quality)

    def _report(self, tr: Transition) -> None:
        log.info("path %s: %s -> %s: %s", tr.path, tr.old, tr.new, tr.reason)
        if self._on_transition is not None:
            self._on_transition(tr)

    def _recombine(self, link: str, now: float) -> bool:
        self._unfinished.discard(link)  # reason and quality are made afresh below
        self._recombine_next.discard(link)
        previous = self._links.get(link)
        under_prev = self._under.get(link)
        paths = [self._paths[k] for k in self._by_link.get(link, ())]
        under = combine(link, paths, self._settings.quorum, now, previous=under_prev)
        under = self._hold(link, under, under_prev, now)
        self._under[link] = under
        ds = self._settings.damping
        damp = self._damping.get(link, Damping())
        if under_prev is not None and is_flap(under_prev.state, under.state):
            damp = flap(damp, now, ds)
            log.info("link %s: flap %d (%s -> %s), penalty %.0f%s", link, damp.flaps,
                     under_prev.state, under.state, damp.penalty,
                     ", suppressed" if damp.suppressed else "")
        damp = settle(damp, now, ds)
        self._damping[link] = damp
        new = under
        if damp.suppressed:
            new = LinkHealth(
                link=link, state=HealthState.DOWN, since=now, quality=under.quality,
                reason=(f"suppressed (flap damping): penalty {damp.penalty:.0f} after "
                        f"{damp.flaps} flaps, reused below {ds.reuse:g} in about "
                        f"{reuse_in(damp, now, ds):.0f} s; measured {under.state}: "
                        f"{under.reason}"))
        if new.state is HealthState.FALLING and previous is not None:
            origin = (previous.falling_from if previous.state is HealthState.FALLING
                      else previous.state)
            new = replace(new, falling_from=origin)
        if previous is not None and previous.state is new.state:
            new = replace(new, since=previous.since)
        reported = previous.toward if previous is not None else None
        figures = toward(paths, self._regions, reported or {})
        if figures:
            new = replace(new, toward=figures)
        self._links[link] = new
        old_state = previous.state if previous is not None else HealthState.UNKNOWN
        changed = old_state is not new.state
        if changed:
            log.info("link %s: %s -> %s: %s", link, old_state, new.state, new.reason)
        moved = reported is not None and figures != reported
        if moved:
            log.info("link %s: rtt toward regions now %s (was %s)", link,
                     _show(figures), _show(reported or {}))
        self._touch(now, bump=changed or moved)
        return changed or moved

    def _hold(self, link: str, under: LinkHealth, under_prev: LinkHealth | None,
              now: float) -> LinkHealth:
        """Seed hold and stale grace (module docstring) for a link with no known path."""
        if under.state is not HealthState.UNKNOWN:
            return under
        seed = self._seeded.get(link)
        if seed is not None and seed.state is not HealthState.UNKNOWN:
            return replace(under, state=seed.state,
                           since=under_prev.since if under_prev is not None else seed.at,
                           reason=f"seeded {seed.state}, no verdict yet ({under.reason})")
        if under_prev is None or under_prev.state is HealthState.UNKNOWN:
            return under
        last = under.quality.at  # the link's last data (quorum.combine)
        until = last + self._settings.stale_after_s + self._settings.stale_grace_s
        if now < until:
            return replace(under, state=under_prev.state, since=under_prev.since,
                           reason=f"stale grace: last state {under_prev.state} kept "
                           f"{until - now:.1f} s more ({under.reason})")
        if self._settings.stale_down == "hold" and not under_prev.state.serving:
            return replace(under, state=under_prev.state, since=under_prev.since,
                           reason=f"stale: last state {under_prev.state} held until data "
                           f"comes back (health.stale_down: hold) ({under.reason})")
        return under

    def _expire_seeds(self, now: float) -> bool:
        changed = False
        for link, seed in list(self._seeded.items()):
            if seed.first_data is not None:  # data came: keep seeding paths one round
                known = any(self._paths[k].state is not HealthState.UNKNOWN
                            for k in self._by_link.get(link, ()))
                age = now - seed.first_data
                if age >= self._settings.stale_after_s and (
                        known or age >= 3 * self._settings.stale_after_s):
                    del self._seeded[link]
                continue
            age, state = now - seed.at, seed.state
            if age < self._settings.stale_after_s or seed.held:
                continue
            if self._settings.stale_down == "hold" and not state.serving:
                # kept: its first data still comes back through RISING (_seed_path)
                seed.held = True
                held = (f"stale: no data for {age:.1f} s since seeding; last state {state} "
                        "held until data comes back (health.stale_down: hold)")
                self._links[link] = self._under[link] = replace(self._links[link], reason=held)
                self._touch(now, bump=False)
                log.info("link %s: %s", link, held)
                continue
            del self._seeded[link]
            reason = f"stale: no data for {age:.1f} s since seeding (last state {state})"
            self._links[link] = LinkHealth(link=link, state=HealthState.UNKNOWN, since=now,
                                           reason=reason)
            self._under[link] = self._links[link]
            if state is not HealthState.UNKNOWN:
                log.info("link %s: %s -> %s: %s", link, state, HealthState.UNKNOWN, reason)
                changed = True
        if changed:
            self._touch(now, bump=True)
        return changed

    def _touch(self, at: float, *, bump: bool) -> None:
        if bump:
            self._version += 1
        self._taken_at = max(self._taken_at, at)
        self._snapshot = None
