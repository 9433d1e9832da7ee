"""Random-loss detection on simulated time: how fast a lossy link goes DOWN, how often a
mildly lossy one goes DOWN by mistake.

Runs the real path window (probes.cadence.path_window), the real health tracker (state
machine, quorum, damping) and the agent's cadence rules (a path whose window holds both
answered and lost probes, that has an overdue probe in flight, or that is FALLING /
RISING, is probed at the fast interval; a lost probe is known at its timeout, an answered
one after ``--rtt``), with the default
health settings of a config whose one target is probed every ``--interval`` seconds.
Nothing is sent anywhere: each probe is lost with probability p from a seeded generator.

Two figures, against the issue-4 bounds:

* ``--loss 0.2``: per seed, the time from the onset of the loss to the link's DOWN; the
  share under ``--bound`` seconds, the median and the 95th percentile.
* ``--steady 0.02``: per seed, ``--minutes`` of steady loss; how many runs saw a false
  DOWN, and the median time to the first one.

    .venv/bin/python bench/loss_detection.py --seeds 2000 --steady-seeds 100
"""

from __future__ import annotations

import argparse
import heapq
import random
import statistics
from dataclasses import dataclass, field

from edge.config.loader import parse_config
from edge.config.schema import Config
from edge.health.cadence import probe_interval
from edge.health.state import HealthState
from edge.health.tracker import HealthTracker
from probes.cadence import fast_interval, overdue_after, path_window
from probes.measurement import PathKey, ProbeError, ProbeKind, Sample
from probes.schedule import max_overlap
from probes.window import percentile

CONFIG = """
version: 1
node: {{name: hk-1, site: hk}}
sites: [{{name: hk}}]
links:
  - {{name: cn2, priority: 1, answers: {{v4: [203.0.113.10]}}}}
targets:
  - {{name: pop, kind: tcp, host: 127.0.0.1, port: 9, interval: {interval}, links: [cn2]}}
zones: [{{name: example.hk, ns: [ns1.example.hk]}}]
health: {{window: {window}, fall: {fall}}}
services:
  - name: www.example.hk
    pools: [{{name: main, endpoints: [{{link: cn2}}]}}]
"""

KEY = PathKey(node="hk-1", link="cn2", target="pop")
LOST = ProbeError("timeout", "lost (simulated)")


@dataclass(order=True)
class _Event:
    at: float
    seq: int
    kind: str = field(compare=False)  # "tick" or "result"
    sent: float = field(compare=False, default=0.0)
    ok: bool = field(compare=False, default=True)


def load(interval: float, window: int = 10, fall: int = 3) -> Config:
    return parse_config(CONFIG.format(interval=interval, window=window, fall=fall),
                        source="bench/loss_detection.py")


def run(cfg: Config, rng: random.Random, *, onset: float, loss: float, until: float,
        rtt: float, clean_loss: float = 0.0, overdue_doubt: bool = True) -> float | None:
    """Simulate one path; the time of the link's first DOWN after ``onset``, or None."""
    target = cfg.targets[0]
    hs = cfg.health
    tracker = HealthTracker(hs, {link.name: link.thresholds for link in cfg.links},
                            clock=lambda: 0.0)
    window = path_window(target, hs.window, hs.fast_probe_factor)
    interval, timeout = target.interval_s, target.timeout_s
    fast = fast_interval(interval, hs.fast_probe_factor)
    events: list[_Event] = []
    seq = 0
    in_flight = 0
    mixed = False
    override: float | None = None
    last_start = 0.0
    overdue = 0  # lost probes in flight past their overdue time (probes/agent.py)
    watched: set[float] = set()
    last_p95: float | None = None

    def push(e: _Event) -> None:
        heapq.heappush(events, e)

    def current_interval() -> float:
        i = override if override is not None else interval
        return min(i, fast) if (mixed or overdue) else i

    push(_Event(0.0, 0, "tick"))
    due = 0.0
    while events:
        e = heapq.heappop(events)
        now = e.at
        if now > until:
            return None
        if e.kind == "tick":
            if e.at != due:
                continue  # superseded by an earlier wake
            last_start = now
            if in_flight < max_overlap(current_interval(), timeout):
                in_flight += 1
                p = loss if now >= onset else clean_loss
                lost = rng.random() < p
                seq += 1
                push(_Event(now + (timeout if lost else rtt), seq, "result", now, not lost))
                after = (overdue_after(last_p95, timeout)
                         if overdue_doubt and hs.fast_probe_factor > 1 else None)
                if lost and after is not None:  # an answered probe is back long before
                    seq += 1
                    push(_Event(now + after, seq, "overdue", now))
                    watched.add(now)
            due = now + current_interval()
            seq += 1
            push(_Event(due, seq, "tick"))
            continue
        if e.kind == "overdue":
            overdue += 1
            sooner = max(now, last_start + current_interval())
            if sooner < due:
                due = sooner
                seq += 1
                push(_Event(due, seq, "tick"))
            continue
        in_flight -= 1
        if e.sent in watched:
            watched.discard(e.sent)
            overdue -= 1
        sample = (Sample(path=KEY, kind=ProbeKind.TCP, at=e.sent, ok=True, rtt_s=now - e.sent)
                  if e.ok else Sample(path=KEY, kind=ProbeKind.TCP, at=e.sent, ok=False,
                                      rtt_s=None, error=LOST))
        window.add(sample)
        m = window.measurement(KEY, ProbeKind.TCP, now)
        last_p95 = m.rtt_p95
        was_mixed = mixed
        mixed = 0 < m.received < m.sent
        tracker.feed(m)
        path = tracker.path(KEY)
        assert path is not None
        override = probe_interval(path.state, interval, hs.fast_probe_factor)
        sooner = last_start + current_interval()
        wake = (mixed and not was_mixed) or override is not None
        if wake and sooner < due:  # the agent's early wake: the next probe comes in sooner
            due = max(now, sooner)
            seq += 1
            push(_Event(due, seq, "tick"))
        if tracker.snapshot.links["cn2"].state is HealthState.DOWN and now >= onset:
            return now - onset
    return None


def _pct(values: list[float], p: float) -> float:
    got = percentile(sorted(values), p)
    return got if got is not None else float("nan")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--interval", type=float, default=0.2, help="probe interval (s)")
    ap.add_argument("--window", type=int, default=10, help="health.window (default 10)")
    ap.add_argument("--fall", type=int, default=3, help="health.fall (default 3)")
    ap.add_argument("--rtt", type=float, default=0.002, help="rtt of an answered probe (s)")
    ap.add_argument("--loss", type=float, default=0.2, help="loss after the onset")
    ap.add_argument("--bound", type=float, default=3.0, help="detection bound (s)")
    ap.add_argument("--seeds", type=int, default=1000, help="runs of --loss")
    ap.add_argument("--steady", type=float, default=0.02, help="steady loss with no DOWN")
    ap.add_argument("--steady-seeds", type=int, default=50, help="runs of --steady")
    ap.add_argument("--no-overdue", action="store_true",
                    help="no doubt from overdue probes (the cadence before it, to compare)")
    ap.add_argument("--minutes", type=float, default=10.0, help="length of a steady run")
    args = ap.parse_args(argv)
    cfg = load(args.interval, args.window, args.fall)
    onset = 5.0
    times: list[float] = []
    missed = 0
    for seed in range(args.seeds):
        t = run(cfg, random.Random(seed), onset=onset, loss=args.loss, until=onset + 60,
                rtt=args.rtt, overdue_doubt=not args.no_overdue)
        if t is None:
            missed += 1
        else:
            times.append(t)
    under = sum(1 for t in times if t < args.bound)
    print(f"{args.loss:.0%} random loss, {args.interval * 1000:.0f} ms probing, "
          f"{args.seeds} seeds: under {args.bound:g} s {under / args.seeds:.1%}; "
          f"p50 {_pct(times, 50):.2f} s, p95 {_pct(times, 95):.2f} s, "
          f"max {max(times):.2f} s, never {missed}")
    if args.steady_seeds:
        firsts: list[float] = []
        for seed in range(args.steady_seeds):
            t = run(cfg, random.Random(10_000 + seed), onset=0.0, loss=args.steady,
                    until=args.minutes * 60, rtt=args.rtt,
                    overdue_doubt=not args.no_overdue)
            if t is not None:
                firsts.append(t)
        clean = args.steady_seeds - len(firsts)
        median = f"{statistics.median(firsts):.0f} s" if firsts else "-"
        print(f"{args.steady:.0%} steady random loss, {args.minutes:g} min, "
              f"{args.steady_seeds} runs: without a false DOWN {clean}/{args.steady_seeds}; "
              f"median time to the first false DOWN {median}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
