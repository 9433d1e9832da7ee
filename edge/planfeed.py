"""Follow the plans a steering engine publishes, for a DNS server in another process.

Two sources. On one node (``edgesteer run`` or ``steer`` next to ``serve``): the engine's
state file, ``StateFileFeed``. In a cluster on Redis (``bus.kind: redis``): the plan
history the leader records (``edge.history``), ``HistoryFeed``, so every node's server
follows the leader's plans wherever the leader runs.

The engine (``edge.runtime.Engine``) persists the plan in force to ``engine.json`` in
``guard.state_dir`` after every applied plan, atomically: a temp file in the same
directory, fsync, rename (``edge.steering.statefile``). ``edgesteer serve --follow``
watches that file with ``StateFileFeed``:

* every ``interval`` seconds one ``stat`` (inode, mtime in ns, size): a rename gives a new
  inode, so the check is cheap and exact for the engine's writes. Polling, not inotify:
  the standard library has no inotify, and a stat a few times a second costs nothing;
* only when that signature changes is the file read and parsed, in a worker thread (off
  the event loop, so queries keep being answered while a large plan is parsed);
* the plan goes to ``apply`` (on the loop) only when it differs from the last one applied
  (version or checksum): the engine also rewrites the file when only link states moved.

A file that cannot be used (half-written by a tool that does not rename, not JSON, not an
engine state, a plan the server refuses) changes nothing: the last good plan stays in
force, the reason is logged once per version of the file, and ``on_reject`` is called
(the server counts it). A missing file or one without a plan is not an error: the engine
has not planned yet.

``HistoryFeed`` polls the newest entry of ``{prefix}:plan:log`` (``XREVRANGE ... COUNT 1``)
every ``interval`` and parses it only when its stream ID changes; the same rules apply
(a record that cannot be used is a reject; Redis unreachable keeps the plan in force and
is logged when it starts and when it ends).
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from redis.exceptions import RedisError

from edge import plancodec
from edge.plan import Plan
from edge.steering.statefile import ENGINE_FILE, StateFileError, plan_in, read_json
from probes.bus.redis_streams import RedisClient

log = logging.getLogger("edgesteer.planfeed")

DEFAULT_INTERVAL_S = 0.25


class FeedError(ValueError):
    """The engine's file (or plan record ``entry_id``) is there but holds no usable plan."""

    def __init__(self, reason: str, entry_id: str | None = None) -> None:
        super().__init__(reason)
        self.entry_id = entry_id


@dataclass(frozen=True, slots=True)
class Signature:
    """What ``stat`` says about one version of the file."""

    inode: int
    mtime_ns: int
    size: int


def signature(path: Path) -> Signature | None:
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return None
    return Signature(st.st_ino, st.st_mtime_ns, st.st_size)


def read_plan(path: Path) -> Plan | None:
    """The plan in the engine's file; None when there is no file or no plan yet.

    Raises ``FeedError`` with the reason when the file cannot be used.
    """
    try:
        body: Any = read_json(path)
    except StateFileError as exc:
        raise FeedError(str(exc)) from None
    if body is None:
        return None
    try:
        return plan_in(body, path)
    except StateFileError as exc:
        raise FeedError(str(exc)) from None


def engine_file(directory: Path) -> Path:
    return directory / ENGINE_FILE


def plan_key(plan: Plan) -> tuple[int, str]:
    return plan.version, plan.checksum()


class _Feed:
    """What both feeds share: hand a plan to ``apply`` once, count what is refused."""

    source = "?"

    def __init__(self, apply: Callable[[Plan], object], *, interval: float,
                 on_reject: Callable[[str], None] | None, applied: Plan | None) -> None:
        self._apply = apply
        self.interval = interval
        self._on_reject = on_reject
        self._applied = plan_key(applied) if applied is not None else None
        self.swaps = 0
        self.rejects = 0

    async def poll(self) -> Plan | None:
        raise NotImplementedError

    async def run(self) -> None:
        """Poll until cancelled."""
        while True:
            try:
                await self.poll()
            except OSError as exc:  # e.g. the directory became unreadable: keep serving
                log.warning("following %s: %s", self.source, exc)
            await asyncio.sleep(self.interval)

    async def aclose(self) -> None:
        return None

    def _offer(self, plan: Plan) -> Plan | None:
        if plan_key(plan) == self._applied:
            return None
        try:
            self._apply(plan)
        except Exception as exc:  # the server refused it: keep the last good plan
            self._reject(f"plan v{plan.version} not applied: {exc}")
            return None
        self._applied = plan_key(plan)
        self.swaps += 1
        log.info("following %s: now serving plan v%d", self.source, plan.version)
        return plan

    def _reject(self, reason: str) -> None:
        self.rejects += 1
        log.warning("keeping the plan in force: %s", reason)
        if self._on_reject is not None:
            self._on_reject(reason)


class StateFileFeed(_Feed):
    """Polls the engine's file and hands every new plan to ``apply``.

    ``apply`` runs on the event loop and may raise (e.g. ``BackendError`` for a plan the
    server cannot serve): that counts as a rejected file. ``applied`` is the plan in force
    when the feed starts, if any; ``seen`` the version of the file it came from.
    """

    def __init__(self, path: Path, apply: Callable[[Plan], object], *,
                 interval: float = DEFAULT_INTERVAL_S,
                 on_reject: Callable[[str], None] | None = None,
                 applied: Plan | None = None, seen: Signature | None = None) -> None:
        super().__init__(apply, interval=interval, on_reject=on_reject, applied=applied)
        self.path = path
        self.source = str(path)
        self._seen = seen

    @property
    def seen(self) -> Signature | None:
        return self._seen

    async def poll(self) -> Plan | None:
        """One check: the plan applied by it, or None (nothing new, or rejected)."""
        now = signature(self.path)
        if now is None or now == self._seen:
            return None
        try:
            plan = await asyncio.to_thread(read_plan, self.path)
        except FeedError as exc:
            self._seen = now  # logged and counted once per version of the file
            self._reject(str(exc))
            return None
        if signature(self.path) != now:
            return None  # replaced while we read it: the next poll reads the newer one
        self._seen = now
        return None if plan is None else self._offer(plan)


class HistoryFeed(_Feed):
    """Polls the newest plan record in Redis and hands every new plan to ``apply``.

    ``client`` belongs to the feed (``aclose`` closes it); make it in the process and on
    the loop that runs the feed.
    """

    source = "the Redis plan history"

    def __init__(self, client: RedisClient, prefix: str, apply: Callable[[Plan], object], *,
                 interval: float = DEFAULT_INTERVAL_S,
                 on_reject: Callable[[str], None] | None = None,
                 applied: Plan | None = None, seen: str | None = None) -> None:
        super().__init__(apply, interval=interval, on_reject=on_reject, applied=applied)
        self.client = client
        self.key = history_key(prefix)
        self._seen = seen
        self._down = False

    async def poll(self) -> Plan | None:
        try:
            entry_id, plan = await newest_record(self.client, self.key)
        except (RedisError, OSError, TimeoutError) as exc:
            if not self._down:
                log.warning("Redis plan history unreachable, keeping the plan in force: %s",
                            exc)
            self._down = True
            return None
        except FeedError as exc:
            if exc.entry_id != self._seen:  # logged and counted once per record
                self._seen = exc.entry_id
                self._reject(str(exc))
            return None
        if self._down:
            log.info("Redis plan history reachable again")
            self._down = False
        if entry_id is None or entry_id == self._seen:
            return None
        self._seen = entry_id
        return None if plan is None else self._offer(plan)

    async def aclose(self) -> None:
        await self.client.aclose()


def history_key(prefix: str) -> str:
    """The plan log stream of ``edge.history`` for this key prefix."""
    return f"{{{prefix}}}:plan:log"


async def newest_record(client: RedisClient, key: str) -> tuple[str | None, Plan | None]:
    """(stream ID, plan) of the newest plan record; (None, None) when there is none.

    Raises ``FeedError(reason, stream ID)`` for a record that holds no usable plan, and
    the client's errors when Redis cannot be read.
    """
    entries: Any = await client.xrevrange(key, count=1)
    if not entries:
        return None, None
    raw_id, fields = entries[0]
    entry_id = raw_id.decode() if isinstance(raw_id, bytes) else str(raw_id)
    body = fields.get(b"plan", fields.get("plan")) if isinstance(fields, dict) else None
    try:
        if body is None:
            raise KeyError("plan")
        return entry_id, plancodec.from_json(json.loads(body))
    except (KeyError, TypeError, ValueError, IndexError, AttributeError) as exc:
        raise FeedError(f"plan record {entry_id} unreadable: {exc!r}", entry_id) from None


def initial(path: Path) -> tuple[Plan | None, Signature | None]:
    """The plan to start from (if the file has a usable one) and the file's signature."""
    seen = signature(path)
    try:
        plan = read_plan(path)
    except FeedError as exc:
        log.warning("not starting from %s: %s", path, exc)
        return None, None  # the feed will read it again (and count the rejection)
    return plan, seen
