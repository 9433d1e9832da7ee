"""Response rate limiting (RRL) per client prefix, with slip, against UDP amplification.

A spoofed-source flood makes an authoritative server an amplifier aimed at the victim
whose address is forged. RRL (as in BIND and Knot) caps the responses per second sent to
one client prefix (/24 for IPv4, /56 for IPv6 by default, so an attacker cannot dodge it
by varying the last octet). Over the cap, responses are dropped, except every
``slip``-th one, which goes out as a small truncated (TC=1) reply: a real resolver behind
that prefix retries over TCP, which cannot be spoofed, so it still gets its answer.

Only UDP is limited. Memory is bounded: idle prefixes are purged when the table is full.
"""

from __future__ import annotations

import enum
import ipaddress
import time
from collections.abc import Callable

MAX_PREFIXES = 100_000


class Verdict(enum.IntEnum):
    SEND = 0
    DROP = 1
    SLIP = 2


class RateLimiter:
    """Token bucket per client prefix: ``rate`` responses/s, bursts up to ``burst``."""

    def __init__(self, rate: float, *, burst: float | None = None, slip: int = 2,
                 v4_prefix: int = 24, v6_prefix: int = 56,
                 max_prefixes: int = MAX_PREFIXES,
                 clock: Callable[[], float] = time.monotonic) -> None:
        if rate <= 0:
            raise ValueError("RRL rate must be positive")
        if slip < 0:
            raise ValueError("RRL slip must be 0 (never) or more")
        self.rate = rate
        self.burst = burst if burst is not None else rate
        self.slip = slip
        self._v4 = v4_prefix
        self._v6 = v6_prefix
        self._max = max_prefixes
        self._clock = clock
        self._buckets: dict[str, list[float]] = {}  # prefix -> [tokens, last refill, misses]
        self.dropped = 0
        self.slipped = 0

    def __len__(self) -> int:
        return len(self._buckets)

    def prefix(self, peer: str) -> str:
        """The rate-limited prefix of a client address, as text (its table key)."""
        if ":" not in peer:
            if self._v4 == 24:
                return peer.rpartition(".")[0]
            return str(ipaddress.ip_network(f"{peer}/{self._v4}", strict=False))
        address = ipaddress.ip_address(peer)
        if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
            return self.prefix(str(address.ipv4_mapped))
        return str(ipaddress.ip_network(f"{address}/{self._v6}", strict=False))

    def check(self, peer: str) -> Verdict:
        """Whether the response to ``peer`` goes out, is dropped, or slips out truncated."""
        now = self._clock()
        key = self.prefix(peer)
        bucket = self._buckets.get(key)
        if bucket is None:
            if len(self._buckets) >= self._max:
                self._purge(now)
            self._buckets[key] = [self.burst - 1.0, now, 0.0]
            return Verdict.SEND
        tokens = min(self.burst, bucket[0] + (now - bucket[1]) * self.rate)
        bucket[1] = now
        if tokens >= 1.0:
            bucket[0] = tokens - 1.0
            return Verdict.SEND
        bucket[0] = tokens
        bucket[2] += 1
        if self.slip and bucket[2] % self.slip == 0:
            self.slipped += 1
            return Verdict.SLIP
        self.dropped += 1
        return Verdict.DROP

    def _purge(self, now: float) -> None:
        """Forget prefixes whose bucket has refilled (idle); if none, start afresh."""
        full_after = self.burst / self.rate
        idle = [k for k, b in self._buckets.items() if now - b[1] >= full_after]
        for key in idle:
            del self._buckets[key]
        if len(self._buckets) >= self._max:
            self._buckets.clear()


def truncated(reply: bytes) -> bytes | None:
    """The slip form of ``reply``: its header with TC=1 and only the question section."""
    if len(reply) < 12:
        return None
    qdcount = reply[4] << 8 | reply[5]
    end = 12
    if qdcount == 1:
        while end < len(reply) and reply[end] != 0:
            if reply[end] > 63:
                return None
            end += reply[end] + 1
        end += 5  # root label, type, class
        if end > len(reply):
            return None
    elif qdcount != 0:
        return None
    flags = bytes((reply[2] | 0x02, reply[3]))
    return reply[:2] + flags + qdcount.to_bytes(2, "big") + b"\x00" * 6 + reply[12:end]
