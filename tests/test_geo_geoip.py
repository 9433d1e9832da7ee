"""GeoIP over MaxMind-format databases built here with mmdb-writer; `edgesteer geo`."""

from __future__ import annotations

import json
from pathlib import Path

import netaddr
import pytest
from mmdb_writer import MMDBWriter

from edge.cli import main
from geo.build import CsvError, parse_csv
from geo.client import ClientInfo
from geo.geoip import GeoInfo, GeoIP
from geo.segment import Line, Segment, SegmentMatcher


def _db(path: Path, kind: str, rows: list[tuple[str, dict[str, object]]]) -> str:
    w = MMDBWriter(ip_version=6, ipv4_compatible=True, database_type=kind)
    for cidr, record in rows:
        w.insert_network(netaddr.IPSet([cidr]), record)
    w.to_db_file(str(path))
    return str(path)


@pytest.fixture
def dbs(tmp_path: Path) -> dict[str, str]:
    city = _db(tmp_path / "city.mmdb", "GeoLite2-City", [
        ("202.96.0.0/13", {"country": {"iso_code": "CN"}, "subdivisions": [{"iso_code": "GD"}],
                           "location": {"latitude": 23.13, "longitude": 113.26}}),
        ("203.0.113.0/24", {"country": {"iso_code": "HK"},
                            "location": {"latitude": 22.32, "longitude": 114.17}}),
    ])
    country = _db(tmp_path / "country.mmdb", "GeoLite2-Country", [
        ("198.51.100.0/24", {"country": {"iso_code": "SG"}}),
    ])
    asn = _db(tmp_path / "asn.mmdb", "GeoLite2-ASN", [
        ("202.96.0.0/13", {"autonomous_system_number": 4134,
                           "autonomous_system_organization": "CHINANET"}),
    ])
    csv = tmp_path / "lines.csv"
    csv.write_text("# operator map\nprefix,region,line\n202.96.1.0/24,SH,china-telecom\n")
    lines = str(tmp_path / "lines.mmdb")
    assert main(["geo", "build", str(csv), lines]) == 0
    return {"city": city, "country": country, "asn": asn, "lines": lines}


def test_several_databases_first_value_wins(dbs: dict[str, str]) -> None:
    with GeoIP([dbs["lines"], dbs["city"], dbs["country"], dbs["asn"]]) as g:
        assert g.kinds == ("edgesteer-Lines", "GeoLite2-City", "GeoLite2-Country",
                           "GeoLite2-ASN")
        assert g.lookup("202.96.1.7") == GeoInfo(country="CN", region="SH", asn=4134,
                                                 org="CHINANET", line="china-telecom",
                                                 location=(23.13, 113.26))
        assert g.lookup("202.97.0.1").region == "GD"          # the operator map has no say
        assert g.lookup("198.51.100.9") == GeoInfo(country="SG")
        assert g.lookup("192.0.2.1") == GeoInfo()
        assert g.lookup("2001:db8::1") == GeoInfo()


def test_enrich_uses_ecs_or_resolver_and_feeds_segments(dbs: dict[str, str]) -> None:
    segments = [Segment("ct", lines=(Line("china-telecom", asns=frozenset({4809})),)),
                Segment("cn", countries=frozenset({"CN"})),
                Segment("as4134", asns=frozenset({4134}))]
    matcher = SegmentMatcher(segments)
    with GeoIP([dbs["lines"], dbs["city"], dbs["asn"]]) as g:
        ecs = g.enrich(ClientInfo.from_text("202.96.1.0", 24))
        assert (ecs.line, ecs.country, ecs.asn, ecs.from_ecs) == ("china-telecom", "CN",
                                                                  4134, True)
        assert matcher.match(ecs) == "ct"
        resolver = g.enrich(ClientInfo.from_text("202.97.3.3"))
        assert matcher.match(resolver) == "cn"
        hk = g.enrich(ClientInfo.from_text("203.0.113.5"))
        assert matcher.match(hk) == "default" and hk.location == (22.32, 114.17)
        known = g.enrich(ClientInfo(address=netaddr.IPAddress("202.96.1.1"), prefix_len=32,
                                    country="ZZ"))
        assert known.country == "ZZ"                           # what is known is kept


def test_geo_lookup_command(dbs: dict[str, str], capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["geo", "lookup", "--db", dbs["lines"], "--db", dbs["asn"], "202.96.1.1",
                 "--json"]) == 0
    body = json.loads(capsys.readouterr().out)
    assert body["202.96.1.1"]["line"] == "china-telecom" and body["202.96.1.1"]["asn"] == 4134
    assert main(["geo", "lookup", "--db", dbs["lines"], "not-an-ip"]) == 2


@pytest.mark.parametrize(("text", "line", "message"), [
    ("", 1, "empty"),
    ("net,line\n1.2.3.0/24,x\n", 1, "no 'prefix' column"),
    ("prefix,line\n1.2.3.0/24,x,y\n", 2, "expected 2 columns"),
    ("prefix,line\n\n1.2.3.0/33,x\n", 3, "prefix: expected a CIDR"),
    ("prefix,asn\n1.2.3.0/24,AS1\n", 2, "asn: expected an AS number"),
    ("prefix,line\n1.2.3.0/24,x\n1.2.3.0/24,y\n", 3, "given twice"),
])
def test_csv_errors_name_the_line(text: str, line: int, message: str) -> None:
    with pytest.raises(CsvError) as info:
        parse_csv(text.splitlines(keepends=True), "map.csv")
    assert info.value.line == line and message in str(info.value)
    assert str(info.value).startswith(f"map.csv:{line}: ")


def test_geo_build_bad_csv_writes_nothing(tmp_path: Path,
                                          capsys: pytest.CaptureFixture[str]) -> None:
    csv = tmp_path / "bad.csv"
    csv.write_text("prefix,line\nnope,x\n")
    out = tmp_path / "out.mmdb"
    assert main(["geo", "build", str(csv), str(out)]) == 2
    assert not out.exists()
    assert "bad.csv:2: prefix" in capsys.readouterr().err


def test_explain_looks_the_client_up(dbs: dict[str, str], tmp_path: Path,
                                     capsys: pytest.CaptureFixture[str]) -> None:
    cfg = tmp_path / "edge.yaml"
    cfg.write_text("""
version: 1
node: {name: hk-1, site: hk}
sites: [{name: hk}]
links:
  - {name: cn2, priority: 1, answers: {v4: [203.0.113.10]}}
  - {name: pccw, priority: 2, answers: {v4: [198.51.100.20]}}
zones: [{name: example.hk, ns: [ns1.example.hk]}]
segments: [{name: cn, countries: [CN]}]
services:
  - name: www.example.hk
    pools:
      - {name: main, endpoints: [{link: cn2}]}
      - {name: intl, endpoints: [{link: pccw}]}
policies:
  - service: www.example.hk
    rules: [{segment: cn, pools: [main]}, {segment: default, pools: [intl]}]
""")
    assert main(["explain", "--config", str(cfg), "--geoip", dbs["lines"], "--geoip",
                 dbs["city"], "--ecs", "202.96.1.0/24", "www.example.hk"]) == 0
    out = capsys.readouterr().out
    assert ("client ECS 202.96.1.0/24 [geoip: country CN, line china-telecom, region SH] "
            "matches segment 'cn'") in out
    assert "203.0.113.10" in out


EXAMPLES = Path(__file__).resolve().parent.parent / "deploy" / "examples"


def test_the_shipped_example_map_is_built_from_its_csv(tmp_path: Path) -> None:
    """deploy/examples/hk-lines.mmdb says what hk-lines.csv says, for every prefix's first
    and last address (rebuild it with the command in the CSV's header when this fails)."""
    csv = EXAMPLES / "hk-lines.csv"
    fresh = tmp_path / "fresh.mmdb"
    assert main(["geo", "build", str(csv), str(fresh)]) == 0
    table = parse_csv(csv.read_text().splitlines())
    assert len(table.rows) >= 8
    with GeoIP([str(EXAMPLES / "hk-lines.mmdb")]) as shipped, GeoIP([str(fresh)]) as rebuilt:
        for net, record in table.rows:
            for ip in (str(net[0]), str(net[-1])):
                got = shipped.lookup(ip)
                assert got == rebuilt.lookup(ip), ip
                assert got.line == record.get("line") and got.asn == record.get("asn"), ip
                assert got.country == record.get("country"), ip


def test_geo_build_replaces_the_database_whole(tmp_path: Path,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    csv = tmp_path / "lines.csv"
    out = tmp_path / "lines.mmdb"
    csv.write_text("prefix,line\n192.0.2.0/24,china-telecom\n")
    assert main(["geo", "build", str(csv), str(out)]) == 0
    with GeoIP([str(out)]) as before:
        assert before.lookup("192.0.2.1").line == "china-telecom"
    csv.write_text("prefix,line\n192.0.2.0/24,china-unicom\n")
    assert main(["geo", "build", str(csv), str(out)]) == 0
    with GeoIP([str(out)]) as after:
        assert after.lookup("192.0.2.1").line == "china-unicom"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["lines.csv", "lines.mmdb"]
    # an output it cannot write is named, and nothing is left behind
    missing = tmp_path / "no-such-dir" / "x.mmdb"
    assert main(["geo", "build", str(csv), str(missing)]) == 1
    err = capsys.readouterr().err
    assert f"cannot write {missing}" in err and "nothing written" in err, err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["lines.csv", "lines.mmdb"]
