"""``edgesteer`` command line: one subcommand per module in ``edge.commands``."""

from __future__ import annotations

import argparse
import contextlib
import importlib
import logging
import os
import sys
from collections.abc import Sequence

# Subcommand name -> module in edge.commands. Order is the order shown in --help.
COMMANDS: tuple[str, ...] = (
    "lab",
    "check",
    "plan",
    "apply",
    "explain",
    "replay",
    "override",
    "geo",
    "run",
    "serve",
    "steer",
    "history",
    "rollback",
    "agent",
    "probe",
    "anycast",
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="edgesteer",
        description="Network-aware edge and DNS traffic manager: probe links, steer DNS, "
        "fail over without flapping.",
    )
    parser.add_argument("-v", "--verbose", action="count", default=0,
                        help="more log output (-vv for debug)")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name in COMMANDS:
        module = importlib.import_module(f"edge.commands.{name.replace('-', '_')}")
        module.add_parser(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    option = getattr(args, "config_option", None)
    if option is not None:
        if args.config and args.config != option:
            parser.error(f"{args.command}: CONFIG {args.config!r} and --config {option!r} differ")
        args.config = option
    if getattr(args, "config_required", False) and not args.config:
        print(f"edgesteer {args.command}: give the config file (CONFIG or --config FILE)",
              file=sys.stderr)
        return 2
    level = logging.WARNING - 10 * min(args.verbose, 2)
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        code: int = args.run(args)
    except BrokenPipeError:
        # `edgesteer plan ... | head`: the reader left; not an error of ours.
        with contextlib.suppress(OSError):
            sys.stdout = open(os.devnull, "w")  # noqa: SIM115 - silence the flush at exit
        return 0
    return code


if __name__ == "__main__":
    sys.exit(main())
