"""``edgesteer replay``: run the engine over a recorded probe trace on simulated time."""

from __future__ import annotations

import argparse
import json
import sys
import time
from typing import Any

from edge.commands.common import load_or_report
from edge.replay import AnswerDecision, Decision, LinkDecision, ReplayResult, replay
from probes.trace import TraceError, read_trace


def add_parser(sub: Any) -> None:
    p: argparse.ArgumentParser = sub.add_parser(
        "replay", help="run the engine over a recorded probe trace (simulated time)",
        description="Replay TRACE (JSON lines of raw probe samples or of Measurements, as "
        "written by `edgesteer agent --record`) through the same windowing, health state "
        "machine, planner and guard as a live node, on the trace's own time (far faster "
        "than real time), and print every decision with its time: per link its health "
        "state and reason, per service and segment the answer set served from then on. "
        "Exit 0, or 2 on a bad config or trace (the line is named).")
    p.add_argument("--config", required=True, metavar="FILE", help="edgesteer YAML config")
    p.add_argument("trace", metavar="TRACE", help="trace file (JSON lines)")
    p.add_argument("--tick", type=float, default=1.0, metavar="SECONDS",
                   help="staleness check period in trace time (default 1)")
    p.add_argument("--json", action="store_true", help="print the decisions as JSON")
    p.set_defaults(run=run)


def _stamp(at: float, start: float) -> str:
    wall = time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(at)) + f".{int(at % 1 * 1000):03d}"
    return f"{wall} +{at - start:9.3f}s"


def _line(d: Decision, start: float) -> str:
    head = _stamp(d.at, start)
    if isinstance(d, LinkDecision):
        return f"{head} link {d.link}: {d.old} -> {d.new}: {d.reason}"
    if isinstance(d, AnswerDecision):
        a = d.after
        if a is None:
            return f"{head} answers {d.service} [{d.segment}]: removed"
        values = ", ".join(f"{w.value}@{w.weight:g}" for w in a.answers) or "(none)"
        flags = " FAIL-OPEN" if a.fail_open else (" failing over" if a.failing_over else "")
        why = "; ".join(r.detail for r in a.reasons if r.code.startswith(("tier.", "fail")))
        return (f"{head} answers {d.service} [{d.segment}]: {values} (tier {a.tier}, ttl "
                f"{a.ttl}{flags}){': ' + why if why else ''}")
    return f"{head} plan v{d.plan_version} refused: {d.error}"


def report(result: ReplayResult) -> str:
    start = result.start or 0.0
    lines = [_line(d, start) for d in result.decisions]
    span = (result.end or start) - start
    lines.append(f"{result.records} records over {span:.1f} s of trace time, "
                 f"{len(result.decisions)} decisions")
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    config = load_or_report(args.config, "replay")
    if config is None:
        return 2
    if not args.tick > 0:
        print("edgesteer replay: --tick must be > 0", file=sys.stderr)
        return 2
    try:
        records = read_trace(args.trace)
    except TraceError as exc:
        print(f"edgesteer replay: bad trace, nothing replayed: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:
        print(f"edgesteer replay: {exc}", file=sys.stderr)
        return 2
    result = replay(config, records, tick_s=args.tick)
    if args.json:
        print(json.dumps(result.to_json(), indent=2))
    else:
        print(report(result))
    return 0
