"""Real DNS servers as subprocesses on loopback: ``edgesteer serve`` and its peers.

``ServeProcess`` runs ``python -m edge serve`` and waits for the line it prints when it
serves. ``Gdnsd`` and ``PdnsLua`` run the peers of the benchmark (bench/dns_qps.sh) with
the same weighted record: gdnsd's ``weighted`` plugin and a PowerDNS LUA ``pickwrandom``
record (sqlite3 backend, ``enable-lua-records=shared``). Every server is configured so
that it never calls out (no security polling, no recursion) and listens on 127.0.0.1 only.
"""

from __future__ import annotations

import os
import select
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path
from types import TracebackType

import dns.message
import dns.query
import dns.rcode

ROOT = Path(__file__).resolve().parent.parent

# A small config: two links, a segment for loopback clients and one for 10.1.0.0/16.
SERVE_CONFIG = """\
version: 1
node: {name: hk-1, site: hk}
sites:
  - name: hk
links:
  - name: cn2
    priority: 1
    answers: {v4: [203.0.113.10, 203.0.113.11], v6: ["2001:db8:10::10"]}
  - name: pccw
    priority: 2
    answers: {v4: [198.51.100.20]}
targets:
  - name: pop
    kind: http
    host: 127.0.0.1
zones:
  - name: example.hk
    ns: [ns1.example.hk]
    ns_addresses: {ns1.example.hk: [127.0.0.1]}
segments:
  - name: local
    cidrs: [127.0.0.0/8]
  - name: testnet
    cidrs: [10.1.0.0/16]
services:
  - name: www.example.hk
    pools:
      - name: main
        endpoints: [{link: cn2}]
      - name: backup
        endpoints: [{link: pccw}]
policies:
  - service: www.example.hk
    rules:
      - {segment: local, pools: [backup]}
      - {segment: testnet, pools: [main]}
"""
LOCAL_ANSWER = {"198.51.100.20"}  # what 127.0.0.0/8 gets
MAIN_ANSWER = {"203.0.113.10", "203.0.113.11"}  # what everyone else gets


def write_serve_config(directory: Path) -> Path:
    path = directory / "serve.yaml"
    path.write_text(SERVE_CONFIG)
    return path


def wait_for_dns(host: str, port: int, qname: str = "example.hk", *,
                 timeout: float = 15.0) -> None:
    """Until ``qname SOA`` gets any answer over UDP (the server is up)."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            dns.query.udp(dns.message.make_query(qname, "SOA"), host, port=port, timeout=0.3)
            return
        except Exception:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)


class ServeProcess:
    """``edgesteer serve`` in a subprocess; ``with`` starts it and stops it with SIGTERM."""

    def __init__(self, config: Path, *args: str, log: Path) -> None:
        self.argv = [sys.executable, "-m", "edge", "serve", "--config", str(config), *args]
        self.log = log
        self.proc: subprocess.Popen[bytes] | None = None
        self.banner = ""

    def start(self, timeout: float = 20.0) -> ServeProcess:
        with self.log.open("wb") as err:
            self.proc = subprocess.Popen(self.argv, stdout=subprocess.PIPE, stderr=err,
                                         cwd=ROOT)
        assert self.proc.stdout is not None
        deadline = time.monotonic() + timeout
        line = b""
        while not line.endswith(b"\n"):
            left = deadline - time.monotonic()
            ready, _, _ = select.select([self.proc.stdout], [], [], max(left, 0))
            if not ready:
                self.stop()
                raise TimeoutError(f"edgesteer serve did not start: {self.stderr()}")
            chunk = os.read(self.proc.stdout.fileno(), 1)
            if not chunk:
                self.stop()
                raise RuntimeError(f"edgesteer serve exited: {self.stderr()}")
            line += chunk
        self.banner = line.decode()
        return self

    def stderr(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""

    def signal(self, sig: int) -> None:
        assert self.proc is not None
        self.proc.send_signal(sig)

    def wait(self, timeout: float = 15.0) -> int:
        assert self.proc is not None
        return self.proc.wait(timeout)

    def stop(self) -> int | None:
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if self.proc.stdout is not None:
            self.proc.stdout.close()
        return self.proc.returncode

    def __enter__(self) -> ServeProcess:
        return self.start()

    def __exit__(self, et: type[BaseException] | None, ev: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()


# -- peers for the benchmark ------------------------------------------------------------

# The same weighted record everywhere: www.example.hk A, 203.0.113.10 (weight 3) and
# 198.51.100.20 (weight 1), TTL 60, one answer per response.
WEIGHTS = (("203.0.113.10", 3), ("198.51.100.20", 1))


def _sbin(name: str) -> str | None:
    return shutil.which(name) or next(
        (p for p in (f"/usr/sbin/{name}", f"/sbin/{name}") if os.path.exists(p)), None)


class _Daemon:
    argv: list[str]

    def __init__(self, workdir: Path, port: int) -> None:
        self.dir = workdir
        self.port = port
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        with (self.dir / "daemon.log").open("wb") as out:
            self.proc = subprocess.Popen(self.argv, stdout=out, stderr=subprocess.STDOUT,
                                         cwd=self.dir)
        try:
            wait_for_dns("127.0.0.1", self.port, "example.hk")
        except Exception as exc:
            self.stop()
            raise RuntimeError(f"{self.argv[0]} did not start:\n"
                               + (self.dir / "daemon.log").read_text(errors="replace")) from exc

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid


class Gdnsd(_Daemon):
    """gdnsd 3 with the weighted plugin, foreground, on 127.0.0.1:port."""

    def __init__(self, workdir: Path, port: int, binary: str = "gdnsd") -> None:
        super().__init__(workdir, port)
        config = workdir / "etc"
        (config / "zones").mkdir(parents=True, exist_ok=True)
        (workdir / "run").mkdir(exist_ok=True)
        (workdir / "state").mkdir(exist_ok=True)
        weighted = "\n".join(f"        a{i} = [ {ip}, {w} ]" for i, (ip, w) in enumerate(WEIGHTS))
        (config / "config").write_text(f"""\
options => {{
  listen => [ 127.0.0.1:{port} ]
  zones_default_ttl = 60
  udp_threads = 1
  tcp_threads = 1
}}
plugins => {{
  weighted => {{
    multi = false
    www => {{
{weighted}
    }}
  }}
}}
""")
        (config / "zones" / "example.hk").write_text("""\
$TTL 3600
@ SOA ns1 hostmaster 1 3600 600 604800 60
@ NS ns1
ns1 A 127.0.0.1
www 60 DYNA weighted!www
""")
        self.argv = [_sbin(binary) or binary, "-c", str(config), "-D", "start"]


class PdnsLua(_Daemon):
    """PowerDNS Authoritative (sqlite3 backend) with a LUA pickwrandom record."""

    def __init__(self, workdir: Path, port: int, *, shared: bool = True) -> None:
        super().__init__(workdir, port)
        db = workdir / "pdns.sqlite3"
        schema = Path("/usr/share/pdns-backend-sqlite3/schema/schema.sqlite3.sql").read_text()
        choices = ", ".join(f"{{{w}, '{ip}'}}" for ip, w in WEIGHTS)
        with sqlite3.connect(db) as conn:
            conn.executescript(schema)
            conn.execute("INSERT INTO domains (name, type) VALUES ('example.hk', 'NATIVE')")
            rows = [
                ("example.hk", "SOA", "ns1.example.hk. hostmaster.example.hk. 1 3600 600 "
                 "604800 60", 3600),
                ("example.hk", "NS", "ns1.example.hk.", 3600),
                ("ns1.example.hk", "A", "127.0.0.1", 3600),
                ("www.example.hk", "LUA", f"A \"pickwrandom({{{choices}}})\"", 60),
            ]
            conn.executemany("INSERT INTO records (domain_id, name, type, content, ttl) "
                             "VALUES (1, ?, ?, ?, ?)", rows)
        conf = workdir / "pdns.conf"
        conf.write_text(f"""\
launch=gsqlite3
gsqlite3-database={db}
local-address=127.0.0.1
local-port={port}
security-poll-suffix=
enable-lua-records={'shared' if shared else 'yes'}
socket-dir={workdir}
guardian=no
daemon=no
disable-syslog=yes
loglevel=3
receiver-threads=1
distributor-threads=1
webserver=no
api=no
""")
        self.argv = [_sbin("pdns_server") or "pdns_server", f"--config-dir={workdir}"]


def answered_noerror(host: str, port: int, qname: str) -> bool:
    r = dns.query.udp(dns.message.make_query(qname, "A"), host, port=port, timeout=1.0)
    return r.rcode() == dns.rcode.NOERROR and bool(r.answer)
