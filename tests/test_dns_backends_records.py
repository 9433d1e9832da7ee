"""Plan -> RRsets and the minimal diff: exact cases and invariants (hypothesis)."""

from __future__ import annotations

import dns.name
import dns.rdatatype
import dns.rrset
import netaddr
from hypothesis import given
from hypothesis import strategies as st

from dns_backends.records import (
    RecordSet,
    RRsets,
    answer_rrsets,
    desired,
    diff,
    managed,
    same,
    segment_networks,
)
from geo.segment import Line, Segment
from tests.servers_dns import answer_set, plan, services

NAME = dns.name.from_text("www.example.hk")


def values(rrsets: list[RecordSet]) -> dict[str, set[str]]:
    return {r.rdtype.name: set(r.values) for r in rrsets}


def test_all_mode_carries_every_positive_answer_and_drops_drained() -> None:
    aset = answer_set("www.example.hk", "default", [("A", "192.0.2.1", 100),
                                                    ("A", "192.0.2.2", 10),
                                                    ("A", "192.0.2.3", 0),
                                                    ("AAAA", "2001:db8::1", 5)])
    assert values(answer_rrsets(aset, NAME, "all", 2)) == {
        "A": {"192.0.2.1", "192.0.2.2"}, "AAAA": {"2001:db8::1"}}


def test_top_mode_keeps_the_heaviest_max_answers() -> None:
    aset = answer_set("www.example.hk", "default", [("A", "192.0.2.1", 10),
                                                    ("A", "192.0.2.2", 100),
                                                    ("A", "192.0.2.3", 50)])
    assert values(answer_rrsets(aset, NAME, "top", 2)) == {"A": {"192.0.2.2", "192.0.2.3"}}
    # the same value over two links: weights add up before ranking
    twice = answer_set("www.example.hk", "default", [("A", "192.0.2.1", 40),
                                                     ("A", "192.0.2.1", 40),
                                                     ("A", "192.0.2.2", 70)])
    assert values(answer_rrsets(twice, NAME, "top", 1)) == {"A": {"192.0.2.1"}}


def test_all_drained_serves_all_and_cname_rules() -> None:
    drained = answer_set("www.example.hk", "default", [("A", "192.0.2.1", 0),
                                                       ("A", "192.0.2.2", 0)])
    assert values(answer_rrsets(drained, NAME, "all", 2)) == {"A": {"192.0.2.1", "192.0.2.2"}}
    mixed = answer_set("www.example.hk", "default", [("CNAME", "a.cdn.example.net", 100),
                                                     ("A", "192.0.2.1", 1)])
    assert values(answer_rrsets(mixed, NAME, "all", 2)) == {"A": {"192.0.2.1"}}
    cnames = answer_set("www.example.hk", "default", [("CNAME", "a.cdn.example.net", 10),
                                                      ("CNAME", "b.cdn.example.net", 90),
                                                      ("A", "192.0.2.1", 0)])
    assert values(answer_rrsets(cnames, NAME, "all", 2)) == {"CNAME": {"b.cdn.example.net."}}


def test_segment_falls_back_to_default_and_unknown_zone_is_empty() -> None:
    svcs = services("www.example.hk", "api.example.hk")
    p = plan(1, {("www.example.hk", "default"): [("A", "192.0.2.1", 1)],
                 ("www.example.hk", "cn"): [("A", "192.0.2.9", 1)]})
    cn = desired(p, svcs, "example.hk", "cn")
    other = desired(p, svcs, "example.hk", "hk")
    assert {k[0].to_text() for k in cn} == {"www.example.hk."}  # api: no answers, no records
    assert cn[(NAME, dns.rdatatype.A)].values == ("192.0.2.9",)
    assert other[(NAME, dns.rdatatype.A)].values == ("192.0.2.1",)
    assert desired(p, svcs, "example.org", "default") == {}


def test_managed_ignores_other_names_and_types() -> None:
    rrsets = [dns.rrset.from_text("www.example.hk.", 60, "IN", "A", "192.0.2.1"),
              dns.rrset.from_text("www.example.hk.", 60, "IN", "TXT", "hello"),
              dns.rrset.from_text("other.example.hk.", 60, "IN", "A", "192.0.2.2"),
              dns.rrset.from_text("example.hk.", 60, "IN", "NS", "ns1.example.hk.")]
    found = managed(rrsets, frozenset({NAME}))
    assert list(found) == [(NAME, dns.rdatatype.A)]
    assert found[(NAME, dns.rdatatype.A)] == RecordSet(NAME, dns.rdatatype.A, 60, ("192.0.2.1",))


def test_segment_networks() -> None:
    line = Line("ct", cidrs=netaddr.IPSet(["198.51.100.0/24"]), asns=frozenset({4134}))
    seg = Segment("cn", cidrs=netaddr.IPSet(["198.51.100.0/25", "203.0.113.0/24"]),
                  lines=(line,))
    nets = segment_networks(seg)
    assert nets.networks == ("198.51.100.0/25",)  # cidrs AND line: the intersection
    assert not nets.exact and nets.lost == ("line asns",)
    only_asn = segment_networks(Segment("x", asns=frozenset({4134})))
    assert only_asn.networks == () and only_asn.lost == ("asns",)
    by_region = segment_networks(Segment("r", cidrs=netaddr.IPSet(["192.0.2.0/24"]),
                                         regions=frozenset({"CN-GD"})))
    assert by_region.networks == ("192.0.2.0/24",)
    assert not by_region.exact and by_region.lost == ("regions",)
    assert segment_networks(Segment("y", cidrs=netaddr.IPSet(["192.0.2.0/24"]))).exact


# invariants -------------------------------------------------------------------------------

_names = st.sampled_from(["a", "b", "c"]).map(lambda n: dns.name.from_text(f"{n}.example.hk"))
_rrset = st.builds(
    lambda name, ttl, octets: RecordSet.of(
        name, dns.rdatatype.A, ttl, [f"192.0.2.{o}" for o in octets]),
    _names, st.sampled_from([30, 60]), st.sets(st.integers(1, 5), min_size=1, max_size=3))
_state = st.lists(_rrset, max_size=4).map(lambda rs: {(r.name, r.rdtype): r for r in rs})


def _apply(state: RRsets, changes: tuple) -> RRsets:  # type: ignore[type-arg]
    out = dict(state)
    for c in changes:
        if c.before is not None:
            assert same(out.pop((c.name, c.rdtype)), c.before)  # 'before' is what was there
        if c.after is not None:
            out[(c.name, c.rdtype)] = c.after
    return out


@given(_state, _state)
def test_diff_applied_to_existing_gives_wanted_and_is_minimal(existing: RRsets,
                                                              wanted: RRsets) -> None:
    changes = diff(existing, wanted)
    result = _apply(existing, changes)
    assert set(result) == set(wanted) and all(same(result[k], wanted[k]) for k in wanted)
    assert diff(wanted, wanted) == ()
    differing = {k for k in set(existing) | set(wanted)
                 if k not in existing or k not in wanted or not same(existing[k], wanted[k])}
    assert len(changes) == len(differing)  # one change per differing RRset, no more
    kinds = [c.action for c in changes]
    assert kinds == sorted(kinds, key=lambda a: a != "delete")  # deletes first


# RecordSet against dnspython ----------------------------------------------------------------

_AAAA_TEXTS = ["2001:db8::1", "2001:DB8:0:0:0:0:0:1", "2001:db8:0:1:0:0:0:0", "::1",
               "::ffff:192.0.2.1", "2001:db8:1:2:3:4:5:6", "fe80::"]
_CNAME_TEXTS = ["a.cdn.example.net", "A.CDN.example.net.", "b.cdn.example.net", "x.example.hk"]
_typed = st.one_of(
    st.tuples(st.just(dns.rdatatype.A),
              st.lists(st.sampled_from(["192.0.2.1", "192.0.2.2", "10.0.0.1"]), min_size=1,
                       max_size=3)),
    st.tuples(st.just(dns.rdatatype.AAAA),
              st.lists(st.sampled_from(_AAAA_TEXTS), min_size=1, max_size=3)),
    st.tuples(st.just(dns.rdatatype.CNAME), st.lists(st.sampled_from(_CNAME_TEXTS),
                                                     min_size=1, max_size=1)))
_record_set = st.builds(lambda name, ttl, typed: RecordSet.of(name, typed[0], ttl, typed[1]),
                        _names, st.sampled_from([30, 60]), _typed)


def _dnspython(r: RecordSet, texts: list[str]) -> dns.rrset.RRset:
    return dns.rrset.from_text_list(r.name, r.ttl, "IN", r.rdtype, texts,
                                    origin=dns.name.root, relativize=False)


@given(_record_set, _record_set)
def test_same_agrees_with_dnspython_and_values_round_trip(a: RecordSet, b: RecordSet) -> None:
    """``same`` on canonical text says what dnspython's RRset equality (plus TTL) says, and
    a RecordSet read back from dnspython's RRset is the one it came from. (``same`` is
    asked only about the same key: one owner.)"""
    b = RecordSet(a.name, b.rdtype, b.ttl, b.values)
    ra, rb = _dnspython(a, list(a.values)), _dnspython(b, list(b.values))
    assert same(a, b) == (a.ttl == b.ttl and ra == rb)
    assert RecordSet.from_rrset(ra) == a and a.to_rrset() == ra


@given(_names, st.sampled_from([30, 60]), _typed)
def test_canonical_values_match_dnspython_text(name: dns.name.Name, ttl: int,
                                               typed: tuple[dns.rdatatype.RdataType,
                                                            list[str]]) -> None:
    """Any spelling of the same rdata gives dnspython's presentation text, once."""
    rdtype, texts = typed
    built = RecordSet.of(name, rdtype, ttl, texts)
    parsed = _dnspython(built, texts)
    assert built.values == tuple(sorted({rd.to_text() for rd in parsed}))
