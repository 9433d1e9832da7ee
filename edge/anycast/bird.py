"""BIRD 2 speaker: render the include file atomically, then ``birdc configure``, checked.

The operator's bird.conf sets ``router id`` and ``include "<include>";``; edgesteer owns the
included file (tables, static prefixes, one filter and one ``protocol bgp`` per session, see
``edge.anycast.render.bird_include``). An apply writes the new text to a temporary file in
the same directory and renames it over the include (a reader never sees half a file), then
asks BIRD to reconfigure and checks its answer. When BIRD refuses the new configuration the
previous file is put back, so a BIRD restart never meets a file it rejected. When BIRD is not
running, the file stays written (BIRD reads it when it starts) and SpeakerError says so; the
engine retries.
"""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

from edge.anycast.base import Routes, Session, SpeakerError, changed_keys, register
from edge.anycast.render import bird_include
from edge.atomicfile import write_text
from edge.config.schema import SpeakerSettings
from edge.plan import Announcement, AnnouncementKey

log = logging.getLogger("edgesteer.anycast.bird")

_OK = ("Reconfigured", "Reconfiguration in progress", "Reconfiguration already in progress")


def write_atomically(path: Path, text: str) -> None:
    write_text(path, text)


class BirdSpeaker:
    def __init__(self, settings: SpeakerSettings, sessions: tuple[Session, ...],
                 prefixes: tuple[str, ...] = ()) -> None:
        if not settings.socket or not settings.include:
            raise SpeakerError(settings.name, "a bird speaker needs socket and include")
        self.name = settings.name
        self.settings = settings
        self.sessions = sessions
        self.prefixes = prefixes
        self.include = Path(settings.include)
        self.socket = settings.socket
        self._state: dict[AnnouncementKey, Announcement] = {}
        self._configured = False

    def render(self, routes: Routes) -> str:
        names = {s.name for s in self.sessions}
        prefixes = tuple(dict.fromkeys([*self.prefixes, *(k[0] for k in routes
                                                          if k[1] in names)]))
        return bird_include(self.sessions, prefixes, routes)

    async def start(self) -> None:
        """Nothing to start: BIRD is the operator's daemon. Writes an all-withdrawn file if
        none exists, so that bird.conf's include resolves."""
        if not self.include.exists():
            write_atomically(self.include, self.render({}))

    async def birdc(self, *args: str) -> str:
        try:
            proc = await asyncio.create_subprocess_exec(
                self.settings.birdc, "-s", self.socket, *args,
                stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.STDOUT)
        except OSError as exc:
            raise SpeakerError(self.name, f"cannot run {self.settings.birdc}: {exc}") from None
        try:
            async with asyncio.timeout(self.settings.timeout_s):
                out, _ = await proc.communicate()
        except TimeoutError:
            proc.kill()
            await proc.wait()
            raise SpeakerError(self.name, f"birdc {' '.join(args)} timed out") from None
        text = out.decode(errors="replace")
        # birdc exits non-zero both when BIRD is unreachable and when a command fails
        # (e.g. a refused configuration): only the first is an error here.
        if proc.returncode != 0 and "Unable to connect" in text:
            raise SpeakerError(self.name, f"birdc {' '.join(args)} failed "
                               f"({proc.returncode}): {text.strip()}")
        return text

    async def apply(self, routes: Routes) -> int:
        names = {s.name for s in self.sessions}
        mine = {k: a for k, a in routes.items() if k[1] in names}
        changed = len(changed_keys(self._state, mine))
        text = self.render(mine)
        previous = self.include.read_text() if self.include.exists() else None
        if self._configured and text == previous:
            return 0
        write_atomically(self.include, text)
        try:
            out = await self.birdc("configure")
        except SpeakerError as exc:
            # BIRD is down or unreachable: the file stays (it is read at start).
            self._configured = False
            raise SpeakerError(self.name, f"{exc} (the include file is written; BIRD reads "
                               "it when it starts)") from None
        if not any(ok in out for ok in _OK):
            if previous is not None:
                write_atomically(self.include, previous)
            self._configured = False
            raise SpeakerError(self.name, f"BIRD refused the configuration: {out.strip()}")
        self._state = {k: a for k, a in mine.items() if a.action == "announce"}
        self._configured = True
        return changed

    async def check(self) -> str | None:
        try:
            out = await self.birdc("show", "status")
        except SpeakerError as exc:
            return str(exc)
        return None if "Daemon is up" in out else f"BIRD is not up: {out.strip()}"

    async def aclose(self) -> None:
        return None


@register("bird")
def _factory(settings: SpeakerSettings, sessions: tuple[Session, ...]) -> BirdSpeaker:
    return BirdSpeaker(settings, sessions)
