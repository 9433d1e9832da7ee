"""Batched UDP I/O for the built-in server on Linux: recvmmsg/sendmmsg through ctypes.

Once the answers come from prebuilt bytes, a query costs mostly system calls: one
``recvfrom`` and one ``sendto`` each (plus the event loop's wake-up). ``recvmmsg`` reads up
to ``BATCH`` datagrams in one call and ``sendmmsg`` sends all the replies in one, as gdnsd
and Knot do. Python's ``socket`` module has neither, so the two libc calls are made
through ctypes into fixed buffers allocated once per socket.

Under light load a batch is one datagram and this costs about what the transport does;
under load the system-call cost is shared by the whole batch. A reply that does not fit
the socket buffer (EAGAIN on send) is dropped, as the kernel would drop it anyway.
"""

from __future__ import annotations

import asyncio
import ctypes
import ctypes.util
import errno
import logging
import socket
import sys
from collections.abc import Callable

log = logging.getLogger(__name__)

BATCH = 64
SLOT = 4096  # bytes per datagram buffer; DNS queries are far smaller
NAME = 128  # sizeof(struct sockaddr_storage)
MSG_DONTWAIT = 0x40
ROUNDS = 4  # batches per wake-up, so one busy socket cannot starve the loop


class _Iovec(ctypes.Structure):
    _fields_ = [("iov_base", ctypes.c_void_p), ("iov_len", ctypes.c_size_t)]


class _Msghdr(ctypes.Structure):
    _fields_ = [("msg_name", ctypes.c_void_p), ("msg_namelen", ctypes.c_uint32),
                ("msg_iov", ctypes.POINTER(_Iovec)), ("msg_iovlen", ctypes.c_size_t),
                ("msg_control", ctypes.c_void_p), ("msg_controllen", ctypes.c_size_t),
                ("msg_flags", ctypes.c_int)]


class _Mmsghdr(ctypes.Structure):
    _fields_ = [("msg_hdr", _Msghdr), ("msg_len", ctypes.c_uint)]


def _libc() -> ctypes.CDLL | None:
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        libc.recvmmsg.argtypes = [ctypes.c_int, ctypes.POINTER(_Mmsghdr), ctypes.c_uint,
                                  ctypes.c_int, ctypes.c_void_p]
        libc.sendmmsg.argtypes = [ctypes.c_int, ctypes.POINTER(_Mmsghdr), ctypes.c_uint,
                                  ctypes.c_int]
    except (OSError, AttributeError):
        return None
    return libc


LIBC = _libc()


def available() -> bool:
    """Whether batched UDP can be used here (Linux with recvmmsg/sendmmsg in libc)."""
    return LIBC is not None


class _Ring:
    """``BATCH`` message headers over one flat data buffer and one flat name buffer."""

    def __init__(self, names: bytearray | None = None) -> None:
        self.data = bytearray(BATCH * SLOT)
        self.names = names if names is not None else bytearray(BATCH * NAME)
        data_c = (ctypes.c_char * len(self.data)).from_buffer(self.data)
        names_c = (ctypes.c_char * len(self.names)).from_buffer(self.names)
        self._keep = (data_c, names_c)
        base, name_base = ctypes.addressof(data_c), ctypes.addressof(names_c)
        self.iov = (_Iovec * BATCH)()
        self.msgs = (_Mmsghdr * BATCH)()
        for i in range(BATCH):
            self.iov[i].iov_base = base + i * SLOT
            self.iov[i].iov_len = SLOT
            hdr = self.msgs[i].msg_hdr
            hdr.msg_name = name_base + i * NAME
            hdr.msg_namelen = NAME
            hdr.msg_iov = ctypes.pointer(self.iov[i])
            hdr.msg_iovlen = 1
        self.view = memoryview(self.data)
        self.name_view = memoryview(self.names)
        # Flat integer views of the headers: indexing a memoryview is much cheaper than
        # going through the ctypes structures (msg_len and iov_len are read/set per
        # datagram).
        stride = ctypes.sizeof(_Mmsghdr) // ctypes.sizeof(ctypes.c_uint)
        self.lens = memoryview(self.msgs).cast("B").cast("I")
        self.stride = stride
        self.offset = _Mmsghdr.msg_len.offset // ctypes.sizeof(ctypes.c_uint)
        raw = memoryview(self.iov).cast("B")  # iov_len of slot i at index 2 * i + 1
        self.iov_len = raw.cast("Q") if ctypes.sizeof(ctypes.c_size_t) == 8 else raw.cast("I")

    def set_namelen(self, size: int) -> None:
        for i in range(BATCH):
            self.msgs[i].msg_hdr.msg_namelen = size


class BatchedUdp:
    """One UDP socket served with recvmmsg/sendmmsg from the event loop's reader callback.

    ``handle(data, peer)`` returns the reply bytes or None; ``peer`` is the client address
    as text (IPv4 dotted quad or IPv6, as the transports give it).
    """

    def __init__(self, sock: socket.socket, handle: Callable[[bytes, str], bytes | None],
                 on_send_drop: Callable[[int], None] | None = None) -> None:
        if LIBC is None:
            raise OSError("recvmmsg/sendmmsg are not available here")
        self.sock = sock
        self._fd = sock.fileno()
        self._handle = handle
        self._on_send_drop = on_send_drop
        self._rx = _Ring()
        # Replies go to the addresses the queries came from: the send ring uses the receive
        # ring's address buffer (a name moves only when an earlier datagram got no reply).
        self._tx = _Ring(self._rx.names)
        self._v6 = sock.family == socket.AF_INET6
        self._tx.set_namelen(28 if self._v6 else 16)
        self._peers: dict[bytes, str] = {}
        self._loop: asyncio.AbstractEventLoop | None = None

    def start(self, loop: asyncio.AbstractEventLoop) -> None:
        self.sock.setblocking(False)
        self._loop = loop
        loop.add_reader(self._fd, self._readable)

    def close(self) -> None:
        if self._loop is not None:
            self._loop.remove_reader(self._fd)
            self._loop = None
        self.sock.close()

    def _peer(self, name: bytes) -> str:
        found = self._peers.get(name)
        if found is None:
            if self._v6:
                found = socket.inet_ntop(socket.AF_INET6, name[8:24])
                if found.startswith("::ffff:") and "." in found:
                    found = found[7:]
            else:
                found = socket.inet_ntop(socket.AF_INET, name[4:8])
            if len(self._peers) >= 65536:
                self._peers.clear()
            self._peers[name] = found
        return found

    def _readable(self) -> None:
        assert LIBC is not None
        rx, tx = self._rx, self._tx
        namelen = 28 if self._v6 else 16
        for _ in range(ROUNDS):
            n = LIBC.recvmmsg(self._fd, rx.msgs, BATCH, MSG_DONTWAIT, None)
            if n <= 0:
                err = ctypes.get_errno()
                if n < 0 and err not in (errno.EAGAIN, errno.EWOULDBLOCK, errno.EINTR):
                    log.debug("recvmmsg: %s", errno.errorcode.get(err, err))
                return
            out = 0
            view, names = rx.view, rx.name_view
            lens, stride, offset = rx.lens, rx.stride, rx.offset
            tx_view, tx_len = tx.view, tx.iov_len
            peers, handle = self._peers, self._handle
            every_name = bytes(names[:n * NAME])  # one copy; slices of it are bytes
            for i in range(n):
                start = i * SLOT
                at_name = i * NAME
                name = every_name[at_name:at_name + namelen]
                peer = peers.get(name)
                if peer is None:
                    peer = self._peer(name)
                reply = handle(bytes(view[start:start + lens[i * stride + offset]]), peer)
                if reply is None:
                    continue
                size = len(reply)
                if size > SLOT:
                    continue
                at = out * SLOT
                tx_view[at:at + size] = reply
                tx_len[2 * out + 1] = size
                if out != i:  # compact: slot ``out`` was read already
                    names[out * NAME:out * NAME + namelen] = name
                out += 1
            sent = 0
            while sent < out:
                done = LIBC.sendmmsg(self._fd, ctypes.byref(tx.msgs[sent]), out - sent, 0)
                if done <= 0:
                    if self._on_send_drop is not None:
                        self._on_send_drop(out - sent)
                    break
                sent += done
            if n < BATCH:
                return
