"""``edgesteer rollback VERSION``: make a stored configuration version current again.

The stored text is validated as any config is, then the plan it would make (from the link
states recorded with the last applied plan) goes through the guard against the plan in force,
with the guard settings in force: a freeze refuses a rollback that changes answers, as it
refuses any change, unless ``--force``. Then the text is recorded as a new version (reason
"rollback to vN") and made current; every engine reloads it within a tick and the leader
plans it through its own guard against live health, like any other change.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from typing import Any

from redis.exceptions import RedisError

from edge import plancodec
from edge.buses import BusConfigError, redis_client
from edge.commands.common import add_config_arg as add_config_args
from edge.commands.history import load_redis_config
from edge.config.loader import ConfigInvalid, parse_config
from edge.config.schema import Config
from edge.health.state import HealthSnapshot, HealthState, LinkHealth
from edge.history import PolicyWarehouse, default_author
from edge.plan import Plan
from edge.steering.explain import explain_diff
from edge.steering.guard import UnsafePlan, guard
from edge.steering.planner import plan as make_plan
from probes.bus.redis_streams import close_client


def add_parser(sub: Any) -> None:
    p: argparse.ArgumentParser = sub.add_parser(
        "rollback", help="bring back a stored config version (through the guard)",
        description="Validate stored config VERSION, check the plan it makes against the "
        "plan in force with the guard, then make it the current version for every engine.")
    p.add_argument("version", metavar="VERSION", type=int, help="config version (history)")
    add_config_args(p)
    p.add_argument("--reason", default="", help="why (stored with the new version)")
    p.add_argument("--author", help="who (default: user@host)")
    p.add_argument("--force", action="store_true", help="bypass the guard's refusal")
    p.add_argument("--json", action="store_true", help="print the outcome as JSON")
    p.set_defaults(run=run)


class RollbackRefused(Exception):
    """Nothing was changed; the message says why (exit code in ``code``)."""

    def __init__(self, message: str, code: int) -> None:
        super().__init__(message)
        self.code = code


def _snapshot(states: dict[str, str], config: Config) -> HealthSnapshot:
    now = time.time()
    links = {}
    for link in config.links:
        try:
            state = HealthState(states.get(link.name, "up"))
        except ValueError:
            state = HealthState.UNKNOWN
        links[link.name] = LinkHealth(link=link.name, state=state, since=now,
                                      reason="as recorded with the last applied plan")
    return HealthSnapshot(version=1, taken_at=now, links=links)


async def rollback(wh: PolicyWarehouse, version: int, *, author: str, reason: str,
                   force: bool = False) -> dict[str, Any]:
    """The rollback itself (see module doc); raises RollbackRefused."""
    target = await wh.config(version)
    if target is None:
        raise RollbackRefused(f"config v{version} is not in the warehouse (see history)", 2)
    current_version = await wh.current_config_version()
    if current_version == version:
        raise RollbackRefused(f"config v{version} is already current", 2)
    try:
        config = parse_config(target.text, f"warehouse config v{version}")
    except ConfigInvalid as exc:
        raise RollbackRefused(f"config v{version} is invalid today, nothing done:\n{exc}",
                              2) from None
    current = await wh.config(current_version) if current_version is not None else None
    in_force = parse_config(current.text, f"config v{current.version}") if current else config
    last = await wh.last_plan()
    previous: Plan | None = plancodec.from_json(last.plan) if last is not None else None
    snapshot = _snapshot(dict(last.links) if last else {}, config)
    proposed = make_plan(config, snapshot, version=(previous.version if previous else 0) + 1,
                         now=time.time())
    try:
        guard(previous, proposed, in_force.guard, force=force)
    except UnsafePlan as exc:
        raise RollbackRefused(f"refused by the guard, nothing done: {exc}", 1) from None
    diff = (previous or Plan()).diff(proposed)
    why = f"rollback to v{version}" + (f": {reason}" if reason else "")
    recorded, _ = await wh.record_config(target.text, author=author, reason=why, force=True)
    return {"version": recorded.version, "from": current_version, "to": version,
            "reason": why, "changes": diff.to_json(), "explain": explain_diff(diff)}


def run(args: argparse.Namespace) -> int:
    config = load_redis_config(args, "rollback")
    if config is None:
        return 2

    async def main() -> dict[str, Any]:
        client = redis_client(config)
        try:
            wh = PolicyWarehouse(client, prefix=config.bus.prefix, keep=config.bus.history)
            return await rollback(wh, args.version, author=args.author or default_author(),
                                  reason=args.reason, force=args.force)
        finally:
            await close_client(client)

    try:
        outcome = asyncio.run(main())
    except RollbackRefused as exc:
        print(f"edgesteer rollback: {exc}", file=sys.stderr)
        return exc.code
    except BusConfigError as exc:
        print(f"edgesteer rollback: {exc}", file=sys.stderr)
        return 2
    except (RedisError, OSError) as exc:
        print(f"edgesteer rollback: cannot reach the warehouse: {exc}", file=sys.stderr)
        return 1
    if args.json:
        print(json.dumps(outcome, indent=2, sort_keys=True))
    else:
        print(f"config v{outcome['version']} = v{outcome['to']} is now current "
              f"(was v{outcome['from']}); engines reload it within a tick.\n"
              f"expected answer changes (last recorded link states):\n{outcome['explain']}")
    return 0
