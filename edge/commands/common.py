"""Helpers shared by the subcommands: loading config with the standard error report."""

from __future__ import annotations

import argparse
import logging
import sys
import time
from collections.abc import Sequence

from edge.config.loader import ConfigInvalid, load_config
from edge.config.schema import Config
from edge.health.state import HealthSnapshot, HealthState, LinkHealth


class UsageError(Exception):
    """Bad command-line input; the message says which argument and what was expected."""


def add_config_arg(p: argparse.ArgumentParser) -> None:
    """CONFIG as a positional argument or as ``--config FILE`` (edge.cli.main merges them
    into ``args.config`` and refuses a command run with neither)."""
    p.add_argument("config", metavar="CONFIG", nargs="?", help="edgesteer YAML config file")
    p.add_argument("--config", dest="config_option", metavar="FILE",
                   help="the same, as an option")
    p.set_defaults(config_required=True)


def config_arg(args: argparse.Namespace) -> str | None:
    """The config file given as CONFIG or as ``--config FILE`` (None: neither)."""
    path: str | None = args.config or getattr(args, "config_option", None)
    return path


# the commands that serve queries: a config warning (e.g. a segment that needs GeoIP data
# and has none) changes what they answer, so they log it at start-up
_SERVING_COMMANDS = frozenset({"run", "serve"})

log = logging.getLogger("edgesteer.config")


def load_or_report(path: str, command: str) -> Config | None:
    """The config, or None after printing every error to stderr (the caller exits 2).
    The serving commands log the config's warnings (``edgesteer check`` prints them)."""
    try:
        config = load_config(path)
    except ConfigInvalid as exc:
        print(f"edgesteer {command}: {path} is invalid, nothing done:\n{exc}", file=sys.stderr)
        return None
    if command in _SERVING_COMMANDS:
        for warning in config.warnings:
            log.warning("edgesteer %s: %s", command, warning)
    return config


def add_state_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument("--state", action="append", default=[], metavar="LINK=STATE",
                   help="what-if: assume this link state (up, degraded, down, unknown); "
                   "repeatable. Links not named are assumed up.")


def snapshot_from_states(config: Config, states: Sequence[str]) -> HealthSnapshot:
    """A snapshot with every link UP except the ``LINK=STATE`` overrides."""
    names = {lk.name for lk in config.links}
    chosen = {name: HealthState.UP for name in names}
    allowed = {s.value for s in HealthState}
    for item in states:
        link, sep, state = item.partition("=")
        if not sep or link not in names or state not in allowed:
            raise UsageError(
                f"--state {item!r}: expected LINK=STATE with LINK one of "
                f"{', '.join(sorted(names))} and STATE one of {', '.join(sorted(allowed))}")
        chosen[link] = HealthState(state)
    now = time.time()
    links = {name: LinkHealth(link=name, state=st, since=now,
                              reason="assumed (--state)" if st != HealthState.UP else "assumed")
             for name, st in chosen.items()}
    return HealthSnapshot(version=1, taken_at=now, links=links)
