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

DAMPING = _section("damping", "Flap damping: every change of a link between serving and not "
                   "serving adds a penalty that halves every half_life; at suppress the link "
                   "is held down until the penalty decays below reuse.", {
    "penalty": Field(Scalar("number", minimum=0), "penalty per flap; 0 disables damping",
                     default=d.DAMPING_PENALTY),
    "suppress": Field(Scalar("number", exclusive_minimum=0), "suppress at this penalty",
                      default=d.DAMPING_SUPPRESS),
    "reuse": Field(Scalar("number", exclusive_minimum=0), "reuse below this penalty",
                   default=d.DAMPING_REUSE),
    "half_life": Field(Scalar("number", exclusive_minimum=0), "seconds",
                       default=d.DAMPING_HALF_LIFE_S),
    "max_suppress": Field(Scalar("number", exclusive_minimum=0),
                          "longest suppression, seconds", default=d.DAMPING_MAX_SUPPRESS_S),
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
    "stale_grace": Field(Scalar("number", minimum=0),
                         "seconds a link whose paths all went stale keeps its last state",
                         default=d.HEALTH_STALE_GRACE_S),
    "stale_down": Field(Scalar("string", enum=("serve", "hold")),
                        "a link out of service (down, rising) whose paths all went stale, "
                        "after stale_grace: `serve` (staleness is not failure: it comes back "
                        "as unknown) or `hold` (it stays out until data comes back)",
                        default=d.HEALTH_STALE_DOWN),
    "fast_probe_factor": Field(Scalar("number", minimum=1),
                               "probe a path this many times faster (not below 50 ms) while "
                               "it is falling or rising, or its window holds both answered and "
                               "lost probes (1 = never faster)",
                               default=d.HEALTH_FAST_PROBE_FACTOR),
    "damping": Field(DAMPING, "flap damping of link states (BGP-style)"),
})

ANSWERS = _section("answers", "The VIPs users reach over this link; at least one address.", {
    "v4": Field(ListOf(IPV4, what="a list of IPv4 addresses"), "IPv4 addresses", default=()),
    "v6": Field(ListOf(IPV6, what="a list of IPv6 addresses"), "IPv6 addresses", default=()),
})

COMMUNITY = Scalar("string", convert=values.community, what="a BGP community ASN:VALUE")
LARGE_COMMUNITY = Scalar("string", convert=values.large_community,
                         what="a BGP large community A:B:C")
COMMUNITIES = ListOf(COMMUNITY, what="a list of BGP communities")
LARGE_COMMUNITIES = ListOf(LARGE_COMMUNITY, what="a list of BGP large communities")

BGP = _section("bgp", "The BGP session over this link that announces anycast prefixes.", {
    "peer": Field(IP, "the peer's address", required=True),
    "peer_as": Field(ASN, "the peer's AS number", required=True),
    "local_as": Field(ASN, "our AS number on this session; default: anycast.local_as"),
    "local_address": Field(IP, "our address on this session (source of the TCP connection)"),
    "peer_port": Field(PORT, "the peer's BGP port", default=d.BGP_PORT),
    "local_port": Field(PORT, "our BGP listening port (bird); default: the speaker's (179)"),
    "next_hop_v6": Field(IPV6, "next hop of IPv6 prefixes when the session is over IPv4 "
                         "(required then)"),
    "speaker": Field(NAME, "the anycast speaker that runs it; default: the first one"),
    "hold_time": Field(Scalar("integer", minimum=3, maximum=65535), "BGP hold time, seconds "
                       "(keepalive: a third of it)", default=d.BGP_HOLD_TIME),
    "multihop": Field(BOOL, "the peer is not on a directly connected network",
                      default=False),
    "communities": Field(COMMUNITIES, "added to every announcement on this session",
                         default=()),
    "large_communities": Field(LARGE_COMMUNITIES,
                               "added to every announcement on this session", default=()),
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
    "bgp": Field(BGP, "BGP session for anycast announcements over this link"),
    "site": Field(NAME, "the site this link is at (nearest routing ranks sites by "
                  "distance); must name a site"),
})

REGION = Scalar("string", pattern=r"[A-Za-z0-9][A-Za-z0-9_.-]{0,62}",
                what="a region code (e.g. GD, CN-GD, or a region of an operator map)")

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
                     f"seconds, at most interval x {d.TARGET_TIMEOUT_MAX_FACTOR}; default "
                     f"{d.TARGET_TIMEOUT_S:g}, or interval x {d.TARGET_TIMEOUT_INTERVALS:g} "
                     "when that is shorter", default=d.TARGET_TIMEOUT_S),
    "links": Field(_names("link"), "links to probe over; default: all"),
    "region": Field(REGION, "where the target is, as a segment's regions name it: the rtt "
                    "measured toward it over a link ranks that link's site for those "
                    "segments under routing: nearest"),
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
    "regions": Field(ListOf(REGION, what="a list of region codes"),
                     "client regions (any), from GeoIP: a City database's subdivision (GD) "
                     "or an operator map's region; CN-GD = region GD in country CN",
                     default=()),
    "location": Field(LOCATION, "where the segment's users are (not a criterion): nearest "
                      "routing ranks sites by distance from here"),
    "measured_regions": Field(ListOf(REGION, what="a list of region codes"),
                              "regions whose measured latency (targets[].region) stands for "
                              "these users under nearest routing (not a criterion); default: "
                              "the segment's `regions`", default=()),
})

ENDPOINT = _section("endpoint", "An answer bound to a link.", {
    "link": Field(NAME, "the link; must name a link", required=True),
    "weight": Field(WEIGHT, ">= 0; default: the link's weight"),
    "addresses": Field(ListOf(IP, min_items=1, what="a list of IP addresses"),
                       "answer addresses; default (with no cname): the link's answers v4+v6"),
    "cname": Field(DNS_NAME, "answer with a CNAME instead; exclusive with addresses"),
    "site": Field(NAME, "the site this answer is served from (nearest routing); must name "
                  "a site; default: the link's site"),
})

POOL = _section("pool", "Endpoints served together.", {
    "name": Field(NAME, "pool name, unique within the service", required=True),
    "tier": Field(TIER, "1..9; overrides the links' priority"),
    "all_down": Field(Scalar("string", enum=("fail_open", "fallback", "fail_closed")),
                      "when none of a rule's candidates can serve (the rule's first pool "
                      "decides): fail_open serves them all, flagged; fallback serves the "
                      "pool named in `fallback`; fail_closed answers NODATA",
                      default="fail_open"),
    "fallback": Field(NAME, "the pool served when all are down (all_down: fallback)"),
    "min_healthy": Field(Scalar("number", minimum=0, maximum=1),
                         "serving share of the pool's configured weight below which the "
                         "whole pool is taken out (its share spills like a failed pool's); "
                         "0 = off", default=d.POOL_MIN_HEALTHY),
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
    "spill": Field(Scalar("string", enum=("cascade", "capacity")),
                   "below failover_threshold: cascade = the next tier serves alone; "
                   "capacity = the tier's survivors keep their weight and the missing share "
                   "spreads over the next tiers by capacity", default=d.SERVICE_SPILL),
    "routing": Field(Scalar("string", enum=("weighted", "nearest")),
                     "weighted = every serving endpoint of the tier by weight; nearest = "
                     "the segment's nearest site first (segments need a location, "
                     "endpoints a site with one)", default=d.SERVICE_ROUTING),
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
    "max_shift": Field(RATIO, "share of an answer set's weight that may move per step "
                       "(a ramp); a hard-down link leaves at once", default=d.GUARD_MAX_SHIFT),
    "max_demotions": Field(Scalar("integer", minimum=0),
                           "links taken out automatically per demotion_window; more waits "
                           "for an operator (0 = no limit)", default=d.GUARD_MAX_DEMOTIONS),
    "demotion_window": Field(Scalar("number", exclusive_minimum=0), "seconds",
                             default=d.GUARD_DEMOTION_WINDOW_S),
    "state_dir": Field(TEXT, "directory where link states, the last applied plan and "
                       "operator overrides survive restarts (relative: to the config file); "
                       "unset: nothing persisted"),
})

DNS = _section("dns", "The built-in DNS server.", {
    "listen": Field(ListOf(Scalar("string", convert=values.listen, what="HOST:PORT"),
                           min_items=1, what="a list of HOST:PORT"),
                    "addresses to listen on; port 0 = any free port",
                    default=d.DNS_LISTEN),
    "cookie_secret_file": Field(TEXT, "file holding the DNS Cookies secret, 32 to 128 hex "
                                "digits, shared by the nodes behind one anycast address so "
                                "each accepts the others' server cookies (relative: to the "
                                "config file); unset: a random secret per process"),
})

TSIG_ALGORITHMS = ("hmac-sha256", "hmac-sha512", "hmac-sha384", "hmac-sha224", "hmac-sha1",
                   "hmac-md5")
TSIG = _section("tsig", "A TSIG key (RFC 8945); give secret or secret_file.", {
    "name": Field(DNS_NAME, "key name, as in the server's config", required=True),
    "algorithm": Field(Scalar("string", enum=TSIG_ALGORITHMS), "HMAC algorithm",
                       default="hmac-sha256"),
    "secret": Field(Scalar("string", pattern=r"[A-Za-z0-9+/]+={0,2}", what="base64 text"),
                    "the shared secret, base64"),
    "secret_file": Field(TEXT, "file holding the base64 secret (or a BIND/Knot key file)"),
})

VIEW = _section("view", "A BIND view that serves one segment.", {
    "segment": Field(NAME, "a segment name or `default`", required=True),
    "tsig": Field(TSIG, "the key that reaches this view (match-clients) for updates"),
    "name": Field(NAME, "the view's name; default: the segment's"),
})

_R, _P, _Z = ("rfc2136",), ("powerdns",), ("zonefile",)
BACKEND = _section("backend", "An external DNS server the plan is pushed into.", {
    "name": Field(NAME, "unique backend name", required=True),
    "kind": Field(Scalar("string", enum=("rfc2136", "powerdns", "zonefile")),
                  "rfc2136 (BIND, Knot), powerdns (HTTP API) or zonefile", required=True),
    "zones": Field(ListOf(DNS_NAME, what="a list of DNS names"),
                   "zones to manage; default: every zone holding a service", default=()),
    "answers": Field(Scalar("string", enum=("all", "top")),
                     "all: every answer of the serving tier; top: the max_answers heaviest",
                     default="all"),
    "timeout": Field(Scalar("number", exclusive_minimum=0, maximum=300),
                     "seconds per request", default=2.0),
    "reconcile": Field(Scalar("number", minimum=1, maximum=86400),
                       "seconds between reconcile passes of the daemon (drift repair)",
                       default=30.0),
    "server": Field(Scalar("string", convert=values.listen, what="HOST:PORT"),
                    "the primary server, HOST:PORT", kinds=_R, required_kinds=_R),
    "tsig": Field(TSIG, "the TSIG key of updates and transfers", kinds=_R),
    "views": Field(ListOf(VIEW, what="a list of views"),
                   "BIND views, one per segment, in match order", default=(),
                   kinds=_R + _Z),
    "url": Field(Scalar("string", pattern=r"https?://.+", what="an http(s) URL"),
                 "API base URL, e.g. http://127.0.0.1:8081", kinds=_P, required_kinds=_P),
    "api_key": Field(TEXT, "X-API-Key", kinds=_P),
    "api_key_file": Field(TEXT, "file holding the API key", kinds=_P),
    "server_id": Field(TEXT, "PowerDNS server id", default="localhost", kinds=_P),
    "create_zones": Field(BOOL, "create missing zones", default=False, kinds=_P),
    "lua": Field(BOOL, "LUA records (weights and CIDR segments; needs enable-lua-records)",
                 default=False, kinds=_P),
    "path": Field(TEXT, "zone file path; {zone} and {view} are replaced",
                  kinds=_Z, required_kinds=_Z),
    "reload": Field(TEXT, "command run after a write; {zone} and {path} are replaced",
                    kinds=_Z),
}, discriminator="kind")

_EXA, _BIRD = ("exabgp",), ("bird",)
SPEAKER = _section("speaker", "A BGP speaker driven by this node.", {
    "name": Field(NAME, "unique speaker name", required=True),
    "kind": Field(Scalar("string", enum=("exabgp", "bird")),
                  "exabgp (edgesteer runs it, as its API process) or bird (BIRD 2: include "
                  "file + birdc configure)", required=True),
    "min_interval": Field(Scalar("number", minimum=0, maximum=3600),
                          "seconds between two changes of one session (rate limit)",
                          default=d.SPEAKER_MIN_INTERVAL_S),
    "timeout": Field(Scalar("number", exclusive_minimum=0, maximum=300),
                     "seconds to wait for the speaker to confirm a change",
                     default=d.SPEAKER_TIMEOUT_S),
    "command": Field(TEXT, "the exabgp executable", default="exabgp", kinds=_EXA),
    "router_id": Field(IPV4, "BGP router id; default: the first IPv4 local_address",
                       kinds=_EXA),
    "socket": Field(TEXT, "BIRD control socket", kinds=_BIRD, required_kinds=_BIRD),
    "include": Field(TEXT, "the file edgesteer writes, included by bird.conf",
                     kinds=_BIRD, required_kinds=_BIRD),
    "birdc": Field(TEXT, "the birdc executable", default="birdc", kinds=_BIRD),
}, discriminator="kind")

PREFIX = _section("prefix", "An anycast prefix announced over BGP sessions.", {
    "prefix": Field(CIDR, "the prefix, e.g. 192.0.2.0/24", required=True),
    "sessions": Field(_names("link"), "links whose BGP session announces it; default: every "
                      "link with bgp"),
    "announced_by": Field(_names("site"), "other sites announcing it too (so it may be "
                          "withdrawn here when this site is unhealthy)", default=()),
    "communities": Field(COMMUNITIES, "added to this prefix's announcements", default=()),
    "large_communities": Field(LARGE_COMMUNITIES, "added to this prefix's announcements",
                               default=()),
})

ANYCAST = _section("anycast", "Anycast preferences over BGP, from link health and tiers.", {
    "local_as": Field(ASN, "our AS number (default of every link's bgp.local_as)"),
    "prefixes": Field(ListOf(PREFIX, what="a list of prefixes"), "anycast prefixes",
                      default=()),
    "speakers": Field(ListOf(SPEAKER, what="a list of speakers"), "BGP speakers", default=()),
    "prepend_by_tier": Field(ListOf(Scalar("integer", minimum=0, maximum=16), min_items=1,
                                    what="a list of prepend counts"),
                             "extra AS-path prepends of tier 1, 2, ...; the last one for "
                             "higher tiers", default=d.ANYCAST_PREPEND_BY_TIER),
    "med": Field(Scalar("integer", minimum=0, maximum=4294967295),
                 "MED of a healthy session's announcements; default: none"),
    "degraded_med": Field(Scalar("integer", minimum=0, maximum=4294967295),
                          "MED of a degraded (or falling) link's announcements",
                          default=d.ANYCAST_DEGRADED_MED, nullable=True),
    "degraded_prepend": Field(Scalar("integer", minimum=0, maximum=16),
                              "extra prepends on a degraded (or falling) link",
                              default=d.ANYCAST_DEGRADED_PREPEND),
    "communities": Field(COMMUNITIES, "added to every announcement", default=()),
    "large_communities": Field(LARGE_COMMUNITIES, "added to every announcement", default=()),
    "degraded_communities": Field(COMMUNITIES, "added while a link is degraded", default=()),
    "withdraw_when_site_unhealthy": Field(
        BOOL, "withdraw from every session when no link is healthy, if another site "
        "(announced_by) announces the prefix", default=d.ANYCAST_WITHDRAW_WHEN_SITE_UNHEALTHY),
    "drained_action": Field(Scalar("string", enum=("withdraw", "prepend")),
                            "what a drained link (weight 0) does",
                            default=d.ANYCAST_DRAINED_ACTION),
    "drain_wait": Field(Scalar("number", minimum=0, maximum=3600),
                        "seconds between withdrawing and stopping the service on drain or "
                        "shutdown", default=d.ANYCAST_DRAIN_WAIT_S),
})

_REDIS = ("redis",)
HOST_PORT = Scalar("string", convert=values.host_port, what="HOST:PORT")
BUS_TLS = _section("tls", "TLS to Redis (also on with a rediss:// url).", {
    "ca_file": Field(TEXT, "CA certificates (PEM) that sign the server's certificate"),
    "cert_file": Field(TEXT, "client certificate (PEM), when the server asks for one"),
    "key_file": Field(TEXT, "the client certificate's key (PEM)"),
    "verify": Field(BOOL, "check the server's certificate and name", default=d.BUS_TLS_VERIFY),
})
BUS = _section("bus", "How measurements reach the engines, and where engines coordinate.", {
    "kind": Field(Scalar("string", enum=("memory", "redis")),
                  "memory: one process (default); redis: Redis Streams, many nodes",
                  default=d.BUS_KIND),
    "url": Field(Scalar("string", pattern=r"(redis|rediss|unix)://.+",
                        what="a redis://, rediss:// or unix:// URL"),
                 f"a single Redis; default {d.BUS_REDIS_URL}", kinds=_REDIS),
    "sentinels": Field(ListOf(HOST_PORT, min_items=1, what="a list of HOST:PORT"),
                       "Redis Sentinels to ask for the master", kinds=_REDIS),
    "master": Field(TEXT, "the Sentinel service name", default=d.BUS_SENTINEL_MASTER,
                    kinds=_REDIS),
    "cluster": Field(ListOf(HOST_PORT, min_items=1, what="a list of HOST:PORT"),
                     "Redis Cluster startup nodes", kinds=_REDIS),
    "username": Field(TEXT, "ACL user (AUTH username password)", kinds=_REDIS),
    "password": Field(TEXT, "password; prefer password_env", kinds=_REDIS),
    "password_env": Field(Scalar("string", pattern=r"[A-Za-z_][A-Za-z0-9_]*",
                                 what="an environment variable name"),
                          "environment variable holding the password", kinds=_REDIS),
    "tls": Field(BUS_TLS, "TLS settings; the section turns TLS on", kinds=_REDIS),
    "stream": Field(TEXT, "the measurement stream's key", default=d.BUS_STREAM, kinds=_REDIS),
    "maxlen": Field(Scalar("integer", minimum=1), "stream entries kept (approximate, ~)",
                    default=d.BUS_MAXLEN, kinds=_REDIS),
    "group": Field(NAME, "consumer group of this engine; default engine-<node name>",
                   kinds=_REDIS),
    "prefix": Field(Scalar("string", pattern=r"[A-Za-z0-9_.:-]{1,64}",
                           what="letters, digits and _ . : -"),
                    "coordination keys are {prefix}:...", default=d.BUS_PREFIX, kinds=_REDIS),
    "buffer": Field(Scalar("integer", minimum=1), "measurements an agent buffers while Redis "
                    "is away (oldest dropped first)", default=d.BUS_BUFFER, kinds=_REDIS),
    "lease": Field(Scalar("number", minimum=1, maximum=300),
                   "leader lease, seconds: a standby takes over about this long after the "
                   "leader dies", default=d.BUS_LEASE_S, kinds=_REDIS),
    "history": Field(Scalar("integer", minimum=1, maximum=1000000),
                     "config versions and applied plans kept in Redis, each",
                     default=d.BUS_HISTORY, kinds=_REDIS),
}, discriminator="kind")

GEO = _section("geo", "GeoIP: where the data plane finds a client's country, region, ASN "
               "and line (for segments by asns, countries, regions and lines).", {
    "databases": Field(ListOf(Scalar("string", pattern=r".*\S.*", what="a file path"),
                              min_items=1, what="a list of file paths"),
                       "MaxMind-format databases (.mmdb: City, Country, ASN, or an operator "
                       "map from `edgesteer geo build`), consulted in order, the first value "
                       "of each field wins; relative paths: to the config file's directory",
                       default=()),
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
    "bus": Field(BUS, "measurement bus and engine coordination (Redis for many nodes)"),
    "anycast": Field(ANYCAST, "anycast prefixes, BGP speakers and preferences"),
    "backends": Field(ListOf(BACKEND, what="a list of backends"),
                      "external DNS servers to push the plan into", default=()),
    "geo": Field(GEO, "GeoIP databases the DNS server and explain look clients up in"),
})
