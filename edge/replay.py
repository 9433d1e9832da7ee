"""Replay: run the engine over a recorded trace on simulated time.

The same code as a live node, minus the sockets: raw samples go through the agent's
:class:`probes.window.Window` (one window per path, ``health.window`` samples, one
Measurement per sample, as the agent publishes), Measurements go straight in; then the
:class:`edge.health.tracker.HealthTracker` (state machine, quorum, holds, damping), the
planner, the rails and the guard (``edge.steering.cycle``, the live engine's cycle).
Time is the trace's: the tracker's clock is the time of the record being replayed, and
every ``tick_s`` of trace time staleness is checked and a cycle runs, as in the live
engine, so a day of trace replays in seconds.

What a recorded trace cannot replay: the faster probing a live agent does while a path
is in doubt or changes state (the trace has the samples it has). Windows are built as the
agent builds them (``probes.cadence.path_window``: a span of ``health.window`` target
intervals), so the samples a trace does hold are judged as the live agent judged them.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from edge.config.schema import Config
from edge.health.state import HealthSnapshot, HealthState
from edge.health.tracker import HealthTracker
from edge.plan import AnswerSet, Plan
from edge.steering.cycle import Steering
from edge.steering.overrides import Overrides
from probes.cadence import path_window
from probes.measurement import Measurement, PathKey, ProbeKind, Sample
from probes.trace import Record
from probes.window import Window


@dataclass(frozen=True, slots=True)
class LinkDecision:
    at: float
    link: str
    old: HealthState
    new: HealthState
    reason: str

    def to_json(self) -> dict[str, Any]:
        return {"type": "link", "t": self.at, "link": self.link, "old": str(self.old),
                "state": str(self.new), "reason": self.reason}


@dataclass(frozen=True, slots=True)
class AnswerDecision:
    """From ``at`` on, (service, segment) is served ``after`` (None: no answer set)."""

    at: float
    service: str
    segment: str
    before: AnswerSet | None
    after: AnswerSet | None

    def values(self) -> tuple[tuple[str, float], ...]:
        """What users get: (value, weight) pairs, sorted."""
        if self.after is None:
            return ()
        return tuple(sorted((a.value, a.weight) for a in self.after.answers))

    def to_json(self) -> dict[str, Any]:
        return {"type": "answers", "t": self.at, "service": self.service,
                "segment": self.segment,
                "answer_set": self.after.to_json() if self.after is not None else None}


@dataclass(frozen=True, slots=True)
class RefusedDecision:
    at: float
    plan_version: int
    error: str

    def to_json(self) -> dict[str, Any]:
        return {"type": "refused", "t": self.at, "plan_version": self.plan_version,
                "error": self.error}


Decision = LinkDecision | AnswerDecision | RefusedDecision


@dataclass(slots=True)
class ReplayResult:
    decisions: list[Decision] = field(default_factory=list)
    records: int = 0
    start: float | None = None
    end: float | None = None
    plan: Plan | None = None
    snapshot: HealthSnapshot | None = None  # health at the end of the trace

    def links(self, link: str | None = None) -> list[LinkDecision]:
        return [d for d in self.decisions if isinstance(d, LinkDecision)
                and (link is None or d.link == link)]

    def answers(self, service: str | None = None,
                segment: str | None = None) -> list[AnswerDecision]:
        return [d for d in self.decisions if isinstance(d, AnswerDecision)
                and (service is None or d.service == service)
                and (segment is None or d.segment == segment)]

    def to_json(self) -> dict[str, Any]:
        return {"records": self.records, "start": self.start, "end": self.end,
                "decisions": [d.to_json() for d in self.decisions]}


class Replayer:
    """Feeds records in time order; collects every link and answer decision."""

    def __init__(self, config: Config, *, tick_s: float = 1.0,
                 seed: Mapping[str, HealthState] | None = None,
                 overrides: Overrides | None = None) -> None:
        self.config = config
        self._now = 0.0
        self.tracker = HealthTracker(config.health,
                                     {lk.name: lk.thresholds for lk in config.links},
                                     clock=lambda: self._now,
                                     regions=config.target_regions())
        self._windows: dict[PathKey, Window] = {}
        self._targets = {t.name: t for t in config.targets}
        self._tick_s = tick_s
        self._next_tick: float | None = None
        self._seed = dict(seed or {})
        self.result = ReplayResult()
        self._links: dict[str, HealthState] = {}
        self.steering = Steering(config, overrides=overrides)

    def feed(self, record: Record) -> None:
        at = record.at
        if self.result.start is None:
            self._begin(at)
        self._advance(at)
        self._now = at
        m = self._measure(record) if isinstance(record, Sample) else record
        self.result.records += 1
        self.result.end = at
        if self.tracker.feed(m):
            self._decide(at)

    def finish(self) -> ReplayResult:
        self.result.snapshot = self.tracker.snapshot
        return self.result

    # internals ---------------------------------------------------------------------

    def _begin(self, at: float) -> None:
        self.result.start = at
        self._now = at
        if self._seed:
            self.tracker.seed(self._seed, at=at)
        self._links = {n: lh.state for n, lh in self.tracker.snapshot.links.items()}
        self._next_tick = at + self._tick_s
        self._decide(at)

    def _advance(self, until: float) -> None:
        assert self._next_tick is not None
        while self._next_tick <= until:
            t = self._next_tick
            self._now = t
            self.tracker.check_stale(t)
            self._decide(t)  # every tick, as the live engine: staleness, ramps
            self._next_tick = t + self._tick_s

    def _measure(self, s: Sample) -> Measurement:
        w = self._windows.get(s.path)
        if w is None:
            spec = self._targets.get(s.path.target)
            w = self._windows[s.path] = (
                Window(self.config.health.window) if spec is None else path_window(
                    spec, self.config.health.window, self.config.health.fast_probe_factor))
        w.add(s)
        kind: ProbeKind = s.kind
        return w.measurement(s.path, kind, s.at)

    def _decide(self, at: float) -> None:
        snapshot = self.tracker.snapshot
        self._link_decisions(at, snapshot)
        out = self.steering.propose(snapshot, at)
        if self.steering.current is not None and not out.diff:
            return
        if out.error is not None:
            self.result.decisions.append(RefusedDecision(at, out.plan.version, out.error))
            return
        self.steering.commit(out.plan)
        self.result.plan = out.plan
        for change in out.diff.changes:
            self.result.decisions.append(AnswerDecision(at, change.key[0], change.key[1],
                                                        change.before, change.after))

    def _link_decisions(self, at: float, snapshot: HealthSnapshot) -> None:
        for name, lh in snapshot.links.items():
            old = self._links.get(name, HealthState.UNKNOWN)
            if old is not lh.state:
                self.result.decisions.append(LinkDecision(at, name, old, lh.state, lh.reason))
                self._links[name] = lh.state


def replay(config: Config, records: Iterable[Record], *, tick_s: float = 1.0,
           seed: Mapping[str, HealthState] | None = None,
           overrides: Overrides | None = None) -> ReplayResult:
    """Replay ``records`` (sorted by time here, stably) through the engine."""
    r = Replayer(config, tick_s=tick_s, seed=seed, overrides=overrides)
    for record in sorted(records, key=lambda rec: rec.at):
        r.feed(record)
    return r.finish()
