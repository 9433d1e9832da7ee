"""RFC 2136 dynamic updates with TSIG (BIND 9, Knot DNS, any primary that takes UPDATE).

Reads a zone by AXFR (the key must be allowed to transfer), writes by UPDATE over TCP:

- an UPDATE carries a prerequisite stating what we read (RFC 2136 section 2.4), so an edit
  made by hand between our read and our write makes the server refuse (NXRRSET / YXRRSET)
  instead of being clobbered silently; ``SyncBackend`` then reads again and logs the
  conflict. When the whole write fits one message, the prerequisite is the zone's SOA as
  we read it ("RRset exists, value dependent"): any edit anywhere in the zone bumps the
  serial, so it is stricter than one prerequisite per RRset and costs one record instead of
  a thousand. After such a conflict, and for writes split across messages, every changed
  RRset carries its own prerequisite ("exists, value dependent" / "does not exist"), so a
  busy zone with other writers still converges;
- as many changes as fit go in one message (65,535 bytes over TCP, TSIG included); changes
  only split across messages when they must;
- after writing, the SOA serial must have moved forward, or the server did not take it.

What "verified" means here: the server applies an UPDATE atomically, all or nothing, and
the prerequisite proved the zone was exactly what we had read. So when the serial then
moved by exactly one (BIND's and Knot's default serial policy: one increment per UPDATE,
hence no other writer in between), the zone's managed records *are* what we read plus our
changes, i.e. the desired state: it becomes the known state, and the read that verifies it
costs nothing more than the SOA query ``write`` made. The one thing a server may silently
drop from an accepted UPDATE is a CNAME added next to other data (RFC 2136 section
3.4.2.2): a write adding a CNAME, a serial that moved by more than one, or a split write
is verified by a full AXFR instead.
A full AXFR is also done at least every ``full_read_s`` and whenever the serial moved
without us. The next write may start from that verified state without a read
(``known``): its UPDATE carries the zone's SOA as of then, which proves the state or
makes the server refuse.

The UPDATE is rendered by ``dns_backends.update_wire`` (the same bytes as dnspython's
``UpdateMessage``, tested; see there why) and sent with its SOA check over one TCP
connection (``dns_backends.dnstcp``).

BIND views: each view is reached with its own TSIG key (``match-clients { key K; ... }``),
so an update, a transfer and a verifying query signed with K all land in that view. See
``dns_backends.zonefile.bind_views_conf`` for the named.conf fragment that does this.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import re
import struct
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import dns.entropy
import dns.exception
import dns.flags
import dns.message
import dns.name
import dns.opcode
import dns.query
import dns.rcode
import dns.rdatatype
import dns.rrset
import dns.serial
import dns.tsig
import dns.update
import dns.xfr
import dns.zone

from dns_backends.base import BackendError
from dns_backends.dnstcp import DnsTcp
from dns_backends.reconcile import Conflict, Target, Transient, Unproven
from dns_backends.records import (
    CNAME,
    AnswersMode,
    Change,
    RRsets,
    desired,
    managed,
    managed_names,
)
from dns_backends.update_wire import Rendered, Signer, reference_message, render
from edge.plan import Plan
from geo.segment import DEFAULT_SEGMENT

if TYPE_CHECKING:
    from edge.config.schema import Service, TsigSettings

MAX_MESSAGE = 65535
_HEADROOM = 600  # header, zone section and the TSIG record
_CONFLICT_RCODES = frozenset({dns.rcode.YXRRSET, dns.rcode.NXRRSET, dns.rcode.YXDOMAIN,
                              dns.rcode.NXDOMAIN})
_RCODE_HELP = {
    dns.rcode.REFUSED: "the server refused the update: this key may not update the zone "
                       "(allow-update / update-policy, Knot acl)",
    dns.rcode.NOTAUTH: "the server is not authoritative for the zone, or rejected the TSIG "
                       "key",
    dns.rcode.NOTZONE: "a name is outside the zone",
    dns.rcode.FORMERR: "the server could not parse the update",
    dns.rcode.NOTIMP: "the server does not implement dynamic update",
}


@dataclass(frozen=True, slots=True)
class TsigKey:
    name: str
    algorithm: str
    secret: str  # base64

    def __post_init__(self) -> None:
        try:
            base64.b64decode(self.secret, validate=True)
        except binascii.Error:
            raise ValueError(f"TSIG key {self.name}: the secret is not base64") from None

    @property
    def keyring(self) -> dict[dns.name.Name, dns.tsig.Key]:
        key = dns.tsig.Key(self.name, self.secret, self.wire_algorithm)
        return {key.name: key}

    @property
    def wire_algorithm(self) -> dns.name.Name:
        """The algorithm's name on the wire: HMAC-MD5 is ``hmac-md5.sig-alg.reg.int``
        (RFC 8945 section 6); the others are their short names."""
        if self.algorithm == "hmac-md5":
            return dns.tsig.HMAC_MD5
        return dns.name.from_text(self.algorithm)

    @property
    def dns_name(self) -> dns.name.Name:
        return dns.name.from_text(self.name)

    @property
    def signer(self) -> Signer:
        return Signer.of(self.name, self.secret, self.wire_algorithm)

    def describe(self) -> str:
        return f"TSIG key {self.name} ({self.algorithm})"

    @classmethod
    def from_settings(cls, settings: TsigSettings) -> TsigKey:
        secret = settings.secret
        if secret is None:
            if settings.secret_file is None:
                raise ValueError(f"TSIG key {settings.name}: neither secret nor secret_file")
            secret = read_secret_file(settings.secret_file)
        return cls(settings.name, settings.algorithm, secret)


def read_secret_file(path: str) -> str:
    """The base64 secret in ``path``: a bare secret, a BIND key file or a Knot key file."""
    text = Path(path).read_text()
    m = re.search(r'secret\s*:?\s*"?([A-Za-z0-9+/]+={0,2})"?', text)
    if m is not None:
        return m.group(1)
    return text.strip()


@dataclass(frozen=True, slots=True)
class View:
    """A BIND view: the segment it serves and the key that reaches it."""

    segment: str
    name: str
    key: TsigKey | None


_RDLEN = {dns.rdatatype.A: 4, dns.rdatatype.AAAA: 16}


def _owner_size(name: dns.name.Name) -> int:
    """Bytes of an owner name with compression: first label + pointer to the zone's name."""
    return len(name[0]) + 3 if len(name) > 1 else 1


def _change_size(c: Change) -> int:
    """About the bytes a change takes in an UPDATE (names compressed).

    An estimate: a run that still does not fit is split when rendered (``TooBig``).
    """
    owner = _owner_size(c.name) + 10
    size = owner  # the prerequisite "does not exist", or the delete
    for rrset in (c.before, c.after):
        if rrset is not None:
            fixed = _RDLEN.get(rrset.rdtype)
            size += len(rrset.values) * (owner + fixed) if fixed is not None else \
                sum(owner + len(v) + 2 for v in rrset.values)  # a name: text + 1 or less
    return size


def batches(changes: Sequence[Change], limit: int = MAX_MESSAGE - _HEADROOM
            ) -> list[list[Change]]:
    """Changes split into runs that should each fit one UPDATE message, in order."""
    out: list[list[Change]] = [[]]
    size = 0
    for c in changes:
        n = _change_size(c)
        if out[-1] and size + n > limit:
            out.append([])
            size = 0
        out[-1].append(c)
        size += n
    return [b for b in out if b]


async def axfr(host: str, port: int, query: dns.message.Message, origin: dns.name.Name,
               timeout: float) -> tuple[dns.rrset.RRset, list[dns.rrset.RRset]]:  # noqa: ASYNC109
    """(SOA RRset, every other RRset) of a zone by AXFR over TCP, TSIG checked on each message.

    ``dns.asyncquery.inbound_xfr`` builds a ``dns.zone.Zone`` through transactions, which
    costs more than the transfer itself for the few thousand records we read per pass;
    this keeps dnspython's parsing and TSIG verification and skips the zone.
    """
    reader, writer = await asyncio.wait_for(asyncio.open_connection(host, port), timeout)
    try:
        wire = query.to_wire()
        writer.write(struct.pack("!H", len(wire)) + wire)
        await writer.drain()
        merged: dict[tuple[dns.name.Name, dns.rdatatype.RdataType], dns.rrset.RRset] = {}
        soa: dns.rrset.RRset | None = None
        tsig_ctx = None
        first = True
        while True:
            (length,) = struct.unpack("!H", await asyncio.wait_for(reader.readexactly(2),
                                                                    timeout))
            rwire = await asyncio.wait_for(reader.readexactly(length), timeout)
            r = dns.message.from_wire(rwire, keyring=query.keyring, request_mac=query.mac,
                                      xfr=True, tsig_ctx=tsig_ctx, multi=True)
            tsig_ctx = r.tsig_ctx
            if not query.is_response(r, xfr_continuation=not first):
                raise dns.query.BadResponse
            if r.rcode() != dns.rcode.NOERROR:
                raise dns.xfr.TransferError(r.rcode())  # type: ignore[no-untyped-call]
            for rrset in r.answer:  # each SOA is its own RRset in a transfer (dnspython)
                if soa is None:
                    if rrset.rdtype != dns.rdatatype.SOA:
                        raise dns.exception.FormError(  # type: ignore[no-untyped-call]
                            "the transfer does not start with the zone's SOA")
                    soa = rrset
                elif rrset.rdtype == dns.rdatatype.SOA and rrset.name == origin:
                    return soa, list(merged.values())  # the closing SOA
                else:  # a transfer may split an RRset across RRs and messages: merge
                    key = (rrset.name, rrset.rdtype)
                    found = merged.get(key)
                    if found is None:
                        merged[key] = rrset
                    else:
                        found.union_update(rrset)  # type: ignore[no-untyped-call]
            first = False
    finally:
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()


class Rfc2136Store:
    """The RFC 2136 side of a ``SyncBackend`` (see the module docstring)."""

    def __init__(self, name: str, server: tuple[str, int], zones: Sequence[str],
                 services: Sequence[Service], *, key: TsigKey | None = None,
                 views: Sequence[View] = (), answers: AnswersMode = "all",
                 timeout: float = 2.0, full_read_s: float = 300.0) -> None:
        self.name = name
        self.host, self.port = server
        self.zones = tuple(zones)
        self.services = tuple(services)
        self.key = key
        self.views = {v.name: v for v in views}
        self.answers: AnswersMode = answers
        self.timeout = timeout
        self.sent: Counter[str] = Counter()  # messages by kind: update, axfr, query
        self.serials: dict[Target, int] = {}
        self._soa: dict[Target, dns.rrset.RRset] = {}  # the SOA RRset as last read
        self._per_rrset: set[Target] = set()  # after an SOA-prerequisite conflict
        self._just_verified: dict[Target, float] = {}  # write() proved the state, when
        self._unread: set[Target] = set()  # known() handed out a state: no read since
        # target -> (serial, when, managed RRsets) of the last transfer
        self._cache: dict[Target, tuple[int, float, RRsets]] = {}
        self.full_read_s = full_read_s

    # Store protocol -----------------------------------------------------------------------
    def targets(self) -> Sequence[Target]:
        if not self.views:
            return [Target(z, DEFAULT_SEGMENT) for z in self.zones]
        return [Target(z, v.segment, v.name) for z in self.zones for v in self.views.values()]

    def desired(self, plan: Plan, target: Target) -> RRsets:
        return desired(plan, self.services, target.zone, target.segment, self.answers)

    def known(self, target: Target) -> RRsets | None:
        """Our last verified state (the zone as of our own write or transfer, less than
        ``full_read_s`` ago), when the next UPDATE will carry the zone's SOA as then read:
        the server refuses it if anything in the zone changed since (the write is then
        retried after a read, and the change is reported as drift). ``SyncBackend`` then
        writes without an SOA query first; a pass with nothing to write still reads."""
        cached = self._cache.get(target)
        soa = self._soa.get(target)
        if (target in self._per_rrset or cached is None or soa is None
                or time.monotonic() - cached[1] >= self.full_read_s
                or self.serials.get(target) != cached[0] or soa[0].serial != cached[0]):
            return None
        self._unread.add(target)
        return cached[2]

    async def read(self, target: Target) -> RRsets:
        """The managed RRsets; by AXFR, unless the SOA serial says nothing changed since the
        last transfer (less than ``full_read_s`` ago): then one SOA query is enough.

        The mapping returned is the store's own (read-only): after a verified write it is
        the very ``wanted`` mapping written, so the diffs that follow are empty at once."""
        self._unread.discard(target)
        cached = self._cache.get(target)
        proved = self._just_verified.pop(target, None)
        if proved is not None and cached is not None and time.monotonic() - proved < 1.0:
            # the read right after our write: write() has just proved the state (SOA
            # prerequisite, serial +1) with its own SOA query; a second one adds nothing
            return cached[2]
        if (cached is not None and time.monotonic() - cached[1] < self.full_read_s
                and await self.soa_serial(target) == cached[0]):
            return cached[2]
        state = await self._transfer(target)
        self._cache[target] = (self.serials[target], time.monotonic(), state)
        return state

    async def _transfer(self, target: Target) -> RRsets:
        origin = dns.name.from_text(target.zone)
        key = self._key(target)
        query = dns.message.make_query(origin, dns.rdatatype.AXFR)
        if key is not None:
            query.use_tsig(key.keyring, key.dns_name, algorithm=key.wire_algorithm)
        self.sent["axfr"] += 1
        try:
            async with asyncio.timeout(self.timeout * 3):
                soa, rrsets = await axfr(self.host, self.port, query, origin, self.timeout)
        except dns.xfr.TransferError as exc:
            raise self._error(target, f"zone transfer refused ({dns.rcode.to_text(exc.rcode)})"
                              ": the key must be allowed to transfer the zone (allow-transfer,"
                              " Knot acl action transfer)") from None
        except Exception as exc:
            raise self._classify(target, key, exc, "zone transfer") from None
        self.serials[target] = soa[0].serial
        self._soa[target] = soa
        return managed(rrsets, managed_names(self.services, target.zone))

    async def write(self, target: Target, changes: Sequence[Change], wanted: RRsets) -> None:
        self._just_verified.pop(target, None)
        unread = target in self._unread  # from known(): only the SOA guard proves the base
        self._unread.discard(target)
        key = self._key(target)
        runs = [list(changes)]  # one message if it fits (it is rendered before it is sent)
        serial_before = self.serials.get(target)
        soa = self._soa.get(target) if target not in self._per_rrset else None
        async with DnsTcp(self.host, self.port, self.timeout) as tcp:  # UPDATE(s), SOA query
            await self._send(target, key, runs, soa, tcp, unread)
            self._per_rrset.discard(target)
            if serial_before is None:
                return
            serial = await self.soa_serial(target, tcp)
        if not dns.serial.Serial(serial) > dns.serial.Serial(serial_before):
            raise self._error(target, f"the server answered NOERROR but the SOA serial "
                              f"did not move ({serial_before} -> {serial})")
        cached = self._cache.get(target)
        if (len(runs) == 1 and cached is not None and cached[0] == serial_before
                and serial == (serial_before + 1) % 2**32
                and not any(c.after is not None and c.rdtype == CNAME for c in changes)):
            # the zone was what we read (prerequisite), the UPDATE applied whole, nobody
            # else wrote (serial +1): it now holds ``wanted`` (module docstring, "verified")
            self._cache[target] = (serial, cached[1], wanted)
            self._just_verified[target] = time.monotonic()
        else:
            self._cache.pop(target, None)  # the verifying read transfers the zone

    async def _send(self, target: Target, key: TsigKey | None, runs: list[list[Change]],
                    soa: dns.rrset.RRset | None, tcp: DnsTcp, unread: bool = False) -> None:
        """Each run as one UPDATE, in order; a run too big for one message is halved
        (``runs`` then says how many were sent). The prerequisite is the zone's ``soa``
        when everything fits one message, else one per changed RRset."""
        zone = dns.name.from_text(target.zone)
        signer = key.signer if key is not None else None
        i = 0
        while i < len(runs):
            run = runs[i]
            whole = soa if len(runs) == 1 else None
            where = "" if len(runs) == 1 else f" (message {i + 1} of {len(runs)}; the " \
                f"{i} before it were applied)"
            try:  # rendered before any I/O: TooBig means nothing was sent
                msg = render(zone, run, whole, signer)
            except dns.exception.TooBig:
                if unread:  # split writes carry no SOA guard: the base must be read
                    raise Unproven from None
                if i == 0 and len(runs) == 1 and len(run) > 1:  # split by size estimate
                    runs[:] = batches(run)
                    if len(runs) > 1:
                        continue
                if len(run) == 1:
                    raise self._error(target, f"one change does not fit in an UPDATE: "
                                      f"{run[0].describe()[:200]}") from None
                runs[i:i + 1] = [run[:len(run) // 2], run[len(run) // 2:]]
                continue
            try:
                reply = await self._exchange(tcp, msg, key)
            except Exception as exc:
                self.sent["update"] += 1
                raise self._classify(target, key, exc, "update" + where) from None
            i += 1
            self.sent["update"] += 1
            rcode = reply.rcode()
            if rcode == dns.rcode.NOERROR:
                continue
            text = dns.rcode.to_text(rcode)
            if rcode in _CONFLICT_RCODES:
                if whole is not None:  # retry with per-RRset prerequisites
                    self._per_rrset.add(target)
                raise Conflict(f"prerequisite failed ({text}){where}")
            if rcode == dns.rcode.SERVFAIL:
                raise Transient(f"update failed: SERVFAIL (see the server log){where}")
            raise self._error(target, f"update rejected: {text}: "
                              f"{_RCODE_HELP.get(rcode, 'see the server log')}{where}")

    async def aclose(self) -> None:
        return None

    # helpers ------------------------------------------------------------------------------
    async def soa_serial(self, target: Target, tcp: DnsTcp | None = None) -> int:
        """The zone's SOA serial, by a (signed) query over ``tcp`` or a connection of its
        own; the SOA RRset is kept for the next UPDATE's prerequisite."""
        key = self._key(target)
        q = dns.message.make_query(target.zone, dns.rdatatype.SOA)
        if key is not None:
            q.use_tsig(key.keyring, key.dns_name, algorithm=key.wire_algorithm)
        self.sent["query"] += 1
        try:
            if tcp is None:
                async with DnsTcp(self.host, self.port, self.timeout) as own:
                    rwire = await own.exchange(q.to_wire())
            else:
                rwire = await tcp.exchange(q.to_wire(), idempotent=True)
            reply = dns.message.from_wire(rwire, keyring=q.keyring, request_mac=q.mac)
            if not q.is_response(reply):
                raise dns.query.BadResponse
        except Exception as exc:
            raise self._classify(target, key, exc, "SOA query") from None
        rrset = reply.get_rrset(reply.answer, dns.name.from_text(target.zone), reply.question[0]
                                .rdclass, dns.rdatatype.SOA)
        if rrset is None:
            raise self._error(target, f"no SOA in the answer ({dns.rcode.to_text(reply.rcode())})")
        serial: int = rrset[0].serial
        self.serials[target] = serial
        self._soa[target] = rrset
        return serial

    def _key(self, target: Target) -> TsigKey | None:
        if target.view is not None:
            return self.views[target.view].key
        return self.key

    def _update(self, target: Target, key: TsigKey | None, changes: Sequence[Change],
                soa: dns.rrset.RRset | None = None) -> dns.update.UpdateMessage:
        """The UPDATE for ``changes`` as dnspython builds it: prerequisite the zone's
        ``soa`` as read when given, else one per changed RRset (module docstring). What
        ``write`` sends is ``update_wire.render`` of the same: the same bytes (tested)."""
        return reference_message(dns.name.from_text(target.zone), changes, soa,
                                 key.signer if key is not None else None,
                                 dns.entropy.random_16())

    @staticmethod
    async def _exchange(tcp: DnsTcp, msg: Rendered, key: TsigKey | None) -> dns.message.Message:
        """Send one rendered UPDATE and read the reply; dnspython parses it and checks its
        TSIG against our request's MAC, as ``dns.asyncquery.tcp`` would."""
        rwire = await tcp.exchange(msg.wire)
        reply = dns.message.from_wire(rwire, keyring=key.signer.key if key is not None
                                      else None, request_mac=msg.mac)
        if (reply.id != msg.id or not reply.flags & dns.flags.QR
                or reply.opcode() != dns.opcode.UPDATE):
            raise dns.query.BadResponse
        return reply

    def _error(self, target: Target, message: str) -> BackendError:
        return BackendError(self.name, f"{target.label}: {message} "
                            f"(server {self.host}:{self.port})")

    def _classify(self, target: Target, key: TsigKey | None, exc: Exception,
                  what: str) -> Exception:
        """A clear BackendError for what will not fix itself; Transient for what may."""
        who = key.describe() if key is not None else "an unsigned request"
        if isinstance(exc, dns.tsig.PeerBadKey):
            return self._error(target, f"{what}: {who} rejected by the server: BADKEY (the "
                               "server does not know a key of this name and algorithm)")
        if isinstance(exc, dns.tsig.PeerBadSignature):
            return self._error(target, f"{what}: {who} rejected by the server: BADSIG (the "
                               "secret does not match the server's)")
        if isinstance(exc, dns.tsig.PeerBadTime):
            return self._error(target, f"{what}: {who} rejected by the server: BADTIME "
                               "(the clocks differ too much)")
        if isinstance(exc, dns.tsig.PeerError | dns.tsig.BadSignature | dns.tsig.BadKey):
            return self._error(target, f"{what}: TSIG failure with {who}: {exc}")
        if isinstance(exc, TimeoutError | dns.exception.Timeout):
            return Transient(f"{what}: no answer from {self.host}:{self.port} "
                             f"within {self.timeout:g}s")
        if isinstance(exc, ConnectionRefusedError):
            return Transient(f"{what}: connection refused by "
                             f"{self.host}:{self.port} (server down?)")
        if isinstance(exc, OSError | EOFError | dns.exception.DNSException):
            return Transient(f"{what}: {type(exc).__name__}: {exc}")
        return exc

