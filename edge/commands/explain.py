"""``edgesteer explain``: why a client gets the answers it gets for a name.

``edgesteer explain --config FILE [--client IP] [--ecs PREFIX] QNAME [QTYPE] [--json]``
(the older ``edgesteer explain CONFIG SERVICE`` form still works). The client is the ECS
subnet when given, else the resolver address, as the DNS server sees it; link health is
the engine's last persisted state (``guard.state_dir``) when there is one, else every link
is assumed up; ``--state LINK=STATE`` overrides either (what-if). Operator overrides in the
state directory apply, as they do in the engine.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import replace
from types import MappingProxyType
from typing import Any

import maxminddb
import netaddr

from dns_backends.builtin.clients import ClientMapper
from edge.commands.anycast import explain_prefix
from edge.commands.common import UsageError, add_state_arg, load_or_report, snapshot_from_states
from edge.config.schema import Config
from edge.health.state import HealthSnapshot, LinkHealth
from edge.plan import AnswerSet
from edge.steering.explain import explain_answer_set
from edge.steering.overrides import Overrides, apply_overrides, load_overrides
from edge.steering.planner import plan as make_plan
from edge.steering.statefile import StateFileError, load_engine_state, state_dir
from geo.client import ClientInfo
from geo.geoip import GeoIP
from geo.segment import DEFAULT_SEGMENT, SegmentMatcher

QTYPES = ("A", "AAAA", "CNAME", "ANY")


def add_parser(sub: Any) -> None:
    p: argparse.ArgumentParser = sub.add_parser(
        "explain", help="why a client gets the answers it gets for a name",
        description="Explain the answers for QNAME [QTYPE]: the client (ECS subnet, else "
        "resolver address), the segment it matches and why, the candidates with their "
        "health, the failover tier that serves and each reason of the chain. Health: the "
        "engine's persisted state (guard.state_dir) if any, else every link up; --state "
        "overrides (what-if).")
    p.add_argument("--config", metavar="FILE", help="edgesteer YAML config")
    p.add_argument("words", nargs="+", metavar="QNAME [QTYPE]",
                   help="the steered name and optionally A, AAAA, CNAME or ANY")
    p.add_argument("--client", metavar="IP", help="the resolver's address")
    p.add_argument("--ecs", metavar="PREFIX",
                   help="EDNS Client Subnet, e.g. 202.96.1.0/24 (wins over --client)")
    p.add_argument("--segment", metavar="NAME", help="explain this segment directly")
    p.add_argument("--geoip", action="append", default=[], metavar="DB",
                   help="MaxMind-format database to look the client up in (repeatable, "
                   "first value wins): fills country, ASN, line and region")
    add_state_arg(p)
    p.add_argument("--json", action="store_true", help="print the explanation as JSON")
    p.set_defaults(run=run)


def client_info(client: str | None, ecs: str | None) -> tuple[ClientInfo | None, str]:
    """The client the data plane would see, and how it was chosen."""
    if ecs is not None:
        try:
            net = netaddr.IPNetwork(ecs)
        except (netaddr.AddrFormatError, ValueError):
            raise UsageError(f"--ecs {ecs!r}: expected a prefix, e.g. 202.96.1.0/24") from None
        plen = net.prefixlen if "/" in ecs else None
        return ClientInfo.from_text(str(net.network), plen), f"ECS {net.cidr}"
    if client is not None:
        try:
            net = netaddr.IPNetwork(client)
        except (netaddr.AddrFormatError, ValueError):
            raise UsageError(f"--client {client!r}: expected an IP address") from None
        if "/" in client:  # the older form: --client ADDR/LEN meant a subnet
            return ClientInfo.from_text(str(net.network), net.prefixlen), f"subnet {net.cidr}"
        return ClientInfo.from_text(str(net.ip)), f"resolver {net.ip} (no ECS)"
    return None, ""


def _classify(config: Config, client: ClientInfo, extra: list[str],
              ) -> tuple[ClientInfo, str, int | None, dict[str, Any] | None]:
    """(client enriched by GeoIP, segment, ECS scope, GeoIP fields) as the DNS server sees
    them: the same ``ClientMapper`` decides. GeoIP: the ``--geoip`` databases first (what
    if), then the config's ``geo.databases``; fields None without any database."""
    databases = [*extra, *config.geo.databases]
    geo = GeoIP(databases) if databases else None
    try:
        mapper = ClientMapper(SegmentMatcher(config.segments), geo=geo)
        fields: dict[str, Any] | None = None
        if geo is not None:
            client, plen = geo.enrich_scoped(client)
            fields = {"country": client.country, "asn": client.asn, "line": client.line,
                      "region": client.region, "prefix_len": plen,
                      "location": list(client.location) if client.location else None}
        if not (client.from_ecs and client.prefix_len > 0):
            return client, mapper.for_peer(str(client.address)), None, fields
        width = 4 if client.address.version == 4 else 16
        packed = client.address.packed[:(client.prefix_len + 7) // 8]
        segment, scope = mapper.for_ecs(1 if width == 4 else 2, client.prefix_len, packed)
        return client, segment, scope, fields
    finally:
        if geo is not None:
            geo.close()


def health_for(config: Config, states: list[str]) -> tuple[HealthSnapshot, str]:
    directory = state_dir(config)
    persisted = load_engine_state(directory) if directory is not None else None
    if persisted is None or states:
        what = "assumed up" if not states else "what-if --state"
        return snapshot_from_states(config, states), what
    now = time.time()
    links = {name: LinkHealth(name, st, now, f"persisted by the engine ({st})",
                              toward=persisted.toward.get(name, MappingProxyType({})),
                              falling_from=persisted.falling_from.get(name))
             for name, st in persisted.links.items()}
    return HealthSnapshot(version=1, taken_at=now, links=links), (
        f"engine state saved at {time.strftime('%H:%M:%S', time.localtime(persisted.saved_at))}")


def _overrides(config: Config) -> Overrides:
    try:
        return load_overrides(state_dir(config))
    except StateFileError as exc:
        print(f"edgesteer explain: ignoring overrides: {exc}", file=sys.stderr)
        return Overrides()


def _filter(aset: AnswerSet, qtype: str) -> AnswerSet:
    if qtype == "ANY":
        return aset
    keep = tuple(a for a in aset.answers if a.rrtype in (qtype, "CNAME"))
    return replace(aset, answers=keep)


def run(args: argparse.Namespace) -> int:
    words = list(args.words)
    path = args.config
    if path is None:
        if len(words) < 2:
            print("edgesteer explain: --config FILE is required", file=sys.stderr)
            return 2
        path = words.pop(0)
    if len(words) > 2 or (len(words) == 2 and words[1].upper() not in QTYPES):
        print(f"edgesteer explain: expected QNAME [QTYPE] with QTYPE one of "
              f"{', '.join(QTYPES)}, got {' '.join(words)}", file=sys.stderr)
        return 2
    qname = words[0].lower().rstrip(".")
    qtype = words[1].upper() if len(words) == 2 else "ANY"
    config = load_or_report(path, "explain")
    if config is None:
        return 2
    if any(p.prefix == words[0] for p in config.anycast.prefixes):  # an anycast prefix
        try:
            snapshot, _ = health_for(config, args.state)
        except UsageError as exc:
            print(f"edgesteer explain: {exc}", file=sys.stderr)
            return 2
        return explain_prefix(config, words[0], snapshot, as_json=args.json)
    try:
        service = config.service(qname)
    except KeyError:
        names = ", ".join(s.name for s in config.services)
        print(f"edgesteer explain: no service {qname!r} in {path} (services: {names})",
              file=sys.stderr)
        return 2
    try:
        client, how = client_info(args.client, args.ecs)
        snapshot, health_from = health_for(config, args.state)
    except UsageError as exc:
        print(f"edgesteer explain: {exc}", file=sys.stderr)
        return 2
    geoip: dict[str, Any] | None = None
    scope: int | None = None
    if client is not None:
        try:
            client, segment, scope, geoip = _classify(config, client, args.geoip)
        except (OSError, ValueError, maxminddb.InvalidDatabaseError) as exc:
            print(f"edgesteer explain: --geoip: {exc}", file=sys.stderr)
            return 2
        if geoip is not None:
            found = ", ".join(f"{k} {v}" for k, v in geoip.items()
                              if k in ("country", "asn", "line", "region") and v is not None)
            how += f" [geoip: {found or 'not found'}]"
        why = f"client {how} matches segment {segment!r}"
    else:
        segment = args.segment or DEFAULT_SEGMENT
        why = f"segment {segment!r} given" if args.segment else "no client given: default"
    ov = _overrides(config)
    cfg, snap = apply_overrides(config, snapshot, ov)
    result = make_plan(cfg, snap, version=1, now=time.time())
    aset = result.get(service.name, segment) or result.get(service.name, DEFAULT_SEGMENT)
    if aset is None:
        print(f"edgesteer explain: the plan has no answers for {service.name}", file=sys.stderr)
        return 1
    if aset.segment != segment:
        why += f"; the service has no rule for it, so the {aset.segment!r} rule applies"
    aset = _filter(aset, qtype)
    links = sorted({ep.link for p in service.pools for ep in p.endpoints})
    health = {name: {"state": str(snap.link_state(name)),
                     "reason": snap.links[name].reason if name in snap.links else "no data"}
              for name in links}
    if args.json:
        print(json.dumps({"qname": qname, "qtype": qtype, "service": service.name,
                          "segment": aset.segment, "why_segment": why, "geoip": geoip,
                          "ecs_scope": scope,
                          "health_from": health_from, "links": health,
                          "overrides": ov.describe(), "answer_set": aset.to_json()},
                         indent=2, sort_keys=True))
        return 0
    print(why)
    if scope is not None:
        print(f"ECS scope /{scope}: the answer holds for the client's whole /{scope}")
    print(f"health ({health_from}):")
    for name, h in health.items():
        print(f"  {name}: {h['state']} ({h['reason']})")
    for line in ov.describe():
        print(f"override: {line}")
    print(explain_answer_set(aset))
    return 0
