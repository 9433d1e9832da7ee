"""GeoIP in the data plane: the config's ``geo.databases`` feed the built-in DNS server, which
enriches the client (ECS subnet, else resolver address) before segment matching and derives
the ECS scope from the database networks; ``explain`` shows what GeoIP said.

The databases are real MaxMind-format files built here: an operator map with
``edgesteer geo build`` (geo/build.py, mmdb-writer) and a City database with mmdb-writer.
ECS addresses are payload, not destinations: every packet goes to 127.0.0.1.
"""

from __future__ import annotations

import asyncio
import ipaddress
import json
import random
import re
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import dns.edns
import dns.message
import netaddr
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from mmdb_writer import MMDBWriter

from dns_backends.builtin.clients import ClientMapper
from dns_backends.builtin.server import BuiltinDnsServer
from edge.cli import main
from edge.commands.serve import ServeOptions, build_server, initial_plan
from edge.config.loader import load_config
from edge.config.schema import Config
from edge.runtime import NodeRuntime
from geo.build import build
from geo.geoip import GeoInfo, GeoIP
from geo.segment import Segment, SegmentMatcher
from tests import dnsfixtures as fx
from tests.conftest import require_binary

# The operator's map: prefix -> country / region / ASN / line (nested prefixes: the more
# specific wins). 127.0.0.0/8 is there so that the loopback resolver has a country.
LINES_CSV = """\
# operator map for the tests
prefix,country,region,asn,line
202.96.0.0/13,CN,GD,4134,china-telecom
202.96.1.0/24,CN,SH,4134,china-telecom
202.104.0.0/14,CN,,4134,china-telecom
198.51.100.0/24,SG,,,overseas
127.0.0.0/8,HK,,,
2001:db8:1::/48,,,9269,
"""

# segment -> the answer its pool serves (one endpoint per pool: no weighted draw)
ANSWERS = {"carve": "203.0.113.1", "sh": "203.0.113.2", "gd": "203.0.113.3",
           "ct": "203.0.113.4", "intl": "203.0.113.5", "hk": "203.0.113.6",
           "v6as": "203.0.113.7", "default": "203.0.113.8"}
SEGMENTS = """\
segments:
  - {name: carve, cidrs: [202.96.64.0/18]}
  - {name: sh, regions: [SH]}
  - {name: gd, regions: [CN-GD]}
  - {name: ct, lines: [china-telecom]}
  - {name: intl, lines: [overseas]}
  - {name: hk, countries: [HK]}
  - {name: v6as, asns: [9269]}
"""


def config_text(geo: str) -> str:
    links = "\n".join(f"  - {{name: l-{seg}, priority: 1, answers: {{v4: [{addr}]}}}}"
                      for seg, addr in ANSWERS.items())
    pools = "\n".join(f"      - {{name: p-{seg}, endpoints: [{{link: l-{seg}}}]}}"
                      for seg in ANSWERS)
    rules = "\n".join(f"      - {{segment: {seg}, pools: [p-{seg}]}}" for seg in ANSWERS)
    return f"""\
version: 1
node: {{name: hk-1, site: hk}}
sites: [{{name: hk}}]
{geo}
links:
{links}
zones: [{{name: example.hk, ns: [ns1.example.hk]}}]
lines:
  - {{name: china-telecom, asns: [4809]}}
  - {{name: overseas}}
{SEGMENTS}
services:
  - name: www.example.hk
    ttl: 60
    pools:
{pools}
policies:
  - service: www.example.hk
    rules:
{rules}
"""


def _city(path: Path) -> None:
    w = MMDBWriter(ip_version=6, ipv4_compatible=True, database_type="GeoLite2-City")
    w.insert_network(netaddr.IPSet(["202.96.0.0/13"]), {
        "country": {"iso_code": "CN"}, "subdivisions": [{"iso_code": "GD"}],
        "location": {"latitude": 23.13, "longitude": 113.26}})
    w.to_db_file(str(path))


@pytest.fixture
def cfg_path(tmp_path: Path) -> Path:
    """A config whose geo.databases are relative to its own directory (not the cwd)."""
    (tmp_path / "geo").mkdir()
    csv = tmp_path / "lines.csv"
    csv.write_text(LINES_CSV)
    assert build(csv, tmp_path / "geo" / "lines.mmdb") == 6
    _city(tmp_path / "geo" / "city.mmdb")
    path = tmp_path / "edge.yaml"
    path.write_text(config_text("geo: {databases: [geo/lines.mmdb, geo/city.mmdb]}"))
    return path


@pytest.fixture
def config(cfg_path: Path) -> Config:
    return load_config(cfg_path)


@pytest.fixture
def geo(config: Config) -> Iterator[GeoIP]:
    with GeoIP(config.geo.databases) as g:
        yield g


def _server(config: Config, geo: GeoIP | None, listen: list[tuple[str, int]],
            fast: bool = True) -> BuiltinDnsServer:
    srv = BuiltinDnsServer(config.zones, config.services, SegmentMatcher(config.segments),
                           listen, rng=random.Random(1), fast_path=fast,
                           initial_serial=2026112600, geo=geo)
    srv.apply_now(initial_plan(config))
    return srv


@pytest.fixture
async def server(config: Config, geo: GeoIP) -> AsyncIterator[BuiltinDnsServer]:
    srv = _server(config, geo, [("127.0.0.1", 0)])
    await srv.start()
    try:
        yield srv
    finally:
        await srv.aclose()


def _ecs(response: dns.message.Message) -> dns.edns.ECSOption:
    (ecs,) = [o for o in response.options if isinstance(o, dns.edns.ECSOption)]
    return ecs


def test_config_resolves_databases_against_its_directory(config: Config,
                                                         cfg_path: Path) -> None:
    assert config.geo.databases == (str(cfg_path.parent / "geo" / "lines.mmdb"),
                                    str(cfg_path.parent / "geo" / "city.mmdb"))
    assert config.warnings == ()
    segs = {s.name: s for s in config.segments}
    assert segs["gd"].regions == frozenset({"CN-GD"}) and segs["sh"].uses_geo


# (ECS subnet, segment, scope). The scope is max(CIDR scope, GeoIP network prefix): e.g.
# 202.100/16 lies in the map's 202.96/13 record outside the nested 202.96.1/24, in the
# tree's leaf 202.100.0.0/14, and the carve-out 202.96.64/18 agrees with it down to /14:
# the answer is valid for the /14, wider than the /16 asked (RFC 7871 7.2.1).
ECS_CASES = [
    ("202.96.1.0/24", "sh", 24),           # the map's nested /24 says SH (first db wins)
    ("202.100.0.0/16", "gd", 14),          # map says GD (+ City: CN): CN-GD
    ("202.100.7.0/24", "gd", 14),          # same leaf: same answer, same scope
    ("202.96.64.0/20", "carve", 18),       # the CIDR segment, inside the GeoIP /13
    ("202.105.3.0/24", "ct", 14),          # line china-telecom, no region
    ("198.51.100.0/24", "intl", 24),       # line overseas (defined by the map only)
    ("2001:db8:1::/56", "v6as", 48),       # AS 9269 from the map, IPv6
]


@pytest.mark.parametrize(("subnet", "segment", "scope"), ECS_CASES)
async def test_ecs_client_is_looked_up_and_scoped(server: BuiltinDnsServer, subnet: str,
                                                  segment: str, scope: int) -> None:
    port = server.bound[0][1]
    for ask in (fx.udp, fx.tcp):
        r = await ask(fx.make_query("www.example.hk", "A", ecs=subnet), port)
        assert fx.values(r) == {ANSWERS[segment]}, (subnet, ask)
        ecs = _ecs(r)
        assert (f"{ecs.address}/{ecs.srclen}", ecs.scopelen) == (subnet, scope)
    assert server.stats["segment"][segment] == 2


async def test_dig_sees_the_geoip_segment_and_scope(server: BuiltinDnsServer) -> None:
    """An independent client (BIND's dig) reads the answer and the scope."""
    binary = require_binary("dig", "bind9-dnsutils")
    proc = await asyncio.create_subprocess_exec(
        binary, "@127.0.0.1", "-p", str(server.bound[0][1]), "+time=2", "+tries=1",
        "www.example.hk", "A", "+subnet=202.100.7.0/24", "+norec",
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT)
    out = (await asyncio.wait_for(proc.communicate(), 20))[0].decode()
    assert "status: NOERROR" in out
    assert "CLIENT-SUBNET: 202.100.7.0/24/14" in out
    assert re.search(r"www\.example\.hk\.\s+60\s+IN\s+A\s+203\.0\.113\.3", out), out


async def test_unknown_subnet_is_default_with_the_empty_networks_scope(
        server: BuiltinDnsServer, geo: GeoIP) -> None:
    r = await fx.udp(fx.make_query("www.example.hk", "A", ecs="192.0.2.0/24"),
                     server.bound[0][1])
    assert fx.values(r) == {ANSWERS["default"]}
    # no record: the scope is the prefix of the empty branch holding 192.0.2.0 (the same
    # for every address of it), well short of the /24 asked
    _, empty = geo.lookup_scoped("192.0.2.0")
    assert _ecs(r).scopelen == empty < 24


async def test_resolver_address_is_looked_up_without_ecs(server: BuiltinDnsServer) -> None:
    port = server.bound[0][1]
    r = await fx.udp(fx.make_query("www.example.hk", "A"), port)    # from 127.0.0.1: HK
    assert fx.values(r) == {ANSWERS["hk"]}
    zero = await fx.udp(fx.make_query("www.example.hk", "A", ecs="0.0.0.0/0"), port)
    assert fx.values(zero) == {ANSWERS["hk"]} and _ecs(zero).scopelen == 0


async def test_without_databases_the_geo_segments_never_match(cfg_path: Path,
                                                              tmp_path: Path) -> None:
    """The same segments without geo: only the CIDR one can match; scope >= source."""
    bare = tmp_path / "bare.yaml"
    bare.write_text(config_text(""))
    config = load_config(bare)
    assert config.geo.databases == ()
    srv = _server(config, None, [("127.0.0.1", 0)])
    await srv.start()
    try:
        port = srv.bound[0][1]
        r = await fx.udp(fx.make_query("www.example.hk", "A", ecs="202.96.1.0/24"), port)
        assert fx.values(r) == {ANSWERS["default"]} and _ecs(r).scopelen == 24
        r = await fx.udp(fx.make_query("www.example.hk", "A", ecs="202.100.0.0/16"), port)
        assert fx.values(r) == {ANSWERS["default"]} and _ecs(r).scopelen == 16
        r = await fx.udp(fx.make_query("www.example.hk", "A", ecs="202.96.64.0/20"), port)
        assert fx.values(r) == {ANSWERS["carve"]} and _ecs(r).scopelen == 20
    finally:
        await srv.aclose()


# -- the scope is right: every client inside it gets the same segment ----------------------
NETS = ["202.96.0.0/13", "202.96.1.0/24", "202.104.0.0/14", "198.51.100.0/24",
        "127.0.0.0/8", "202.96.64.0/18", "192.0.2.0/24"]


def _near() -> st.SearchStrategy[int]:
    picks = [st.integers(0, 2**32 - 1)]
    for net in NETS:
        n = ipaddress.ip_network(net)
        lo, hi = int(n.network_address), int(n.broadcast_address)
        picks.append(st.integers(max(0, lo - 300), min(2**32 - 1, hi + 300)))
    return st.one_of(picks)


@settings(max_examples=150, deadline=None, suppress_health_check=[
    HealthCheck.function_scoped_fixture])
@given(data=st.data(), address=_near(), srclen=st.integers(1, 32))
def test_scope_is_uniform_brute_force(config: Config, geo: GeoIP, data: st.DataObject,
                                      address: int, srclen: int) -> None:
    """(segment, scope) for an ECS subnet: any full address inside subnet/scope, looked up
    and matched on its own, lands in the same segment."""
    mapper = ClientMapper(SegmentMatcher(config.segments), geo=geo)
    net = ipaddress.ip_network((address, srclen), strict=False)
    packed = net.network_address.packed[:(srclen + 7) // 8]
    segment, scope = mapper.for_ecs(1, srclen, packed)
    assert 0 <= scope <= 32
    inside = ipaddress.ip_network((int(net.network_address), scope), strict=False)
    lo, hi = int(inside.network_address), int(inside.broadcast_address)
    for _ in range(8):
        other = data.draw(st.one_of(st.integers(lo, hi), st.sampled_from([lo, hi])))
        got, _ = mapper.for_ecs(1, 32, ipaddress.IPv4Address(other).packed)
        assert got == segment, (str(net), scope, str(ipaddress.IPv4Address(other)))


# -- both query paths give the same bytes with a GeoIP-backed matcher ------------------------
def test_fast_and_dnspython_paths_agree_with_geoip(config: Config, geo: GeoIP) -> None:
    fast, slow = _server(config, geo, []), _server(config, geo, [], fast=False)
    subnets = [None, "0.0.0.0/0", "192.0.2.0/24", *(s for s, _, _ in ECS_CASES)]
    peers = ["127.0.0.1", "198.51.100.9", "202.96.1.5", "202.104.9.9", "::1",
             "2001:db8:1::53", "::ffff:202.96.1.5"]
    for i, subnet in enumerate(subnets):
        for j, peer in enumerate(peers):
            for rdtype in ("A", "AAAA", "ANY", "SOA"):
                q = fx.make_query("www.example.hk", rdtype, ecs=subnet)
                q.id = (i * 100 + j) & 0xFFFF
                wire = q.to_wire()
                for tcp in (False, True):
                    assert fast.handle(wire, peer, tcp) == slow.handle(wire, peer, tcp), (
                        subnet, peer, rdtype, tcp)
    assert fast.stats["events"]["fast"] > 300
    assert fast.stats["segment"] == slow.stats["segment"]
    assert {"sh", "gd", "carve", "ct", "intl", "hk", "v6as", "default"} <= set(
        fast.stats["segment"])


# -- the composition roots pass the databases on ----------------------------------------------
def test_serve_and_node_runtime_use_the_config_databases(config: Config) -> None:
    query = fx.make_query("www.example.hk", "A", ecs="202.100.0.0/16").to_wire()
    opts = ServeOptions(listen=(("127.0.0.1", 0),), workers=1, metrics=None, rrl_rate=0.0,
                        rrl_slip=2, query_log_sample=0, tcp_max_connections=8,
                        tcp_idle_timeout=1.0, uvloop=False, udp_batch=False)
    served = build_server(config, opts)
    served.apply_now(initial_plan(config))
    reply = served.handle(query, "127.0.0.1")
    assert reply is not None
    r = dns.message.from_wire(reply)
    assert fx.values(r) == {ANSWERS["gd"]} and _ecs(r).scopelen == 14


async def test_node_runtime_opens_and_closes_the_databases(config: Config) -> None:
    runtime = NodeRuntime(config, listen=[("127.0.0.1", 0)])
    try:
        assert runtime.geo is not None and len(runtime.geo.kinds) == 2
        runtime.dns.apply_now(initial_plan(config))
        reply = runtime.dns.handle(fx.make_query("www.example.hk", "A").to_wire(), "127.0.0.1")
        assert reply is not None
        assert fx.values(dns.message.from_wire(reply)) == {ANSWERS["hk"]}
    finally:
        await runtime.aclose()
    assert not runtime.geo.kinds                        # closed


# -- explain shows what GeoIP said ------------------------------------------------------------
def test_explain_uses_the_config_databases(cfg_path: Path,
                                           capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["explain", "--config", str(cfg_path), "--ecs", "202.100.7.0/24",
                 "www.example.hk", "A", "--json"]) == 0
    body = json.loads(capsys.readouterr().out)
    assert body["segment"] == "gd" and body["ecs_scope"] == 14
    assert body["geoip"] == {"country": "CN", "asn": 4134, "line": "china-telecom",
                             "region": "GD", "prefix_len": 14, "location": [23.13, 113.26]}
    assert [a["value"] for a in body["answer_set"]["answers"]] == [ANSWERS["gd"]]
    assert main(["explain", "--config", str(cfg_path), "--client", "127.0.0.1",
                 "www.example.hk"]) == 0
    out = capsys.readouterr().out
    assert "client resolver 127.0.0.1 (no ECS) [geoip: country HK] matches segment 'hk'" in out
    assert "ECS scope" not in out
    assert main(["explain", "--config", str(cfg_path), "--ecs", "202.96.1.0/24",
                 "www.example.hk"]) == 0
    out = capsys.readouterr().out
    assert ("client ECS 202.96.1.0/24 [geoip: country CN, asn 4134, line china-telecom, "
            "region SH] matches segment 'sh'") in out
    assert "ECS scope /24" in out


def test_explain_without_databases_shows_no_geoip(tmp_path: Path,
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    bare = tmp_path / "bare.yaml"
    bare.write_text(config_text(""))
    assert main(["explain", "--config", str(bare), "--ecs", "202.100.7.0/24",
                 "www.example.hk", "--json"]) == 0
    body = json.loads(capsys.readouterr().out)
    assert body["segment"] == "default" and body["geoip"] is None
    assert body["ecs_scope"] == 24                      # opaque criteria: the source prefix
    junk = tmp_path / "junk.mmdb"
    junk.write_text("not a database")
    assert main(["explain", "--config", str(bare), "--geoip", str(junk), "--ecs",
                 "202.100.7.0/24", "www.example.hk"]) == 2
    assert "--geoip" in capsys.readouterr().err


# -- check: segments that need GeoIP without a database -----------------------------------------
def test_check_warns_about_geo_criteria_without_databases(
        cfg_path: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["check", str(cfg_path)]) == 0
    assert "warning" not in capsys.readouterr().out
    bare = tmp_path / "bare.yaml"
    bare.write_text(config_text(""))
    assert main(["check", "--json", str(bare)]) == 0
    warnings = json.loads(capsys.readouterr().out)["warnings"]
    first = bare.read_text().splitlines().index("  - {name: carve, cidrs: [202.96.64.0/18]}")
    assert [(w["key_path"], w["line"]) for w in warnings] == [
        (f"segments[{i}]", first + 1 + i) for i in range(1, 7)]  # carve: CIDRs need no GeoIP
    assert warnings[1]["message"] == (
        "warning: segment `gd` needs GeoIP data (regions) but no geo.databases are "
        "configured: the DNS server never learns a client's ASN, country, region or line, "
        "so that never matches")
    assert "(line china-telecom by ASN)" in warnings[2]["message"]
    assert "(line overseas)" in warnings[3]["message"]
    assert main(["check", str(bare)]) == 0
    out = capsys.readouterr().out
    assert f"{bare}:{first + 3}: segments[2]: warning: segment `gd` needs GeoIP data" in out


def test_ipv4_only_database_answers_ipv6_clients_with_nothing(tmp_path: Path) -> None:
    """An IPv4-only database has no IPv6 data at all: no record, over the whole space."""
    w = MMDBWriter(ip_version=4, database_type="GeoLite2-Country")
    w.insert_network(netaddr.IPSet(["198.51.100.0/24"]), {"country": {"iso_code": "SG"}})
    w.to_db_file(str(tmp_path / "v4.mmdb"))
    with GeoIP([str(tmp_path / "v4.mmdb")]) as g:
        assert g.lookup_scoped("2001:db8::1") == (GeoInfo(), 0)
        info, plen = g.lookup_scoped("198.51.100.7")
        assert info.country == "SG" and plen == 24
        mapper = ClientMapper(SegmentMatcher([Segment("sg", countries=frozenset({"SG"}))]),
                              geo=g)
        assert mapper.for_ecs(2, 48, bytes(6)) == ("default", 0)
        assert mapper.for_ecs(1, 24, bytes([198, 51, 100])) == ("sg", 24)
        assert mapper.for_peer("198.51.100.9") == "sg"
