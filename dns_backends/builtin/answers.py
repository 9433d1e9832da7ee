"""Precomputed answer data for the built-in server: one immutable ``AnswerTable`` per plan.

Everything that does not depend on the query is computed once, when a plan is applied:
rdata objects, weights, TTLs, the zone apex SOA and NS RRsets, glue, negative-answer SOA
and the set of names that exist. The query path only looks up and draws a weighted random
choice (``select``), so a later wire-level fast path can reuse the same data.

The server replaces the whole table in one attribute assignment; a query sees either the
old table or the new one, never a mix.

Before the first plan (``AnswerTable.empty``) the zone apex answers normally (SOA, NS,
glue), but every steered name answers SERVFAIL: there is no data yet, and SERVFAIL makes
resolvers try another server instead of caching a negative answer.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import TYPE_CHECKING, Protocol, TypeVar

import dns.exception
import dns.name
import dns.rcode
import dns.rdata
import dns.rdataclass
import dns.rdatatype
import dns.rrset

from edge.plan import AnswerSet, Plan, WeightedAnswer
from geo.segment import DEFAULT_SEGMENT

if TYPE_CHECKING:  # only attributes are read: keeps dns_backends free of a runtime edge.config edge
    from edge.config.schema import Service, Zone

IN = dns.rdataclass.IN
A = dns.rdatatype.A
AAAA = dns.rdatatype.AAAA
CNAME = dns.rdatatype.CNAME
NS = dns.rdatatype.NS
SOA = dns.rdatatype.SOA
ANY = dns.rdatatype.ANY
_REFUSED_TYPES = frozenset({dns.rdatatype.AXFR, dns.rdatatype.IXFR})
_MAX_CNAME_CHAIN = 8


class _Weighted(Protocol):
    @property
    def weight(self) -> float: ...


W = TypeVar("W", bound=_Weighted)


def select(answers: Sequence[W], max_answers: int, rng: random.Random) -> list[W]:
    """Up to ``max_answers`` of ``answers``, drawn by weight without replacement.

    Only positive-weight answers are drawn while any exist; zero (or negative) weights are
    used, uniformly, only when nothing else is left to give. The order of the result is
    the draw order, so it doubles as a weighted rotation.
    """
    if max_answers <= 0 or not answers:
        return []
    pool = [a for a in answers if a.weight > 0]
    if not pool:
        return rng.sample(list(answers), min(max_answers, len(answers)))
    weights = [a.weight for a in pool]
    chosen: list[W] = []
    while pool and len(chosen) < max_answers:
        (idx,) = rng.choices(range(len(pool)), weights=weights)
        chosen.append(pool.pop(idx))
        weights.pop(idx)
    return chosen


@dataclass(frozen=True, slots=True)
class Candidate:
    """One precomputed answer: the rdata to send and the weight it is drawn with."""

    rdata: dns.rdata.Rdata
    weight: float


@dataclass(frozen=True, slots=True)
class SteeredAnswers:
    """The candidates for one (name, segment), by rdtype. A CNAME set answers every qtype."""

    service: str
    segment: str
    ttl: int
    max_answers: int
    by_type: Mapping[dns.rdatatype.RdataType, tuple[Candidate, ...]]

    @property
    def is_cname(self) -> bool:
        return CNAME in self.by_type

    def rrset(self, qname: dns.name.Name, rdtype: dns.rdatatype.RdataType,
              rng: random.Random) -> dns.rrset.RRset | None:
        """A freshly drawn RRset answering ``rdtype``, or None when this name has none."""
        if self.is_cname:
            rdtype, limit = CNAME, 1  # a name holds one CNAME, whatever was asked
        elif rdtype == ANY:  # RFC 8482: one RRset is enough
            rdtype = A if A in self.by_type else AAAA
            limit = self.max_answers
        else:
            limit = self.max_answers
        candidates = self.by_type.get(rdtype)
        if not candidates:
            return None
        chosen = select(candidates, limit, rng)
        return dns.rrset.from_rdata_list(qname, self.ttl, [c.rdata for c in chosen])


@dataclass(frozen=True, slots=True)
class ZoneData:
    origin: dns.name.Name
    soa: dns.rrset.RRset
    ns: dns.rrset.RRset
    negative_soa: dns.rrset.RRset  # TTL = min(SOA minimum, SOA TTL), RFC 2308 section 5
    glue: tuple[dns.rrset.RRset, ...]


@dataclass(frozen=True, slots=True)
class Resolution:
    """The outcome of a lookup, before it is put in a message.

    ``segment`` is the client's segment when the answer depended on it (a steered name),
    else None: the server uses it for the ECS scope and its counters.
    """

    rcode: dns.rcode.Rcode
    answer: tuple[dns.rrset.RRset, ...] = ()
    authority: tuple[dns.rrset.RRset, ...] = ()
    additional: tuple[dns.rrset.RRset, ...] = ()
    authoritative: bool = True
    segment: str | None = None


_Static = Mapping[dns.name.Name, Mapping[dns.rdatatype.RdataType, dns.rrset.RRset]]


@dataclass(frozen=True, slots=True)
class AnswerTable:
    """Everything the server answers from, for one plan (or none yet). Immutable."""

    serial: int
    plan: Plan | None
    zones: Mapping[dns.name.Name, ZoneData]
    static: _Static
    steered: Mapping[dns.name.Name, str]  # steered name -> service name
    answers: Mapping[tuple[dns.name.Name, str], SteeredAnswers]  # (name, segment)
    names: frozenset[dns.name.Name]  # every name that exists, empty non-terminals included
    notes: tuple[str, ...] = field(default=())

    @classmethod
    def empty(cls, zones: Sequence[Zone], services: Sequence[Service],
              serial: int | None = None) -> AnswerTable:
        """The table before the first plan: apex data only; steered names SERVFAIL."""
        return cls._assemble(zones, services, None, int(time.time()) if serial is None
                             else serial)

    @classmethod
    def build(cls, zones: Sequence[Zone], services: Sequence[Service], plan: Plan,
              serial: int) -> AnswerTable:
        """The table for ``plan``. Raises ValueError when the plan cannot be served."""
        return cls._assemble(zones, services, plan, serial)

    @classmethod
    def _assemble(cls, zones: Sequence[Zone], services: Sequence[Service],
                  plan: Plan | None, serial: int) -> AnswerTable:
        zone_data = {dns.name.from_text(z.name): _zone_data(z, serial) for z in zones}
        static: dict[dns.name.Name, dict[dns.rdatatype.RdataType, dns.rrset.RRset]] = {}
        names: set[dns.name.Name] = set()
        for zd in zone_data.values():
            static.setdefault(zd.origin, {}).update({SOA: zd.soa, NS: zd.ns})
            for rrset in zd.glue:
                static.setdefault(rrset.name, {})[rrset.rdtype] = rrset
        steered: dict[dns.name.Name, str] = {}
        for svc in services:
            name = dns.name.from_text(svc.name)
            origin = dns.name.from_text(svc.zone)
            if origin not in zone_data or not name.is_subdomain(origin):
                raise ValueError(f"service {svc.name}: not inside a served zone ({svc.zone})")
            steered[name] = svc.name
        for name in [*static, *steered]:
            names.update(_with_ancestors(name, _zone_of(name, zone_data)))
        answers, notes = ({}, []) if plan is None else _plan_answers(
            plan, services, steered, zone_data)
        return cls(serial=serial, plan=plan, zones=MappingProxyType(zone_data),
                   static=MappingProxyType({k: MappingProxyType(v) for k, v in static.items()}),
                   steered=MappingProxyType(steered), answers=MappingProxyType(answers),
                   names=frozenset(names), notes=tuple(notes))

    def zone_for(self, qname: dns.name.Name) -> ZoneData | None:
        """The served zone that holds ``qname`` (longest match), or None."""
        origin = _zone_of(qname, self.zones)
        return None if origin is None else self.zones[origin]

    def steered_answers(self, qname: dns.name.Name, segment: str) -> SteeredAnswers | None:
        """The set for (qname, segment), falling back to the service's default segment."""
        found = self.answers.get((qname, segment))
        return found if found is not None else self.answers.get((qname, DEFAULT_SEGMENT))

    def resolve(self, qname: dns.name.Name, rdtype: dns.rdatatype.RdataType,
                segment_of: Callable[[], str], rng: random.Random) -> Resolution:
        """Answer one question. ``segment_of`` is called only when the answer depends on it."""
        zone = self.zone_for(qname)
        if zone is None or rdtype in _REFUSED_TYPES:
            return Resolution(dns.rcode.REFUSED, authoritative=False)
        answer: list[dns.rrset.RRset] = []
        segment: str | None = None
        for _ in range(_MAX_CNAME_CHAIN):
            node = self.static.get(qname, {})
            if qname in self.steered and rdtype not in node:
                if segment is None:
                    segment = segment_of()
                if self.plan is None:
                    return Resolution(dns.rcode.SERVFAIL, authoritative=False, segment=segment)
                found = self.steered_answers(qname, segment)
                if found is None:
                    return Resolution(dns.rcode.SERVFAIL, authoritative=False, segment=segment)
                rrset = found.rrset(qname, rdtype, rng)
                if rrset is not None:
                    answer.append(rrset)
                    target = _cname_target(rrset)
                    if (target is None or rdtype in (CNAME, ANY)
                            or self.zone_for(target) is not zone):
                        return Resolution(dns.rcode.NOERROR, tuple(answer), segment=segment)
                    qname = target  # chase inside the zone only
                    continue
            static = _static_answer(node, rdtype)
            if static is not None:
                answer.append(static)
                extra = zone.glue if static.rdtype == NS else ()
                return Resolution(dns.rcode.NOERROR, tuple(answer), additional=extra,
                                  segment=segment)
            rcode = dns.rcode.NOERROR if qname in self.names else dns.rcode.NXDOMAIN
            return Resolution(rcode, tuple(answer), (zone.negative_soa,), segment=segment)
        return Resolution(dns.rcode.SERVFAIL, authoritative=False, segment=segment)


def _static_answer(node: Mapping[dns.rdatatype.RdataType, dns.rrset.RRset],
                   rdtype: dns.rdatatype.RdataType) -> dns.rrset.RRset | None:
    if rdtype != ANY:
        return node.get(rdtype)
    for preferred in (SOA, NS, A, AAAA):  # RFC 8482: one RRset
        if preferred in node:
            return node[preferred]
    return None


def _cname_target(rrset: dns.rrset.RRset) -> dns.name.Name | None:
    if rrset.rdtype != CNAME:
        return None
    target: dns.name.Name = rrset[0].target
    return target


def _zone_of(name: dns.name.Name, zones: Mapping[dns.name.Name, object]) -> dns.name.Name | None:
    while True:
        if name in zones:
            return name
        if len(name) <= 1:
            return None
        name = name.parent()


def _with_ancestors(name: dns.name.Name, origin: dns.name.Name | None) -> list[dns.name.Name]:
    """``name`` and every name between it and its zone apex (empty non-terminals exist)."""
    if origin is None:
        return []
    out = [name]
    while name != origin:
        name = name.parent()
        out.append(name)
    return out


def _rdata(rdtype: dns.rdatatype.RdataType, text: str) -> dns.rdata.Rdata:
    try:
        return dns.rdata.from_text(IN, rdtype, text, origin=dns.name.root, relativize=False)
    except (dns.exception.DNSException, ValueError) as exc:
        raise ValueError(f"invalid {rdtype.name} value {text!r}: {exc}") from exc


def _abs(name: str) -> str:
    return dns.name.from_text(name).to_text()


def _zone_data(zone: Zone, serial: int) -> ZoneData:
    origin = dns.name.from_text(zone.name)
    soa_text = (f"{_abs(zone.soa_mname)} {_abs(zone.soa_rname)} {serial} {zone.soa_refresh} "
                f"{zone.soa_retry} {zone.soa_expire} {zone.soa_minimum}")
    soa = _rdata(SOA, soa_text)
    glue: list[dns.rrset.RRset] = []
    for ns_name in zone.ns:
        owner = dns.name.from_text(ns_name)
        if not owner.is_subdomain(origin):
            continue  # glue only for in-zone names: we are not authoritative elsewhere
        addresses = zone.ns_addresses.get(ns_name, ())
        for rdtype in (A, AAAA):
            want = 4 if rdtype == A else 6
            rdatas = [_rdata(rdtype, a) for a in addresses if (":" in a) == (want == 6)]
            if rdatas:
                glue.append(dns.rrset.from_rdata_list(owner, zone.ttl, rdatas))
    return ZoneData(
        origin=origin,
        soa=dns.rrset.from_rdata_list(origin, zone.ttl, [soa]),
        ns=dns.rrset.from_rdata_list(origin, zone.ttl, [_rdata(NS, _abs(n)) for n in zone.ns]),
        negative_soa=dns.rrset.from_rdata_list(origin, min(zone.ttl, zone.soa_minimum), [soa]),
        glue=tuple(glue),
    )


def _plan_answers(plan: Plan, services: Sequence[Service],
                  steered: Mapping[dns.name.Name, str],
                  zones: Mapping[dns.name.Name, ZoneData],
                  ) -> tuple[dict[tuple[dns.name.Name, str], SteeredAnswers], list[str]]:
    by_service = {svc.name: (name, svc) for name, svc_name in steered.items()
                  for svc in services if svc.name == svc_name}
    answers: dict[tuple[dns.name.Name, str], SteeredAnswers] = {}
    notes: list[str] = []
    for (service, segment), aset in sorted(plan.answers.items()):
        if service not in by_service:
            notes.append(f"plan has answers for unknown service {service}; ignored")
            continue
        name, svc = by_service[service]
        try:
            built = _steered(aset, svc.max_answers, notes)
        except ValueError as exc:
            raise ValueError(f"service {service} segment {segment}: {exc}") from exc
        if built.is_cname and name in zones:
            raise ValueError(f"service {service}: a CNAME cannot sit at the zone apex")
        answers[(name, segment)] = built
    for service, (name, _svc) in sorted(by_service.items()):
        if (name, DEFAULT_SEGMENT) not in answers:
            notes.append(f"service {service} has no default answer set: clients in "
                         "segments without their own set get SERVFAIL")
    return answers, notes


def _steered(aset: AnswerSet, service_max: int, notes: list[str]) -> SteeredAnswers:
    """Candidates for one AnswerSet. Duplicate values merge (weights add up).

    A name cannot hold a CNAME and addresses together: when a set mixes them, the
    positive-weight side wins (addresses if both are positive) and a note says so.
    """
    addresses = [a for a in aset.answers if a.rrtype in ("A", "AAAA")]
    cnames = [a for a in aset.answers if a.rrtype == "CNAME"]
    use: list[WeightedAnswer] = addresses
    if cnames and addresses:
        addr_live = any(a.weight > 0 for a in addresses)
        use = cnames if not addr_live and any(c.weight > 0 for c in cnames) else addresses
        notes.append(f"{aset.service}/{aset.segment}: mixes CNAME and addresses; "
                     f"serving {'CNAME' if use is cnames else 'addresses'}")
    elif cnames:
        use = cnames
    merged: dict[tuple[dns.rdatatype.RdataType, dns.rdata.Rdata], float] = {}
    for a in use:
        rdtype = dns.rdatatype.RdataType.make(a.rrtype)
        value = _abs(a.value) if rdtype == CNAME else a.value
        key = (rdtype, _rdata(rdtype, value))
        merged[key] = merged.get(key, 0.0) + max(a.weight, 0.0)
    by_type: dict[dns.rdatatype.RdataType, list[Candidate]] = {}
    for (rdtype, rdata), weight in merged.items():
        by_type.setdefault(rdtype, []).append(Candidate(rdata, weight))
    return SteeredAnswers(
        service=aset.service, segment=aset.segment, ttl=aset.ttl,
        max_answers=aset.max_answers if aset.max_answers > 0 else service_max,
        by_type=MappingProxyType({t: tuple(c) for t, c in by_type.items()}),
    )
