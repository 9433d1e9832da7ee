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
from edge.plan import AnswerKey, Plan


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


def check_frozen(previous: Plan | None, proposed: Plan, settings: GuardSettings) -> None:
    if not settings.freeze or previous is None:
        return
    diff = previous.diff(proposed)
    if diff:
        keys = tuple(c.key for c in diff.changes)
        raise Frozen(f"guard.freeze is on and {len(keys)} answer set(s) would change "
                     f"({_keys(keys)}): unfreeze, or apply with --force", keys)


def check_empty(previous: Plan | None, proposed: Plan, settings: GuardSettings) -> None:
    if previous is None:
        return
    emptied = tuple(key for key, aset in proposed.answers.items()
                    if not aset.answers and (old := previous.answers.get(key)) is not None
                    and old.answers
                    and not any(r.code == "all_down.fail_closed" for r in aset.reasons))
    if emptied:
        raise EmptyAnswers(f"{len(emptied)} answer set(s) would have no answers "
                           f"({_keys(emptied)}); enable guard.fail_open to serve all "
                           f"endpoints when none is healthy, or apply with --force", emptied)


Check = Callable[[Plan | None, Plan, GuardSettings], None]

CHECKS: tuple[Check, ...] = (check_frozen, check_empty)


def guard(previous: Plan | None, proposed: Plan, settings: GuardSettings, *,
          force: bool = False) -> Plan:
    """``proposed`` if it is safe to apply after ``previous``; else raise an UnsafePlan."""
    if not force:
        for check in CHECKS:
            check(previous, proposed, settings)
    return proposed
