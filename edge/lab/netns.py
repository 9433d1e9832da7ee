"""Network namespaces for the lab: real links between isolated hosts on one machine (root).

Loopback cannot emulate everything: the kernel answers ICMP echo and completes TCP
handshakes itself, before any userspace responder can delay them. Namespaces give each
emulated host its own stack:

- :func:`echo_pair`: a client namespace and a server namespace joined by a veth pair; the
  server's kernel echo is switched off so that a userspace echo responder
  (:mod:`edge.lab.echo`) answers, with delay, jitter and loss.
- :func:`forwarded_pair`: client and server namespaces each joined by a veth to a middle
  namespace where a userspace forwarder (:mod:`edge.lab.forwarder`) bridges frames between
  the two veths, delaying, dropping and reordering them: a packet-level link, so TCP
  handshakes (and everything else) see the impairment.

Code in this process can work *inside* a namespace with :meth:`Netns.entered`: the calling
thread switches namespace (``setns``), and every socket it creates there stays there after
it switches back. The helpers run in a subprocess with :meth:`Netns.popen`.

Every namespace made here is deleted by :meth:`Netns.delete` (idempotent); the context
managers delete on the way out even when the body fails. Names are unique per call.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import itertools
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

CLONE_NEWNET = 0x40000000
_counter = itertools.count()
_libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)


class NetnsError(RuntimeError):
    """A namespace command failed; the message has the command and its stderr."""


def unique_name(prefix: str = "es") -> str:
    """A namespace (or interface) name unique on this host, at most 15 characters."""
    return f"{prefix[:4]}{os.getpid() % 100000}x{next(_counter)}"[:15]


def _ip(*args: str) -> None:
    run(["ip", *args])


def run(argv: Sequence[str]) -> str:
    done = subprocess.run(list(argv), capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise NetnsError(f"{' '.join(argv)}: {done.stderr.strip() or done.returncode}")
    return done.stdout


def _setns(fd: int) -> None:
    if _libc.setns(fd, CLONE_NEWNET) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"setns: {os.strerror(err)}")


class Netns:
    """One named network namespace (``ip netns``), loopback up."""

    def __init__(self, name: str) -> None:
        self.name = name
        self._alive = False

    @classmethod
    def create(cls, prefix: str = "es") -> Netns:
        ns = cls(unique_name(prefix))
        _ip("netns", "add", ns.name)
        ns._alive = True
        try:
            ns.exec("ip", "link", "set", "lo", "up")
            # no IPv6 autoconf chatter on the lab links
            ns.sysctl("net.ipv6.conf.all.disable_ipv6", "1")
            ns.sysctl("net.ipv6.conf.default.disable_ipv6", "1")
        except BaseException:
            ns.delete()
            raise
        return ns

    def exec(self, *argv: str) -> str:
        return run(["ip", "netns", "exec", self.name, *argv])

    def sysctl(self, key: str, value: str) -> None:
        self.exec("sysctl", "-q", "-w", f"{key}={value}")

    def popen(self, argv: Sequence[str]) -> subprocess.Popen[str]:
        """Start ``argv`` inside the namespace (stdout piped, text mode)."""
        return subprocess.Popen(["ip", "netns", "exec", self.name, *argv],
                                stdout=subprocess.PIPE, text=True)

    def python(self, module: str, *args: str) -> subprocess.Popen[str]:
        """``python -m module args`` inside the namespace, with this interpreter."""
        return self.popen([sys.executable, "-m", module, *args])

    @contextlib.contextmanager
    def entered(self) -> Iterator[None]:
        """Switch the calling thread into this namespace for the block.

        Sockets made inside belong to the namespace for their whole life. Only this thread
        moves: code run on other threads (e.g. getaddrinfo in an executor) does not.
        """
        own = os.open("/proc/thread-self/ns/net", os.O_RDONLY)
        try:
            target = os.open(f"/var/run/netns/{self.name}", os.O_RDONLY)
            try:
                _setns(target)
            finally:
                os.close(target)
            try:
                yield
            finally:
                _setns(own)
        finally:
            os.close(own)

    def set_resolver(self, nameserver: str) -> None:
        """Programs run with :meth:`exec` / :meth:`popen` see ``nameserver`` in their
        /etc/resolv.conf (``ip netns exec`` bind-mounts /etc/netns/NAME/resolv.conf)."""
        os.makedirs(f"/etc/netns/{self.name}", exist_ok=True)
        with open(f"/etc/netns/{self.name}/resolv.conf", "w", encoding="ascii") as f:
            f.write(f"nameserver {nameserver}\n")

    def delete(self) -> None:
        if self._alive:
            self._alive = False
            with contextlib.suppress(NetnsError):
                _ip("netns", "delete", self.name)
            shutil.rmtree(f"/etc/netns/{self.name}", ignore_errors=True)


def veth(a: Netns, a_if: str, b: Netns, b_if: str, *, a_addr: str | None = None,
         b_addr: str | None = None) -> None:
    """A veth pair, ``a_if`` in ``a`` and ``b_if`` in ``b``, both up, with optional CIDRs."""
    tmp_a, tmp_b = unique_name("va"), unique_name("vb")
    _ip("link", "add", tmp_a, "type", "veth", "peer", "name", tmp_b)
    try:
        _ip("link", "set", tmp_a, "netns", a.name)
        _ip("link", "set", tmp_b, "netns", b.name)
    except BaseException:
        with contextlib.suppress(NetnsError):
            _ip("link", "delete", tmp_a)
        raise
    for ns, tmp, name, addr in ((a, tmp_a, a_if, a_addr), (b, tmp_b, b_if, b_addr)):
        ns.exec("ip", "link", "set", tmp, "name", name)
        # No offloads: a forwarder reading frames must see them as they would be on a wire
        # (complete checksums, no segments larger than the MTU).
        try:
            ns.exec("ethtool", "-K", name, "tx", "off", "rx", "off", "tso", "off", "gso",
                    "off", "gro", "off")
        except FileNotFoundError as exc:
            raise NetnsError("ethtool not found (apt-get install ethtool)") from exc
        if addr is not None:
            ns.exec("ip", "addr", "add", addr, "dev", name)
        ns.exec("ip", "link", "set", name, "up")


@dataclass(frozen=True, slots=True)
class Pair:
    """Client and server namespaces and their addresses (``middle`` when forwarded)."""

    client: Netns
    server: Netns
    client_addr: str
    server_addr: str
    middle: Netns | None = None


CLIENT_ADDR = "198.18.0.1"  # RFC 2544 benchmarking range, only ever inside lab namespaces
SERVER_ADDR = "198.18.0.2"


@contextlib.contextmanager
def echo_pair(*, kernel_echo: bool = False) -> Iterator[Pair]:
    """Client <-veth-> server; the server's kernel ICMP echo off unless ``kernel_echo``."""
    made: list[Netns] = []
    try:
        client = Netns.create("esc")
        made.append(client)
        server = Netns.create("ess")
        made.append(server)
        veth(client, "lab0", server, "lab0", a_addr=f"{CLIENT_ADDR}/24",
             b_addr=f"{SERVER_ADDR}/24")
        if not kernel_echo:
            server.sysctl("net.ipv4.icmp_echo_ignore_all", "1")
        yield Pair(client, server, CLIENT_ADDR, SERVER_ADDR)
    finally:
        for ns in reversed(made):
            ns.delete()


@contextlib.contextmanager
def forwarded_pair() -> Iterator[Pair]:
    """Client <-veth-> middle <-veth-> server, one subnet: the middle bridges in userspace.

    The middle namespace has no addresses and no IP forwarding: nothing crosses unless a
    forwarder (:mod:`edge.lab.forwarder`) runs there between ``left`` and ``right``.
    """
    made: list[Netns] = []
    try:
        client = Netns.create("esc")
        made.append(client)
        middle = Netns.create("esm")
        made.append(middle)
        server = Netns.create("ess")
        made.append(server)
        veth(client, "lab0", middle, "left", a_addr=f"{CLIENT_ADDR}/24")
        veth(middle, "right", server, "lab0", b_addr=f"{SERVER_ADDR}/24")
        middle.sysctl("net.ipv4.ip_forward", "0")
        yield Pair(client, server, CLIENT_ADDR, SERVER_ADDR, middle)
    finally:
        for ns in reversed(made):
            ns.delete()


def wait_ready(proc: subprocess.Popen[str], what: str) -> None:
    """Block until ``proc`` prints its first line (``ready``); raise if it died instead."""
    assert proc.stdout is not None
    line = proc.stdout.readline()
    if not line.startswith("ready"):
        proc.kill()
        proc.wait()
        raise NetnsError(f"{what} did not start (exit {proc.returncode}): {line.strip()}")


def stop(proc: subprocess.Popen[str]) -> None:
    """Terminate a helper started with :meth:`Netns.popen` and reap it."""
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    if proc.stdout is not None:
        proc.stdout.close()
