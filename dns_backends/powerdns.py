"""PowerDNS Authoritative over its HTTP API (aiohttp): read the zone, PATCH the RRsets.

- read: ``GET /api/v1/servers/{id}/zones/{zone}``; the managed RRsets are picked out;
- write: one ``PATCH`` carrying every change (``REPLACE`` / ``DELETE`` per RRset) — the API
  applies a PATCH in one database transaction, so a plan lands whole or not at all;
- a missing zone is created (``POST .../zones``, kind Native, the config's NS) when
  ``create_zones`` is set, else it is an error naming the fix;
- after a write: ``PUT .../rectify`` when the zone is DNSSEC-signed (ordername and auth
  fields must be recomputed), ``PUT .../notify`` when it is a primary with secondaries.

The API has no conditional write (nothing like RFC 2136 prerequisites): a hand edit made in
the few milliseconds between our GET and our PATCH is overwritten. It is not silent: the
next reconcile reads the zone and logs any drift it then finds.

Errors: 401/403 (API key), 404 (zone, server id), 422 (rejected data) fail at once with the
server's message; connection errors, timeouts and 5xx are retried by ``SyncBackend``.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import aiohttp
import dns.exception
import dns.name
import dns.rdata
import dns.rdataclass
import dns.rdatatype
import dns.rrset

from dns_backends.base import BackendError
from dns_backends.reconcile import Target, Transient
from dns_backends.records import (
    LUA,
    MANAGED_TYPES,
    AnswersMode,
    Change,
    RRsets,
    answer_rrsets,
    desired,
    make_rdata,
    managed_names,
    name_of,
    rdata_text,
    segment_networks,
    type_name,
    zone_services,
)
from edge.plan import AnswerSet, Plan
from geo.segment import DEFAULT_SEGMENT, Segment

if TYPE_CHECKING:
    from edge.config.schema import BackendSettings, Config, Service, Zone

IN = dns.rdataclass.IN


def _lua_pick(values: list[tuple[str, float]]) -> str:
    """A Lua expression choosing one value by weight (PowerDNS ``pickwrandom``)."""
    if len(values) == 1:
        return f"'{values[0][0]}'"
    total = sum(w for _, w in values) or 1.0
    pairs = ",".join(f"{{{max(1, round(1000 * w / total))},'{v}'}}" for v, w in values)
    return f"pickwrandom({{{pairs}}})"


def _weighted_values(aset: AnswerSet, rrset: dns.rrset.RRset) -> list[tuple[str, float]]:
    """The values ``answer_rrsets`` kept, each with its summed weight from the answer set."""
    kept = {rd.to_text() for rd in rrset}
    weights: dict[str, float] = {}
    for a in aset.answers:
        value = name_of(a.value).to_text() if a.rrtype == "CNAME" else a.value
        if value in kept:
            weights[value] = weights.get(value, 0.0) + max(a.weight, 0.0)
    if not any(weights.values()):
        weights = dict.fromkeys(weights, 1.0)
    return sorted(weights.items())


def lua_desired(plan: Plan, services: Sequence[Service], zone: str,
                segments: Sequence[Segment]) -> RRsets:
    """One LUA RRset per (name, type): segments by ``netmask`` (ECS or resolver address,
    PowerDNS's ``bestwho``) in config order, then ``default``; one answer drawn by weight.

    Segments without networks (only ASNs, countries, buckets) cannot be matched here and
    fall through to ``default``.
    """
    out: RRsets = {}
    nets = [(seg.name, segment_networks(seg).networks) for seg in segments]
    for svc in zone_services(services, zone):
        name = name_of(svc.name)
        branches: dict[dns.rdatatype.RdataType, list[str]] = {}
        fallback: dict[dns.rdatatype.RdataType, str] = {}
        for segment, networks in [*[(n, c) for n, c in nets if c], (DEFAULT_SEGMENT, ())]:
            aset = plan.get(svc.name, segment)
            if aset is None:
                continue
            for rrset in answer_rrsets(aset, name, "all", svc.max_answers):
                pick = _lua_pick(_weighted_values(aset, rrset))
                if segment == DEFAULT_SEGMENT:
                    fallback[rrset.rdtype] = pick
                else:
                    masks = ",".join(f"'{c}'" for c in networks)
                    branches.setdefault(rrset.rdtype, []).append(
                        f"if netmask({{{masks}}}) then return {pick} end")
        ttl = min((a.ttl for (sv, _), a in plan.answers.items() if sv == svc.name),
                  default=svc.ttl)
        for rdtype in sorted(set(branches) | set(fallback)):
            code = " ".join([*branches.get(rdtype, []),
                             f"return {fallback.get(rdtype, '{}')}"])
            content = f'{dns.rdatatype.to_text(rdtype)} ";{code}"'
            rd = dns.rdata.GenericRdata(IN, LUA, content.encode())
            out[(name, LUA)] = out.get((name, LUA)) or dns.rrset.RRset(name, IN, LUA)
            out[(name, LUA)].add(rd, ttl)
    return out


def _rrset_json(change: Change) -> dict[str, Any]:
    name, rdtype = change.name.to_text(), type_name(change.rdtype)
    if change.after is None:
        return {"name": name, "type": rdtype, "changetype": "DELETE"}
    return {"name": name, "type": rdtype, "ttl": change.after.ttl, "changetype": "REPLACE",
            "records": [{"content": text, "disabled": False}
                        for text in sorted(rdata_text(rd) for rd in change.after)]}


class PowerDnsStore:
    """The PowerDNS API side of a ``SyncBackend`` (see the module docstring)."""

    def __init__(self, name: str, url: str, api_key: str, zones: Sequence[Zone],
                 services: Sequence[Service], *, server_id: str = "localhost",
                 create_zones: bool = False, answers: AnswersMode = "all",
                 timeout: float = 5.0, lua: bool = False,
                 segments: Sequence[Segment] = ()) -> None:
        self.name = name
        self.base = url.rstrip("/") + f"/api/v1/servers/{server_id}"
        self.api_key = api_key
        self.zones = {z.name: z for z in zones}
        self.services = tuple(services)
        self.create_zones = create_zones
        self.answers: AnswersMode = answers
        self.timeout = timeout
        self.lua = lua
        self.segments = tuple(segments)
        self.types = MANAGED_TYPES | {LUA}
        self._type_names = {type_name(t): t for t in self.types}
        self._api_names: dict[str, dict[str, dns.name.Name]] = {}
        self.requests: dict[str, int] = {"GET": 0, "PATCH": 0, "POST": 0, "PUT": 0}
        self._session: aiohttp.ClientSession | None = None
        self._zone_info: dict[str, dict[str, Any]] = {}
        # (zone, name, type) -> (ttl, contents, RRset): see ``_rrset``
        self._parsed: dict[tuple[str, str, str], tuple[int, tuple[str, ...], dns.rrset.RRset]] \
            = {}

    @classmethod
    def from_settings(cls, settings: BackendSettings, config: Config,
                      zones: Sequence[str]) -> PowerDnsStore:
        if settings.url is None:
            raise ValueError("powerdns needs url")
        key = settings.api_key
        if key is None:
            if settings.api_key_file is None:
                raise ValueError("powerdns needs api_key or api_key_file")
            key = Path(settings.api_key_file).read_text().strip()
        return cls(settings.name, settings.url, key, [config.zone(z) for z in zones],
                   config.services, server_id=settings.server_id,
                   create_zones=settings.create_zones, answers=settings.answers,
                   timeout=settings.timeout_s, lua=settings.lua, segments=config.segments)

    # Store protocol -----------------------------------------------------------------------
    def targets(self) -> Sequence[Target]:
        return [Target(z, DEFAULT_SEGMENT) for z in self.zones]

    def desired(self, plan: Plan, target: Target) -> RRsets:
        if self.lua:
            return lua_desired(plan, self.services, target.zone, self.segments)
        return desired(plan, self.services, target.zone, target.segment, self.answers)

    async def read(self, target: Target) -> RRsets:
        """The managed RRsets, always from a full GET: PowerDNS does not bump the serial of
        a Native zone on every edit, so the serial cannot tell us nothing changed."""
        return await self._read_all(target)

    async def _read_all(self, target: Target) -> RRsets:
        status, body = await self._call("GET", self._zone_url(target.zone), target)
        if status == 404:
            server_status, _ = await self._call("GET", self.base, target)
            if server_status != 200:
                self._check(status, body, target, "reading the server")
            if not self.create_zones:
                self._check(status, body, target, "reading the zone")
            await self._create(target)
            status, body = await self._call("GET", self._zone_url(target.zone), target)
        self._check(status, body, target, "reading the zone")
        assert isinstance(body, dict)
        self._zone_info[target.zone] = body
        names = self._names(target.zone)
        out: RRsets = {}
        for item in body.get("rrsets", []):
            try:
                rtype = item["type"]
                if rtype not in self._type_names or item["name"] not in names:
                    continue  # not ours: no parsing at all
                rrset = self._rrset(target.zone, item, names[item["name"]],
                                    self._type_names[rtype])
            except (dns.exception.DNSException, KeyError, TypeError, ValueError):
                continue  # malformed: not something we wrote
            if rrset is not None:  # keys: the shared Name objects (records.name_of)
                out[(rrset.name, rrset.rdtype)] = rrset
        return out

    def _names(self, zone: str) -> dict[str, dns.name.Name]:
        """The managed names of ``zone`` as the API spells them (``www.example.hk.``)."""
        found = self._api_names.get(zone)
        if found is None:
            found = {n.to_text(): n for n in managed_names(self.services, zone)}
            self._api_names[zone] = found
        return found

    def _rrset(self, zone: str, item: dict[str, Any], name: dns.name.Name,
               rdtype: dns.rdatatype.RdataType) -> dns.rrset.RRset | None:
        """One API rrset as a dnspython RRset; the very object of the last read or write
        when its TTL and contents are unchanged. A read of 1,000 RRsets then builds
        nothing, and ``records.same`` sees the same object: the verifying read after a
        write, and the reconcile pass that finds nothing to do, cost the GET and little
        more."""
        contents = tuple(sorted(r["content"] for r in item.get("records", [])
                                if not r.get("disabled")))
        if not contents:
            return None
        ttl = int(item.get("ttl", 0))
        key = (zone, item["name"], item["type"])
        known = self._parsed.get(key)
        if known is not None and known[0] == ttl and known[1] == contents:
            return known[2]
        rdatas = [dns.rdata.GenericRdata(IN, LUA, c.encode()) if rdtype == LUA
                  else make_rdata(rdtype, c) for c in contents]
        rrset = dns.rrset.from_rdata_list(name, ttl, rdatas)
        self._parsed[key] = (ttl, contents, rrset)
        return rrset

    async def write(self, target: Target, changes: Sequence[Change], wanted: RRsets) -> None:
        rrsets = [_rrset_json(c) for c in changes]
        status, reply = await self._call("PATCH", self._zone_url(target.zone), target,
                                         {"rrsets": rrsets})
        self._check(status, reply, target, f"PATCH of {len(changes)} RRsets")
        for c, item in zip(changes, rrsets, strict=True):  # what the verifying read should see
            key = (target.zone, item["name"], item["type"])
            if c.after is None:
                self._parsed.pop(key, None)
            else:
                contents = tuple(r["content"] for r in item["records"])  # sorted already
                self._parsed[key] = (c.after.ttl, contents, c.after)
        info = self._zone_info.get(target.zone, {})
        if info.get("dnssec"):
            status, reply = await self._call("PUT", self._zone_url(target.zone) + "/rectify",
                                             target)
            self._check(status, reply, target, "rectify")
        if str(info.get("kind", "")).lower() in ("master", "primary"):  # tell secondaries
            status, reply = await self._call("PUT", self._zone_url(target.zone) + "/notify",
                                             target)
            self._check(status, reply, target, "notify")

    async def aclose(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    # HTTP ---------------------------------------------------------------------------------
    def _zone_url(self, zone: str) -> str:
        return f"{self.base}/zones/{zone}."

    async def _create(self, target: Target) -> None:
        zone = self.zones[target.zone]
        body = {"name": f"{zone.name}.", "kind": "Native",
                "nameservers": [dns.name.from_text(n).to_text() for n in zone.ns],
                "soa_edit_api": "INCEPTION-INCREMENT"}
        status, reply = await self._call("POST", f"{self.base}/zones", target, body)
        self._check(status, reply, target, "creating the zone")

    async def _call(self, method: str, url: str, target: Target,
                    body: object = None) -> tuple[int, object]:
        if self._session is None:
            self._session = aiohttp.ClientSession(
                headers={"X-API-Key": self.api_key},
                timeout=aiohttp.ClientTimeout(total=self.timeout))
        self.requests[method] = self.requests.get(method, 0) + 1
        try:
            async with self._session.request(method, url, json=body) as resp:
                text = await resp.text()
                status = resp.status
        except aiohttp.ClientConnectorError as exc:
            raise Transient(f"{method} {url}: cannot connect ({exc.os_error}); server "
                            "down?") from None
        except TimeoutError:
            raise Transient(f"{method} {url}: no answer within {self.timeout:g}s") from None
        except aiohttp.ClientError as exc:
            raise Transient(f"{method} {url}: {type(exc).__name__}: {exc}") from None
        if status >= 500:
            raise Transient(f"{method} {url}: HTTP {status}: {_message(text)}")
        try:
            return status, json.loads(text) if text else None
        except ValueError:
            return status, text

    def _check(self, status: int, body: object, target: Target, what: str) -> None:
        if 200 <= status < 300:
            return
        message = _message(body)
        if status in (401, 403):
            hint = "the API key was rejected (check api_key / api_key_file)"
        elif status == 404 and what == "reading the zone":
            hint = "the zone does not exist on the server (create it, or set " \
                "create_zones: true)"
        elif status == 404:
            hint = "not found: check url and server_id"
        elif status == 422:
            hint = "the server rejected the data"
        else:
            hint = "unexpected answer"
        raise BackendError(self.name, f"{target.label}: {what}: HTTP {status}: {hint}: "
                           f"{message} ({self.base})")


def _message(body: object) -> str:
    if isinstance(body, dict):
        return str(body.get("error", body))[:300]
    if isinstance(body, str):
        try:
            parsed = json.loads(body)
            if isinstance(parsed, dict) and "error" in parsed:
                return str(parsed["error"])[:300]
        except ValueError:
            pass
        return body.strip()[:300]
    return str(body)[:300]
