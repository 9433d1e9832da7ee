"""HTTP(S) probe: one GET with aiohttp, timed by phase, status and body checked.

Phases (seconds, monotonic), from aiohttp's TraceConfig signals:

- ``connect``: TCP handshake (connection-create start -> TLS start, or -> end for http)
- ``tls``: TLS handshake (https only, see below)
- ``ttfb``: request headers sent -> response headers received (server time + one rtt)
- ``total``: request start -> body read; this is the probe's ``rtt_s``

Name resolution never counts: the probe resolves the host first and requests the IP,
sending the name in ``Host`` and as TLS server name. The session keeps no connections
(``force_close``) so that every probe pays, and measures, its own handshakes.

aiohttp reports TCP connect and TLS handshake as one span; the split comes from the
session's SSLContext subclass, whose ``wrap_bio`` asyncio calls when the TCP connection is
up and the TLS handshake is about to start. It finds the probe's marks through a
ContextVar (the connection is made in the probing task). Where that hook does not fire,
``tls`` is absent and ``connect`` covers both handshakes.
"""

from __future__ import annotations

import contextvars
import functools
import socket
import ssl
import time
from collections.abc import Awaitable, Callable
from types import SimpleNamespace
from typing import Any

import aiohttp
import yarl

from probes.kinds._net import apply_link_options, classify, is_ip, resolve
from probes.kinds.base import Outcome, ProbeContext
from probes.spec import LinkBinding, TargetSpec

MAX_BODY = 1 << 20  # bytes read for body_match; the rest is not downloaded

_MARKS: contextvars.ContextVar[dict[str, float] | None] = contextvars.ContextVar(
    "edgesteer_http_marks", default=None
)


class _TimedSSLContext(ssl.SSLContext):
    """Notes when the TLS handshake starts, i.e. when the TCP handshake has finished."""

    def wrap_bio(
        self,
        incoming: ssl.MemoryBIO,
        outgoing: ssl.MemoryBIO,
        server_side: bool = False,
        server_hostname: str | bytes | None = None,
        session: ssl.SSLSession | None = None,
    ) -> ssl.SSLObject:
        marks = _MARKS.get()
        if marks is not None:
            marks.setdefault("tls_start", time.perf_counter())
        return super().wrap_bio(incoming, outgoing, server_side, server_hostname, session)


def tls_context(cafile: str | None = None) -> ssl.SSLContext:
    """A verifying client context (system CAs, or only ``cafile``) that times the handshake."""
    if cafile is None:
        return _system_tls_context()
    ctx = _TimedSSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.load_verify_locations(cafile)
    return ctx


@functools.cache
def _system_tls_context() -> ssl.SSLContext:
    # Loading the system CA store takes ~0.1 s; one context serves every session.
    ctx = _TimedSSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.load_default_certs()
    return ctx


def make_http_session(binding: LinkBinding, *, cafile: str | None = None) -> aiohttp.ClientSession:
    """A ClientSession whose connections leave over ``binding``; the caller closes it."""
    factory = None
    if binding.fwmark is not None or binding.device:
        factory = _socket_factory(binding)
    connector = aiohttp.TCPConnector(
        local_addr=(binding.source, 0) if binding.source else None,
        socket_factory=factory,
        force_close=True,
        limit=0,
        ssl=tls_context(cafile),
    )
    session = aiohttp.ClientSession(
        connector=connector,
        trace_configs=[_trace_config()],
        cookie_jar=aiohttp.DummyCookieJar(),
    )
    # A probe must never retry: aiohttp silently resends an idempotent request once when
    # the server drops the connection, which would hide loss and double the time. The
    # switch is private (aiohttp's own test client flips it the same way); the probe tests
    # count requests at the responder, so a rename upstream fails loudly there.
    session._retry_connection = False
    return session


def _socket_factory(binding: LinkBinding) -> Callable[[Any], socket.socket]:
    def factory(addr_info: Any) -> socket.socket:
        family, kind, proto = addr_info[0], addr_info[1], addr_info[2]
        sock = socket.socket(family, kind, proto)
        try:
            apply_link_options(sock, binding)
        except BaseException:
            sock.close()
            raise
        return sock

    return factory


def _trace_config() -> aiohttp.TraceConfig:
    trace = aiohttp.TraceConfig()
    trace.on_connection_create_start.append(_mark("conn_start"))
    trace.on_connection_create_end.append(_mark("conn_end"))
    trace.on_request_headers_sent.append(_mark("sent"))
    trace.on_request_end.append(_mark("headers"))
    return trace


def _mark(name: str) -> Callable[[aiohttp.ClientSession, SimpleNamespace, object], Awaitable[None]]:
    async def on_signal(_: aiohttp.ClientSession, ctx: SimpleNamespace, __: object) -> None:
        marks = ctx.trace_request_ctx
        if isinstance(marks, dict):
            marks.setdefault(name, time.perf_counter())

    return on_signal


async def probe_http(spec: TargetSpec, ctx: ProbeContext) -> Outcome:
    try:
        _, address = await resolve(spec.host, spec.port, ctx.binding)
    except OSError as exc:
        return Outcome.failed(classify(exc))
    session = ctx.http if ctx.http is not None else make_http_session(ctx.binding)
    marks: dict[str, float] = {}
    token = _MARKS.set(marks)
    try:
        return await _get(session, spec, ctx.timeout_s, str(address[0]), marks)
    finally:
        _MARKS.reset(token)
        if ctx.http is None:
            await session.close()


async def _get(
    session: aiohttp.ClientSession,
    spec: TargetSpec,
    timeout_s: float,
    ip: str,
    marks: dict[str, float],
) -> Outcome:
    path, _, query = spec.path.partition("?")
    try:
        url = yarl.URL.build(scheme=spec.scheme, host=ip, port=spec.port, path=path or "/",
                             query_string=query)
    except (TypeError, ValueError) as exc:
        return Outcome.failure("error", f"bad URL path {spec.path!r}: {exc}")
    server_hostname = spec.host if spec.scheme == "https" and not is_ip(spec.host) else None
    marks["start"] = time.perf_counter()
    try:
        async with session.get(
            url,
            headers={"Host": _host_header(spec)},
            server_hostname=server_hostname,
            allow_redirects=False,
            timeout=aiohttp.ClientTimeout(total=timeout_s),
            trace_request_ctx=marks,
        ) as resp:
            body = await _read_body(resp)
            marks["done"] = time.perf_counter()
            status, charset = resp.status, resp.charset or "utf-8"
    except TimeoutError:
        return Outcome.failure("timeout", f"no HTTP response within {timeout_s:g}s", _phases(marks))
    except (aiohttp.ClientSSLError, ssl.SSLError) as exc:
        return Outcome.failure("tls", str(exc), _phases(marks))
    except aiohttp.ClientConnectorError as exc:
        return Outcome.failed(classify(exc.os_error), _phases(marks))
    except aiohttp.ServerDisconnectedError:
        detail = "server closed the connection without a response"
        return Outcome.failure("reset", detail, _phases(marks))
    except aiohttp.ClientPayloadError as exc:
        return Outcome.failure("reset", f"response body cut short: {exc}", _phases(marks))
    except OSError as exc:
        return Outcome.failed(classify(exc), _phases(marks))
    except aiohttp.ClientError as exc:
        return Outcome.failure("error", f"{type(exc).__name__}: {exc}", _phases(marks))
    phases = _phases(marks)
    if status not in spec.expect_status:
        expected = ", ".join(str(s) for s in spec.expect_status)
        return Outcome.failure("bad_status", f"status {status}, expected {expected}", phases)
    if spec.body_match is not None and spec.body_match not in _text(body, charset):
        return Outcome.failure("bad_body", f"body does not contain {spec.body_match!r}", phases)
    return Outcome.success(phases["total"], phases)


async def _read_body(resp: aiohttp.ClientResponse) -> bytes:
    chunks: list[bytes] = []
    size = 0
    while size < MAX_BODY:
        chunk = await resp.content.read(MAX_BODY - size)
        if not chunk:
            break
        chunks.append(chunk)
        size += len(chunk)
    return b"".join(chunks)


def _text(body: bytes, charset: str) -> str:
    try:
        return body.decode(charset, "replace")
    except LookupError:  # the server named an encoding Python does not know
        return body.decode("utf-8", "replace")


def _host_header(spec: TargetSpec) -> str:
    host = f"[{spec.host}]" if ":" in spec.host else spec.host
    default = 443 if spec.scheme == "https" else 80
    return host if spec.port == default else f"{host}:{spec.port}"


def _phases(marks: dict[str, float]) -> dict[str, float]:
    phases: dict[str, float] = {}
    conn_start, conn_end = marks.get("conn_start"), marks.get("conn_end")
    tls_start = marks.get("tls_start")
    tcp_end = tls_start if tls_start is not None else conn_end
    if conn_start is not None and tcp_end is not None:
        phases["connect"] = tcp_end - conn_start
    if tls_start is not None and conn_end is not None:
        phases["tls"] = conn_end - tls_start
    if "headers" in marks:
        phases["ttfb"] = marks["headers"] - marks.get("sent", marks["start"])
    if "done" in marks:
        phases["total"] = marks["done"] - marks["start"]
    return phases
