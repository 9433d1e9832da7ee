"""Zone files (RFC 1035 master format) and BIND view fragments, written atomically.

``ZoneFileStore`` keeps one file per zone (per view with ``{view}`` in the path pattern):

- read: the file is parsed with dnspython; the managed RRsets are what edgesteer owns;
- write: the file is re-rendered with the managed RRsets replaced, every other record kept
  as it is (hand-added names survive), the SOA serial bumped, written to a temporary file
  in the same directory, fsynced and renamed over the old one (a reader, such as named
  loading the zone, sees the old file or the new one, never half of one); then the optional
  reload command runs (``{zone}`` and ``{path}`` are replaced), and its failure is an error;
- a missing file is created from the zone's config (SOA, NS, glue).

``bind_views_conf`` renders the named.conf fragment that maps segments to BIND views: each
view matches its segment's client networks and its own TSIG key, and refuses the other
views' keys, so an update or transfer signed with a view's key lands in that view.
"""

from __future__ import annotations

import asyncio
import logging
import shlex
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import dns.exception
import dns.name
import dns.rdata
import dns.rdataclass
import dns.rdatatype
import dns.rrset
import dns.serial
import dns.zone

from dns_backends.base import BackendError
from dns_backends.reconcile import Target
from dns_backends.records import (
    SOA,
    AnswersMode,
    Change,
    RRsets,
    desired,
    managed,
    managed_names,
    segment_networks,
)
from edge.atomicfile import write_text
from edge.plan import Plan
from geo.segment import DEFAULT_SEGMENT, Segment

if TYPE_CHECKING:
    from edge.config.schema import BackendSettings, Config, Service, Zone

IN = dns.rdataclass.IN
log = logging.getLogger("edgesteer.backends")


# BIND views ---------------------------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class ViewSpec:
    """A view: its name, the segment it serves, its key and its client networks."""

    name: str
    segment: str
    key: str | None
    networks: tuple[str, ...]


def view_specs(views: Sequence[tuple[str, str, str | None]],
               segments: Sequence[Segment]) -> tuple[list[ViewSpec], list[str]]:
    """(view name, segment, key name) -> ViewSpecs in match order, default last; plus notes
    on segments a view can only carry in part (ASNs, countries, regions, buckets)."""
    by_name = {s.name: s for s in segments}
    specs, notes, last = [], [], []
    for name, segment, key in views:
        if segment == DEFAULT_SEGMENT:
            last.append(ViewSpec(name, segment, key, ("any",)))
            continue
        nets = segment_networks(by_name[segment])
        if not nets.exact:
            notes.append(f"view {name}: segment {segment} matches on {', '.join(nets.lost)}, "
                         "which a BIND view cannot; only its networks are used")
        if not nets.networks:
            notes.append(f"view {name}: segment {segment} has no networks: the view only "
                         "gets clients that sign with its key")
        specs.append(ViewSpec(name, segment, key, nets.networks))
    return specs + last, notes


def bind_views_conf(views: Sequence[ViewSpec], zones: Sequence[str],
                    file_of: Callable[[str, str], str]) -> str:
    """The ``view`` clauses of named.conf for ``views`` (in order) serving ``zones``."""
    keys = [v.key for v in views if v.key is not None]
    out = []
    for v in views:
        match = [f"key {v.key};"] if v.key else []
        match += [f"!key {k};" for k in keys if k != v.key]
        match += [f"{n};" for n in v.networks]
        out.append(f'view "{v.name}" {{\n  match-clients {{ {" ".join(match)} }};\n'
                   "  recursion no;\n")
        for zone in zones:
            grant = f"key {v.key};" if v.key else "none;"
            out.append(f'  zone "{zone}" {{ type primary; file "{file_of(zone, v.name)}"; '
                       f"allow-update {{ {grant} }}; allow-transfer {{ {grant} }}; }};\n")
        out.append("};\n")
    return "".join(out)


# zone files ---------------------------------------------------------------------------------

def _abs(name: str) -> dns.name.Name:
    return dns.name.from_text(name)


def new_zone(zone: Zone, serial: int = 1) -> dns.zone.Zone:
    """A zone holding only what the config says of it: SOA, NS and in-zone glue."""
    origin = _abs(zone.name)
    z = dns.zone.Zone(origin, relativize=False)
    with z.writer() as txn:
        soa = dns.rdata.from_text(IN, SOA, f"{_abs(zone.soa_mname)} {_abs(zone.soa_rname)} "
                                  f"{serial} {zone.soa_refresh} {zone.soa_retry} "
                                  f"{zone.soa_expire} {zone.soa_minimum}")
        txn.add(origin, zone.ttl, soa)
        for ns in zone.ns:
            txn.add(origin, zone.ttl, dns.rdata.from_text(IN, dns.rdatatype.NS, _abs(ns)
                                                          .to_text()))
            host = _abs(ns)
            if host.is_subdomain(origin) and not zone.ns_addresses.get(ns):
                log.warning("zone %s: name server %s is inside the zone but has no address "
                            "(ns_addresses): BIND will refuse to load the zone", zone.name, ns)
            for addr in zone.ns_addresses.get(ns, ()) if host.is_subdomain(origin) else ():
                rdtype = dns.rdatatype.AAAA if ":" in addr else dns.rdatatype.A
                txn.add(host, zone.ttl, dns.rdata.from_text(IN, rdtype, addr))
    return z


def write_atomically(path: Path, text: str) -> None:
    """``text`` into ``path`` via a temporary file in the same directory and a rename (the
    directory synced too: a zone file BIND loads must survive a power cut whole)."""
    write_text(path, text, sync_dir=True, make_parents=True)


class ZoneFileStore:
    """The zone-file side of a ``SyncBackend`` (see the module docstring)."""

    def __init__(self, name: str, path: str, zones: Sequence[Zone], services: Sequence[Service],
                 *, views: Sequence[tuple[str, str]] = (), answers: AnswersMode = "all",
                 reload: str | None = None, timeout: float = 30.0) -> None:
        self.name = name
        self.pattern = path
        self.zones = {z.name: z for z in zones}
        self.services = tuple(services)
        self.views = tuple(views)  # (view name, segment)
        self.answers: AnswersMode = answers
        self.reload = reload
        self.timeout = timeout
        self.writes = 0
        self.reloads = 0
        self.views_conf: str | None = None  # named.conf fragment, written with the zones
        self.notes: tuple[str, ...] = ()

    @classmethod
    def from_settings(cls, settings: BackendSettings, config: Config,
                      zones: Sequence[str]) -> ZoneFileStore:
        if settings.path is None:
            raise ValueError("zonefile needs path")
        views = [(v.name or v.segment, v.segment) for v in settings.views]
        store = cls(settings.name, settings.path, [config.zone(z) for z in zones],
                    config.services, views=views, answers=settings.answers,
                    reload=settings.reload, timeout=max(settings.timeout_s, 30.0))
        if settings.views:
            specs, notes = view_specs(
                [(v.name or v.segment, v.segment, v.tsig.name if v.tsig else None)
                 for v in settings.views], config.segments)
            store.views_conf = bind_views_conf(
                specs, list(store.zones), lambda z, v: str(store.path(Target(z, "", v))))
            store.notes = tuple(notes)
        return store

    def views_conf_path(self) -> Path:
        """Where the named.conf view fragment goes: next to the zone files."""
        return Path(self.pattern).parent / "edgesteer-views.conf"

    def path(self, target: Target) -> Path:
        return Path(self.pattern.format(zone=target.zone, view=target.view or "default"))

    # Store protocol -----------------------------------------------------------------------
    def targets(self) -> Sequence[Target]:
        if not self.views:
            return [Target(z, DEFAULT_SEGMENT) for z in self.zones]
        return [Target(z, seg, view) for z in self.zones for view, seg in self.views]

    def desired(self, plan: Plan, target: Target) -> RRsets:
        return desired(plan, self.services, target.zone, target.segment, self.answers)

    def load(self, target: Target) -> dns.zone.Zone:
        path = self.path(target)
        if not path.exists():
            return new_zone(self.zones[target.zone])
        try:
            return dns.zone.from_text(path.read_text(), origin=target.zone, relativize=False,
                                      filename=str(path))
        except (dns.exception.DNSException, OSError) as exc:
            raise BackendError(self.name, f"{target.label}: cannot read {path}: {exc}") from None

    async def read(self, target: Target) -> RRsets:
        zone = self.load(target)
        rrsets = [dns.rrset.from_rdata_list(n, rds.ttl, list(rds))
                  for n, rds in zone.iterate_rdatasets()]
        return managed(rrsets, managed_names(self.services, target.zone))

    async def write(self, target: Target, changes: Sequence[Change], wanted: RRsets) -> None:
        zone = self.load(target)
        origin = _abs(target.zone)
        with zone.writer() as txn:
            for c in changes:
                if c.before is not None:
                    txn.delete(c.name, c.rdtype)
                if c.after is not None:
                    txn.replace(c.name, c.after.to_rrset())
            soa = zone.get_rdataset(origin, SOA)
            if soa is None:
                raise BackendError(self.name, f"{target.label}: the zone file has no SOA")
            old = soa[0]
            txn.replace(origin, soa.ttl, old.replace(serial=(dns.serial.Serial(old.serial) + 1)
                                                     .value))
        path = self.path(target)
        text = f"; written by edgesteer backend {self.name}; edit only names it does not " \
               f"manage\n$ORIGIN {origin}\n" + zone.to_text(relativize=True, want_origin=False)
        try:
            write_atomically(path, text)
        except OSError as exc:
            raise BackendError(self.name, f"{target.label}: cannot write {path}: {exc}") \
                from None
        self.writes += 1
        conf = self.views_conf_path()
        if self.views_conf is not None and (not conf.exists()
                                            or conf.read_text() != self.views_conf):
            write_atomically(conf, self.views_conf)
        if self.reload:
            await self._reload(target, path)

    async def aclose(self) -> None:
        return None

    async def _reload(self, target: Target, path: Path) -> None:
        argv = [a.format(zone=target.zone, path=str(path), view=target.view or "default")
                for a in shlex.split(self.reload or "")]
        try:
            proc = await asyncio.create_subprocess_exec(
                *argv, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT)
        except OSError as exc:
            raise BackendError(self.name, f"{target.label}: reload command {argv[0]!r} "
                               f"could not start: {exc}") from None
        try:
            async with asyncio.timeout(self.timeout):
                out, _ = await proc.communicate()
        except TimeoutError:
            proc.kill()
            await proc.wait()
            raise BackendError(self.name, f"{target.label}: reload command timed out after "
                               f"{self.timeout:g}s; {path} is written") from None
        self.reloads += 1
        if proc.returncode != 0:
            tail = out.decode(errors="replace").strip().splitlines()[-3:]
            raise BackendError(self.name, f"{target.label}: reload command exited with "
                               f"{proc.returncode}; {path} is written but may not be served:"
                               f" {' | '.join(tail)}")
