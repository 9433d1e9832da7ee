"""What the speakers are told: ExaBGP commands and config, the BIRD include (checked by the
real ``bird -p`` parser), and the ExaBGP bridge relaying over real pipes and sockets."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import threading
from pathlib import Path

from hypothesis import given, settings
from hypothesis import strategies as st

from edge.anycast.base import Session, changed_keys
from edge.anycast.exabgp import exabgp_config
from edge.anycast.exabgp_bridge import relay
from edge.anycast.render import bird_include, exabgp_announce, exabgp_withdraw, symbol
from edge.config.schema import BgpSession
from edge.config.spec import Invalid
from edge.config.values import community, large_community
from edge.plan import Announcement
from tests.conftest import require_binary

CN2 = Session("cn2-gia", BgpSession("127.0.0.1", 65001, 64500, "s",
                                     local_address="127.0.0.11", peer_port=1790,
                                     local_port=1791, hold_time=9, multihop=True,
                                     next_hop_v6="2001:db8:ffff::11"))
NTT = Session("ntt", BgpSession("127.0.0.2", 65003, 64500, "s"))


def ann(prefix: str, session: str, *, prepend: int = 0, med: int | None = None,
        communities: tuple[str, ...] = (), large: tuple[str, ...] = (),
        action: str = "announce") -> Announcement:
    return Announcement(prefix, session, action, med, prepend, communities,  # type: ignore[arg-type]
                        large)


def test_exabgp_commands() -> None:
    a = ann("192.0.2.0/24", "cn2-gia", prepend=2, med=900, communities=("64500:1", "4809:2"),
            large=("64500:7:1",))
    assert exabgp_announce(CN2, a) == (
        "neighbor 127.0.0.1 local-ip 127.0.0.11 announce route 192.0.2.0/24 next-hop self "
        "med 900 as-path [ 64500 64500 64500 ] community [ 64500:1 4809:2 ] "
        "large-community [ 64500:7:1 ]")
    assert exabgp_announce(NTT, ann("192.0.2.0/24", "ntt")) == (
        "neighbor 127.0.0.2 announce route 192.0.2.0/24 next-hop self as-path [ 64500 ]")
    assert exabgp_withdraw(CN2, "2001:db8::/32") == (
        "neighbor 127.0.0.1 local-ip 127.0.0.11 withdraw route 2001:db8::/32 "
        "next-hop 2001:db8:ffff::11")


def test_exabgp_config() -> None:
    text = exabgp_config((CN2, NTT), "127.0.0.11", "/run/x/api.sock")
    assert f"run {sys.executable} -m edge.anycast.exabgp_bridge /run/x/api.sock;" in text
    assert "neighbor 127.0.0.1 {" in text and "connect 1790;" in text
    assert "passive false;" in text and "hold-time 9;" in text
    assert text.count("api { processes [ edgesteer ]; }") == 2


def test_bird_include_parses_with_real_bird(tmp_path: Path) -> None:
    bird = require_binary("bird", "bird2")
    routes = {
        ("192.0.2.0/24", "cn2-gia"): ann("192.0.2.0/24", "cn2-gia", prepend=2, med=5,
                                         communities=("64500:1",), large=("1:2:3",)),
        ("2001:db8::/32", "cn2-gia"): ann("2001:db8::/32", "cn2-gia"),
        ("192.0.2.0/24", "ntt"): ann("192.0.2.0/24", "ntt", action="withdraw"),
    }
    text = bird_include((CN2, NTT), ("192.0.2.0/24", "2001:db8::/32"), routes)
    assert "route 192.0.2.0/24 blackhole;" in text and "route 2001:db8::/32 blackhole;" in text
    assert text.count("bgp_path.prepend(64500);") == 2
    assert "bgp_med = 5;" in text and "bgp_large_community.add((1,2,3));" in text
    assert "local 127.0.0.11 port 1791 as 64500;" in text and "local as 64500;" in text
    assert "next hop address 2001:db8:ffff::11;" in text
    assert "filter es_ntt_out {\n  reject;\n}" in text  # withdrawn everywhere on ntt
    include = tmp_path / "es.conf"
    include.write_text(text)
    main = tmp_path / "bird.conf"
    main.write_text(f'router id 127.0.0.11;\nprotocol device {{ }}\ninclude "{include}";\n')
    res = subprocess.run([bird, "-p", "-c", str(main)], capture_output=True, text=True,
                         timeout=10, check=False)
    assert res.returncode == 0, res.stderr


def test_symbols_unique() -> None:
    taken: set[str] = set()
    assert [symbol(n, taken) for n in ("cn2-gia", "cn2_gia", "a.b")] == [
        "es_cn2_gia", "es_cn2_gia_2", "es_a_b"]


@settings(max_examples=100, deadline=None)
@given(st.dictionaries(st.tuples(st.sampled_from(["192.0.2.0/24", "198.51.100.0/24"]),
                                 st.sampled_from(["cn2", "ntt"])),
                       st.tuples(st.booleans(), st.integers(0, 3)), max_size=4),
       st.dictionaries(st.tuples(st.sampled_from(["192.0.2.0/24", "198.51.100.0/24"]),
                                 st.sampled_from(["cn2", "ntt"])),
                       st.tuples(st.booleans(), st.integers(0, 3)), max_size=4))
def test_changed_keys(a: dict[tuple[str, str], tuple[bool, int]],
                      b: dict[tuple[str, str], tuple[bool, int]]) -> None:
    def routes(d: dict[tuple[str, str], tuple[bool, int]]) -> dict[tuple[str, str],
                                                                    Announcement]:
        return {k: ann(k[0], k[1], prepend=p, action="announce" if on else "withdraw")
                for k, (on, p) in d.items()}
    ra, rb = routes(a), routes(b)
    keys = set(changed_keys(ra, rb))
    for k in set(ra) | set(rb):
        was = ra[k].content() if k in ra and ra[k].action == "announce" else None
        now = rb[k].content() if k in rb and rb[k].action == "announce" else None
        assert (k in keys) == (was != now)


def test_bridge_relays_both_ways() -> None:
    """The relay ExaBGP runs: its stdin/stdout (pipes here) <-> the speaker's socket."""
    ours, theirs = socket.socketpair()
    in_r, in_w = os.pipe()  # what ExaBGP writes to the bridge's stdin (acks)
    out_r, out_w = os.pipe()  # the bridge's stdout, read by ExaBGP (commands)
    t = threading.Thread(target=relay, args=(theirs, in_r, out_w), daemon=True)
    t.start()
    try:
        ours.sendall(b"announce route 192.0.2.0/24 next-hop self\n")
        assert os.read(out_r, 100) == b"announce route 192.0.2.0/24 next-hop self\n"
        os.write(in_w, b"done\n")
        assert ours.recv(100) == b"done\n"
        os.close(in_w)  # ExaBGP went away: the bridge ends
        in_w = -1
        t.join(5)
        assert not t.is_alive()
    finally:
        for fd in (in_r, out_r, out_w, in_w):
            if fd >= 0:
                os.close(fd)
        ours.close()
        theirs.close()


@settings(max_examples=300, deadline=None)
@given(st.text(alphabet="0123456789: x-²١\t", max_size=24) | st.text(max_size=12))
def test_community_parsers_fuzz(text: str) -> None:
    """User-facing config values: either a normal form that parses to itself, or Invalid."""
    for parse, parts, top in ((community, 2, 65535), (large_community, 3, 4294967295)):
        try:
            out = parse(text)
        except Invalid as exc:
            assert "expected a BGP" in exc.message
            continue
        assert parse(out) == out
        nums = [int(p) for p in out.split(":")]
        assert len(nums) == parts and all(0 <= n <= top for n in nums)
