"""The hand-written UPDATE renderer against dnspython, its reference: the same bytes.

``dns_backends.update_wire.render`` writes UPDATE messages without dnspython's renderer (a
benchmark showed it was a third of a 1,000-change write). These tests hold it to dnspython
byte for byte, TSIG included, for random change sets: names in mixed case (compression is
case-insensitive), CNAME targets inside and outside the zone, TSIG key names that share a
suffix with the zone (the TSIG owner is compressed too), every common algorithm; and to the
same size limit (``TooBig`` exactly when dnspython raises it).
"""

from __future__ import annotations

import base64
import time

import dns.exception
import dns.message
import dns.name
import dns.rdatatype
import dns.rrset
import dns.update
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dns_backends.records import AAAA, CNAME, A, Change, RecordSet, diff, name_of
from dns_backends.update_wire import Rendered, Signer, reference_message, render

ALGORITHMS = ["hmac-sha256", "hmac-sha1", "hmac-sha224", "hmac-sha384", "hmac-sha512",
              "hmac-md5.sig-alg.reg.int"]
SECRET = base64.b64encode(bytes(range(32))).decode()


_zone_text = st.sampled_from(["example.hk", "Example.HK", "edge.example.org", "b.c"])
_label = st.sampled_from(["www", "WWW", "api", "h1", "h2", "deep.sub", "Deep.SUB", "x" * 63])
_ttl = st.sampled_from([0, 30, 60, 3600, 2**31 - 1])
_v4 = st.integers(0, 2**32 - 1).map(lambda n: ".".join(str((n >> s) & 255)
                                                          for s in (24, 16, 8, 0)))
_v6 = st.integers(0, 2**128 - 1).map(
    lambda n: ":".join(f"{(n >> s) & 0xFFFF:x}" for s in range(112, -1, -16)))


@st.composite
def _record_set(draw: st.DrawFn, name: dns.name.Name, rdtype: dns.rdatatype.RdataType,
                zone: str) -> RecordSet:
    ttl = draw(_ttl)
    if rdtype == A:
        return RecordSet.of(name, A, ttl, draw(st.lists(_v4, min_size=1, max_size=4)))
    if rdtype == AAAA:
        return RecordSet.of(name, AAAA, ttl, draw(st.lists(_v6, min_size=1, max_size=3)))
    target = draw(st.sampled_from([f"edge.{zone}", f"EDGE.{zone.upper()}", "cdn.example.net",
                                   f"www.{zone}", "a.b.c.d.example.net"]))
    return RecordSet.of(name, CNAME, ttl, [target])


@st.composite
def _changes(draw: st.DrawFn) -> tuple[str, list[Change]]:
    zone = draw(_zone_text)
    keys = draw(st.lists(st.tuples(_label, st.sampled_from([A, AAAA, CNAME])), max_size=12,
                         unique_by=lambda k: (k[0].lower(), k[1])))
    out = []
    for label, rdtype in keys:
        name = name_of(f"{label}.{zone}")
        kind = draw(st.sampled_from(["create", "delete", "update"]))
        before = None if kind == "create" else draw(_record_set(name, rdtype, zone))
        after = None if kind == "delete" else draw(_record_set(name, rdtype, zone))
        out.append(Change(name, rdtype, before, after))
    return zone, out


@st.composite
def _signer(draw: st.DrawFn, zone: str) -> Signer | None:
    if draw(st.booleans()):
        return None
    name = draw(st.sampled_from(["edgesteer", f"es-key.{zone}", f"K.{zone.upper()}"]))
    return Signer.of(name, SECRET, dns.name.from_text(draw(st.sampled_from(ALGORITHMS))))


def _soa(zone: str) -> dns.rrset.RRset:
    return dns.rrset.from_text(f"{zone}.", 3600, "IN", "SOA",
                               f"ns1.{zone}. hostmaster.{zone}. 2026112601 3600 600 604800 60")


def _both(zone: str, changes: list[Change], soa: dns.rrset.RRset | None,
          signer: Signer | None, msg_id: int = 4242) -> tuple[Rendered, bytes]:
    """Ours and dnspython's, signed in the same second (the TSIG time is in the bytes)."""
    origin = dns.name.from_text(zone)
    for _ in range(5):
        t = int(time.time())
        fast = render(origin, changes, soa, signer, msg_id, now=t)
        ref = reference_message(origin, changes, soa, signer, msg_id).to_wire(
            want_shuffle=False)
        if signer is None or int(time.time()) == t:
            return fast, ref
    raise AssertionError("never rendered both within one second")


@settings(max_examples=200, deadline=None)
@given(st.data())
def test_render_is_dnspython_byte_for_byte(data: st.DataObject) -> None:
    zone, changes = data.draw(_changes())
    soa = _soa(zone) if data.draw(st.booleans()) else None
    signer = data.draw(_signer(zone))
    fast, ref = _both(zone, changes, soa, signer)
    assert fast.wire == ref
    assert fast.id == 4242
    # and dnspython reads ours back (the TSIG verifies) as what the changes say
    keyring = None if signer is None else {signer.key.name: signer.key}
    parsed = dns.message.from_wire(fast.wire, keyring=keyring)
    assert isinstance(parsed, dns.update.UpdateMessage)
    assert [(r.name, r.rdtype) for r in parsed.zone] == [(dns.name.from_text(zone),
                                                         dns.rdatatype.SOA)]
    assert _content(parsed.prerequisite) == _expected_prerequisites(changes, soa)
    assert _content(parsed.update) == _expected_updates(changes)
    assert (parsed.mac == fast.mac) if signer is not None else fast.mac == b""


Row = tuple[str, str, str, int, str]


def _content(section: list[dns.rrset.RRset]) -> list[Row]:
    """(owner, type, class or 'delete' class, TTL, rdata or "") per record, in order (an
    UPDATE section is parsed one RRset per record)."""
    return [(r.name.to_text().lower(), dns.rdatatype.to_text(r.rdtype),
             "IN" if r.deleting is None else f"delete {r.deleting.name}", r.ttl, text.lower())
            for r in section for text in ([rd.to_text() for rd in r] or [""])]


def _rows(name: dns.name.Name, rdtype: dns.rdatatype.RdataType, cls: str, ttl: int,
          values: tuple[str, ...]) -> list[Row]:
    """Names compare in lower case: a compressed name takes the case of the first spelling
    in the message (as with dnspython; the bytes are the same)."""
    return [(name.to_text().lower(), dns.rdatatype.to_text(rdtype), cls, ttl, v.lower())
            for v in (values or ("",))]


def _expected_prerequisites(changes: list[Change], soa: dns.rrset.RRset | None) -> list[Row]:
    if soa is not None:
        return _rows(soa.name, dns.rdatatype.SOA, "IN", 0, (soa[0].to_text(),))
    return [row for c in changes for row in (
        _rows(c.name, c.rdtype, "delete NONE", 0, ()) if c.before is None
        else _rows(c.name, c.rdtype, "IN", 0, c.before.values))]


def _expected_updates(changes: list[Change]) -> list[Row]:
    deletes = [row for c in changes if c.before is not None
               for row in _rows(c.name, c.rdtype, "delete ANY", 0, ())]
    return deletes + [row for c in changes if c.after is not None
                      for row in _rows(c.name, c.rdtype, "IN", c.after.ttl, c.after.values)]


def test_a_real_plan_diff_renders_the_same() -> None:
    """1,000 changes as the backend makes them: past 16 kB, where compression offsets stop
    being recorded (0x3FFF), and both renderers must agree on that too."""
    zone = "bench.example"
    names = [name_of(f"h{i}.{zone}") for i in range(1000)]
    old = {(n, A): RecordSet.of(n, A, 60, [f"10.0.{i // 250}.{i % 250 + 1}"])
           for i, n in enumerate(names)}
    new = {(n, A): RecordSet.of(n, A, 60, [f"10.1.{i // 250}.{i % 250 + 1}"])
           for i, n in enumerate(names)}
    new[(names[0], AAAA)] = RecordSet.of(names[0], AAAA, 60, ["2001:db8::1"])
    del new[(names[1], A)]
    changes = list(diff(old, new))
    signer = Signer.of("edgesteer", SECRET, dns.name.from_text("hmac-sha256"))
    fast, ref = _both(zone, changes, _soa(zone), signer)
    assert len(ref) > 0x3FFF and fast.wire == ref
    fast, ref = _both(zone, changes, None, None)
    assert fast.wire == ref


@pytest.mark.parametrize("signed", [False, True])
def test_too_big_exactly_when_dnspython_says_so(signed: bool) -> None:
    """Grow a message one change at a time across the 65,535-byte limit (less the TSIG
    record's room): ours raises TooBig at the same change as dnspython."""
    zone = "example.hk"
    signer = Signer.of("edgesteer", SECRET, dns.name.from_text("hmac-sha512")) \
        if signed else None
    label = "x" * 60
    changes = [Change(name_of(f"{label}.n{i}.{zone}"), A, None,
                      RecordSet.of(name_of(f"{label}.n{i}.{zone}"), A, 60,
                                   [f"10.0.{j}.{i % 250}" for j in range(4)]))
               for i in range(330)]
    origin = dns.name.from_text(zone)

    def ref_too_big(n: int) -> bool:
        try:
            reference_message(origin, changes[:n], None, signer, 7).to_wire(want_shuffle=False)
        except dns.exception.TooBig:
            return True
        return False

    lo, hi = 200, len(changes)  # dnspython: 200 fit, 330 do not (the limit is near 295)
    assert not ref_too_big(lo) and ref_too_big(hi)
    while hi - lo > 1:  # the first count that dnspython refuses
        mid = (lo + hi) // 2
        lo, hi = (lo, mid) if ref_too_big(mid) else (mid, hi)
    fast, ref = _both(zone, changes[:lo], None, signer)
    assert fast.wire == ref and len(ref) <= 65535
    with pytest.raises(dns.exception.TooBig):
        render(origin, changes[:hi], None, signer, 7)


def test_unsupported_type_is_refused_not_rendered_wrongly() -> None:
    name = name_of("www.example.hk")
    txt = RecordSet(name, dns.rdatatype.TXT, 60, ('"hello"',))
    with pytest.raises(ValueError, match="no fast rendering for TXT"):
        render(dns.name.from_text("example.hk"), [Change(name, dns.rdatatype.TXT, None, txt)],
               None, None)
