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

An RRset is held as a ``RecordSet``: owner, type, TTL and the rdata as canonical text,
sorted. Building a dnspython RRset costs ~40 us a name (rdata validation, and the rdataset
hashes each rdata by rendering it to wire): 40 ms for a plan of 1,000 changed names,
against ~5 ms for these. dnspython objects are built only where they are needed (a zone
file written through ``dns.zone``; the reference UPDATE in ``update_wire``), by
``RecordSet.to_rrset``; a server's records read by dnspython become ``RecordSet``s by
``RecordSet.from_rrset``.
"""

from __future__ import annotations

import functools
import socket
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal, NamedTuple

import dns.exception
import dns.ipv6
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


class _SharedName(dns.name.Name):
    """A Name that computes its hash once, and compares with another one cheaply.

    dnspython hashes a Name character by character on every dict lookup, and its hash
    collides often on names like ``h19.zone`` / ``h20.zone`` (it is 9h + c per character):
    each collision costs a ``fullcompare`` (~10 us). The diff looks every managed name up
    several times per pass. The hash stays dnspython's, so a plain Name still finds a
    shared one in a dict; two shared Names compare their lower-cased labels."""

    __slots__ = ("_hash", "_lower")
    _hash: int
    _lower: tuple[bytes, ...]

    def __init__(self, labels: tuple[bytes, ...]) -> None:
        super().__init__(labels)
        object.__setattr__(self, "_hash", dns.name.Name.__hash__(self))  # Name is immutable
        object.__setattr__(self, "_lower", tuple(label.lower() for label in labels))

    def __hash__(self) -> int:
        return self._hash

    def __eq__(self, other: object) -> bool:
        if self is other:
            return True
        if type(other) is _SharedName:
            return self._lower == other._lower
        return bool(super().__eq__(other))  # type: ignore[no-untyped-call]

    def __ne__(self, other: object) -> bool:
        return not self.__eq__(other)

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


@functools.lru_cache(maxsize=65536)
def canonical(rdtype: dns.rdatatype.RdataType, value: str) -> str:
    """``value`` as dnspython prints the rdata: A dotted quad, AAAA in dnspython's
    compressed form, CNAME target absolute; anything else (a PowerDNS LUA record) as is.
    Raises ``dns.exception.SyntaxError`` for a bad address, as ``make_rdata`` does."""
    try:
        if rdtype == A:
            return socket.inet_ntop(socket.AF_INET, socket.inet_pton(socket.AF_INET, value))
        if rdtype == AAAA:
            return dns.ipv6.inet_ntoa(socket.inet_pton(socket.AF_INET6, value))
    except (OSError, ValueError, TypeError):
        raise dns.exception.SyntaxError(  # type: ignore[no-untyped-call]
            f"not an {rdtype.name} address: {value!r}") from None
    if rdtype == CNAME:
        return name_of(value).to_text()
    return value


def _rdata_value(rd: dns.rdata.Rdata) -> str:
    """The canonical text (``canonical``) of an rdata dnspython parsed."""
    if rd.rdtype in _ADDRESS_TYPES:
        return str(rd.address)  # type: ignore[attr-defined]  # canonical in dnspython
    if rd.rdtype == CNAME:
        return str(rd.target.to_text())  # type: ignore[attr-defined]
    return rdata_text(rd)


class RecordSet(NamedTuple):
    """An RRset as edgesteer manages it (see the module docstring): ``values`` are the
    rdata as canonical text (``canonical``), sorted, without duplicates. Build one with
    ``RecordSet.of`` unless the values are known to be so already. A NamedTuple: as
    immutable as a frozen dataclass, and built three times faster (a plan of 1,000
    changed names builds 1,000 of them, and the diff as many ``Change``s)."""

    name: dns.name.Name
    rdtype: dns.rdatatype.RdataType
    ttl: int
    values: tuple[str, ...]

    @classmethod
    def of(cls, name: dns.name.Name, rdtype: dns.rdatatype.RdataType, ttl: int,
           values: Iterable[str]) -> RecordSet:
        return cls(name, rdtype, ttl, tuple(sorted({canonical(rdtype, v) for v in values})))

    @classmethod
    def from_rrset(cls, rrset: dns.rrset.RRset) -> RecordSet:
        return cls(rrset.name, rrset.rdtype, rrset.ttl,
                   tuple(sorted({_rdata_value(rd) for rd in rrset})))

    def rdatas(self) -> list[dns.rdata.Rdata]:
        if self.rdtype == LUA:  # opaque to dnspython: the PowerDNS content, as is
            return [dns.rdata.GenericRdata(IN, LUA, v.encode()) for v in self.values]
        return [make_rdata(self.rdtype, v) for v in self.values]

    def to_rrset(self) -> dns.rrset.RRset:
        """The same RRset as a dnspython object, rdata in ``values`` order."""
        return dns.rrset.from_rdata_list(self.name, self.ttl, self.rdatas())


RRsets = dict[RRKey, RecordSet]


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
                  max_answers: int) -> list[RecordSet]:
    """The RRsets a plain server holds at ``name`` for one answer set (see module docstring).

    Not memoized: a ``RecordSet`` costs ~2 us to build, less than an lru_cache lookup
    keyed on the answers (hashing them, and evicting, cost ~5 us a name).
    """
    limit = aset.max_answers if aset.max_answers > 0 else max_answers
    return list(_answer_rrsets(name, aset.ttl, aset.answers, mode, limit))


def _answer_rrsets(name: dns.name.Name, ttl: int, answers: tuple[WeightedAnswer, ...],
                   mode: AnswersMode, limit: int) -> tuple[RecordSet, ...]:
    if len(answers) == 1:  # the common case, and what the rules below give for it
        rdtype = _RDTYPES[answers[0].rrtype]
        return (RecordSet(name, rdtype, ttl, (canonical(rdtype, answers[0].value),)),)
    addresses = [a for a in answers if a.rrtype in ("A", "AAAA")]
    cnames = [a for a in answers if a.rrtype == "CNAME"]
    if cnames and (not addresses or (not any(a.weight > 0 for a in addresses)
                                     and any(c.weight > 0 for c in cnames))):
        best = sorted(_pick(cnames, "top", 1), key=lambda a: (-a.weight, a.value))[0]
        return (RecordSet(name, CNAME, ttl, (canonical(CNAME, best.value),)),)
    out = []
    for rrtype, rdtype in (("A", A), ("AAAA", AAAA)):
        chosen = _pick([a for a in addresses if a.rrtype == rrtype], mode, limit)
        if chosen:
            out.append(RecordSet.of(name, rdtype, ttl, [a.value for a in chosen]))
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

    Keys and ``RecordSet`` owners use the shared Name objects of ``names`` (see
    ``name_of``)."""
    canonical_names = {n: n for n in names}
    out: RRsets = {}
    for r in rrsets:
        if r.rdtype in types and r.rdclass == IN:
            name = canonical_names.get(r.name)
            if name is not None:
                out[(name, r.rdtype)] = RecordSet(
                    name, r.rdtype, r.ttl, tuple(sorted({_rdata_value(rd) for rd in r})))
    return out


class Change(NamedTuple):
    """One RRset to create (``before`` None), delete (``after`` None) or replace (a
    NamedTuple for the reason ``RecordSet`` is one)."""

    name: dns.name.Name
    rdtype: dns.rdatatype.RdataType
    before: RecordSet | None
    after: RecordSet | None

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
        def side(r: RecordSet | None) -> dict[str, object] | None:
            return None if r is None else {"ttl": r.ttl, "values": list(r.values)}
        return {"action": self.action, "name": self.name.to_text(),
                "type": type_name(self.rdtype),
                "before": side(self.before), "after": side(self.after)}


def type_name(rdtype: dns.rdatatype.RdataType) -> str:
    found = _TYPE_NAMES.get(rdtype)
    return found if found is not None else dns.rdatatype.to_text(rdtype)


_TYPE_NAMES = {A: "A", AAAA: "AAAA", CNAME: "CNAME", LUA: "LUA"}  # to_text costs ~5 us


def rdata_text(rd: dns.rdata.Rdata) -> str:
    """Presentation text; a LUA record (opaque to dnspython) shows its PowerDNS content."""
    if isinstance(rd, dns.rdata.GenericRdata):
        return rd.data.decode(errors="replace")
    return rd.to_text()


def _text(r: RecordSet | None) -> str:
    return "" if r is None else f"ttl={r.ttl} " + " ".join(r.values)


def same(a: RecordSet, b: RecordSet) -> bool:
    """Equal in substance: TTL and the set of rdatas (order never matters in DNS).

    The same object (a state a store kept from its last verified write) is equal at once;
    otherwise the canonical, sorted values compare as tuples. A CNAME target compares as
    a DNS name (case-insensitive), as dnspython would.
    """
    if a is b:
        return True
    if a.ttl != b.ttl or a.rdtype != b.rdtype or len(a.values) != len(b.values):
        return False
    if a.values == b.values:
        return True
    if a.rdtype == CNAME:
        return {name_of(v) for v in a.values} == {name_of(v) for v in b.values}
    return False


_ADDRESS_TYPES = frozenset({A, AAAA})
_RDTYPES = {"A": A, "AAAA": AAAA, "CNAME": CNAME}


def diff(existing: Mapping[RRKey, RecordSet],
         wanted: Mapping[RRKey, RecordSet]) -> tuple[Change, ...]:
    """The fewest RRset changes that turn ``existing`` into ``wanted``, deletes first.

    Deletes go first so that a name switching between CNAME and addresses never holds both
    (a server ignores a CNAME added next to other data, RFC 2136 section 3.4.2.2).
    """
    if existing is wanted:  # a store's read after a verified write returns what was written
        return ()
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
    ASNs, countries, regions, a hash bucket, or a line defined by ASNs is carried approximately
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
    if segment.regions:
        lost.append("regions")
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
