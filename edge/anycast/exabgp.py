"""ExaBGP speaker: edgesteer runs ExaBGP and is its API process.

``start`` writes an ExaBGP configuration (one neighbor per session, and a ``process`` whose
``run`` is ``edge.anycast.exabgp_bridge``), listens on a unix socket in a private working
directory and starts ExaBGP with ``ack = true``. The bridge ExaBGP spawns connects to the
socket; commands go out one at a time and each waits for its ``done`` / ``error``.

Supervision: when ExaBGP exits, it is started again after ``restart_delay_s`` (counted in
``restarts`` and logged); when its bridge connects, the speaker replays every route it
announces, so the routes come back without waiting for a new plan. An apply while no bridge
is connected waits up to ``timeout_s`` and then raises SpeakerError (the engine retries).
"""

from __future__ import annotations

import asyncio
import contextlib
import getpass
import ipaddress
import logging
import os
import shutil
import signal
import sys
import tempfile
from pathlib import Path

from edge.anycast.base import Routes, Session, SpeakerError, announced, register
from edge.anycast.render import exabgp_announce, exabgp_withdraw
from edge.config.schema import SpeakerSettings
from edge.plan import Announcement, AnnouncementKey

log = logging.getLogger("edgesteer.anycast.exabgp")


def exabgp_config(sessions: tuple[Session, ...], router_id: str, socket_path: str) -> str:
    run = f"{sys.executable} -m edge.anycast.exabgp_bridge {socket_path}"
    out = ["process edgesteer {", f"  run {run};", "  encoder text;", "}", ""]
    for s in sessions:
        b = s.bgp
        out += [f"neighbor {b.peer} {{", f"  router-id {router_id};"]
        if b.local_address:
            out.append(f"  local-address {b.local_address};")
        out += [f"  local-as {b.local_as};", f"  peer-as {b.peer_as};",
                f"  connect {b.peer_port};", "  passive false;", f"  hold-time {b.hold_time};"]
        if b.multihop:
            out.append("  outgoing-ttl 64;")
        out += ["  family { ipv4 unicast; ipv6 unicast; }",
                "  api { processes [ edgesteer ]; }", "}", ""]
    return "\n".join(out)


def _router_id(settings: SpeakerSettings, sessions: tuple[Session, ...]) -> str:
    if settings.router_id:
        return settings.router_id
    for s in sessions:
        addr = s.bgp.local_address
        if addr and ipaddress.ip_address(addr).version == 4:
            return addr
    raise SpeakerError(settings.name, "no router id: set router_id on the speaker or an "
                       "IPv4 bgp.local_address on one of its links")


def _command(settings: SpeakerSettings) -> str:
    if "/" in settings.command:
        return settings.command
    beside = Path(sys.executable).parent / settings.command
    found = shutil.which(settings.command) or (str(beside) if beside.exists() else None)
    if found is None:
        raise SpeakerError(settings.name, f"{settings.command!r} not found (pip install "
                           "exabgp, or set the speaker's command)")
    return found


class ExaBgpSpeaker:
    def __init__(self, settings: SpeakerSettings, sessions: tuple[Session, ...], *,
                 workdir: str | None = None, restart_delay_s: float = 0.5) -> None:
        self.name = settings.name
        self.settings = settings
        self.sessions = {s.name: s for s in sessions}
        self.restarts = 0
        self.last_exit: str | None = None
        self._workdir = workdir
        self._own_dir = False
        self._restart_delay_s = restart_delay_s
        self._state: dict[AnnouncementKey, Announcement] = {}
        self._lock = asyncio.Lock()
        self._connected = asyncio.Event()
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None
        self._server: asyncio.Server | None = None
        self._proc: asyncio.subprocess.Process | None = None
        self._supervisor: asyncio.Task[None] | None = None
        self._replays: set[asyncio.Task[None]] = set()
        self._closing = False

    @property
    def closing(self) -> bool:
        return self._closing

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None and self._proc.returncode is None \
            else None

    @property
    def log_path(self) -> Path:
        assert self._workdir is not None
        return Path(self._workdir) / "exabgp.log"

    async def start(self) -> None:
        if self._workdir is None:
            self._workdir = tempfile.mkdtemp(prefix="edgesteer-exabgp-")
            self._own_dir = True
        wd = Path(self._workdir)
        sock = str(wd / "api.sock")
        with contextlib.suppress(FileNotFoundError):
            os.unlink(sock)
        router_id = _router_id(self.settings, tuple(self.sessions.values()))
        (wd / "exabgp.conf").write_text(exabgp_config(tuple(self.sessions.values()),
                                                      router_id, sock))
        self._command = _command(self.settings)
        self._server = await asyncio.start_unix_server(self._on_bridge, sock)
        self._supervisor = asyncio.create_task(self._supervise(), name=f"exabgp-{self.name}")
        try:
            async with asyncio.timeout(max(self.settings.timeout_s, 10.0)):
                await self._connected.wait()
        except TimeoutError:
            raise SpeakerError(self.name, f"exabgp did not start its API process: "
                               f"{self._log_tail()}") from None

    def _env(self) -> dict[str, str]:
        env = dict(os.environ)
        env.update({
            "exabgp_daemon_user": getpass.getuser(), "exabgp_daemon_daemonize": "false",
            "exabgp_tcp_bind": "", "exabgp_api_cli": "false", "exabgp_api_ack": "true",
            "exabgp_api_respawn": "true", "exabgp_log_level": "INFO",
            "exabgp_log_destination": "stdout", "exabgp_log_short": "true",
        })
        return env

    async def _spawn(self) -> asyncio.subprocess.Process:
        assert self._workdir is not None
        fd = os.open(self.log_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        try:
            return await asyncio.create_subprocess_exec(
                self._command, str(Path(self._workdir) / "exabgp.conf"),
                stdin=asyncio.subprocess.DEVNULL, stdout=fd, stderr=fd,
                env=self._env(), cwd=self._workdir, start_new_session=True)
        finally:
            os.close(fd)

    async def _supervise(self) -> None:
        """Run ExaBGP, start it again when it exits. The delay doubles (up to 30 s) while
        it keeps dying without its API process ever connecting."""
        delay = self._restart_delay_s
        while not self._closing:
            self._proc = await self._spawn()
            code = await self._proc.wait()
            was_up = self._connected.is_set()
            self._connected.clear()
            if self.closing:
                return
            self.restarts += 1
            self.last_exit = f"exabgp exited with {code}: {self._log_tail(3)}"
            delay = self._restart_delay_s if was_up else min(delay * 2, 30.0)
            log.error("speaker %s: %s; restarting it in %.1f s (restart #%d)", self.name,
                      self.last_exit, delay, self.restarts)
            await asyncio.sleep(delay)

    async def _on_bridge(self, reader: asyncio.StreamReader,
                         writer: asyncio.StreamWriter) -> None:
        old = self._writer
        self._reader, self._writer = reader, writer
        if old is not None:
            old.close()
        task = asyncio.create_task(self._replay())
        self._replays.add(task)
        task.add_done_callback(self._replays.discard)

    async def _replay(self) -> None:
        """A new API connection (ExaBGP started or respawned the bridge): re-announce."""
        async with self._lock:
            try:
                for key in sorted(self._state):
                    a = self._state[key]
                    await self._send(exabgp_announce(self.sessions[a.session], a))
            except SpeakerError as exc:
                log.error("replay to exabgp failed: %s", exc)
                return
            self._connected.set()
            if self._state:
                log.info("speaker %s: %d route(s) replayed to exabgp", self.name,
                         len(self._state))

    async def _send(self, line: str) -> None:
        reader, writer = self._reader, self._writer
        if reader is None or writer is None:
            raise SpeakerError(self.name, "exabgp is not connected")
        try:
            async with asyncio.timeout(self.settings.timeout_s):
                writer.write(line.encode() + b"\n")
                await writer.drain()
                while True:
                    raw = await reader.readline()
                    if not raw:
                        raise SpeakerError(self.name, f"exabgp closed the API while "
                                           f"waiting for the ack of: {line}")
                    ack = raw.decode(errors="replace").strip()
                    if ack == "done":
                        return
                    if ack == "error":
                        raise SpeakerError(self.name, f"exabgp refused: {line}")
        except TimeoutError:
            raise SpeakerError(self.name, f"no ack from exabgp within "
                               f"{self.settings.timeout_s:g} s for: {line}") from None
        except (ConnectionError, OSError) as exc:
            self._connected.clear()
            raise SpeakerError(self.name, f"exabgp API connection lost: {exc}") from None

    async def apply(self, routes: Routes) -> int:
        want = {k: a for k, a in announced(routes).items() if a.session in self.sessions}
        try:
            async with asyncio.timeout(self.settings.timeout_s):
                await self._connected.wait()
        except TimeoutError:
            raise SpeakerError(self.name, "exabgp is not running (restarting: "
                               f"{self.last_exit or 'starting'})") from None
        changed = 0
        async with self._lock:
            for key in sorted(set(self._state) - set(want)):
                s = self.sessions[key[1]]
                await self._send(exabgp_withdraw(s, key[0]))
                del self._state[key]
                changed += 1
            for key in sorted(want):
                a = want[key]
                old = self._state.get(key)
                if old is not None and old.content() == a.content():
                    continue
                await self._send(exabgp_announce(self.sessions[a.session], a))
                self._state[key] = a
                changed += 1
        return changed

    async def check(self) -> str | None:
        if self._connected.is_set() and self.pid is not None:
            return None
        return f"exabgp is not running ({self.last_exit or 'starting'}); restarting it"

    def _log_tail(self, lines: int = 8) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return "(no log)"
        return " | ".join(text.strip().splitlines()[-lines:]) or "(empty log)"

    async def aclose(self) -> None:
        self._closing = True
        proc = self._proc
        if proc is not None and proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGTERM)
            try:
                async with asyncio.timeout(5):
                    await proc.wait()
            except TimeoutError:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
                await proc.wait()
        if self._supervisor is not None:
            self._supervisor.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._supervisor
        for task in list(self._replays):
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        if self._writer is not None:
            self._writer.close()
            with contextlib.suppress(ConnectionError, OSError):
                await self._writer.wait_closed()
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
        if self._own_dir and self._workdir is not None:
            shutil.rmtree(self._workdir, ignore_errors=True)


@register("exabgp")
def _factory(settings: SpeakerSettings, sessions: tuple[Session, ...]) -> ExaBgpSpeaker:
    return ExaBgpSpeaker(settings, sessions)
