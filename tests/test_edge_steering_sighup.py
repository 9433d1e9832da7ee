"""`edgesteer run` re-plans within one cycle when its config changes and it gets SIGHUP."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
import time
from pathlib import Path

import dns.asyncquery
import dns.message
import dns.rdatatype

from tests.conftest import free_port

CONFIG = """
version: 1
node: {{name: hk-1, site: hk}}
sites: [{{name: hk}}]
links:
  - {{name: cn2, priority: {cn2}, answers: {{v4: [203.0.113.10]}}}}
  - {{name: pccw, priority: {pccw}, answers: {{v4: [198.51.100.20]}}}}
zones: [{{name: example.hk, ns: [ns1.example.hk]}}]
services:
  - name: www.example.hk
    pools:
      - {{name: main, endpoints: [{{link: cn2}}, {{link: pccw}}]}}
guard: {{max_shift: 1.0}}
"""


async def _answers(port: int) -> frozenset[str] | None:
    q = dns.message.make_query("www.example.hk", "A")
    try:
        r = await dns.asyncquery.udp(q, "127.0.0.1", port=port, timeout=0.3)
    except (TimeoutError, dns.exception.Timeout, OSError):
        return None
    return frozenset(rd.to_text() for rrset in r.answer for rd in rrset
                     if rrset.rdtype == dns.rdatatype.A)


async def _wait_for(port: int, want: frozenset[str], limit_s: float) -> float:
    t0 = time.monotonic()
    while time.monotonic() - t0 < limit_s:
        if await _answers(port) == want:
            return time.monotonic() - t0
        await asyncio.sleep(0.05)
    raise AssertionError(f"answers never became {sorted(want)} within {limit_s} s")


async def test_sighup_replans_within_one_cycle(tmp_path: Path) -> None:
    cfg = tmp_path / "edge.yaml"
    cfg.write_text(CONFIG.format(cn2=1, pccw=2))
    port = free_port()
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "edge.cli", "run", str(cfg), "--listen", f"127.0.0.1:{port}",
        stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE,
        env={**os.environ, "PYTHONUNBUFFERED": "1"})
    try:
        await _wait_for(port, frozenset({"203.0.113.10"}), 20.0)
        cfg.write_text(CONFIG.format(cn2=2, pccw=1))     # swap the priority tiers
        proc.send_signal(signal.SIGHUP)
        took = await _wait_for(port, frozenset({"198.51.100.20"}), 5.0)
        assert took < 1.5                                # one engine cycle (1 s) + slack
        assert proc.returncode is None                   # SIGHUP did not stop it
    finally:
        if proc.returncode is None:
            proc.send_signal(signal.SIGTERM)
        _, err_b = await asyncio.wait_for(proc.communicate(), 10)
    err = err_b.decode()
    assert proc.returncode == 0, err
    assert "SIGHUP" in err and "reloaded" in err
