"""``edgesteer override``: operator overrides that survive restarts (see
``edge.steering.overrides``), kept in ``guard.state_dir``; a running engine picks a change
up within one cycle."""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import replace
from types import MappingProxyType
from typing import Any

from edge.commands.common import load_or_report
from edge.config.schema import Config
from edge.steering.overrides import Overrides, load_overrides, save_overrides
from edge.steering.statefile import StateFileError, state_dir

ACTIONS = ("list", "drain", "up", "down", "pin", "freeze", "clear")


def add_parser(sub: Any) -> None:
    p: argparse.ArgumentParser = sub.add_parser(
        "override", help="drain a link, force it up/down, pin a tier, freeze a service",
        description="Edit the operator overrides in guard.state_dir: `drain LINK` (weight 0), "
        "`up LINK` / `down LINK` (force the link's state), `pin SERVICE TIER` (serve only "
        "that tier), `freeze SERVICE` (keep its answers), `clear NAME` (drop the overrides "
        "of a link or service; `clear all` drops every one), `list`. They survive restarts; "
        "a running engine applies them within one cycle.")
    p.add_argument("--config", required=True, metavar="FILE", help="edgesteer YAML config")
    p.add_argument("action", choices=ACTIONS)
    p.add_argument("args", nargs="*", metavar="ARG")
    p.add_argument("--json", action="store_true", help="print the overrides as JSON")
    p.set_defaults(run=run)


class _Bad(Exception):
    pass


def _link(config: Config, name: str) -> str:
    if name not in {lk.name for lk in config.links}:
        raise _Bad(f"no link {name!r} (links: {', '.join(lk.name for lk in config.links)})")
    return name


def _service(config: Config, name: str) -> str:
    name = name.lower().rstrip(".")
    if name not in {s.name for s in config.services}:
        raise _Bad(f"no service {name!r} (services: "
                   f"{', '.join(s.name for s in config.services)})")
    return name


def _arity(args: list[str], n: int, usage: str) -> None:
    if len(args) != n:
        raise _Bad(f"expected {usage}")


def change(config: Config, ov: Overrides, action: str, args: list[str]) -> Overrides:
    links, pins, frozen = dict(ov.links), dict(ov.pins), set(ov.frozen)
    if action == "list":
        _arity(args, 0, "no arguments")
    elif action in ("drain", "up", "down"):
        _arity(args, 1, f"{action} LINK")
        links[_link(config, args[0])] = action  # type: ignore[assignment]
    elif action == "pin":
        _arity(args, 2, "pin SERVICE TIER")
        if not args[1].isdigit() or not 1 <= int(args[1]) <= 9:
            raise _Bad(f"TIER: expected 1..9, got {args[1]!r}")
        pins[_service(config, args[0])] = int(args[1])
    elif action == "freeze":
        _arity(args, 1, "freeze SERVICE")
        frozen.add(_service(config, args[0]))
    else:  # clear
        _arity(args, 1, "clear LINK|SERVICE|all")
        name = args[0]
        if name == "all":
            return Overrides()
        svc = name.lower().rstrip(".")
        if name not in links and svc not in pins and svc not in frozen:
            raise _Bad(f"no override on {name!r}")
        links.pop(name, None)
        pins.pop(svc, None)
        frozen.discard(svc)
    return replace(ov, links=MappingProxyType(links), pins=MappingProxyType(pins),
                   frozen=frozenset(frozen))


def run(args: argparse.Namespace) -> int:
    config = load_or_report(args.config, "override")
    if config is None:
        return 2
    directory = state_dir(config)
    if directory is None:
        print(f"edgesteer override: {args.config} sets no guard.state_dir, so overrides "
              "could not survive a restart; set it (e.g. guard: {state_dir: state})",
              file=sys.stderr)
        return 2
    try:
        ov = load_overrides(directory)
        new = change(config, ov, args.action, args.args)
        if new != ov:
            save_overrides(directory, new)
    except (_Bad, StateFileError) as exc:
        print(f"edgesteer override {args.action}: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:
        print(f"edgesteer override: {exc}", file=sys.stderr)
        return 1
    if args.json:
        print(json.dumps(new.to_json(), indent=2))
    else:
        print("\n".join(new.describe()) or "no overrides")
    return 0
