"""``edgesteer explain``: why a client gets the answers it gets for a service."""

from __future__ import annotations

import argparse
import json
import sys
import time
from typing import Any

import netaddr

from edge.commands.common import (
    UsageError,
    add_config_arg,
    add_state_arg,
    load_or_report,
    snapshot_from_states,
)
from edge.steering.explain import explain_answer_set
from edge.steering.planner import plan as make_plan
from geo.client import ClientInfo
from geo.segment import DEFAULT_SEGMENT, SegmentMatcher


def add_parser(sub: Any) -> None:
    p: argparse.ArgumentParser = sub.add_parser(
        "explain", help="why a client (or segment) gets the answers it gets",
        description="Explain the answers for SERVICE: which segment the client falls in and "
        "why, which failover tier serves, and each reason the planner recorded. Link states "
        "are assumed up unless --state says otherwise.")
    add_config_arg(p)
    p.add_argument("service", metavar="SERVICE", help="steered DNS name, e.g. www.example.hk")
    who = p.add_mutually_exclusive_group()
    who.add_argument("--client", metavar="ADDR[/LEN]",
                     help="client or ECS subnet, e.g. 202.96.1.0/24 (default: the default "
                     "segment)")
    who.add_argument("--segment", metavar="NAME", help="explain this segment directly")
    add_state_arg(p)
    p.add_argument("--json", action="store_true", help="print the explanation as JSON")
    p.set_defaults(run=run)


def _client(text: str) -> ClientInfo:
    try:
        net = netaddr.IPNetwork(text)
    except (netaddr.AddrFormatError, ValueError):
        raise UsageError(f"--client {text!r}: expected an IP address or subnet") from None
    plen = net.prefixlen if "/" in text else None
    return ClientInfo.from_text(str(net.ip), plen)


def run(args: argparse.Namespace) -> int:
    config = load_or_report(args.config, "explain")
    if config is None:
        return 2
    service = args.service.lower().rstrip(".")
    try:
        config.service(service)
        snapshot = snapshot_from_states(config, args.state)
        if args.client:
            segment = SegmentMatcher(config.segments).match(_client(args.client))
            why = f"client {args.client} matches segment {segment!r}"
        else:
            segment = args.segment or DEFAULT_SEGMENT
            why = f"segment {segment!r} given"
    except KeyError:
        names = ", ".join(s.name for s in config.services)
        print(f"edgesteer explain: no service {service!r} in {args.config} "
              f"(services: {names})", file=sys.stderr)
        return 2
    except UsageError as exc:
        print(f"edgesteer explain: {exc}", file=sys.stderr)
        return 2
    result = make_plan(config, snapshot, version=1, now=time.time())
    aset = result.get(service, segment) or result.get(service, DEFAULT_SEGMENT)
    if aset is None:
        print(f"edgesteer explain: the plan has no answers for {service}", file=sys.stderr)
        return 1
    if aset.segment != segment:
        why += f"; the service has no rule for it, so the {aset.segment!r} rule applies"
    if args.json:
        print(json.dumps({"service": service, "segment": aset.segment, "why_segment": why,
                          "answer_set": aset.to_json()}, indent=2, sort_keys=True))
    else:
        print(why)
        print(explain_answer_set(aset))
    return 0
