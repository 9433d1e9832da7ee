"""Faster probing while a path changes state: the rule, and its wiring in the runtime;
and the agent's own faster probing while a path's window is mixed (answered and lost
probes), against a real DNS responder on loopback."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import statistics
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest

from edge.config.loader import load_config
from edge.health.cadence import probe_interval
from edge.health.machine import Transition
from edge.health.state import HealthState
from edge.lab.responders import DnsResponder, ImpairmentTable
from edge.runtime import NodeRuntime
from probes.agent import Agent
from probes.bus.memory import MemoryBus
from probes.cadence import FAST_INTERVAL_FLOOR_S, fast_interval
from probes.measurement import PathKey, ProbeKind, Sample
from probes.spec import LinkBinding, TargetSpec

S = HealthState
ROOT = Path(__file__).parent


def test_probe_interval_rule() -> None:
    assert probe_interval(S.FALLING, 1.0, 4.0) == 0.25
    assert probe_interval(S.RISING, 0.2, 4.0) == 0.05         # the factor, honoured at 200 ms
    assert probe_interval(S.RISING, 0.1, 4.0) == 0.05         # never below 50 ms
    assert probe_interval(S.UP, 1.0, 4.0) is None
    assert probe_interval(S.DOWN, 1.0, 4.0) is None
    assert probe_interval(S.FALLING, 1.0, 1.0) is None        # factor 1: never faster
    assert probe_interval(S.FALLING, 0.05, 4.0) is None       # already at the floor


async def test_runtime_requests_and_releases_the_faster_interval() -> None:
    config = load_config(str(ROOT / "config" / "good-minimal.yaml"))
    seen: list[Transition] = []
    rt = NodeRuntime(config, on_transition=seen.append, listen=[("127.0.0.1", 0)])
    try:
        key = PathKey("hk-1", "cn2", "pop")
        assert key in rt.agent.paths
        rt._transition(Transition(key, S.UP, S.FALLING, 1.0, "bad 1/3"))
        assert rt.agent._overrides == {key: 0.25}
        rt._transition(Transition(key, S.FALLING, S.DOWN, 2.0, "bad 3/3"))
        assert rt.agent._overrides == {}
        assert [t.new for t in seen] == [S.FALLING, S.DOWN]   # still passed on
    finally:
        await rt.bus.aclose()


def test_fast_interval_rule() -> None:
    assert fast_interval(0.2, 4.0) == 0.05
    assert fast_interval(1.0, 4.0) == 0.25
    assert fast_interval(0.1, 4.0) == FAST_INTERVAL_FLOOR_S == 0.05
    assert fast_interval(0.02, 4.0) == 0.02                   # never slower than normal
    assert fast_interval(0.2, 1.0) == 0.2                     # factor 1: off
    with pytest.raises(ValueError, match="suspect_factor"):
        Agent("n", [], [], MemoryBus(), suspect_factor=0.5)


# --- the agent: faster while the window is mixed ------------------------------------------

LINK = LinkBinding("cn2", source="127.0.1.1")


class LoseOne(ImpairmentTable):
    """Drops the ``nth`` probe (1-based), or every probe from the ``nth`` on (``dead``)."""

    def __init__(self, nth: int, *, dead: bool = False) -> None:
        super().__init__()
        self.nth, self.dead, self.count = nth, dead, 0

    def sample(self, source: str) -> float | None:
        self.count += 1
        lost = self.count >= self.nth if self.dead else self.count == self.nth
        return None if lost else 0.0


async def _sends(table: ImpairmentTable, factor: float,
                 enough: Callable[[list[Sample]], bool]) -> list[Sample]:
    """Samples (in completion order) of one path probed every 200 ms (timeout 0.4 s)."""
    responder = DnsResponder(table)
    await responder.start()
    spec = TargetSpec("pop", ProbeKind.DNS, "127.0.0.1", responder.port, 0.2, 0.4,
                      qname="example.hk", qtype="A")
    seen: list[Sample] = []
    done = asyncio.Event()

    def on_sample(s: Sample) -> None:
        seen.append(s)
        if enough(seen):
            done.set()

    bus = MemoryBus()
    agent = Agent("hk-1", [spec], [LINK], bus, window=10, suspect_factor=factor,
                  on_sample=on_sample)
    task = asyncio.create_task(agent.run())
    try:
        async with asyncio.timeout(30.0):
            await done.wait()
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        await bus.aclose()
        await responder.aclose()
    return seen


def _gaps(samples: list[Sample]) -> list[float]:
    at = sorted(s.at for s in samples)
    return [b - a for a, b in itertools.pairwise(at)]


def _sent(samples: list[Sample], lost: Sample, start: float, end: float) -> list[Sample]:
    return [s for s in samples if lost.at + start <= s.at < lost.at + end]


def _past_loss(by_s: float) -> Callable[[list[Sample]], bool]:
    def enough(seen: list[Sample]) -> bool:
        lost = next((s for s in seen if not s.ok), None)
        return lost is not None and seen[-1].at > lost.at + by_s
    return enough


@pytest.fixture
async def lose_6th() -> AsyncIterator[tuple[list[Sample], list[Sample]]]:
    fast, control = await asyncio.gather(_sends(LoseOne(6), 4.0, _past_loss(3.4)),
                                         _sends(LoseOne(6), 1.0, _past_loss(1.6)))
    yield fast, control


async def test_one_lost_probe_speeds_probing_until_it_leaves_the_window(
        lose_6th: tuple[list[Sample], list[Sample]]) -> None:
    """The window of a faster-probed path spans 10 target intervals (2 s): the lost probe
    is known 0.4 s after it was sent (its timeout) and leaves 2 s after it was sent."""
    fast, control = lose_6th
    lost = [s for s in fast if not s.ok]
    assert len(lost) == 1
    before = [s for s in fast if s.at < lost[0].at]
    doubt = _sent(fast, lost[0], 0.5, 1.9)
    after = _sent(fast, lost[0], 2.3, 9.0)
    # 200 ms before the loss; 4 x faster while it is in the window (the floor, 50 ms);
    # back to 200 ms once it has left
    assert statistics.median(_gaps(before)) > 0.15
    assert len(doubt) >= 15 and statistics.median(_gaps(doubt)) < 0.1, _gaps(doubt)
    assert len(after) >= 4 and statistics.median(_gaps(after)) > 0.15, _gaps(after)
    # control: without the factor the same loss leaves the cadence alone
    c_lost = next(s for s in control if not s.ok)
    assert statistics.median(_gaps(_sent(control, c_lost, 0.5, 9.0))) > 0.15


async def test_an_overdue_probe_speeds_probing_before_its_timeout(
        lose_6th: tuple[list[Sample], list[Sample]]) -> None:
    """Doubt starts when the lost probe is overdue (50 ms here: 3 x a sub-ms p95, floored),
    not at its timeout (0.4 s): the probes sent while it is still in flight come at the
    fast interval. Control (factor 1): the usual 200 ms."""
    fast, control = lose_6th
    lost = next(s for s in fast if not s.ok)
    in_flight = _sent(fast, lost, 0.01, 0.39)
    assert len(in_flight) >= 4, _gaps(_sent(fast, lost, 0.0, 0.4))
    assert statistics.median(_gaps(in_flight)) < 0.1
    c_lost = next(s for s in control if not s.ok)
    assert len(_sent(control, c_lost, 0.01, 0.39)) <= 2


async def test_a_dead_target_is_probed_at_its_own_interval() -> None:
    """All lost from the start: the window is unanimous, nothing is in doubt."""
    samples = await _sends(LoseOne(1, dead=True), 4.0, lambda seen: len(seen) >= 8)
    assert not any(s.ok for s in samples)
    assert statistics.median(_gaps(samples)) > 0.15
