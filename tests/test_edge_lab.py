"""The lab end to end: real probes over emulated links, engine, built-in DNS over real UDP."""

from __future__ import annotations

import asyncio
import io
import json
import time
from pathlib import Path

import dns.asyncquery
import dns.exception
import dns.message
import dns.rdatatype
import pytest

from edge.cli import main
from edge.lab.runner import LabOptions, LabResult, run_lab
from tests.conftest import free_port

CN2 = frozenset({"203.0.113.10"})
PCCW = frozenset({"198.51.100.20"})

SHORT = """
name: short-cn2-impairment
duration: 19
links:
  cn2-gia: {delay_ms: 38, jitter_ms: 2}
  pccw: {delay_ms: 45, jitter_ms: 3}
  ntt: {delay_ms: 60, jitter_ms: 3}
events:
  - {at: 3, link: cn2-gia, set: {delay_ms: 80, jitter_ms: 60, loss: 0.15}, note: jitter+loss}
  - {at: 10, link: cn2-gia, restore: true}
bounds: {detect_s: 6, recover_s: 8}
"""


async def _watch(port: int, stop: asyncio.Event, seen: list[tuple[float, frozenset[str]]],
                 t0: float) -> None:
    """Query www.example.hk A over real UDP every 50 ms and record the answer sets."""
    while not stop.is_set():
        q = dns.message.make_query("www.example.hk", "A")
        try:
            r = await dns.asyncquery.udp(q, "127.0.0.1", port=port, timeout=0.5)
        except (TimeoutError, dns.exception.Timeout, OSError):
            await asyncio.sleep(0.05)
            continue
        values = frozenset(rd.to_text() for rrset in r.answer for rd in rrset
                           if rrset.rdtype == dns.rdatatype.A)
        if values:
            seen.append((time.monotonic() - t0, values))
        await asyncio.sleep(0.05)


async def test_lab_fails_over_and_recovers_without_flapping(tmp_path: Path) -> None:
    scenario = tmp_path / "short.yaml"
    scenario.write_text(SHORT)
    port = free_port()
    options = LabOptions(scenario=str(scenario), headless=True,
                         listen=(("127.0.0.1", port),), seed=7)
    out = io.StringIO()
    seen: list[tuple[float, frozenset[str]]] = []
    stop = asyncio.Event()
    t0 = time.monotonic()
    lab = asyncio.create_task(run_lab(options, out))
    await asyncio.sleep(0.3)  # let the server bind
    watcher = asyncio.create_task(_watch(port, stop, seen, t0))
    result: LabResult = await lab
    stop.set()
    await watcher

    assert seen, "the built-in server never answered"
    # Before the impairment: the preferred link (CN2 GIA, tier 1).
    before = [v for t, v in seen if t < 3.0]
    assert before and all(v == CN2 for v in before), before
    # The answers observed over UDP change exactly twice: away and back.
    runs = [seen[0][1]]
    for _, v in seen[1:]:
        if v != runs[-1]:
            runs.append(v)
    assert runs == [CN2, PCCW, CN2], runs
    first_pccw = next(t for t, v in seen if v == PCCW)
    back = next(t for t, v in seen if t > first_pccw and v == CN2)
    # Moved to the next tier within the configured detection bound after onset...
    assert 3.0 <= first_pccw <= 3.0 + 6.0 + 0.5, first_pccw
    # ...and back after restoration (which includes the hold-down), within its bound.
    assert 10.0 <= back <= 10.0 + 8.0 + 0.5, back
    # The lab's own summary agrees with what the wire showed.
    assert result.passed, result.summary_text()
    assert result.answer_changes == 2
    assert result.detected_after_s is not None and result.detected_after_s <= 6
    assert result.recovered_after_s is not None and result.recovered_after_s <= 8
    text = out.getvalue()
    assert "scenario: cn2-gia impaired" in text
    assert "dig @127.0.0.1 -p" in text


def test_lab_rejects_bad_scenario_and_starts_nothing(tmp_path: Path,
                                                      capsys: pytest.CaptureFixture[str]) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("duration: 5\nevents:\n  - {at: 1, link: nope, set: {loss: 2}}\n")
    port = free_port()
    code = main(["lab", "--scenario", str(bad), "--headless", "--listen", f"127.0.0.1:{port}"])
    err = capsys.readouterr().err
    assert code == 2
    assert "events[0].link: unknown link 'nope'" in err
    assert "events[0].set.loss: expected a value in 0..1, found 2" in err
    assert ":3:" in err
    # Nothing was started: the port is still free.
    import socket
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", port))


def test_lab_json_summary_shape(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    calm = tmp_path / "calm.yaml"
    calm.write_text("name: calm\nduration: 2\n")
    code = main(["lab", "--scenario", str(calm), "--json", "--listen",
                 f"127.0.0.1:{free_port()}"])
    payload = json.loads(capsys.readouterr().out)
    assert code == 0
    assert payload["scenario"] == "calm"
    assert payload["onset_t"] is None and payload["passed"] is True
    assert payload["answers"][0]["values"] == ["203.0.113.10"]
    assert set(payload) >= {"dns", "service", "bounds", "answer_changes", "detected_after_s",
                            "recovered_after_s"}


async def test_lab_falls_back_to_a_free_port_when_the_default_is_taken(tmp_path: Path) -> None:
    import socket
    from importlib import resources

    held = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    held.bind(("127.0.0.1", 0))
    port = held.getsockname()[1]
    text = resources.files("edge.lab").joinpath("lab.yaml").read_text()
    config = tmp_path / "lab.yaml"
    config.write_text(text.replace('listen: ["127.0.0.1:5353"]', f'listen: ["127.0.0.1:{port}"]'))
    calm = tmp_path / "calm.yaml"
    calm.write_text("name: calm\nduration: 1\n")
    out = io.StringIO()
    try:
        result = await run_lab(LabOptions(scenario=str(calm), config=str(config),
                                          headless=True), out)
    finally:
        held.close()
    assert result.dns[1] not in (0, port)
    assert f"DNS port 127.0.0.1:{port} is in use; serving on a free port instead" in out.getvalue()
