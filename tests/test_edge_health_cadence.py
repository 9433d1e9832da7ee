"""Faster probing while a path changes state: the rule, and its wiring in the runtime."""

from __future__ import annotations

from pathlib import Path

from edge.config.loader import load_config
from edge.health.cadence import probe_interval
from edge.health.machine import Transition
from edge.health.state import HealthState
from edge.runtime import NodeRuntime
from probes.measurement import PathKey

S = HealthState
ROOT = Path(__file__).parent


def test_probe_interval_rule() -> None:
    assert probe_interval(S.FALLING, 1.0, 4.0) == 0.25
    assert probe_interval(S.RISING, 0.2, 4.0) == 0.1          # never below 0.1 s
    assert probe_interval(S.UP, 1.0, 4.0) is None
    assert probe_interval(S.DOWN, 1.0, 4.0) is None
    assert probe_interval(S.FALLING, 1.0, 1.0) is None        # factor 1: never faster
    assert probe_interval(S.FALLING, 0.1, 4.0) is None        # already at the floor


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
