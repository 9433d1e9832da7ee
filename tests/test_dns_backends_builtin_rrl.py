"""Response rate limiting: token bucket per client prefix, slip, bounded memory."""

from __future__ import annotations

import dns.flags
import dns.message
import dns.rrset
import pytest

from dns_backends.builtin.rrl import RateLimiter, Verdict, truncated


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_burst_then_drop_with_every_second_slipping() -> None:
    clock = Clock()
    rrl = RateLimiter(10, burst=3, slip=2, clock=clock)
    verdicts = [rrl.check("192.0.2.7") for _ in range(9)]
    assert verdicts[:3] == [Verdict.SEND] * 3
    assert verdicts[3:] == [Verdict.DROP, Verdict.SLIP] * 3
    assert (rrl.dropped, rrl.slipped) == (3, 3)
    clock.now += 0.1  # one token back at 10/s
    assert rrl.check("192.0.2.200") == Verdict.DROP  # same /24
    assert rrl.check("192.0.3.1") == Verdict.SEND  # another /24 has its own bucket
    clock.now += 1.0
    assert [rrl.check("192.0.2.7") for _ in range(3)] == [Verdict.SEND] * 3


def test_slip_zero_drops_all_and_slip_one_slips_all() -> None:
    never = RateLimiter(1, slip=0, clock=Clock())
    always = RateLimiter(1, slip=1, clock=Clock())
    assert [never.check("10.0.0.1") for _ in range(4)][1:] == [Verdict.DROP] * 3
    assert [always.check("10.0.0.1") for _ in range(4)][1:] == [Verdict.SLIP] * 3


def test_ipv6_prefixes_and_mapped_addresses() -> None:
    rrl = RateLimiter(1, clock=Clock())
    assert rrl.prefix("2001:db8:1:2a00::1") == rrl.prefix("2001:db8:1:2aff::9")  # same /56
    assert rrl.prefix("2001:db8:1:2b00::1") != rrl.prefix("2001:db8:1:2a00::1")
    assert rrl.prefix("::ffff:192.0.2.9") == rrl.prefix("192.0.2.1")


def test_memory_is_bounded() -> None:
    clock = Clock()
    rrl = RateLimiter(5, max_prefixes=100, clock=clock)
    for i in range(1000):
        rrl.check(f"10.{i // 256}.{i % 256}.1")
        clock.now += 0.001
        assert len(rrl) <= 100


def test_invalid_settings() -> None:
    with pytest.raises(ValueError):
        RateLimiter(0)
    with pytest.raises(ValueError):
        RateLimiter(1, slip=-1)


def test_truncated_keeps_id_and_question_only() -> None:
    q = dns.message.make_query("www.example.hk", "A")
    r = dns.message.make_response(q)
    r.answer.append(dns.rrset.from_text("www.example.hk.", 60, "IN", "A", "192.0.2.1"))
    cut = dns.message.from_wire(truncated(r.to_wire()) or b"")
    assert cut.id == q.id and cut.flags & dns.flags.TC and cut.flags & dns.flags.QR
    assert cut.question == q.question and not cut.answer and cut.edns < 0
    assert truncated(b"\x00") is None
