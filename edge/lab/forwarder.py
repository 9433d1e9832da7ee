"""Userspace packet-level link: bridge frames between two interfaces, delayed, dropped, reordered.

A responder cannot delay a TCP handshake (the kernel completes it first); this can. It reads
every Ethernet frame arriving on one interface (an ``AF_PACKET`` socket) and sends it out of
the other one after the sampled delay, or never when the sample says lost. Run it in the
middle namespace of :func:`edge.lab.netns.forwarded_pair` (no addresses, no IP forwarding),
so this process is the only way across::

    ip netns exec MIDDLE python -m edge.lab.forwarder left right \\
        --delay-ms 30 --jitter-ms 5 --loss 0.1 --seed 1

The impairment applies from the first interface to the second (the client's requests);
``--symmetric`` applies it the other way too. ARP is never delayed or dropped (neighbour
discovery is not what a link's quality is about). With jitter, later frames may overtake
earlier ones (reordering, as on a real path); ``--fifo`` keeps the order instead (a frame
waits for the one before it). Delays count from the kernel's receive timestamp of each frame;
``--realtime`` runs the forwarder under SCHED_FIFO. Prints ``ready`` once both sockets are
open; SIGTERM stops it.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import random
import signal
import socket
import sys
import time
from collections.abc import Sequence

from edge.lab._timing import PreciseScheduler, arrival, enable_rx_timestamps, set_realtime
from edge.lab.responders import Impairment

ETH_P_ALL = 0x0003
ETH_P_ARP = 0x0806
PACKET_OUTGOING = 4


class Direction:
    """Frames from ``src`` go out of ``dst`` under ``impairment``."""

    def __init__(self, src: socket.socket, dst: socket.socket, impairment: Impairment,
                 rng: random.Random, fifo: bool, scheduler: PreciseScheduler) -> None:
        self.src, self.dst = src, dst
        self.impairment = impairment
        self._rng = rng
        self._fifo = fifo
        self._last_due = 0.0
        self._scheduler = scheduler
        self.forwarded = 0
        self.dropped = 0

    def readable(self) -> None:
        for _ in range(256):
            try:
                frame, ancdata, _flags, addr = self.src.recvmsg(65535, 64)
            except (BlockingIOError, InterruptedError):
                return
            if addr[2] == PACKET_OUTGOING:
                continue  # our own sends on this interface
            self.handle(frame, int(addr[1]), arrival(ancdata))

    def handle(self, frame: bytes, proto: int, arrived: float | None = None) -> None:
        if proto == ETH_P_ARP:
            self._send(frame)
            return
        delay = self.impairment.sample(self._rng)
        if delay is None:
            self.dropped += 1
            return
        if delay <= 0.0 and not self._fifo:
            self._send(frame)
            return
        due = (arrived if arrived is not None else time.monotonic()) + delay
        if self._fifo:
            due = max(due, self._last_due)
            self._last_due = due
        self._scheduler.at(due, self._send, frame)

    def _send(self, frame: bytes) -> None:
        try:
            self.dst.send(frame)
            self.forwarded += 1
        except OSError:
            self.dropped += 1  # e.g. a frame larger than the MTU: a wire would drop it too


def open_packet_socket(ifname: str) -> socket.socket:
    sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ETH_P_ALL))
    try:
        sock.bind((ifname, ETH_P_ALL))
        sock.setblocking(False)
        enable_rx_timestamps(sock)
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
    except BaseException:
        sock.close()
        raise
    return sock


async def forward(left: str, right: str, impairment: Impairment, *, seed: int | None = 0,
                  symmetric: bool = False, fifo: bool = False,
                  stop: asyncio.Event | None = None) -> None:
    """Bridge ``left`` <-> ``right`` until ``stop`` is set (or cancelled)."""
    a, b = open_packet_socket(left), open_packet_socket(right)
    loop = asyncio.get_running_loop()
    rng = random.Random(seed)
    back = impairment if symmetric else Impairment()
    scheduler = PreciseScheduler()
    ab = Direction(a, b, impairment, rng, fifo, scheduler)
    ba = Direction(b, a, back, rng, fifo, scheduler)
    loop.add_reader(a.fileno(), ab.readable)
    loop.add_reader(b.fileno(), ba.readable)
    try:
        await (stop.wait() if stop is not None else asyncio.Event().wait())
    finally:
        scheduler.close()
        loop.remove_reader(a.fileno())
        loop.remove_reader(b.fileno())
        a.close()
        b.close()


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m edge.lab.forwarder", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("left")
    p.add_argument("right")
    p.add_argument("--delay-ms", type=float, default=0.0)
    p.add_argument("--jitter-ms", type=float, default=0.0)
    p.add_argument("--loss", type=float, default=0.0)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--symmetric", action="store_true")
    p.add_argument("--fifo", action="store_true")
    p.add_argument("--realtime", action="store_true",
                   help="run under SCHED_FIFO (root) so a busy host does not slow the link")
    args = p.parse_args(argv)
    if args.realtime and not set_realtime():
        print("--realtime: SCHED_FIFO not allowed (needs root or CAP_SYS_NICE)", file=sys.stderr)
        return 2
    impairment = Impairment(args.delay_ms, args.jitter_ms, args.loss)

    async def serve() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        task = asyncio.create_task(forward(args.left, args.right, impairment, seed=args.seed,
                                           symmetric=args.symmetric, fifo=args.fifo,
                                           stop=stop))
        await asyncio.sleep(0)  # sockets open before we say ready
        print("ready", flush=True)
        await task

    asyncio.run(serve())
    return 0


if __name__ == "__main__":
    sys.exit(main())
