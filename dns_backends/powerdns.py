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

Skipping the read before a write (``known``): with ``soa_edit_api`` DEFAULT or INCREASE
(the zones we create get DEFAULT), every API edit of the zone, ours or anyone's, moves
its SOA serial, and a full GET reads the serial before the records. So "serial S, managed
RRsets R" from our last full GET stays true while the serial is still S, and a write whose
cheap ``GET ...?rrsets=false`` still shows S starts from R without a full GET; any other
answer means a full read first (``Unproven``). Edits that bypass the API (``pdnsutil
replace-rrset``, SQL) do not move the serial: a pass with nothing to write always reads
in full and finds them, and the verifying GET after a write sees any that our write did
not overwrite.

Errors: 401/403 (API key), 404 (zone, server id), 422 (rejected data) fail at once with the
server's message; connection errors, timeouts and 5xx are retried by ``SyncBackend``.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import time
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import aiohttp
import dns.exception
import dns.name
import dns.rdatatype

from dns_backends.base import BackendError
from dns_backends.reconcile import Target, Transient, Unproven
from dns_backends.records import (
    LUA,
    MANAGED_TYPES,
    AnswersMode,
    Change,
    RecordSet,
    RRsets,
    answer_rrsets,
    canonical,
    desired,
    managed_names,
    name_of,
    segment_networks,
    type_name,
    zone_services,
)
from edge.plan import AnswerSet, Plan
from geo.segment import DEFAULT_SEGMENT, Segment

if TYPE_CHECKING:
    from edge.config.schema import BackendSettings, Config, Service, Zone


def _lua_pick(values: list[tuple[str, float]]) -> str:
    """A Lua expression choosing one value by weight (PowerDNS ``pickwrandom``)."""
    if len(values) == 1:
        return f"'{values[0][0]}'"
    total = sum(w for _, w in values) or 1.0
    pairs = ",".join(f"{{{max(1, round(1000 * w / total))},'{v}'}}" for v, w in values)
    return f"pickwrandom({{{pairs}}})"


def _weighted_values(aset: AnswerSet, rrset: RecordSet) -> list[tuple[str, float]]:
    """The values ``answer_rrsets`` kept, each with its summed weight from the answer set."""
    kept = set(rrset.values)
    weights: dict[str, float] = {}
    for a in aset.answers:
        value = canonical(rrset.rdtype, a.value) if a.rrtype == rrset.rdtype.name else None
        if value in kept:
            weights[value] = weights.get(value, 0.0) + max(a.weight, 0.0)
    if not any(weights.values()):
        weights = dict.fromkeys(weights, 1.0)
    return sorted(weights.items())


def lua_desired(plan: Plan, services: Sequence[Service], zone: str,
                segments: Sequence[Segment]) -> RRsets:
    """One LUA RRset per (name, type): segments by ``netmask`` (ECS or resolver address,
    PowerDNS's ``bestwho``) in config order, then ``default``; one answer drawn by weight.

    Segments without networks (only ASNs, countries, regions, buckets) cannot be matched here and
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
        contents = []
        for rdtype in sorted(set(branches) | set(fallback)):
            code = " ".join([*branches.get(rdtype, []),
                             f"return {fallback.get(rdtype, '{}')}"])
            contents.append(f'{dns.rdatatype.to_text(rdtype)} ";{code}"')
        if contents:
            out[(name, LUA)] = RecordSet.of(name, LUA, ttl, contents)
    return out


_JSON = {"Content-Type": "application/json"}
_LET_IT_SEND = 4  # event-loop turns for a request to connect and be sent

# SOA-EDIT-API kinds under which every API edit moves the serial (EPOCH does not: two
# edits in one second share it; SOA-EDIT / SOA-EDIT-INCREASE depend on SOA-EDIT; an
# unknown kind such as INCEPTION-INCREMENT, which is a SOA-EDIT kind, moves nothing).
SERIAL_MOVING = frozenset({"DEFAULT", "INCREASE"})


def _serial_proof(info: object) -> int | None:
    """The zone's serial when it proves the zone unchanged (see ``SERIAL_MOVING``)."""
    if not isinstance(info, dict):
        return None
    serial = info.get("serial")
    kind = str(info.get("soa_edit_api") or "").upper()
    if kind not in SERIAL_MOVING or not isinstance(serial, (int, float)) or serial <= 0:
        return None
    return int(serial)


def _api_name(name: dns.name.Name) -> str:
    return _name_text(name, name.labels)


@functools.lru_cache(maxsize=65536)
def _name_text(name: dns.name.Name, labels: tuple[bytes, ...]) -> str:
    """``name.to_text()``, cached; keyed on the labels too, which keep their case (Names
    compare case-insensitively)."""
    return name.to_text()


def _rrset_json(change: Change) -> dict[str, Any]:
    """One rrset of a PATCH, straight from the change's ``RecordSet`` (canonical text)."""
    name, rdtype = _api_name(change.name), type_name(change.rdtype)
    if change.after is None:
        return {"name": name, "type": rdtype, "changetype": "DELETE"}
    return {"name": name, "type": rdtype, "ttl": change.after.ttl, "changetype": "REPLACE",
            "records": [{"content": text, "disabled": False} for text in change.after.values]}


class PowerDnsStore:
    """The PowerDNS API side of a ``SyncBackend`` (see the module docstring)."""

    def __init__(self, name: str, url: str, api_key: str, zones: Sequence[Zone],
                 services: Sequence[Service], *, server_id: str = "localhost",
                 create_zones: bool = False, answers: AnswersMode = "all",
                 timeout: float = 5.0, lua: bool = False,
                 segments: Sequence[Segment] = (), full_read_s: float = 300.0) -> None:
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
        # (zone, name, type) -> (ttl, contents, RecordSet): see ``_rrset``
        self._parsed: dict[tuple[str, str, str], tuple[int, tuple[str, ...], RecordSet]] = {}
        # zone -> (serial, when, managed RRsets) of the last full GET, when the serial
        # proves it (``_serial_proof``); dropped before each PATCH
        self._states: dict[str, tuple[int, float, RRsets]] = {}
        self._unread: set[str] = set()  # known() handed out a state: no read since
        self.full_read_s = full_read_s
        self.full_reads = 0  # full GETs of a zone (the rest of the GETs are cheap)
        self.skipped_reads = 0  # writes that started from ``known`` (serial check only)

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

    def known(self, target: Target) -> RRsets | None:
        """The managed RRsets of our last full GET (less than ``full_read_s`` ago) when the
        zone's serial proves them (``_serial_proof``): ``write`` then checks the serial
        with a cheap GET instead of the full read, and raises ``Unproven`` (nothing
        sent) when it moved. A pass with nothing to write still reads in full."""
        state = self._states.get(target.zone)
        if state is None or time.monotonic() - state[1] >= self.full_read_s:
            return None
        self._unread.add(target.zone)
        return state[2]

    async def read(self, target: Target) -> RRsets:
        """The managed RRsets, always from a full GET (which also records the serial that
        proves them for ``known``)."""
        self._unread.discard(target.zone)
        return await self._read_all(target)

    async def _read_all(self, target: Target) -> RRsets:
        self.full_reads += 1
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
        serial = _serial_proof(body)  # PowerDNS reads it before the records (fillZone)
        names = self._names(target.zone)
        out: RRsets = {}
        type_names, zone = self._type_names, target.zone
        items = body.get("rrsets")
        for item in items if isinstance(items, list) else ():
            try:
                rtype = item["type"]
                rdtype = type_names.get(rtype)
                name = names.get(item["name"]) if rdtype is not None else None
                if name is None or rdtype is None:
                    continue  # not ours: no parsing at all
                rrset = self._rrset(zone, item, name, rdtype)
            except (dns.exception.DNSException, KeyError, TypeError, ValueError):
                continue  # malformed: not something we wrote
            if rrset is not None:  # keys: the shared Name objects (records.name_of)
                out[(name, rdtype)] = rrset
        if serial is None:
            self._states.pop(zone, None)
        else:
            self._states[zone] = (serial, time.monotonic(), out)
        return out

    def _names(self, zone: str) -> dict[str, dns.name.Name]:
        """The managed names of ``zone`` as the API spells them (``www.example.hk.``)."""
        found = self._api_names.get(zone)
        if found is None:
            found = {n.to_text(): n for n in managed_names(self.services, zone)}
            self._api_names[zone] = found
        return found

    def _rrset(self, zone: str, item: dict[str, Any], name: dns.name.Name,
               rdtype: dns.rdatatype.RdataType) -> RecordSet | None:
        """One API rrset as a ``RecordSet``; the very object of the last read or write
        when its TTL and contents are unchanged. A read of 1,000 RRsets then builds
        nothing, and ``records.same`` sees the same object: the verifying read after a
        write, and the reconcile pass that finds nothing to do, cost the GET and little
        more."""
        records: list[Any] = item.get("records") or []
        if len(records) == 1:  # the common case: no generator, no sort
            contents: tuple[str, ...] = () if records[0].get("disabled") \
                else (str(records[0]["content"]),)
        else:
            contents = tuple(sorted(str(r["content"]) for r in records
                                    if not r.get("disabled")))
        if not contents:
            return None
        ttl = int(item.get("ttl", 0))
        key = (zone, item["name"], item["type"])
        known = self._parsed.get(key)
        if known is not None and known[0] == ttl and known[1] == contents:
            return known[2]
        rrset = RecordSet.of(name, rdtype, ttl, contents)
        self._parsed[key] = (ttl, contents, rrset)
        return rrset

    async def write(self, target: Target, changes: Sequence[Change], wanted: RRsets) -> None:
        state = self._states.pop(target.zone, None)  # the PATCH moves the serial
        check: asyncio.Future[tuple[int, object]] | None = None
        if target.zone in self._unread:  # from known(): the serial must still be its own
            self._unread.discard(target.zone)
            check = asyncio.ensure_future(self._call(
                "GET", self._zone_url(target.zone) + "?rrsets=false", target))
        try:
            if check is not None:  # let it go out; the body is built while it is answered
                for _ in range(_LET_IT_SEND):
                    await asyncio.sleep(0)
            rrsets = [_rrset_json(c) for c in changes]
            body = json.dumps({"rrsets": rrsets}).encode()
        except BaseException:
            if check is not None:
                check.cancel()
                with contextlib.suppress(BaseException):
                    await check
            raise
        if check is not None:
            status, info = await check
            if status == 404:
                raise Unproven  # gone: the full read says what to do
            self._check(status, info, target, "reading the zone's serial")
            if state is None or _serial_proof(info) != state[0]:
                raise Unproven  # edited since our last full GET: read it first
            self.skipped_reads += 1
        status, reply = await self._call("PATCH", self._zone_url(target.zone), target,
                                         raw=body)
        self._check(status, reply, target, f"PATCH of {len(changes)} RRsets")
        for c, item in zip(changes, rrsets, strict=True):  # what the verifying read should see
            key = (target.zone, item["name"], item["type"])
            if c.after is None:
                self._parsed.pop(key, None)
            else:  # the contents sent: the values, sorted already
                self._parsed[key] = (c.after.ttl, c.after.values, c.after)
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
                "soa_edit_api": "DEFAULT"}  # every API edit moves the serial: ``known``
        status, reply = await self._call("POST", f"{self.base}/zones", target, body)
        self._check(status, reply, target, "creating the zone")

    async def _call(self, method: str, url: str, target: Target,
                    body: object = None, *, raw: bytes | None = None) -> tuple[int, object]:
        """One request (``body`` as JSON, or ``raw``: JSON already encoded): (status,
        parsed JSON answer). Connection errors, timeouts and 5xx raise ``Transient``."""
        if self._session is None:
            self._session = aiohttp.ClientSession(
                headers={"X-API-Key": self.api_key},
                timeout=aiohttp.ClientTimeout(total=self.timeout))
        self.requests[method] = self.requests.get(method, 0) + 1
        try:
            request = self._session.request(method, url, json=body) if raw is None else \
                self._session.request(method, url, data=raw, headers=_JSON)
            async with request as resp:
                answer = await resp.read()  # JSON is UTF-8 (RFC 8259): no charset guessing
                status = resp.status
        except aiohttp.ClientConnectorError as exc:
            raise Transient(f"{method} {url}: cannot connect ({exc.os_error}); server "
                            "down?") from None
        except TimeoutError:
            raise Transient(f"{method} {url}: no answer within {self.timeout:g}s") from None
        except aiohttp.ClientError as exc:
            raise Transient(f"{method} {url}: {type(exc).__name__}: {exc}") from None
        if status >= 500:
            raise Transient(f"{method} {url}: HTTP {status}: "
                            f"{_message(answer.decode(errors='replace'))}")
        try:
            return status, json.loads(answer) if answer else None
        except ValueError:
            return status, answer.decode(errors="replace")

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
