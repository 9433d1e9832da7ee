"""Stage 5: Plan -> DNS. Knows nothing of probes.

``BACKENDS`` maps a ``backends[].kind`` of the config to the factory that builds it; every
external backend is a ``SyncBackend`` (read, diff, write, verify; see ``reconcile``).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from types import MappingProxyType
from typing import TYPE_CHECKING

from dns_backends.reconcile import SyncBackend

if TYPE_CHECKING:
    from edge.config.schema import BackendSettings, Config

BackendFactory = Callable[["BackendSettings", "Config"], SyncBackend]


def backend_zones(settings: BackendSettings, config: Config) -> tuple[str, ...]:
    """The zones a backend manages: as configured, else every zone holding a service."""
    if settings.zones:
        return settings.zones
    return tuple(sorted({s.zone for s in config.services}))


def _rfc2136(settings: BackendSettings, config: Config) -> SyncBackend:
    from dns_backends.rfc2136 import Rfc2136Store, TsigKey, View

    if settings.server is None:
        raise ValueError(f"backend {settings.name}: rfc2136 needs server")
    key = TsigKey.from_settings(settings.tsig) if settings.tsig is not None else None
    views = [View(v.segment, v.name or v.segment,
                  TsigKey.from_settings(v.tsig) if v.tsig is not None else key)
             for v in settings.views]
    return SyncBackend(Rfc2136Store(settings.name, settings.server, backend_zones(settings, config),
                                    config.services, key=key, views=views,
                                    answers=settings.answers, timeout=settings.timeout_s))


def _powerdns(settings: BackendSettings, config: Config) -> SyncBackend:
    from dns_backends.powerdns import PowerDnsStore

    return SyncBackend(PowerDnsStore.from_settings(settings, config,
                                                   backend_zones(settings, config)))


def _zonefile(settings: BackendSettings, config: Config) -> SyncBackend:
    from dns_backends.zonefile import ZoneFileStore

    return SyncBackend(ZoneFileStore.from_settings(settings, config,
                                                   backend_zones(settings, config)))


BACKENDS: Mapping[str, BackendFactory] = MappingProxyType({
    "rfc2136": _rfc2136,
    "powerdns": _powerdns,
    "zonefile": _zonefile,
})


def build_backends(config: Config) -> list[SyncBackend]:
    """One backend per ``backends:`` entry. Raises ValueError (naming it) on bad settings."""
    out = []
    for settings in config.backends:
        try:
            out.append(BACKENDS[settings.kind](settings, config))
        except (OSError, ValueError) as exc:
            raise ValueError(f"backend {settings.name}: {exc}") from exc
    return out
