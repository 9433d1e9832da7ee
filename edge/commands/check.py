"""``edgesteer check``: validate a config file and summarize it; starts nothing.

Exit 0 when the file is valid, 2 when it is not (every problem is listed, with file, line,
key path and fix). ``--print-schema`` prints the JSON Schema of the config format.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from edge.config.jsonschema import schema_text
from edge.config.loader import ConfigInvalid, load_config
from edge.config.schema import Config, Pool


def add_parser(sub: Any) -> None:
    p: argparse.ArgumentParser = sub.add_parser(
        "check", help="validate a config file and print a summary",
        description="Validate CONFIG and print what it defines. Every problem is reported at "
        "once as FILE:LINE: KEY_PATH: MESSAGE (fix: ...). Exit 0 when valid, 2 when not. "
        "Nothing is started.")
    p.add_argument("config", metavar="CONFIG", nargs="?", help="the YAML config file")
    p.add_argument("--json", action="store_true", help="print the result as JSON on stdout")
    p.add_argument("--print-schema", action="store_true",
                   help="print the JSON Schema of the config format and exit")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    if args.print_schema:
        sys.stdout.write(schema_text())
        return 0
    if args.config is None:
        print("edgesteer check: CONFIG is required (or --print-schema)", file=sys.stderr)
        return 2
    try:
        config = load_config(args.config)
    except ConfigInvalid as exc:
        if args.json:
            print(json.dumps({"ok": False, "file": args.config,
                              "errors": [e.to_json() for e in exc.errors]}, indent=2))
        else:
            n = len(exc.errors)
            print(f"{exc}\nedgesteer check: {args.config} is invalid "
                  f"({n} error{'s' if n != 1 else ''})", file=sys.stderr)
        return 2
    summary = summarize(config)
    if args.json:
        print(json.dumps({"ok": True, "file": args.config, "summary": summary,
                          "warnings": [w.to_json() for w in config.warnings]}, indent=2))
    else:
        # warnings are part of the report (stdout): the config is valid, exit 0
        print(f"{args.config}: OK\n{summary_text(summary)}"
              + "".join(f"\n{w}" for w in config.warnings))
    return 0


def summarize(config: Config) -> dict[str, Any]:
    """What a config defines, as plain JSON-able data."""
    return {
        "node": {"name": config.node.name, "site": config.node.site},
        "counts": {"sites": len(config.sites), "links": len(config.links),
                   "targets": len(config.targets), "zones": len(config.zones),
                   "lines": len(config.lines), "segments": len(config.segments),
                   "services": len(config.services), "policies": len(config.policies)},
        "links": [{"name": lk.name, "carrier": lk.carrier, "priority": lk.priority,
                   "weight": lk.weight} for lk in config.links],
        "services": [{
            "name": svc.name, "zone": svc.zone, "ttl": svc.ttl,
            "failover_ttl": svc.failover_ttl,
            "pools": [_pool(config, pool) for pool in svc.pools],
            "rules": [{"segment": r.segment, "pools": list(r.pools)}
                      for r in (config.policies[svc.name].rules
                                if svc.name in config.policies else ())],
        } for svc in config.services],
    }


def _pool(config: Config, pool: Pool) -> dict[str, Any]:
    """A pool with its effective tier: its own, else the best priority of its links."""
    links = list(dict.fromkeys(ep.link for ep in pool.endpoints))
    tier = pool.tier if pool.tier is not None else min(config.link(n).priority for n in links)
    return {"name": pool.name, "tier": tier,
            "tier_from": "pool" if pool.tier is not None else "links", "links": links}


def summary_text(summary: dict[str, Any]) -> str:
    counts = ", ".join(f"{what}: {n}" for what, n in summary["counts"].items())
    lines = [f"node {summary['node']['name']} at site {summary['node']['site']}", counts]
    for lk in summary["links"]:
        lines.append(f"link {lk['name']}: priority {lk['priority']}, weight {lk['weight']:g}"
                     f" ({lk['carrier']})")
    for svc in summary["services"]:
        lines.append(f"service {svc['name']} (zone {svc['zone']}, ttl {svc['ttl']}, "
                     f"failover ttl {svc['failover_ttl']})")
        for pool in svc["pools"]:
            src = "" if pool["tier_from"] == "pool" else " (from link priority)"
            lines.append(f"  pool {pool['name']}: tier {pool['tier']}{src}, "
                         f"links {', '.join(pool['links'])}")
        for rule in svc["rules"]:
            lines.append(f"  rule {rule['segment']} -> {', '.join(rule['pools'])}")
    return "\n".join(lines)
