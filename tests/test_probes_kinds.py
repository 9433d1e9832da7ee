"""Probe kinds against real responders on loopback: success, every failure kind, binding."""

from __future__ import annotations

import asyncio
import errno
import os
import socket
import ssl
import subprocess
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from edge.lab.responders import (
    DnsResponder,
    HttpResponder,
    Impairment,
    ImpairmentTable,
    TcpResponder,
)
from probes.kinds import PROBERS, Outcome, ProbeContext, make_http_session
from probes.kinds._net import BindingError, classify
from probes.kinds.icmp import permission_help, ping
from probes.measurement import PathKey, ProbeError, ProbeKind
from probes.spec import LinkBinding, TargetSpec
from tests.conftest import IS_ROOT, free_port, require, require_binary

FAST, SLOW, LOST = "127.0.1.1", "127.0.2.1", "127.0.3.1"
# With net.ipv4.ip_nonlocal_bind=1 a foreign source address binds fine (see require() below).
NONLOCAL_BIND = Path("/proc/sys/net/ipv4/ip_nonlocal_bind").read_text().strip() != "0"


def link(source: str = FAST, **kw: object) -> LinkBinding:
    return LinkBinding("lk", source=source, **kw)  # type: ignore[arg-type]


def ctx(source: str = FAST, timeout_s: float = 1.0, **kw: object) -> ProbeContext:
    return ProbeContext(link(source, **kw), timeout_s)


def target(kind: ProbeKind, port: int, **kw: object) -> TargetSpec:
    return TargetSpec("t", kind, str(kw.pop("host", "127.0.0.1")), port, 1.0, 1.0, **kw)  # type: ignore[arg-type]


async def probe(spec: TargetSpec, context: ProbeContext) -> Outcome:
    outcome = await PROBERS[spec.kind](spec, context)
    # whatever happened, it converts into a valid Sample
    outcome.to_sample(PathKey("n", context.binding.link, spec.name), spec.kind, 0.0)
    return outcome


def assert_failed(outcome: Outcome, kind: str, text: str = "") -> ProbeError:
    assert not outcome.ok, outcome
    assert outcome.error is not None and outcome.error.kind == kind, outcome
    assert text in outcome.error.detail, outcome.error
    return outcome.error


def assert_rtt(outcome: Outcome, low: float, high: float) -> None:
    assert outcome.ok, outcome
    assert outcome.rtt_s is not None and low <= outcome.rtt_s <= high, outcome


@pytest.fixture
def table() -> ImpairmentTable:
    t = ImpairmentTable(seed=5)
    t.set(SLOW, Impairment(delay_ms=50))
    t.set(LOST, Impairment(loss=1.0))
    return t


@pytest.fixture
async def dns_server(table: ImpairmentTable) -> AsyncIterator[DnsResponder]:
    responder = DnsResponder(table)
    await responder.start()
    yield responder
    await responder.aclose()


@pytest.fixture
async def http_server(table: ImpairmentTable) -> AsyncIterator[HttpResponder]:
    responder = HttpResponder(table, body=b"service ok")
    await responder.start()
    yield responder
    await responder.aclose()


@pytest.fixture
async def tcp_server(table: ImpairmentTable) -> AsyncIterator[TcpResponder]:
    responder = TcpResponder(table)
    await responder.start()
    yield responder
    await responder.aclose()


@pytest.fixture
def full_backlog() -> Iterator[int]:
    """A listening port whose accept queue is full: Linux drops further SYNs -> timeout."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(0)
    port = server.getsockname()[1]
    filler = socket.create_connection(("127.0.0.1", port), timeout=1)
    yield port
    filler.close()
    server.close()


# ------------------------------------------------------------------ TCP


async def test_tcp_connects_and_leaves_from_the_link_source(tcp_server: TcpResponder) -> None:
    outcome = await probe(target(ProbeKind.TCP, tcp_server.port), ctx(SLOW))
    assert_rtt(outcome, 0.0, 0.5)
    assert set(outcome.phases) == {"connect"}
    async with asyncio.timeout(2):  # the responder counts once its handler runs
        while not tcp_server.connections:  # noqa: ASYNC110 - a counter, not an event
            await asyncio.sleep(0.005)
    assert tcp_server.connections == {SLOW: 1}


async def test_tcp_refused_on_a_closed_port() -> None:
    outcome = await probe(target(ProbeKind.TCP, free_port()), ctx())
    assert_failed(outcome, "refused")


async def test_tcp_times_out_when_syns_are_dropped(full_backlog: int) -> None:
    outcome = await probe(target(ProbeKind.TCP, full_backlog), ctx(timeout_s=0.2))
    assert_failed(outcome, "timeout", "0.2s")


# ------------------------------------------------------------------ HTTP


async def test_http_success_rtt_follows_the_injected_delay(http_server: HttpResponder) -> None:
    spec = target(ProbeKind.HTTP, http_server.port, path="/health?full=1", body_match="ok")
    outcome = await probe(spec, ctx(SLOW))
    assert_rtt(outcome, 0.045, 0.5)
    assert {"connect", "ttfb", "total"} <= set(outcome.phases)
    assert "tls" not in outcome.phases
    assert outcome.phases["ttfb"] >= 0.045
    assert outcome.phases["total"] == outcome.rtt_s
    # the other link is not delayed (best of 3: one load spike on a busy box is no verdict)
    fast = [await probe(spec, ctx(FAST)) for _ in range(3)]
    assert all(o.ok for o in fast) and min(o.rtt_s or 1.0 for o in fast) < 0.045
    assert http_server.requests == {SLOW: 1, FAST: 3}


async def test_http_bad_status_and_bad_body(http_server: HttpResponder) -> None:
    http_server.status = 503
    outcome = await probe(target(ProbeKind.HTTP, http_server.port), ctx())
    assert_failed(outcome, "bad_status", "status 503, expected 200")
    assert "total" in outcome.phases
    allowed = target(ProbeKind.HTTP, http_server.port, expect_status=(200, 503))
    assert (await probe(allowed, ctx())).ok
    http_server.status = 200
    wrong = target(ProbeKind.HTTP, http_server.port, body_match="degraded")
    assert_failed(await probe(wrong, ctx()), "bad_body", "'degraded'")


async def test_http_refused_and_timeout(http_server: HttpResponder, table: ImpairmentTable) -> None:
    assert_failed(await probe(target(ProbeKind.HTTP, free_port()), ctx()), "refused")
    table.set(SLOW, Impairment(delay_ms=1000))
    outcome = await probe(target(ProbeKind.HTTP, http_server.port), ctx(SLOW, timeout_s=0.2))
    assert_failed(outcome, "timeout")


async def test_http_lost_request_is_a_reset_and_never_retried(http_server: HttpResponder) -> None:
    outcome = await probe(target(ProbeKind.HTTP, http_server.port), ctx(LOST))
    assert_failed(outcome, "reset")
    assert http_server.requests == {LOST: 1}  # aiohttp's silent retry is off


async def test_http_uses_the_given_session_and_leaves_it_open(http_server: HttpResponder) -> None:
    binding = link(SLOW)
    session = make_http_session(binding)
    try:
        for _ in range(2):
            spec = target(ProbeKind.HTTP, http_server.port)
            assert (await probe(spec, ProbeContext(binding, 1.0, session))).ok
        assert not session.closed
    finally:
        await session.close()
    assert http_server.requests == {SLOW: 2}


@pytest.fixture(scope="module")
def certificate(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, str]:
    openssl = require_binary("openssl", "openssl")
    d = tmp_path_factory.mktemp("tls")
    cert, key = d / "cert.pem", d / "key.pem"
    subprocess.run(
        [openssl, "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
         "-nodes", "-keyout", str(key), "-out", str(cert), "-days", "2", "-subj", "/CN=localhost",
         "-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1"],
        check=True, capture_output=True, timeout=30,
    )
    return str(cert), str(key)


@pytest.fixture
async def https_server(
    table: ImpairmentTable, certificate: tuple[str, str]
) -> AsyncIterator[HttpResponder]:
    server_ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_ctx.load_cert_chain(*certificate)
    responder = HttpResponder(table, ssl_context=server_ctx)
    await responder.start()
    yield responder
    await responder.aclose()


@pytest.mark.parametrize("host", ["127.0.0.1", "localhost"])
async def test_https_measures_tls_separately(
    https_server: HttpResponder, certificate: tuple[str, str], host: str
) -> None:
    binding = link(FAST)
    session = make_http_session(binding, cafile=certificate[0])
    try:
        spec = target(ProbeKind.HTTP, https_server.port, scheme="https", host=host)
        outcome = await probe(spec, ProbeContext(binding, 2.0, session))
    finally:
        await session.close()
    assert outcome.ok, outcome
    assert {"connect", "tls", "ttfb", "total"} <= set(outcome.phases)
    assert outcome.phases["tls"] > 0
    parts = outcome.phases["connect"] + outcome.phases["tls"] + outcome.phases["ttfb"]
    assert parts <= outcome.phases["total"]


async def test_https_untrusted_certificate_is_a_tls_error(https_server: HttpResponder) -> None:
    spec = target(ProbeKind.HTTP, https_server.port, scheme="https")
    assert_failed(await probe(spec, ctx()), "tls", "certificate")


# ------------------------------------------------------------------ DNS


@pytest.mark.parametrize("transport", ["udp", "tcp"])
async def test_dns_success_rtt_follows_the_injected_delay(
    dns_server: DnsResponder, transport: str
) -> None:
    spec = target(ProbeKind.DNS, dns_server.port, qname="www.example.hk", qtype="A",
                  transport=transport, expect_answer="192.0.2.1")
    outcome = await probe(spec, ctx(SLOW))
    assert_rtt(outcome, 0.045, 0.5)
    assert "query" in outcome.phases
    assert ("connect" in outcome.phases) == (transport == "tcp")
    fast = [await probe(spec, ctx(FAST)) for _ in range(3)]  # best of 3, as for HTTP
    assert all(o.ok for o in fast) and min(o.rtt_s or 1.0 for o in fast) < 0.045
    assert dns_server.queries == {SLOW: 1, FAST: 3}


@pytest.mark.parametrize("transport", ["udp", "tcp"])
async def test_dns_refused_on_a_closed_port(transport: str) -> None:
    spec = target(ProbeKind.DNS, free_port(), transport=transport)
    assert_failed(await probe(spec, ctx()), "refused")


@pytest.mark.parametrize("transport", ["udp", "tcp"])
async def test_dns_timeout_when_every_reply_is_lost(
    dns_server: DnsResponder, transport: str
) -> None:
    spec = target(ProbeKind.DNS, dns_server.port, transport=transport)
    assert_failed(await probe(spec, ctx(LOST, timeout_s=0.2)), "timeout", "0.2s")


async def test_dns_rcode_and_answer_checks(dns_server: DnsResponder) -> None:
    soa = target(ProbeKind.DNS, dns_server.port, qname="example.hk", qtype="SOA")
    assert (await probe(soa, ctx())).ok
    nx = target(ProbeKind.DNS, dns_server.port, expect_rcode="NXDOMAIN")
    assert_failed(await probe(nx, ctx()), "rcode", "rcode NOERROR, expected NXDOMAIN")
    dns_server.rcode = "SERVFAIL"
    assert_failed(await probe(soa, ctx()), "rcode", "rcode SERVFAIL")
    assert (await probe(target(ProbeKind.DNS, dns_server.port, expect_rcode="SERVFAIL"),
                        ctx())).ok
    dns_server.rcode = "NOERROR"
    wrong = target(ProbeKind.DNS, dns_server.port, qname="example.hk", qtype="A",
                   expect_answer="192.0.2.99")
    assert_failed(await probe(wrong, ctx()), "bad_answer", "192.0.2.99")
    name = target(ProbeKind.DNS, dns_server.port, qname="Example.HK", qtype="SOA",
                  expect_answer="ns1.example.hk. hostmaster.example.hk. 1 3600 600 604800 60")
    assert (await probe(name, ctx())).ok


async def test_dns_bad_query_type_is_an_error_not_an_exception() -> None:
    spec = target(ProbeKind.DNS, 53, qtype="NOTATYPE")
    assert_failed(await probe(spec, ctx()), "error", "NOTATYPE")


# ------------------------------------------------------------------ binding


ALL_KINDS = [ProbeKind.TCP, ProbeKind.HTTP, ProbeKind.DNS, ProbeKind.ICMP]


@pytest.mark.parametrize("kind", ALL_KINDS)
async def test_fwmark_and_device_are_applied(
    kind: ProbeKind,
    tcp_server: TcpResponder,
    http_server: HttpResponder,
    dns_server: DnsResponder,
) -> None:
    port = {ProbeKind.TCP: tcp_server.port, ProbeKind.HTTP: http_server.port,
            ProbeKind.DNS: dns_server.port, ProbeKind.ICMP: 0}[kind]
    outcome = await probe(target(kind, port), ctx(FAST, fwmark=7, device="lo"))
    if IS_ROOT:
        assert outcome.ok, outcome
    else:  # SO_MARK needs CAP_NET_ADMIN (ICMP may already lack its socket)
        assert_failed(outcome, "permission")


@pytest.mark.parametrize("kind", ALL_KINDS)
async def test_unknown_device_and_foreign_source_are_clear_errors(kind: ProbeKind) -> None:
    port = free_port()
    outcome = await probe(target(kind, port), ctx("not-an-ip"))
    assert_failed(outcome, "error", "'not-an-ip' of link 'lk' is not an IP address")
    if kind is ProbeKind.ICMP and not (IS_ROOT or _unprivileged_icmp_allowed()):
        assert_failed(await probe(target(kind, port), ctx()), "permission")
        return  # no ICMP socket at all here, so nothing further to bind
    outcome = await probe(target(kind, port), ctx(FAST, device="nosuchdev0"))
    if IS_ROOT:
        assert_failed(outcome, "error", "SO_BINDTODEVICE nosuchdev0")
    else:
        assert not outcome.ok


@pytest.mark.parametrize("kind", ALL_KINDS)
async def test_a_source_address_not_on_this_host_is_a_clear_error(kind: ProbeKind) -> None:
    require(not NONLOCAL_BIND, "net.ipv4.ip_nonlocal_bind=1 lets a foreign source bind: "
            "set it to 0 to check that a source not on this host is refused")
    if kind is ProbeKind.ICMP:
        require(IS_ROOT or _unprivileged_icmp_allowed(), "no ICMP socket here (not root, "
                "net.ipv4.ping_group_range excludes us)")
    outcome = await probe(target(kind, free_port()), ctx("192.0.2.55"))  # bind fails: no send
    assert not outcome.ok
    assert outcome.error is not None and "192.0.2.55" in outcome.error.detail


@pytest.mark.parametrize(
    ("exc", "kind"),
    [
        (ConnectionRefusedError(errno.ECONNREFUSED, "refused"), "refused"),
        (OSError(errno.ECONNREFUSED, "wrapped"), "refused"),
        (OSError(errno.ECONNRESET, "reset"), "reset"),
        (BrokenPipeError(errno.EPIPE, "pipe"), "reset"),
        (OSError(errno.ENETUNREACH, "net"), "unreachable"),
        (OSError(errno.EHOSTUNREACH, "host"), "unreachable"),
        (PermissionError(errno.EPERM, "perm"), "permission"),
        (OSError(errno.ETIMEDOUT, "slow"), "timeout"),
        (TimeoutError(), "timeout"),
        (socket.gaierror(socket.EAI_NONAME, "unknown"), "error"),
        (ValueError("odd"), "error"),
        (BindingError(ProbeError("permission", "needs X")), "permission"),
    ],
)
def test_classify(exc: BaseException, kind: str) -> None:
    assert classify(exc).kind == kind


# ------------------------------------------------------------------ ICMP


def _unprivileged_icmp_allowed() -> bool:
    try:
        low, high = map(int, Path("/proc/sys/net/ipv4/ping_group_range").read_text().split())
    except (OSError, ValueError):
        return False
    return any(low <= g <= high for g in {os.getgid(), *os.getgroups()})


async def test_icmp_echo_to_loopback() -> None:
    spec = target(ProbeKind.ICMP, 0)
    outcome = await probe(spec, ctx(SLOW))
    if IS_ROOT or _unprivileged_icmp_allowed():
        assert_rtt(outcome, 0.0, 0.5)
        assert set(outcome.phases) == {"echo"}
    else:
        assert_failed(outcome, "permission", "ping_group_range")


async def test_icmp_unprivileged_socket_follows_ping_group_range() -> None:
    outcome = await ping(target(ProbeKind.ICMP, 0), ctx(FAST), privileged=(False,))
    if _unprivileged_icmp_allowed():
        assert outcome.ok, outcome
    else:
        error = assert_failed(outcome, "permission", "net.ipv4.ping_group_range")
        assert f"gid {os.getgid()}" in error.detail
        assert "CAP_NET_RAW" not in error.detail  # only what was tried is named


def test_icmp_permission_help_names_both_fixes() -> None:
    text = permission_help((True, False))
    assert "CAP_NET_RAW" in text and "ping_group_range" in text
