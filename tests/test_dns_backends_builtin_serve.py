"""``edgesteer serve`` as a real subprocess: answers, workers, metrics, logs, clean stops."""

from __future__ import annotations

import signal
import socket
import subprocess
import sys
import urllib.request
from collections import Counter
from pathlib import Path

import dns.edns
import dns.message
import dns.query
import dns.rcode
import pytest

from tests.conftest import free_port
from tests.servers_dns_peers import (
    LOCAL_ANSWER,
    MAIN_ANSWER,
    ROOT,
    ServeProcess,
    write_serve_config,
)


def values(r: dns.message.Message) -> set[str]:
    return {rd.to_text() for rrset in r.answer for rd in rrset}


def metrics(port: int) -> dict[str, float]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as resp:
        text = resp.read().decode()
    out = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            name, _, value = line.rpartition(" ")
            out[name] = float(value)
    return out


def test_serve_answers_from_the_config_plan_and_stops_on_sigterm(tmp_path: Path) -> None:
    config = write_serve_config(tmp_path)
    port, mport = free_port(), free_port()
    srv = ServeProcess(config, "--listen", f"127.0.0.1:{port}", "--metrics",
                       f"127.0.0.1:{mport}", "--query-log-sample", "1", log=tmp_path / "err")
    with srv:
        assert f"127.0.0.1:{port}" in srv.banner and "plan v1" in srv.banner
        local = dns.query.udp(dns.message.make_query("www.example.hk", "A"), "127.0.0.1",
                              port=port, timeout=2)
        assert values(local) == LOCAL_ANSWER  # 127.0.0.1 is in the "local" segment
        ecs = dns.message.make_query("www.example.hk", "A", use_edns=0, options=[
            dns.edns.ECSOption.from_text("10.1.2.0/24")])
        main = dns.query.tcp(ecs, "127.0.0.1", port=port, timeout=2)
        assert values(main) == MAIN_ANSWER
        (option,) = main.options
        assert isinstance(option, dns.edns.ECSOption) and option.scopelen == 16
        nx = dns.query.udp(dns.message.make_query("nope.example.hk", "A"), "127.0.0.1",
                           port=port, timeout=2)
        assert nx.rcode() == dns.rcode.NXDOMAIN
        m = metrics(mport)
        assert m['edgesteer_dns_responses_total{rcode="NOERROR"}'] == 2
        assert m['edgesteer_dns_responses_total{rcode="NXDOMAIN"}'] == 1
        assert m['edgesteer_dns_queries_by_segment_total{segment="local"}'] == 1
        assert m['edgesteer_dns_queries_by_qtype_total{qtype="A"}'] == 3
        assert m["edgesteer_dns_plan_version"] == 1
        assert m["edgesteer_dns_answer_seconds_count"] == 3
        srv.signal(signal.SIGTERM)
        assert srv.wait() == 0
    log = srv.stderr()
    assert "client=127.0.0.0/24 proto=udp q=www.example.hk. A rcode=NOERROR" in log
    assert "127.0.0.1 " not in log.replace("127.0.0.1 port", "")  # no full client address
    assert "Traceback" not in log


def test_workers_share_the_port_and_sum_their_metrics(tmp_path: Path) -> None:
    config = write_serve_config(tmp_path)
    port, mport = free_port(), free_port()
    srv = ServeProcess(config, "--listen", f"127.0.0.1:{port}", "--workers", "2",
                       "--metrics", f"127.0.0.1:{mport}", log=tmp_path / "err")
    with srv:
        assert "2 worker(s)" in srv.banner
        got: Counter[str] = Counter()
        for _ in range(60):  # new source port each time: the kernel spreads them
            r = dns.query.udp(dns.message.make_query("www.example.hk", "A"), "127.0.0.1",
                              port=port, timeout=2)
            got.update(values(r))
        assert set(got) == LOCAL_ANSWER and got.total() == 60
        for _ in range(100):  # both workers report at least once a second
            m = metrics(mport)
            if (m.get("edgesteer_dns_workers") == 2
                    and m.get('edgesteer_dns_responses_total{rcode="NOERROR"}') == 60):
                break
            subprocess.run(["sleep", "0.1"], check=True)
        assert m["edgesteer_dns_workers"] == 2
        assert m['edgesteer_dns_responses_total{rcode="NOERROR"}'] == 60
        children = _children(srv)
        assert len(children) == 2
        srv.signal(signal.SIGINT)
        assert srv.wait() == 0
    assert all(not Path(f"/proc/{pid}").exists() for pid in children)
    assert "Traceback" not in srv.stderr()


def _children(srv: ServeProcess) -> list[int]:
    assert srv.proc is not None
    out = subprocess.run(["ps", "-o", "pid=", "--ppid", str(srv.proc.pid)],
                         capture_output=True, text=True, check=False).stdout
    return [int(p) for p in out.split()]


def test_rrl_drops_and_slips_over_the_limit(tmp_path: Path) -> None:
    config = write_serve_config(tmp_path)
    port = free_port()
    with ServeProcess(config, "--listen", f"127.0.0.1:{port}", "--rrl-rate", "5",
                      "--rrl-slip", "2", log=tmp_path / "err"):
        q = dns.message.make_query("www.example.hk", "A")
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            sock.settimeout(0.3)
            for _ in range(40):
                sock.sendto(q.to_wire(), ("127.0.0.1", port))
            replies = []
            while True:
                try:
                    replies.append(dns.message.from_wire(sock.recv(4096)))
                except TimeoutError:
                    break
        full = [r for r in replies if r.answer]
        slipped = [r for r in replies if r.flags & dns.flags.TC and not r.answer]
        # the burst of 5, plus what refills at 5/s while the 40 arrive (slack for a slow box)
        assert 5 <= len(full) <= 15
        over = 40 - len(full)
        assert over // 2 - 1 <= len(slipped) <= over // 2 + 1  # every 2nd over the limit
        assert len(replies) == len(full) + len(slipped)  # the rest were dropped
        assert all(r.question[0].name.to_text() == "www.example.hk." for r in slipped)
        over_tcp = dns.query.tcp(q, "127.0.0.1", port=port, timeout=2)  # TCP is not limited
        assert values(over_tcp) == LOCAL_ANSWER


@pytest.mark.parametrize("argv, message", [
    (["--workers", "2", "--listen", "127.0.0.1:0"], "fixed ports"),
    (["--workers", "0"], "--workers 0"),
    (["--listen", "nonsense"], "HOST:PORT"),
    (["--follow"], "--follow needs guard.state_dir"),
    (["--state-dir", "/tmp"], "--state-dir goes with --follow"),
    (["--follow", "--state-dir", "/tmp", "--follow-interval", "0"], "--follow-interval"),
])
def test_bad_arguments_exit_2(tmp_path: Path, argv: list[str], message: str) -> None:
    config = write_serve_config(tmp_path)
    done = subprocess.run([sys.executable, "-m", "edge", "serve", "--config", str(config),
                           *argv], capture_output=True, text=True, cwd=ROOT, timeout=60)
    assert done.returncode == 2 and message in done.stderr


def test_a_taken_port_exits_1(tmp_path: Path) -> None:
    config = write_serve_config(tmp_path)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as busy:
        busy.bind(("127.0.0.1", 0))
        port = busy.getsockname()[1]
        done = subprocess.run([sys.executable, "-m", "edge", "serve", str(config), "--listen",
                               f"127.0.0.1:{port}"], capture_output=True, text=True, cwd=ROOT,
                              timeout=60)
    assert done.returncode == 1 and "edgesteer serve:" in done.stderr


def test_workers_do_not_outlive_a_killed_supervisor(tmp_path: Path) -> None:
    config = write_serve_config(tmp_path)
    port = free_port()
    srv = ServeProcess(config, "--listen", f"127.0.0.1:{port}", "--workers", "2",
                       log=tmp_path / "err")
    with srv:
        children = _children(srv)
        assert len(children) == 2
        srv.signal(signal.SIGKILL)
        srv.wait()
        for _ in range(100):
            if not any(Path(f"/proc/{pid}").exists() and _state(pid) != "Z"
                       for pid in children):
                break
            subprocess.run(["sleep", "0.05"], check=True)
        assert not any(Path(f"/proc/{pid}").exists() and _state(pid) != "Z"
                       for pid in children)


def _state(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[0]
    except OSError:
        return "gone"


def test_the_systemd_unit_runs_serve_with_only_the_bind_capability() -> None:
    unit = (ROOT / "deploy" / "systemd" / "edgesteer-serve.service").read_text()
    lines = dict(line.split("=", 1) for line in unit.replace("\\\n", " ").splitlines()
                 if "=" in line and not line.startswith("#"))
    assert lines["AmbientCapabilities"] == "CAP_NET_BIND_SERVICE"
    assert lines["CapabilityBoundingSet"] == "CAP_NET_BIND_SERVICE"
    assert lines["User"] == "edgesteer" and lines["NoNewPrivileges"] == "yes"
    argv = lines["ExecStart"].split()
    assert argv[1] == "serve"
    from edge.cli import build_parser

    args = build_parser().parse_args(argv[1:])  # every option of the unit exists
    assert args.workers == 2 and args.listen == ["0.0.0.0:53", "[::]:53"]
