"""Combining a link's paths into the link's health: all / majority / any."""

from __future__ import annotations

import pytest

from edge.config.schema import QuorumMode
from edge.health.quorum import aggregate, combine, needed
from edge.health.state import HealthState, LinkHealth, PathHealth, Quality
from tests.builders import path

S = HealthState
U, F, DN, R, DG, UNK = S.UP, S.FALLING, S.DOWN, S.RISING, S.DEGRADED, S.UNKNOWN


def paths(*states: HealthState) -> list[PathHealth]:
    return [PathHealth(path=path("cn2", f"t{i}"), state=st, since=1.0, reason=f"r{i}",
                       quality=Quality(rtt_p95=0.01 * (i + 1), loss=0.1 * i,
                                       jitter_s=0.001 * (3 - i), at=10.0 + i))
            for i, st in enumerate(states)]


@pytest.mark.parametrize(("mode", "known", "need"), [
    ("all", 3, 3), ("majority", 3, 2), ("majority", 4, 3), ("majority", 1, 1),
    ("any", 3, 1), ("majority", 2, 2)])
def test_needed(mode: QuorumMode, known: int, need: int) -> None:
    assert needed(mode, known) == need


CASES = [
    # mode, path states, link state
    ("majority", [U, U, U], U),
    ("majority", [DN, U, U], U),
    ("majority", [DN, DN, U], DN),
    ("majority", [DN, R, U], R),          # a majority is not serving yet
    ("majority", [DN, F, U], F),
    ("majority", [DG, DG, U], DG),
    ("majority", [DN, DG, U], DG),        # down counts as degraded-or-worse
    ("majority", [DN, DN, UNK], DN),      # unknown paths are not counted
    ("majority", [DN, UNK, UNK], DN),
    ("majority", [UNK, UNK], UNK),
    ("all", [DN, DN, U], U),
    ("all", [DN, DN, DN], DN),
    ("all", [DN, DN, UNK], DN),
    ("all", [DN, DG, DG], DG),
    ("any", [DN, U, U], DN),
    ("any", [DG, U, U], DG),
    ("any", [R, U, U], R),
    ("any", [U, U, U], U),
]


@pytest.mark.parametrize(("mode", "states", "expected"), CASES)
def test_combine(mode: QuorumMode, states: list[HealthState], expected: HealthState) -> None:
    assert combine("cn2", paths(*states), mode, 50.0).state is expected


def test_no_paths_is_unknown() -> None:
    lh = combine("cn2", [], "majority", 50.0)
    assert lh.state is UNK and lh.reason == "no path has data"


def test_reason_names_the_deciding_paths() -> None:
    lh = combine("cn2", paths(DN, U, DN), "majority", 50.0)
    assert lh.reason.startswith("down on 2/3 paths (quorum majority needs 2)")
    assert "hk-1/cn2/t0 down: r0" in lh.reason and "hk-1/cn2/t2 down: r2" in lh.reason
    assert "t1" not in lh.reason


def test_quality_is_the_worst_of_known_paths() -> None:
    ps = paths(U, DG, U)
    q = combine("cn2", [*ps, PathHealth(path("cn2", "silent"), UNK, 0.0, "stale",
                                        Quality(rtt_p95=9.0, loss=1.0))], "majority", 50.0).quality
    assert q == aggregate(ps)
    assert q.rtt_p95 == pytest.approx(0.03)
    assert (q.loss, q.jitter_s, q.at) == (0.2, 0.003, 12.0)


def test_since_kept_while_state_holds() -> None:
    first = combine("cn2", paths(U, U), "majority", 50.0)
    assert first.since == 50.0
    later = combine("cn2", paths(U, DG), "majority", 60.0, previous=first)
    assert later.since == 50.0
    changed = combine("cn2", paths(DG, DG), "majority", 70.0, previous=later)
    assert changed.state is DG and changed.since == 70.0


def test_all_stale_shows_the_paths_last_figures() -> None:
    prev = LinkHealth("cn2", U, 1.0, "x", Quality(rtt_p95=0.05, at=5.0))
    stale = paths(UNK, UNK)
    lh = combine("cn2", stale, "majority", 50.0, previous=prev)
    assert lh.state is UNK and "t0" in lh.reason and "t1" in lh.reason
    # worst case over their last figures; its time is the link's last data (stale grace)
    assert lh.quality == aggregate(stale) and lh.quality.at == 11.0
