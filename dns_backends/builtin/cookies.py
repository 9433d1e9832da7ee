"""DNS Cookies (RFC 7873), server side, with server cookies in the RFC 9018 layout.

A query whose OPT record carries a COOKIE option gets the client cookie back with a
server cookie of 16 bytes::

    version (1) = 1 | reserved (3) = 0 | timestamp (4, seconds, serial arithmetic) | hash (8)

``hash`` is a MAC keyed with this server's secret over client cookie | version | reserved |
timestamp | client address (4 or 16 bytes), as RFC 9018 section 4 lays it out.

One deliberate difference: RFC 9018 names SipHash-2-4 as the MAC, so that servers of
different vendors behind one anycast address can check each other's cookies. SipHash is
not in Python's standard library, and only this server ever checks the cookies it hands
out, so the MAC here is BLAKE2b with an 8-byte digest, keyed (``hashlib``): same layout,
same lifetime rules, a MAC no other implementation will validate. A resolver only echoes
server cookies; it never interprets them.

The secret is 16 random bytes made when this module is imported, that is once per
``edgesteer serve`` (the workers are forked after the import, so they share it: a cookie
from one worker is valid at the others), unless ``dns.cookie_secret_file`` gives one: then
every node keyed with it accepts the others' cookies (an anycast address served by
several nodes; BLAKE2b, so edgesteer nodes only). A restart makes every outstanding cookie
invalid, which costs nothing: cookies are never required here, so no query gets
BADCOOKIE. A valid server cookie proves the client saw an earlier answer (its address is
not spoofed); the server uses that to exempt it from response rate limiting.

A malformed COOKIE option (length other than 8 or 16-40) is a FORMERR (RFC 7873 section
5.2.2); dnspython already refuses such options when it parses the query.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import socket
import time
from collections.abc import Callable

COOKIE_CODE = 10
CLIENT = 8
SERVER = 16  # the server cookies made here
VERSION = 1
_PREFIX = bytes((VERSION, 0, 0, 0))
MAX_AGE_S = 3600  # RFC 9018 section 4.3: valid for an hour
MAX_AHEAD_S = 300  # and at most 5 minutes in the future (clock skew between servers)
MADE_MAX = 65536  # cookies remembered for the current second (cleared when full)
PREFIX = b"\x00\x0a\x00\x18"  # a response's COOKIE option: code 10, length 8 + 16


def well_formed(data: bytes) -> bool:
    """RFC 7873 section 5.2.2: a client cookie alone, or with a server cookie of 8-32."""
    return len(data) == CLIENT or 16 <= len(data) <= 40


def address_bytes(peer: str) -> bytes:
    """The client address as the MAC takes it (4 or 16 bytes); b"" when not an address."""
    try:
        return socket.inet_pton(socket.AF_INET6 if ":" in peer else socket.AF_INET, peer)
    except OSError:
        return b""


class ServerCookies:
    """Makes and checks server cookies for one server (see the module docstring)."""

    def __init__(self, secret: bytes | None = None, *,
                 clock: Callable[[], float] = time.time) -> None:
        self._mac = hashlib.blake2b(key=secret if secret is not None else os.urandom(16),
                                    digest_size=8)
        self._clock = clock
        self._made: dict[tuple[bytes, str], tuple[int, bytes]] = {}

    def make(self, client: bytes, peer: str) -> bytes:
        """The 16-byte server cookie for this client cookie and client address, now.

        Made once per second per (client cookie, address): a resolver asking many
        questions in a second gets the same cookie and costs one dict lookup.
        """
        now = int(self._clock())
        key = (client, peer)
        made = self._made.get(key)
        if made is not None and made[0] == now:
            return made[1]
        stamp = (now & 0xFFFFFFFF).to_bytes(4, "big")
        cookie = _PREFIX + stamp + self._hash(client, stamp, peer)
        if len(self._made) >= MADE_MAX:
            self._made.clear()
        self._made[key] = (now, cookie)
        return cookie

    def option(self, data: bytes, peer: str) -> bytes:
        """The COOKIE option of the response (code, length, data) to a query's option data."""
        return PREFIX + data[:CLIENT] + self.make(data[:CLIENT], peer)

    def valid(self, data: bytes, peer: str) -> bool:
        """Whether a query's option data carries a server cookie we made for this client
        and this client cookie within its lifetime."""
        if len(data) != CLIENT + 16 or data[CLIENT:CLIENT + 4] != _PREFIX:
            return False
        stamp = data[CLIENT + 4:CLIENT + 8]
        age = (int(self._clock()) - int.from_bytes(stamp, "big")) & 0xFFFFFFFF
        if age > 0x7FFFFFFF:
            age -= 1 << 32  # serial arithmetic (RFC 1982): a stamp in the future
        if not -MAX_AHEAD_S <= age <= MAX_AGE_S:
            return False
        return hmac.compare_digest(data[CLIENT + 8:], self._hash(data[:CLIENT], stamp, peer))

    def _hash(self, client: bytes, stamp: bytes, peer: str) -> bytes:
        mac = self._mac.copy()
        mac.update(client + _PREFIX + stamp + address_bytes(peer))
        return mac.digest()


DEFAULT = ServerCookies()  # made at import: shared by the workers forked afterwards


def keyed(secret: bytes | None) -> ServerCookies | None:
    """Cookies keyed with ``secret`` (``dns.cookie_secret_file``: shared by the nodes
    behind one anycast address, so each accepts the others' server cookies), or None for
    the server's default, :data:`DEFAULT`."""
    return ServerCookies(secret) if secret is not None else None
