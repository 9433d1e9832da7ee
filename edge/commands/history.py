"""``edgesteer history``: configuration versions and applied plans from the policy warehouse."""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from typing import Any

from redis.exceptions import RedisError

from edge.buses import BusConfigError, redis_client
from edge.commands.common import add_config_arg as add_config_args
from edge.commands.common import config_arg, load_or_report
from edge.config.schema import Config
from edge.history import ConfigVersion, PlanRecord, PolicyWarehouse
from probes.bus.redis_streams import close_client


def add_parser(sub: Any) -> None:
    p: argparse.ArgumentParser = sub.add_parser(
        "history", help="list config versions and applied plans (Redis policy warehouse)",
        description="List, newest first, the configuration versions (author, time, reason, "
        "diff) and the plans the leader applied (version, fencing token, author, reason) "
        "kept in the Redis of CONFIG's bus section.")
    add_config_args(p)
    p.add_argument("--limit", type=int, default=20, metavar="N",
                   help="entries of each kind (default 20)")
    p.add_argument("--diff", action="store_true", help="show each config version's diff")
    p.add_argument("--json", action="store_true",
                   help='print {"current": N, "configs": [...], "plans": [...]}')
    p.set_defaults(run=run)


def _when(at: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(at))


def _first_line(text: str) -> str:
    return text.strip().splitlines()[0] if text.strip() else "-"


def render(current: int | None, configs: list[ConfigVersion], plans: list[PlanRecord], *,
           diff: bool = False) -> str:
    lines = ["config versions (newest first):"]
    for c in configs:
        mark = "*" if c.version == current else " "
        lines.append(f" {mark} v{c.version:<4} {_when(c.at)}  {c.author}  {c.reason or '-'}")
        if diff and c.diff:
            lines += ["      " + ln for ln in c.diff.rstrip("\n").splitlines()]
    if not configs:
        lines.append("   (none)")
    lines.append("applied plans (newest first):")
    for p in plans:
        changes = f"{len(p.diff)} change(s)" if p.diff else "no change"
        lines.append(f"   plan v{p.version:<4} {_when(p.at)}  by {p.author} (token {p.token}), "
                     f"config v{p.config_version}, {changes}: {_first_line(p.reason)}")
    if not plans:
        lines.append("   (none)")
    return "\n".join(lines)


def load_redis_config(args: argparse.Namespace, command: str) -> Config | None:
    """The config of a command that works on the Redis policy history, or None after
    saying why (the caller exits 2)."""
    path = config_arg(args)
    if path is None:
        print(f"edgesteer {command}: give the config file (CONFIG or --config FILE)",
              file=sys.stderr)
        return None
    config = load_or_report(path, command)
    if config is not None and config.bus.kind != "redis":
        print(f"edgesteer {command}: the history lives in Redis; set bus.kind: redis",
              file=sys.stderr)
        return None
    return config


def run(args: argparse.Namespace) -> int:
    config = load_redis_config(args, "history")
    if config is None:
        return 2

    async def main() -> tuple[int | None, list[ConfigVersion], list[PlanRecord]]:
        client = redis_client(config)
        try:
            wh = PolicyWarehouse(client, prefix=config.bus.prefix, keep=config.bus.history)
            return (await wh.current_config_version(), await wh.configs(args.limit),
                    await wh.plans(args.limit))
        finally:
            await close_client(client)

    try:
        current, configs, plans = asyncio.run(main())
    except BusConfigError as exc:
        print(f"edgesteer history: {exc}", file=sys.stderr)
        return 2
    except (RedisError, OSError) as exc:
        print(f"edgesteer history: cannot read the warehouse: {exc}", file=sys.stderr)
        return 1
    if args.json:
        print(json.dumps({"current": current, "configs": [c.to_json() for c in configs],
                          "plans": [p.to_json() for p in plans]}, indent=2, sort_keys=True))
    else:
        print(render(current, configs, plans, diff=args.diff))
    return 0
