"""Planner benchmark: a full plan for SERVICES x SEGMENTS x 8 endpoints, and incremental
re-plans after one link changes state. Prints time and peak memory (tracemalloc, in a
separate pass so the timings are not slowed by it).

    .venv/bin/python bench/plan.py [--services 10000] [--segments 50] [--links 1000]
                                   [--changes 20] [--full-cycles 0] [--plain]
                                   [--json]

Topology: LINKS links (half priority 1, half priority 2); every service has two pools of
4 endpoints (a tier-1 pool and a tier-2 pool) on links picked at random (seeded), with its
own answer addresses; its policy has SEGMENTS-1 segment rules plus ``default``, cycling
over three pool lists. A change takes one random link DOWN (or back UP). The full plan is
``IncrementalPlanner``'s constructor plus its first call; reading every answer set once
afterwards (the per-segment copies are made on first access) is timed apart. A *cycle* is
what the engine does per change (``edge.steering.cycle.Steering``): planner, rails, diff
and guard against the plan in force, then commit (``--full-cycles N`` also times N cycles
that walk every answer set, as before the cycle became incremental). No DNS server plans,
so there is no peer to compare with; goals (issue 4): full < 2 s and < 1 GiB, incremental
< 20 ms.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import random
import statistics
import sys
import time
import tracemalloc
from pathlib import Path
from types import MappingProxyType
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from edge.config.schema import (
    Band,
    Config,
    Endpoint,
    GuardSettings,
    HealthSettings,
    Link,
    Node,
    Policy,
    PolicyRule,
    Pool,
    Service,
    Site,
    Thresholds,
    Zone,
)
from edge.health.state import HealthSnapshot, HealthState, LinkHealth
from edge.steering.cycle import Steering
from edge.steering.incremental import IncrementalPlanner
from edge.steering.planner import plan

TH = Thresholds(Band(0.02, 150.0, 20.0), Band(0.1, 300.0, 50.0), 0.8)


def build(services: int, segments: int, links: int, seed: int = 1) -> Config:
    rng = random.Random(seed)
    lks = tuple(Link(name=f"l{i}", carrier=f"c{i}", priority=1 if i < links // 2 else 2,
                     weight=100.0, answers_v4=(f"198.18.{i // 256}.{i % 256}",),
                     answers_v6=(), thresholds=TH) for i in range(links))
    tier1, tier2 = lks[: links // 2], lks[links // 2:]
    svcs, pols = [], {}
    seg_names = [f"seg{k}" for k in range(segments - 1)]
    variants = (("t1", "t2"), ("t1",), ("t2", "t1"))
    for s in range(services):
        name = f"s{s}.example.hk"

        def eps(pick: tuple[Link, ...], base: int, s: int = s) -> tuple[Endpoint, ...]:
            chosen = rng.sample(pick, 4)
            return tuple(Endpoint(link=lk.name, weight=100.0,
                                  addresses=(f"10.{(s >> 8) & 255}.{s & 255}.{base + j}",))
                         for j, lk in enumerate(chosen))

        svcs.append(Service(name=name, zone="example.hk", ttl=60, failover_ttl=15,
                            max_answers=2, failover_threshold=0.5,
                            pools=(Pool("t1", eps(tier1, 1)), Pool("t2", eps(tier2, 10)))))
        pols[name] = Policy(name, tuple(PolicyRule(seg, variants[k % 3])
                                        for k, seg in enumerate(seg_names)))
    zone = Zone("example.hk", ("ns1.example.hk",), MappingProxyType({}), "ns1.example.hk",
                "hostmaster.example.hk", 3600, 600, 604800, 60, 3600)
    hs = HealthSettings(window=10, rise=3, fall=3, hold_down_s=10.0, stale_after_s=5.0,
                        quorum="majority", degraded_weight=0.5, thresholds=TH)
    return Config(source="bench", node=Node("hk-1", "hk"), sites=(Site("hk"),), links=lks,
                  targets=(), health=hs, zones=(zone,), lines=(), segments=(),
                  services=tuple(svcs), policies=MappingProxyType(pols),
                  guard=GuardSettings())


def snapshot(states: dict[str, HealthState], version: int) -> HealthSnapshot:
    return HealthSnapshot(version=version, taken_at=float(version), links=MappingProxyType(
        {n: LinkHealth(n, st, 0.0, "bench") for n, st in states.items()}))


def cycles(config: Config, changes: int, *, walk_all: bool) -> tuple[list[float], list[int]]:
    """Engine cycles (``Steering``: planner, rails, diff, guard, then commit) after one link
    change each; the first, full cycle is not timed. Returns the times and the answer sets
    each cycle changed."""
    steering = Steering(config, walk_all=walk_all)
    states = {lk.name: HealthState.UP for lk in config.links}
    steering.commit(steering.propose(snapshot(states, 1), 0.0).plan)
    rng = random.Random(3)
    times, sizes = [], []
    for i in range(changes):
        link = rng.choice(config.links).name
        states = dict(states)
        states[link] = (HealthState.DOWN if states[link] is HealthState.UP
                        else HealthState.UP)
        snap = snapshot(states, i + 2)  # the tracker's work, not the cycle's
        t = time.perf_counter()
        out = steering.propose(snap, float(i + 1))
        if out.error is None and out.diff:
            steering.commit(out.plan)
        times.append(time.perf_counter() - t)
        sizes.append(len(out.diff.changes))
    return times, sizes


def run(args: argparse.Namespace) -> dict[str, Any]:
    load = os.getloadavg()[0]  # the figures mean little without it on a shared machine
    t = time.perf_counter()
    config = build(args.services, args.segments, args.links)
    build_s = time.perf_counter() - t
    states = {lk.name: HealthState.UP for lk in config.links}
    snap = snapshot(states, 1)
    gc.collect()
    gc.freeze()  # the loaded config is long-lived, as in a running engine

    plain_s = None
    if args.plain:
        t = time.perf_counter()
        full = plan(config, snap, version=1, now=0.0)
        plain_s = round(time.perf_counter() - t, 3)
        del full
        gc.collect()

    t, cpu = time.perf_counter(), time.process_time()
    inc = IncrementalPlanner(config)  # indexes and static candidates count as planning
    first = inc.plan(snap, version=1, now=0.0)
    inc_full_s = time.perf_counter() - t
    inc_full_cpu_s = time.process_time() - cpu  # the same, without other processes' share
    n_sets = len(first.answers)
    # the plan makes a segment's copy of its group's answer set on first access: time
    # reading every answer set once (what a backend building its tables pays), apart
    t = time.perf_counter()
    for _key, _aset in first.answers.items():
        pass
    read_all_s = time.perf_counter() - t
    del first

    rng = random.Random(2)
    times, touched = [], []
    for i in range(args.changes):
        link = rng.choice(config.links).name
        states = dict(states)
        states[link] = (HealthState.DOWN if states[link] is HealthState.UP
                        else HealthState.UP)
        s = snapshot(states, i + 2)
        t = time.perf_counter()
        inc.plan(s, version=i + 2, now=float(i))
        times.append(time.perf_counter() - t)
        touched.append(inc.recomputed)
    check = plan(config, s, version=args.changes + 1, now=0.0)
    same = check.answers == inc.plan(s, version=args.changes + 1, now=0.0).answers
    del check, inc
    gc.collect()

    cycle = cycles(config, args.changes, walk_all=False)
    cycle_full = cycles(config, args.full_cycles, walk_all=True) if args.full_cycles else None
    gc.collect()

    tracemalloc.start()
    base = tracemalloc.get_traced_memory()[0]
    mem_inc = IncrementalPlanner(config)
    kept = mem_inc.plan(snapshot({lk.name: HealthState.UP for lk in config.links}, 1),
                        version=1, now=0.0)
    peak_plan = tracemalloc.get_traced_memory()[1] - base
    for _key, _aset in kept.answers.items():  # every per-segment copy made: the worst case
        pass
    peak = tracemalloc.get_traced_memory()[1] - base
    tracemalloc.stop()
    del kept, mem_inc
    return {
        "services": args.services, "segments": args.segments, "endpoints_per_service": 8,
        "links": args.links, "answer_sets": n_sets, "config_build_s": round(build_s, 3),
        "full_plan_s": round(inc_full_s, 3), "full_plan_cpu_s": round(inc_full_cpu_s, 3),
        "full_plan_plain_planner_s": plain_s,
        "full_plan_read_every_set_s": round(read_all_s, 3),
        "full_peak_mib": round(peak_plan / 2**20, 1),
        "full_peak_mib_every_set_read": round(peak / 2**20, 1),
        "incremental_ms_median": round(statistics.median(times) * 1000, 2),
        "incremental_ms_max": round(max(times) * 1000, 2),
        "groups_recomputed_median": statistics.median(touched),
        "incremental_equals_full": same,
        "cycle_ms_median": round(statistics.median(cycle[0]) * 1000, 2),
        "cycle_ms_max": round(max(cycle[0]) * 1000, 2),
        "cycle_answer_sets_changed_median": statistics.median(cycle[1]),
        "cycle_walk_all_ms_median": (round(statistics.median(cycle_full[0]) * 1000, 1)
                                     if cycle_full else None),
        "load_average_1m_before": round(load, 2),
        "load_average_1m_after": round(os.getloadavg()[0], 2),
    }


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--services", type=int, default=10_000)
    p.add_argument("--segments", type=int, default=50)
    p.add_argument("--links", type=int, default=1000)
    p.add_argument("--changes", type=int, default=20)
    p.add_argument("--full-cycles", type=int, default=0,
                   help="also time this many cycles that walk every answer set (the old way)")
    p.add_argument("--plain", action="store_true",
                   help="also time the plain planner (planner.plan), which shares nothing")
    p.add_argument("--json", action="store_true")
    args = p.parse_args()
    result = run(args)
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        for k, v in result.items():
            print(f"{k:28} {v}")
    return 0 if result["incremental_equals_full"] else 1


if __name__ == "__main__":
    sys.exit(main())
