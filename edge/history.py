"""The policy warehouse: every configuration version and every applied plan, kept in Redis.

Keys (one ``{prefix}`` hash tag, so every script's keys share a Cluster slot)::

    {prefix}:config:seq      INCR counter of configuration versions
    {prefix}:config:log      stream: version, at, author, reason, digest, base, diff, text
    {prefix}:config:current  the version the engines run (a rollback moves it)
    {prefix}:plan:log        stream: version, at, author, token, config, checksum, reason,
                             diff (JSON), links (JSON), plan (JSON)
    {prefix}:fence:history   highest fencing token that wrote a plan

Both streams are trimmed to the newest ``keep`` entries (exact MAXLEN, so retention is what
it says). A configuration is recorded only when its text differs (by digest) from the newest
version; recording the same text again makes that version current. A plan is written by the
leader through ``HistoryBackend``: the write checks the fencing token *inside the same script*
as the XADD, so a deposed leader can never add to the record.
"""

from __future__ import annotations

import difflib
import getpass
import hashlib
import json
import socket
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

from redis.exceptions import RedisError

from dns_backends.base import ApplyResult, BackendError
from edge import plancodec
from edge.leader import LeaderElector, NotLeader, StaleToken
from edge.leader import keys as leader_keys
from edge.plan import Plan, PlanDiff
from edge.steering.explain import explain_diff
from probes.bus.redis_streams import RedisClient

_RECORD_CONFIG = """
local last = redis.call('XREVRANGE', KEYS[2], '+', '-', 'COUNT', 1)
if ARGV[7] ~= '1' and #last > 0 then
  local f = last[1][2]
  local version, digest
  for i = 1, #f, 2 do
    if f[i] == 'digest' then digest = f[i + 1] elseif f[i] == 'version' then version = f[i + 1] end
  end
  if digest == ARGV[1] then
    redis.call('SET', KEYS[3], version)
    return {tonumber(version), 0}
  end
end
local v = redis.call('INCR', KEYS[1])
redis.call('XADD', KEYS[2], 'MAXLEN', ARGV[8], '*', 'version', v, 'digest', ARGV[1],
           'at', ARGV[2], 'author', ARGV[3], 'reason', ARGV[4], 'base', ARGV[5],
           'diff', ARGV[6], 'text', ARGV[9])
redis.call('SET', KEYS[3], v)
return {v, 1}
"""

# KEYS: lease, highest token that wrote, plan log. ARGV: token, identity, maxlen, then the
# entry's field/value pairs. Returns {1, id} | {0, highest} (stale) | {-1, 0} (lease lost).
_RECORD_PLAN = """
if redis.call('GET', KEYS[1]) ~= ARGV[1] .. ' ' .. ARGV[2] then
  return {-1, 0}
end
local high = tonumber(redis.call('GET', KEYS[2]) or '0')
if tonumber(ARGV[1]) < high then
  return {0, high}
end
redis.call('SET', KEYS[2], ARGV[1])
local entry = {}
for i = 4, #ARGV do entry[#entry + 1] = ARGV[i] end
local id = redis.call('XADD', KEYS[3], 'MAXLEN', ARGV[3], '*', unpack(entry))
return {1, id}
"""


def default_author() -> str:
    try:
        user = getpass.getuser()
    except (KeyError, OSError):
        user = "unknown"
    return f"{user}@{socket.gethostname()}"


def digest(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:16]


@dataclass(frozen=True, slots=True)
class ConfigVersion:
    version: int
    at: float
    author: str
    reason: str
    digest: str
    base: int  # the version ``diff`` was made against (0: none)
    diff: str
    text: str

    def to_json(self, *, text: bool = False) -> dict[str, Any]:
        out: dict[str, Any] = {"version": self.version, "at": self.at, "author": self.author,
                               "reason": self.reason, "digest": self.digest,
                               "base": self.base, "diff": self.diff}
        if text:
            out["text"] = self.text
        return out


@dataclass(frozen=True, slots=True)
class PlanRecord:
    version: int
    at: float
    author: str
    token: int
    config_version: int
    checksum: str
    reason: str
    diff: list[Any]
    links: Mapping[str, str]
    plan: dict[str, Any] = field(repr=False)

    def to_json(self, *, plan: bool = False) -> dict[str, Any]:
        out: dict[str, Any] = {"version": self.version, "at": self.at, "author": self.author,
                               "token": self.token, "config_version": self.config_version,
                               "checksum": self.checksum, "reason": self.reason,
                               "diff": self.diff, "links": dict(self.links)}
        if plan:
            out["plan"] = self.plan
        return out


def _fields(raw: Mapping[Any, Any]) -> dict[str, str]:
    def s(x: Any) -> str:
        return x.decode() if isinstance(x, bytes) else str(x)
    return {s(k): s(v) for k, v in raw.items()}


def _config(f: dict[str, str]) -> ConfigVersion:
    return ConfigVersion(version=int(f["version"]), at=float(f["at"]), author=f["author"],
                         reason=f["reason"], digest=f["digest"], base=int(f["base"]),
                         diff=f["diff"], text=f["text"])


def _plan_record(f: dict[str, str]) -> PlanRecord:
    return PlanRecord(version=int(f["version"]), at=float(f["at"]), author=f["author"],
                      token=int(f["token"]), config_version=int(f["config"]),
                      checksum=f["checksum"], reason=f["reason"], diff=json.loads(f["diff"]),
                      links=MappingProxyType(json.loads(f["links"])),
                      plan=json.loads(f["plan"]))


class PolicyWarehouse:
    """Configuration versions and applied plans of one engine cluster (see module doc)."""

    def __init__(self, client: RedisClient, *, prefix: str = "edgesteer",
                 keep: int = 1000) -> None:
        self.client = client
        self.prefix = prefix
        self.keep = keep
        tag = f"{{{prefix}}}"
        self.k_seq, self.k_config, self.k_current = (f"{tag}:config:seq", f"{tag}:config:log",
                                                     f"{tag}:config:current")
        self.k_plans, self.k_high = f"{tag}:plan:log", f"{tag}:fence:history"
        self.k_lease = leader_keys(prefix)[0]
        self._record_config = client.register_script(_RECORD_CONFIG)
        self._record_plan = client.register_script(_RECORD_PLAN)

    # configuration ------------------------------------------------------------------------

    async def record_config(self, text: str, *, author: str | None = None,
                            reason: str = "", force: bool = False) -> tuple[ConfigVersion, bool]:
        """Store ``text`` as the newest version unless it equals the newest; make it current.

        Returns (the version now current, whether a new version was written)."""
        latest = await self.latest_config()
        base = latest.version if latest is not None else 0
        diff = "".join(difflib.unified_diff(
            latest.text.splitlines(keepends=True) if latest else [],
            text.splitlines(keepends=True),
            f"v{base}" if latest else "/dev/null", "new"))
        reply: Any = await self._record_config(
            keys=[self.k_seq, self.k_config, self.k_current],
            args=[digest(text), repr(time.time()), author or default_author(), reason, base,
                  diff, "1" if force else "0", self.keep, text])
        version, created = int(reply[0]), bool(int(reply[1]))
        found = await self.config(version)
        assert found is not None, "a version just written is readable"
        return found, created

    async def latest_config(self) -> ConfigVersion | None:
        entries: Any = await self.client.xrevrange(self.k_config, count=1)
        return _config(_fields(entries[0][1])) if entries else None

    async def current_config_version(self) -> int | None:
        value: Any = await self.client.get(self.k_current)
        return int(value) if value is not None else None

    async def configs(self, limit: int = 50) -> list[ConfigVersion]:
        """Newest first."""
        entries: Any = await self.client.xrevrange(self.k_config, count=limit)
        return [_config(_fields(raw)) for _, raw in entries]

    async def config(self, version: int) -> ConfigVersion | None:
        """The stored version, or None when it never existed or has been trimmed away."""
        cursor = "+"
        while True:
            entries: Any = await self.client.xrevrange(self.k_config, max=cursor, count=100)
            if not entries:
                return None
            for _entry_id, raw in entries:
                f = _fields(raw)
                if int(f["version"]) == version:
                    return _config(f)
                if int(f["version"]) < version:
                    return None
            last = entries[-1][0]
            last_text = last.decode() if isinstance(last, bytes) else str(last)
            cursor = "(" + last_text

    # plans --------------------------------------------------------------------------------

    async def record_plan(self, plan: Plan, *, token: int, identity: str, reason: str,
                          diff: PlanDiff, config_version: int,
                          links: Mapping[str, str]) -> None:
        """Append ``plan`` as applied by ``identity`` under ``token``; raises StaleToken."""
        entry = {"version": plan.version, "at": repr(time.time()), "author": identity,
                 "token": token, "config": config_version, "checksum": plan.checksum(),
                 "reason": reason, "diff": json.dumps(diff.to_json()),
                 "links": json.dumps(dict(links)),
                 # grouped: one body per group, not per segment (edge.plancodec)
                 "plan": json.dumps(plancodec.encode(plan), separators=(",", ":"))}
        args: list[Any] = [token, identity, self.keep]
        for k, v in entry.items():
            args += [k, v]
        reply: Any = await self._record_plan(keys=[self.k_lease, self.k_high, self.k_plans],
                                             args=args)
        verdict = int(reply[0])
        if verdict == -1:
            raise StaleToken("history", f"token {token} of {identity} no longer holds the "
                             "lease; plan record refused")
        if verdict == 0:
            raise StaleToken("history", f"stale fencing token {token}: token {reply[1]} "
                             "already wrote; plan record refused")

    async def plans(self, limit: int = 50) -> list[PlanRecord]:
        """Newest first."""
        entries: Any = await self.client.xrevrange(self.k_plans, count=limit)
        return [_plan_record(_fields(raw)) for _, raw in entries]

    async def last_plan(self) -> PlanRecord | None:
        found = await self.plans(1)
        return found[0] if found else None


LinkStates = Callable[[], Mapping[str, str]]


class HistoryBackend:
    """A Backend that records each applied plan in the warehouse, fenced by the leader's
    token. Put it last: what it records is what the other backends were given."""

    name = "history"

    def __init__(self, warehouse: PolicyWarehouse, elector: LeaderElector, *,
                 config_version: Callable[[], int], links: LinkStates,
                 previous: Plan | None = None) -> None:
        self.warehouse = warehouse
        self.elector = elector
        self._config_version = config_version
        self._links = links
        self.previous = previous

    async def apply(self, plan: Plan, *, dry_run: bool = False) -> ApplyResult:
        diff = (self.previous or Plan()).diff(plan)
        if dry_run:
            return ApplyResult(self.name, plan.version, len(diff.changes), dry_run=True)
        token = self.elector.token
        if token is None:
            raise NotLeader(self.name, f"{self.elector.identity} is not leader; plan "
                            f"v{plan.version} not recorded")
        reason = explain_diff(diff) if diff else "re-applied unchanged (new leader or retry)"
        try:
            await self.warehouse.record_plan(
                plan, token=token, identity=self.elector.identity, reason=reason, diff=diff,
                config_version=self._config_version(), links=self._links())
        except (RedisError, OSError, TimeoutError) as exc:
            raise BackendError(self.name, f"cannot record plan v{plan.version}: {exc}") \
                from exc
        self.previous = plan
        return ApplyResult(self.name, plan.version, len(diff.changes))

    async def aclose(self) -> None:
        return None
