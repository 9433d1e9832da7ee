"""``edgesteer apply``: push the plan into the external DNS servers of ``backends:``.

Like ``terraform apply`` without a confirmation prompt: ``apply CONFIG`` shows the diff per
backend and applies it; ``--dry-run`` shows the same diff and changes nothing (the
"plan" step of terraform / octoDNS). No ``--doit`` flag: the command's name says it acts,
and scripts that only want to look have ``--dry-run``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from typing import Any

from dns_backends import build_backends
from dns_backends.base import BackendError
from dns_backends.reconcile import SyncBackend, TargetDiff
from edge.commands.common import (
    UsageError,
    add_config_arg,
    add_state_arg,
    load_or_report,
    snapshot_from_states,
)
from edge.config.schema import BackendSettings
from edge.plan import Plan
from edge.steering.planner import plan as make_plan


def add_parser(sub: Any) -> None:
    p: argparse.ArgumentParser = sub.add_parser(
        "apply", help="push the plan into the DNS servers of `backends:` (BIND, Knot, "
        "PowerDNS, zone files)",
        description="Compute the plan from CONFIG (every link up unless --state says "
        "otherwise), show per backend what would change (+ add, ~ change, - delete), and "
        "apply it: only the difference is written, verified by reading back. With "
        "--dry-run nothing is written. Exit 1 when a backend failed (the others are still "
        "applied, and the message says what was and was not).")
    add_config_arg(p)
    add_state_arg(p)
    p.add_argument("--dry-run", action="store_true", help="show the diff, change nothing")
    p.add_argument("--backend", action="append", default=[], metavar="NAME",
                   help="only this backend (repeatable; default: all)")
    p.add_argument("--json", action="store_true", help="print the result as JSON")
    p.set_defaults(run=run)


def _where(s: BackendSettings) -> str:
    if s.kind == "rfc2136" and s.server is not None:
        return f"rfc2136 {s.server[0]}:{s.server[1]}"
    if s.kind == "powerdns":
        return f"powerdns {s.url}"
    return f"zonefile {s.path}"


def render(name: str, where: str, diffs: list[TargetDiff]) -> str:
    """A terraform-like block for one backend."""
    lines = [f"backend {name} ({where})"]
    counts = {"create": 0, "update": 0, "delete": 0}
    for td in diffs:
        lines.append(f"  {td.target.label}" + ("" if td.target.view is None
                                                else f" [segment {td.target.segment}]") + ":")
        for change in td.changes:
            counts[change.action] += 1
            lines.append(f"    {change.describe()}")
        if not td.changes:
            lines.append("    (no changes)")
    lines.append(f"  {counts['create']} to add, {counts['update']} to change, "
                 f"{counts['delete']} to delete.")
    return "\n".join(lines)


def _diff_json(diffs: list[TargetDiff]) -> list[dict[str, Any]]:
    return [{"zone": d.target.zone, "view": d.target.view, "segment": d.target.segment,
             "changes": [c.to_json() for c in d.changes]} for d in diffs]


async def _one(backend: SyncBackend, settings: BackendSettings, plan: Plan,
               dry_run: bool, as_json: bool) -> dict[str, Any]:
    out: dict[str, Any] = {"name": backend.name, "kind": settings.kind, "ok": True,
                           "error": None, "targets": [], "applied": 0}
    try:
        diffs = await backend.diff(plan)
        out["targets"] = _diff_json(diffs)
        if not as_json:
            print(render(backend.name, _where(settings), diffs), flush=True)
        if not dry_run and any(d.changes for d in diffs):
            result = await backend.apply(plan)
            out["applied"] = result.changed
            if not as_json:
                print(f"  applied {result.changed} changes, verified.", flush=True)
    except BackendError as exc:
        out["ok"], out["error"] = False, str(exc)
        if not as_json:
            print(f"backend {backend.name}: FAILED: {exc}", file=sys.stderr, flush=True)
    finally:
        await backend.aclose()
    return out


def run(args: argparse.Namespace) -> int:
    config = load_or_report(args.config, "apply")
    if config is None:
        return 2
    try:
        snapshot = snapshot_from_states(config, args.state)
    except UsageError as exc:
        print(f"edgesteer apply: {exc}", file=sys.stderr)
        return 2
    chosen = [s for s in config.backends if not args.backend or s.name in args.backend]
    unknown = set(args.backend) - {s.name for s in config.backends}
    if unknown or not chosen:
        known = ", ".join(s.name for s in config.backends) or "none"
        print(f"edgesteer apply: {args.config}: no backend "
              f"{', '.join(sorted(unknown)) if unknown else 'configured'} (backends: {known});"
              " add a `backends:` section", file=sys.stderr)
        return 2
    try:
        built = dict(zip((s.name for s in config.backends), build_backends(config),
                         strict=True))
    except ValueError as exc:
        print(f"edgesteer apply: {exc}", file=sys.stderr)
        return 2
    plan = make_plan(config, snapshot, version=1, now=time.time())

    async def main() -> list[dict[str, Any]]:
        results = []
        for settings in chosen:
            results.append(await _one(built[settings.name], settings, plan, args.dry_run,
                                      args.json))
        for name, backend in built.items():
            if name not in {s.name for s in chosen}:
                await backend.aclose()
        return results

    results = asyncio.run(main())
    if args.json:
        print(json.dumps({"plan_checksum": plan.checksum(), "dry_run": args.dry_run,
                          "backends": results}, indent=2, sort_keys=True))
    return 0 if all(r["ok"] for r in results) else 1
