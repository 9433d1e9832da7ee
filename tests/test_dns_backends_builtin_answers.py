"""AnswerTable: what each (name, type, segment) resolves to, and the weighted ``select``."""

from __future__ import annotations

import random
from collections import Counter
from dataclasses import dataclass

import dns.name
import dns.rcode
import dns.rdatatype
import pytest
from hypothesis import given
from hypothesis import strategies as st

from dns_backends.builtin.answers import AnswerTable, Resolution, select
from edge.config.schema import Service
from edge.plan import AnswerSet, WeightedAnswer
from tests import dnsfixtures as fx

RNG = random.Random(7)
N = dns.name.from_text


def resolve(table: AnswerTable, qname: str, rdtype: str = "A",
            segment: str = "default") -> Resolution:
    return table.resolve(N(qname), dns.rdatatype.from_text(rdtype), lambda: segment, RNG)


def texts(res: Resolution) -> set[str]:
    return {rd.to_text() for rrset in res.answer for rd in rrset}


def table(*sets: AnswerSet, services: tuple[Service, ...] | None = None,
          serial: int = 100) -> AnswerTable:
    svcs = services if services is not None else (fx.service(),)
    return AnswerTable.build([fx.zone()], svcs, fx.plan(*sets), serial)


# -- select ------------------------------------------------------------------------------

@dataclass(frozen=True)
class Item:
    key: int
    weight: float


items = st.lists(st.floats(min_value=0, max_value=1000, allow_nan=False), max_size=20).map(
    lambda ws: [Item(i, w) for i, w in enumerate(ws)])


@given(items, st.integers(min_value=0, max_value=20), st.integers())
def test_select_invariants(answers: list[Item], max_answers: int, seed: int) -> None:
    chosen = select(answers, max_answers, random.Random(seed))
    keys = [c.key for c in chosen]
    assert len(chosen) <= max_answers
    assert len(set(keys)) == len(keys)  # without replacement
    assert all(c in answers for c in chosen)
    positive = [a for a in answers if a.weight > 0]
    if positive:
        assert all(c.weight > 0 for c in chosen)
        assert len(chosen) == min(max_answers, len(positive))
    else:
        assert len(chosen) == min(max_answers, len(answers))


def test_select_honours_weights() -> None:
    rng = random.Random(1)
    heavy, light = Item(0, 3.0), Item(1, 1.0)
    firsts = Counter(select([heavy, light], 1, rng)[0].key for _ in range(4000))
    assert 2.5 < firsts[0] / firsts[1] < 3.6


# -- AnswerTable --------------------------------------------------------------------------

def test_a_and_aaaa_answers_with_ttl_and_max_answers() -> None:
    t = table(fx.answer_set(["192.0.2.1", "192.0.2.2", "192.0.2.3", "2001:db8::1"], ttl=42))
    res = resolve(t, "www.example.hk", "A")
    assert res.rcode == dns.rcode.NOERROR and res.authoritative
    assert len(texts(res)) == 2  # the service's max_answers
    assert texts(res) <= {"192.0.2.1", "192.0.2.2", "192.0.2.3"}
    assert res.answer[0].ttl == 42
    assert res.segment == "default"
    assert texts(resolve(t, "WWW.Example.HK.", "AAAA")) == {"2001:db8::1"}


def test_answer_set_max_answers_overrides_the_service() -> None:
    t = table(fx.answer_set(["192.0.2.1", "192.0.2.2", "192.0.2.3"], max_answers=3))
    assert len(texts(resolve(t, "www.example.hk"))) == 3


def test_segment_falls_back_to_default_and_uses_its_own_set() -> None:
    t = table(fx.answer_set(["192.0.2.1"]),
              fx.answer_set(["198.51.100.1"], segment="ct"))
    assert texts(resolve(t, "www.example.hk", segment="ct")) == {"198.51.100.1"}
    assert texts(resolve(t, "www.example.hk", segment="other")) == {"192.0.2.1"}


def test_segment_is_not_computed_for_static_names() -> None:
    t = table(fx.answer_set(["192.0.2.1"]))

    def boom() -> str:
        raise AssertionError("segment asked for an apex query")

    res = t.resolve(N("example.hk"), dns.rdatatype.SOA, boom, RNG)
    assert res.rcode == dns.rcode.NOERROR and res.segment is None


def test_apex_soa_ns_and_glue() -> None:
    t = table(fx.answer_set(["192.0.2.1"]), serial=12345)
    soa = resolve(t, "example.hk", "SOA")
    assert soa.answer[0][0].serial == 12345 and soa.answer[0].ttl == 3600
    ns = resolve(t, "example.hk", "NS")
    assert texts(ns) == {"ns1.example.hk.", "ns2.example.hk."}
    glue = {(r.name.to_text(), dns.rdatatype.to_text(r.rdtype)): {rd.to_text() for rd in r}
            for r in ns.additional}
    assert glue == {("ns1.example.hk.", "A"): {"127.0.0.1"},
                    ("ns1.example.hk.", "AAAA"): {"::1"}}
    assert texts(resolve(t, "ns1.example.hk", "A")) == {"127.0.0.1"}


def test_nxdomain_nodata_and_empty_non_terminal() -> None:
    deep = fx.service("a.b.example.hk")
    t = table(fx.answer_set(["192.0.2.1"]), fx.answer_set(["192.0.2.9"], service_name=deep.name),
              services=(fx.service(), deep))
    nx = resolve(t, "nope.example.hk")
    assert nx.rcode == dns.rcode.NXDOMAIN and not nx.answer
    assert nx.authority[0].rdtype == dns.rdatatype.SOA
    assert nx.authority[0].ttl == 60  # min(SOA minimum 60, SOA TTL 3600)
    nodata = resolve(t, "www.example.hk", "MX")
    assert nodata.rcode == dns.rcode.NOERROR and not nodata.answer and nodata.authority
    no_v6 = resolve(t, "www.example.hk", "AAAA")
    assert no_v6.rcode == dns.rcode.NOERROR and not no_v6.answer and no_v6.segment == "default"
    ent = resolve(t, "b.example.hk")
    assert ent.rcode == dns.rcode.NOERROR and not ent.answer
    assert resolve(t, "x.www.example.hk").rcode == dns.rcode.NXDOMAIN


def test_outside_zones_and_transfers_are_refused() -> None:
    t = table(fx.answer_set(["192.0.2.1"]))
    for qname, rdtype in [("example.com", "A"), ("hk", "NS"), ("example.hk", "AXFR"),
                          ("example.hk", "IXFR")]:
        res = resolve(t, qname, rdtype)
        assert res.rcode == dns.rcode.REFUSED and not res.authoritative


def test_cname_set_answers_every_address_type_and_chases_only_in_zone() -> None:
    cdn = fx.service(fx.CDN)
    t = table(fx.answer_set(["cdn.example.hk", "edge.cdn-provider.net"]),
              fx.answer_set(["192.0.2.50"], service_name=fx.CDN),
              services=(fx.service(), cdn))
    seen = set()
    for _ in range(50):
        res = resolve(t, "www.example.hk", "A")
        assert res.answer[0].rdtype == dns.rdatatype.CNAME and len(res.answer[0]) == 1
        target = res.answer[0][0].target.to_text()
        seen.add(target)
        if target == "cdn.example.hk.":
            assert texts(res) == {"cdn.example.hk.", "192.0.2.50"}  # chased in the zone
        else:
            assert len(res.answer) == 1  # never chased outside
    assert seen == {"cdn.example.hk.", "edge.cdn-provider.net."}
    for rdtype in ("AAAA", "CNAME", "ANY"):
        res = resolve(t, "www.example.hk", rdtype)
        assert res.answer[0].rdtype == dns.rdatatype.CNAME
    only = resolve(t, "www.example.hk", "CNAME")
    assert len(only.answer) == 1


def test_mixed_set_serves_positive_side_and_notes_it() -> None:
    t = table(fx.answer_set([fx.answer("192.0.2.1", 0.0), fx.answer("cdn.example.net", 5.0)]))
    assert resolve(t, "www.example.hk").answer[0].rdtype == dns.rdatatype.CNAME
    assert any("mixes CNAME" in n for n in t.notes)


def test_zero_weights_are_served_only_when_nothing_else() -> None:
    t = table(fx.answer_set([fx.answer("192.0.2.1", 0.0), fx.answer("192.0.2.2", 1.0)]))
    for _ in range(30):
        assert texts(resolve(t, "www.example.hk")) == {"192.0.2.2"}
    drained = table(fx.answer_set([fx.answer("192.0.2.1", 0.0)]))
    assert texts(resolve(drained, "www.example.hk")) == {"192.0.2.1"}


def test_duplicate_values_merge() -> None:
    t = table(fx.answer_set([fx.answer("192.0.2.1", 1.0, link="a"),
                             fx.answer("192.0.2.1", 2.0, link="b")]))
    cands = t.steered_answers(N("www.example.hk"), "default")
    assert cands is not None
    (only,) = cands.by_type[dns.rdatatype.A]
    assert only.weight == 3.0


def test_any_is_one_rrset() -> None:
    t = table(fx.answer_set(["192.0.2.1", "2001:db8::1"]))
    res = resolve(t, "www.example.hk", "ANY")
    assert [r.rdtype for r in res.answer] == [dns.rdatatype.A]
    apex = resolve(t, "example.hk", "ANY")
    assert [r.rdtype for r in apex.answer] == [dns.rdatatype.SOA]


def test_empty_table_servfails_steered_names_but_serves_the_apex() -> None:
    t = AnswerTable.empty([fx.zone()], [fx.service()], serial=9)
    res = resolve(t, "www.example.hk")
    assert res.rcode == dns.rcode.SERVFAIL and not res.authoritative
    assert resolve(t, "example.hk", "SOA").answer[0][0].serial == 9
    assert resolve(t, "nope.example.hk").rcode == dns.rcode.NXDOMAIN
    assert t.plan is None


def test_service_without_any_set_servfails_and_is_noted() -> None:
    other = fx.service("api.example.hk")
    t = table(fx.answer_set(["192.0.2.1"]), services=(fx.service(), other))
    assert resolve(t, "api.example.hk").rcode == dns.rcode.SERVFAIL
    assert any("api.example.hk has no default" in n for n in t.notes)


def test_unknown_services_in_the_plan_are_noted() -> None:
    t = table(fx.answer_set(["192.0.2.1"]), fx.answer_set(["192.0.2.2"], service_name="x.y"))
    assert any("unknown service x.y" in n for n in t.notes)


@pytest.mark.parametrize("bad", [
    fx.answer_set([WeightedAnswer("A", "2001:db8::1", 1.0, "l", "p", 1)]),
    fx.answer_set([WeightedAnswer("AAAA", "192.0.2.300", 1.0, "l", "p", 1)]),
])
def test_invalid_values_raise_value_error_naming_the_service(bad: AnswerSet) -> None:
    with pytest.raises(ValueError, match=r"service www\.example\.hk segment default"):
        table(bad)


def test_cname_at_apex_and_services_outside_zones_are_rejected() -> None:
    apex = fx.service("example.hk")
    with pytest.raises(ValueError, match="apex"):
        table(fx.answer_set(["cdn.example.net"], service_name="example.hk"), services=(apex,))
    with pytest.raises(ValueError, match="not inside a served zone"):
        table(services=(fx.service("www.example.com", "example.com"),))


def test_static_data_wins_at_a_steered_apex() -> None:
    apex = fx.service("example.hk")
    t = table(fx.answer_set(["192.0.2.1"], service_name="example.hk"), services=(apex,))
    assert resolve(t, "example.hk", "SOA").answer[0].rdtype == dns.rdatatype.SOA
    assert texts(resolve(t, "example.hk", "A")) == {"192.0.2.1"}
