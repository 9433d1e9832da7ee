"""``edgesteer agent`` as a process: metrics, --record, SIGHUP reload, bad input per path.

Loopback targets; the bad-input tests run the agent inside a lab namespace whose resolver
is 127.0.0.1 there, so that nothing (not even a DNS query for an unresolvable name) can
leave the namespace.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import signal
import sys
import tempfile
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path

import aiohttp
import pytest

from edge.lab.netns import Netns
from edge.lab.responders import ImpairmentTable, TcpResponder
from tests.conftest import IS_ROOT, free_port, require, require_binary

BASE = """\
version: 1
node: {name: hk-1, site: hk}
sites: [{name: hk}]
links:
  - {name: cn2, priority: 1, source: 127.0.1.1, answers: {v4: [203.0.113.10]}}
  - {name: pccw, priority: 2, source: 127.0.2.1, answers: {v4: [198.51.100.20]}}
zones: [{name: example.hk, ns: [ns1.example.hk]}]
services:
  - name: www.example.hk
    pools: [{name: main, endpoints: [{link: cn2}, {link: pccw}]}]
"""


def config(targets: str, links: str = "") -> str:
    text = BASE
    if links:
        text = text.replace("zones:", links + "zones:")
    return text + "targets:\n" + targets


def icmp(name: str, host: str, links: str = "") -> str:
    extra = f", links: [{links}]" if links else ""
    return f"  - {{name: {name}, kind: icmp, host: '{host}', interval: 0.1, timeout: 0.3{extra}}}\n"


def tcp(name: str, port: int) -> str:
    return (f"  - {{name: {name}, kind: tcp, host: 127.0.0.1, port: {port}, interval: 0.1,"
            f" timeout: 0.3}}\n")


class Daemon:
    """An ``edgesteer agent`` subprocess; its stderr collected as it runs."""

    def __init__(self, proc: asyncio.subprocess.Process, record: Path) -> None:
        self.proc = proc
        self.record = record
        self.log: list[str] = []
        assert proc.stderr is not None
        self._reader = asyncio.create_task(self._read(proc.stderr))

    async def _read(self, stream: asyncio.StreamReader) -> None:
        while line := await stream.readline():
            self.log.append(line.decode(errors="replace"))

    def records(self) -> list[dict[str, object]]:
        if not self.record.exists():
            return []
        return [json.loads(x) for x in self.record.read_text().splitlines() if x.strip()]

    async def until(self, what: str, cond: Callable[[], bool], limit_s: float = 15) -> None:
        async with asyncio.timeout(limit_s):
            while not cond():
                if self.proc.returncode is not None:
                    raise AssertionError(f"agent exited {self.proc.returncode} waiting for "
                                         f"{what}:\n{''.join(self.log)}")
                await asyncio.sleep(0.05)

    def logged(self, pattern: str) -> bool:
        return any(re.search(pattern, line) for line in self.log)

    async def stop(self, *, signal_it: bool = True) -> int:
        if signal_it and self.proc.returncode is None:
            self.proc.send_signal(signal.SIGTERM)
        async with asyncio.timeout(10):
            code = await self.proc.wait()
        await self._reader
        return code


@contextlib.asynccontextmanager
async def daemon(cfg: Path, *args: str, prefix: tuple[str, ...] = ()) -> AsyncIterator[Daemon]:
    record = cfg.with_suffix(".jsonl")
    proc = await asyncio.create_subprocess_exec(
        *prefix, sys.executable, "-m", "edge", "agent", "--config", str(cfg),
        "--record", str(record), *args,
        stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE)
    d = Daemon(proc, record)
    try:
        yield d
    finally:
        if proc.returncode is None:
            proc.kill()
        await proc.wait()
        with contextlib.suppress(asyncio.CancelledError):
            await d._reader


@pytest.fixture
async def tcp_port() -> AsyncIterator[int]:
    responder = TcpResponder(ImpairmentTable())
    await responder.start()
    yield responder.port
    await responder.aclose()


async def scrape(port: int) -> str:
    async with aiohttp.ClientSession() as s, s.get(f"http://127.0.0.1:{port}/metrics") as r:
        return await r.text()


def metric(text: str, name: str, **labels: str) -> float | None:
    for line in text.splitlines():
        if not line.startswith(name + "{"):
            continue
        if all(f'{k}="{v}"' in line for k, v in labels.items()):
            return float(line.rsplit(" ", 1)[1])
    return None


async def test_metrics_record_reload_and_clean_stop(tmp_path: Path, tcp_port: int) -> None:
    cfg = tmp_path / "agent.yaml"
    cfg.write_text(config(icmp("lo-icmp", "127.0.0.1") + tcp("lo-tcp", tcp_port)))
    mport = free_port()
    async with daemon(cfg, "--metrics", f"127.0.0.1:{mport}") as d:
        def window_full() -> bool:
            return sum(1 for r in d.records() if r["target"] == "lo-icmp"
                       and r["link"] == "cn2") >= 12

        await d.until("a full window", window_full)
        text = await scrape(mport)
        path = {"node": "hk-1", "link": "cn2", "target": "lo-icmp", "kind": "icmp"}
        sent = metric(text, "edgesteer_probes_sent_total", **path)
        assert sent is not None and sent >= 10
        assert metric(text, "edgesteer_path_loss_ratio", **path) == 0.0
        p50 = metric(text, "edgesteer_path_rtt_seconds", quantile="0.5", **path)
        assert p50 is not None and 0 < p50 < 0.1
        assert metric(text, "edgesteer_path_jitter_seconds", **path) is not None
        assert metric(text, "edgesteer_probes_sent_total", target="lo-tcp",
                      link="pccw") is not None
        # the window spans 10 intervals and holds at least 10 samples; a probe slowed past
        # its overdue time on a busy box (probes/agent.py) pulls extra samples into the span
        samples = metric(text, "edgesteer_path_window_samples", **path)
        assert samples is not None and 10.0 <= samples <= 80.0, samples

        rec = d.records()[0]
        assert set(rec) >= {"t", "node", "link", "target", "kind", "ok", "rtt_s", "error"}
        assert rec["ok"] is True and isinstance(rec["rtt_s"], float)

        # reload: drop the tcp target, add one; the unchanged path keeps its window
        cfg.write_text(config(icmp("lo-icmp", "127.0.0.1") + icmp("lo-two", "127.0.0.2")))
        assert d.proc.pid
        os.kill(d.proc.pid, signal.SIGHUP)
        await d.until("reload", lambda: d.logged("reloaded"))
        await d.until("new target probed", lambda: any(r["target"] == "lo-two"
                                                       for r in d.records()))
        text = await scrape(mport)
        assert metric(text, "edgesteer_probes_sent_total", target="lo-tcp") is None
        kept = metric(text, "edgesteer_path_window_samples", **path)  # not restarted
        assert kept is not None and kept >= 10.0, kept

        # a bad config is refused, the running one stays
        cfg.write_text(config(icmp("lo-icmp", "127.0.0.1")).replace("priority: 2",
                                                                  "priority: many"))
        before = len(d.records())
        os.kill(d.proc.pid, signal.SIGHUP)
        await d.until("refusal", lambda: d.logged("reload refused"))
        assert d.logged("priority")
        await d.until("still probing", lambda: any(
            r["target"] == "lo-two" for r in d.records()[before:]))
        assert await d.stop() == 0
    assert d.logged("stopped")


async def test_bad_metrics_address_and_bad_config_exit_2(tmp_path: Path) -> None:
    cfg = tmp_path / "agent.yaml"
    cfg.write_text(config(icmp("lo-icmp", "127.0.0.1")))
    async with daemon(cfg, "--metrics", "nohostport") as d:
        assert await d.stop(signal_it=False) == 2
    assert d.logged("--metrics")
    cfg.write_text("version: 1\n")
    async with daemon(cfg) as d:
        assert await d.stop(signal_it=False) == 2


# ------------------------------------------------------------- bad input, per path


@contextlib.contextmanager
def lab_ns() -> Iterator[Netns]:
    require(IS_ROOT, "network namespaces need root")
    ns = Netns.create("esa")
    try:
        ns.set_resolver("127.0.0.1")  # nothing listens there: names fail inside the ns
        ns.exec("ip", "addr", "add", "127.0.1.1/8", "dev", "lo")
        yield ns
    finally:
        ns.delete()


async def test_each_bad_path_fails_alone_with_a_clear_error() -> None:
    with lab_ns() as ns, tempfile.TemporaryDirectory() as tmp:
        links = ("  - {name: ghostlink, priority: 3, source: 192.0.2.55, "
                 "answers: {v4: [203.0.113.30]}}\n")
        targets = (icmp("good", "127.0.0.1", "cn2")
                   + icmp("ghost", "ghost.example.invalid", "cn2")
                   + icmp("typo", "300.1.2.3", "cn2")
                   + icmp("far", "127.0.0.1", "ghostlink"))
        cfg = Path(tmp) / "agent.yaml"
        cfg.write_text(config(targets, links))
        async with daemon(cfg, prefix=("ip", "netns", "exec", ns.name)) as d:
            def good_count() -> int:
                return sum(1 for r in d.records() if r["target"] == "good" and r["ok"])

            await d.until("every bad path reported", lambda: all(
                d.logged(p) for p in ("hk-1/cn2/ghost", "hk-1/cn2/typo", "hk-1/ghostlink/far")))
            seen = good_count()
            await d.until("good path keeps going", lambda: good_count() >= seen + 5)
            assert await d.stop() == 0
            failed = {r["target"] for r in d.records() if not r["ok"]}
    assert failed == {"ghost", "typo", "far"}
    log = "".join(d.log)
    assert re.search(r"hk-1/cn2/ghost \(icmp\) failing: error: name resolution failed", log)
    assert re.search(r"hk-1/cn2/typo \(icmp\) failing: error: invalid address '300.1.2.3'", log)
    assert re.search(r"hk-1/ghostlink/far \(icmp\) failing: error: cannot bind source "
                     r"192.0.2.55 for link 'ghostlink'", log)


async def test_no_icmp_socket_is_a_permission_error_while_tcp_keeps_running() -> None:
    require_binary("setpriv", "util-linux")
    with lab_ns() as ns, tempfile.TemporaryDirectory() as tmp:
        ns.sysctl("net.ipv4.ping_group_range", "1 0")  # no gid may use ICMP datagram sockets
        port = free_port()
        server = ns.popen([sys.executable, "-c", (
            f"import socket\ns=socket.socket();s.bind(('127.0.0.1',{port}));s.listen(64)\n"
            "print('ready',flush=True)\nwhile True: s.accept()[0].close()")])
        try:
            assert server.stdout is not None and server.stdout.readline().startswith("ready")
            cfg = Path(tmp) / "agent.yaml"
            cfg.write_text(config(icmp("ping", "127.0.0.1", "cn2") + tcp("knock", port)
                                  .replace("timeout: 0.3}", "timeout: 0.3, links: [cn2]}")))
            no_raw = ("setpriv", "--bounding-set=-net_raw")  # root, but without CAP_NET_RAW
            async with daemon(cfg, prefix=("ip", "netns", "exec", ns.name, *no_raw)) as d:
                def knocks() -> int:
                    return sum(1 for r in d.records() if r["target"] == "knock" and r["ok"])

                await d.until("icmp refused", lambda: d.logged("hk-1/cn2/ping"))
                await d.until("tcp going", lambda: knocks() >= 5)
                assert await d.stop() == 0
        finally:
            server.kill()
            server.wait()
            if server.stdout is not None:
                server.stdout.close()
    log = "".join(d.log)
    assert re.search(r"hk-1/cn2/ping \(icmp\) failing: permission: no ICMP socket allowed", log)
    assert "CAP_NET_RAW" in log and "net.ipv4.ping_group_range" in log
