"""``edgesteer probe``: one-shot probes against loopback responders, text and --json."""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from edge.cli import main
from edge.commands.probe import to_line
from edge.lab.responders import (
    DnsResponder,
    HttpResponder,
    Impairment,
    ImpairmentTable,
    TcpResponder,
)
from probes.measurement import PathKey, ProbeError, ProbeKind, Sample
from probes.window import Window

RTT_KEYS = {"min", "p50", "p95", "p99", "max", "mean"}
KEYS = {"target", "kind", "sent", "received", "loss", "rtt_ms", "jitter_ms", "errors"}


async def probe(*args: str) -> tuple[int, str, str]:
    """Run the command in a worker thread (its own event loop), output captured."""
    out, err = io.StringIO(), io.StringIO()

    def call() -> int:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            return main(["probe", *args])

    code = await asyncio.to_thread(call)
    return code, out.getvalue(), err.getvalue()


async def probe_process(*args: str) -> tuple[int, str, str]:
    """The real entry point, ``python -m edge probe``."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "edge", "probe", *args,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    out, err = await proc.communicate()
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


async def probe_json(*args: str) -> tuple[int, list[dict[str, Any]]]:
    code, out, err = await probe(*args, "--json")
    assert code in (0, 1), err
    rows = [json.loads(line) for line in out.splitlines()]
    for row in rows:
        assert set(row) == KEYS and set(row["rtt_ms"]) == RTT_KEYS
    return code, rows


@pytest.fixture
def table() -> ImpairmentTable:
    t = ImpairmentTable(seed=3)
    t.set("127.0.1.1", Impairment(delay_ms=40))
    return t


@pytest.fixture
async def http(table: ImpairmentTable) -> AsyncIterator[HttpResponder]:
    r = HttpResponder(table)
    await r.start()
    yield r
    await r.aclose()


async def test_icmp_json_per_target() -> None:
    code, rows = await probe_json("--kind", "icmp", "127.0.0.1", "127.0.0.2", "--count", "4",
                                  "--interval", "0.02")
    assert code == 0
    assert [r["target"] for r in rows] == ["127.0.0.1", "127.0.0.2"]
    for r in rows:
        assert (r["kind"], r["sent"], r["received"], r["loss"]) == ("icmp", 4, 4, 0.0)
        assert 0 < r["rtt_ms"]["min"] <= r["rtt_ms"]["p50"] <= r["rtt_ms"]["max"] < 100
        assert r["errors"] == {}


async def test_text_line_is_fping_like() -> None:
    code, out, _ = await probe_process("--kind", "icmp", "127.0.0.1", "--count", "2",
                                       "--interval", "0.02")
    assert code == 0
    assert out.startswith("127.0.0.1 : xmt/rcv/%loss = 2/2/0%, min/p50/avg/p95/max = ")
    assert out.rstrip().endswith(" ms")


def test_failure_line_names_the_reason() -> None:
    m = Window(2)
    key = PathKey("cli", "default", "origin")
    m.add(Sample(key, ProbeKind.HTTP, 1.0, False, None,
                 error=ProbeError("bad_status", "status 500, expected 200")))
    line = to_line(m.measurement(key, ProbeKind.HTTP, 2.0), 6)
    assert line == ("origin : xmt/rcv/%loss = 1/0/100%  [bad_status 1] last: bad_status: "
                    "status 500, expected 200")


async def test_http_delay_is_measured_and_500_is_a_failure_with_its_reason(
    http: HttpResponder,
) -> None:
    code, rows = await probe_json("--kind", "http", f"http://127.0.0.1:{http.port}/x",
                                  "--source", "127.0.1.1", "--count", "5", "--interval", "0.02")
    assert code == 0
    (row,) = rows
    assert row["received"] == 5 and 40 <= row["rtt_ms"]["p50"] < 60
    http.status = 500
    code, rows = await probe_json("--kind", "http", f"127.0.0.1:{http.port}", "--count", "3",
                                  "--interval", "0.02")
    assert code == 1
    assert rows[0]["errors"] == {"bad_status": 3} and rows[0]["loss"] == 1.0
    assert rows[0]["rtt_ms"]["p50"] is None


async def test_dns_with_server_and_name(table: ImpairmentTable) -> None:
    dns_r = DnsResponder(table)
    await dns_r.start()
    try:
        code, rows = await probe_json("--kind", "dns", "--server", f"127.0.0.1:{dns_r.port}",
                                      "--name", "example.hk", "pop", "--count", "3",
                                      "--interval", "0.02", "--source", "127.0.1.1")
    finally:
        await dns_r.aclose()
    assert code == 0
    assert rows[0]["target"] == "pop" and rows[0]["received"] == 3
    assert 40 <= rows[0]["rtt_ms"]["p50"] < 60
    assert sum(dns_r.queries.values()) == 3


async def test_tcp_over_a_link_of_a_config(tmp_path: Path) -> None:
    cfg = tmp_path / "c.yaml"
    good = Path(__file__).parent / "config" / "good-minimal.yaml"
    link = "  - name: cn2\n    priority: 1\n"
    cfg.write_text(good.read_text().replace(link, link + "    source: 127.0.1.1\n"))
    tcp_r = TcpResponder(ImpairmentTable())
    await tcp_r.start()
    try:
        code, rows = await probe_json("--kind", "tcp", f"127.0.0.1:{tcp_r.port}", "--link",
                                      "cn2", "--config", str(cfg), "--count", "2",
                                      "--interval", "0.02")
        await asyncio.sleep(0.05)
    finally:
        await tcp_r.aclose()
    assert code == 0 and rows[0]["received"] == 2
    assert set(tcp_r.connections) == {"127.0.1.1"}  # left from the link's source


def test_unknown_link_names_the_links(capsys: pytest.CaptureFixture[str]) -> None:
    cfg = Path(__file__).parent / "config" / "good-minimal.yaml"
    assert main(["probe", "--kind", "tcp", "127.0.0.1:9", "--link", "nope", "--config",
                 str(cfg)]) == 2
    err = capsys.readouterr().err
    assert "'nope' is not a link" in err and "cn2, pccw" in err


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("--kind", "tcp", "127.0.0.1"), "expected HOST:PORT"),
        (("--kind", "tcp", "127.0.0.1:99999"), "port must be"),
        (("--kind", "icmp", "127.0.0.1", "--count", "0"), "--count"),
        (("--kind", "icmp", "127.0.0.1", "--link", "cn2"), "go together"),
        (("--kind", "http", "ftp://127.0.0.1/"), "http(s)://"),
    ],
)
def test_usage_errors_exit_2(args: tuple[str, ...], message: str,
                             capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["probe", *args]) == 2  # refused before anything is sent
    assert message in capsys.readouterr().err


async def test_refused_and_invalid_are_reported_per_target() -> None:
    code, rows = await probe_json("--kind", "tcp", "127.0.0.1:1", "300.1.1.1:80", "--count",
                                  "2", "--interval", "0.02")
    assert code == 1
    assert rows[0]["errors"] == {"refused": 2}
    assert rows[1]["errors"] == {"error": 2}
