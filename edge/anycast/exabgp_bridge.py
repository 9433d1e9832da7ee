"""The API process ExaBGP runs for edgesteer: ``python -m edge.anycast.exabgp_bridge SOCKET``.

ExaBGP talks to its API processes over their stdin/stdout: the process writes commands
(``announce route ...``) on stdout and reads ExaBGP's acknowledgements (``done`` / ``error``,
with ``ack = true``) on stdin. This process is that API process, and relays both directions
to the edgesteer speaker listening on the unix SOCKET, so the speaker can live in the node's
own process. It exits when either side closes; ExaBGP respawns it, and the speaker replays
its state to the new connection.
"""

from __future__ import annotations

import os
import selectors
import socket
import sys


def relay(sock: socket.socket, fd_in: int, fd_out: int) -> None:
    sel = selectors.DefaultSelector()
    sel.register(fd_in, selectors.EVENT_READ, "in")
    sel.register(sock, selectors.EVENT_READ, "sock")
    try:
        while True:
            for key, _ in sel.select():
                if key.data == "in":
                    data = os.read(fd_in, 65536)
                    if not data:
                        return
                    sock.sendall(data)
                else:
                    data = sock.recv(65536)
                    if not data:
                        return
                    view = memoryview(data)
                    while view:
                        view = view[os.write(fd_out, view):]
    finally:
        sel.close()


def main(argv: list[str]) -> int:
    if len(argv) != 1:
        print("usage: python -m edge.anycast.exabgp_bridge SOCKET", file=sys.stderr)
        return 2
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        try:
            sock.connect(argv[0])
        except OSError as exc:
            print(f"exabgp_bridge: cannot connect to {argv[0]}: {exc}", file=sys.stderr)
            return 1
        relay(sock, sys.stdin.fileno(), sys.stdout.fileno())
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
