"""The config loader and ``edgesteer check``: every error case, defaults, merges, fuzzing.

Each ``tests/config/bad-<case>.yaml`` breaks ``tests/config/good-minimal.yaml`` in exactly one
place; the table below holds the exact error (line, key path, message, fix) each must produce,
through the real command line (``edge.cli.main``), in text and in JSON.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from edge.cli import main
from edge.commands.check import summarize
from edge.config import defaults as d
from edge.config.loader import ConfigError, ConfigInvalid, load_config, parse_config
from edge.config.schema import Config
from probes.measurement import ProbeKind

ROOT = Path(__file__).resolve().parent.parent
CONFIG_DIR = Path(__file__).resolve().parent / "config"
EXAMPLE = ROOT / "deploy" / "examples" / "hk-cluster.yaml"
MINIMAL = CONFIG_DIR / "good-minimal.yaml"

# case -> (line, key_path, message, fix): the one error bad-<case>.yaml must produce.
BAD_CASES: list[tuple[str, int, str, str, str | None]] = [
    ('addresses-with-cname', 32, 'services[0].pools[1].endpoints[0].cname',
     'expected either addresses or cname, found both',
     'keep one of them'),
    ('bad-rcode', 17, 'targets[0].expect_rcode',
     'expected a DNS rcode name (NOERROR, NXDOMAIN, SERVFAIL, ...), found "NOTFOUND"',
     None),
    ('bad-rdatatype', 17, 'targets[0].qtype',
     'expected a DNS record type name (A, AAAA, SOA, ...), found "AAA"',
     None),
    ('bool-as-int', 8, 'links[0].priority',
     'expected an integer from 1 to 9, found boolean true',
     None),
    ('bucket-reversed', 26, 'segments[0].bucket',
     'expected a bucket [lo, hi] with lo < hi, found [10, 5]',
     'swap the bounds'),
    ('catch-all-segment', 24, 'segments[0]',
     'segment `everyone` has no criteria, so it matches everyone and the segments after it '
     'never match',
     'give it lines, cidrs, asns, countries, regions or a bucket, or move it last'),
    ('cidr-host-bits', 23, 'lines[0].cidrs[0]',
     'expected a network address, found "202.96.1.0/13" with host bits set',
     'write 202.96.0.0/13'),
    ('cname-at-apex', 32, 'services[0].pools[1].endpoints[0].cname',
     "a CNAME cannot be at a zone apex (the service name is its zone's name)",
     'use addresses, or steer a name below the apex'),
    ('country-unquoted-no', 26, 'segments[0].countries[0]',
     'expected an ISO 3166 alpha-2 code, found boolean NO',
     'quote it: "NO"'),
    ('dangling-endpoint-link', 32, 'services[0].pools[1].endpoints[0].link',
     '`pcw` does not name a link (known: cn2, pccw)',
     'did you mean `pccw`?'),
    ('dangling-link-site', 9, 'links[0].site',
     '`hkg` does not name a site (known: hk)',
     'did you mean `hk`?'),
    ('dangling-node-site', 3, 'node.site',
     '`hk-kwaichung` does not name a site (known: hk)',
     'define a site `hk-kwaichung` or name an existing one'),
    ('dangling-policy-service', 34, 'policies[0].service',
     '`web.example.hk` does not name a service (known: www.example.hk)',
     'did you mean `www.example.hk`?'),
    ('dangling-rule-pool', 36, 'policies[0].rules[0].pools[1]',
     '`spare` does not name a pool of service www.example.hk (known: main, backup)',
     'define a pool `spare` or name an existing one'),
    ('dangling-rule-segment', 36, 'policies[0].rules[0].segment',
     '`cu-users` does not name a segment (known: ct-users)',
     'did you mean `ct-users`?'),
    ('dangling-segment-line', 25, 'segments[0].lines[0]',
     '`china-unicom` does not name a line (known: china-telecom)',
     'did you mean `china-telecom`?'),
    ('dangling-target-link', 17, 'targets[0].links[0]',
     '`ntt` does not name a link (known: cn2, pccw)',
     'define a link `ntt` or name an existing one'),
    ('degraded-above-down', 14, 'links[1].thresholds.degraded.loss',
     'degraded.loss (0.2) is above down.loss (0.1), so a link would go down before it is ever '
     'degraded',
     'set degraded.loss <= down.loss'),
    ('duplicate-name', 13, 'links[2].name',
     'duplicate link `cn2` (first at line 7)',
     'rename or remove one of the two links'),
    ('duplicate-policy', 37, 'policies[1].service',
     'duplicate policy for service `www.example.hk` (first at line 34)',
     'merge the two policies into one'),
    ('duplicate-rule-segment', 37, 'policies[0].rules[1].segment',
     'a rule for segment `ct-users` is already at line 36; this one never applies',
     'merge the two rules'),
    ('duplicate-yaml-key', 12, 'links[1].priority',
     'duplicate key `priority` (first at line 11)',
     'keep only one'),
    ('empty-endpoints', 32, 'services[0].pools[1].endpoints',
     'expected a non-empty list of endpoints, found an empty list',
     None),
    ('empty-pools', 28, 'services[0].pools',
     'expected a non-empty list of pools, found an empty list',
     None),
    ('empty', 1, '',
     'expected a mapping at the top level, found an empty document',
     'start with version: 1'),
    ('failover-ttl-above-ttl', 29, 'services[0].failover_ttl',
     'expected failover_ttl <= ttl (30), found 60',
     'lower failover_ttl to at most 30, or raise ttl'),
    ('geo-database-missing', 38, 'geo.databases[0]',
     'cannot open the GeoIP database geo/missing.mmdb '
     f'({CONFIG_DIR / "geo" / "missing.mmdb"}): No such file or directory',
     "fix the path (relative paths are read from the config file's directory) or its "
     'permissions'),
    ('geo-database-not-mmdb', 38, 'geo.databases[0]',
     f'good-minimal.yaml ({CONFIG_DIR / "good-minimal.yaml"}) is not a MaxMind-format '
     'database',
     'give a .mmdb file (MaxMind City, Country, ASN) or build one with '
     '`edgesteer geo build CSV OUT`'),
    ('geo-databases-empty', 38, 'geo.databases',
     'expected a non-empty list of file paths, found an empty list',
     None),
    ('invalid-cidr', 23, 'lines[0].cidrs[0]',
     'expected a CIDR like 202.96.0.0/13 or 2001:db8::/32, found "202.96.0.0/33"',
     None),
    ('invalid-ip', 32, 'services[0].pools[1].endpoints[0].addresses[0]',
     'expected an IP address, found "198.51.100.300"',
     None),
    ('ipv4-in-v6', 9, 'links[0].answers.v6[0]',
     'expected an IPv6 address, found IPv4 address "203.0.113.11"',
     'IPv4 addresses go in the v4 list'),
    ('ipv6-in-v4', 12, 'links[1].answers.v4[0]',
     'expected an IPv4 address, found IPv6 address "2001:db8:20::20"',
     'IPv6 addresses go in the v6 list'),
    ('link-no-answers', 12, 'links[1].answers',
     'expected at least one answer address in v4 or v6, found none',
     'list the VIPs users reach over this link, e.g. v4: [203.0.113.10]'),
    ('list-as-scalar', 19, 'zones[0].ns',
     'expected a list of DNS names, found string "ns1.example.hk"',
     'write [ns1.example.hk]'),
    ('listen-invalid', 38, 'dns.listen[0]',
     'expected HOST:PORT (IPv6 as [ADDR]:PORT), found "127.0.0.1"',
     'e.g. 127.0.0.1:5353 or [::1]:5353'),
    ('location-out-of-range', 6, 'sites[0].location.lat',
     'expected a number from -90 to 90, found 122.3',
     None),
    ('lowercase-country', 26, 'segments[0].countries[0]',
     'expected an ISO 3166 alpha-2 country code in upper case, found "hk"',
     'write HK'),
    ('missing-required', 7, 'links[0].priority',
     'missing required key `priority` in link (operator tier 1..9, 1 = preferred)',
     'add `priority:`'),
    ('nearest-without-located-sites', 28, 'services[0].routing',
     'routing: nearest ranks sites by location, but pools[0].endpoints[0] (link cn2) has no '
     'site; pools[0].endpoints[1] (link pccw) has no site; pools[1].endpoints[0] (link pccw) '
     'has no site',
     'give each link (or endpoint) a `site`, and each such site a location {lat, lon}'),
    ('negative-weight', 32, 'services[0].pools[1].endpoints[0].weight',
     'expected a number >= 0, found -10',
     None),
    ('ns-addresses-not-in-ns', 20, 'zones[0].ns_addresses["ns2.example.hk"]',
     "`ns2.example.hk` is not one of this zone's ns (ns1.example.hk)",
     'add ns2.example.hk to ns, or remove its addresses'),
    ('port-out-of-range', 17, 'targets[0].port',
     'expected a port from 1 to 65535, found 70000',
     None),
    ('priority-out-of-range', 11, 'links[1].priority',
     'expected an integer from 1 to 9, found 0',
     None),
    ('region-invalid', 26, 'segments[0].regions[0]',
     'expected a region code (e.g. GD, CN-GD, or a region of an operator map), found '
     'string "Guang dong"',
     None),
    ('quorum-enum', 7, 'health.quorum',
     'expected one of all, majority, any, found string "most"',
     None),
    ('ratio-out-of-range', 28, 'services[0].failover_threshold',
     'expected a number > 0 and <= 1, found 1.5',
     None),
    ('reserved-segment', 26, 'segments[1].name',
     'the segment name `default` is reserved for the implicit last segment that matches everyone',
     'rename the segment; address the implicit one with `segment: default` in a policy rule'),
    ('service-outside-zone', 27, 'services[0].name',
     '`www.example.com` is not inside any zone (zones: example.hk)',
     'add a zone that contains it, or rename the service'),
    ('spill-enum', 28, 'services[0].spill',
     'expected one of cascade, capacity, found string "capcity"',
     'did you mean capacity?'),
    ('string-as-int', 11, 'links[1].priority',
     'expected an integer from 1 to 9, found string "2"',
     'remove the quotes'),
    ('tcp-without-port', 14, 'targets[0].port',
     'missing key `port`, required with kind: tcp',
     'add `port:`'),
    ('tier-out-of-range', 32, 'services[0].pools[1].tier',
     'expected an integer from 1 to 9, found 10',
     None),
    ('timeout-too-long', 18, 'targets[0].timeout',
     'expected a timeout <= interval x 10 (5 s), found 6',
     'lower timeout or raise interval'),
    ('top-level-list', 2, '',
     'expected a mapping at the top level (version: 1, node:, sites:, links:, ...), found a list',
     'see deploy/examples/hk-cluster.yaml'),
    ('unknown-key', 12, 'links[1].wieght',
     'unknown key `wieght` in link',
     'did you mean `weight`?'),
    ('unknown-top-key', 33, 'policy',
     'unknown key `policy` in config',
     'did you mean `policies`?'),
    ('version', 2, 'version',
     'expected 1, found integer 2',
     None),
    ('wrong-kind-key', 17, 'targets[0].qname',
     '`qname` is only valid with kind: dns, this target has kind: http',
     'remove `qname` or change kind'),
    ('yaml-syntax', 12, '',
     "invalid YAML: expected ',' or ']', but got '}' (while parsing a flow sequence)",
     None),
    ('yaml-tab', 11, '',
     "invalid YAML: found character '\\t' that cannot start any token (while scanning for the "
     'next token)',
     'indent with spaces, not tabs'),
]

CASE_IDS = [case for case, *_ in BAD_CASES]


def bad_file(case: str) -> str:
    return str(CONFIG_DIR / f"bad-{case}.yaml")


def test_every_bad_file_has_exactly_one_table_entry() -> None:
    files = sorted(p.name.removeprefix("bad-").removesuffix(".yaml")
                   for p in CONFIG_DIR.glob("bad-*.yaml"))
    assert files == sorted(CASE_IDS)
    assert len(set(CASE_IDS)) == len(CASE_IDS) >= 20


@pytest.mark.parametrize(("case", "line", "key_path", "message", "fix"), BAD_CASES, ids=CASE_IDS)
def test_bad_config_text(case: str, line: int, key_path: str, message: str, fix: str | None,
                         capsys: pytest.CaptureFixture[str]) -> None:
    path = bad_file(case)
    assert main(["check", path]) == 2
    out, err = capsys.readouterr()
    assert out == ""
    expected = str(ConfigError(path, line, key_path, message, fix))
    error_lines = [ln for ln in err.splitlines() if ln.startswith(path + ":")]
    assert error_lines == [expected]
    assert err.endswith(f"edgesteer check: {path} is invalid (1 error)\n")


@pytest.mark.parametrize(("case", "line", "key_path", "message", "fix"), BAD_CASES, ids=CASE_IDS)
def test_bad_config_json(case: str, line: int, key_path: str, message: str, fix: str | None,
                         capsys: pytest.CaptureFixture[str]) -> None:
    path = bad_file(case)
    assert main(["check", "--json", path]) == 2
    out, err = capsys.readouterr()
    assert err == ""
    assert json.loads(out) == {"ok": False, "file": path, "errors": [
        {"file": path, "line": line, "key_path": key_path, "message": message, "fix": fix}]}


def test_bad_files_are_one_defect_away_from_the_good_base() -> None:
    """Each bad file differs from good-minimal.yaml in a few lines only (one cause each)."""
    base = MINIMAL.read_text().splitlines()[1:]
    for case in CASE_IDS:
        if case in ("empty", "top-level-list", "empty-pools", "cname-at-apex",
                    "service-outside-zone", "bad-rcode", "bad-rdatatype"):
            continue
        lines = Path(bad_file(case)).read_text().splitlines()[1:]
        changed = set(lines) ^ set(base)
        assert 1 <= len(changed) <= 6, (case, changed)


# error rendering ------------------------------------------------------------------------------
def test_config_error_str_forms() -> None:
    assert str(ConfigError("a.yaml", 3, "links[0].weight", "bad", "fix it")) == \
        "a.yaml:3: links[0].weight: bad (fix: fix it)"
    assert str(ConfigError("a.yaml", None, "", "cannot read")) == "a.yaml: cannot read"
    assert str(ConfigError("a.yaml", 1, "", "invalid YAML")) == "a.yaml:1: invalid YAML"
    invalid = ConfigInvalid([ConfigError("a", 1, "x", "m1"), ConfigError("a", 2, "y", "m2")])
    assert str(invalid) == "a:1: x: m1\na:2: y: m2"
    assert len(invalid.errors) == 2


def test_missing_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = str(tmp_path / "nope.yaml")
    assert main(["check", path]) == 2
    err = capsys.readouterr().err
    assert f"{path}: cannot read the config file: No such file or directory " \
           "(fix: check the path and its permissions)" in err


def test_directory_is_unreadable(tmp_path: Path) -> None:
    with pytest.raises(ConfigInvalid) as info:
        load_config(tmp_path)
    (error,) = info.value.errors
    assert error.line is None and error.message.startswith("cannot read the config file: ")


def test_not_utf8(tmp_path: Path) -> None:
    path = tmp_path / "latin1.yaml"
    path.write_bytes(b"version: 1\nnode: {name: caf\xe9, site: hk}\n")
    with pytest.raises(ConfigInvalid) as info:
        load_config(path)
    assert info.value.errors == [ConfigError(str(path), 2, "", "expected UTF-8 text, found "
                                             "byte 0xe9", "save the file as UTF-8")]


@pytest.mark.parametrize(("text", "line", "message"), [
    ("version: 1\x07\n", 1, "invalid YAML: special characters are not allowed "
     "(character #x0007)"),
    ("version: 1\n---\nversion: 1\n", 2, "invalid YAML: but found another document "
     "(expected a single document in the stream)"),
    ("version: " + "[" * 3000 + "]" * 3000, None, "invalid YAML: nested too deeply"),
])
def test_yaml_level_errors(text: str, line: int | None, message: str) -> None:
    with pytest.raises(ConfigInvalid) as info:
        parse_config(text, "t.yaml")
    (error,) = info.value.errors
    assert (error.line, error.key_path, error.message) == (line, "", message)


# many errors at once ------------------------------------------------------------------------
MULTI = """\
version: 1
node: {name: hk-1, site: nowhere}
sites: [{name: hk}]
health: {window: yes, quorum: most}
links:
  - name: cn2
    priorty: 1
    answers: {v4: ["2001:db8::1"]}
  - name: pccw
    priority: 2
    weight: -1
    answers: {v4: [198.51.100.20]}
targets:
  - {name: t, kind: http, host: 127.0.0.1, qname: example.hk}
zones: [{name: example.hk, ns: [ns1.example.hk]}]
services:
  - name: www.example.hk
    ttl: 30
    failover_ttl: 60
    pools:
      - name: main
        endpoints: [{link: cn3}]
"""


def test_all_errors_are_reported_at_once() -> None:
    with pytest.raises(ConfigInvalid) as info:
        parse_config(MULTI, "multi.yaml")
    got = [(e.line, e.key_path) for e in info.value.errors]
    assert got == [
        (2, "node.site"),
        (4, "health.window"),
        (4, "health.quorum"),
        (6, "links[0].priority"),
        (7, "links[0].priorty"),
        (8, "links[0].answers.v4[0]"),
        (11, "links[1].weight"),
        (14, "targets[0].qname"),
        (19, "services[0].failover_ttl"),
        (22, "services[0].pools[0].endpoints[0].link"),
    ]
    text = str(info.value)
    assert text.count("\n") == len(got) - 1
    assert "multi.yaml:4: health.window: expected an integer from 2 to 10000, " \
           "found boolean yes" in text


def test_invalid_list_does_not_cascade_into_dangling_references() -> None:
    """A link list that could not be read completely makes no endpoint 'dangling'."""
    text = MINIMAL.read_text().replace("  - name: pccw\n", "  - name: pccw\n    x: 1\n", 1)
    text = text.replace("links:\n", "links:\n  - 5\n", 1)
    with pytest.raises(ConfigInvalid) as info:
        parse_config(text)
    assert [e.key_path for e in info.value.errors] == ["links[0]", "links[2].x"]


# good configs -------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def example() -> Config:
    return load_config(EXAMPLE)


def test_example_loads(example: Config) -> None:
    assert example.source == str(EXAMPLE)
    assert example.node.name == "hk-kwaichung-1" and example.node.site == "hk-kwaichung"
    assert [lk.name for lk in example.links] == ["cn2-gia", "pccw", "ntt", "hkix"]
    assert [lk.priority for lk in example.links] == [1, 1, 2, 3]
    assert {t.kind for t in example.targets} == set(ProbeKind)
    assert example.dns.listen == (("127.0.0.1", 5353), ("::1", 5353))
    assert [s.name for s in example.segments] == [
        "ct-canary", "china-telecom-users", "china-unicom-users", "china-mobile-users",
        "hk-macau", "overseas"]
    assert example.segments[0].bucket == (0.0, 5.0)
    ct = next(line for line in example.lines if line.name == "china-telecom")
    assert ct.asns == frozenset({4134, 4809})
    assert set(example.policies) == {"www.example.hk"}


def test_link_thresholds_merge_key_by_key(example: Config) -> None:
    health = example.health.thresholds
    cn2, pccw, ntt = example.link("cn2-gia"), example.link("pccw"), example.link("ntt")
    assert pccw.thresholds == health
    assert cn2.thresholds.degraded.rtt_p95_ms == 80
    assert cn2.thresholds.degraded.loss == health.degraded.loss
    assert cn2.thresholds.degraded.jitter_ms == health.degraded.jitter_ms
    assert cn2.thresholds.down.rtt_p95_ms == 200
    assert cn2.thresholds.recover_ratio == health.recover_ratio
    assert ntt.thresholds.degraded.loss == 0.03
    assert ntt.thresholds.down == health.down


def test_health_override_merges_over_defaults_and_null_disables() -> None:
    text = MINIMAL.read_text().replace("links:\n", "health:\n  thresholds:\n"
                                       "    degraded: {jitter_ms: null}\n"
                                       "    down: {loss: 0.2}\nlinks:\n", 1)
    t = parse_config(text).health.thresholds
    assert t.degraded.jitter_ms is None
    assert t.degraded.loss == d.DEGRADED_LOSS and t.degraded.rtt_p95_ms == d.DEGRADED_RTT_P95_MS
    assert t.down.loss == 0.2 and t.down.rtt_p95_ms == d.DOWN_RTT_P95_MS
    assert t.recover_ratio == d.RECOVER_RATIO


def test_defaults_applied() -> None:
    cfg = load_config(MINIMAL)
    h = cfg.health
    assert (h.window, h.rise, h.fall, h.hold_down_s, h.stale_after_s, h.quorum,
            h.degraded_weight) == (d.HEALTH_WINDOW, d.HEALTH_RISE, d.HEALTH_FALL,
                                   d.HEALTH_HOLD_DOWN_S, d.HEALTH_STALE_AFTER_S,
                                   d.HEALTH_QUORUM, d.HEALTH_DEGRADED_WEIGHT)
    assert h.thresholds.down.loss == d.DOWN_LOSS
    cn2 = cfg.link("cn2")
    assert (cn2.carrier, cn2.weight, cn2.source, cn2.fwmark) == ("cn2", d.LINK_WEIGHT, None, None)
    (target,) = cfg.targets
    assert (target.port, target.interval_s, target.timeout_s, target.links, target.path,
            target.scheme, target.expect_status) == (80, d.TARGET_INTERVAL_S,
                                                      d.TARGET_TIMEOUT_S, (), "/", "http", (200,))
    svc = cfg.service("www.example.hk")
    assert (svc.ttl, svc.failover_ttl, svc.max_answers, svc.failover_threshold) == (
        d.SERVICE_TTL, d.SERVICE_FAILOVER_TTL, d.SERVICE_MAX_ANSWERS,
        d.SERVICE_FAILOVER_THRESHOLD)
    zone = cfg.zone("example.hk")
    assert (zone.soa_mname, zone.soa_rname, zone.soa_refresh, zone.soa_retry, zone.soa_expire,
            zone.soa_minimum, zone.ttl) == ("ns1.example.hk", "hostmaster.example.hk",
                                            d.SOA_REFRESH, d.SOA_RETRY, d.SOA_EXPIRE,
                                            d.SOA_MINIMUM, d.ZONE_TTL)
    assert dict(zone.ns_addresses) == {}
    assert cfg.dns.listen == (("127.0.0.1", 5353),)
    assert (cfg.guard.freeze, cfg.guard.fail_open) == (d.GUARD_FREEZE, d.GUARD_FAIL_OPEN)


def test_failover_ttl_default_is_capped_by_ttl() -> None:
    text = MINIMAL.read_text().replace("  - name: www.example.hk\n",
                                       "  - name: www.example.hk\n    ttl: 5\n", 1)
    svc = parse_config(text).service("www.example.hk")
    assert (svc.ttl, svc.failover_ttl) == (5, 5)


def test_endpoint_defaults_come_from_the_link() -> None:
    text = MINIMAL.read_text().replace(
        "endpoints: [{link: pccw}]",
        "endpoints: [{link: pccw}, {link: cn2, weight: 7, addresses: [203.0.113.99]},"
        " {link: cn2, cname: CDN.Example.NET.}]")
    cfg = parse_config(text)
    main_pool, backup = cfg.service("www.example.hk").pools
    cn2 = main_pool.endpoints[0]
    assert cn2.addresses == ("203.0.113.10", "2001:db8:10::10")
    assert cn2.weight == d.LINK_WEIGHT and cn2.cname is None
    pccw, explicit, cname = backup.endpoints
    assert (pccw.addresses, pccw.weight) == (("198.51.100.20",), d.LINK_WEIGHT)
    assert (explicit.addresses, explicit.weight) == (("203.0.113.99",), 7.0)
    assert (cname.addresses, cname.cname, cname.weight) == ((), "cdn.example.net", 100.0)


def test_endpoint_weight_follows_the_link_weight() -> None:
    text = MINIMAL.read_text().replace("    priority: 2\n", "    priority: 2\n    weight: 0\n")
    cfg = parse_config(text)
    assert cfg.service("www.example.hk").pool("backup").endpoints[0].weight == 0.0


def test_service_goes_to_the_longest_matching_zone_and_names_are_normalized() -> None:
    text = MINIMAL.read_text().replace(
        "zones:\n", "zones:\n  - {name: CDN.Example.HK., ns: [NS1.example.hk.]}\n", 1).replace(
        "services:\n", "services:\n  - name: Img.CDN.example.hk.\n    pools: [{name: p, "
        "endpoints: [{link: cn2}]}]\n  - name: cdn.example.hk\n    pools: [{name: p, "
        "endpoints: [{link: cn2}]}]\n", 1)
    cfg = parse_config(text)
    assert [z.name for z in cfg.zones] == ["cdn.example.hk", "example.hk"]
    assert cfg.zone("cdn.example.hk").ns == ("ns1.example.hk",)
    assert {s.name: s.zone for s in cfg.services} == {
        "img.cdn.example.hk": "cdn.example.hk", "cdn.example.hk": "cdn.example.hk",
        "www.example.hk": "example.hk"}


@pytest.mark.parametrize(("extra", "port"), [
    ("    kind: http\n    scheme: https\n", 443),
    ("    kind: dns\n", 53),
    ("    kind: icmp\n", d.ICMP_PORT),
    ("    kind: tcp\n    port: 8443\n", 8443),
])
def test_target_port_defaults_by_kind(extra: str, port: int) -> None:
    text = MINIMAL.read_text().replace("    kind: http\n", extra, 1)
    (target,) = parse_config(text).targets
    assert target.port == port


def test_dns_target_fields_are_normalized() -> None:
    text = MINIMAL.read_text().replace(
        "    kind: http\n", "    kind: dns\n    qname: POP.Example.NET.\n    qtype: aaaa\n"
        "    expect_rcode: nxdomain\n    transport: tcp\n", 1)
    (t,) = parse_config(text).targets
    assert (t.kind, t.qname, t.qtype, t.expect_rcode, t.transport) == (
        ProbeKind.DNS, "pop.example.net", "AAAA", "NXDOMAIN", "tcp")


def test_yaml_anchors_and_merge_keys() -> None:
    text = MINIMAL.read_text().replace(
        "  - name: cn2\n    priority: 1\n",
        "  - &base\n    name: cn2\n    priority: 1\n    weight: 50\n", 1).replace(
        "  - name: pccw\n    priority: 2\n", "  - <<: *base\n    name: pccw\n    priority: 2\n", 1)
    cfg = parse_config(text)
    assert (cfg.link("pccw").weight, cfg.link("pccw").priority) == (50.0, 2)
    assert cfg.link("pccw").answers_v4 == ("198.51.100.20",)


def test_policies_are_keyed_by_service(example: Config) -> None:
    policy = example.policies["www.example.hk"]
    assert policy.rules[0].segment == "ct-canary"
    assert policy.rules[-1].segment == "default"
    assert policy.rules[0].pools == ("pccw-first", "cn2-second", "ntt-third")


# edgesteer check ---------------------------------------------------------------------------
def test_check_ok_text(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["check", str(EXAMPLE)]) == 0
    out, err = capsys.readouterr()
    assert err == ""
    assert "warning" not in out  # its segments by line and country have a map to look up
    assert out.startswith(f"{EXAMPLE}: OK\nnode hk-kwaichung-1 at site hk-kwaichung\n")
    assert "sites: 5, links: 4, targets: 5, zones: 1, lines: 4, segments: 6, services: 1, " \
           "policies: 1" in out
    assert "  pool pccw-first: tier 1, links pccw\n" in out
    assert "  pool ntt: tier 2 (from link priority), links ntt\n" in out


def test_check_ok_json(capsys: pytest.CaptureFixture[str], example: Config) -> None:
    assert main(["check", "--json", str(EXAMPLE)]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["ok"] is True and doc["file"] == str(EXAMPLE)
    summary = doc["summary"]
    assert summary == summarize(example)
    assert set(summary) == {"node", "counts", "links", "services"}
    assert summary["counts"] == {"sites": 5, "links": 4, "targets": 5, "zones": 1, "lines": 4,
                                 "segments": 6, "services": 1, "policies": 1}
    (svc,) = summary["services"]
    assert svc["name"] == "www.example.hk" and svc["zone"] == "example.hk"
    assert svc["pools"][0] == {"name": "cn2", "tier": 1, "tier_from": "links",
                               "links": ["cn2-gia"]}
    assert svc["pools"][4] == {"name": "pccw-first", "tier": 1, "tier_from": "pool",
                               "links": ["pccw"]}
    assert svc["rules"][-1] == {"segment": "default", "pools": ["cn2", "pccw", "ntt", "hkix"]}


def test_check_without_config(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["check"]) == 2
    assert "CONFIG is required" in capsys.readouterr().err


@pytest.mark.parametrize("argv", [["--help"], ["check", "--help"]])
def test_help(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        main(argv)
    assert info.value.code == 0
    assert "check" in capsys.readouterr().out


# fuzzing ------------------------------------------------------------------------------------
def _outcome(text: str) -> Config | ConfigInvalid:
    """Config or ConfigInvalid; any other exception fails the test."""
    try:
        return parse_config(text, "fuzz.yaml")
    except ConfigInvalid as exc:
        last = len(LINE_BREAK.findall(text)) + 1
        for e in exc.errors:
            assert e.file == "fuzz.yaml"
            assert e.line is None or 1 <= e.line <= last
            assert isinstance(e.key_path, str) and e.message
        return exc


LINE_BREAK = re.compile("\r\n|[\r\n\x85\u2028\u2029]")  # YAML's line breaks


def _paths(node: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    out = [prefix]
    if isinstance(node, dict):
        for k, v in node.items():
            out.extend(_paths(v, (*prefix, k)))
    elif isinstance(node, list):
        for i, v in enumerate(node):
            out.extend(_paths(v, (*prefix, i)))
    return out


SCALARS = st.one_of(
    st.none(), st.booleans(), st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=True, allow_infinity=True), st.text(max_size=12),
    st.sampled_from(["default", "cn2", "pccw", "main", "www.example.hk", "127.0.0.1",
                     "2001:db8::1", "10.0.0.0/8", "NO", "yes", "dns", "tcp", "http", "icmp"]))
VALUES = st.recursive(SCALARS, lambda inner: st.one_of(
    st.lists(inner, max_size=3), st.dictionaries(st.text(max_size=8), inner, max_size=3)),
    max_leaves=6)


def _mutate(data: Any, draw: st.DataObject) -> Any:
    for _ in range(draw.draw(st.integers(1, 3), label="mutations")):
        paths = [p for p in _paths(data) if p]
        if not paths:
            return data
        path = draw.draw(st.sampled_from(paths), label="path")
        parent = data
        for key in path[:-1]:
            parent = parent[key]
        action = draw.draw(st.sampled_from(["drop", "replace", "duplicate"]), label="action")
        if action == "drop":
            del parent[path[-1]]
        elif action == "replace":
            parent[path[-1]] = draw.draw(VALUES, label="value")
        elif isinstance(parent, list):
            parent.append(parent[path[-1]])
        else:
            parent[draw.draw(st.text(max_size=8), label="key")] = parent[path[-1]]
    return data


FUZZ = settings(max_examples=100, deadline=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


@FUZZ
@given(st.data())
def test_fuzz_mutations_of_the_minimal_config(data: st.DataObject) -> None:
    doc = _mutate(yaml.safe_load(MINIMAL.read_text()), data)
    _outcome(yaml.safe_dump(doc, sort_keys=False, allow_unicode=True))


@settings(max_examples=20, deadline=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(st.data())
def test_fuzz_mutations_of_the_example(data: st.DataObject) -> None:
    doc = _mutate(yaml.safe_load(EXAMPLE.read_text()), data)
    _outcome(yaml.safe_dump(doc, sort_keys=False, allow_unicode=True))


@FUZZ
@given(st.data())
def test_fuzz_text_edits_of_the_minimal_config(data: st.DataObject) -> None:
    text = MINIMAL.read_text()
    for _ in range(data.draw(st.integers(1, 4), label="edits")):
        at = data.draw(st.integers(0, len(text)), label="at")
        cut = data.draw(st.integers(0, 6), label="cut")
        insert = data.draw(st.text(alphabet=" \t\n:-[]{},#&*!|>'\"%@?`~0123456789abcxyz",
                                   max_size=6), label="insert")
        text = text[:at] + insert + text[at + cut:]
    _outcome(text)


@FUZZ
@given(st.text(max_size=200))
def test_fuzz_arbitrary_text(text: str) -> None:
    assert isinstance(_outcome(text), ConfigInvalid)
