"""Value converters used by the spec tables: check one string and return its normal form.

Each raises ``Invalid`` with a message that says what was expected and what was found.
"""

from __future__ import annotations

import re

import dns.exception
import dns.name
import dns.rcode
import dns.rdatatype
import netaddr

from edge.config.spec import Invalid

_LABEL = re.compile(r"[a-z0-9_]([a-z0-9_-]*[a-z0-9_])?")


def _parse_ip(text: str) -> netaddr.IPAddress | None:
    try:
        return netaddr.IPAddress(text)
    except (netaddr.AddrFormatError, ValueError, TypeError):
        return None


def ip_address(text: str) -> str:
    ip = _parse_ip(text)
    if ip is None:
        raise Invalid(f"expected an IP address, found {_q(text)}")
    return str(ip)


def ipv4_address(text: str) -> str:
    ip = _parse_ip(text)
    if ip is None:
        raise Invalid(f"expected an IPv4 address, found {_q(text)}")
    if ip.version != 4:
        raise Invalid(f"expected an IPv4 address, found IPv6 address {_q(text)}",
                      "IPv6 addresses go in the v6 list")
    return str(ip)


def ipv6_address(text: str) -> str:
    ip = _parse_ip(text)
    if ip is None:
        raise Invalid(f"expected an IPv6 address, found {_q(text)}")
    if ip.version != 6:
        raise Invalid(f"expected an IPv6 address, found IPv4 address {_q(text)}",
                      "IPv4 addresses go in the v4 list")
    return str(ip)


def cidr(text: str) -> str:
    """A network in CIDR form; a bare address is a /32 (/128). Host bits must be zero."""
    try:
        net = netaddr.IPNetwork(text)
    except (netaddr.AddrFormatError, ValueError, TypeError):
        raise Invalid(f"expected a CIDR like 202.96.0.0/13 or 2001:db8::/32, "
                      f"found {_q(text)}") from None
    if net.ip != net.network:
        raise Invalid(f"expected a network address, found {_q(text)} with host bits set",
                      f"write {net.cidr}")
    return str(net.cidr)


def dns_name(text: str) -> str:
    """A DNS name: lower case, without the trailing dot. The root is not allowed."""
    name = text.strip().lower().removesuffix(".")
    if not name:
        raise Invalid(f"expected a DNS name, found {_q(text)}")
    _check_labels(text, name)
    return name


def qname(text: str) -> str:
    """Like ``dns_name`` but the root ``.`` is allowed."""
    if text.strip() == ".":
        return "."
    return dns_name(text)


def mailbox(text: str) -> str:
    """The SOA rname in DNS form (``hostmaster.example.hk``)."""
    if "@" in text:
        raise Invalid(f"expected a mailbox in DNS form, found {_q(text)}",
                      f"write {text.replace('@', '.', 1)}")
    return dns_name(text)


def _check_labels(text: str, name: str) -> None:
    try:
        dns.name.from_text(name)
    except dns.exception.DNSException as exc:
        raise Invalid(f"expected a DNS name, found {_q(text)}: {exc}") from None
    for label in name.split("."):
        if not _LABEL.fullmatch(label):
            raise Invalid(f"expected a DNS name (letters, digits, '-' and '_'), "
                          f"found {_q(text)}")


def host(text: str) -> str:
    """An IP address or a host name."""
    ip = _parse_ip(text)
    if ip is not None:
        return str(ip)
    try:
        return dns_name(text)
    except Invalid:
        raise Invalid(f"expected an IP address or a host name, found {_q(text)}") from None


def rdatatype(text: str) -> str:
    try:
        value = dns.rdatatype.from_text(text)
    except dns.exception.DNSException:
        raise Invalid(f"expected a DNS record type name (A, AAAA, SOA, ...), "
                      f"found {_q(text)}") from None
    return dns.rdatatype.to_text(value)


def rcode(text: str) -> str:
    try:
        if text.strip().isdigit():
            raise dns.rcode.UnknownRcode
        value = dns.rcode.from_text(text)
    except dns.exception.DNSException:
        raise Invalid(f"expected a DNS rcode name (NOERROR, NXDOMAIN, SERVFAIL, ...), "
                      f"found {_q(text)}") from None
    return dns.rcode.to_text(value)


def country(text: str) -> str:
    if re.fullmatch(r"[A-Z]{2}", text):
        return text
    fix = f"write {text.upper()}" if re.fullmatch(r"[A-Za-z]{2}", text) else None
    raise Invalid(f"expected an ISO 3166 alpha-2 country code in upper case, found {_q(text)}",
                  fix)


def listen(text: str) -> tuple[str, int]:
    """``host:port`` or ``[v6]:port``; host is an IP address, port 0..65535 (0 = any)."""
    m = re.fullmatch(r"\[([^\]]+)\]:(\d+)|([^:\[\]]+):(\d+)", text.strip())
    if m is None:
        raise Invalid(f"expected HOST:PORT (IPv6 as [ADDR]:PORT), found {_q(text)}",
                      "e.g. 127.0.0.1:5353 or [::1]:5353")
    addr, port_text = (m.group(1), m.group(2)) if m.group(1) else (m.group(3), m.group(4))
    ip = _parse_ip(addr)
    if ip is None or (m.group(1) is not None) != (ip.version == 6):
        raise Invalid(f"expected an IP address before the port, found {_q(text)}",
                      "e.g. 127.0.0.1:5353 or [::1]:5353")
    port = int(port_text)
    if port > 65535:
        raise Invalid(f"expected a port from 0 to 65535, found {port} in {_q(text)}")
    return str(ip), port


def _q(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def community(text: str) -> str:
    """A standard BGP community ``ASN:VALUE``, both 0..65535 (RFC 1997)."""
    parts = str(text).strip().split(":")
    if len(parts) != 2 or not all(re.fullmatch("[0-9]{1,10}", p) and int(p) <= 65535
                                  for p in parts):
        raise Invalid(f"expected a BGP community ASN:VALUE (each 0..65535), found {_q(text)}",
                      "e.g. 64500:100; a 32-bit ASN needs a large community A:B:C")
    return f"{int(parts[0])}:{int(parts[1])}"


def large_community(text: str) -> str:
    """A BGP large community ``A:B:C``, each 0..4294967295 (RFC 8092)."""
    parts = str(text).strip().split(":")
    if len(parts) != 3 or not all(re.fullmatch("[0-9]{1,10}", p) and int(p) <= 4294967295
                                  for p in parts):
        raise Invalid(f"expected a BGP large community A:B:C (each 0..4294967295), "
                      f"found {_q(text)}", "e.g. 4200000000:1:2")
    return ":".join(str(int(p)) for p in parts)


def host_port(text: str) -> tuple[str, int]:
    """``host:port`` or ``[v6]:port`` where host is an IP address or a host name; port 1..65535."""
    m = re.fullmatch(r"\[([^\]]+)\]:(\d+)|([^:\[\]]+):(\d+)", str(text).strip())
    if m is None:
        raise Invalid(f"expected HOST:PORT, found {_q(str(text))}", "e.g. 10.0.0.5:26379")
    addr, port_text = (m.group(1), m.group(2)) if m.group(1) else (m.group(3), m.group(4))
    port = int(port_text)
    if not 1 <= port <= 65535:
        raise Invalid(f"expected a port from 1 to 65535, found {port} in {_q(str(text))}")
    return host(addr), port
