"""``edgesteer plan``: the plan the engine would make for a config and a set of link states."""

from __future__ import annotations

import argparse
import json
import sys
import time
from typing import Any

from edge.commands.common import (
    UsageError,
    add_config_arg,
    add_state_arg,
    load_or_report,
    snapshot_from_states,
)
from edge.steering.explain import explain_plan
from edge.steering.planner import plan as make_plan


def add_parser(sub: Any) -> None:
    p: argparse.ArgumentParser = sub.add_parser(
        "plan", help="compute and print the plan for a config (what-if link states)",
        description="Compute the plan the steering engine would make from CONFIG, with every "
        "link up unless --state says otherwise, and print each (service, segment) answer set "
        "with its reasons. Applies nothing.")
    add_config_arg(p)
    add_state_arg(p)
    p.add_argument("--json", action="store_true", help="print the plan as JSON")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    config = load_or_report(args.config, "plan")
    if config is None:
        return 2
    try:
        snapshot = snapshot_from_states(config, args.state)
    except UsageError as exc:
        print(f"edgesteer plan: {exc}", file=sys.stderr)
        return 2
    result = make_plan(config, snapshot, version=1, now=time.time())
    if args.json:
        print(json.dumps(result.to_json(), indent=2, sort_keys=True))
    else:
        print(explain_plan(result))
    return 0
