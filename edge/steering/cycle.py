"""One steering cycle, shared by the live engine and ``replay``: overrides -> planner ->
rails (freeze, last-known-good, ramp) -> demotion limit -> guard.

:class:`Steering` keeps what a cycle needs from the previous ones (the plan in force, the
version counter, the link states last seen and the automatic demotions of the window); it
does no I/O, and its clock is the ``now`` it is given.

Demotion limit (``guard.max_demotions`` per ``guard.demotion_window``): a link that goes
from serving to not serving by itself (not by an operator's ``down``) is an automatic
demotion. When the demotions within the window exceed the limit the proposal is refused
(:class:`TooManyDemotions`) and the plan in force stays: a change that large waits for an
operator (``edgesteer override down LINK`` accepts it) or for the window to pass.

Cost: a cycle walks only what changed. The incremental planner recomputes the groups of
answer sets that a changed link touches; ``rails.shape``, the diff and the guard's checks
then visit only the keys whose answer set is not the same object as in the plan in force
(``incremental.group_delta``), so a cycle after one link change costs about what the
planner recomputed, not the 500,000 answer sets of a large plan. ``walk_all`` visits every
key instead (the reference the property test compares with: equal outcomes).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

from edge.config.schema import Config
from edge.health.state import HealthSnapshot, HealthState
from edge.plan import Plan, PlanDiff
from edge.steering.guard import UnsafePlan, guard
from edge.steering.incremental import IncrementalPlanner, diff_plans
from edge.steering.overrides import Overrides, apply_overrides
from edge.steering.rails import demoted, shape

PlanTransform = Callable[[Plan, Config, HealthSnapshot], Plan]


class TooManyDemotions(UnsafePlan):
    """More links went out by themselves within the window than guard.max_demotions."""


@dataclass(frozen=True, slots=True)
class Outcome:
    """What a cycle decided. ``plan`` is the proposal (accepted unless ``error``)."""

    at: float
    plan: Plan
    diff: PlanDiff
    snapshot: HealthSnapshot  # as the planner saw it (overrides applied)
    error: str | None = None


class Steering:
    def __init__(self, config: Config, *, overrides: Overrides | None = None,
                 transform: PlanTransform | None = None, walk_all: bool = False) -> None:
        self.config = config
        self._walk_all = walk_all  # visit every answer set (the reference the tests hold to)
        self.overrides = overrides or Overrides()
        self.current: Plan | None = None
        self.version = 0
        self._transform = transform
        self._planner: IncrementalPlanner | None = None  # == planner.plan, incrementally
        self._states: dict[str, HealthState] = {}
        self._seen: dict[str, HealthState] = {}  # link states the last proposal saw
        self._committed: dict[str, HealthState] = {}  # ... and the plan in force
        self._demotions: deque[tuple[float, str]] = deque()

    def adopt(self, plan: Plan | None) -> None:
        """Continue from ``plan`` as the plan in force (persisted or a predecessor's)."""
        self.current = plan
        if plan is not None:
            self.version = max(self.version, plan.version)

    def propose(self, snapshot: HealthSnapshot, now: float, *, force: bool = False) -> Outcome:
        config, snap = apply_overrides(self.config, snapshot, self.overrides)
        if self._planner is None or self._planner.config is not config:
            self._planner = IncrementalPlanner(config)  # a new config or overrides
        proposed = self._planner.plan(snap, version=self.version + 1, now=now)
        if self._transform is not None:
            proposed = self._transform(proposed, config, snap)
        proposed = shape(self.current, proposed, snap, config.guard,
                         frozen=self.overrides.frozen, before=self._committed,
                         walk_all=self._walk_all)
        self._seen = {n: lh.state for n, lh in snap.links.items()}
        previous = self.current or Plan()
        diff = previous.diff(proposed) if self._walk_all else diff_plans(previous, proposed)
        try:
            self._count_demotions(snapshot, now)
            if not force:
                if diff:
                    self._check_demotions(config)
                guard(self.current, proposed, config.guard, diff=diff)
        except UnsafePlan as exc:
            return Outcome(now, proposed, diff, snap, error=str(exc))
        return Outcome(now, proposed, diff, snap)

    def commit(self, plan: Plan) -> None:
        self.current = plan
        self._committed = self._seen
        self.version = max(self.version, plan.version)

    def _count_demotions(self, snapshot: HealthSnapshot, now: float) -> None:
        states = {n: lh.state for n, lh in snapshot.links.items()}
        forced = {n for n, a in self.overrides.links.items() if a == "down"}
        for link in sorted(demoted(self._states, states) - forced):
            self._demotions.append((now, link))
        self._states = states
        window = self.config.guard.demotion_window_s
        while self._demotions and self._demotions[0][0] <= now - window:
            self._demotions.popleft()

    def _check_demotions(self, config: Config) -> None:
        limit = config.guard.max_demotions
        if limit <= 0:
            return
        # links still out that were demoted within the window
        confirmed = {n for n, a in self.overrides.links.items() if a == "down"}
        out = sorted({link for _, link in self._demotions
                      if not self._states.get(link, HealthState.UNKNOWN).serving} - confirmed)
        if len(out) > limit:
            raise TooManyDemotions(
                f"{len(out)} links went out by themselves within "
                f"{config.guard.demotion_window_s:g} s ({', '.join(out)}), more than "
                f"guard.max_demotions {limit}: the plan in force stays until an operator "
                f"confirms (edgesteer override down LINK) or the window passes")
