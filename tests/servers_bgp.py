"""Real BGP daemons for the anycast tests: BIRD 2 as the receiving peer (and as a speaker).

Every address is in 127.0.0.0/8 and every port is a free one; the routes exchanged are
documentation prefixes inside these loopback sessions, so nothing leaves the machine.
Timers are short (hold 3 s, keepalive 1 s, connect retry 1 s) to keep the tests quick.
"""

from __future__ import annotations

import asyncio
import os
import re
import signal
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from tests.conftest import require_binary

SPEAKER_AS = 64500


@dataclass(frozen=True, slots=True)
class RouteSeen:
    """One route as the peer's ``birdc show route all`` shows it."""

    prefix: str
    protocol: str
    as_path: tuple[int, ...]
    med: int | None = None
    communities: frozenset[str] = frozenset()
    large_communities: frozenset[str] = frozenset()

    @property
    def prepends(self) -> int:
        """Extra copies of the origin AS (the path is only ours in these tests)."""
        return len(self.as_path) - 1


_HEAD = re.compile(r"^(?P<prefix>\S+)?\s+\S+.*?\[(?P<proto>[A-Za-z0-9_]+) ")


def parse_routes(text: str) -> list[RouteSeen]:
    """Parse ``show route all`` text (BIRD 2) into routes; attribute lines start with a tab."""
    out: list[RouteSeen] = []
    cur: dict[str, object] | None = None
    prefix = ""

    def flush() -> None:
        if cur is not None:
            out.append(RouteSeen(**cur))  # type: ignore[arg-type]

    for line in text.splitlines():
        if line.startswith("\t"):
            if cur is None:
                continue
            key, _, value = line.strip().partition(": ")
            if key == "BGP.as_path":
                cur["as_path"] = tuple(int(x) for x in value.split())
            elif key == "BGP.med":
                cur["med"] = int(value)
            elif key == "BGP.community":
                cur["communities"] = frozenset(
                    f"{a}:{b}" for a, b in re.findall(r"\((\d+),(\d+)\)", value))
            elif key == "BGP.large_community":
                cur["large_communities"] = frozenset(
                    f"{a}:{b}:{c}" for a, b, c in
                    re.findall(r"\((\d+), (\d+), (\d+)\)", value))
            continue
        m = _HEAD.match(line)
        if m is None or line.startswith(("BIRD", "Table")):
            continue
        flush()
        prefix = m.group("prefix") or prefix
        cur = {"prefix": prefix, "protocol": m.group("proto"), "as_path": ()}
    flush()
    return out


@dataclass
class Bird:
    """One BIRD 2 daemon on a config the test writes, with its own control socket."""

    workdir: Path
    name: str
    proc: subprocess.Popen[bytes] | None = None
    _log: object = field(default=None, repr=False)

    @property
    def conf(self) -> Path:
        return self.workdir / f"{self.name}.conf"

    @property
    def socket(self) -> str:
        return str(self.workdir / f"{self.name}.ctl")

    @property
    def log(self) -> Path:
        return self.workdir / f"{self.name}.log"

    def start(self, text: str | None = None, timeout: float = 10.0) -> None:
        bird = require_binary("bird", "bird2")
        if text is not None:
            self.conf.write_text(text)
        with open(self.log, "ab") as logf:
            self.proc = subprocess.Popen(
                [bird, "-f", "-c", str(self.conf), "-s", self.socket,
                 "-P", str(self.workdir / f"{self.name}.pid")],
                stdout=logf, stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"bird {self.name} exited: {self.log.read_text()}")
            try:
                if "Daemon is up" in self.birdc("show", "status"):
                    return
            except RuntimeError:
                pass
            time.sleep(0.05)
        raise RuntimeError(f"bird {self.name} did not come up: {self.log.read_text()}")

    def birdc(self, *args: str) -> str:
        birdc = require_binary("birdc", "bird2")
        res = subprocess.run([birdc, "-s", self.socket, *args], capture_output=True,
                             text=True, timeout=10, check=False)
        if res.returncode != 0:
            raise RuntimeError(res.stdout + res.stderr)
        return res.stdout

    def kill(self) -> None:
        """Kill -9: the daemon dies without a word to its peers (a crash)."""
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=10)
        self.proc = None

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.kill()
        self.proc = None

    def routes(self) -> dict[tuple[str, str], RouteSeen]:
        """(prefix, protocol) -> route, over the v4 and v6 master tables."""
        out = {}
        for table in ("master4", "master6"):
            for r in parse_routes(self.birdc("show", "route", "all", "table", table)):
                out[(r.prefix, r.protocol)] = r
        return out

    async def wait_routes(self, check: Callable[[dict[tuple[str, str], RouteSeen]], bool],
                          wait_s: float = 15.0) -> dict[tuple[str, str], RouteSeen]:
        """Poll until ``check(routes)``; on timeout fail with what was seen."""
        deadline = time.monotonic() + wait_s
        seen: dict[tuple[str, str], RouteSeen] = {}
        while time.monotonic() < deadline:
            seen = await asyncio.to_thread(self.routes)
            if check(seen):
                return seen
            await asyncio.sleep(0.1)
        raise AssertionError(f"peer {self.name}: routes not as expected after {wait_s} s: "
                             f"{sorted(seen.values(), key=str)}")


@dataclass(frozen=True, slots=True)
class PeerSession:
    """A session as the receiving peer sees it: its protocol is ``r_<name>``."""

    name: str
    peer_address: str  # the receiving peer's address (the speaker's bgp.peer)
    speaker_address: str  # the speaker's bgp.local_address
    peer_as: int


def peer_config(sessions: list[PeerSession], port: int) -> str:
    lines = ["log stderr all;", "router id 127.9.0.1;", "protocol device { }",
             "template bgp tpl_recv {", "  passive on; multihop;",
             "  hold time 3; keepalive time 1;",
             "  connect delay time 1; connect retry time 1; error wait time 1, 2;",
             "  ipv4 { import all; export none; };", "  ipv6 { import all; export none; };",
             "}"]
    for s in sessions:
        lines.append(f"protocol bgp r_{s.name.replace('-', '_')} from tpl_recv {{ "
                     f"local {s.peer_address} port {port} as {s.peer_as}; "
                     f"neighbor {s.speaker_address} as {SPEAKER_AS}; }}")
    return "\n".join(lines) + "\n"


def speaker_config(router_id: str, include: Path) -> str:
    return (f'log stderr all;\nrouter id {router_id};\nprotocol device {{ }}\n'
            f'include "{include}";\n')
