"""Userspace ICMP echo responder with delay, jitter and loss (IPv4, raw socket, root).

Run it where the kernel's own echo is off (``net.ipv4.icmp_echo_ignore_all=1``, e.g. in a
lab namespace from :mod:`edge.lab.netns`), otherwise the kernel's immediate reply arrives
first::

    ip netns exec NS python -m edge.lab.echo --delay-ms 30 --jitter-ms 5 --loss 0.1 --seed 1

Each echo request draws once from the seeded :class:`~edge.lab.responders.Impairment`:
lost, or answered after the sampled delay (replies may overtake each other, as on a real
path with jitter); delays count from the kernel's receive timestamp of each request.
``--realtime`` runs it under SCHED_FIFO. Prints ``ready`` once listening; SIGTERM stops it.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import random
import signal
import socket
import struct
import sys
from collections.abc import Sequence

from icmplib import ICMPv4Socket

from edge.lab._timing import PreciseScheduler, arrival, enable_rx_timestamps, set_realtime
from edge.lab.responders import Impairment

_ECHO_REQUEST = 8
_ECHO_REPLY = 0


class EchoResponder:
    """Answers ICMPv4 echo requests arriving on a raw socket, impaired per ``impairment``."""

    def __init__(self, impairment: Impairment, seed: int | None = 0) -> None:
        self.impairment = impairment
        self._rng = random.Random(seed)
        self._icmp = ICMPv4Socket(None, True)
        self._sock: socket.socket = self._icmp.sock
        self._sock.setblocking(False)
        enable_rx_timestamps(self._sock)
        self._loop = asyncio.get_running_loop()
        self._scheduler = PreciseScheduler()
        self.requests = 0
        self.dropped = 0
        self._loop.add_reader(self._sock.fileno(), self._readable)

    def close(self) -> None:
        self._scheduler.close()
        self._loop.remove_reader(self._sock.fileno())
        self._icmp.close()

    def _readable(self) -> None:
        for _ in range(256):
            try:
                packet, ancdata, _flags, addr = self._sock.recvmsg(65535, 64)
            except (BlockingIOError, InterruptedError):
                return
            reply = self.reply_to(packet)
            if reply is None:
                continue
            self.requests += 1
            delay = self.impairment.sample(self._rng)
            if delay is None:
                self.dropped += 1
                continue
            self._scheduler.at(arrival(ancdata) + delay, self._send, reply, addr[0])

    def _send(self, reply: bytes, dest: str) -> None:
        with contextlib.suppress(OSError):
            self._sock.sendto(reply, (dest, 0))

    def reply_to(self, packet: bytes) -> bytes | None:
        """The echo reply for a raw IPv4 packet holding an echo request; None otherwise."""
        if len(packet) < 20:
            return None
        ihl = (packet[0] & 0x0F) * 4
        icmp = packet[ihl:]
        if len(icmp) < 8 or icmp[0] != _ECHO_REQUEST:
            return None
        body = bytes((_ECHO_REPLY, icmp[1], 0, 0)) + icmp[4:]
        checksum = self._icmp._checksum(body)
        return body[:2] + struct.pack("!H", checksum) + body[4:]


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m edge.lab.echo", description=__doc__)
    p.add_argument("--delay-ms", type=float, default=0.0)
    p.add_argument("--jitter-ms", type=float, default=0.0)
    p.add_argument("--loss", type=float, default=0.0)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--realtime", action="store_true",
                   help="run under SCHED_FIFO (root) so a busy host does not slow replies")
    args = p.parse_args(argv)
    if args.realtime and not set_realtime():
        print("--realtime: SCHED_FIFO not allowed (needs root or CAP_SYS_NICE)", file=sys.stderr)
        return 2
    impairment = Impairment(args.delay_ms, args.jitter_ms, args.loss)

    async def serve() -> None:
        responder = EchoResponder(impairment, args.seed)
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        print("ready", flush=True)
        try:
            await stop.wait()
        finally:
            responder.close()

    asyncio.run(serve())
    return 0


if __name__ == "__main__":
    sys.exit(main())
