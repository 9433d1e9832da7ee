"""Differential fuzzing of the built-in server's query path (no sockets: ``handle``).

    .venv/bin/python bench/dns_fuzz.py --inputs 1000000 --seed 1     # the long run
    .venv/bin/python bench/dns_fuzz.py --inputs 20000                # a quick one

Inputs are mutations of a corpus of valid queries (bit flips, byte sets, cuts, inserts,
splices, header counts, OPT/ECS fields) plus pure random bytes. Each goes to two servers
on the same plan, one with the wire-level fast path and one without; the plan has no
random choice, so both must answer the same bytes. Checked per input:

* ``handle`` never raises and never lands in its catch-all (``errors`` stays 0);
* a reply is a well-formed DNS response (QR set, same ID) that fits the transport limit;
* the fast path and the dnspython path give the same bytes (or both stay silent);
* no input takes more than --max-ms; the process RSS does not grow without bound.

tests/test_dns_backends_builtin_fuzz.py runs a small sample of this in CI.
"""

from __future__ import annotations

import argparse
import random
import resource
import sys
import time
from dataclasses import dataclass, field
from types import MappingProxyType

import dns.edns
import dns.flags
import dns.message
import netaddr

from dns_backends.builtin.cookies import ServerCookies
from dns_backends.builtin.server import BuiltinDnsServer
from edge.config.schema import Endpoint, Pool, Service, Zone
from edge.plan import AnswerSet, Plan, WeightedAnswer
from geo.segment import Segment, SegmentMatcher

PEERS = ("127.0.0.1", "10.1.2.3", "192.0.2.9", "::1", "2001:db8:aa::1")


def _zone(name: str, ns: tuple[str, ...]) -> Zone:
    return Zone(name, ns, MappingProxyType({ns[0]: ("127.0.0.1", "::1")}), ns[0],
                f"hostmaster.{name}", 3600, 600, 604800, 60, 3600)


def _service(name: str, max_answers: int = 2) -> Service:
    return Service(name=name, zone="example.hk", ttl=60, failover_ttl=15,
                   max_answers=max_answers, failover_threshold=0.5,
                   pools=(Pool("main", (Endpoint("l", 100.0),)),))


def _set(service: str, segment: str, *values: tuple[str, str]) -> AnswerSet:
    answers = tuple(WeightedAnswer(t, v, 1.0, "l", "main", 1)  # type: ignore[arg-type]
                    for t, v in values)
    return AnswerSet(service, segment, 30, 1, answers)


def make_servers() -> tuple[BuiltinDnsServer, BuiltinDnsServer]:
    """Two servers (fast path on, off) on one deterministic plan."""
    big_ns = tuple(f"ns{i:02d}-a-rather-long-label-for-a-name-server.big.hk" for i in range(12))
    zones = [_zone("example.hk", ("ns1.example.hk", "ns2.example.hk")),
             Zone("big.hk", big_ns, MappingProxyType({}), big_ns[0], "h.big.hk", 1, 1, 1, 1,
                  60)]
    services = [_service("www.example.hk"), _service("cdn.example.hk"),
                _service("alias.example.hk")]
    sets = [
        _set("www.example.hk", "default", ("A", "192.0.2.1"), ("AAAA", "2001:db8::1")),
        _set("www.example.hk", "ct", ("A", "198.51.100.1")),
        _set("www.example.hk", "local", ("A", "203.0.113.1"), ("AAAA", "2001:db8::7")),
        _set("cdn.example.hk", "default", ("A", "192.0.2.30")),
        _set("alias.example.hk", "default", ("CNAME", "cdn.example.hk.")),
    ]
    plan = Plan(version=1, answers=MappingProxyType({(s.service, s.segment): s for s in sets}))
    matcher = SegmentMatcher([Segment("ct", cidrs=netaddr.IPSet(["10.1.0.0/16"])),
                              Segment("local", cidrs=netaddr.IPSet(["127.0.0.0/8", "::1/128"]))])
    out = []
    # one secret and a stopped clock: both servers make the same server cookies
    cookies = ServerCookies(b"fuzz" * 4, clock=lambda: 1764150000.0)
    for fast in (True, False):
        srv = BuiltinDnsServer(zones, services, matcher, [], rng=random.Random(0),
                               fast_path=fast, initial_serial=7, cookies=cookies)
        srv.apply_now(plan)
        out.append(srv)
    return out[0], out[1]


def seed_corpus() -> list[bytes]:
    out = []
    names = ["www.example.hk", "WWW.example.HK", "alias.example.hk", "cdn.example.hk",
             "example.hk", "nope.example.hk", "big.hk", "example.com", "."]
    types = ["A", "AAAA", "NS", "SOA", "ANY", "CNAME", "TXT", "AXFR"]
    for i, name in enumerate(names):
        for j, rdtype in enumerate(types):
            options: list[dns.edns.Option] = []
            if (i + j) % 3 == 0:
                options.append(dns.edns.ECSOption.from_text(
                    ["10.1.2.0/24", "0.0.0.0/0", "2001:db8::/32"][(i + j) % 9 // 3]))
            if (i + j) % 4 == 0:
                options.append(dns.edns.GenericOption(10, b"\x01" * 8))
            edns: int | bool = False if (i + j) % 5 == 0 else 0
            q = dns.message.make_query(name, rdtype, use_edns=edns, options=options or None,
                                       want_dnssec=(i * j) % 2 == 1, payload=1232 - 256 * (j % 4))
            out.append(q.to_wire())
    return out


INTERESTING = (0, 1, 2, 0x7F, 0x80, 0xC0, 0xFF)


def mutate(rng: random.Random, corpus: list[bytes]) -> bytes:
    if rng.random() < 0.08:
        return rng.randbytes(rng.randint(0, 120))
    data = bytearray(rng.choice(corpus))
    data[0:2] = rng.randbytes(2)
    if rng.random() < 0.2:  # valid, with another ID and a mixed-case name: the fast path
        for i in range(12, len(data)):
            if 0x61 <= data[i] <= 0x7A and rng.random() < 0.5:
                data[i] -= 0x20
        return bytes(data)
    for _ in range(rng.randint(1, 4)):
        op = rng.randrange(8)
        pos = rng.randrange(len(data)) if data else 0
        if op == 0 and data:
            data[pos] ^= 1 << rng.randrange(8)
        elif op == 1 and data:
            data[pos] = rng.choice(INTERESTING) if rng.random() < 0.5 else rng.randrange(256)
        elif op == 2:
            del data[pos:pos + rng.randint(1, 8)]
        elif op == 3:
            data[pos:pos] = rng.randbytes(rng.randint(1, 8))
        elif op == 4:  # splice with another seed
            other = rng.choice(corpus)
            cut = rng.randrange(len(other) + 1)
            data = data[:pos] + other[cut:]
        elif op == 5 and len(data) >= 12:  # header counts
            field_at = rng.choice((4, 6, 8, 10))
            data[field_at:field_at + 2] = rng.choice((0, 1, 2, 0xFFFF)).to_bytes(2, "big")
        elif op == 6 and len(data) > 2:  # flags: opcode, QR, RD
            data[2] = rng.randrange(256) & rng.choice((0x79, 0xFF, 0x01))
        elif op == 7 and len(data) > 8:  # the tail: OPT / ECS fields live there
            tail = rng.randrange(1, min(len(data), 24))
            data[-tail] = rng.choice(INTERESTING)
    return bytes(data)


@dataclass
class Report:
    inputs: int = 0
    replies: int = 0
    silent: int = 0
    fast: int = 0
    mismatches: list[tuple[bytes, str]] = field(default_factory=list)
    failures: list[tuple[bytes, str]] = field(default_factory=list)
    slowest_ms: float = 0.0
    rss_start_kb: int = 0
    rss_end_kb: int = 0
    seconds: float = 0.0


def check_reply(wire: bytes, reply: bytes, tcp: bool) -> str | None:
    try:
        msg = dns.message.from_wire(reply, keyring=False)
    except Exception as exc:
        return f"reply does not parse: {exc!r}"
    if not msg.flags & dns.flags.QR:
        return "reply without QR"
    if msg.id != int.from_bytes(wire[:2], "big"):
        return "reply with another ID"
    if not tcp and len(reply) > 1232:
        return f"UDP reply of {len(reply)} bytes"
    return None


def fuzz(inputs: int, seed: int = 1, *, max_ms: float = 250.0) -> Report:
    rng = random.Random(seed)
    fast, slow = make_servers()
    corpus = seed_corpus()
    report = Report(rss_start_kb=resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)
    started = time.monotonic()
    for i in range(inputs):
        wire = mutate(rng, corpus)
        peer = PEERS[i % len(PEERS)]
        tcp = i % 7 == 0
        t0 = time.perf_counter()
        got = fast.handle(wire, peer, tcp=tcp)
        spent = (time.perf_counter() - t0) * 1000
        expected = slow.handle(wire, peer, tcp=tcp)
        report.slowest_ms = max(report.slowest_ms, spent)
        if spent > max_ms:
            report.failures.append((wire, f"took {spent:.1f} ms"))
        if got != expected:
            report.mismatches.append((wire, f"fast {got!r} != slow {expected!r}"))
        if got is None:
            report.silent += 1
        else:
            report.replies += 1
            problem = check_reply(wire, got, tcp)
            if problem:
                report.failures.append((wire, problem))
        report.inputs += 1
    report.fast = fast.stats["events"]["fast"]
    for srv in (fast, slow):
        if srv.stats["events"]["errors"]:
            report.failures.append((b"", f"{srv.stats['events']['errors']} handler errors"))
    report.rss_end_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    report.seconds = time.monotonic() - started
    return report


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--inputs", type=int, default=100_000)
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--max-ms", type=float, default=250.0)
    args = p.parse_args()
    r = fuzz(args.inputs, args.seed, max_ms=args.max_ms)
    print(f"inputs {r.inputs:,} in {r.seconds:.0f} s ({r.inputs / r.seconds:,.0f}/s): "
          f"{r.replies:,} replies, {r.silent:,} dropped, {r.fast:,} via the fast path; "
          f"slowest {r.slowest_ms:.1f} ms; max RSS {r.rss_start_kb:,} -> {r.rss_end_kb:,} KiB")
    print(f"mismatches fast/dnspython: {len(r.mismatches)}; failures: {len(r.failures)}")
    for wire, why in (r.mismatches + r.failures)[:10]:
        print(f"  {wire.hex()}: {why}")
    return 0 if not r.mismatches and not r.failures else 1


if __name__ == "__main__":
    sys.exit(main())
