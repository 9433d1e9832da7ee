"""Leader election among steering engines with a Redis lease and fencing tokens.

The lease is one key, ``{prefix}:leader`` = ``"<token> <identity>"`` with a TTL. Taking it
increments ``{prefix}:fence`` (INCR), so every term of leadership has a token greater than all
before it. Engines remember the highest token they have seen and raise the counter to it
before the INCR, so tokens keep rising even across a Redis that restarted without its data
(run Redis with AOF anyway: the history lives there too). The holder renews every
``ttl/3``; a standby retries at the same pace and wins within
``ttl + ttl/3`` of the leader's death. Both scripts run atomically in Redis (Lua); the keys
share the ``{prefix}`` hash tag, so they live in one Cluster slot.

Locally, a leader counts itself leader only until ``start + 0.9 * ttl`` after the last
successful renewal began (monotonic clock): it stops before Redis lets anybody else in.

Fencing (``FencedBackend``): every apply carries the token. Before the wrapped backend is
called, one Lua script checks, atomically, that the lease still holds this token and that the
token is not lower than the highest one that backend has seen (``{prefix}:fence:<backend>``),
then records it. A deposed leader is refused; so is one whose token a newer leader has
already used. The apply itself must finish within what is left of the local lease.

What this cannot close: the check and the apply are two steps, so an old leader that passes
the check and is then frozen for longer than its remaining lease could still write to an
*external* server after a new leader. The apply deadline makes that window as small as the
process pause; a server that checks the token itself closes it (the policy warehouse does:
its write checks the token inside the same script, see ``edge.history``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import time
from collections.abc import Callable
from typing import Any

from redis.exceptions import RedisError

from dns_backends.base import ApplyResult, Backend, BackendError
from edge.plan import Plan
from probes.bus.redis_streams import RedisClient, reraise_if_cancelled

log = logging.getLogger("edgesteer.leader")

# KEYS: lease, fence counter. ARGV: identity, ttl ms, highest token this engine has seen.
# Returns our token (> 0), or minus the holder's token when somebody else holds the lease.
_ACQUIRE = """
local cur = redis.call('GET', KEYS[1])
if cur then
  local sep = string.find(cur, ' ', 1, true)
  local token = tonumber(string.sub(cur, 1, sep - 1))
  if string.sub(cur, sep + 1) == ARGV[1] then
    redis.call('PEXPIRE', KEYS[1], ARGV[2])
    return token
  end
  return -token
end
if tonumber(redis.call('GET', KEYS[2]) or '0') < tonumber(ARGV[3]) then
  redis.call('SET', KEYS[2], ARGV[3])
end
local token = redis.call('INCR', KEYS[2])
redis.call('SET', KEYS[1], token .. ' ' .. ARGV[1], 'PX', ARGV[2])
return token
"""

_RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
"""

# KEYS: lease, highest token seen by this backend. ARGV: token, identity.
# Returns {1, previous highest} when allowed, {0, highest} when stale, {-1, 0} when the
# lease is not held with this token any more.
_FENCE = """
if redis.call('GET', KEYS[1]) ~= ARGV[1] .. ' ' .. ARGV[2] then
  return {-1, 0}
end
local high = tonumber(redis.call('GET', KEYS[2]) or '0')
local token = tonumber(ARGV[1])
if token < high then
  return {0, high}
end
redis.call('SET', KEYS[2], ARGV[1])
return {1, high}
"""


def keys(prefix: str) -> tuple[str, str]:
    """The lease and fence counter keys (one hash tag: one Cluster slot)."""
    return f"{{{prefix}}}:leader", f"{{{prefix}}}:fence"


def default_identity() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


ChangeListener = Callable[[int | None], None]


class LeaderElector:
    """Keeps trying to hold the lease; ``token`` is the fencing token while leader."""

    def __init__(self, client: RedisClient, *, prefix: str = "edgesteer",
                 identity: str | None = None, ttl_s: float = 5.0,
                 on_change: ChangeListener | None = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        if ttl_s <= 0:
            raise ValueError("ttl_s must be > 0")
        self.client = client
        self.prefix = prefix
        self.identity = identity or default_identity()
        self.ttl_s = ttl_s
        self._lease_key, self._fence_key = keys(prefix)
        self._acquire = client.register_script(_ACQUIRE)
        self._release = client.register_script(_RELEASE)
        self._on_change = on_change
        self._clock = clock
        self._token: int | None = None
        self._valid_until = 0.0
        self._reported: int | None = None
        self.terms = 0  # times this elector became leader
        # Highest token seen (ours or a holder's). Offered to Redis when taking the lease,
        # so that tokens keep rising even after a Redis that lost its data.
        self.seen = 0

    @property
    def token(self) -> int | None:
        """The fencing token while the local lease is valid, else None."""
        if self._token is not None and self._clock() < self._valid_until:
            return self._token
        return None

    @property
    def is_leader(self) -> bool:
        return self.token is not None

    def remaining(self) -> float:
        """Seconds of local lease left (0 when not leader)."""
        return max(0.0, self._valid_until - self._clock()) if self.token is not None else 0.0

    async def step(self) -> int | None:
        """One round: take or renew the lease. Returns the token, None if somebody else
        holds it. Redis errors propagate (the local lease keeps running out meanwhile)."""
        began = self._clock()
        reply: Any = await self._acquire(keys=[self._lease_key, self._fence_key],
                                         args=[self.identity, int(self.ttl_s * 1000),
                                               self.seen])
        token = int(reply)
        self.seen = max(self.seen, abs(token))
        if token > 0:
            self._token, self._valid_until = token, began + 0.9 * self.ttl_s
        else:
            self._token, self._valid_until = None, 0.0
        self._notify()
        return self.token

    def _notify(self) -> None:
        now = self.token
        if now == self._reported:
            return
        if now is not None:
            self.terms += 1
            log.warning("leader: %s is leader with fencing token %d", self.identity, now)
        else:
            log.warning("leader: %s is not leader (was token %s)", self.identity,
                        self._reported)
        self._reported = now
        if self._on_change is not None:
            self._on_change(now)

    async def run(self) -> None:
        """Campaign forever: renew (or retry) every ttl/3; Redis errors only cost time."""
        interval = self.ttl_s / 3
        failing = False
        while True:
            try:
                await self.step()
                failing = False
            except (RedisError, OSError, TimeoutError) as exc:
                reraise_if_cancelled()
                if not failing:
                    log.warning("leader: cannot reach Redis (%s); leadership lapses in "
                                "%.1f s", exc, self.remaining())
                failing = True
                self._notify()
            delay = interval
            if self._token is not None:  # wake up when the local lease would run out
                delay = min(interval, max(0.0, self._valid_until - self._clock()))
            await asyncio.sleep(delay)
            self._notify()

    async def resign(self) -> None:
        """Give the lease up now (a clean shutdown lets a standby take over at once)."""
        token, self._token, self._valid_until = self._token, None, 0.0
        if token is not None:
            with contextlib.suppress(RedisError, OSError, TimeoutError):
                await self._release(keys=[self._lease_key], args=[f"{token} {self.identity}"])
        self._notify()

    async def leader(self) -> tuple[int, str] | None:
        """(token, identity) of the current lease holder, as Redis sees it."""
        value: Any = await self.client.get(self._lease_key)
        if value is None:
            return None
        text = value.decode() if isinstance(value, bytes) else str(value)
        token, _, who = text.partition(" ")
        return int(token), who


class NotLeader(BackendError):
    """This engine holds no valid lease; nothing was applied."""


class StaleToken(BackendError):
    """The token is lower than one the backend has already seen, or the lease is gone."""


class Fence:
    """The atomic token check of one backend (``{prefix}:fence:<name>`` keeps its highest)."""

    def __init__(self, client: RedisClient, prefix: str, name: str) -> None:
        self.name = name
        self._lease_key, _ = keys(prefix)
        self._high_key = f"{{{prefix}}}:fence:{name}"
        self._script = client.register_script(_FENCE)
        self._client = client

    async def admit(self, token: int, identity: str) -> None:
        """Record ``token`` as used, or raise StaleToken."""
        reply: Any = await self._script(keys=[self._lease_key, self._high_key],
                                        args=[token, identity])
        verdict, high = int(reply[0]), int(reply[1])
        if verdict == -1:
            raise StaleToken(self.name, f"token {token} of {identity} no longer holds the "
                             "lease; refused")
        if verdict == 0:
            raise StaleToken(self.name, f"stale fencing token {token}: a newer leader "
                             f"already applied with token {high}; refused")

    async def highest(self) -> int:
        value: Any = await self._client.get(self._high_key)
        return int(value) if value is not None else 0


class FencedBackend:
    """A Backend that applies only with a valid, current fencing token (see module doc)."""

    def __init__(self, inner: Backend, elector: LeaderElector) -> None:
        self.inner = inner
        self.name = inner.name
        self.elector = elector
        self.fence = Fence(elector.client, elector.prefix, inner.name)
        self.applied: list[tuple[int, int]] = []  # (token, plan version), newest last
        self.refused = 0

    async def apply(self, plan: Plan, *, dry_run: bool = False) -> ApplyResult:
        if dry_run:
            return await self.inner.apply(plan, dry_run=True)
        token = self.elector.token
        if token is None:
            self.refused += 1
            raise NotLeader(self.name, f"{self.elector.identity} is not leader; plan "
                            f"v{plan.version} not applied")
        try:
            await self.fence.admit(token, self.elector.identity)
        except StaleToken:
            self.refused += 1
            raise
        except (RedisError, OSError, TimeoutError) as exc:
            raise BackendError(self.name, f"cannot check the fencing token: {exc}") from exc
        left = self.elector.remaining()
        try:
            async with asyncio.timeout(left):
                result = await self.inner.apply(plan)
        except TimeoutError:
            raise BackendError(self.name, f"apply of plan v{plan.version} outlived the "
                               f"lease ({left:.1f} s left when it began)") from None
        self.applied.append((token, plan.version))
        return result

    async def aclose(self) -> None:
        await self.inner.aclose()
