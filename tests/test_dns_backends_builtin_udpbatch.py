"""recvmmsg/sendmmsg batches: every reply goes back to the sender of its datagram."""

from __future__ import annotations

import asyncio
import contextlib
import socket

import pytest

from dns_backends.builtin import udpbatch
from tests.conftest import require


@pytest.fixture(autouse=True)
def _needs_recvmmsg() -> None:
    """CI runs on Linux, where recvmmsg exists: its absence there is a failure."""
    require(udpbatch.available(), "recvmmsg/sendmmsg not found in libc (they need Linux)")


async def test_replies_reach_their_own_senders_when_some_are_dropped() -> None:
    server_sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    server_sock.bind(("127.0.0.1", 0))
    port = server_sock.getsockname()[1]
    seen: list[str] = []

    def handle(data: bytes, peer: str) -> bytes | None:
        seen.append(peer)
        n = int(data.decode().split(":")[1])
        return None if n % 5 == 0 else b"re:" + data  # every fifth gets no reply

    batched = udpbatch.BatchedUdp(server_sock, handle)
    clients = [socket.socket(socket.AF_INET, socket.SOCK_DGRAM) for _ in range(3)]
    try:
        for i, c in enumerate(clients):
            c.bind((f"127.0.0.{i + 1}", 0))
            c.setblocking(False)
        for n in range(200):  # queued before the server reads: full batches
            clients[n % 3].sendto(f"{n % 3}:{n}".encode(), ("127.0.0.1", port))
        batched.start(asyncio.get_running_loop())
        want = {i: [f"re:{i}:{n}".encode() for n in range(200) if n % 3 == i and n % 5]
                for i in range(3)}
        got: dict[int, list[bytes]] = {0: [], 1: [], 2: []}
        async with asyncio.timeout(5):
            while sum(len(v) for v in got.values()) < sum(len(v) for v in want.values()):
                for i, c in enumerate(clients):
                    with contextlib.suppress(BlockingIOError):
                        got[i].append(c.recv(100))
                await asyncio.sleep(0.001)
        assert got == want  # each sender gets exactly its own replies, in order
        assert {"127.0.0.1", "127.0.0.2", "127.0.0.3"} == set(seen) and len(seen) == 200
    finally:
        batched.close()
        for c in clients:
            c.close()
