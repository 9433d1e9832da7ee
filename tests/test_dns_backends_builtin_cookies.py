"""DNS Cookies (RFC 7873, server cookies in the RFC 9018 layout) in the built-in server.

Checked on both query paths (fast and dnspython, which must agree byte for byte: see also
tests/test_dns_backends_builtin_fastpath.py), through the per-plan memo of repeated
queries, against response rate limiting, and with ``dig +cookie`` and ``kdig +cookie``
as external clients.
"""

from __future__ import annotations

import random
import re
from collections.abc import AsyncIterator
from pathlib import Path

import dns.edns
import dns.flags
import dns.message
import dns.rcode
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dns_backends.builtin.cookies import ServerCookies, keyed, well_formed
from dns_backends.builtin.rrl import RateLimiter
from dns_backends.builtin.server import BuiltinDnsServer
from edge.config.loader import ConfigInvalid, load_config
from edge.config.schema import Config
from tests import dnsfixtures as fx

NOW = 1764150000.0
CLIENT = bytes(range(1, 9))
MATCHER = fx.matcher(fx.segment("ct", "10.1.0.0/16"), fx.segment("local", "127.0.0.0/8"))
PLAN = fx.plan(fx.answer_set(["192.0.2.1"], ttl=60),
               fx.answer_set(["198.51.100.1"], segment="ct", ttl=30),
               fx.answer_set(["203.0.113.1"], segment="local", ttl=20))


class Clock:
    def __init__(self) -> None:
        self.now = NOW

    def __call__(self) -> float:
        return self.now


def server(fast: bool, cookies: ServerCookies, **kw: object) -> BuiltinDnsServer:
    srv = BuiltinDnsServer([fx.zone()], [fx.service()], MATCHER, [], fast_path=fast,
                           rng=random.Random(1), cookies=cookies, **kw)  # type: ignore[arg-type]
    srv.apply_now(PLAN)
    return srv


def query(cookie: bytes | None, *, ecs: str | None = None, qid: int = 7) -> bytes:
    options: list[dns.edns.Option] = []
    if ecs is not None:
        options.append(dns.edns.ECSOption.from_text(ecs))
    if cookie is not None:
        options.append(dns.edns.GenericOption(dns.edns.OptionType.COOKIE, cookie))
    q = dns.message.make_query("www.example.hk", "A", use_edns=0, options=options)
    q.id = qid
    return q.to_wire()


def cookie_of(reply: bytes) -> bytes | None:
    for option in dns.message.from_wire(reply).options:
        if isinstance(option, dns.edns.CookieOption):
            return option.client + option.server
    return None


# -- the cookies themselves ----------------------------------------------------------------

def test_server_cookie_layout_and_validity() -> None:
    clock = Clock()
    jar = ServerCookies(b"s" * 16, clock=clock)
    made = jar.make(CLIENT, "192.0.2.7")
    assert len(made) == 16 and made[:4] == b"\x01\x00\x00\x00"  # version 1, reserved 0
    assert int.from_bytes(made[4:8], "big") == int(NOW)
    assert jar.valid(CLIENT + made, "192.0.2.7")
    assert not jar.valid(CLIENT + made, "192.0.2.8")  # another client address
    assert not jar.valid(bytes(8) + made, "192.0.2.7")  # another client cookie
    assert not ServerCookies(b"t" * 16, clock=clock).valid(CLIENT + made, "192.0.2.7")
    tampered = made[:-1] + bytes((made[-1] ^ 1,))
    assert not jar.valid(CLIENT + tampered, "192.0.2.7")
    assert not jar.valid(CLIENT + made[:8], "192.0.2.7")  # too short to be ours
    clock.now = NOW + 3600
    assert jar.valid(CLIENT + made, "192.0.2.7")  # an hour old: still valid
    clock.now = NOW + 3601
    assert not jar.valid(CLIENT + made, "192.0.2.7")  # older: not
    clock.now = NOW - 301
    assert not jar.valid(CLIENT + made, "192.0.2.7")  # more than 5 minutes ahead
    v6 = jar.make(CLIENT, "2001:db8::1")
    clock.now = NOW
    assert jar.valid(CLIENT + jar.make(CLIENT, "2001:db8::1"), "2001:db8::1")
    assert v6 != jar.make(CLIENT, "2001:db8::2")


def test_a_new_second_gives_a_new_cookie() -> None:
    clock = Clock()
    jar = ServerCookies(b"s" * 16, clock=clock)
    first = jar.make(CLIENT, "192.0.2.7")
    assert jar.make(CLIENT, "192.0.2.7") is first  # remembered within the second
    clock.now += 1
    second = jar.make(CLIENT, "192.0.2.7")
    assert second != first and int.from_bytes(second[4:8], "big") == int(NOW) + 1


# -- in the server -------------------------------------------------------------------------

@pytest.mark.parametrize("fast", [True, False], ids=["fast", "dnspython"])
def test_client_cookie_is_echoed_with_a_server_cookie(fast: bool) -> None:
    jar = ServerCookies(b"s" * 16, clock=Clock())
    srv = server(fast, jar)
    for wire in (query(CLIENT), query(CLIENT, ecs="10.1.2.0/24")):
        for peer in ("127.0.0.1", "192.0.2.9", "2001:db8::9", "127.0.0.1"):
            reply = srv.handle(wire, peer)
            assert reply is not None
            got = cookie_of(reply)
            assert got is not None and got[:8] == CLIENT and len(got) == 24
            assert jar.valid(got, peer)  # each client gets its own, even from the memo
            # the client sends it back: still answered, with a (valid) cookie again
            again = srv.handle(query(got, ecs="10.1.2.0/24"), peer)
            assert again is not None and jar.valid(cookie_of(again) or b"", peer)
    if fast:
        assert srv.stats["events"]["fast"] == srv.stats["rcode"]["NOERROR"] == 16
        assert len(srv._served.memo) > 0


def test_both_paths_agree_with_cookies_from_the_memo() -> None:
    jar = ServerCookies(b"s" * 16, clock=Clock())
    fast, slow = server(True, jar), server(False, jar)
    wires = [query(CLIENT, ecs="10.1.2.0/24", qid=i) for i in range(3)]
    for wire in wires:
        for peer in ("10.9.9.9", "10.9.9.10"):
            assert fast.handle(wire, peer) == slow.handle(wire, peer)


@pytest.mark.parametrize("fast", [True, False], ids=["fast", "dnspython"])
@pytest.mark.parametrize("size", [0, 1, 7, 9, 15, 41, 60])
def test_malformed_cookie_is_formerr(fast: bool, size: int) -> None:
    srv = server(fast, ServerCookies(b"s" * 16, clock=Clock()))
    reply = srv.handle(query(bytes(size)), "192.0.2.9")
    assert reply is not None and reply[:2] == b"\x00\x07"
    assert dns.message.from_wire(reply).rcode() == dns.rcode.FORMERR


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=48), st.booleans())
def test_any_cookie_bytes_give_formerr_or_an_echo(data: bytes, with_ecs: bool) -> None:
    reply = FUZZ.handle(query(data, ecs="10.1.2.0/24" if with_ecs else None), "10.1.2.3")
    assert reply is not None
    msg = dns.message.from_wire(reply)
    if well_formed(data):
        assert msg.rcode() == dns.rcode.NOERROR and (cookie_of(reply) or b"")[:8] == data[:8]
    else:
        assert msg.rcode() == dns.rcode.FORMERR


FUZZ = server(True, ServerCookies(b"s" * 16, clock=Clock()))


def test_a_valid_server_cookie_passes_the_rate_limit() -> None:
    jar = ServerCookies(b"s" * 16, clock=Clock())
    srv = server(True, jar, rrl=RateLimiter(1.0, burst=1.0, slip=0))
    peer = "192.0.2.50"
    first = srv.handle_udp(query(CLIENT), peer)
    assert first is not None
    good = cookie_of(first)
    assert good is not None
    plain = [srv.handle_udp(query(None), peer) for _ in range(20)]
    assert plain.count(None) >= 18  # over the limit: dropped (slip 0)
    forged = CLIENT + jar.make(CLIENT, "192.0.2.51")  # a cookie made for someone else
    assert all(srv.handle_udp(query(forged), peer) is None for _ in range(10))
    with_cookie = [srv.handle_udp(query(good), peer) for _ in range(20)]
    assert all(r is not None for r in with_cookie)  # proven source: never limited


# -- external clients ----------------------------------------------------------------------

@pytest.fixture(params=[False, True], ids=["transport", "recvmmsg"])
async def port(request: pytest.FixtureRequest) -> AsyncIterator[int]:
    async with fx.serving([fx.zone()], MATCHER, PLAN, udp_batch=request.param) as bound:
        yield bound




async def test_dig_cookie(port: int) -> None:
    out = await fx.dns_tool("dig", port, "+cookie", "www.example.hk", "A", "+subnet=10.1.2.0/24")
    assert "status: NOERROR" in out and "198.51.100.1" in out
    found = re.search(r"COOKIE: ([0-9a-f]{16})([0-9a-f]{32}) \(good\)", out)
    assert found, out  # dig checks that its client cookie came back
    server_cookie = found.group(2)
    assert server_cookie.startswith("01000000")  # RFC 9018 version 1
    # dig sends the server cookie back; still answered, with a fresh one
    again = await fx.dns_tool("dig", port, f"+cookie={found.group(1)}{server_cookie}",
                      "www.example.hk", "A")
    assert "status: NOERROR" in again and re.search(r"COOKIE: [0-9a-f]{48} \(good\)", again)
    tcp = await fx.dns_tool("dig", port, "+tcp", "+cookie", "example.hk", "SOA")
    assert "status: NOERROR" in tcp and re.search(r"COOKIE: [0-9a-f]{48} \(good\)", tcp)


async def test_kdig_cookie(port: int) -> None:
    out = await fx.dns_tool("kdig", port, "+cookie", "www.example.hk", "A")
    assert "status: NOERROR" in out and "203.0.113.1" in out
    found = re.search(r"COOKIE: ([0-9A-F]{16})([0-9A-F]{32})", out)
    assert found, out
    assert found.group(2).startswith("01000000")
    again = await fx.dns_tool("kdig", port, f"+cookie={found.group(1)}{found.group(2)}",
                      "www.example.hk", "A", "+subnet=10.1.2.0/24")
    assert "status: NOERROR" in again and "198.51.100.1" in again
    assert re.search(rf"COOKIE: {found.group(1)}01000000[0-9A-F]{{24}}", again), again


# -- one secret for the nodes behind an anycast address (dns.cookie_secret_file) -----------

ANYCAST_CONFIG = """\
version: 1
node: {name: hk-1, site: hk}
sites: [{name: hk}]
links: [{name: cn2, priority: 1, answers: {v4: [203.0.113.10]}}]
zones: [{name: example.hk, ns: [ns1.example.hk]}]
services:
  - name: www.example.hk
    pools: [{name: main, endpoints: [{link: cn2}]}]
dns: {cookie_secret_file: cookie.key}
"""


def anycast_config(tmp_path: Path, secret: str, mode: int = 0o600) -> Config:
    (tmp_path / "cookie.key").write_text(secret + "\n")
    (tmp_path / "cookie.key").chmod(mode)
    (tmp_path / "edge.yaml").write_text(ANYCAST_CONFIG)
    return load_config(tmp_path / "edge.yaml")


def test_nodes_sharing_the_secret_accept_each_others_cookies(tmp_path: Path) -> None:
    """A client answered by node A comes back through node B (anycast): B knows the cookie
    A gave it, so the proven source passes B's rate limit; without the shared secret it
    would not (the control)."""
    config = anycast_config(tmp_path, "ab" * 32)
    assert config.dns.cookie_secret == bytes.fromhex("ab" * 32) and not config.warnings
    jar_a, jar_b = keyed(config.dns.cookie_secret), keyed(config.dns.cookie_secret)
    assert jar_a is not None and jar_b is not None and jar_a is not jar_b  # two processes
    node_a = server(True, jar_a)
    node_b = server(True, jar_b, rrl=RateLimiter(1.0, burst=1.0, slip=0))
    stranger = server(True, ServerCookies(), rrl=RateLimiter(1.0, burst=1.0, slip=0))
    peer = "192.0.2.60"
    first = node_a.handle_udp(query(CLIENT), peer)
    assert first is not None
    cookie = cookie_of(first)
    assert cookie is not None
    assert all(node_b.handle_udp(query(cookie), peer) is not None for _ in range(20))
    limited = [stranger.handle_udp(query(cookie), peer) for _ in range(20)]
    assert limited.count(None) >= 18


@pytest.mark.parametrize(("secret", "message"), [
    ("abc", "does not hold a cookie secret: expected 32 to 128 hex digits"),
    ("zz" * 16, "does not hold a cookie secret"),
    ("ab" * 65, "does not hold a cookie secret"),
])
def test_a_bad_cookie_secret_is_refused_naming_the_file(tmp_path: Path, secret: str,
                                                        message: str) -> None:
    with pytest.raises(ConfigInvalid) as err:
        anycast_config(tmp_path, secret)
    text = str(err.value)
    assert "dns.cookie_secret_file" in text and message in text and "cookie.key" in text, text


def test_a_missing_or_readable_secret_file(tmp_path: Path) -> None:
    (tmp_path / "edge.yaml").write_text(ANYCAST_CONFIG)
    with pytest.raises(ConfigInvalid) as err:
        load_config(tmp_path / "edge.yaml")
    assert "cannot read the cookie secret" in str(err.value), str(err.value)
    config = anycast_config(tmp_path, "cd" * 16, mode=0o644)
    [warning] = config.warnings
    assert "can be read by other users" in str(warning) and "chmod 600" in str(warning)
