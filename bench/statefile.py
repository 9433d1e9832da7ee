"""The engine's state file at scale: save and load time and size of the plan in force, in
the grouped form (edge.plancodec) against the full form the previous format wrote
(``Plan.to_json``, indented), in the same run.

    .venv/bin/python bench/statefile.py [--services 10000] [--segments 50] [--links 1000]

The plan is bench/plan.py's (SERVICES x SEGMENTS answer sets, 8 endpoints per service),
planned by the incremental planner, every answer set read once first (as the built-in DNS
server does when it applies a plan). Times: a save after a plan change, a save after a
link change that moved no answer (the plan's text is reused), a load (what a cold start
and ``serve --follow`` pay), and the plan's checksum (planfeed and the Redis history take
it per plan). No peer keeps a steering plan on disk; the previous format is the reference.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from plan import build, snapshot  # bench/plan.py

from edge.health.state import HealthState
from edge.plan import plan_from_json
from edge.steering.incremental import IncrementalPlanner
from edge.steering.statefile import ENGINE_FILE, load_engine_state, save_engine_state


def timed(fn: object) -> float:
    t = time.perf_counter()
    fn()  # type: ignore[operator]
    return time.perf_counter() - t


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--services", type=int, default=10_000)
    p.add_argument("--segments", type=int, default=50)
    p.add_argument("--links", type=int, default=1000)
    p.add_argument("--skip-full", action="store_true",
                   help="do not time the previous (full) form: it takes minutes at 500k sets")
    args = p.parse_args()
    config = build(args.services, args.segments, args.links)
    up = {lk.name: HealthState.UP for lk in config.links}
    plan = IncrementalPlanner(config).plan(snapshot(up, 1), version=1, now=0.0)
    for _item in plan.answers.items():  # the DNS server's read: the per-segment copies exist
        pass
    print(f"{len(plan.answers):,} answer sets; load average {os.getloadavg()[0]:.2f}")
    with tempfile.TemporaryDirectory(prefix="edgesteer-bench-") as raw:
        d = Path(raw)
        save = timed(lambda: save_engine_state(d, snapshot(up, 1), plan, 1.0))
        size = (d / ENGINE_FILE).stat().st_size
        again = timed(lambda: save_engine_state(d, snapshot(up, 2), plan, 2.0))
        load = timed(lambda: load_engine_state(d))
        checksum = timed(plan.checksum)
        print(f"grouped form: save {save:.2f} s (plan changed), {again * 1000:.0f} ms (links "
              f"only), load {load:.2f} s, {size / 2**20:.1f} MiB; checksum {checksum:.2f} s")
        if args.skip_full:
            return 0
        full = d / "full.json"
        fresh = IncrementalPlanner(config).plan(snapshot(up, 1), version=1, now=0.0)
        save_full = timed(lambda: full.write_text(json.dumps(
            {"format": 1, "plan": fresh.to_json()}, indent=1, sort_keys=True)))
        load_full = timed(lambda: plan_from_json(json.loads(full.read_text())["plan"]))
        full_size = full.stat().st_size
        print(f"full form (previous format): save {save_full:.2f} s, load {load_full:.2f} s, "
              f"{full_size / 2**20:.1f} MiB")
        print(f"ratio full / grouped: save {save_full / save:.0f}x, load "
              f"{load_full / load:.0f}x, size {full_size / size:.0f}x")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
