"""Plan -> the RRsets a plain authoritative server should hold, and the minimal diff to get there.

A plain authoritative server (BIND, Knot, PowerDNS without LUA) gives every client the whole
RRset and the resolver rotates through it: it cannot draw answers by weight. So each
(service, segment) answer set becomes one RRset per type, chosen by the backend's
``answers`` mode:

- ``all``: every positive-weight answer of the serving tier (the planner already dropped
  the other tiers). Weights collapse to "equal"; a 0-weight (drained) answer is left out
  unless nothing else is left, as in the built-in server.
- ``top``: the ``max_answers`` heaviest of them (ties by value), the closest a static RRset
  comes to "mostly the heavy ones".

A name holds either a CNAME or addresses, never both: when an answer set mixes them, the
addresses win if any has weight, as in the built-in server. A CNAME RRset holds one target,
the heaviest.

Only the names of services are *managed*: a diff never touches SOA, NS, or any other name,
and at a managed name only A, AAAA and CNAME. Everything is compared on (TTL, rdata set).
"""

from __future__ import annotations

import functools
import socket
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

import dns.exception
import dns.name
import dns.rdata
import dns.rdataclass
import dns.rdatatype
import dns.rdtypes.ANY.CNAME
import dns.rdtypes.IN.A
import dns.rdtypes.IN.AAAA
import dns.rrset
import netaddr

from edge.plan import AnswerSet, Plan, WeightedAnswer
from geo.segment import DEFAULT_SEGMENT, Segment

if TYPE_CHECKING:
    from edge.config.schema import Service

AnswersMode = Literal["all", "top"]
IN = dns.rdataclass.IN
A = dns.rdatatype.A
AAAA = dns.rdatatype.AAAA
CNAME = dns.rdatatype.CNAME
SOA = dns.rdatatype.SOA
MANAGED_TYPES: frozenset[dns.rdatatype.RdataType] = frozenset({A, AAAA, CNAME})
LUA = dns.rdatatype.RdataType.make(65402)  # PowerDNS's LUA record type (private use range)

RRKey = tuple[dns.name.Name, dns.rdatatype.RdataType]
RRsets = dict[RRKey, dns.rrset.RRset]


class _SharedName(dns.name.Name):
    """A Name that computes its hash once. dnspython hashes a Name character by character
    on every dict lookup; the diff looks every managed name up several times per pass."""

    __slots__ = ("_hash",)
    _hash: int

    def __init__(self, labels: tuple[bytes, ...]) -> None:
        super().__init__(labels)
        object.__setattr__(self, "_hash", dns.name.Name.__hash__(self))  # Name is immutable

    def __hash__(self) -> int:
        return self._hash

    def __reduce__(self) -> tuple[type[_SharedName], tuple[tuple[bytes, ...]]]:
        return _SharedName, (self.labels,)


@functools.lru_cache(maxsize=65536)
def name_of(text: str) -> dns.name.Name:
    """One shared Name object per service name: dict keys built from it then match by
    identity, where comparing two equal dnspython Names costs a label-by-label walk, and
    its hash is computed once (``_SharedName``)."""
    return _SharedName(dns.name.from_text(text).labels)


@functools.lru_cache(maxsize=65536)
def make_rdata(rdtype: dns.rdatatype.RdataType, value: str) -> dns.rdata.Rdata:
    """A, AAAA or CNAME rdata built directly (no zone-file tokenizer): this runs for every
    answer of every plan and every record read back. Rdata objects are immutable, so one
    object per value is shared (a few hundred addresses serve thousands of names)."""
    try:  # the C parser (strict dotted quad / RFC 4291 text); dnspython then only formats
        if rdtype == A:
            return dns.rdtypes.IN.A.A(  # type: ignore[no-untyped-call]
                IN, A, socket.inet_pton(socket.AF_INET, value))
        if rdtype == AAAA:
            return dns.rdtypes.IN.AAAA.AAAA(  # type: ignore[no-untyped-call]
                IN, AAAA, socket.inet_pton(socket.AF_INET6, value))
    except (OSError, ValueError, TypeError):
        raise dns.exception.SyntaxError(  # type: ignore[no-untyped-call]
            f"not an {rdtype.name} address: {value!r}") from None
    return dns.rdtypes.ANY.CNAME.CNAME(  # type: ignore[no-untyped-call]
        IN, CNAME, dns.name.from_text(value))


def _pick(answers: Sequence[WeightedAnswer], mode: AnswersMode,
          limit: int) -> list[WeightedAnswer]:
    merged: dict[str, WeightedAnswer] = {}
    for a in answers:  # same value twice (two links, one VIP): weights add up
        old = merged.get(a.value)
        merged[a.value] = a if old is None else WeightedAnswer(
            a.rrtype, a.value, old.weight + max(a.weight, 0.0), a.link, a.pool, a.tier)
    pool = [a for a in merged.values() if a.weight > 0] or list(merged.values())
    if mode == "top" and limit > 0:
        pool = sorted(pool, key=lambda a: (-a.weight, a.value))[:limit]
    return pool


def answer_rrsets(aset: AnswerSet, name: dns.name.Name, mode: AnswersMode,
                  max_answers: int) -> list[dns.rrset.RRset]:
    """The RRsets a plain server holds at ``name`` for one answer set (see module docstring).

    Memoized on the answer set's content: a new plan version usually changes a few sets,
    and the RRsets of the others are then the same objects as before (no rebuilding, and
    ``same`` compares them by identity). Nothing mutates an RRset once built.
    """
    limit = aset.max_answers if aset.max_answers > 0 else max_answers
    return list(_answer_rrsets(name, aset.ttl, aset.answers, mode, limit))


@functools.lru_cache(maxsize=16384)
def _answer_rrsets(name: dns.name.Name, ttl: int, answers: tuple[WeightedAnswer, ...],
                   mode: AnswersMode, limit: int) -> tuple[dns.rrset.RRset, ...]:
    addresses = [a for a in answers if a.rrtype in ("A", "AAAA")]
    cnames = [a for a in answers if a.rrtype == "CNAME"]
    if cnames and (not addresses or (not any(a.weight > 0 for a in addresses)
                                     and any(c.weight > 0 for c in cnames))):
        best = sorted(_pick(cnames, "top", 1), key=lambda a: (-a.weight, a.value))[0]
        return (dns.rrset.from_rdata_list(name, ttl, [make_rdata(CNAME, best.value)]),)
    out = []
    for rrtype, rdtype in (("A", A), ("AAAA", AAAA)):
        chosen = _pick([a for a in addresses if a.rrtype == rrtype], mode, limit)
        if chosen:
            rdatas = [make_rdata(rdtype, a.value) for a in chosen]
            out.append(dns.rrset.from_rdata_list(name, ttl, rdatas))
    return tuple(out)


def answer_set_for(plan: Plan, service: str, segment: str) -> AnswerSet | None:
    """The set a client of ``segment`` gets: its own, else the service's default one."""
    found = plan.get(service, segment)
    return found if found is not None else plan.get(service, DEFAULT_SEGMENT)


def zone_services(services: Iterable[Service], zone: str) -> list[Service]:
    return [s for s in services if s.zone == zone]


def managed_names(services: Iterable[Service], zone: str) -> frozenset[dns.name.Name]:
    return frozenset(name_of(s.name) for s in zone_services(services, zone))


def desired(plan: Plan, services: Iterable[Service], zone: str, segment: str,
            mode: AnswersMode = "all") -> RRsets:
    """What the server should hold in ``zone`` for the clients of ``segment``.

    A service with no answer set for the segment nor for ``default`` gets no records: the
    name then answers NODATA (better than stale answers pointing at a dead link).
    """
    out: RRsets = {}
    for svc in zone_services(services, zone):
        aset = answer_set_for(plan, svc.name, segment)
        if aset is None:
            continue
        name = name_of(svc.name)
        for rrset in answer_rrsets(aset, name, mode, svc.max_answers):
            out[(name, rrset.rdtype)] = rrset
    return out


def managed(rrsets: Iterable[dns.rrset.RRset], names: frozenset[dns.name.Name],
            types: frozenset[dns.rdatatype.RdataType] = MANAGED_TYPES) -> RRsets:
    """The part of a server's state that edgesteer owns: A/AAAA/CNAME at service names.

    Keys use the shared Name objects of ``names`` (see ``name_of``)."""
    canonical = {n: n for n in names}
    out: RRsets = {}
    for r in rrsets:
        if r.rdtype in types and r.rdclass == IN:
            name = canonical.get(r.name)
            if name is not None:
                out[(name, r.rdtype)] = r
    return out


@dataclass(frozen=True, slots=True)
class Change:
    """One RRset to create (``before`` None), delete (``after`` None) or replace."""

    name: dns.name.Name
    rdtype: dns.rdatatype.RdataType
    before: dns.rrset.RRset | None
    after: dns.rrset.RRset | None

    @property
    def action(self) -> Literal["create", "delete", "update"]:
        if self.before is None:
            return "create"
        return "delete" if self.after is None else "update"

    def describe(self) -> str:
        """One line: ``+ www.example.hk. 60 A 192.0.2.1 192.0.2.2``, ``~ ...`` with before."""
        head = f"{self.name} {type_name(self.rdtype)}"
        if self.after is None:
            return f"- {head} {_text(self.before)}"
        if self.before is None:
            return f"+ {head} {_text(self.after)}"
        return f"~ {head} {_text(self.before)} -> {_text(self.after)}"

    def to_json(self) -> dict[str, object]:
        def side(r: dns.rrset.RRset | None) -> dict[str, object] | None:
            return None if r is None else {"ttl": r.ttl, "values": _values(r)}
        return {"action": self.action, "name": self.name.to_text(),
                "type": type_name(self.rdtype),
                "before": side(self.before), "after": side(self.after)}


def type_name(rdtype: dns.rdatatype.RdataType) -> str:
    return "LUA" if rdtype == LUA else dns.rdatatype.to_text(rdtype)


def rdata_text(rd: dns.rdata.Rdata) -> str:
    """Presentation text; a LUA record (opaque to dnspython) shows its PowerDNS content."""
    if isinstance(rd, dns.rdata.GenericRdata):
        return rd.data.decode(errors="replace")
    return rd.to_text()


def _values(r: dns.rrset.RRset | None) -> list[str]:
    return [] if r is None else sorted(rdata_text(rd) for rd in r)


def _text(r: dns.rrset.RRset | None) -> str:
    return "" if r is None else f"ttl={r.ttl} " + " ".join(_values(r))


def same(a: dns.rrset.RRset, b: dns.rrset.RRset) -> bool:
    """Equal in substance: TTL and the set of rdatas (order never matters in DNS).

    The same object (a state a store kept from its last verified write) is equal at once.
    A and AAAA compare their ``address`` attribute (dnspython keeps it canonical), CNAME
    its target; anything else its presentation text. All far cheaper than dnspython's
    rdata equality, which renders both sides to wire format.
    """
    if a is b:
        return True
    if a.ttl != b.ttl or a.rdtype != b.rdtype or len(a) != len(b):
        return False
    if a.rdtype in _ADDRESS_TYPES:
        return {r.address for r in a} == {r.address for r in b}
    if a.rdtype == CNAME:
        return {r.target for r in a} == {r.target for r in b}
    return {r.to_text() for r in a} == {r.to_text() for r in b}


_ADDRESS_TYPES = frozenset({A, AAAA})


def diff(existing: Mapping[RRKey, dns.rrset.RRset],
         wanted: Mapping[RRKey, dns.rrset.RRset]) -> tuple[Change, ...]:
    """The fewest RRset changes that turn ``existing`` into ``wanted``, deletes first.

    Deletes go first so that a name switching between CNAME and addresses never holds both
    (a server ignores a CNAME added next to other data, RFC 2136 section 3.4.2.2).
    """
    deletes, upserts = [], []
    for key, gone in existing.items():
        if key not in wanted:
            deletes.append(Change(key[0], key[1], gone, None))
    for key, after in wanted.items():
        before = existing.get(key)
        if before is None or not same(before, after):
            upserts.append(Change(key[0], key[1], before, after))
    deletes.sort(key=lambda c: _order((c.name, c.rdtype)))
    upserts.sort(key=lambda c: _order((c.name, c.rdtype)))
    return tuple(deletes + upserts)


def _order(key: RRKey) -> tuple[tuple[bytes, ...], int]:
    """A stable order for the changes: by the name's labels (rendering 1,000 names to
    text, or dnspython's ``fullcompare``, costs more than the diff itself), then type."""
    return key[0].labels, int(key[1])


# Segments -> what a server can match clients on ----------------------------------------------

@dataclass(frozen=True, slots=True)
class SegmentNetworks:
    """The client networks of a segment, and whether they express the segment exactly.

    A BIND view or a LUA ``netmask`` can only match addresses: a segment that also needs
    ASNs, countries, a hash bucket, or a line defined by ASNs is carried approximately
    (``exact`` False, ``lost`` says what) or not at all (empty ``networks``).
    """

    segment: str
    networks: tuple[str, ...]
    exact: bool
    lost: tuple[str, ...] = ()


def segment_networks(segment: Segment) -> SegmentNetworks:
    lost = []
    if segment.asns:
        lost.append("asns")
    if segment.countries:
        lost.append("countries")
    if segment.bucket is not None:
        lost.append("bucket")
    nets = netaddr.IPSet(segment.cidrs) if segment.cidrs else None
    if segment.lines:
        if any(line.asns for line in segment.lines):
            lost.append("line asns")
        line_set = netaddr.IPSet()
        for line in segment.lines:
            line_set |= line.cidrs
        nets = line_set if nets is None else nets & line_set
    cidrs = tuple(str(c) for c in nets.iter_cidrs()) if nets is not None else ()
    return SegmentNetworks(segment.name, cidrs, exact=not lost, lost=tuple(lost))
