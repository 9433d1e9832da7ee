"""The wire-level fast path gives byte-for-byte the answers of the dnspython path.

Two servers on the same plan are driven through ``handle`` (the function the UDP and TCP
transports call): one with the fast path, one without. For answers without a weighted
draw the bytes must be equal; for weighted answers the set of possible responses and
their frequencies must be the same.
"""

from __future__ import annotations

import random
from collections import Counter
from collections.abc import Iterator

import dns.edns
import dns.exception
import dns.flags
import dns.message
import dns.name
import dns.rcode
import dns.rdatatype
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dns_backends.builtin import fastpath
from dns_backends.builtin.answers import select
from dns_backends.builtin.cookies import ServerCookies
from dns_backends.builtin.fastpath import Script, enumerate_outcomes, parse
from dns_backends.builtin.server import BuiltinDnsServer
from edge.plan import AnswerSet
from tests import dnsfixtures as fx

BIG = "big.hk"
BIG_NS = tuple(f"ns{i:02d}-a-rather-long-label-for-a-name-server.big.hk" for i in range(12))
MULTI = "multi.example.hk"
ALIAS = "alias.example.hk"
AWAY = "away.example.hk"
ZONES = (fx.zone(), fx.zone(BIG, ns=BIG_NS, ns_addresses={}))
SERVICES = (fx.service(), fx.service(fx.CDN, max_answers=1), fx.service(MULTI, max_answers=2),
            fx.service(ALIAS), fx.service(AWAY))
MATCHER = fx.matcher(fx.segment("ct", "10.1.0.0/16"), fx.segment("v6", "2001:db8:aa::/48"),
                     fx.segment("local", "127.0.0.0/8", "::1/128"))
PLAN = fx.plan(
    fx.answer_set(["192.0.2.1", "2001:db8::1"], ttl=60),
    fx.answer_set(["198.51.100.1"], segment="ct", ttl=30),
    fx.answer_set(["198.51.100.6", "2001:db8::6"], segment="v6", ttl=30),
    fx.answer_set(["203.0.113.1", "2001:db8::7"], segment="local", ttl=20),
    fx.answer_set([fx.answer("192.0.2.30", 3.0), fx.answer("192.0.2.31", 1.0)],
                  service_name=fx.CDN, ttl=10),
    fx.answer_set([fx.answer("192.0.2.40", 4.0), fx.answer("192.0.2.41", 2.0),
                   fx.answer("192.0.2.42", 1.0), fx.answer("192.0.2.43", 0.0)],
                  service_name=MULTI, ttl=10),
    fx.answer_set(["cdn.example.hk"], service_name=ALIAS),
    fx.answer_set(["edge.cdn-provider.net"], service_name=AWAY),
)
WEIGHTED = {fx.CDN, MULTI, ALIAS}
PEERS = ("127.0.0.1", "10.1.2.3", "192.0.2.200", "::1", "2001:db8:aa::5")
# one secret and a stopped clock for both paths: the server cookies are then the same
COOKIES = ServerCookies(b"k" * 16, clock=lambda: 1764150000.0)
CLIENT_COOKIE = b"\x01" * 8
# a server cookie of ours for 127.0.0.1, one for another client, and a foreign 32-byte one
OURS = CLIENT_COOKIE + COOKIES.make(CLIENT_COOKIE, "127.0.0.1")
THEIRS = CLIENT_COOKIE + COOKIES.make(CLIENT_COOKIE, "192.0.2.1")
FOREIGN = CLIENT_COOKIE + b"\xee" * 32


def make(fast: bool, seed: int = 1) -> BuiltinDnsServer:
    srv = BuiltinDnsServer(ZONES, SERVICES, MATCHER, [], rng=random.Random(seed),
                           fast_path=fast, initial_serial=2026112600, cookies=COOKIES)
    srv.apply_now(PLAN)
    return srv


def wire(qname: str, rdtype: str, *, ecs: str | None = None, payload: int | None = 1232,
         do: bool = False, rd: bool = True, cookie: bool | bytes = False,
         qid: int = 0x1234) -> bytes:
    options: list[dns.edns.Option] = []
    if ecs is not None:
        options.append(dns.edns.ECSOption.from_text(ecs))
    if cookie:
        options.append(dns.edns.GenericOption(
            dns.edns.OptionType.COOKIE, CLIENT_COOKIE if cookie is True else cookie))
    if payload is None:
        q = dns.message.make_query(qname, rdtype, use_edns=False)
    else:
        q = dns.message.make_query(qname, rdtype, use_edns=0, payload=payload,
                                   options=options, want_dnssec=do)
    q.id = qid
    if not rd:
        q.flags &= ~dns.flags.RD
    return q.to_wire()


def corpus() -> Iterator[tuple[bytes, str]]:
    names = ["www.example.hk", "WwW.ExAmPle.HK", fx.CDN, MULTI, ALIAS, AWAY, "Alias.Example.hk",
             "example.hk", "EXAMPLE.HK", "ns1.example.hk", "nope.example.hk",
             "x.www.example.hk", "example.com", BIG]
    types = ["A", "AAAA", "CNAME", "ANY", "SOA", "NS", "MX", "TXT", "HTTPS", "AXFR"]
    shapes: list[dict[str, object]] = [
        {}, {"payload": None}, {"payload": 512}, {"payload": 4096}, {"do": True},
        {"rd": False}, {"ecs": "10.1.2.0/24"}, {"ecs": "192.0.2.0/24", "do": True},
        {"ecs": "0.0.0.0/0"}, {"ecs": "2001:db8:aa::/56"}, {"ecs": "10.1.2.0/24", "cookie": True},
        {"cookie": True}, {"ecs": "10.0.0.0/8", "payload": 512},
        {"cookie": OURS, "do": True}, {"cookie": THEIRS, "ecs": "10.1.2.0/24"},
        {"cookie": FOREIGN, "payload": 512}, {"cookie": b"\x02" * 9}]
    for i, name in enumerate(names):
        for j, rdtype in enumerate(types):
            for k, shape in enumerate(shapes):
                peer = PEERS[(i + j + k) % len(PEERS)]
                yield wire(name, rdtype, qid=(i * 1000 + j * 100 + k) & 0xFFFF,
                           **shape), peer  # type: ignore[arg-type]


def test_fast_and_dnspython_paths_give_the_same_bytes() -> None:
    fast, slow, pool = make(True), make(False), make(True, seed=2)
    checked = weighted = 0
    outcomes: dict[tuple[bytes, str, bool], set[bytes | None]] = {}
    for query, peer in corpus():
        for tcp in (False, True, False):  # the third: a repeat, answered from the memo
            before = fast.stats["events"]["fast"]
            got = fast.handle(query, peer, tcp=tcp)
            expected = slow.handle(query, peer, tcp=tcp)
            assert got is not None and expected is not None
            try:
                question = dns.message.from_wire(query).question[0]
            except dns.exception.FormError:  # a malformed cookie: FORMERR from both
                assert got == expected and got[3] & 0x0F == dns.rcode.FORMERR
                continue
            qname = question.name.to_text(omit_final_dot=True)
            rdtype = dns.rdatatype.to_text(question.rdtype)
            if qname.lower() in WEIGHTED and dns.message.from_wire(got).answer:
                weighted += 1
                # every dnspython outcome is one of the fast path's (the frequencies are
                # compared in test_weighted_answers_have_the_same_distribution)
                possible = outcomes.get((query, peer, tcp))
                if possible is None:
                    possible = outcomes[query, peer, tcp] = {
                        pool.handle(query, peer, tcp=tcp) for _ in range(300)}
                assert got in possible and expected in possible, (qname, rdtype, peer)
            else:
                assert got == expected, (query, peer, tcp)
            checked += fast.stats["events"]["fast"] - before
    # most of the corpus went the fast way (AXFR, big answers over UDP... did not)
    assert checked > 5000 and weighted > 100
    assert len(fast._served.memo) > 500  # and repeats came from the memo
    for key in ("rcode", "qtype", "segment"):
        assert fast.stats[key] == slow.stats[key], key
    assert fast.stats["rcode"]["NOERROR"] > 0 and fast.stats["rcode"]["NXDOMAIN"] > 0
    assert fast.stats["events"]["truncated"] > 0  # big.hk NS over UDP went the slow way


@pytest.mark.parametrize("qname", [fx.CDN, MULTI, ALIAS])
def test_weighted_answers_have_the_same_distribution(qname: str) -> None:
    fast, slow = make(True, seed=11), make(False, seed=12)
    query = wire(qname, "A", ecs="10.1.2.0/24")
    rounds = 3000
    got_fast = Counter(fast.handle(query, "127.0.0.1", tcp=False) for _ in range(rounds))
    got_slow = Counter(slow.handle(query, "127.0.0.1", tcp=False) for _ in range(rounds))
    assert set(got_fast) == set(got_slow)
    for reply in got_slow:
        assert abs(got_fast[reply] - got_slow[reply]) / rounds < 0.05, reply
    assert fast.stats["events"]["fast"] == rounds


def test_multi_variants_are_exact() -> None:
    """4 candidates (weights 4, 2, 1 and a drained 0), 2 answers: 6 ordered draws."""
    fast = make(True)
    query = wire(MULTI, "A")
    fast.handle(query, "192.0.2.200", tcp=False)
    parsed = parse(query)
    assert parsed is not None
    variants, _ = fast.fast_cache.lookup(parsed.key, lambda: b"", lambda: "default")
    assert variants is not None
    dist = {tuple(rd.to_text() for rd in dns.message.from_wire(r).answer[0]): p
            for r, p in variants.distribution().items()}
    assert len(dist) == 6 and "192.0.2.43" not in {v for k in dist for v in k}
    assert dist[("192.0.2.40", "192.0.2.41")] == pytest.approx(4 / 7 * 2 / 3)
    assert dist[("192.0.2.42", "192.0.2.40")] == pytest.approx(1 / 7 * 4 / 6)
    assert sum(dist.values()) == pytest.approx(1.0)


def test_a_new_plan_gets_a_new_cache() -> None:
    fast = make(True)
    q = wire("www.example.hk", "A")
    first = fast.handle(q, "192.0.2.200", tcp=False)
    assert len(fast.fast_cache) == 1
    fast.apply_now(fx.plan(fx.answer_set(["192.0.2.99"]), version=2))
    assert len(fast.fast_cache) == 0
    second = fast.handle(q, "192.0.2.200", tcp=False)
    assert first != second and fx.values(dns.message.from_wire(second)) == {"192.0.2.99"}


def test_the_cache_is_bounded() -> None:
    cache = fastpath.FastCache(lambda canonical, seg: (None, False), max_entries=5)
    for i in range(23):
        cache.lookup(b"k%d" % i, lambda: b"", lambda: "default")
        assert len(cache) <= 5


@pytest.mark.parametrize("data", [
    wire("www.example.hk", "A", payload=None)[:-1],  # cut question
    wire("www.example.hk", "A") + b"\x00",  # trailing byte
    dns.message.make_query("www.example.hk", "A", use_edns=1).to_wire(),  # EDNS version 1
    dns.message.make_query("www.example.hk", "A", use_edns=0, options=[
        dns.edns.GenericOption(dns.edns.OptionType.PADDING, b"\x00" * 4)]).to_wire(),
    dns.message.make_query("www.example.hk", "A", use_edns=0, options=[
        dns.edns.ECSOption.from_text("10.0.0.0/8"),
        dns.edns.ECSOption.from_text("10.0.0.0/8")]).to_wire(),  # two ECS options
    b"\x00\x01\x28\x00" + wire("www.example.hk", "A")[4:],  # opcode UPDATE
    b"\x00\x01\x81\x00" + wire("www.example.hk", "A")[4:],  # QR set
    b"\x00\x01\x01\x00\x00\x01\x00\x00\x00\x00\x00\x00\xc0\x0c\x00\x01\x00\x01",  # pointer
    wire("www.example.hk", "A", payload=None)[:-2] + b"\x00\x03",  # class CH
])
def test_parse_leaves_the_unusual_to_dnspython(data: bytes) -> None:
    assert parse(data) is None


def test_parse_reads_the_usual() -> None:
    q = parse(wire("WWW.example.hk", "AAAA", ecs="10.1.2.0/24", do=True, payload=4096,
                   cookie=True))
    assert q is not None and q.edns and q.do and q.payload == 4096
    assert q.key == b"\x03www\x07example\x02hk\x00\x00\x1cE"
    assert q.ecs == b"\x00\x01\x18\x00\x0a\x01\x02"


def test_enumerated_outcomes_match_select() -> None:
    items = [fx.answer(f"192.0.2.{i}", w) for i, w in enumerate([5.0, 3.0, 1.0, 1.0])]
    outcomes = enumerate_outcomes(lambda s: tuple(a.value for a in select(items, 3, s)))
    assert len(outcomes) == 4 * 3 * 2
    assert sum(p for p, _ in outcomes) == pytest.approx(1.0)
    drained = [fx.answer(f"192.0.2.{i}", 0.0) for i in range(3)]
    uniform = enumerate_outcomes(lambda s: tuple(a.value for a in select(drained, 2, s)))
    assert len(uniform) == 6 and all(p == pytest.approx(1 / 6) for p, _ in uniform)
    with pytest.raises(fastpath.TooManyOutcomes):
        enumerate_outcomes(lambda s: select(items, 3, s), limit=10)
    assert isinstance(Script([]), random.Random)


labels = st.text(alphabet="abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_",
                 min_size=1, max_size=12)


@settings(max_examples=300, deadline=None)
@given(st.lists(labels, max_size=3), st.sampled_from(["example.hk", "Example.HK", "big.hk",
                                                      "example.org"]),
       st.sampled_from(["A", "AAAA", "NS", "SOA", "TXT", "CNAME", "ANY", "CAA", "TYPE999"]),
       st.one_of(st.none(), st.tuples(st.integers(0, 0xFFFFFFFF), st.integers(0, 32))),
       st.sampled_from(PEERS), st.booleans(), st.booleans())
def test_random_names_give_the_same_bytes(prefix: list[str], zone_name: str, rdtype: str,
                                          ecs: tuple[int, int] | None, peer: str, do: bool,
                                          tcp: bool) -> None:
    fast, slow = FAST_SLOW
    qname = ".".join([*prefix, zone_name])
    subnet = None
    if ecs is not None:
        address, plen = ecs
        network = address >> (32 - plen) << (32 - plen) if plen else 0
        subnet = f"{dns.ipv4.inet_ntoa(network.to_bytes(4, 'big'))}/{plen}"
    query = wire(qname, rdtype, ecs=subnet, do=do, qid=random.getrandbits(16))
    if fx.CDN in qname.lower() or MULTI in qname.lower() or ALIAS in qname.lower():
        return
    assert fast.handle(query, peer, tcp=tcp) == slow.handle(query, peer, tcp=tcp)


FAST_SLOW = (make(True), make(False))


def test_failover_ttl_from_the_plan_is_served_by_both_paths() -> None:
    """The plan lowers the TTL while failing over; both paths serve exactly that TTL."""
    failing = AnswerSet("www.example.hk", "default", 15, 2,
                        (fx.answer("198.51.100.9"),), failing_over=True)
    for fast in (True, False):
        srv = make(fast)
        srv.apply_now(fx.plan(failing, version=2))
        r = dns.message.from_wire(srv.handle(wire("www.example.hk", "A"), "192.0.2.9",
                                             tcp=False) or b"")
        assert r.answer[0].ttl == 15 and fx.values(r) == {"198.51.100.9"}


def test_memos_are_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(fastpath, "PARSE_CACHE", 50)
    srv = make(True)
    for i in range(300):
        srv.handle(wire(f"n{i}.example.hk", "A"), "192.0.2.9", tcp=False)
        assert len(srv._parsed) <= 50
    assert srv.stats["rcode"]["NXDOMAIN"] == 300


def test_the_reply_memo_is_per_plan_and_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    from dns_backends.builtin import server as server_module

    monkeypatch.setattr(server_module, "MEMO_MAX", 50)
    srv = make(True)
    for i in range(300):  # distinct ECS subnets: distinct queries, all remembered
        srv.handle(wire("www.example.hk", "A", ecs=f"10.{i % 256}.{i // 256}.0/24"),
                   "192.0.2.9", tcp=False)
        assert len(srv._served.memo) <= 50
    q = wire("www.example.hk", "A", ecs="10.1.2.0/24")
    assert fx.values(dns.message.from_wire(srv.handle(q, "192.0.2.9") or b"")) == {
        "198.51.100.1"}
    srv.apply_now(fx.plan(fx.answer_set(["192.0.2.99"], segment="ct"), version=2))
    assert len(srv._served.memo) == 0  # a new plan starts with an empty memo
    assert fx.values(dns.message.from_wire(srv.handle(q, "192.0.2.9") or b"")) == {
        "192.0.2.99"}
    assert fx.values(dns.message.from_wire(srv.handle(q, "192.0.2.9") or b"")) == {
        "192.0.2.99"}  # and the repeat, from the new memo
    assert srv.stats["events"]["fast"] == 303


def test_a_memo_never_serves_a_draw_too_big_for_the_client() -> None:
    """One weighted outcome chases a CNAME into a name server's 30 AAAA glue records (too
    big for 512 bytes), the other is a short CNAME out of the zone: only whole responses
    that fit go out over UDP, and the big draw is truncated by the dnspython path every
    time it comes up."""
    glue = tuple(f"2001:db8::{i:x}" for i in range(1, 31))
    zone = fx.zone(ns=("ns1.example.hk",), ns_addresses={"ns1.example.hk": glue})
    plan = fx.plan(fx.answer_set(["ns1.example.hk", "x.example.net"]))
    srv = BuiltinDnsServer([zone], [fx.service()], MATCHER, [], rng=random.Random(3))
    srv.apply_now(plan)
    query = wire("www.example.hk", "AAAA", payload=512, ecs="10.1.2.0/24")
    sizes, truncated = set(), 0
    for _ in range(200):
        reply = srv.handle(query, "192.0.2.9", tcp=False)
        assert reply is not None and len(reply) <= 512
        sizes.add(len(reply))
        truncated += bool(reply[2] & 0x02)
    assert 20 < truncated < 180 and len(sizes) == 2  # both draws came up
    assert srv.stats["events"]["fast"] > 20  # the small draw went the fast way
    big = srv.handle(query, "192.0.2.9", tcp=True)  # over TCP: every draw whole
    assert big is not None and not big[2] & 0x02
