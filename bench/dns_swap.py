"""Plan swaps under load: dnsperf against the built-in server while plans swap 10x/s.

    .venv/bin/python bench/dns_swap.py --duration 30          # the full run
    .venv/bin/python bench/dns_swap.py --duration 5 --qps 10000 --json   # the test's run

The server runs here on uvloop (one process); dnsperf sends ``www.example.hk A`` with an
ECS option (10.1.2.0/24, the "testnet" segment) as fast as it can (or at --qps). Two plans
alternate every 100 ms: X = {192.0.2.10, 192.0.2.11} TTL 30 and Y = {198.51.100.10,
198.51.100.11} TTL 40, both answers in every response. A checker on the same loop sends
the same query over UDP (fast path) and with an unusual EDNS option (so the dnspython
path answers) and verifies each response is X or Y whole, with its own TTL, and that the
SOA serial never goes back. Pass: zero lost, NOERROR only, zero SERVFAIL, zero mixed.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import tempfile
import time
from pathlib import Path
from types import MappingProxyType

import dns.asyncquery
import dns.edns
import dns.message
import dns.rdatatype
import netaddr

from dns_backends.builtin.server import BuiltinDnsServer
from edge.config.schema import Endpoint, Pool, Service, Zone
from edge.plan import AnswerSet, Plan, WeightedAnswer
from geo.segment import Segment, SegmentMatcher

sys.path.insert(0, str(Path(__file__).resolve().parent))
from dns_perf import ECS_10_1_2, run_dnsperf, write_queries

X = ("192.0.2.10", "192.0.2.11")
Y = ("198.51.100.10", "198.51.100.11")


def plan(values: tuple[str, ...], ttl: int, version: int) -> Plan:
    answers = tuple(WeightedAnswer("A", v, 1.0, "l", "main", 1) for v in values)
    sets = {("www.example.hk", seg): AnswerSet("www.example.hk", seg, ttl, 1, answers)
            for seg in ("default", "testnet")}
    return Plan(version=version, created_at=time.time(), answers=MappingProxyType(sets))


def make_server(port: int) -> BuiltinDnsServer:
    zone = Zone("example.hk", ("ns1.example.hk",),
                MappingProxyType({"ns1.example.hk": ("127.0.0.1",)}), "ns1.example.hk",
                "hostmaster.example.hk", 3600, 600, 604800, 60, 3600)
    service = Service(name="www.example.hk", zone="example.hk", ttl=60, failover_ttl=15,
                      max_answers=2, failover_threshold=0.5,
                      pools=(Pool("main", (Endpoint("l", 100.0),)),))
    matcher = SegmentMatcher([Segment("testnet", cidrs=netaddr.IPSet(["10.1.0.0/16"]))])
    return BuiltinDnsServer([zone], [service], matcher, [("127.0.0.1", port)], udp_batch=True)


class Checker:
    def __init__(self, port: int) -> None:
        self.port = port
        self.seen = {"X": 0, "Y": 0}
        self.mixed: list[str] = []
        self.serials: list[int] = []

    async def run(self, stop: asyncio.Event) -> None:
        ecs = dns.edns.ECSOption.from_text("10.1.2.0/24")
        odd = dns.edns.GenericOption(65001, b"slow-path")  # unknown option: dnspython path
        i = 0
        while not stop.is_set():
            options = [ecs] if i % 2 == 0 else [ecs, odd]
            q = dns.message.make_query("www.example.hk", "A", use_edns=0, options=options)
            r = await dns.asyncquery.udp(q, "127.0.0.1", port=self.port, timeout=2.0)
            self.judge(r)
            if i % 10 == 0:
                soa = await dns.asyncquery.udp(dns.message.make_query("example.hk", "SOA"),
                                               "127.0.0.1", port=self.port, timeout=2.0)
                self.serials.append(soa.answer[0][0].serial)
            i += 1
            await asyncio.sleep(0.002)

    def judge(self, r: dns.message.Message) -> None:
        got = tuple(sorted(rd.to_text() for rrset in r.answer for rd in rrset))
        ttls = {rrset.ttl for rrset in r.answer}
        if got == X and ttls == {30}:
            self.seen["X"] += 1
        elif got == Y and ttls == {40}:
            self.seen["Y"] += 1
        else:
            self.mixed.append(f"{got} ttl {ttls} rcode {r.rcode()}")


async def main(args: argparse.Namespace) -> dict[str, object]:
    server = make_server(args.port)
    await server.start()
    port = server.bound[0][1]
    server.apply_now(plan(X, 30, 1))
    stop = asyncio.Event()
    swaps = 0

    async def swapper() -> None:
        nonlocal swaps
        version = 1
        next_at = time.monotonic()
        while not stop.is_set():
            next_at += 1.0 / args.swaps_per_s
            await asyncio.sleep(max(0.0, next_at - time.monotonic()))
            version += 1
            server.apply_now(plan(X, 30, version) if version % 2 else plan(Y, 40, version))
            swaps += 1

    checker = Checker(port)
    with tempfile.TemporaryDirectory() as tmp:
        data = write_queries(Path(tmp) / "queries", ["www.example.hk A"])
        tasks = [asyncio.create_task(swapper()), asyncio.create_task(checker.run(stop))]
        try:
            perf = await run_dnsperf(port, data, seconds=args.duration, qps=args.qps,
                                     ecs=ECS_10_1_2)
        finally:
            stop.set()
            await asyncio.gather(*tasks)
            await server.aclose()
    serials_ok = checker.serials == sorted(checker.serials)
    result: dict[str, object] = {
        "duration_s": args.duration, "swaps": swaps, "dnsperf_qps": perf.qps,
        "sent": perf.sent, "completed": perf.completed, "lost": perf.lost,
        "rcodes": perf.rcodes, "server_rcodes": dict(server.stats["rcode"]),
        "server_errors": server.stats["events"]["errors"],
        "fast_answers": server.stats["events"]["fast"],
        "checked": checker.seen, "mixed": checker.mixed[:10], "mixed_count": len(checker.mixed),
        "serials_monotonic": serials_ok,
    }
    result["ok"] = (perf.lost == 0 and set(perf.rcodes) == {"NOERROR"}
                    and not server.stats["rcode"]["SERVFAIL"] and not checker.mixed
                    and serials_ok and checker.seen["X"] > 0 and checker.seen["Y"] > 0
                    and server.stats["events"]["errors"] == 0)
    return result


def cli() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--duration", type=float, default=30.0)
    p.add_argument("--qps", type=int, default=0, help="dnsperf rate cap (0 = as fast as it can)")
    p.add_argument("--swaps-per-s", type=float, default=10.0)
    p.add_argument("--port", type=int, default=0)
    p.add_argument("--json", action="store_true")
    p.add_argument("--no-uvloop", action="store_true")
    args = p.parse_args()
    if args.no_uvloop:
        result = asyncio.run(main(args))
    else:
        import uvloop

        result = uvloop.run(main(args))
    if args.json:
        print(json.dumps(result))
    else:
        for key, value in result.items():
            print(f"{key:>18}: {value}")
    return 0 if result["ok"] else 1


if __name__ == "__main__":
    sys.exit(cli())
