"""Build config objects and measurements directly, with sensible defaults, for engine tests.

Independent of the YAML loader on purpose: planner and health tests state exactly the
objects they mean. Addresses are documentation ranges; nothing is ever sent to them.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from types import MappingProxyType

from edge.config.schema import (
    AllDownPolicy,
    Band,
    Config,
    DampingSettings,
    Endpoint,
    GuardSettings,
    HealthSettings,
    Link,
    Node,
    Policy,
    PolicyRule,
    Pool,
    QuorumMode,
    Service,
    Site,
    Thresholds,
    Zone,
)
from edge.health.state import HealthSnapshot, HealthState, LinkHealth
from geo.segment import Segment
from probes.measurement import Measurement, PathKey, ProbeKind

THRESHOLDS = Thresholds(
    degraded=Band(loss=0.02, rtt_p95_ms=150.0, jitter_ms=20.0),
    down=Band(loss=0.10, rtt_p95_ms=300.0, jitter_ms=50.0),
    recover_ratio=0.8,
)


def health(*, rise: int = 3, fall: int = 3, hold_down_s: float = 10.0,
           stale_after_s: float = 5.0, quorum: QuorumMode = "majority",
           degraded_weight: float = 0.5, thresholds: Thresholds = THRESHOLDS,
           window: int = 10, stale_grace_s: float = 0.0,
           damping: DampingSettings | None = None,
           fast_probe_factor: float = 4.0) -> HealthSettings:
    """Health settings; unlike the config default, no stale grace unless asked for."""
    return HealthSettings(window=window, rise=rise, fall=fall, hold_down_s=hold_down_s,
                          stale_after_s=stale_after_s, quorum=quorum,
                          degraded_weight=degraded_weight, thresholds=thresholds,
                          stale_grace_s=stale_grace_s, damping=damping or DampingSettings(),
                          fast_probe_factor=fast_probe_factor)


def link(name: str, *, priority: int = 1, weight: float = 100.0,
         v4: Sequence[str] | None = None, v6: Sequence[str] = (),
         thresholds: Thresholds = THRESHOLDS, index: int = 10) -> Link:
    """A link; ``v4`` defaults to one address 203.0.113.<index>."""
    answers_v4 = tuple(v4) if v4 is not None else (f"203.0.113.{index}",)
    return Link(name=name, carrier=name, priority=priority, weight=weight,
                answers_v4=answers_v4, answers_v6=tuple(v6), thresholds=thresholds)


def endpoint(link_name: str, weight: float = 100.0, *, addresses: Sequence[str] = (),
             cname: str | None = None) -> Endpoint:
    return Endpoint(link=link_name, weight=weight, addresses=tuple(addresses), cname=cname)


def pool(name: str, *endpoints: Endpoint, tier: int | None = None,
         all_down: AllDownPolicy = "fail_open", fallback: str | None = None) -> Pool:
    return Pool(name=name, endpoints=tuple(endpoints), tier=tier, all_down=all_down,
                fallback=fallback)


def service(name: str = "www.example.hk", *pools: Pool, ttl: int = 60,
            failover_ttl: int = 15, max_answers: int = 2,
            failover_threshold: float = 0.5, zone: str = "example.hk") -> Service:
    return Service(name=name, zone=zone, ttl=ttl, failover_ttl=failover_ttl,
                   max_answers=max_answers, failover_threshold=failover_threshold,
                   pools=tuple(pools))


def one_pool_per_link(links: Iterable[Link], name: str = "www.example.hk", *,
                      failover_threshold: float = 0.5) -> Service:
    """A service with a pool named after each link holding that link's endpoint."""
    pools = [pool(lk.name, endpoint(lk.name, lk.weight)) for lk in links]
    return service(name, *pools, failover_threshold=failover_threshold)


def policy(service_name: str, *rules: tuple[str, Sequence[str]]) -> Policy:
    return Policy(service=service_name,
                  rules=tuple(PolicyRule(segment=seg, pools=tuple(p)) for seg, p in rules))


def make_config(links: Sequence[Link], services: Sequence[Service] = (), *,
                policies: Sequence[Policy] = (), segments: Sequence[Segment] = (),
                health_settings: HealthSettings | None = None, freeze: bool = False,
                fail_open: bool = True, source: str = "test-config") -> Config:
    zone = Zone(name="example.hk", ns=("ns1.example.hk",), ns_addresses=MappingProxyType({}),
                soa_mname="ns1.example.hk", soa_rname="hostmaster.example.hk",
                soa_refresh=3600, soa_retry=600, soa_expire=604800, soa_minimum=60, ttl=3600)
    return Config(
        source=source, node=Node(name="hk-1", site="hk-kwaichung"),
        sites=(Site(name="hk-kwaichung"),), links=tuple(links), targets=(),
        health=health_settings or health(), zones=(zone,), lines=(),
        segments=tuple(segments), services=tuple(services),
        policies=MappingProxyType({p.service: p for p in policies}),
        guard=GuardSettings(freeze=freeze, fail_open=fail_open))


def snapshot(states: Mapping[str, HealthState], *, version: int = 1,
             at: float = 1000.0) -> HealthSnapshot:
    links = {name: LinkHealth(link=name, state=st, since=at, reason="test")
             for name, st in states.items()}
    return HealthSnapshot(version=version, taken_at=at, links=MappingProxyType(links))


def path(link_name: str = "cn2", target: str = "pop", node: str = "hk-1") -> PathKey:
    return PathKey(node=node, link=link_name, target=target)


def measurement(at: float, *, key: PathKey | None = None, loss: float = 0.0,
                p95_ms: float = 40.0, jitter_ms: float = 2.0, sent: int = 10,
                received: int | None = None) -> Measurement:
    """A window of ``sent`` probes with the given figures (``received`` follows ``loss``)."""
    got = received if received is not None else round(sent * (1.0 - loss))
    ok = got > 0
    rtt = p95_ms / 1000.0 if ok else None
    return Measurement(
        path=key or path(), kind=ProbeKind.TCP, at=at, window_s=10.0, sent=sent,
        received=got, loss=loss if got else 1.0, rtt_min=rtt, rtt_p50=rtt, rtt_p95=rtt,
        rtt_p99=rtt, rtt_max=rtt, rtt_mean=rtt, jitter_s=jitter_ms / 1000.0 if ok else 0.0,
        mean_abs_diff_s=jitter_ms / 1000.0 if ok else 0.0, ewma_rtt=rtt)
