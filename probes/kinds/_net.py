"""Socket plumbing shared by the probe kinds: leave over a link, resolve, classify errors.

Leaving over a link means, in this order: SO_MARK (policy routing by fwmark, needs
CAP_NET_ADMIN), SO_BINDTODEVICE (needs CAP_NET_RAW on older kernels), then bind to the
link's source address. Options must be set before connect() so that the very first packet
(the SYN) is routed over the link.
"""

from __future__ import annotations

import asyncio
import errno
import functools
import ipaddress
import socket
from typing import Any

import dns.exception
import dns.name

from probes.measurement import ProbeError
from probes.spec import LinkBinding

_UNREACHABLE = frozenset({errno.ENETUNREACH, errno.EHOSTUNREACH, errno.EHOSTDOWN, errno.ENETDOWN})
_RESET = frozenset({errno.ECONNRESET, errno.ECONNABORTED, errno.EPIPE})


class BindingError(OSError):
    """A socket could not be made to leave over its link; ``error`` says why and the fix.

    An OSError so that libraries which only pass OSError through (aiohttp's socket factory)
    hand it back to the probe unchanged.
    """

    def __init__(self, error: ProbeError, code: int = 0) -> None:
        super().__init__(code, str(error))
        self.error = error


def family_of(address: str) -> socket.AddressFamily:
    family = literal_family(address)
    if family is None:
        raise ValueError(f"{address!r} is not an IP address")
    return family


def is_ip(host: str) -> bool:
    return literal_family(host) is not None


@functools.lru_cache(maxsize=65536)
def literal_family(host: str) -> socket.AddressFamily | None:
    """AF_INET / AF_INET6 for an IP literal, None for anything else. Cached: an agent asks
    this for the same few thousand targets on every probe."""
    try:
        version = ipaddress.ip_address(host).version
    except ValueError:
        return None
    return socket.AF_INET6 if version == 6 else socket.AF_INET


def apply_link_options(sock: socket.socket, binding: LinkBinding) -> None:
    """Set SO_MARK / SO_BINDTODEVICE from ``binding``; raise BindingError when not allowed."""
    if binding.fwmark is not None:
        opt = getattr(socket, "SO_MARK", None)
        if opt is None:
            raise BindingError(ProbeError("error", "SO_MARK (fwmark) is Linux-only"))
        _setopt(sock, opt, binding.fwmark, binding, f"SO_MARK {binding.fwmark}", "CAP_NET_ADMIN")
    if binding.device:
        opt = getattr(socket, "SO_BINDTODEVICE", None)
        if opt is None:
            raise BindingError(ProbeError("error", "SO_BINDTODEVICE (device) is Linux-only"))
        value = binding.device.encode()
        _setopt(sock, opt, value, binding, f"SO_BINDTODEVICE {binding.device}", "CAP_NET_RAW")


def _setopt(
    sock: socket.socket, opt: int, value: int | bytes, binding: LinkBinding, what: str, cap: str
) -> None:
    try:
        sock.setsockopt(socket.SOL_SOCKET, opt, value)
    except PermissionError as exc:
        msg = f"{what} for link {binding.link!r} not allowed: needs root or {cap}"
        raise BindingError(ProbeError("permission", msg), exc.errno or errno.EPERM) from exc
    except OSError as exc:
        msg = f"{what} for link {binding.link!r} failed: {exc.strerror or exc}"
        raise BindingError(ProbeError("error", msg), exc.errno or 0) from exc


def open_socket(family: int, kind: int, binding: LinkBinding) -> socket.socket:
    """A non-blocking socket that leaves over ``binding`` (options set, source bound)."""
    sock = socket.socket(family, kind)
    try:
        sock.setblocking(False)
        apply_link_options(sock, binding)
        if binding.source:
            try:
                sock.bind((binding.source, 0))
            except OSError as exc:
                msg = (
                    f"cannot bind source {binding.source} for link {binding.link!r}: "
                    f"{exc.strerror or exc} (is the address configured on this host?)"
                )
                raise BindingError(ProbeError("error", msg), exc.errno or 0) from exc
    except BaseException:
        sock.close()
        raise
    return sock


async def resolve(
    host: str, port: int, binding: LinkBinding, kind: int = socket.SOCK_STREAM
) -> tuple[socket.AddressFamily, Any]:
    """(family, sockaddr) for ``host``: literal addresses as is, names via getaddrinfo.

    Called before a probe starts its clock, so name resolution never counts in an rtt.
    The family follows the link's source address when it has one.
    """
    family: int = socket.AF_UNSPEC
    if binding.source:
        source_family = literal_family(binding.source)
        if source_family is None:
            msg = f"source {binding.source!r} of link {binding.link!r} is not an IP address"
            raise BindingError(ProbeError("error", msg))
        family = source_family
    ip_family = literal_family(host)
    if ip_family is not None:
        if ip_family == socket.AF_INET6:
            return ip_family, (host, port, 0, 0)
        return ip_family, (host, port)
    check_name(host)
    infos = await asyncio.get_running_loop().getaddrinfo(host, port, family=family, type=kind)
    fam, _, _, _, sockaddr = infos[0]
    return fam, sockaddr


def check_name(host: str) -> None:
    """Refuse, without asking any resolver, what can only be a mistyped address or name.

    ``999.1.1.1`` or ``2001:db8::zz`` are broken addresses, not names to look up; a label
    longer than 63 octets or an empty label cannot be resolved either.
    """
    if ":" in host or all(c.isdigit() or c == "." for c in host):
        raise BindingError(ProbeError("error", f"invalid address {host!r}"))
    try:
        dns.name.from_text(host)
    except dns.exception.DNSException as exc:
        raise BindingError(ProbeError("error", f"invalid host name {host!r}: {exc}")) from exc


def classify(exc: BaseException) -> ProbeError:
    """Map an exception raised while probing to the ProbeError a health check can act on."""
    if isinstance(exc, BindingError):
        return exc.error
    if isinstance(exc, socket.gaierror):
        return ProbeError("error", f"name resolution failed: {exc}")
    if isinstance(exc, TimeoutError):
        return ProbeError("timeout", str(exc) or "timed out")
    if not isinstance(exc, OSError):
        return ProbeError("error", f"{type(exc).__name__}: {exc}")
    # By errno, not by class: wrappers such as aiohttp's ClientOSError keep only the errno.
    detail = exc.strerror or str(exc)
    if exc.errno == errno.ECONNREFUSED:
        return ProbeError("refused", detail or "connection refused")
    if exc.errno in _RESET:
        return ProbeError("reset", detail or "connection reset")
    if exc.errno in (errno.EPERM, errno.EACCES):
        return ProbeError("permission", detail or "not permitted")
    if exc.errno in _UNREACHABLE:
        return ProbeError("unreachable", detail or "unreachable")
    if exc.errno == errno.ETIMEDOUT:
        return ProbeError("timeout", detail or "timed out")
    return ProbeError("error", f"{type(exc).__name__}: {exc}")
