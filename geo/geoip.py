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
"""

from __future__ import annotations

import dataclasses
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
        self.reader = geoip2.database.Reader(path)

    def lookup(self, ip: str) -> GeoInfo:
        kind = self.kind
        try:
            if "City" in kind:
                c = self.reader.city(ip)
                loc = c.location
                where = ((loc.latitude, loc.longitude)
                         if loc.latitude is not None and loc.longitude is not None else None)
                return GeoInfo(country=c.country.iso_code,
                               region=c.subdivisions.most_specific.iso_code, location=where)
            if "Country" in kind:
                return GeoInfo(country=self.reader.country(ip).country.iso_code)
            if "ASN" in kind:
                a = self.reader.asn(ip)
                return GeoInfo(asn=a.autonomous_system_number,
                               org=a.autonomous_system_organization)
        except geoip2.errors.AddressNotFoundError:
            return GeoInfo()
        record = self.raw.get(ip)
        return _flat(record) if isinstance(record, dict) else GeoInfo()

    def close(self) -> None:
        self.reader.close()
        self.raw.close()


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
        info = GeoInfo()
        for db in self._dbs:
            info = info.merged(db.lookup(ip))
        return info

    def enrich(self, client: ClientInfo) -> ClientInfo:
        """``client`` with country, ASN, line, region and location filled where unknown
        (looked up on its address: the ECS subnet's, or the resolver's)."""
        info = self.lookup(str(client.address))
        return dataclasses.replace(
            client, country=client.country or info.country,
            asn=client.asn if client.asn is not None else info.asn,
            line=client.line or info.line, region=client.region or info.region,
            location=client.location or info.location)

    def close(self) -> None:
        for db in self._dbs:
            db.close()
        self._dbs = []

    def __enter__(self) -> GeoIP:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
