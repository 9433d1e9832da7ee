"""The parsed configuration: frozen dataclasses, built only by ``edge.config.loader``.

Every default lives in ``edge.config.defaults``; these classes hold validated values only.
Times are seconds unless the name says ``_ms``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Literal

from edge.config.errors import ConfigError
from geo.segment import Line, Segment
from probes.spec import TargetSpec

Target = TargetSpec

QuorumMode = Literal["all", "majority", "any"]
StaleDown = Literal["serve", "hold"]


@dataclass(frozen=True, slots=True)
class Location:
    lat: float
    lon: float


@dataclass(frozen=True, slots=True)
class Site:
    name: str
    location: Location | None = None
    region: str | None = None


@dataclass(frozen=True, slots=True)
class Node:
    name: str
    site: str


@dataclass(frozen=True, slots=True)
class Band:
    """A quality band: a link is outside it when any set bound is exceeded."""

    loss: float | None = None
    rtt_p95_ms: float | None = None
    jitter_ms: float | None = None


@dataclass(frozen=True, slots=True)
class Thresholds:
    """Enter bands for DEGRADED and DOWN; the exit band is the enter band x ``recover_ratio``.

    The gap between enter and exit is the hysteresis that keeps a link sitting on a
    threshold from flapping.
    """

    degraded: Band
    down: Band
    recover_ratio: float


@dataclass(frozen=True, slots=True)
class BgpSession:
    """The BGP session of a link (anycast): named after the link, run by ``speaker``."""

    peer: str
    peer_as: int
    local_as: int
    speaker: str
    local_address: str | None = None
    peer_port: int = 179
    local_port: int | None = None  # our listening port (BIRD); None: the speaker's default
    next_hop_v6: str | None = None  # next hop of IPv6 prefixes over an IPv4 session
    hold_time: int = 90
    multihop: bool = False
    communities: tuple[str, ...] = ()
    large_communities: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class Link:
    name: str
    carrier: str
    priority: int
    weight: float
    answers_v4: tuple[str, ...]
    answers_v6: tuple[str, ...]
    thresholds: Thresholds
    source: str | None = None
    fwmark: int | None = None
    device: str | None = None
    bgp: BgpSession | None = None
    site: str | None = None  # where the link is (nearest routing); names a site


@dataclass(frozen=True, slots=True)
class DampingSettings:
    """Flap damping of link states, as BGP route-flap dampening (see edge.health.damping).

    Every change of a link between serving and not serving adds ``penalty``; the penalty
    halves every ``half_life_s``; at ``suppress`` the link is held out of service until the
    penalty decays below ``reuse`` (at most ``max_suppress_s``). ``penalty`` 0 disables.
    """

    penalty: float = 1000.0
    suppress: float = 2500.0
    reuse: float = 750.0
    half_life_s: float = 120.0
    max_suppress_s: float = 900.0


@dataclass(frozen=True, slots=True)
class HealthSettings:
    """How measurements turn into states (see ``edge.health.machine``)."""

    window: int
    rise: int
    fall: int
    hold_down_s: float
    stale_after_s: float
    quorum: QuorumMode
    degraded_weight: float
    thresholds: Thresholds
    # a link whose paths all went stale keeps its last state this long, then is unknown
    stale_grace_s: float = 5.0
    # ... unless it was out of service (down or rising) and this is "hold": then it stays
    # so until data comes back (the operator chose blind-and-out over blind-and-serving)
    stale_down: StaleDown = "serve"
    damping: DampingSettings = field(default_factory=DampingSettings)
    # while a path is FALLING or RISING its probes run at interval / this (see edge.health)
    fast_probe_factor: float = 4.0


@dataclass(frozen=True, slots=True)
class Zone:
    name: str
    ns: tuple[str, ...]
    ns_addresses: Mapping[str, tuple[str, ...]]
    soa_mname: str
    soa_rname: str
    soa_refresh: int
    soa_retry: int
    soa_expire: int
    soa_minimum: int
    ttl: int


@dataclass(frozen=True, slots=True)
class Endpoint:
    """An answer bound to a link. With no ``addresses`` and no ``cname``, the link's VIPs."""

    link: str
    weight: float
    addresses: tuple[str, ...] = ()
    cname: str | None = None
    site: str | None = None  # nearest routing; the loader fills in the link's site


AllDownPolicy = Literal["fail_open", "fallback", "fail_closed"]
SpillMode = Literal["cascade", "capacity"]
RoutingMode = Literal["weighted", "nearest"]


@dataclass(frozen=True, slots=True)
class Pool:
    """Endpoints served together. ``tier`` overrides the links' priority when set.

    ``all_down``: what a rule led by this pool serves when none of its candidates can:
    ``fail_open`` (every candidate, flagged; subject to guard.fail_open), ``fallback`` (the
    pool named ``fallback``, whatever its health) or ``fail_closed`` (no answers: NODATA).
    """

    name: str
    endpoints: tuple[Endpoint, ...]
    tier: int | None = None
    all_down: AllDownPolicy = "fail_open"
    fallback: str | None = None
    # serving capacity (serving weight / configured weight) below which the whole pool is
    # taken out of the rule (edge.steering.planner); 0 = off
    min_healthy: float = 0.0


@dataclass(frozen=True, slots=True)
class Service:
    name: str
    zone: str
    ttl: int
    failover_ttl: int
    max_answers: int
    failover_threshold: float
    pools: tuple[Pool, ...]
    # what happens below the failover threshold (edge.steering.planner): ``cascade`` = the
    # next tier serves alone; ``capacity`` = the missing share spills by capacity
    spill: SpillMode = "cascade"
    # ``nearest``: within a tier, the segment's nearest site serves first
    routing: RoutingMode = "weighted"

    def pool(self, name: str) -> Pool:
        for p in self.pools:
            if p.name == name:
                return p
        raise KeyError(name)


@dataclass(frozen=True, slots=True)
class PolicyRule:
    segment: str
    pools: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class Policy:
    service: str
    rules: tuple[PolicyRule, ...]


@dataclass(frozen=True, slots=True)
class GuardSettings:
    freeze: bool = False
    fail_open: bool = True
    max_shift: float = 1.0  # share of weight moved per step; 1.0 = no ramp
    max_demotions: int = 0  # 0 = no limit
    demotion_window_s: float = 300.0
    state_dir: str | None = None  # resolved against the config file's directory


@dataclass(frozen=True, slots=True)
class DnsSettings:
    listen: tuple[tuple[str, int], ...]
    # DNS Cookies secret (dns_backends.builtin.cookies); None: random per process
    cookie_secret: bytes | None = field(default=None, repr=False)


@dataclass(frozen=True, slots=True)
class GeoSettings:
    """GeoIP databases, in lookup order; paths already resolved against the config file's
    directory (the loader checked each opens as a MaxMind-format database)."""

    databases: tuple[str, ...] = ()


BackendKind = Literal["rfc2136", "powerdns", "zonefile"]
AnswersMode = Literal["all", "top"]


@dataclass(frozen=True, slots=True)
class TsigSettings:
    """A TSIG key: ``secret`` (base64) given inline or read from ``secret_file`` at start."""

    name: str
    algorithm: str = "hmac-sha256"
    secret: str | None = None
    secret_file: str | None = None


@dataclass(frozen=True, slots=True)
class ViewSettings:
    """A BIND view serving one segment, reached (for updates and transfers) with its key."""

    segment: str
    tsig: TsigSettings | None = None
    name: str | None = None  # the view's name in named.conf; default: the segment's


@dataclass(frozen=True, slots=True)
class BackendSettings:
    """An external DNS server edgesteer pushes its plan into (see dns_backends/README.md)."""

    name: str
    kind: BackendKind
    zones: tuple[str, ...] = ()  # default: every zone that holds a service
    answers: AnswersMode = "all"
    timeout_s: float = 2.0
    reconcile_s: float = 30.0  # the daemon re-reads and repairs drift this often
    # rfc2136
    server: tuple[str, int] | None = None
    tsig: TsigSettings | None = None
    views: tuple[ViewSettings, ...] = ()
    # powerdns
    url: str | None = None
    api_key: str | None = None
    api_key_file: str | None = None
    server_id: str = "localhost"
    create_zones: bool = False
    lua: bool = False
    # zonefile
    path: str | None = None
    reload: str | None = None


SpeakerKind = Literal["exabgp", "bird"]


@dataclass(frozen=True, slots=True)
class SpeakerSettings:
    """A BGP speaker this node drives (see edge/anycast/README.md)."""

    name: str
    kind: SpeakerKind
    min_interval_s: float = 0.0  # per session: at least this long between two changes
    timeout_s: float = 5.0
    # exabgp
    command: str = "exabgp"
    router_id: str | None = None
    # bird
    socket: str | None = None
    include: str | None = None
    birdc: str = "birdc"


@dataclass(frozen=True, slots=True)
class AnycastPrefix:
    """An anycast prefix and the sessions (link names) that may announce it."""

    prefix: str
    sessions: tuple[str, ...]
    announced_by: tuple[str, ...] = ()  # other sites that announce it too
    communities: tuple[str, ...] = ()
    large_communities: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class AnycastSettings:
    """How link health and tiers become announcements (edge.steering.anycast)."""

    prefixes: tuple[AnycastPrefix, ...] = ()
    speakers: tuple[SpeakerSettings, ...] = ()
    local_as: int | None = None
    prepend_by_tier: tuple[int, ...] = (0, 2, 4)
    med: int | None = None
    degraded_med: int | None = 1000
    degraded_prepend: int = 2
    communities: tuple[str, ...] = ()
    large_communities: tuple[str, ...] = ()
    degraded_communities: tuple[str, ...] = ()
    withdraw_when_site_unhealthy: bool = True
    drained_action: Literal["withdraw", "prepend"] = "withdraw"
    drain_wait_s: float = 0.0


@dataclass(frozen=True, slots=True)
class BusSettings:
    """The measurement bus; with ``kind="redis"`` also where engines elect a leader and keep
    the policy history. Mode: ``cluster`` if set, else ``sentinels`` if set, else ``url``."""

    kind: Literal["memory", "redis"] = "memory"
    url: str = "redis://127.0.0.1:6379/0"
    sentinels: tuple[tuple[str, int], ...] = ()
    master: str = "mymaster"
    cluster: tuple[tuple[str, int], ...] = ()
    username: str | None = None
    password: str | None = None
    password_env: str | None = None
    tls: bool = False
    tls_ca_file: str | None = None
    tls_cert_file: str | None = None
    tls_key_file: str | None = None
    tls_verify: bool = True
    stream: str = "edgesteer:measurements"
    maxlen: int = 100_000
    group: str | None = None  # None: engine-<node name>
    prefix: str = "edgesteer"
    buffer: int = 100_000
    lease_s: float = 5.0
    history: int = 1000


_NO_POLICIES: Mapping[str, Policy] = MappingProxyType({})


@dataclass(frozen=True, slots=True)
class Config:
    source: str
    node: Node
    sites: tuple[Site, ...]
    links: tuple[Link, ...]
    targets: tuple[Target, ...]
    health: HealthSettings
    zones: tuple[Zone, ...]
    lines: tuple[Line, ...]
    segments: tuple[Segment, ...]
    services: tuple[Service, ...]
    policies: Mapping[str, Policy] = field(default_factory=lambda: _NO_POLICIES)
    guard: GuardSettings = field(default_factory=GuardSettings)
    dns: DnsSettings = field(default_factory=lambda: DnsSettings(listen=(("127.0.0.1", 5353),)))
    bus: BusSettings = field(default_factory=BusSettings)
    backends: tuple[BackendSettings, ...] = ()
    anycast: AnycastSettings = field(default_factory=AnycastSettings)
    geo: GeoSettings = field(default_factory=GeoSettings)
    # problems that do not make the config invalid (``edgesteer check`` lists them)
    warnings: tuple[ConfigError, ...] = field(default=(), compare=False)

    def target_regions(self) -> dict[str, str]:
        """Target name -> the region it stands in, for the targets that name one."""
        return {t.name: t.region for t in self.targets if t.region is not None}

    def link(self, name: str) -> Link:
        for link in self.links:
            if link.name == name:
                return link
        raise KeyError(name)

    def service(self, name: str) -> Service:
        for svc in self.services:
            if svc.name == name:
                return svc
        raise KeyError(name)

    def zone(self, name: str) -> Zone:
        for zone in self.zones:
            if zone.name == name:
                return zone
        raise KeyError(name)
