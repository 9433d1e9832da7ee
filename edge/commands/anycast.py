"""``edgesteer anycast``: the anycast part of the plan, with reasons, and what each speaker
would be told. Applies nothing."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from edge.anycast.base import sessions_of
from edge.anycast.exabgp import exabgp_config
from edge.anycast.render import bird_include, exabgp_announce, exabgp_withdraw
from edge.commands.common import (
    UsageError,
    add_config_arg,
    add_state_arg,
    load_or_report,
    snapshot_from_states,
)
from edge.config.schema import Config
from edge.health.state import HealthSnapshot
from edge.plan import Announcement, AnnouncementKey
from edge.steering.anycast import explain_announcements, plan_anycast


def add_parser(sub: Any) -> None:
    p: argparse.ArgumentParser = sub.add_parser(
        "anycast", help="show the anycast (BGP) plan for a config (what-if link states)",
        description="Compute, for every anycast prefix and BGP session, what the engine "
        "would announce (prepends, MED, communities) or withdraw, with the reasons, from "
        "CONFIG with every link up unless --state says otherwise. Applies nothing.")
    add_config_arg(p)
    add_state_arg(p)
    p.add_argument("--render", action="store_true",
                   help="also print what each speaker would be given (BIRD include file, "
                   "ExaBGP configuration and API commands)")
    p.add_argument("--json", action="store_true", help="print the announcements as JSON")
    p.set_defaults(run=run)


def render(config: Config, routes: dict[AnnouncementKey, Announcement]) -> str:
    out = []
    for sp in config.anycast.speakers:
        sessions = sessions_of(config, sp.name)
        names = {s.name: s for s in sessions}
        mine = {k: a for k, a in routes.items() if k[1] in names}
        out.append(f"--- speaker {sp.name} ({sp.kind}) ---")
        if sp.kind == "bird":
            out.append(f"# {sp.include}")
            out.append(bird_include(sessions, tuple(p.prefix for p in config.anycast.prefixes),
                                    mine))
        else:
            try:
                rid = sp.router_id or next(s.bgp.local_address for s in sessions
                                           if s.bgp.local_address and ":" not in
                                           s.bgp.local_address)
            except StopIteration:
                rid = "(router_id needed)"
            out.append(exabgp_config(sessions, rid, "SOCKET"))
            out.append("# API commands:")
            for k in sorted(mine):
                a = mine[k]
                s = names[a.session]
                out.append(exabgp_announce(s, a) if a.action == "announce"
                           else exabgp_withdraw(s, a.prefix))
    return "\n".join(out)


def run(args: argparse.Namespace) -> int:
    config = load_or_report(args.config, "anycast")
    if config is None:
        return 2
    try:
        snapshot = snapshot_from_states(config, args.state)
    except UsageError as exc:
        print(f"edgesteer anycast: {exc}", file=sys.stderr)
        return 2
    routes = dict(plan_anycast(config, snapshot))
    if args.json:
        print(json.dumps([routes[k].to_json() for k in sorted(routes)], indent=2,
                         sort_keys=True))
        return 0
    print(explain_announcements(routes))
    if args.render:
        print(render(config, routes))
    return 0


def explain_prefix(config: Config, prefix: str, snapshot: HealthSnapshot, *,
                   as_json: bool = False) -> int:
    """``edgesteer explain CONFIG PREFIX``: the announcements of one anycast prefix, with
    their reasons, under ``snapshot``."""
    routes = {k: a for k, a in plan_anycast(config, snapshot).items() if k[0] == prefix}
    if as_json:
        print(json.dumps({"prefix": prefix,
                          "announcements": [routes[k].to_json() for k in sorted(routes)]},
                         indent=2, sort_keys=True))
    else:
        print(explain_announcements(routes))
    return 0
