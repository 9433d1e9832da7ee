"""GeoIP over MaxMind-format databases: several at once (City, Country, ASN, and the
operator's own maps built by ``edgesteer geo build``).

Each database is opened once; its ``database_type`` (metadata) says how it is read:

* ``...City...``: country, subdivision (as ``region``) and location (lat, lon), via geoip2;
* ``...Country...``: country, via geoip2;
* ``...ASN...``: autonomous system number and organisation, via geoip2;
* anything else (e.g. ``edgesteer-Lines``): a flat record read with maxminddb, whose
  ``country``, ``region``, ``line`` and ``asn`` keys are taken when present.

Databases are consulted in the order given and the first value found for each field wins,
so an operator's map listed first overrides a commercial database for the prefixes it
covers.

``lookup_scoped`` / ``enrich_scoped`` also say over how wide a prefix around the address
the answer holds: each database's lookup lands in one network of its search tree (the
network of the record, or of the empty branch when nothing is found), and every address
of that network gets the same record. The networks of the several databases all contain
the address, so they nest, and the merged answer is the same over the narrowest of them:
its prefix length is the longest of theirs. The DNS server uses it as the GeoIP part of
the ECS scope (``dns_backends.builtin.clients``).
"""

from __future__ import annotations

import dataclasses
import ipaddress
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import geoip2.database
import geoip2.errors
import maxminddb

from geo.client import ClientInfo


@dataclass(frozen=True, slots=True)
class GeoInfo:
    country: str | None = None
    region: str | None = None
    asn: int | None = None
    org: str | None = None
    line: str | None = None
    location: tuple[float, float] | None = None

    def merged(self, other: GeoInfo) -> GeoInfo:
        """``self``, with its missing fields taken from ``other``."""
        return GeoInfo(**{f.name: getattr(self, f.name) if getattr(self, f.name) is not None
                          else getattr(other, f.name) for f in dataclasses.fields(self)})


class _Db:
    def __init__(self, path: str) -> None:
        self.path = path
        self.raw = maxminddb.open_database(path)
        self.kind = self.raw.metadata().database_type
        self.v4_only = self.raw.metadata().ip_version == 4
        self.reader = geoip2.database.Reader(path)

    def lookup(self, ip: str) -> tuple[GeoInfo, int]:
        """The record for ``ip`` and the prefix length of the network it covers."""
        if self.v4_only and ":" in ip:
            return GeoInfo(), 0  # no IPv6 data at all (the readers would raise)
        kind = self.kind
        try:
            if "City" in kind:
                c = self.reader.city(ip)
                loc = c.location
                where = ((loc.latitude, loc.longitude)
                         if loc.latitude is not None and loc.longitude is not None else None)
                return GeoInfo(country=c.country.iso_code,
                               region=c.subdivisions.most_specific.iso_code,
                               location=where), _plen(c.traits.network, ip)
            if "Country" in kind:
                r = self.reader.country(ip)
                return GeoInfo(country=r.country.iso_code), _plen(r.traits.network, ip)
            if "ASN" in kind:
                a = self.reader.asn(ip)
                return GeoInfo(asn=a.autonomous_system_number,
                               org=a.autonomous_system_organization), _plen(a.network, ip)
        except geoip2.errors.AddressNotFoundError as exc:
            return GeoInfo(), _plen(exc.network, ip)
        record, plen = self.raw.get_with_prefix_len(ip)
        return (_flat(record) if isinstance(record, dict) else GeoInfo()), plen

    def close(self) -> None:
        self.reader.close()
        self.raw.close()


def _plen(network: ipaddress.IPv4Network | ipaddress.IPv6Network | None, ip: str) -> int:
    """The network's prefix length; the full length of ``ip`` when the reader gave none."""
    if network is not None:
        return network.prefixlen
    return 32 if ipaddress.ip_address(ip).version == 4 else 128


def _text(record: dict[str, Any], key: str) -> str | None:
    v = record.get(key)
    return v if isinstance(v, str) and v else None


def _flat(record: dict[str, Any]) -> GeoInfo:
    asn = record.get("asn")
    return GeoInfo(country=_text(record, "country"), region=_text(record, "region"),
                   line=_text(record, "line"), org=_text(record, "org"),
                   asn=asn if isinstance(asn, int) and not isinstance(asn, bool) else None)


class GeoIP:
    """Several MaxMind-format databases consulted in order (module docstring)."""

    def __init__(self, paths: Sequence[str]) -> None:
        self._dbs: list[_Db] = []
        try:
            for p in paths:
                self._dbs.append(_Db(p))
        except BaseException:
            self.close()
            raise

    @property
    def kinds(self) -> tuple[str, ...]:
        return tuple(db.kind for db in self._dbs)

    def lookup(self, ip: str) -> GeoInfo:
        return self.lookup_scoped(ip)[0]

    def lookup_scoped(self, ip: str) -> tuple[GeoInfo, int]:
        """The merged record for ``ip`` and the prefix length over which it is the same
        (module docstring); 0 when no database is open."""
        info, plen = GeoInfo(), 0
        for db in self._dbs:
            found, length = db.lookup(ip)
            info = info.merged(found)
            plen = max(plen, length)
        return info, plen

    def enrich(self, client: ClientInfo) -> ClientInfo:
        """``client`` with country, ASN, line, region and location filled where unknown
        (looked up on its address: the ECS subnet's, or the resolver's)."""
        return self.enrich_scoped(client)[0]

    def enrich_scoped(self, client: ClientInfo) -> tuple[ClientInfo, int]:
        """``enrich``, and the prefix length around the address over which the looked-up
        data is the same (``lookup_scoped``)."""
        info, plen = self.lookup_scoped(str(client.address))
        return dataclasses.replace(
            client, country=client.country or info.country,
            asn=client.asn if client.asn is not None else info.asn,
            line=client.line or info.line, region=client.region or info.region,
            location=client.location or info.location), plen

    def close(self) -> None:
        for db in self._dbs:
            db.close()
        self._dbs = []

    def __enter__(self) -> GeoIP:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
