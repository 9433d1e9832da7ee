"""``edgesteer plan``: the plan the engine would make now, and its diff against the last
applied one (the engine's persisted plan in ``guard.state_dir``)."""

from __future__ import annotations

import argparse
import json
import sys
import time
from typing import Any

from edge.commands.common import UsageError, add_state_arg, load_or_report
from edge.commands.explain import health_for
from edge.plan import Plan
from edge.steering.anycast import explain_announcements, with_anycast
from edge.steering.explain import explain_diff, explain_plan
from edge.steering.overrides import apply_overrides, load_overrides
from edge.steering.planner import plan as make_plan
from edge.steering.statefile import StateFileError, load_engine_state, state_dir


def add_parser(sub: Any) -> None:
    p: argparse.ArgumentParser = sub.add_parser(
        "plan", help="compute the plan for a config and diff it against the applied one",
        description="Compute the plan the steering engine would make from CONFIG and print "
        "each (service, segment) answer set with its reasons, then the diff against the "
        "last applied plan (persisted by the engine in guard.state_dir, when set). Health: "
        "the engine's persisted link states if any, else every link up; --state overrides "
        "(what-if). Operator overrides apply. Applies nothing.")
    p.add_argument("config_pos", metavar="CONFIG", nargs="?", help="the YAML config file")
    p.add_argument("--config", metavar="FILE", help="the YAML config file")
    add_state_arg(p)
    p.add_argument("--json", action="store_true", help="print the plan and diff as JSON")
    p.add_argument("--backends", action="store_true",
                   help="also read every server of `backends:` and show what applying this "
                   "plan would change there (as `edgesteer apply --dry-run`); exit 1 if one "
                   "cannot be read")
    p.set_defaults(run=run)


def _backend_diffs(config: Any, result: Plan, as_json: bool) -> list[dict[str, Any]]:
    """Per backend, the dry-run diff of ``edgesteer apply`` (printed unless ``as_json``)."""
    import asyncio

    from dns_backends import build_backends
    from edge.commands.apply import _one

    built = build_backends(config)

    async def main() -> list[dict[str, Any]]:
        return [await _one(backend, settings, result, True, as_json)
                for settings, backend in zip(config.backends, built, strict=True)]

    return asyncio.run(main())


def run(args: argparse.Namespace) -> int:
    path = args.config or args.config_pos
    if path is None:
        print("edgesteer plan: --config FILE is required", file=sys.stderr)
        return 2
    config = load_or_report(path, "plan")
    if config is None:
        return 2
    try:
        snapshot, health_from = health_for(config, args.state)
        overrides = load_overrides(state_dir(config))
    except (UsageError, StateFileError) as exc:
        print(f"edgesteer plan: {exc}", file=sys.stderr)
        return 2
    directory = state_dir(config)
    persisted = load_engine_state(directory) if directory is not None else None
    applied: Plan | None = persisted.plan if persisted is not None else None
    cfg, snap = apply_overrides(config, snapshot, overrides)
    version = (applied.version if applied is not None else 0) + 1
    result = make_plan(cfg, snap, version=version, now=time.time())
    if cfg.anycast.prefixes:  # the anycast (BGP) part
        result = with_anycast(result, cfg, snap)
    diff = (applied or Plan()).diff(result)
    if args.json:
        out = {"plan": result.to_json(), "health_from": health_from,
               "applied": None if applied is None else {
                   "version": applied.version, "checksum": applied.checksum()},
               "diff": diff.to_json()}
        if args.backends:
            try:
                out["backends"] = backends = _backend_diffs(cfg, result, as_json=True)
            except ValueError as exc:
                print(f"edgesteer plan: {exc}", file=sys.stderr)
                return 2
            print(json.dumps(out, indent=2, sort_keys=True))
            return 0 if all(b["ok"] for b in backends) else 1
        print(json.dumps(out, indent=2, sort_keys=True))
        return 0
    print(explain_plan(result))
    if result.announcements:
        print()
        print(explain_announcements(result.announcements))
    print()
    if applied is None:
        print("diff: no applied plan on record (guard.state_dir unset or empty)")
    else:
        print(f"diff against the applied plan v{applied.version} "
              f"(checksum {applied.checksum()}, health: {health_from}):")
        print(explain_diff(diff))
    if not args.backends:
        return 0
    print()
    try:
        backends = _backend_diffs(cfg, result, as_json=False)
    except ValueError as exc:
        print(f"edgesteer plan: {exc}", file=sys.stderr)
        return 2
    return 0 if all(b["ok"] for b in backends) else 1
