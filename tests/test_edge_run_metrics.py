"""`edgesteer run --metrics`: the engine's link states, plan and DNS counters over HTTP."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from pathlib import Path

import aiohttp

from tests.conftest import free_port
from tests.test_edge_steering_sighup import CONFIG, _wait_for


def _value(text: str, sample: str) -> float:
    for line in text.splitlines():
        if line.startswith(sample + " "):
            return float(line.rsplit(" ", 1)[1])
    raise AssertionError(f"{sample} not in /metrics:\n{text}")


async def test_run_serves_engine_and_dns_metrics(tmp_path: Path) -> None:
    cfg = tmp_path / "edge.yaml"
    cfg.write_text(CONFIG.format(cn2=1, pccw=2))
    port, mport = free_port(), free_port()
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "edge.cli", "run", str(cfg), "--listen", f"127.0.0.1:{port}",
        "--metrics", f"127.0.0.1:{mport}",
        stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE,
        env={**os.environ, "PYTHONUNBUFFERED": "1"})
    try:
        await _wait_for(port, frozenset({"203.0.113.10"}), 20.0)  # one answered query
        async with aiohttp.ClientSession() as http, \
                http.get(f"http://127.0.0.1:{mport}/metrics") as resp:
            assert resp.status == 200
            text = await resp.text()
    finally:
        if proc.returncode is None:
            proc.send_signal(signal.SIGTERM)
        _, err = await asyncio.wait_for(proc.communicate(), 10)
    assert proc.returncode == 0, err.decode()
    # no targets: both links have no data, which serves (tier 1 = cn2)
    assert _value(text, 'edgesteer_link_state{link="cn2",state="unknown"}') == 1.0
    assert _value(text, 'edgesteer_link_state{link="cn2",state="down"}') == 0.0
    assert _value(text, "edgesteer_plan_version") == 1.0
    assert _value(text, "edgesteer_plan_answer_sets") == 1.0
    assert _value(text, "edgesteer_plans_applied_total") == 1.0
    assert _value(text, "edgesteer_plans_refused_total") == 0.0
    assert _value(text, 'edgesteer_backend_behind{backend="builtin"}') == 0.0
    assert _value(text, 'edgesteer_dns_responses_total{rcode="NOERROR"}') >= 1.0


async def test_a_bad_metrics_address_is_refused(tmp_path: Path) -> None:
    cfg = tmp_path / "edge.yaml"
    cfg.write_text(CONFIG.format(cn2=1, pccw=2))
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "edge.cli", "run", str(cfg), "--metrics", "nowhere",
        stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE)
    _, err = await asyncio.wait_for(proc.communicate(), 20)
    assert proc.returncode == 2
    assert "--metrics" in err.decode()
