"""What /metrics tells of the engine's own health: measurements read, paths per state, and
whether the state file is being written (a dependency failing degrades safely, and shows)."""

from __future__ import annotations

from pathlib import Path

from prometheus_client import CollectorRegistry, generate_latest

from edge.api.engine_metrics import EngineCollector
from edge.config.loader import load_config
from edge.runtime import Engine
from tests.builders import measurement, path
from tests.test_edge_steering_sighup import CONFIG


def scrape(engine: Engine) -> dict[str, float]:
    registry = CollectorRegistry()
    registry.register(EngineCollector(engine))
    out = {}
    for line in generate_latest(registry).decode().splitlines():
        if line and not line.startswith("#"):
            name, _, value = line.rpartition(" ")
            out[name] = float(value)
    return out


async def test_a_state_file_that_cannot_be_written_is_counted_and_the_plan_still_served(
        tmp_path: Path) -> None:
    cfg = tmp_path / "edge.yaml"
    cfg.write_text(CONFIG.format(cn2=1, pccw=2).replace(
        "guard: {max_shift: 1.0}", "guard: {max_shift: 1.0, state_dir: state}"))
    (tmp_path / "state").write_text("a file where the directory should be")
    engine = Engine(load_config(cfg), [])
    await engine.start()
    assert engine.current is not None and engine.current.version == 1  # served anyway
    got = scrape(engine)
    assert got["edgesteer_state_saves_failed_total"] == 1.0
    assert got["edgesteer_state_saved_timestamp_seconds"] == 0.0
    assert got["edgesteer_plan_version"] == 1.0

    (tmp_path / "state").unlink()  # the operator mends it: the next save goes through
    engine.tracker.feed(measurement(1000.0, key=path("cn2", "pop", "hk-1"), loss=1.0))
    await engine.replan()
    got = scrape(engine)
    assert got["edgesteer_state_saves_failed_total"] == 1.0
    assert got["edgesteer_state_saved_timestamp_seconds"] > 0.0
    assert (tmp_path / "state" / "engine.json").exists()


async def test_measurements_and_path_states_are_counted(tmp_path: Path) -> None:
    cfg = tmp_path / "edge.yaml"
    cfg.write_text(CONFIG.format(cn2=1, pccw=2))
    engine = Engine(load_config(cfg), [])
    assert scrape(engine)["edgesteer_health_measurements_total"] == 0.0
    for i in range(3):
        engine.tracker.feed(measurement(1000.0 + i, key=path("cn2", "pop-a", "hk-1")))
    engine.tracker.feed(measurement(1003.0, key=path("pccw", "pop-a", "hk-1"), loss=1.0))
    engine.tracker.feed(measurement(1003.0, key=path("pccw", "pop-b", "hk-1")))
    got = scrape(engine)
    assert got["edgesteer_health_measurements_total"] == 5.0
    assert got['edgesteer_health_paths{state="up"}'] == 2.0
    assert got['edgesteer_health_paths{state="falling"}'] == 1.0  # fall 3: one bad window
    assert got['edgesteer_health_paths{state="down"}'] == 0.0
