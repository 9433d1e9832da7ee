"""ClientInfo: what the data plane knows about the user behind a query."""

from __future__ import annotations

from dataclasses import dataclass

import netaddr


@dataclass(frozen=True, slots=True)
class ClientInfo:
    """The client as seen by the data plane.

    ``address`` is the EDNS Client Subnet address when the query carried one, else the
    resolver's address; ``prefix_len`` is the ECS source prefix (or the full length).
    ``asn``, ``country``, ``line``, ``region`` and ``location`` are filled by GeoIP
    (``geo.geoip.GeoIP.enrich``) and line tables when available.
    """

    address: netaddr.IPAddress
    prefix_len: int
    from_ecs: bool = False
    asn: int | None = None
    country: str | None = None
    line: str | None = None
    region: str | None = None  # e.g. a subdivision or an operator's region code
    location: tuple[float, float] | None = None  # (lat, lon), from a City database

    @classmethod
    def from_text(cls, address: str, prefix_len: int | None = None) -> ClientInfo:
        ip = netaddr.IPAddress(address)
        full = 32 if ip.version == 4 else 128
        return cls(address=ip, prefix_len=full if prefix_len is None else prefix_len,
                   from_ecs=prefix_len is not None)
