"""Nearest routing: order sites for a client by great-circle distance, blended with the
latency measured toward the client's region when probes cover it.

A distance becomes an rtt estimate at 100 km per ms of round trip (light in fibre covers
about 200 km/ms one way; real paths are longer, so this is a floor, used only to rank).
When a measured rtt (ms) toward the client's region is known for a site, the score is
``MEASURED_WEIGHT`` x measured + (1 - MEASURED_WEIGHT) x estimate: measurements win, the
geography breaks ties and covers sites no probe reaches. Pure and deterministic: ties are
broken by site name.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

EARTH_RADIUS_KM = 6371.0088  # mean radius (IUGG)
KM_PER_RTT_MS = 100.0
MEASURED_WEIGHT = 0.7


def great_circle_km(a: tuple[float, float], b: tuple[float, float]) -> float:
    """Haversine distance between two (lat, lon) points in degrees."""
    lat1, lon1, lat2, lon2 = map(math.radians, (*a, *b))
    h = (math.sin((lat2 - lat1) / 2) ** 2
         + math.cos(lat1) * math.cos(lat2) * math.sin((lon2 - lon1) / 2) ** 2)
    return 2 * EARTH_RADIUS_KM * math.asin(min(1.0, math.sqrt(h)))


@dataclass(frozen=True, slots=True)
class Ranked:
    site: str
    score_ms: float
    distance_km: float | None
    measured_ms: float | None

    @property
    def reason(self) -> str:
        parts = []
        if self.distance_km is not None:
            parts.append(f"{self.distance_km:.0f} km")
        if self.measured_ms is not None:
            parts.append(f"measured {self.measured_ms:.1f} ms")
        return f"{self.site}: score {self.score_ms:.1f} ms ({', '.join(parts) or 'no data'})"


def rank_sites(client: tuple[float, float] | None,
               sites: Sequence[tuple[str, tuple[float, float] | None]],
               measured_ms: Mapping[str, float] | None = None) -> list[Ranked]:
    """Sites best first for a client at ``client`` (lat, lon; None: unknown)."""
    measured_ms = measured_ms or {}
    out = []
    for name, where in sites:
        dist = great_circle_km(client, where) if client is not None and where is not None \
            else None
        est = dist / KM_PER_RTT_MS if dist is not None else None
        meas = measured_ms.get(name)
        if meas is not None and est is not None:
            score = MEASURED_WEIGHT * meas + (1 - MEASURED_WEIGHT) * est
        elif meas is not None:
            score = meas
        elif est is not None:
            score = est
        else:
            score = math.inf
        out.append(Ranked(name, score, dist, meas))
    return sorted(out, key=lambda r: (r.score_ms, r.site))
