"""Safety rails between a proposed plan and its application.

``guard(previous, proposed, settings)`` returns the plan to apply or raises an UnsafePlan;
``force=True`` (the CLI's ``--force``) is the only override. The checks are a tuple of
functions run in order, so new rails (maximum weight shift per step, minimum healthy
capacity) slot in as one function and one exception each.

Exceptions::

    UnsafePlan            base: the proposal may not go out as it is
     +-- Frozen           guard.freeze is on and the proposal changes what users see
     +-- EmptyAnswers     an answer set would lose all its answers (unless its pool is
                          all_down: fail_closed, which asks for exactly that)
"""

from __future__ import annotations

from collections.abc import Callable

from edge.config.schema import GuardSettings
from edge.plan import AnswerKey, Plan, PlanDiff
from edge.steering.incremental import diff_plans


class UnsafePlan(Exception):
    """The proposed plan must not be applied without ``--force``."""

    def __init__(self, message: str, keys: tuple[AnswerKey, ...] = ()) -> None:
        super().__init__(message)
        self.keys = keys


class Frozen(UnsafePlan):
    """``guard.freeze`` is set and the proposal differs from the plan in force."""


class EmptyAnswers(UnsafePlan):
    """An answer set that had answers would have none."""


def _keys(keys: tuple[AnswerKey, ...], limit: int = 5) -> str:
    shown = ", ".join(f"{svc}[{seg}]" for svc, seg in keys[:limit])
    return shown + (f" and {len(keys) - limit} more" if len(keys) > limit else "")


def check_frozen(previous: Plan | None, proposed: Plan, settings: GuardSettings,
                 diff: PlanDiff) -> None:
    if not settings.freeze or previous is None:
        return
    if diff:
        keys = tuple(c.key for c in diff.changes)
        what = []
        if keys:
            what.append(f"{len(keys)} answer set(s) would change ({_keys(keys)})")
        routes = diff.announcement_changes
        if routes:
            shown = ", ".join(f"{p} via {s}" for (p, s) in (c.key for c in routes[:5]))
            more = f" and {len(routes) - 5} more" if len(routes) > 5 else ""
            what.append(f"{len(routes)} route(s) would change ({shown}{more})")
        raise Frozen(f"guard.freeze is on and {' and '.join(what)}: unfreeze, or apply "
                     "with --force", keys)


def check_empty(previous: Plan | None, proposed: Plan, settings: GuardSettings,
                diff: PlanDiff) -> None:
    if previous is None:
        return
    # an answer set that loses all its answers changes in substance: it is in the diff
    emptied = {c.key for c in diff.changes
               if c.after is not None and not c.after.answers
               and c.before is not None and c.before.answers
               and not any(r.code == "all_down.fail_closed" for r in c.after.reasons)}
    if emptied:
        ordered = tuple(key for key in proposed.answers if key in emptied)  # plan order
        raise EmptyAnswers(f"{len(ordered)} answer set(s) would have no answers "
                           f"({_keys(ordered)}); enable guard.fail_open to serve all "
                           f"endpoints when none is healthy, or apply with --force", ordered)


Check = Callable[[Plan | None, Plan, GuardSettings, PlanDiff], None]

CHECKS: tuple[Check, ...] = (check_frozen, check_empty)


def guard(previous: Plan | None, proposed: Plan, settings: GuardSettings, *,
          force: bool = False, diff: PlanDiff | None = None) -> Plan:
    """``proposed`` if it is safe to apply after ``previous``; else raise an UnsafePlan.

    ``diff``: ``previous``'s diff to ``proposed`` when the caller has it (the engine
    cycle); else it is computed, walking only what changed when both plans come from one
    incremental planner (``incremental.diff_plans``).
    """
    if not force:
        if diff is None:
            diff = diff_plans(previous, proposed) if previous is not None else PlanDiff(())
        for check in CHECKS:
            check(previous, proposed, settings, diff)
    return proposed
