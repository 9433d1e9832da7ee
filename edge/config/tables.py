"""The spec tables: one ``Section`` per part of the YAML config (see ``docs/config.schema.json``).

Key detection, value checks and the JSON Schema all come from these tables; rules between keys
(references, uniqueness, ``failover_ttl <= ttl``, ...) are in ``edge.config.loader``.
"""

from __future__ import annotations

from types import MappingProxyType
from typing import Any

from edge.config import defaults as d
from edge.config import values
from edge.config.spec import AnyOf, Field, ListOf, MapOf, Scalar, Section

KINDS = ("icmp", "tcp", "http", "dns")

# scalars -----------------------------------------------------------------------------------
NAME = Scalar("string", pattern=r"[A-Za-z0-9][A-Za-z0-9_.-]{0,62}",
              what="a name (letters, digits, '.', '_' and '-', at most 63)")
TEXT = Scalar("string")
BOOL = Scalar("boolean")
DNS_NAME = Scalar("string", convert=values.dns_name, what="a DNS name",
                  schema={"format": "hostname"})
IPV4 = Scalar("string", convert=values.ipv4_address, what="an IPv4 address",
              schema={"format": "ipv4"})
IPV6 = Scalar("string", convert=values.ipv6_address, what="an IPv6 address",
              schema={"format": "ipv6"})
IP = Scalar("string", convert=values.ip_address, what="an IP address")
CIDR = Scalar("string", convert=values.cidr, what="a CIDR (e.g. 202.96.0.0/13)")
ASN = Scalar("integer", minimum=1, maximum=4294967295, what="an AS number")
TIER = Scalar("integer", minimum=1, maximum=9)
WEIGHT = Scalar("number", minimum=0)
RATIO = Scalar("number", exclusive_minimum=0, maximum=1)
PERCENT = Scalar("number", minimum=0, maximum=100)
PORT = Scalar("integer", minimum=1, maximum=65535, what="a port")
TTL32 = Scalar("integer", minimum=0, maximum=2147483647)
STATUS = Scalar("integer", minimum=100, maximum=599, what="an HTTP status")


def _names(what: str) -> ListOf:
    return ListOf(NAME, what=f"a list of {what} names")


def _band(noun: str, loss: float | None, rtt: float | None, jitter: float | None) -> Section:
    """A quality band; with None defaults (link overrides) a missing key inherits."""
    inherit = loss is None

    def dflt(value: float | None) -> dict[str, Any]:
        return {} if inherit else {"default": value}

    return Section(noun, f"The {noun} band: a link is outside it when any set bound is "
                   "exceeded. null = bound unused." +
                   (" Missing keys inherit from health.thresholds." if inherit else ""),
                   MappingProxyType({
                       "loss": Field(Scalar("number", minimum=0, maximum=1),
                                     "loss ratio 0..1", nullable=True, **dflt(loss)),
                       "rtt_p95_ms": Field(Scalar("number", exclusive_minimum=0),
                                           "95th percentile round-trip time, ms",
                                           nullable=True, **dflt(rtt)),
                       "jitter_ms": Field(Scalar("number", minimum=0),
                                          "RFC 3550 jitter, ms", nullable=True, **dflt(jitter)),
                   }))


def _thresholds(inherit: bool) -> Section:
    def dflt(value: float) -> dict[str, Any]:
        return {} if inherit else {"default": value}

    if inherit:
        degraded = _band("degraded", None, None, None)
        down = _band("down", None, None, None)
    else:
        degraded = _band("degraded", d.DEGRADED_LOSS, d.DEGRADED_RTT_P95_MS,
                         d.DEGRADED_JITTER_MS)
        down = _band("down", d.DOWN_LOSS, d.DOWN_RTT_P95_MS, d.DOWN_JITTER_MS)
    return Section(
        "thresholds",
        "Enter bands for DEGRADED and DOWN; the exit band is the enter band x recover_ratio."
        + (" A partial override: every missing key inherits from health.thresholds, key by key."
           if inherit else ""),
        MappingProxyType({
            "degraded": Field(degraded, "band whose crossing makes a link DEGRADED"),
            "down": Field(down, "band whose crossing makes a link DOWN"),
            "recover_ratio": Field(RATIO, "exit band = enter band x this, 0 < x <= 1",
                                   **dflt(d.RECOVER_RATIO)),
        }))


def _section(noun: str, description: str, fields: dict[str, Field],
             discriminator: str | None = None) -> Section:
    return Section(noun, description, MappingProxyType(fields), discriminator)


NODE = _section("node", "This node.", {
    "name": Field(NAME, "the node's name, e.g. hk-kwaichung-1", required=True),
    "site": Field(NAME, "the site this node is at; must name a site", required=True),
})

LOCATION = _section("location", "Geographic location.", {
    "lat": Field(Scalar("number", minimum=-90, maximum=90), "latitude", required=True),
    "lon": Field(Scalar("number", minimum=-180, maximum=180), "longitude", required=True),
})

SITE = _section("site", "A site (data centre or PoP).", {
    "name": Field(NAME, "unique site name", required=True),
    "region": Field(TEXT, "region code, e.g. HK"),
    "location": Field(LOCATION, "latitude / longitude"),
})

HEALTH = _section("health", "How measurements turn into link states.", {
    "window": Field(Scalar("integer", minimum=2, maximum=10000),
                    "samples in the sliding window", default=d.HEALTH_WINDOW),
    "rise": Field(Scalar("integer", minimum=1),
                  "consecutive good measurements before a link comes up", default=d.HEALTH_RISE),
    "fall": Field(Scalar("integer", minimum=1),
                  "consecutive bad measurements before a link goes down", default=d.HEALTH_FALL),
    "hold_down": Field(Scalar("number", minimum=0),
                       "seconds a link stays out after going down", default=d.HEALTH_HOLD_DOWN_S),
    "stale_after": Field(Scalar("number", exclusive_minimum=0),
                         "seconds without data before a path is unknown",
                         default=d.HEALTH_STALE_AFTER_S),
    "quorum": Field(Scalar("string", enum=("all", "majority", "any")),
                    "how the paths of a link combine", default=d.HEALTH_QUORUM),
    "degraded_weight": Field(RATIO, "weight factor of a degraded link, 0 < x <= 1",
                             default=d.HEALTH_DEGRADED_WEIGHT),
    "thresholds": Field(_thresholds(inherit=False), "default quality bands of every link"),
})

ANSWERS = _section("answers", "The VIPs users reach over this link; at least one address.", {
    "v4": Field(ListOf(IPV4, what="a list of IPv4 addresses"), "IPv4 addresses", default=()),
    "v6": Field(ListOf(IPV6, what="a list of IPv6 addresses"), "IPv6 addresses", default=()),
})

LINK = _section("link", "An upstream of this node (carrier or exchange).", {
    "name": Field(NAME, "unique link name", required=True),
    "carrier": Field(TEXT, "carrier name; default: the link's name"),
    "priority": Field(TIER, "operator tier 1..9, 1 = preferred", required=True),
    "weight": Field(WEIGHT, "capacity weight, >= 0 (0 = drained)", default=d.LINK_WEIGHT),
    "source": Field(IP, "probe source address over this link"),
    "fwmark": Field(Scalar("integer", minimum=0, maximum=4294967295), "SO_MARK for probes"),
    "device": Field(TEXT, "interface for SO_BINDTODEVICE"),
    "answers": Field(ANSWERS, "the VIPs users reach over this link", required=True),
    "thresholds": Field(_thresholds(inherit=True),
                        "per-link override of health.thresholds, merged key by key"),
})

_HTTP, _DNS = ("http",), ("dns",)
TARGET = _section("target", "What a probe measures toward.", {
    "name": Field(NAME, "unique target name", required=True),
    "kind": Field(Scalar("string", enum=KINDS), "probe kind", required=True),
    "host": Field(Scalar("string", convert=values.host, what="an IP address or host name"),
                  "IP address or host name", required=True),
    "port": Field(PORT, "port; default dns 53, http 80 (https 443); required for tcp; "
                  "icmp has none", kinds=("tcp", "http", "dns"), required_kinds=("tcp",)),
    "interval": Field(Scalar("number", minimum=0.1, maximum=3600), "seconds between probes",
                      default=d.TARGET_INTERVAL_S),
    "timeout": Field(Scalar("number", exclusive_minimum=0),
                     f"seconds, at most interval x {d.TARGET_TIMEOUT_MAX_FACTOR}",
                     default=d.TARGET_TIMEOUT_S),
    "links": Field(_names("link"), "links to probe over; default: all"),
    "path": Field(Scalar("string", pattern=r"/.*", what="a path starting with /"),
                  "HTTP path", default=d.HTTP_PATH, kinds=_HTTP),
    "scheme": Field(Scalar("string", enum=("http", "https")), "http or https",
                    default=d.HTTP_SCHEME, kinds=_HTTP),
    "expect_status": Field(AnyOf((STATUS, ListOf(STATUS, min_items=1)),
                                 what="an HTTP status or a list of them"),
                           "accepted HTTP statuses", default=d.HTTP_EXPECT_STATUS,
                           kinds=_HTTP),
    "body_match": Field(TEXT, "substring the body must contain", kinds=_HTTP),
    "qname": Field(Scalar("string", convert=values.qname, what="a DNS name"),
                   "name to query", default=d.DNS_QNAME, kinds=_DNS),
    "qtype": Field(Scalar("string", convert=values.rdatatype, what="a DNS record type name"),
                   "record type to query", default=d.DNS_QTYPE, kinds=_DNS),
    "transport": Field(Scalar("string", enum=("udp", "tcp")), "udp or tcp",
                       default=d.DNS_TRANSPORT, kinds=_DNS),
    "expect_rcode": Field(Scalar("string", convert=values.rcode, what="a DNS rcode name"),
                          "expected response code", default=d.DNS_EXPECT_RCODE, kinds=_DNS),
    "expect_answer": Field(TEXT, "a value the answer must contain", kinds=_DNS),
}, discriminator="kind")

SOA = _section("soa", "SOA record fields.", {
    "mname": Field(DNS_NAME, "primary name server; default: the zone's first ns"),
    "rname": Field(Scalar("string", convert=values.mailbox, what="a mailbox in DNS form"),
                   f"responsible mailbox in DNS form; default: {d.SOA_RNAME_LOCAL_PART}.<zone>"),
    "refresh": Field(TTL32, "seconds", default=d.SOA_REFRESH),
    "retry": Field(TTL32, "seconds", default=d.SOA_RETRY),
    "expire": Field(TTL32, "seconds", default=d.SOA_EXPIRE),
    "minimum": Field(TTL32, "negative-caching TTL, seconds", default=d.SOA_MINIMUM),
})

ZONE = _section("zone", "An authoritative zone.", {
    "name": Field(DNS_NAME, "zone apex", required=True),
    "ns": Field(ListOf(DNS_NAME, min_items=1, what="a list of DNS names"), "name servers",
                required=True),
    "ns_addresses": Field(MapOf(DNS_NAME, ListOf(IP, min_items=1,
                                                 what="a list of IP addresses")),
                          "glue: ns name -> addresses; names must be in ns"),
    "soa": Field(SOA, "SOA fields"),
    "ttl": Field(Scalar("integer", minimum=1, maximum=2147483647), "TTL of SOA and NS",
                 default=d.ZONE_TTL),
})

LINE = _section("line", "An ISP line, by ASNs and/or CIDRs.", {
    "name": Field(NAME, "unique line name", required=True),
    "asns": Field(ListOf(ASN, what="a list of AS numbers"), "AS numbers", default=()),
    "cidrs": Field(ListOf(CIDR, what="a list of CIDRs"), "networks", default=()),
})

SEGMENT = _section("segment", "A set of users; segments match in order, first match wins.", {
    "name": Field(NAME, "unique segment name; `default` is reserved", required=True),
    "lines": Field(_names("line"), "ISP lines (any)", default=()),
    "cidrs": Field(ListOf(CIDR, what="a list of CIDRs"), "client networks (any)", default=()),
    "asns": Field(ListOf(ASN, what="a list of AS numbers"), "client ASNs (any)", default=()),
    "countries": Field(ListOf(Scalar("string", convert=values.country,
                                     what="an ISO 3166 alpha-2 code",
                                     schema={"pattern": "^[A-Z]{2}$"}),
                              what="a list of country codes"),
                       "ISO 3166 alpha-2 codes, upper case (any)", default=()),
    "bucket": Field(ListOf(PERCENT, min_items=2, max_items=2, what="a list [lo, hi]"),
                    "stable hash bucket [lo, hi) in percent, 0 <= lo < hi <= 100"),
})

ENDPOINT = _section("endpoint", "An answer bound to a link.", {
    "link": Field(NAME, "the link; must name a link", required=True),
    "weight": Field(WEIGHT, ">= 0; default: the link's weight"),
    "addresses": Field(ListOf(IP, min_items=1, what="a list of IP addresses"),
                       "answer addresses; default (with no cname): the link's answers v4+v6"),
    "cname": Field(DNS_NAME, "answer with a CNAME instead; exclusive with addresses"),
})

POOL = _section("pool", "Endpoints served together.", {
    "name": Field(NAME, "pool name, unique within the service", required=True),
    "tier": Field(TIER, "1..9; overrides the links' priority"),
    "endpoints": Field(ListOf(ENDPOINT, min_items=1, what="a list of endpoints"),
                       "the pool's endpoints, at least one", required=True),
})

SERVICE = _section("service", "A steered DNS name.", {
    "name": Field(DNS_NAME, "the name; must be inside a zone", required=True),
    "ttl": Field(Scalar("integer", minimum=1, maximum=604800), "answer TTL",
                 default=d.SERVICE_TTL),
    "failover_ttl": Field(Scalar("integer", minimum=1), "TTL while failed over, 1..ttl; "
                          f"default min({d.SERVICE_FAILOVER_TTL}, ttl)"),
    "max_answers": Field(Scalar("integer", minimum=1, maximum=16), "answers per response",
                         default=d.SERVICE_MAX_ANSWERS),
    "failover_threshold": Field(RATIO, "healthy share of a tier below which it fails over",
                                default=d.SERVICE_FAILOVER_THRESHOLD),
    "pools": Field(ListOf(POOL, min_items=1, what="a list of pools"),
                   "the service's pools, at least one",
                   required=True),
})

RULE = _section("rule", "Segment -> the pools that serve it; tiers order the failover.", {
    "segment": Field(NAME, "a segment name or `default`", required=True),
    "pools": Field(ListOf(NAME, min_items=1, what="a list of pool names"),
                   "pools of the service", required=True),
})

POLICY = _section("policy", "Steering rules of one service.", {
    "service": Field(DNS_NAME, "the service; must name a service", required=True),
    "rules": Field(ListOf(RULE, min_items=1, what="a list of rules"),
                   "segment rules, at least one",
                   required=True),
})

GUARD = _section("guard", "Safety rails between plan and apply.", {
    "freeze": Field(BOOL, "keep the current plan", default=d.GUARD_FREEZE),
    "fail_open": Field(BOOL, "serve every endpoint when all are down",
                       default=d.GUARD_FAIL_OPEN),
})

DNS = _section("dns", "The built-in DNS server.", {
    "listen": Field(ListOf(Scalar("string", convert=values.listen, what="HOST:PORT"),
                           min_items=1, what="a list of HOST:PORT"),
                    "addresses to listen on; port 0 = any free port",
                    default=d.DNS_LISTEN),
})

ROOT = _section("config", "edgesteer configuration (version 1).", {
    "version": Field(Scalar("integer", enum=(d.CONFIG_VERSION,)), "must be 1", required=True),
    "node": Field(NODE, "this node", required=True),
    "sites": Field(ListOf(SITE, min_items=1, what="a list of sites"), "sites, at least one",
                   required=True),
    "health": Field(HEALTH, "health settings; every key has a default"),
    "links": Field(ListOf(LINK, min_items=1, what="a list of links"), "links, at least one",
                   required=True),
    "targets": Field(ListOf(TARGET, what="a list of targets"), "probe targets", default=()),
    "zones": Field(ListOf(ZONE, what="a list of zones"), "zones; at least one with services",
                   default=()),
    "lines": Field(ListOf(LINE, what="a list of lines"), "ISP lines", default=()),
    "segments": Field(ListOf(SEGMENT, what="a list of segments"),
                      "user segments; implicit `default` last", default=()),
    "services": Field(ListOf(SERVICE, what="a list of services"), "steered names", default=()),
    "policies": Field(ListOf(POLICY, what="a list of policies"), "one per service at most",
                      default=()),
    "guard": Field(GUARD, "safety rails"),
    "dns": Field(DNS, "built-in DNS server"),
})
