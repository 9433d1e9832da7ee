"""The wire-level fast path: answer common queries from prebuilt responses, patching bytes.

A dnspython round trip (``from_wire`` + ``to_wire``) costs 100+ us per query; reading
the header, question and OPT record at their offsets and copying a prebuilt response
costs a few. The responses themselves are built by the dnspython path (the server's
``render`` callback) from a canonical query, so both paths give the same bytes:

* canonical query: ID 0, no flags, the question name in lower case, and either no EDNS
  or an OPT record (payload 1232, version 0, no flags, no options);
* per query the fast path then patches the ID, the RD bit, the question name (the client's
  case; every other name in the response is compressed against it or is lower case
  already), the DO bit, and appends the ECS option with its scope, then the COOKIE option
  (client cookie + a fresh server cookie, ``cookies``) when the query had one.

A query's whole response, but for the ID and the server cookie, depends only on its bytes
after the ID when its segment comes from its ECS option (or the answer depends on no
segment): ``Variants.bodies`` then gives every possible response minus the ID once (up to
the client cookie), and the server keeps them per plan keyed on the query's bytes after
the ID, so a repeated query costs one dict lookup, a weighted pick and a concatenation.

Weighted answers: every possible outcome of the weighted draw (``answers.select``, also
through CNAME chains) is enumerated once with its probability (``Script``), rendered, and
the fast path picks one response by weight: the same distribution as drawing per query.

Anything the parser does not recognise exactly (other opcodes, EDNS versions, options
other than ECS and COOKIE, bad ECS, a malformed or second COOKIE, trailing bytes,
compression in the question, a response too big for the client's payload) returns None
and goes to the dnspython path.

Compiled entries live in a ``FastCache`` that belongs to one ``AnswerTable``: a plan
swap replaces table and cache together. The cache is bounded (entries and prebuilt
responses); when full it is cleared and refills from the traffic.
"""

from __future__ import annotations

import random
from bisect import bisect_right
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

MAX_VARIANTS = 1024  # outcomes of one weighted draw; more and the key stays on the slow path
MAX_ENTRIES = 20000
MAX_RESPONSES = 200_000
OUR_PAYLOAD = 1232
NO_EDNS_PAYLOAD = 512
TCP_MAX = 65535
ECS_CODE = 8
COOKIE_CODE = 10
# OPT record of the canonical query: root name, type 41, class = payload, ttl 0, rdlen 0
_OPT_TAIL = b"\x00\x00\x29" + OUR_PAYLOAD.to_bytes(2, "big") + b"\x00" * 6

T = TypeVar("T")
_UNSEEN: Any = object()


class TooManyOutcomes(Exception):
    """A draw has more outcomes than ``MAX_VARIANTS``: not worth prebuilding."""


class Script(random.Random):
    """A stand-in RNG that follows a given path of choices and records the alternatives.

    ``answers.select`` only calls ``choices`` (one weighted pick) and ``sample`` (uniform,
    without replacement); both become decision points here. ``probability`` is the chance
    of the path taken. ``enumerate_outcomes`` walks every path.
    """

    def __init__(self, path: list[int]) -> None:
        super().__init__(0)
        self.path = path
        self.arity: list[int] = []
        self.probability = 1.0

    def _decide(self, probs: Sequence[float]) -> int:
        pos = len(self.arity)
        if pos == len(self.path):
            self.path.append(0)
        index = self.path[pos]
        self.arity.append(len(probs))
        self.probability *= probs[index]
        return index

    def choices(self, population: Sequence[T],  # type: ignore[override]
                weights: Sequence[float] | None = None, *,
                cum_weights: Sequence[float] | None = None, k: int = 1) -> list[T]:
        if cum_weights is not None or k != 1:
            raise NotImplementedError("Script supports one weighted pick at a time")
        ws = list(weights) if weights is not None else [1.0] * len(population)
        total = sum(ws)
        return [population[self._decide([w / total for w in ws])]]

    def sample(self, population: Sequence[T], k: int, *, counts: Any = None) -> list[T]:
        pool = list(population)
        out: list[T] = []
        for _ in range(k):
            out.append(pool.pop(self._decide([1.0 / len(pool)] * len(pool))))
        return out


def enumerate_outcomes(run: Callable[[Script], T],
                       limit: int = MAX_VARIANTS) -> list[tuple[float, T]]:
    """Every outcome of ``run`` over all choice paths, with its probability (odometer walk)."""
    out: list[tuple[float, T]] = []
    path: list[int] = []
    while True:
        script = Script(path)
        result = run(script)
        out.append((script.probability, result))
        if len(out) > limit:
            raise TooManyOutcomes(f"more than {limit} outcomes")
        arity = script.arity
        del path[len(arity):]
        while path and path[-1] + 1 >= arity[len(path) - 1]:
            path.pop()
        if not path:
            return out
        path[-1] += 1


@dataclass(frozen=True, slots=True)
class Info:
    """What the counters need to know about one answer."""

    rcode: str
    qtype: str
    segment: str | None


@dataclass(frozen=True, slots=True, eq=False)
class Variants:
    """The prebuilt responses of one key (and segment), with cumulative weights.

    ``parts`` splits each response for ``answer``: the header after the ID (with RD
    clear, with RD set), the bytes after the question, and those with DO set.
    """

    replies: tuple[bytes, ...]
    cum: tuple[float, ...]
    info: Info
    parts: tuple[tuple[tuple[bytes, bytes], bytes, bytes], ...]

    def pick(self, rng: random.Random) -> bytes:
        if len(self.replies) == 1:
            return self.replies[0]
        return self.replies[bisect_right(self.cum, rng.random() * self.cum[-1])]

    def answer(self, rng: random.Random, wire: bytes, query: Query, ecs_scope: int,
               cookie: bytes = b"") -> bytes:
        """A response drawn by weight and patched for ``wire``: ID, RD, question case, DO,
        the ECS option with ``ecs_scope``, then ``cookie`` (a whole COOKIE option)."""
        index = 0 if len(self.parts) == 1 else bisect_right(self.cum,
                                                            rng.random() * self.cum[-1])
        return wire[:2] + self._body(index, wire, query, ecs_scope, cookie)

    def bodies(self, wire: bytes, query: Query, ecs_scope: int, cookie: bytes = b"",
               pending: int = 0) -> tuple[bytes, ...]:
        """Every response to ``wire`` but for its ID, in the order of ``cum``, each ending
        with ``cookie``; the OPT length counts ``pending`` bytes more, which the server
        appends per query (the server cookie)."""
        return tuple(self._body(i, wire, query, ecs_scope, cookie, pending)
                     for i in range(len(self.parts)))

    def _body(self, index: int, wire: bytes, query: Query, ecs_scope: int,
              cookie: bytes, pending: int = 0) -> bytes:
        header, tail, tail_do = self.parts[index]
        if query.do:
            tail = tail_do
        ecs = query.ecs
        if ecs is not None or cookie:
            option = cookie if ecs is None else (
                b"\x00\x08" + len(ecs).to_bytes(2, "big") + ecs[:3] + bytes((ecs_scope,))
                + ecs[4:] + cookie)
            tail = tail[:-2] + (len(option) + pending).to_bytes(2, "big") + option
        return header[wire[2] & 1] + wire[12:query.qend + 4] + tail

    @classmethod
    def build(cls, outcomes: Sequence[tuple[float, bytes]], info: Info, qend: int,
              edns: bool) -> Variants:
        merged: dict[bytes, float] = {}
        for probability, reply in outcomes:
            merged[reply] = merged.get(reply, 0.0) + probability
        replies = tuple(merged)
        cum: list[float] = []
        total = 0.0
        for reply in replies:
            total += merged[reply]
            cum.append(total)
        parts = []
        for reply in replies:
            rd = bytes((reply[2] | 0x01,))
            tail = reply[qend + 4:]
            tail_do = (tail[:-4] + bytes((tail[-4] | 0x80,)) + tail[-3:]) if edns else tail
            parts.append(((reply[2:12], rd + reply[3:12]), tail, tail_do))
        return cls(replies, tuple(cum), info, tuple(parts))

    def distribution(self) -> dict[bytes, float]:
        """Response bytes -> probability (for tests and explain)."""
        out, prev = {}, 0.0
        for reply, c in zip(self.replies, self.cum, strict=True):
            out[reply] = (c - prev) / self.cum[-1]
            prev = c
        return out


@dataclass(slots=True)
class Entry:
    """One (qname, qtype, EDNS or not): either the same for all clients, or per segment."""

    static: Variants | None
    by_segment: dict[str, Variants] = field(default_factory=dict)


# A compiler builds the Variants for (canonical query wire, segment function); it returns
# None when the query cannot be prebuilt, and reports whether the segment was asked for.
Compiler = Callable[[bytes, Callable[[], str]], "tuple[Variants | None, bool]"]


class FastCache:
    """Prebuilt responses for one answer table. Bounded; cleared when full.

    ``entries`` maps a query key to its ``Entry`` (None: this key stays on the slow path).
    The server reads it directly on the hot path and calls ``compile`` on a miss.
    """

    def __init__(self, compiler: Compiler, *, max_entries: int = MAX_ENTRIES,
                 max_responses: int = MAX_RESPONSES) -> None:
        self._compile = compiler
        self.entries: dict[bytes, Entry | None] = {}
        self._max_entries = max_entries
        self._max_responses = max_responses
        self.responses = 0
        self.compiles = 0

    def __len__(self) -> int:
        return len(self.entries)

    def compile(self, key: bytes, canonical: bytes,
                segment_of: Callable[[], str]) -> tuple[Variants | None, bool]:
        """Build the entry for ``key``; (variants for this client, depends on segment)."""
        asked: list[str] = []

        def recorded() -> str:
            if not asked:
                asked.append(segment_of())
            return asked[0]

        variants, depends = self._compile(canonical, recorded)
        self._room(len(variants.replies) if variants is not None else 0)
        if variants is None:
            self.entries[key] = None
        elif depends:
            self.entries[key] = Entry(None, {asked[0]: variants})
        else:
            self.entries[key] = Entry(variants)
        return variants, depends

    def compile_segment(self, entry: Entry, canonical: bytes, segment: str) -> Variants | None:
        """Add ``segment``'s variants to a per-segment entry."""
        variants, _ = self._compile(canonical, lambda: segment)
        if variants is not None:
            self._room(len(variants.replies))
            entry.by_segment[segment] = variants
        return variants

    def lookup(self, key: bytes, canonical: Callable[[], bytes],
               segment_of: Callable[[], str]) -> tuple[Variants | None, bool]:
        """The variants for ``key`` and this client, compiling on a miss (the generic form
        of what the server inlines)."""
        if key not in self.entries:
            return self.compile(key, canonical(), segment_of)
        entry = self.entries[key]
        if entry is None:
            return None, False
        if entry.static is not None:
            return entry.static, False
        segment = segment_of()
        found = entry.by_segment.get(segment)
        if found is None:
            found = self.compile_segment(entry, canonical(), segment)
        return found, True

    def _room(self, responses: int) -> None:
        self.compiles += 1
        if (len(self.entries) >= self._max_entries
                or self.responses + responses > self._max_responses):
            self.entries.clear()
            self.responses = 0
        self.responses += responses


class Query:
    """The parts of a recognised query the fast path needs (offsets into the wire).

    A plain slotted class, not a dataclass: it is built once per query on the hot path.
    """

    __slots__ = ("client", "cookie", "do", "ecs", "edns", "key", "limit", "payload", "qend")

    def __init__(self, qend: int, key: bytes, edns: bool, do: bool, payload: int,
                 ecs: bytes | None, cookie: bytes | None = None) -> None:
        self.qend = qend  # offset just past the question name
        self.key = key  # lower-case qname + qtype + b"E"/b"N" (EDNS or not)
        self.edns = edns
        self.do = do
        self.payload = payload
        self.ecs = ecs  # the ECS option data (family, source, scope, address) if any
        self.cookie = cookie  # the COOKIE option data (client cookie [+ server cookie])
        self.limit = (min(max(payload, NO_EDNS_PAYLOAD), OUR_PAYLOAD) if edns
                      else NO_EDNS_PAYLOAD)  # the UDP size limit of the reply
        # (segment, scope) from the ECS option, filled by the server that memoises this
        # query (a per-server memo: the segment rules are the server's)
        self.client: tuple[str, int] | None = None

    def canonical(self, wire: bytes) -> bytes:
        """The canonical form of this query (see the module docstring)."""
        question = wire[12:self.qend].lower() + wire[self.qend:self.qend + 4]
        head = b"\x00\x00\x00\x00\x00\x01\x00\x00\x00\x00\x00" + (b"\x01" if self.edns
                                                                  else b"\x00")
        return head + question + (_OPT_TAIL if self.edns else b"")


PARSE_CACHE = 65536


def parse(wire: bytes, memo: dict[bytes, Query | None] | None = None) -> Query | None:
    """The query if the fast path can answer it, else None. Never raises.

    Queries repeat (the same names, types and client subnets from the same resolvers), so
    a server passes ``memo``: results are kept on the bytes after the ID, and the memo is
    cleared when full.
    """
    if memo is None:
        return _parse(wire)
    body = wire[2:]
    found: Query | None = memo.get(body, _UNSEEN)
    if found is not _UNSEEN:
        return found
    query = _parse(wire)
    if len(memo) >= PARSE_CACHE:
        memo.clear()
    memo[body] = query
    return query


def _parse(wire: bytes) -> Query | None:
    n = len(wire)
    if n < 17 or wire[2] & 0xF8 or wire[4:10] != b"\x00\x01\x00\x00\x00\x00":
        return None  # QR set or opcode not QUERY, or not exactly one question
    arcount = wire[10] << 8 | wire[11]
    if arcount > 1:
        return None
    i = 12
    while True:
        if i >= n:
            return None
        length = wire[i]
        if length == 0:
            break
        if length > 63:
            return None  # compression or extended label types: let dnspython judge
        i += length + 1
    qend = i + 1
    if qend - 12 > 255 or qend + 4 > n or wire[qend + 2:qend + 4] != b"\x00\x01":
        return None  # name too long, short question, or class not IN
    p = qend + 4
    if arcount == 0:
        if p != n:
            return None
        return Query(qend, wire[12:qend].lower() + wire[qend:qend + 2] + b"N", False, False,
                     0, None)
    # OPT: root name, type 41, class = payload, ttl = ext-rcode, version, flags; rdlen
    if (p + 11 > n or wire[p] != 0 or wire[p + 1:p + 3] != b"\x00\x29" or wire[p + 5]
            or wire[p + 6] or wire[p + 7] & 0x7F or wire[p + 8]):
        return None
    rdlen = wire[p + 9] << 8 | wire[p + 10]
    o = p + 11
    if o + rdlen != n:
        return None
    ecs: bytes | None = None
    cookie: bytes | None = None
    while o < n:
        if o + 4 > n:
            return None
        code = wire[o] << 8 | wire[o + 1]
        olen = wire[o + 2] << 8 | wire[o + 3]
        data = wire[o + 4:o + 4 + olen]
        if len(data) != olen:
            return None
        if code == ECS_CODE:
            if ecs is not None or not _valid_ecs(data):
                return None
            ecs = data
        elif code == COOKIE_CODE:
            if cookie is not None or not (olen == 8 or 16 <= olen <= 40):
                return None  # dnspython answers FORMERR (malformed) or judges the second
            cookie = data
        else:
            return None
        o += 4 + olen
    return Query(qend, wire[12:qend].lower() + wire[qend:qend + 2] + b"E", True,
                 bool(wire[p + 7] & 0x80), wire[p + 3] << 8 | wire[p + 4], ecs, cookie)


def _valid_ecs(data: bytes) -> bool:
    """The checks dnspython makes when it parses an ECS option (RFC 7871 section 6)."""
    if len(data) < 4:
        return False
    family, src, scope = data[0] << 8 | data[1], data[2], data[3]
    bits = 32 if family == 1 else 128 if family == 2 else 0
    if not bits or src > bits or scope > bits or len(data) != 4 + (src + 7) // 8:
        return False
    rest = src % 8
    return not (rest and data[-1] & (0xFF >> rest))
