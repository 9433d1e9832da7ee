"""Real authoritative servers for the backend tests: BIND 9, Knot DNS and PowerDNS.

Each is started on a free loopback port with a generated config and TSIG key, recursion
off and nothing pointed at any outside resolver; ``stop()`` / ``start()`` let a test take it
down and bring it back on the same port with the same data.
"""

from __future__ import annotations

import base64
import os
import secrets
import shutil
import signal
import socket
import sqlite3
import subprocess
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType

import dns.exception
import dns.message
import dns.query
import dns.rcode
import dns.rdatatype

from dns_backends.reconcile import RetryPolicy
from dns_backends.rfc2136 import TsigKey
from edge.config.schema import Service, Zone
from edge.plan import AnswerSet, Plan, RRType, WeightedAnswer
from tests.builders import endpoint, pool, service
from tests.conftest import free_port, require_binary

ZONE = "example.hk"


def new_key(name: str = "edgesteer", algorithm: str = "hmac-sha256") -> TsigKey:
    return TsigKey(name, algorithm, base64.b64encode(secrets.token_bytes(32)).decode())


def zone_text(origin: str = ZONE, serial: int = 1, extra: str = "") -> str:
    """A small zone with an unmanaged record (``other``) that must never be touched."""
    return (f"$ORIGIN {origin}.\n$TTL 3600\n"
            f"@ IN SOA ns1.{origin}. hostmaster.{origin}. {serial} 3600 600 604800 60\n"
            f"@ IN NS ns1.{origin}.\nns1 IN A 127.0.0.1\nother IN A 192.0.2.99\n" + extra)


def _binary(name: str, package: str) -> str:
    found = shutil.which(name) or (f"/usr/sbin/{name}" if os.access(f"/usr/sbin/{name}",
                                                                     os.X_OK) else None)
    return found if found is not None else require_binary(name, package)


@dataclass
class ServerProcess:
    """A server process we started; ``argv`` restarts it the same way."""

    kind: str
    argv: list[str]
    workdir: Path
    port: int
    host: str = "127.0.0.1"
    log: Path | None = None
    ready: Callable[[], bool] | None = None
    proc: subprocess.Popen[bytes] | None = None
    extra: dict[str, object] = field(default_factory=dict)

    def start(self, timeout: float = 20.0) -> None:
        assert self.proc is None
        out = open(self.log or self.workdir / "server.log", "ab")  # noqa: SIM115
        try:
            self.proc = subprocess.Popen(self.argv, cwd=self.workdir, stdout=out,
                                         stderr=subprocess.STDOUT, start_new_session=True)
        finally:
            out.close()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.kind} exited with {self.proc.returncode}:\n"
                                   + self.log_tail())
            if self.ready is not None and self.ready():
                return
            time.sleep(0.05)
        raise RuntimeError(f"{self.kind} not ready within {timeout}s:\n" + self.log_tail())

    def stop(self) -> None:
        proc, self.proc = self.proc, None
        if proc is None or proc.poll() is not None:
            return
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)

    def log_tail(self, n: int = 40) -> str:
        path = self.log or self.workdir / "server.log"
        return "\n".join(path.read_text(errors="replace").splitlines()[-n:]) \
            if path.exists() else ""


def soa_ready(host: str, port: int, zone: str = ZONE,
              key: TsigKey | None = None) -> Callable[[], bool]:
    def check() -> bool:
        q = dns.message.make_query(zone, dns.rdatatype.SOA)
        if key is not None:
            q.use_tsig(key.keyring, key.dns_name, algorithm=key.wire_algorithm)
        try:
            r = dns.query.tcp(q, host, timeout=0.5, port=port)
        except (OSError, EOFError, dns.exception.DNSException):
            return False
        return r.rcode() == dns.rcode.NOERROR and bool(r.answer)
    return check


# BIND ---------------------------------------------------------------------------------------

def bind_key_conf(key: TsigKey) -> str:
    return f'key "{key.name}" {{ algorithm {key.algorithm}; secret "{key.secret}"; }};\n'


def start_named(workdir: Path, body: str, files: dict[str, str], keys: Sequence[TsigKey],
                ready_key: TsigKey | None = None, zone: str = ZONE) -> ServerProcess:
    """named with ``body`` (zones or views) after generated options and the key clauses."""
    named = _binary("named", "bind9")
    port = free_port()
    workdir.mkdir(parents=True, exist_ok=True)
    for name, text in files.items():
        (workdir / name).write_text(text)
    conf = (f'options {{\n  directory "{workdir}";\n  pid-file "{workdir}/named.pid";\n'
            f'  session-keyfile "{workdir}/session.key";\n'
            f'  managed-keys-directory "{workdir}";\n'
            f"  listen-on port {port} {{ 127.0.0.1; }};\n  listen-on-v6 {{ none; }};\n"
            "  recursion no;\n  notify no;\n  dnssec-validation no;\n"
            "  allow-query { any; };\n  minimal-responses yes;\n};\n"
            "controls { };\n" + "".join(bind_key_conf(k) for k in keys) + body)
    (workdir / "named.conf").write_text(conf)
    checkconf = shutil.which("named-checkconf") or "/usr/bin/named-checkconf"
    if os.access(checkconf, os.X_OK):
        res = subprocess.run([checkconf, str(workdir / "named.conf")], capture_output=True,
                             text=True, check=False)
        if res.returncode != 0:
            raise RuntimeError(f"named.conf invalid:\n{res.stdout}{res.stderr}\n{conf}")
    server = ServerProcess("named", [named, "-g", "-c", str(workdir / "named.conf")],
                           workdir, port)
    server.ready = soa_ready("127.0.0.1", port, zone, key=ready_key)
    server.start()
    return server


def bind_zone_conf(zone: str, file: str, key: TsigKey) -> str:
    return (f'zone "{zone}" {{ type primary; file "{file}"; '
            f"allow-update {{ key {key.name}; }}; allow-transfer {{ key {key.name}; }}; }};\n")


def start_named_primary(workdir: Path, key: TsigKey) -> ServerProcess:
    """named, primary for ``ZONE`` (the standard test zone), updatable with ``key``."""
    return start_named(workdir, bind_zone_conf(ZONE, f"{ZONE}.zone", key),
                       {f"{ZONE}.zone": zone_text()}, [key])


# Knot ---------------------------------------------------------------------------------------

def start_knot(workdir: Path, key: TsigKey, zone: str = ZONE) -> ServerProcess:
    knotd = _binary("knotd", "knot")
    port = free_port()
    workdir.mkdir(parents=True, exist_ok=True)
    (workdir / "db").mkdir(exist_ok=True)
    (workdir / f"{zone}.zone").write_text(zone_text(zone))
    conf = f"""server:
    rundir: "{workdir}"
    listen: 127.0.0.1@{port}
    pidfile: "{workdir}/knot.pid"
log:
  - target: stderr
    any: info
database:
    storage: "{workdir}/db"
key:
  - id: {key.name}
    algorithm: {key.algorithm}
    secret: {key.secret}
acl:
  - id: edgesteer
    key: {key.name}
    action: [transfer, update]
template:
  - id: default
    storage: "{workdir}"
    file: "%s.zone"
    semantic-checks: off
zone:
  - domain: {zone}
    acl: edgesteer
"""
    (workdir / "knot.conf").write_text(conf)
    server = ServerProcess("knotd", [knotd, "-c", str(workdir / "knot.conf")], workdir, port)
    server.ready = soa_ready("127.0.0.1", port, zone)
    server.start()
    return server


# PowerDNS -----------------------------------------------------------------------------------

PDNS_SCHEMA = Path("/usr/share/pdns-backend-sqlite3/schema/schema.sqlite3.sql")


def _http_ready(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return True
    except OSError:
        return False


def start_pdns(workdir: Path, api_key: str, *, lua: bool = False) -> ServerProcess:
    pdns = _binary("pdns_server", "pdns-server")
    if not PDNS_SCHEMA.exists():
        require_binary("pdns-backend-sqlite3-schema-missing", "pdns-backend-sqlite3")
    workdir.mkdir(parents=True, exist_ok=True)
    db = workdir / "pdns.sqlite3"
    with sqlite3.connect(db) as conn:
        conn.executescript(PDNS_SCHEMA.read_text())
    conn.close()
    port, api_port = free_port(), free_port()
    conf = f"""launch=gsqlite3
gsqlite3-database={db}
local-address=127.0.0.1
local-port={port}
api=yes
api-key={api_key}
webserver=yes
webserver-address=127.0.0.1
webserver-port={api_port}
webserver-allow-from=127.0.0.0/8
security-poll-suffix=
socket-dir={workdir}
guardian=no
daemon=no
disable-syslog=yes
loglevel=4
cache-ttl=0
query-cache-ttl=0
negquery-cache-ttl=0
zone-cache-refresh-interval=0
consistent-backends=yes
enable-lua-records={"yes" if lua else "no"}
edns-subnet-processing=yes
"""
    (workdir / "pdns.conf").write_text(conf)
    server = ServerProcess("pdns_server", [pdns, f"--config-dir={workdir}"], workdir, port)
    server.extra["api_port"] = api_port
    def ready() -> bool:
        if not _http_ready(api_port):
            return False
        try:  # any answer (REFUSED for a zone it lacks) means DNS is up
            dns.query.tcp(dns.message.make_query("example.hk", "SOA"), "127.0.0.1",
                          timeout=0.5, port=port)
        except (OSError, EOFError, dns.exception.DNSException):
            return False
        return True

    server.ready = ready
    server.start()
    return server


# Plans ------------------------------------------------------------------------------------
Answers = Iterable[tuple[RRType, str, float]]


def zone_config(name: str = ZONE) -> Zone:
    return Zone(name=name, ns=(f"ns1.{name}",), ns_addresses=MappingProxyType(
        {f"ns1.{name}": ("127.0.0.1",)}), soa_mname=f"ns1.{name}", soa_rname=f"hostmaster.{name}",
        soa_refresh=3600, soa_retry=600, soa_expire=604800, soa_minimum=60, ttl=3600)


def services(*names: str, zone: str = "example.hk", max_answers: int = 2) -> list[Service]:
    return [service(n, pool("p", endpoint("l1")), zone=zone, max_answers=max_answers)
            for n in names]


def answer_set(svc: str, segment: str, answers: Answers, ttl: int = 60,
               max_answers: int = 0) -> AnswerSet:
    return AnswerSet(service=svc, segment=segment, ttl=ttl, tier=1, max_answers=max_answers,
                     answers=tuple(WeightedAnswer(t, v, w, "l1", "p", 1) for t, v, w in answers))


def plan(version: int, sets: Mapping[tuple[str, str], Answers], ttl: int = 60) -> Plan:
    return Plan(version=version, answers=MappingProxyType(
        {k: answer_set(k[0], k[1], v, ttl) for k, v in sets.items()}))


def query(host: str, port: int, name: str, rdtype: str = "A", source: str | None = None,
          key: object = None) -> tuple[str, set[str], int]:
    """(rcode text, answer values of that type, ttl) from a real server, over TCP."""
    q = dns.message.make_query(name, rdtype)
    if key is not None:
        q.use_tsig(key.keyring, key.dns_name, algorithm=key.wire_algorithm)  # type: ignore[attr-defined]
    r = dns.query.tcp(q, host, timeout=2, port=port, source=source)
    values: set[str] = set()
    ttl = -1
    for rrset in r.answer:
        if rrset.rdtype == dns.rdatatype.from_text(rdtype):
            values |= {rd.to_text() for rd in rrset}
            ttl = rrset.ttl
    return dns.rcode.to_text(r.rcode()), values, ttl


# The two plans the backend tests push (the same data for every backend kind), and a
# retry policy short enough for tests.
SERVICES = services("www.example.hk", "api.example.hk", "cdn.example.hk")
PLAN1 = plan(1, {
    ("www.example.hk", "default"): [("A", "192.0.2.1", 100), ("A", "192.0.2.2", 50),
                                    ("AAAA", "2001:db8::1", 100)],
    ("api.example.hk", "default"): [("A", "192.0.2.10", 100)],
    ("cdn.example.hk", "default"): [("CNAME", "edge.cdn.example.net", 100)],
})
PLAN2 = plan(2, {
    ("www.example.hk", "default"): [("A", "192.0.2.3", 100)],
    ("api.example.hk", "default"): [("CNAME", "api.cdn.example.net", 100)],
    ("cdn.example.hk", "default"): [("A", "192.0.2.20", 100), ("A", "192.0.2.21", 0)],
})
FAST = RetryPolicy(attempts=3, backoff_s=0.02, max_backoff_s=0.1)
