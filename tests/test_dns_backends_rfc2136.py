"""RFC 2136 backend against a real BIND 9 and a real Knot DNS on loopback."""

from __future__ import annotations

import logging
import subprocess
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import dns.asyncquery
import dns.rcode
import dns.update
import pytest

from dns_backends.base import BackendError
from dns_backends.reconcile import SyncBackend, Target
from dns_backends.records import Change, RRsets
from dns_backends.rfc2136 import Rfc2136Store, TsigKey
from tests.servers_dns import (
    FAST,
    PLAN1,
    PLAN2,
    SERVICES,
    ZONE,
    ServerProcess,
    new_key,
    plan,
    query,
    services,
    start_knot,
    start_named,
    start_named_primary,
    zone_text,
)


@dataclass
class Primary:
    server: ServerProcess
    key: TsigKey

    def backend(self, key: TsigKey | None = None, name: str = "primary") -> SyncBackend:
        store = Rfc2136Store(name, (self.server.host, self.server.port), [ZONE], SERVICES,
                             key=key or self.key, timeout=1.0)
        return SyncBackend(store, retry=FAST)

    def q(self, name: str, rdtype: str = "A") -> tuple[str, set[str], int]:
        return query(self.server.host, self.server.port, name, rdtype)


def _named(tmp: Path) -> Primary:
    key = new_key(algorithm="hmac-sha256")
    server = start_named_primary(tmp, key)
    return Primary(server, key)


def _knot(tmp: Path) -> Primary:
    key = new_key(algorithm="hmac-sha512")
    return Primary(start_knot(tmp, key), key)


@pytest.fixture(params=["bind", "knot"])
def primary(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Primary]:
    p = (_named if request.param == "bind" else _knot)(tmp_path / request.param)
    try:
        yield p
    finally:
        p.server.stop()


def store_of(b: SyncBackend) -> Rfc2136Store:
    assert isinstance(b.store, Rfc2136Store)
    return b.store


async def test_apply_then_verify_by_queries(primary: Primary) -> None:
    backend = primary.backend()
    result = await backend.apply(PLAN1)
    assert result.changed == 4 and result.backend == "primary"
    assert primary.q("www.example.hk") == ("NOERROR", {"192.0.2.1", "192.0.2.2"}, 60)
    assert primary.q("www.example.hk", "AAAA")[1] == {"2001:db8::1"}
    assert primary.q("api.example.hk")[1] == {"192.0.2.10"}
    assert primary.q("cdn.example.hk", "CNAME")[1] == {"edge.cdn.example.net."}
    # A -> CNAME and CNAME -> A at the same names, drained answer left out
    await backend.apply(PLAN2)
    assert primary.q("www.example.hk")[1] == {"192.0.2.3"}
    assert primary.q("www.example.hk", "AAAA")[1] == set()
    assert primary.q("api.example.hk", "CNAME")[1] == {"api.cdn.example.net."}
    assert primary.q("cdn.example.hk")[1] == {"192.0.2.20"}
    # what is not ours is untouched
    assert primary.q("other.example.hk")[1] == {"192.0.2.99"}
    assert primary.q("example.hk", "NS")[1] == {"ns1.example.hk."}
    await backend.aclose()


async def test_same_plan_twice_sends_nothing_the_second_time(primary: Primary) -> None:
    backend = primary.backend()
    await backend.apply(PLAN1)
    sent = store_of(backend).sent["update"]
    assert sent == 1  # every change of the plan in one UPDATE
    again = await backend.apply(PLAN1)
    assert again.changed == 0
    assert store_of(backend).sent["update"] == sent
    # a fresh backend (restarted daemon) reads the state and sends nothing either
    fresh = primary.backend()
    assert (await fresh.apply(PLAN1)).changed == 0
    assert store_of(fresh).sent["update"] == 0


def _nsupdate(primary: Primary, commands: str) -> None:
    nsupdate = "/usr/bin/nsupdate"
    script = (f"server {primary.server.host} {primary.server.port}\nzone {ZONE}\n"
              f"{commands}\nsend\n")
    key = f"{primary.key.algorithm}:{primary.key.name}:{primary.key.secret}"
    res = subprocess.run([nsupdate, "-v", "-y", key], input=script, capture_output=True,
                         text=True, timeout=10, check=False)
    assert res.returncode == 0, res.stderr


async def test_drift_is_put_back_and_logged(primary: Primary,
                                            caplog: pytest.LogCaptureFixture) -> None:
    backend = primary.backend()
    await backend.apply(PLAN1)
    _nsupdate(primary, "update delete www.example.hk A\n"
              "update add www.example.hk 300 A 198.51.100.66\n"
              "update delete api.example.hk A")
    assert primary.q("www.example.hk")[1] == {"198.51.100.66"}
    caplog.set_level(logging.WARNING, "edgesteer.backends")
    result = await backend.apply(PLAN1)
    assert result.changed == 2
    assert primary.q("www.example.hk") == ("NOERROR", {"192.0.2.1", "192.0.2.2"}, 60)
    assert primary.q("api.example.hk")[1] == {"192.0.2.10"}
    drift = [r.getMessage() for r in caplog.records if "drift" in r.getMessage()]
    assert len(drift) == 2 and backend.stats.drift == 2
    assert any("www.example.hk. A" in m and "198.51.100.66" in m for m in drift)
    assert any("api.example.hk. A" in m and "deleted" in m for m in drift)


def _racing_store(primary: Primary, edit: str) -> Rfc2136Store:
    """A store whose first write is preceded by ``edit`` (an nsupdate command) made by hand:
    the edit lands between our read and our write."""
    edits: list[int] = []

    class RacingStore(Rfc2136Store):
        async def write(self, target: Target, changes: Sequence[Change],
                        wanted: RRsets) -> None:
            if not edits:
                edits.append(1)
                _nsupdate(primary, edit)
            await super().write(target, changes, wanted)

    return RacingStore("racer", (primary.server.host, primary.server.port), [ZONE], SERVICES,
                       key=primary.key, timeout=1.0)


async def test_concurrent_edit_between_read_and_write_is_not_clobbered_silently(
        primary: Primary, caplog: pytest.LogCaptureFixture) -> None:
    """A hand edit lands after our read: the prerequisites make the server refuse."""
    store = _racing_store(primary, "update add www.example.hk 60 A 198.51.100.7")
    backend = SyncBackend(store, retry=FAST)
    caplog.set_level(logging.WARNING, "edgesteer.backends")
    await backend.apply(PLAN1)
    assert backend.stats.conflicts == 1
    assert any("changed while we wrote" in r.getMessage() for r in caplog.records)
    assert primary.q("www.example.hk")[1] == {"192.0.2.1", "192.0.2.2"}
    assert store.sent["update"] == 2  # refused once, then written after a fresh read


async def test_wrong_tsig_secret_is_rejected_with_a_clear_message(primary: Primary) -> None:
    wrong = TsigKey(primary.key.name, primary.key.algorithm, new_key().secret)
    backend = primary.backend(key=wrong, name="hk-primary")
    with pytest.raises(BackendError) as info:
        await backend.apply(PLAN1)
    text = str(info.value)
    assert text.startswith("hk-primary: ") and info.value.backend == "hk-primary"
    assert "BADSIG" in text and "secret does not match" in text and ZONE in text
    unknown = primary.backend(key=new_key("nobody"), name="hk-primary")
    with pytest.raises(BackendError, match=r"TSIG key nobody .*BADKEY"):
        await unknown.apply(PLAN1)
    assert primary.q("www.example.hk")[1] == set()  # nothing written


async def test_server_down_then_back_converges(primary: Primary) -> None:
    backend = primary.backend()
    await backend.apply(PLAN1)
    primary.server.stop()
    with pytest.raises(BackendError) as info:
        await backend.apply(PLAN2)
    text = str(info.value)
    assert text.startswith("primary: ") and "plan v2 not fully applied" in text
    assert "connection refused" in text and "gave up after 3 attempts" in text
    assert "nothing applied" in text
    assert backend.stats.retries == 2
    primary.server.start()
    result = await backend.apply(PLAN2)
    assert result.changed == 6
    assert primary.q("www.example.hk")[1] == {"192.0.2.3"}
    assert primary.q("api.example.hk", "CNAME")[1] == {"api.cdn.example.net."}


async def test_many_changes_go_in_few_messages(primary: Primary) -> None:
    names = [f"h{i}.example.hk" for i in range(3000)]
    store = Rfc2136Store("bulk", (primary.server.host, primary.server.port), [ZONE],
                         services(*names, "keep.example.hk"), key=primary.key, timeout=5.0)
    backend = SyncBackend(store, retry=FAST)
    keep = {("keep.example.hk", "default"): [("A", "192.0.2.77", 1)]}
    half = plan(1, {(n, "default"): [("A", f"10.{i // 250}.{i % 250}.1", 1),
                                     ("A", f"10.{i // 250}.{i % 250}.2", 1)]
                    for i, n in enumerate(names[:1500])} | keep)
    assert (await backend.apply(half)).changed == 1501
    assert store.sent["update"] == 1  # ~60 kB: all of it in one message, under the SOA
    big = plan(2, {(n, "default"): [("A", f"10.{i // 250}.{i % 250}.3", 1),
                                    ("A", f"10.{i // 250}.{i % 250}.4", 1)]
                   for i, n in enumerate(names)} | keep)
    # a hand edit of a name the big write leaves alone: a split write has no SOA guard,
    # so it must start from a read (not from the state known since our last write)
    _nsupdate(primary, "update delete keep.example.hk A\n"
              "update add keep.example.hk 60 A 198.51.100.77")
    result = await backend.apply(big)
    assert result.changed == 3001 and backend.stats.drift == 1
    # ~150 kB with one prerequisite per RRset: a few messages, not 3000
    assert 2 <= store.sent["update"] - 1 <= 5
    assert primary.q("h2999.example.hk")[1] == {"10.11.249.3", "10.11.249.4"}
    assert primary.q("h1499.example.hk")[1] == {"10.5.249.3", "10.5.249.4"}
    assert primary.q("keep.example.hk")[1] == {"192.0.2.77"}
    assert backend.stats.conflicts == 0  # split: read first (no SOA guard), no refusal
    assert primary.q("h2999.example.hk")[1] == {"10.11.249.3", "10.11.249.4"}
    assert primary.q("h1499.example.hk")[1] == {"10.5.249.3", "10.5.249.4"}
    assert (await backend.apply(big)).changed == 0


async def test_update_refused_for_a_zone_not_served(primary: Primary) -> None:
    store = Rfc2136Store("wrongzone", (primary.server.host, primary.server.port),
                         ["example.org"], services("www.example.org", zone="example.org"),
                         key=primary.key, timeout=1.0)
    with pytest.raises(BackendError, match=r"wrongzone: .*example.org: zone transfer refused "
                       r"\((NOTAUTH|REFUSED)\)"):
        await SyncBackend(store, retry=FAST).apply(PLAN1)


async def test_prerequisite_holds_on_wire() -> None:
    """The update message states what was read: value-dependent or 'does not exist'."""
    store = Rfc2136Store("x", ("127.0.0.1", 1), [ZONE], SERVICES, key=new_key())
    backend_plan = store.desired(PLAN1, Target(ZONE, "default"))
    before = store.desired(PLAN2, Target(ZONE, "default"))
    from dns_backends.records import diff
    msg = store._update(Target(ZONE, "default"), store.key, diff(before, backend_plan))
    assert isinstance(msg, dns.update.UpdateMessage)
    prereq = {(r.name.to_text(), r.rdtype.name, r.rdclass.name) for r in msg.prerequisite}
    assert ("www.example.hk.", "A", "IN") in prereq  # value dependent: class IN, TTL 0
    assert ("www.example.hk.", "AAAA", "NONE") in prereq  # must not exist yet
    assert all(r.ttl == 0 for r in msg.prerequisite)
    assert dns.rcode.NOERROR == 0 and dns.asyncquery is not None


async def test_bind_views_serve_each_segment_its_answers(tmp_path: Path) -> None:
    """Views built from segment CIDRs: the source address picks the view, keys pick it for
    updates and transfers."""
    import netaddr

    from dns_backends.rfc2136 import View
    from dns_backends.zonefile import bind_views_conf, view_specs
    from geo.segment import Segment

    segments = [Segment("cn", cidrs=netaddr.IPSet(["127.0.0.2/32", "198.51.100.0/24"])),
                Segment("hk", cidrs=netaddr.IPSet(["127.0.0.3/32"]), asns=frozenset({4760}))]
    keys = {"cn": new_key("k-cn"), "hk": new_key("k-hk"), "default": new_key("k-default")}
    specs, notes = view_specs([(s, s, keys[s].name) for s in ("default", "cn", "hk")],
                              segments)
    assert [v.name for v in specs] == ["cn", "hk", "default"]  # default always last
    assert notes == ["view hk: segment hk matches on asns, which a BIND view cannot; only its "
                     "networks are used"]
    body = bind_views_conf(specs, [ZONE], lambda zone, view: f"{zone}.{view}.zone")
    assert "match-clients { key k-cn; !key k-hk; !key k-default; 127.0.0.2/32; " \
           "198.51.100.0/24; };" in body
    files = {f"{ZONE}.{v}.zone": zone_text() for v in keys}
    server = start_named(tmp_path / "views", body, files, list(keys.values()),
                         ready_key=keys["default"])
    try:
        store = Rfc2136Store("views", (server.host, server.port), [ZONE],
                             services("www.example.hk"),
                             views=[View(s, s, keys[s]) for s in ("cn", "hk", "default")])
        backend = SyncBackend(store, retry=FAST)
        p = plan(1, {("www.example.hk", "default"): [("A", "192.0.2.1", 1)],
                     ("www.example.hk", "cn"): [("A", "192.0.2.50", 1)]})
        result = await backend.apply(p)
        assert result.changed == 3  # hk falls back to the default answers in its own view
        seen = {src: query(server.host, server.port, "www.example.hk", source=src)[1]
                for src in ("127.0.0.1", "127.0.0.2", "127.0.0.3")}
        assert seen == {"127.0.0.1": {"192.0.2.1"}, "127.0.0.2": {"192.0.2.50"},
                        "127.0.0.3": {"192.0.2.1"}}
        assert (await backend.apply(p)).changed == 0
        p2 = plan(2, {("www.example.hk", "default"): [("A", "192.0.2.1", 1)],
                      ("www.example.hk", "hk"): [("A", "192.0.2.60", 1)]})
        assert (await backend.apply(p2)).changed == 2  # cn back to default, hk its own
        assert query(server.host, server.port, "www.example.hk", source="127.0.0.2")[1] == \
            {"192.0.2.1"}
        assert query(server.host, server.port, "www.example.hk", source="127.0.0.3")[1] == \
            {"192.0.2.60"}
        assert store.sent["update"] == 5  # one per view that changed: 3, then cn and hk
    finally:
        server.stop()


async def test_every_common_tsig_algorithm(tmp_path: Path) -> None:
    algorithms = ["hmac-sha256", "hmac-sha512", "hmac-sha384", "hmac-sha224", "hmac-sha1",
                  "hmac-md5"]
    keys = [new_key(f"k-{a}", a) for a in algorithms]
    grant = " ".join(f"key {k.name};" for k in keys)
    body = (f'zone "{ZONE}" {{ type primary; file "{ZONE}.zone"; allow-update {{ {grant} }};'
            f" allow-transfer {{ {grant} }}; }};\n")
    server = start_named(tmp_path / "algs", body, {f"{ZONE}.zone": zone_text()}, keys)
    try:
        for i, key in enumerate(keys):
            store = Rfc2136Store(key.algorithm, (server.host, server.port), [ZONE],
                                 services("www.example.hk"), key=key, timeout=1.0)
            p = plan(i + 1, {("www.example.hk", "default"): [("A", f"192.0.2.{i + 1}", 1)]})
            assert (await SyncBackend(store, retry=FAST).apply(p)).changed == 1, key.algorithm
            assert query(server.host, server.port, "www.example.hk")[1] == {f"192.0.2.{i + 1}"}
    finally:
        server.stop()


async def test_a_verified_write_becomes_the_known_state_without_a_transfer(
        primary: Primary) -> None:
    """After an UPDATE guarded by the SOA and a serial +1, the verifying read and the next
    pass cost one SOA query each; a write adding a CNAME is verified by a full AXFR."""
    addresses = plan(1, {("www.example.hk", "default"): [("A", "192.0.2.1", 1)],
                         ("api.example.hk", "default"): [("A", "192.0.2.10", 1)]})
    moved = plan(2, {("www.example.hk", "default"): [("A", "192.0.2.2", 1)],
                     ("api.example.hk", "default"): [("A", "192.0.2.11", 1)]})
    backend = primary.backend()
    store = store_of(backend)
    await backend.apply(addresses)
    assert store.sent["axfr"] == 1  # the first read only
    assert (await backend.apply(moved)).changed == 2
    assert store.sent["axfr"] == 1 and store.sent["update"] == 2
    assert primary.q("www.example.hk")[1] == {"192.0.2.2"}
    assert primary.q("api.example.hk")[1] == {"192.0.2.11"}
    assert (await backend.apply(moved)).changed == 0
    assert store.sent["axfr"] == 1
    await backend.apply(PLAN1)  # adds a CNAME: a server may drop that silently
    assert store.sent["axfr"] == 2
    # a hand edit moves the serial without us: the next pass transfers and repairs it
    _nsupdate(primary, "update delete www.example.hk A\nupdate add www.example.hk 60 A "
              "198.51.100.9")
    assert (await backend.apply(PLAN1)).changed == 1 and backend.stats.drift == 1
    assert store.sent["axfr"] == 3
    assert primary.q("www.example.hk")[1] == {"192.0.2.1", "192.0.2.2"}


async def test_a_write_from_the_verified_state_needs_no_read_and_is_still_guarded(
        primary: Primary, caplog: pytest.LogCaptureFixture) -> None:
    """After a verified write the next write goes out without an SOA query first (the
    UPDATE's SOA prerequisite proves the base); if the zone was edited meanwhile the
    server refuses it, and the write is redone from a fresh read: the edit is reported as
    drift and put back, nothing is clobbered silently."""
    v1 = plan(1, {("www.example.hk", "default"): [("A", "192.0.2.1", 1)],
                  ("api.example.hk", "default"): [("A", "192.0.2.10", 1)]})
    v2 = plan(2, {("www.example.hk", "default"): [("A", "192.0.2.2", 1)],
                  ("api.example.hk", "default"): [("A", "192.0.2.10", 1)]})
    v3 = plan(3, {("www.example.hk", "default"): [("A", "192.0.2.3", 1)],
                  ("api.example.hk", "default"): [("A", "192.0.2.10", 1)]})
    backend = primary.backend()
    store = store_of(backend)
    await backend.apply(v1)
    queries = store.sent["query"]
    assert (await backend.apply(v2)).changed == 1
    assert store.sent["query"] == queries + 1  # the serial check after the UPDATE only
    assert primary.q("www.example.hk")[1] == {"192.0.2.2"}
    _nsupdate(primary, "update delete api.example.hk A\n"
              "update add api.example.hk 60 A 198.51.100.10")
    caplog.set_level(logging.WARNING, "edgesteer.backends")
    assert (await backend.apply(v3)).changed == 2  # www, and api put back
    assert backend.stats.conflicts == 1 and backend.stats.drift == 1
    assert store.sent["update"] == 4  # v1, v2, v3 refused, v3 from the fresh read
    assert any("drift" in r.getMessage() and "api.example.hk" in r.getMessage()
               for r in caplog.records)
    assert primary.q("www.example.hk")[1] == {"192.0.2.3"}
    assert primary.q("api.example.hk")[1] == {"192.0.2.10"}


async def test_a_cname_the_server_drops_silently_is_caught_by_the_verify(
        primary: Primary) -> None:
    """RFC 2136 3.4.2.2: a CNAME added next to other data is ignored, yet NOERROR."""
    _nsupdate(primary, 'update add cdn.example.hk 60 TXT "not ours"')
    backend = primary.backend()
    alone = plan(1, {("cdn.example.hk", "default"): [("CNAME", "edge.cdn.example.net", 1)]})
    with pytest.raises(BackendError, match=r"NOERROR but the SOA serial did not move"):
        await backend.apply(alone)  # nothing else in the UPDATE: the serial says it
    both = plan(2, {("cdn.example.hk", "default"): [("CNAME", "edge.cdn.example.net", 1)],
                    ("www.example.hk", "default"): [("A", "192.0.2.1", 1)]})
    with pytest.raises(BackendError, match=r"verify after write found 1 RRsets still "
                       r"different.*cdn\.example\.hk\. CNAME"):
        await backend.apply(both)  # the serial moved (www): the transfer shows it
    assert primary.q("cdn.example.hk", "CNAME")[1] == set()
    assert primary.q("www.example.hk")[1] == {"192.0.2.1"}


async def test_an_edit_elsewhere_in_the_zone_between_read_and_write(
        primary: Primary, caplog: pytest.LogCaptureFixture) -> None:
    """The SOA prerequisite refuses on any edit; the retry with per-RRset prerequisites
    then succeeds, and the unrelated edit stays."""
    store = _racing_store(primary, "update add hand.example.hk 60 A 198.51.100.8")
    backend = SyncBackend(store, retry=FAST)
    await backend.apply(PLAN1)
    assert backend.stats.conflicts == 1 and store.sent["update"] == 2
    assert primary.q("www.example.hk")[1] == {"192.0.2.1", "192.0.2.2"}
    assert primary.q("hand.example.hk")[1] == {"198.51.100.8"}
    assert (await backend.apply(PLAN1)).changed == 0
