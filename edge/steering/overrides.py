"""Operator overrides: drain a link, force it up or down, pin a service to a tier, freeze a
service. Kept in ``overrides.json`` in the state directory (see ``statefile``) so they
survive restarts; ``edgesteer override`` edits them, the engine re-reads them every cycle.

Applied *before* the planner, as inputs, so the plan's reasons show them:

* ``down`` / ``up``: the link's state in the snapshot is replaced (DOWN / UP) and the
  reason says it is an operator's;
* ``drain``: every endpoint on the link gets weight 0 (served only when nothing else can);
* ``pin SERVICE TIER``: the service's candidates are cut to that tier (ignored, with a
  warning in the reasons, when the tier has no endpoint);
* ``freeze SERVICE``: the guard keeps the service's answer sets as they are.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from types import MappingProxyType
from typing import Any, Literal

from edge.config.schema import Config, Pool, Service
from edge.health.state import HealthSnapshot, HealthState, LinkHealth
from edge.steering.statefile import OVERRIDES_FILE, StateFileError, read_json, write_json_atomic

LinkAction = Literal["drain", "up", "down"]
LINK_ACTIONS: tuple[LinkAction, ...] = ("drain", "up", "down")


@dataclass(frozen=True, slots=True)
class Overrides:
    links: Mapping[str, LinkAction] = field(default_factory=lambda: MappingProxyType({}))
    pins: Mapping[str, int] = field(default_factory=lambda: MappingProxyType({}))
    frozen: frozenset[str] = frozenset()

    def __bool__(self) -> bool:
        return bool(self.links or self.pins or self.frozen)

    def to_json(self) -> dict[str, Any]:
        return {"format": 1, "links": dict(sorted(self.links.items())),
                "pins": dict(sorted(self.pins.items())), "frozen": sorted(self.frozen)}

    @classmethod
    def from_json(cls, body: Any) -> Overrides:
        if not isinstance(body, dict):
            raise StateFileError("overrides: expected an object")
        links = body.get("links", {})
        pins = body.get("pins", {})
        frozen = body.get("frozen", [])
        if not isinstance(links, dict) or any(v not in LINK_ACTIONS for v in links.values()):
            raise StateFileError(f"overrides: links: expected LINK -> one of {LINK_ACTIONS}")
        if not isinstance(pins, dict) or any(
                isinstance(v, bool) or not isinstance(v, int) for v in pins.values()):
            raise StateFileError("overrides: pins: expected SERVICE -> tier")
        if not isinstance(frozen, list) or not all(isinstance(s, str) for s in frozen):
            raise StateFileError("overrides: frozen: expected a list of services")
        return cls(MappingProxyType({str(k): v for k, v in links.items()}),
                   MappingProxyType({str(k): int(v) for k, v in pins.items()}),
                   frozenset(frozen))

    def describe(self) -> list[str]:
        out = [f"link {name}: {action}" for name, action in sorted(self.links.items())]
        out += [f"service {svc}: pinned to tier {tier}" for svc, tier in sorted(self.pins.items())]
        out += [f"service {svc}: frozen" for svc in sorted(self.frozen)]
        return out


def load_overrides(directory: Path | None) -> Overrides:
    """The overrides in ``directory`` (none when there is no directory or file)."""
    if directory is None:
        return Overrides()
    body = read_json(directory / OVERRIDES_FILE)
    return Overrides() if body is None else Overrides.from_json(body)


def save_overrides(directory: Path, overrides: Overrides) -> None:
    write_json_atomic(directory / OVERRIDES_FILE, overrides.to_json())


def _tier(config: Config, pool: Pool, link: str) -> int:
    return pool.tier if pool.tier is not None else config.link(link).priority


def _pinned(config: Config, svc: Service, tier: int) -> Service:
    pools = []
    for pool in svc.pools:
        eps = tuple(ep for ep in pool.endpoints if _tier(config, pool, ep.link) == tier)
        if eps:
            pools.append(replace(pool, endpoints=eps))
    if not pools:
        return svc
    kept = {p.name for p in pools}
    # a rule naming a pool with nothing in the tier keeps an empty pool of that name
    pools += [replace(p, endpoints=()) for p in svc.pools if p.name not in kept]
    return replace(svc, pools=tuple(pools))


def apply_overrides(config: Config, snapshot: HealthSnapshot,
                    ov: Overrides) -> tuple[Config, HealthSnapshot]:
    """The config and snapshot the planner sees under ``ov`` (unknown names are ignored)."""
    if not ov:
        return config, snapshot
    names = {lk.name for lk in config.links}
    drained = {n for n, a in ov.links.items() if a == "drain" and n in names}
    forced = {n: a for n, a in ov.links.items() if a in ("up", "down") and n in names}
    if drained:
        links = tuple(replace(lk, weight=0.0) if lk.name in drained else lk
                      for lk in config.links)
        services = tuple(replace(svc, pools=tuple(
            replace(p, endpoints=tuple(replace(ep, weight=0.0) if ep.link in drained else ep
                                       for ep in p.endpoints)) for p in svc.pools))
            for svc in config.services)
        config = replace(config, links=links, services=services)
    pins = {s: t for s, t in ov.pins.items() if any(svc.name == s for svc in config.services)}
    if pins:
        config = replace(config, services=tuple(
            _pinned(config, svc, pins[svc.name]) if svc.name in pins else svc
            for svc in config.services))
    if forced:
        links_h = dict(snapshot.links)
        for name, action in forced.items():
            state = HealthState.DOWN if action == "down" else HealthState.UP
            old = links_h.get(name)
            measured = f" (measured {old.state}: {old.reason})" if old is not None else ""
            links_h[name] = LinkHealth(link=name, state=state,
                                       since=old.since if old is not None else 0.0,
                                       reason=f"operator override: forced {action}{measured}",
                                       quality=old.quality if old is not None else
                                       LinkHealth(name, state, 0.0, "").quality)
        snapshot = replace(snapshot, links=MappingProxyType(dict(sorted(links_h.items()))))
    return config, snapshot
