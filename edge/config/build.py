"""Checked YAML tree -> ``Config``: defaults that depend on other values, and the rules between
keys (unique names, references, ``failover_ttl <= ttl``, zone membership, ...).

Every check runs even when others failed, so one pass reports everything; a reference is only
called dangling when the list it points into was read completely (no cascade of false errors).
The returned ``Config`` is only meaningful when no error was recorded.

Endpoint defaults are resolved here, so the planner never needs to: an endpoint without
``weight`` takes its link's weight; one with neither ``addresses`` nor ``cname`` gets its
link's answers (v4 then v6).
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType

import maxminddb
import netaddr

from edge.config import defaults as d
from edge.config import values
from edge.config.errors import ConfigError
from edge.config.schema import (
    AnycastPrefix,
    AnycastSettings,
    BackendSettings,
    Band,
    BgpSession,
    BusSettings,
    Config,
    DampingSettings,
    DnsSettings,
    Endpoint,
    GeoSettings,
    GuardSettings,
    HealthSettings,
    Link,
    Location,
    Node,
    Policy,
    PolicyRule,
    Pool,
    Service,
    Site,
    SpeakerSettings,
    Thresholds,
    TsigSettings,
    ViewSettings,
    Zone,
)
from edge.config.yamltree import Obj, Val
from geo.geoip import GeoIP
from geo.segment import DEFAULT_SEGMENT, Line, Segment
from probes.measurement import ProbeKind
from probes.spec import TargetSpec

DEFAULT_THRESHOLDS = Thresholds(
    degraded=Band(d.DEGRADED_LOSS, d.DEGRADED_RTT_P95_MS, d.DEGRADED_JITTER_MS),
    down=Band(d.DOWN_LOSS, d.DOWN_RTT_P95_MS, d.DOWN_JITTER_MS),
    recover_ratio=d.RECOVER_RATIO)
_BAND_KEYS = ("loss", "rtt_p95_ms", "jitter_ms")


@dataclass(slots=True)
class Names:
    """The objects of one list by name, for reference checks."""

    what: str
    known: dict[str, Obj]
    complete: bool
    owner: str = ""  # " of service www.example.hk" for names scoped to a service

    def __contains__(self, name: object) -> bool:
        return name in self.known


class Builder:
    def __init__(self, file: str, errors: list[ConfigError]) -> None:
        self.file = file
        self.errors = errors
        self.warnings: list[ConfigError] = []
        self.geo_databases: tuple[str, ...] = ()

    def error(self, line: int | None, path: str, message: str, fix: str | None = None) -> None:
        self.errors.append(ConfigError(self.file, line, path, message, fix))

    # helpers ---------------------------------------------------------------------------
    def names(self, parent: Obj, key: str, what: str, name_key: str = "name",
              report: bool = True, fix: str | None = None) -> Names:
        known: dict[str, Obj] = {}
        complete = parent.complete(key)
        for val in parent.vals(key):
            obj: Obj = val.value
            if not obj.has(name_key):
                complete = False
                continue
            name = obj.get(name_key)
            if name in known and report:
                first = known[name].line_of(name_key)
                self.error(obj.line_of(name_key), obj.path_of(name_key),
                           f"duplicate {what} `{name}` (first at line {first})",
                           fix or f"rename or remove one of the two {what}s")
            elif name not in known:
                known[name] = obj
        return Names(what, known, complete)

    def ref(self, names: Names, val: Val) -> bool:
        """Whether ``val`` names a known object; reports a dangling reference."""
        if val.value in names:
            return True
        if names.complete:
            known = list(names.known)
            close = difflib.get_close_matches(str(val.value), known, n=1)
            listed = ", ".join(known[:12]) + (", ..." if len(known) > 12 else "")
            fix = f"did you mean `{close[0]}`?" if close else \
                f"define a {names.what} `{val.value}` or name an existing one"
            self.error(val.line, val.path, f"`{val.value}` does not name a {names.what}"
                       f"{names.owner} (known: {listed or 'none'})", fix)
        return False

    def refs(self, names: Names, vals: Iterable[Val]) -> tuple[str, ...]:
        return tuple(str(v.value) for v in vals if self.ref(names, v))

    # sections --------------------------------------------------------------------------
    def build(self, root: Obj) -> Config:
        site_names = self.sites = self.names(root, "sites", "site")
        sites = tuple(self.site(v.value) for v in root.vals("sites"))
        self.located = {s.name for s in sites if s.location is not None}
        node_obj = root.obj("node")
        if node_obj.has("site"):
            self.ref(site_names, node_obj.fields["site"])
        health = self.health(root.obj("health"))
        link_names = self.names(root, "links", "link")
        self.speakers = self.names(root.obj("anycast"), "speakers", "speaker")
        self.local_as = root.obj("anycast").get("local_as")
        links = tuple(self.link(v.value, health.thresholds) for v in root.vals("links"))
        line_names = self.names(root, "lines", "line")
        lines = {str(v.value.get("name")): self.line(v.value) for v in root.vals("lines")}
        zones = tuple(self.zone(v.value) for v in root.vals("zones"))
        zone_names = self.names(root, "zones", "zone")
        self.names(root, "targets", "target")
        segment_names = self.names(root, "segments", "segment")
        service_names = self.names(root, "services", "service")
        links_by_name = {lk.name: lk for lk in links}
        geo = self.geo(root.obj("geo"))
        return Config(
            source=self.file,
            node=Node(str(node_obj.get("name")), str(node_obj.get("site"))),
            sites=sites,
            links=links,
            targets=tuple(t for v in root.vals("targets")
                          if (t := self.target(v.value, link_names)) is not None),
            health=health,
            zones=zones,
            lines=tuple(lines.values()),
            segments=self.segments(root, lines, line_names),
            services=tuple(self.service(v.value, links_by_name, link_names,
                                        list(zone_names.known) if zone_names.complete else None)
                           for v in root.vals("services")),
            policies=self.policies(root, service_names, segment_names),
            guard=self.guard(root.obj("guard")),
            dns=self.dns(root.obj("dns")),
            bus=self.bus(root.obj("bus")),
            anycast=self.anycast(root.obj("anycast"), links, link_names, site_names),
            backends=self.backends(root, segment_names, zone_names),
            geo=geo,
            warnings=tuple(self.warnings),
        )

    def geo(self, o: Obj) -> GeoSettings:
        """``geo.databases`` resolved against the config file's directory; each must open
        as a MaxMind-format database."""
        base = Path(self.file).resolve().parent
        paths = []
        for val in o.vals("databases"):
            path = Path(str(val.value)).expanduser()
            resolved = str(path if path.is_absolute() else base / path)
            shown = resolved if path.is_absolute() else f"{val.value} ({resolved})"
            try:
                GeoIP([resolved]).close()
            except OSError as exc:
                self.error(val.line, val.path, f"cannot open the GeoIP database {shown}: "
                           f"{exc.strerror or exc}", "fix the path (relative paths are read "
                           "from the config file's directory) or its permissions")
            except (ValueError, maxminddb.InvalidDatabaseError):
                self.error(val.line, val.path, f"{shown} is not a MaxMind-format database",
                           "give a .mmdb file (MaxMind City, Country, ASN) or build one "
                           "with `edgesteer geo build CSV OUT`")
            paths.append(resolved)
        self.geo_databases = tuple(paths)
        return GeoSettings(databases=self.geo_databases)

    def measured_warning(self, o: Obj, seg: Segment, probed: set[str]) -> None:
        """``measured_regions`` that no target stands in: nothing will ever measure them."""
        unprobed = sorted(seg.measured_regions - probed)
        if not unprobed:
            return
        self.warnings.append(ConfigError(
            self.file, o.line_of("measured_regions"), o.path_of("measured_regions"),
            f"warning: segment `{seg.name}` takes measured latency from "
            f"{', '.join(unprobed)}, but no target names that region: its sites are "
            "ranked by distance alone there",
            "give a target in that region `region: " + unprobed[0] + "`, or fix the name"))

    def geo_warning(self, o: Obj, seg: Segment) -> None:
        """Segment criteria that only GeoIP can decide, with no database to decide them."""
        if self.geo_databases or not seg.uses_geo:
            return
        dead = [key for key in ("asns", "countries", "regions") if getattr(seg, key)]
        dead += [f"line {line.name} by ASN" if line.asns else f"line {line.name}"
                 for line in seg.lines if line.asns or not line.cidrs]
        if not dead:
            return  # lines by CIDR only: matched on the address, no database needed
        self.warnings.append(ConfigError(
            self.file, o.line, o.path, f"warning: segment `{seg.name}` needs GeoIP data "
            f"({', '.join(dead)}) but no geo.databases are configured: the DNS server never "
            "learns a client's ASN, country, region or line, so that never matches",
            "add geo: {databases: [...]} (MaxMind City/Country/ASN databases, or your own "
            "map from `edgesteer geo build`)"))

    def backends(self, root: Obj, segments: Names,
                 zones: Names) -> tuple[BackendSettings, ...]:
        self.names(root, "backends", "backend")
        out = []
        for val in root.vals("backends"):
            o: Obj = val.value
            self.refs(zones, o.vals("zones"))
            views = []
            for vval in o.vals("views"):
                v: Obj = vval.value
                if v.has("segment") and v.get("segment") != DEFAULT_SEGMENT:
                    self.ref(segments, v.fields["segment"])
                views.append(ViewSettings(segment=v.get("segment"), tsig=self.tsig(v),
                                          name=v.get("name")))
            if o.get("kind") == "powerdns" and o.has("api_key") == o.has("api_key_file"):
                self.error(o.line, o.path, "expected exactly one of api_key and api_key_file",
                           "give the PowerDNS API key inline or in a file")
            out.append(BackendSettings(
                name=o.get("name"), kind=o.get("kind"),
                zones=tuple(v.value for v in o.vals("zones")), answers=o.get("answers"),
                timeout_s=float(o.get("timeout")), reconcile_s=float(o.get("reconcile")),
                server=o.get("server"),
                tsig=self.tsig(o), views=tuple(views), url=o.get("url"),
                api_key=o.get("api_key"), api_key_file=o.get("api_key_file"),
                server_id=o.get("server_id"), create_zones=o.get("create_zones"),
                lua=o.get("lua"), path=o.get("path"), reload=o.get("reload")))
        return tuple(out)

    def tsig(self, parent: Obj) -> TsigSettings | None:
        if not parent.has("tsig"):
            return None
        t = parent.obj("tsig")
        if t.has("secret") == t.has("secret_file"):
            self.error(t.line, t.path, "expected exactly one of secret and secret_file",
                       "give the base64 secret inline or the file that holds it")
        return TsigSettings(name=t.get("name"), algorithm=t.get("algorithm"),
                            secret=t.get("secret"), secret_file=t.get("secret_file"))

    def bus(self, o: Obj) -> BusSettings:
        redis_keys = [k for k in o.fields if k != "kind"]
        if not o.has("kind") and redis_keys:
            self.error(o.line_of(redis_keys[0]), o.path_of(redis_keys[0]),
                       f"`{redis_keys[0]}` is a Redis setting but bus.kind is memory (the "
                       "default)", "add `kind: redis`")
        if o.has("sentinels") + o.has("cluster") + o.has("url") > 1:
            self.error(o.line, o.path, "expected at most one of url, sentinels and cluster",
                       "keep the one that says how this Redis is deployed")
        if o.has("password") and o.has("password_env"):
            self.error(o.line_of("password"), o.path_of("password"),
                       "expected either password or password_env, found both",
                       "keep password_env")
        tls = o.obj("tls")
        url = o.get("url", d.BUS_REDIS_URL)
        return BusSettings(
            kind=o.get("kind"), url=url,
            sentinels=tuple(v.value for v in o.vals("sentinels")),
            master=o.get("master", d.BUS_SENTINEL_MASTER),
            cluster=tuple(v.value for v in o.vals("cluster")),
            username=o.get("username"), password=o.get("password"),
            password_env=o.get("password_env"),
            tls=o.has("tls") or str(url).startswith("rediss://"),
            tls_ca_file=tls.get("ca_file"), tls_cert_file=tls.get("cert_file"),
            tls_key_file=tls.get("key_file"), tls_verify=tls.get("verify", d.BUS_TLS_VERIFY),
            stream=o.get("stream", d.BUS_STREAM), maxlen=o.get("maxlen", d.BUS_MAXLEN),
            group=o.get("group"), prefix=o.get("prefix", d.BUS_PREFIX),
            buffer=o.get("buffer", d.BUS_BUFFER),
            lease_s=float(o.get("lease", d.BUS_LEASE_S)),
            history=o.get("history", d.BUS_HISTORY))

    def dns(self, o: Obj) -> DnsSettings:
        listen = (tuple(v.value for v in o.vals("listen")) if o.has("listen")
                  else tuple(values.listen(text) for text in d.DNS_LISTEN))
        return DnsSettings(listen=listen, cookie_secret=self.cookie_secret(o))

    def cookie_secret(self, o: Obj) -> bytes | None:
        """``dns.cookie_secret_file`` read: hex text, 16 to 64 bytes."""
        if not o.has("cookie_secret_file"):
            return None
        raw = Path(str(o.get("cookie_secret_file"))).expanduser()
        path = raw if raw.is_absolute() else Path(self.file).resolve().parent / raw
        line, where = o.line_of("cookie_secret_file"), o.path_of("cookie_secret_file")
        make = "make one with `openssl rand -hex 32 > FILE; chmod 600 FILE`"
        try:
            text = path.read_text(encoding="ascii").strip()
            mode = path.stat().st_mode
        except (OSError, UnicodeDecodeError) as exc:
            self.error(line, where, f"cannot read the cookie secret {path}: "
                       f"{getattr(exc, 'strerror', None) or exc}", make)
            return None
        try:
            secret = bytes.fromhex(text)
        except ValueError:
            secret = b""
        if not 16 <= len(secret) <= 64 or len(text) != 2 * len(secret):
            self.error(line, where, f"{path} does not hold a cookie secret: expected 32 to "
                       "128 hex digits", make)
            return None
        if mode & 0o077:
            self.warnings.append(ConfigError(
                self.file, line, where, f"warning: the cookie secret {path} can be read by "
                "other users (mode %o): whoever reads it can forge server cookies and pass "
                "the rate limit" % (mode & 0o777), f"chmod 600 {path}"))
        return secret

    def site(self, o: Obj) -> Site:
        loc = o.obj("location")
        location = Location(loc.get("lat"), loc.get("lon")) if o.has("location") else None
        return Site(o.get("name"), location=location, region=o.get("region"))

    def health(self, o: Obj) -> HealthSettings:
        dmp = o.obj("damping")
        if dmp.ok("reuse") and dmp.ok("suppress") and dmp.get("reuse") >= dmp.get("suppress"):
            self.error(dmp.line_of("reuse"), dmp.path_of("reuse"),
                       "damping.reuse must be below damping.suppress",
                       "set reuse < suppress (BGP uses 750 and 2000)")
        return HealthSettings(
            window=o.get("window"), rise=o.get("rise"), fall=o.get("fall"),
            hold_down_s=float(o.get("hold_down")), stale_after_s=float(o.get("stale_after")),
            quorum=o.get("quorum"), degraded_weight=float(o.get("degraded_weight")),
            thresholds=self.thresholds(o.obj("thresholds"), DEFAULT_THRESHOLDS),
            stale_grace_s=float(o.get("stale_grace")), stale_down=o.get("stale_down"),
            fast_probe_factor=float(o.get("fast_probe_factor")),
            damping=DampingSettings(
                penalty=float(dmp.get("penalty")), suppress=float(dmp.get("suppress")),
                reuse=float(dmp.get("reuse")), half_life_s=float(dmp.get("half_life")),
                max_suppress_s=float(dmp.get("max_suppress"))))

    @staticmethod
    def guard(o: Obj) -> GuardSettings:
        return GuardSettings(
            freeze=o.get("freeze"), fail_open=o.get("fail_open"),
            max_shift=float(o.get("max_shift")), max_demotions=o.get("max_demotions"),
            demotion_window_s=float(o.get("demotion_window")), state_dir=o.get("state_dir"))

    def thresholds(self, o: Obj, base: Thresholds) -> Thresholds:
        """``o`` merged key by key over ``base``; reports a degraded band above the down band."""
        deg, down = o.obj("degraded"), o.obj("down")
        ratio = o.get("recover_ratio") if o.has("recover_ratio") else base.recover_ratio
        merged = Thresholds(self.band(deg, base.degraded), self.band(down, base.down),
                            float(ratio))
        for key in _BAND_KEYS:
            lo, hi = getattr(merged.degraded, key), getattr(merged.down, key)
            if not (deg.has(key) or down.has(key)) or not (deg.ok(key) and down.ok(key)):
                continue
            if lo is not None and hi is not None and lo > hi:
                where = deg if deg.has(key) else down
                self.error(where.line_of(key), where.path_of(key),
                           f"degraded.{key} ({lo:g}) is above down.{key} ({hi:g}), so a link "
                           "would go down before it is ever degraded",
                           f"set degraded.{key} <= down.{key}")
        return merged

    @staticmethod
    def band(o: Obj, base: Band) -> Band:
        def pick(key: str) -> float | None:
            if not o.has(key):
                return getattr(base, key)  # type: ignore[no-any-return]
            value = o.get(key)
            return None if value is None else float(value)

        return Band(loss=pick("loss"), rtt_p95_ms=pick("rtt_p95_ms"), jitter_ms=pick("jitter_ms"))

    def site_ref(self, o: Obj) -> str | None:
        """``o``'s ``site`` (None when absent), reported when it names no site."""
        if not o.has("site"):
            return None
        self.ref(self.sites, o.fields["site"])
        return str(o.get("site"))

    def link(self, o: Obj, base: Thresholds) -> Link:
        answers = o.obj("answers")
        v4 = tuple(v.value for v in answers.vals("v4"))
        v6 = tuple(v.value for v in answers.vals("v6"))
        if o.has("answers") and answers.complete("v4") and answers.complete("v6") \
                and not v4 and not v6:
            self.error(answers.line, answers.path, "expected at least one answer address "
                       "in v4 or v6, found none", "list the VIPs users reach over this link, "
                       "e.g. v4: [203.0.113.10]")
        name = o.get("name")
        return Link(name=name, carrier=o.get("carrier") or name, priority=o.get("priority"),
                    weight=float(o.get("weight")), answers_v4=v4, answers_v6=v6,
                    thresholds=self.thresholds(o.obj("thresholds"), base),
                    source=o.get("source"), fwmark=o.get("fwmark"), device=o.get("device"),
                    bgp=self.bgp(o.obj("bgp")) if o.has("bgp") else None,
                    site=self.site_ref(o))

    def bgp(self, o: Obj) -> BgpSession:
        """A link's BGP session; ``local_as`` and ``speaker`` default from ``anycast``."""
        local_as = o.get("local_as", self.local_as)
        if local_as is None and o.ok("local_as"):
            self.error(o.line, o.path, "no local AS for this BGP session",
                       "set bgp.local_as here or anycast.local_as")
        speaker = o.get("speaker")
        if o.has("speaker"):
            self.ref(self.speakers, o.fields["speaker"])
        elif self.speakers.known:
            speaker = next(iter(self.speakers.known))
        return BgpSession(peer=o.get("peer"), peer_as=o.get("peer_as"),
                          local_as=local_as or 0, speaker=speaker or "",
                          local_address=o.get("local_address"), peer_port=o.get("peer_port"),
                          hold_time=o.get("hold_time"), multihop=o.get("multihop"),
                          local_port=o.get("local_port"), next_hop_v6=o.get("next_hop_v6"),
                          communities=tuple(v.value for v in o.vals("communities")),
                          large_communities=tuple(v.value for v in o.vals("large_communities")))

    def anycast(self, o: Obj, links: tuple[Link, ...], link_names: Names,
                site_names: Names) -> AnycastSettings:
        with_bgp = tuple(lk.name for lk in links if lk.bgp is not None)
        self.names(o, "prefixes", "anycast prefix", name_key="prefix",
                   fix="merge the two entries into one")
        prefixes = []
        for val in o.vals("prefixes"):
            p: Obj = val.value
            sessions = self.refs(link_names, p.vals("sessions")) if p.has("sessions") \
                else with_bgp
            for sval in p.vals("sessions"):
                if sval.value in link_names and sval.value not in with_bgp:
                    self.error(sval.line, sval.path, f"link `{sval.value}` has no bgp "
                               "session, so it cannot announce a prefix",
                               f"add a bgp section to link {sval.value}, or remove it here")
            links_by_name = {lk.name: lk for lk in links}
            for name in sessions if ":" in (p.get("prefix") or "") else ():
                bgp = links_by_name[name].bgp if name in links_by_name else None
                if bgp is not None and ":" not in bgp.peer and bgp.next_hop_v6 is None:
                    self.error(p.line_of("prefix"), p.path_of("prefix"), f"IPv6 prefix over "
                               f"the IPv4 BGP session of link `{name}` needs a next hop",
                               f"set links[{name}].bgp.next_hop_v6 to our IPv6 address on it")
            if p.has("prefix") and p.complete("sessions") and not sessions:
                self.error(p.line_of("prefix"), p.path_of("prefix"), "no BGP session "
                           "announces this prefix", "give links a bgp section, or list "
                           "sessions")
            prefixes.append(AnycastPrefix(
                prefix=p.get("prefix"), sessions=sessions,
                announced_by=self.refs(site_names, p.vals("announced_by")),
                communities=tuple(v.value for v in p.vals("communities")),
                large_communities=tuple(v.value for v in p.vals("large_communities"))))
        speakers = tuple(SpeakerSettings(
            name=s.get("name"), kind=s.get("kind"),
            min_interval_s=float(s.get("min_interval")), timeout_s=float(s.get("timeout")),
            command=s.get("command") or "exabgp", router_id=s.get("router_id"),
            socket=s.get("socket"), include=s.get("include"),
            birdc=s.get("birdc") or "birdc")
            for s in (v.value for v in o.vals("speakers")))
        degraded_med = o.get("degraded_med")
        return AnycastSettings(
            prefixes=tuple(prefixes), speakers=speakers, local_as=o.get("local_as"),
            prepend_by_tier=tuple(v.value for v in o.vals("prepend_by_tier"))
            if o.has("prepend_by_tier") else d.ANYCAST_PREPEND_BY_TIER,
            med=o.get("med"), degraded_med=degraded_med,
            degraded_prepend=o.get("degraded_prepend"),
            communities=tuple(v.value for v in o.vals("communities")),
            large_communities=tuple(v.value for v in o.vals("large_communities")),
            degraded_communities=tuple(v.value for v in o.vals("degraded_communities")),
            withdraw_when_site_unhealthy=o.get("withdraw_when_site_unhealthy"),
            drained_action=o.get("drained_action"), drain_wait_s=float(o.get("drain_wait")))

    def target(self, o: Obj, link_names: Names) -> TargetSpec | None:
        kind, interval, timeout = o.get("kind"), o.get("interval"), o.get("timeout")
        if not o.has("timeout") and o.ok("interval"):  # fast probing: a shorter default
            timeout = min(timeout, interval * d.TARGET_TIMEOUT_INTERVALS)
        if o.has("timeout") and o.ok("interval") \
                and timeout > interval * d.TARGET_TIMEOUT_MAX_FACTOR:
            self.error(o.line_of("timeout"), o.path_of("timeout"),
                       f"expected a timeout <= interval x {d.TARGET_TIMEOUT_MAX_FACTOR} "
                       f"({interval * d.TARGET_TIMEOUT_MAX_FACTOR:g} s), found {timeout:g}",
                       "lower timeout or raise interval")
        links = self.refs(link_names, o.vals("links"))
        if kind is None:
            return None
        scheme = o.get("scheme")
        port = d.ICMP_PORT if kind == "icmp" else o.get(
            "port", d.DEFAULT_PORTS.get(scheme if kind == "http" else kind, 0))
        status = o.get("expect_status")
        statuses = tuple(v.value for v in status) if isinstance(status, list) else (
            (status,) if isinstance(status, int) else tuple(status))
        return TargetSpec(
            name=o.get("name"), kind=ProbeKind(kind), host=o.get("host"), port=port,
            interval_s=float(interval), timeout_s=float(timeout), links=links,
            path=o.get("path"), scheme=scheme, expect_status=statuses,
            body_match=o.get("body_match"), qname=o.get("qname"), qtype=o.get("qtype"),
            transport=o.get("transport"), expect_rcode=o.get("expect_rcode"),
            expect_answer=o.get("expect_answer"),
            region=o.get("region"))

    def zone(self, o: Obj) -> Zone:
        name = o.get("name")
        ns = tuple(v.value for v in o.vals("ns"))
        glue: dict[str, tuple[str, ...]] = {}
        for host, val in (o.get("ns_addresses") or {}).items():
            if o.complete("ns") and host not in ns:
                self.error(val.line, val.path, f"`{host}` is not one of this zone's ns "
                           f"({', '.join(ns)})", f"add {host} to ns, or remove its addresses")
            glue[host] = tuple(v.value for v in val.value)
        soa = o.obj("soa")
        return Zone(name=name, ns=ns, ns_addresses=MappingProxyType(glue),
                    soa_mname=soa.get("mname") or (ns[0] if ns else ""),
                    soa_rname=soa.get("rname") or f"{d.SOA_RNAME_LOCAL_PART}.{name}",
                    soa_refresh=soa.get("refresh"), soa_retry=soa.get("retry"),
                    soa_expire=soa.get("expire"), soa_minimum=soa.get("minimum"),
                    ttl=o.get("ttl"))

    @staticmethod
    def line(o: Obj) -> Line:
        return Line(name=o.get("name"), asns=frozenset(v.value for v in o.vals("asns")),
                    cidrs=netaddr.IPSet(v.value for v in o.vals("cidrs")))

    def segments(self, root: Obj, lines: dict[str, Line],
                 line_names: Names) -> tuple[Segment, ...]:
        out: list[Segment] = []
        probed = {str(v.value.get("region")) for v in root.vals("targets")
                  if isinstance(v.value, Obj) and v.value.has("region")}
        vals = root.vals("segments")
        for i, val in enumerate(vals):
            o: Obj = val.value
            name = o.get("name")
            if name == DEFAULT_SEGMENT:
                self.error(o.line_of("name"), o.path_of("name"), "the segment name `default` "
                           "is reserved for the implicit last segment that matches everyone",
                           "rename the segment; address the implicit one with "
                           "`segment: default` in a policy rule")
            bucket = tuple(float(v.value) for v in o.vals("bucket"))
            if len(bucket) == 2 and bucket[0] >= bucket[1]:
                self.error(o.line_of("bucket"), o.path_of("bucket"), "expected a bucket [lo, hi]"
                           f" with lo < hi, found [{bucket[0]:g}, {bucket[1]:g}]",
                           "swap the bounds")
            seg = Segment(name=name, cidrs=netaddr.IPSet(v.value for v in o.vals("cidrs")),
                          asns=frozenset(v.value for v in o.vals("asns")),
                          countries=frozenset(v.value for v in o.vals("countries")),
                          lines=tuple(lines[n] for n in self.refs(line_names, o.vals("lines"))),
                          bucket=(bucket[0], bucket[1]) if len(bucket) == 2 else None,
                          regions=frozenset(v.value for v in o.vals("regions")),
                          location=self.segment_location(o),
                          measured_regions=frozenset(
                              v.value for v in o.vals("measured_regions")))
            if seg.is_catch_all and not o.bad and i < len(vals) - 1 and name != DEFAULT_SEGMENT:
                self.error(o.line, o.path, f"segment `{name}` has no criteria, so it matches "
                           "everyone and the segments after it never match",
                           "give it lines, cidrs, asns, countries, regions or a bucket, or "
                           "move it last")
            self.geo_warning(o, seg)
            self.measured_warning(o, seg, probed)
            out.append(seg)
        return tuple(out)

    @staticmethod
    def segment_location(o: Obj) -> tuple[float, float] | None:
        """The segment's (lat, lon), where nearest routing measures from."""
        loc = o.obj("location")
        if not o.has("location") or not (loc.ok("lat") and loc.ok("lon")):
            return None
        return (float(loc.get("lat")), float(loc.get("lon")))

    def nearest_sites(self, o: Obj, pools: tuple[Pool, ...]) -> None:
        """routing: nearest ranks sites by location: every endpoint needs a located site
        (one error per service, listing the endpoints that have none)."""
        if o.get("routing") != "nearest" or not self.sites.complete:
            return
        missing = []
        for pi, (pval, pool) in enumerate(zip(o.vals("pools"), pools, strict=True)):
            po: Obj = pval.value
            for ei, (eval_, ep) in enumerate(zip(po.vals("endpoints"), pool.endpoints,
                                                 strict=True)):
                eo: Obj = eval_.value
                if ep.site in self.located or not (eo.ok("site") and eo.ok("link")):
                    continue
                where = f"pools[{pi}].endpoints[{ei}]"
                if ep.site is None:
                    missing.append(f"{where} (link {ep.link}) has no site")
                elif ep.site in self.sites:  # (a dangling name is reported already)
                    missing.append(f"{where} is at site {ep.site}, which has no location")
        if missing:
            more = f" and {len(missing) - 3} more" if len(missing) > 3 else ""
            self.error(o.line_of("routing"), o.path_of("routing"), "routing: nearest ranks "
                       "sites by location, but " + "; ".join(missing[:3]) + more,
                       "give each link (or endpoint) a `site`, and each such site a "
                       "location {lat, lon}")

    def service(self, o: Obj, links: dict[str, Link], link_names: Names,
                zone_names: list[str] | None) -> Service:
        name, ttl = o.get("name"), o.get("ttl")
        failover_ttl = o.get("failover_ttl", min(d.SERVICE_FAILOVER_TTL, ttl))
        if o.has("failover_ttl") and o.ok("ttl") and failover_ttl > ttl:
            self.error(o.line_of("failover_ttl"), o.path_of("failover_ttl"),
                       f"expected failover_ttl <= ttl ({ttl}), found {failover_ttl}",
                       f"lower failover_ttl to at most {ttl}, or raise ttl")
        zone = self.zone_of(o, zone_names)
        self.names(o, "pools", "pool")
        pools = tuple(self.pool(v.value, links, link_names, apex=name == zone)
                      for v in o.vals("pools"))
        names = {p.name for p in pools}
        for v, p in zip(o.vals("pools"), pools, strict=True):
            po: Obj = v.value
            if p.all_down == "fallback" and (p.fallback is None or p.fallback not in names
                                             or p.fallback == p.name):
                self.error(po.line_of("fallback"), po.path_of("fallback"),
                           f"all_down: fallback needs `fallback` naming another pool of the "
                           f"service (pools: {', '.join(sorted(names))})",
                           "name the pool to serve when every candidate is down")
        self.nearest_sites(o, pools)
        return Service(name=name, zone=zone, ttl=ttl, failover_ttl=failover_ttl,
                       max_answers=o.get("max_answers"),
                       failover_threshold=float(o.get("failover_threshold")), pools=pools,
                       spill=o.get("spill"), routing=o.get("routing"))

    def zone_of(self, o: Obj, zone_names: list[str] | None) -> str:
        """The longest zone containing the service's name; reports a name outside all zones."""
        name = o.get("name")
        if name is None or zone_names is None:
            return ""
        inside = [z for z in zone_names if name == z or name.endswith("." + z)]
        if inside:
            return max(inside, key=len)
        if zone_names:
            self.error(o.line_of("name"), o.path_of("name"), f"`{name}` is not inside any "
                       f"zone (zones: {', '.join(zone_names)})",
                       "add a zone that contains it, or rename the service")
        else:
            self.error(o.line_of("name"), o.path_of("name"), f"`{name}` is not inside any "
                       "zone: no zones are defined",
                       f"add a zone, e.g. zones: [{{name: {name}, ns: [ns1.{name}]}}]")
        return ""

    def pool(self, o: Obj, links: dict[str, Link], link_names: Names, apex: bool) -> Pool:
        endpoints = tuple(self.endpoint(v.value, links, link_names, apex)
                          for v in o.vals("endpoints"))
        return Pool(name=o.get("name"), endpoints=endpoints, tier=o.get("tier"),
                    all_down=o.get("all_down"), fallback=o.get("fallback"),
                    min_healthy=float(o.get("min_healthy")))

    def endpoint(self, o: Obj, links: dict[str, Link], link_names: Names,
                 apex: bool) -> Endpoint:
        link = links.get(o.get("link")) if o.has("link") and self.ref(
            link_names, o.fields["link"]) else None
        addresses = tuple(v.value for v in o.vals("addresses"))
        cname = o.get("cname")
        if o.has("addresses") and o.has("cname"):
            self.error(o.line_of("cname"), o.path_of("cname"), "expected either addresses "
                       "or cname, found both", "keep one of them")
        elif cname is not None and apex:
            self.error(o.line_of("cname"), o.path_of("cname"), "a CNAME cannot be at a zone "
                       "apex (the service name is its zone's name)",
                       "use addresses, or steer a name below the apex")
        if not addresses and cname is None and link is not None:
            addresses = link.answers_v4 + link.answers_v6
        weight = o.get("weight", link.weight if link is not None else d.LINK_WEIGHT)
        site = self.site_ref(o) if o.has("site") else (link.site if link is not None else None)
        return Endpoint(link=o.get("link"), weight=float(weight), addresses=addresses,
                        cname=cname, site=site)

    def policies(self, root: Obj, services: Names,
                 segments: Names) -> MappingProxyType[str, Policy]:
        out: dict[str, Policy] = {}
        self.names(root, "policies", "policy for service", name_key="service",
                   fix="merge the two policies into one")
        for val in root.vals("policies"):
            o: Obj = val.value
            service = o.get("service")
            svc_obj = services.known.get(service) if o.has("service") and self.ref(
                services, o.fields["service"]) else None
            pools = None if svc_obj is None else self.names(svc_obj, "pools", "pool", report=False)
            if pools is not None:
                pools.owner = f" of service {service}"
            seen: dict[str, int] = {}
            rules = tuple(self.rule(rval.value, segments, pools, seen)
                          for rval in o.vals("rules"))
            out.setdefault(service, Policy(service=service, rules=rules))
        return MappingProxyType(out)

    def rule(self, r: Obj, segments: Names, pools: Names | None,
             seen: dict[str, int]) -> PolicyRule:
        segment = r.get("segment")
        if r.has("segment"):
            if segment != DEFAULT_SEGMENT:
                self.ref(segments, r.fields["segment"])
            if segment in seen:
                self.error(r.line_of("segment"), r.path_of("segment"),
                           f"a rule for segment `{segment}` is already at line "
                           f"{seen[segment]}; this one never applies", "merge the two rules")
            else:
                seen[segment] = r.line_of("segment")
        if pools is not None:
            self.refs(pools, r.vals("pools"))
        return PolicyRule(segment=segment, pools=tuple(v.value for v in r.vals("pools")))


