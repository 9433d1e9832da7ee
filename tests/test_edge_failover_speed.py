"""Failover speed end to end (issue 4): probe -> health -> plan -> answer served.

A real :class:`NodeRuntime` (agent with real probes every 200 ms, health tracker, planner,
guard, built-in DNS server on loopback) with the default health, guard and service
settings. Each link's probes leave from their own loopback source (127.0.1.1 for cn2,
127.0.2.1 for pccw) toward their own lab responder (edge/lab/responders.py), which fails,
drops or jitters on cue. dnspython asks the DNS server for ``www.example.hk A`` in a loop;
the time is taken from the moment the impairment starts to the first answer that no
longer holds cn2's address.

Bounds (the issue's): a target that stops answering (hard down: its listener is killed,
as the issue measured PowerDNS and gdnsd) changes the answer in under 1 s; sustained 20 %
loss, and jitter beyond the link's band, in under 3 s. A silent target (every probe
dropped, no error) has no bound in the issue; its time is the probe timeout (by default
2 intervals at 200 ms probing, 0.4 s) plus the fall count, held under 1.5 s here.

Random 20 % loss (each probe lost with p = 0.2, seeded) has no bound that holds for every
seed: a rule that needs two lost probes (one never flips a decision) cannot beat 3 s when
the first lost probe is sent late, and with 200 ms probing and 0.4 s timeouts even an
oracle misses 3 s for about 8 % of seeds. The random case therefore runs seeds whose first
lost probe is among the first 4 after the onset (the bound is then attainable) and whose
evidence, counted in probes, needs 15 or more (so 200 ms probing alone takes over 3 s: the
faster probing of a path in doubt, probes/agent.py, is what makes the bound). The measured
distribution over all seeds (issue 4, seeds 100..139 end to end here): 37 of 40 under 3 s,
p50 1.63 s, p95 3.27 s (28 of 40 before the faster probing in doubt); in simulation
(bench/loss_detection.py) 90.6 % (70 % before). docs/benchmarks.md has the trade-off
against false DOWNs on a lightly lossy link and the decision.

Run with ``-s`` to see the measured times.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass

import dns.asyncquery
import dns.exception
import dns.message
import dns.rdatatype
import pytest

from edge.config.loader import parse_config
from edge.health.machine import step
from edge.health.state import HealthState, PathHealth
from edge.health.tracker import Transition
from edge.lab.responders import DnsResponder, Impairment, ImpairmentTable, TcpResponder
from edge.runtime import NodeRuntime
from probes.measurement import PathKey, ProbeError, ProbeKind, Sample
from probes.window import Window
from tests.conftest import free_port

CN2, PCCW = "203.0.113.10", "198.51.100.20"
CN2_SOURCE = "127.0.1.1"

CONFIG = """
version: 1
node: {{name: hk-1, site: hk}}
sites: [{{name: hk}}]
links:
  - {{name: cn2, priority: 1, source: {cn2_source}, answers: {{v4: [{cn2}]}}{bands}}}
  - {{name: pccw, priority: 2, source: 127.0.2.1, answers: {{v4: [{pccw}]}}}}
targets:
  - {{name: pop-cn2, kind: {kind}, host: 127.0.0.1, port: {port1}, interval: 0.2,
     links: [cn2]}}
  - {{name: pop-pccw, kind: {kind}, host: 127.0.0.1, port: {port2}, interval: 0.2,
     links: [pccw]}}
zones: [{{name: example.hk, ns: [ns1.example.hk]}}]
services:
  - name: www.example.hk
    pools:
      - {{name: main, endpoints: [{{link: cn2}}, {{link: pccw}}]}}
"""


class EveryNth(ImpairmentTable):
    """Sustained loss without luck: while ``active``, every ``n``-th probe of a source is
    dropped, the first one ``n`` probes after the start (the latest a 1/n loss shows)."""

    def __init__(self, n: int) -> None:
        super().__init__()
        self.n = n
        self.active = False
        self._count: dict[str, int] = {}

    def sample(self, source: str) -> float | None:
        if not self.active:
            return super().sample(source)
        count = self._count[source] = self._count.get(source, 0) + 1
        return None if count % self.n == 0 else 0.0


@dataclass
class Lab:
    runtime: NodeRuntime
    dns_port: int
    cn2: DnsResponder | TcpResponder
    table: ImpairmentTable
    transitions: list[tuple[float, Transition]]


async def _answers(port: int) -> frozenset[str] | None:
    q = dns.message.make_query("www.example.hk", "A")
    try:
        r = await dns.asyncquery.udp(q, "127.0.0.1", port=port, timeout=0.25)
    except (dns.exception.Timeout, OSError):
        return None
    return frozenset(rd.to_text() for rrset in r.answer for rd in rrset
                     if rrset.rdtype == dns.rdatatype.A)


async def _until(check: Callable[[], bool], limit_s: float, what: str) -> None:
    deadline = time.monotonic() + limit_s
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not within {limit_s} s")
        await asyncio.sleep(0.02)


@contextlib.asynccontextmanager
async def _lab(kind: str, table: ImpairmentTable, bands: str = "") -> AsyncIterator[Lab]:
    make = TcpResponder if kind == "tcp" else DnsResponder
    cn2, pccw = make(table), make(ImpairmentTable())
    await cn2.start()
    await pccw.start()
    config = parse_config(CONFIG.format(kind=kind, port1=cn2.port, port2=pccw.port, cn2=CN2,
                                        pccw=PCCW, cn2_source=CN2_SOURCE, bands=bands))
    assert config.targets[0].timeout_s == pytest.approx(0.4)  # the default at 200 ms
    transitions: list[tuple[float, Transition]] = []
    dns_port = free_port()
    runtime = NodeRuntime(config, listen=[("127.0.0.1", dns_port)],
                          on_transition=lambda tr: transitions.append((time.monotonic(), tr)))
    await runtime.start()
    try:
        # warm: both links measured UP (a full window behind them) and cn2 served
        links = runtime.engine.tracker

        def warm() -> bool:
            snap = links.snapshot.links
            return all(snap[n].state is HealthState.UP for n in ("cn2", "pccw")) and all(
                (p := links.path(k)) is not None and p.good_streak >= 10
                for k in runtime.agent.paths)

        await _until(warm, 15.0, "links up")
        assert await _answers(dns_port) == frozenset({CN2})
        yield Lab(runtime, dns_port, cn2, table, transitions)
    finally:
        await runtime.aclose()
        await cn2.aclose()
        await pccw.aclose()


async def _failover(lab: Lab, impair: Callable[[], object], limit_s: float,
                    what: str) -> float:
    """Seconds from ``impair()`` to the first answer without cn2 (which must be pccw's)."""
    del lab.transitions[:]
    result = impair()
    if asyncio.iscoroutine(result):
        start = time.monotonic()
        await result
    else:
        start = time.monotonic()
    while True:
        got = await _answers(lab.dns_port)
        took = time.monotonic() - start
        if got is not None and got != frozenset({CN2}):
            assert got == frozenset({PCCW})
            break
        assert took < limit_s + 2.0, f"{what}: answers still {got} after {took:.2f} s"
        await asyncio.sleep(0.005)
    steps = "; ".join(f"+{at - start:.2f}s {tr.old}->{tr.new}: {tr.reason}"
                      for at, tr in lab.transitions if tr.path.link == "cn2")
    print(f"\nfailover {what}: {took:.3f} s (bound {limit_s} s) [{steps}]")
    assert took < limit_s, f"{what}: the answer changed after {took:.2f} s [{steps}]"
    return took


@pytest.mark.parametrize("kind", ["tcp", "dns"])
async def test_hard_down_changes_the_answer_within_1s(kind: str) -> None:
    """The target's listener is killed: TCP connects are refused, DNS over UDP gets port
    unreachable (a connected socket reports it as refused)."""
    async with _lab(kind, ImpairmentTable()) as lab:
        await _failover(lab, lab.cn2.aclose, 1.0, f"hard down ({kind} listener killed)")


async def test_silent_target_changes_the_answer_within_timeout_and_fall() -> None:
    table = ImpairmentTable()
    async with _lab("dns", table) as lab:
        await _failover(lab, lambda: table.set(CN2_SOURCE, Impairment(loss=1.0)), 1.5,
                        "silent (every probe dropped)")


async def test_sustained_20_percent_loss_changes_the_answer_within_3s() -> None:
    table = EveryNth(5)

    def start() -> None:
        table.active = True

    async with _lab("dns", table) as lab:
        await _failover(lab, start, 3.0, "sustained 20% loss")
        # the evidence was loss, not a silent link
        assert any("loss" in tr.reason for _, tr in lab.transitions
                   if tr.new is HealthState.DOWN)


async def test_jitter_beyond_the_links_band_changes_the_answer_within_3s() -> None:
    """cn2's own band: degraded at 8 ms jitter, down at 15 ms; its replies then wander
    over 5..145 ms (rtt p95 stays under the default 150 ms band: jitter alone decides)."""
    table = ImpairmentTable(seed=4)
    bands = ", thresholds: {degraded: {jitter_ms: 8}, down: {jitter_ms: 15}}"
    async with _lab("dns", table, bands) as lab:
        await _failover(lab, lambda: table.set(CN2_SOURCE, Impairment(delay_ms=75.0,
                                                                      jitter_ms=70.0)),
                        3.0, "jitter beyond the link's band")
        down = [tr for _, tr in lab.transitions if tr.new is HealthState.DOWN]
        assert down and all("jitter" in tr.reason and "rtt" not in tr.reason for tr in down)


# --- random loss ------------------------------------------------------------------------

LOSS_SEEDS = (14, 21, 30, 37, 41)


def _loss_pattern(seed: int, n: int) -> list[bool]:
    """Which of the first ``n`` probes after the onset an ``ImpairmentTable(seed=seed)``
    drops at 20 % loss: Impairment(loss=0.2).sample draws once per packet, and the cn2
    responder's table draws for nothing else (no impairment before the onset)."""
    rng = random.Random(seed)
    return [rng.random() < 0.2 for _ in range(n)]


def _evidence_probe(lost: list[bool]) -> int:
    """The probe (1-based, after the onset) whose result takes the path DOWN when probes
    come one by one at a steady cadence: the window and machine, with the defaults."""
    config = parse_config(CONFIG.format(kind="dns", port1=53, port2=53, cn2=CN2, pccw=PCCW,
                                        cn2_source=CN2_SOURCE, bands=""))
    hs, key = config.health, PathKey("hk-1", "cn2", "pop-cn2")
    w, prev = Window(hs.window), None
    for i, is_lost in enumerate([False] * hs.window + lost):
        at = i * 0.2
        w.add(Sample(key, ProbeKind.DNS, at, False, None, error=ProbeError("timeout", "x"))
              if is_lost else Sample(key, ProbeKind.DNS, at, True, 0.001))
        ph: PathHealth
        ph, _ = step(prev, w.measurement(key, ProbeKind.DNS, at), hs.thresholds, hs)
        prev = ph
        if ph.state is HealthState.DOWN:
            return i + 1 - hs.window
    raise AssertionError("no evidence in the pattern")


async def test_random_20_percent_loss_changes_the_answer_within_3s() -> None:
    """Five seeds at once, each its own runtime, responders and DNS port."""
    for seed in LOSS_SEEDS:
        lost = _loss_pattern(seed, 80)
        assert lost.index(True) < 4, seed                   # the first loss is early
        assert _evidence_probe(lost) >= 15, seed            # 200 ms probing alone: > 3 s

    async def one(seed: int) -> float:
        table = ImpairmentTable(seed=seed)
        async with _lab("dns", table) as lab:
            took = await _failover(lab, lambda: table.set(CN2_SOURCE, Impairment(loss=0.2)),
                                   3.0, f"random 20% loss, seed {seed}")
            assert any("loss" in tr.reason for _, tr in lab.transitions
                       if tr.new is HealthState.DOWN)
            return took

    async with asyncio.TaskGroup() as tg:
        tasks = [tg.create_task(one(seed)) for seed in LOSS_SEEDS]
    print("\nrandom 20% loss:", ", ".join(f"seed {s} {t.result():.2f} s"
                                        for s, t in zip(LOSS_SEEDS, tasks, strict=True)))
