"""Scheduling rules: splay, next tick, overlap cap, and the probe deadline wrapper."""

from __future__ import annotations

import asyncio
import logging

import pytest
from hypothesis import given
from hypothesis import strategies as st

from probes.kinds import Outcome, ProbeContext
from probes.measurement import PathKey, ProbeKind
from probes.schedule import max_overlap, next_tick, run_probe, splay
from probes.spec import LinkBinding, TargetSpec

SPEC = TargetSpec("pop", ProbeKind.TCP, "127.0.0.1", 9, 1.0, 0.05)
CTX = ProbeContext(LinkBinding("cn2"), 0.05)


@given(st.text(min_size=1, max_size=20), st.floats(min_value=0.01, max_value=3600))
def test_splay_is_within_the_interval_and_stable(name: str, interval: float) -> None:
    path = PathKey("hk-1", "cn2", name)
    offset = splay(path, interval)
    assert 0.0 <= offset < interval
    assert splay(PathKey("hk-1", "cn2", name), interval) == offset


def test_splay_spreads_paths_over_the_interval() -> None:
    offsets = [splay(PathKey("hk-1", link, f"t{i}"), 1.0) for i in range(50)
               for link in ("cn2", "pccw")]
    assert len({round(o, 6) for o in offsets}) == len(offsets)
    buckets = {int(o * 4) for o in offsets}
    assert buckets == {0, 1, 2, 3}  # every quarter of the interval gets some paths


def test_next_tick_keeps_cadence_and_skips_missed_ticks() -> None:
    assert next_tick(10.0, 1.0, 10.2) == 11.0
    assert next_tick(10.0, 1.0, 13.5) == 14.5  # fell behind: no burst of catch-up probes


def test_max_overlap() -> None:
    assert max_overlap(1.0, 1.0) == 2
    assert max_overlap(1.0, 0.2) == 2
    assert max_overlap(1.0, 5.0) == 6


async def test_run_probe_enforces_the_deadline() -> None:
    async def hangs(spec: TargetSpec, ctx: ProbeContext) -> Outcome:
        await asyncio.sleep(10)
        return Outcome.success(1.0)

    outcome = await run_probe(hangs, SPEC, CTX)
    assert outcome.error is not None and outcome.error.kind == "timeout"


async def test_run_probe_reports_a_crashing_probe_as_an_error(
    caplog: pytest.LogCaptureFixture,
) -> None:
    async def crashes(spec: TargetSpec, ctx: ProbeContext) -> Outcome:
        raise KeyError("bug")

    with caplog.at_level(logging.ERROR, logger="probes.schedule"):
        outcome = await run_probe(crashes, SPEC, CTX)
    assert outcome.error is not None and outcome.error.kind == "error"
    assert "probe crashed: KeyError" in outcome.error.detail
    assert "crashed" in caplog.text


async def test_run_probe_lets_cancellation_through() -> None:
    started = asyncio.Event()

    async def slow(spec: TargetSpec, ctx: ProbeContext) -> Outcome:
        started.set()
        await asyncio.sleep(10)
        return Outcome.success(1.0)

    task = asyncio.create_task(run_probe(slow, SPEC, ProbeContext(LinkBinding("x"), 5.0)))
    await started.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
