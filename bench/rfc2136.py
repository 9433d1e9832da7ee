"""Apply N record changes to BIND (RFC 2136) and PowerDNS (HTTP API): ours vs the stock tools.

    .venv/bin/python bench/rfc2136.py [--changes 1000] [--rounds 5] [--only bind|pdns]

Every round changes every one of N names (round 0 creates them, later rounds replace the
address), so each round is N RRset changes.

- BIND: ``edgesteer`` (``SyncBackend`` + ``Rfc2136Store``: read (AXFR, or one SOA query
  when the serial is the one of our last verified state), diff, one TSIG-signed UPDATE
  guarded by the SOA prerequisite, SOA serial check, verify: see "verified" in
  ``dns_backends/rfc2136.py``) against ``nsupdate`` sending the same N delete+add pairs in
  one message (no read, no prerequisite, no verify) to a twin zone on the same ``named``
  in the same run.
- PowerDNS: ``edgesteer`` (read: the zone's serial by ``GET ...?rrsets=false`` when it
  proves the state of our last full GET, else a full GET; diff, one PATCH, full GET to
  verify: see ``known`` in ``dns_backends/powerdns.py``) against ``curl`` sending the same
  N REPLACE rrsets in one PATCH (no read, no verify), to twin zones on one pdns_server.

Prints the median per round and the ratio ours / peer. Loopback only; servers are started
here on free ports and stopped at the end.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import secrets
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from dns_backends.powerdns import PowerDnsStore
from dns_backends.reconcile import SyncBackend
from dns_backends.rfc2136 import Rfc2136Store, TsigKey
from edge.plan import Plan
from tests.servers_dns import (
    bind_zone_conf,
    new_key,
    plan,
    services,
    start_named,
    start_pdns,
    zone_config,
    zone_text,
)

OURS, PEER = "ours.example", "peer.example"


def address(i: int, rnd: int) -> str:
    return f"10.{rnd % 250}.{i // 250}.{i % 250 + 1}"


def round_plan(zone: str, n: int, rnd: int) -> Plan:
    return plan(rnd + 1, {(f"h{i}.{zone}", "default"): [("A", address(i, rnd), 1)]
                          for i in range(n)})


def nsupdate(server: tuple[str, int], key: TsigKey, zone: str, n: int, rnd: int) -> float:
    lines = [f"server {server[0]} {server[1]}", f"zone {zone}"]
    for i in range(n):
        lines.append(f"update delete h{i}.{zone} A")
        lines.append(f"update add h{i}.{zone} 60 A {address(i, rnd)}")
    script = "\n".join([*lines, "send", ""])
    t0 = time.perf_counter()
    res = subprocess.run(["nsupdate", "-v", "-y", f"{key.algorithm}:{key.name}:{key.secret}"],
                         input=script, capture_output=True, text=True, check=False)
    elapsed = time.perf_counter() - t0
    if res.returncode != 0:
        raise RuntimeError(f"nsupdate failed: {res.stderr}")
    return elapsed


def curl_patch(url: str, api_key: str, zone: str, n: int, rnd: int, body_file: Path) -> float:
    rrsets = [{"name": f"h{i}.{zone}.", "type": "A", "ttl": 60, "changetype": "REPLACE",
               "records": [{"content": address(i, rnd), "disabled": False}]} for i in range(n)]
    body_file.write_text(json.dumps({"rrsets": rrsets}))
    t0 = time.perf_counter()
    res = subprocess.run(["curl", "-sS", "-o", "/dev/null", "-w", "%{http_code}", "-X",
                          "PATCH", "-H", f"X-API-Key: {api_key}", "-H",
                          "Content-Type: application/json", "--data-binary", f"@{body_file}",
                          f"{url}/api/v1/servers/localhost/zones/{zone}."],
                         capture_output=True, text=True, check=False)
    elapsed = time.perf_counter() - t0
    if res.stdout != "204":
        raise RuntimeError(f"curl PATCH: HTTP {res.stdout} {res.stderr}")
    return elapsed


async def ours(backend: SyncBackend, zone: str, n: int, rnd: int) -> float:
    p = round_plan(zone, n, rnd)
    t0 = time.perf_counter()
    result = await backend.apply(p)
    elapsed = time.perf_counter() - t0
    if result.changed != n:
        raise RuntimeError(f"expected {n} changes, applied {result.changed}")
    return elapsed


async def noop_passes(backend: SyncBackend, p: Plan, passes: int = 5) -> float:
    """Median time of an apply that finds nothing to change (the daemon's steady state)."""
    times = []
    for _ in range(passes):
        t0 = time.perf_counter()
        result = await backend.apply(p)
        times.append(time.perf_counter() - t0)
        if result.changed:
            raise RuntimeError("a no-op pass changed something")
    return statistics.median(times)


def row(what: str, ours_s: list[float], peer_s: list[float], peer: str) -> str:
    o, p = statistics.median(ours_s), statistics.median(peer_s)
    return (f"| {what} | {o * 1000:.1f} ms | {p * 1000:.1f} ms ({peer}) | {o / p:.2f} |")


async def bench_bind(work: Path, n: int, rounds: int) -> str:
    key = new_key()
    body = "".join(bind_zone_conf(z, f"{z}.zone", key) for z in (OURS, PEER))
    files = {f"{z}.zone": zone_text(z) for z in (OURS, PEER)}
    server = start_named(work / "named", body, files, [key], zone=OURS)
    try:
        store = Rfc2136Store("bind", (server.host, server.port), [OURS],
                             services(*(f"h{i}.{OURS}" for i in range(n)), zone=OURS),
                             key=key, timeout=10.0)
        backend = SyncBackend(store)
        o, p = [], []
        for rnd in range(rounds):
            o.append(await ours(backend, OURS, n, rnd))
            p.append(nsupdate((server.host, server.port), key, PEER, n, rnd))
        idle = await noop_passes(backend, round_plan(OURS, n, rounds - 1))
        return "\n".join([
            row(f"BIND 9: {n} changes, applied + verified ({store.sent['update']} UPDATEs, "
                f"{store.sent['axfr']} AXFR in {rounds} rounds)", o, p,
                "nsupdate, one message, no verify"),
            f"| BIND 9: reconcile pass, {n} names, nothing to change | {idle * 1000:.1f} ms "
            "| - | - |"])
    finally:
        server.stop()


async def bench_pdns(work: Path, n: int, rounds: int) -> str:
    api_key = secrets.token_hex(16)
    server = start_pdns(work / "pdns", api_key)
    url = f"http://127.0.0.1:{server.extra['api_port']}"
    try:
        stores = {z: PowerDnsStore("pdns", url, api_key, [zone_config(z)],
                                   services(*(f"h{i}.{z}" for i in range(n)), zone=z),
                                   create_zones=True, timeout=30.0) for z in (OURS, PEER)}
        backend = SyncBackend(stores[OURS])
        await SyncBackend(stores[PEER]).diff(Plan())  # creates the peer's zone
        await stores[PEER].aclose()
        o, p = [], []
        for rnd in range(rounds):
            o.append(await ours(backend, OURS, n, rnd))
            p.append(curl_patch(url, api_key, PEER, n, rnd, work / "body.json"))
        idle = await noop_passes(backend, round_plan(OURS, n, rounds - 1))
        await backend.aclose()
        store = stores[OURS]
        return "\n".join([
            row(f"PowerDNS 4.7 API: {n} rrsets, applied + verified ({store.requests['GET']} "
                f"GETs, {store.skipped_reads} of them serial-only, in {rounds} rounds + 5 "
                "reconcile passes)", o, p, "curl PATCH, no verify"),
            f"| PowerDNS: reconcile pass, {n} names, nothing to change | {idle * 1000:.1f} ms "
            "| - | - |"])
    finally:
        server.stop()


async def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--changes", type=int, default=1000)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--only", choices=("bind", "pdns"), default=None)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="edgesteer-bench-") as tmp:
        work = Path(tmp)
        print("| case | edgesteer (median) | peer (median) | ratio ours/peer |")
        print("| --- | --- | --- | --- |")
        if args.only != "pdns":
            print(await bench_bind(work, args.changes, args.rounds), flush=True)
        if args.only != "bind":
            print(await bench_pdns(work, args.changes, args.rounds), flush=True)
        print(f"load average (1 min) at the end: {os.getloadavg()[0]:.2f} on "
              f"{os.cpu_count()} CPUs (other work on the host moves both columns)")


if __name__ == "__main__":
    asyncio.run(main())
