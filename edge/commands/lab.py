"""``edgesteer lab``: rehearse a failover on emulated links, on loopback, without root."""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from typing import Any

from edge.config.loader import ConfigInvalid
from edge.lab.runner import LabOptions, parse_listen, run_lab


def add_parser(sub: Any) -> None:
    p: argparse.ArgumentParser = sub.add_parser(
        "lab", help="emulated HK links, real probes, engine and DNS on loopback; "
        "shows a failover live",
        description="Start emulated links (userspace delay/jitter/loss responders), the real "
        "probes, the steering engine and the built-in DNS server on loopback; play a scenario "
        "(default: CN2 GIA turns jittery and lossy, then recovers) and report how fast DNS "
        "answers failed over and came back. Exit 0 when both happened within the scenario's "
        "bounds, 1 when not, 2 on bad input.")
    p.add_argument("--scenario", metavar="FILE",
                   help="scenario YAML (default: the shipped edge/lab/scenario.yaml)")
    p.add_argument("--config", metavar="FILE",
                   help="lab config YAML (default: the shipped edge/lab/lab.yaml)")
    p.add_argument("--duration", type=float, metavar="SECONDS",
                   help="stop after this many seconds (default: the scenario's duration)")
    p.add_argument("--headless", action="store_true",
                   help="plain log lines instead of the live table (for scripts and CI)")
    p.add_argument("--listen", action="append", metavar="HOST:PORT",
                   help="DNS listen address (repeatable; default: the config's, "
                   "127.0.0.1:5353)")
    p.add_argument("--seed", type=int, help="seed for the impairment randomness")
    p.add_argument("--json", action="store_true",
                   help="print the summary as JSON (implies --headless; log lines go to stderr)")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    try:
        listen = parse_listen(args.listen) if args.listen else None
    except ValueError as exc:
        print(f"edgesteer lab: {exc}", file=sys.stderr)
        return 2
    if args.duration is not None and args.duration <= 0:
        print("edgesteer lab: --duration must be > 0 seconds", file=sys.stderr)
        return 2
    options = LabOptions(scenario=args.scenario, config=args.config, duration_s=args.duration,
                         headless=args.headless or args.json, listen=listen, seed=args.seed)
    out = sys.stderr if args.json else sys.stdout
    try:
        result = asyncio.run(run_lab(options, out))
    except ConfigInvalid as exc:
        print(f"edgesteer lab: invalid input, nothing started:\n{exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("edgesteer lab: interrupted", file=sys.stderr)
        return 130
    except OSError as exc:
        print(f"edgesteer lab: {exc}", file=sys.stderr)
        return 1
    if args.json:
        print(json.dumps(result.to_json(), indent=2))
    else:
        print("\n" + result.summary_text())
    return 0 if result.passed else 1
