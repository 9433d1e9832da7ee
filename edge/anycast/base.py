"""The seam between the plan's anycast part and a BGP speaker: the Speaker protocol, the
registry of speaker kinds, and what every speaker is given (its sessions).

A speaker is handed the *whole* desired state of its sessions on every apply (a mapping of
(prefix, session) -> Announcement; a missing or ``withdraw`` entry means "not announced"),
and makes the speaker's routes match it. Whole-state applies make a restarted speaker easy to
bring back: apply the last state again.
"""

from __future__ import annotations

import contextlib
import importlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Protocol

from edge.config.schema import BgpSession, Config, SpeakerSettings
from edge.plan import Announcement, AnnouncementKey

Routes = Mapping[AnnouncementKey, Announcement]


class SpeakerError(Exception):
    """A speaker could not apply a state. The message names the speaker and the cause."""

    def __init__(self, speaker: str, message: str) -> None:
        super().__init__(f"{speaker}: {message}")
        self.speaker = speaker


@dataclass(frozen=True, slots=True)
class Session:
    """One BGP session, named after its link."""

    name: str
    bgp: BgpSession


class Speaker(Protocol):
    name: str

    async def start(self) -> None:
        """Get ready to apply (start the daemon, connect, ...)."""

    async def apply(self, routes: Routes) -> int:
        """Make the speaker announce exactly ``routes`` (announce entries) on its sessions;
        returns the number of (prefix, session) entries that changed. Raises SpeakerError."""

    async def check(self) -> str | None:
        """None when the speaker is running and reachable, else what is wrong."""

    async def aclose(self) -> None:
        """Stop whatever ``start`` started; does not withdraw (the applier does that first)."""


def announced(routes: Routes) -> dict[AnnouncementKey, Announcement]:
    """Only the entries that are announced."""
    return {k: a for k, a in routes.items() if a.action == "announce"}


def changed_keys(before: Routes, after: Routes) -> list[AnnouncementKey]:
    """Keys whose announcement differs in substance (announced-ness or attributes)."""
    b, a = announced(before), announced(after)
    return [k for k in sorted(set(b) | set(a))
            if (k in b) != (k in a) or (k in b and b[k].content() != a[k].content())]


SpeakerFactory = Callable[[SpeakerSettings, tuple[Session, ...]], Speaker]
_REGISTRY: dict[str, SpeakerFactory] = {}


def register(kind: str) -> Callable[[SpeakerFactory], SpeakerFactory]:
    def deco(factory: SpeakerFactory) -> SpeakerFactory:
        _REGISTRY[kind] = factory
        return factory
    return deco


def sessions_of(config: Config, speaker: str) -> tuple[Session, ...]:
    return tuple(Session(lk.name, lk.bgp) for lk in config.links
                 if lk.bgp is not None and lk.bgp.speaker == speaker)


def make_speaker(settings: SpeakerSettings, sessions: tuple[Session, ...]) -> Speaker:
    # Importing an implementation registers it.
    if settings.kind not in _REGISTRY:
        with contextlib.suppress(ImportError):
            importlib.import_module(f"edge.anycast.{settings.kind}")
    try:
        factory = _REGISTRY[settings.kind]
    except KeyError:
        raise SpeakerError(settings.name, f"unknown speaker kind {settings.kind!r} "
                           f"(known: {', '.join(sorted(_REGISTRY))})") from None
    return factory(settings, sessions)
