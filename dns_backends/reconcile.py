"""Read -> diff -> write -> verify, with retries, drift reports and metrics: one loop, every store.

A *store* is the server-specific part (RFC 2136, PowerDNS API, zone file): it knows the
places it writes to (``Target``: a zone, in a view / for a segment), how to read the
managed RRsets of one, and how to write a list of changes. ``SyncBackend`` turns a store
into a ``Backend``:

- it reads the current state and writes only the difference (the same plan twice writes
  nothing the second time);
- a managed RRset that differs from what it last wrote is *drift* (someone edited it by
  hand): it is logged, counted, and put back;
- a write whose preconditions fail (``Conflict``: a concurrent edit between read and
  write) is retried after a fresh read, never forced blindly;
- a ``Transient`` failure (timeout, connection refused, SERVFAIL, HTTP 5xx) is retried
  with exponential backoff; anything else fails at once;
- after a write the target is read back; what is still different is an error;
- a store that can prove its last verified state when it writes (``known``: RFC 2136's
  SOA prerequisite, which the server enforces; PowerDNS's zone serial, which the store
  checks just before it sends) writes from it without reading first; a pass with nothing
  to write always reads;
- one target failing does not stop the others; the ``BackendError`` raised at the end says
  which targets were applied and which were not, so no partial state goes unreported.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Protocol, cast

from prometheus_client import Counter, Gauge

from dns_backends.base import ApplyResult, BackendError
from dns_backends.records import Change, RRsets, diff
from edge.plan import Plan

log = logging.getLogger("edgesteer.backends")

APPLIES = Counter("edgesteer_backend_applies", "Plan applies by backend and result",
                  ["backend", "result"])
CHANGES = Counter("edgesteer_backend_changes", "RRset changes written", ["backend"])
DRIFT = Counter("edgesteer_backend_drift", "Managed RRsets found edited outside edgesteer",
                ["backend"])
FAILING = Gauge("edgesteer_backend_failing", "1 while the last apply of a backend failed",
                ["backend"])
CONSECUTIVE = Gauge("edgesteer_backend_consecutive_failures",
                    "Applies failed in a row", ["backend"])


class Transient(Exception):
    """A failure worth retrying as is: the server is down, slow, or briefly unable."""


class Conflict(Exception):
    """The server's state changed between read and write (a prerequisite failed)."""


class Unproven(Exception):
    """A write from a store's ``known`` state (no read first) could not carry the guard
    that proves that state, e.g. it must be split across messages. Nothing was sent."""


@dataclass(frozen=True, slots=True, order=True)
class Target:
    """One place a store writes: a zone, for one segment (a BIND view, or the only one)."""

    zone: str
    segment: str
    view: str | None = None

    @property
    def label(self) -> str:
        return self.zone + (f" (view {self.view})" if self.view else "")


class Store(Protocol):
    name: str

    def targets(self) -> Sequence[Target]: ...

    def desired(self, plan: Plan, target: Target) -> RRsets: ...

    async def read(self, target: Target) -> RRsets: ...

    async def write(self, target: Target, changes: Sequence[Change],
                    wanted: RRsets) -> None: ...

    async def aclose(self) -> None: ...

    # optional: ``known(target) -> RRsets | None``, a state the store's next write proves
    # by itself (its guard makes the server refuse, or the store's own check just before
    # sending fails, if the target holds anything else): a pass that has changes then
    # writes from it without reading first. Its ``write`` raises ``Unproven`` (before
    # sending) when it cannot carry that guard.


@dataclass(frozen=True, slots=True)
class TargetDiff:
    target: Target
    changes: tuple[Change, ...]
    drift: tuple[Change, ...] = ()


@dataclass(slots=True)
class RetryPolicy:
    attempts: int = 4
    backoff_s: float = 0.1
    max_backoff_s: float = 2.0

    def delay(self, attempt: int) -> float:
        return float(min(self.max_backoff_s, self.backoff_s * 2 ** attempt))


@dataclass(slots=True)
class SyncStats:
    applies: int = 0
    writes: int = 0  # write() calls that had changes
    changes: int = 0
    drift: int = 0
    conflicts: int = 0
    retries: int = 0


DriftListener = Callable[[str, Target, Change], None]
_LET_IT_SEND = 4  # event-loop turns for a read to connect and send its request


@dataclass(slots=True)
class SyncBackend:
    """A ``Backend`` over a ``Store``: see the module docstring."""

    store: Store
    retry: RetryPolicy = field(default_factory=RetryPolicy)
    on_drift: DriftListener | None = None
    stats: SyncStats = field(default_factory=SyncStats)
    _written: dict[Target, RRsets] = field(default_factory=dict)
    name: str = field(init=False)
    _desired_cache: dict[Target, tuple[Plan, RRsets]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.name = self.store.name

    async def diff(self, plan: Plan) -> list[TargetDiff]:
        """What apply would change, per target; reads only. Raises BackendError."""
        out = []
        for target in self.store.targets():
            existing = await self._read(target)
            wanted = self._desired(plan, target)
            out.append(TargetDiff(target, diff(existing, wanted),
                                  tuple(self._drift(target, existing))))
        return out

    async def apply(self, plan: Plan, *, dry_run: bool = False) -> ApplyResult:
        self.stats.applies += 1
        done: list[str] = []
        failed: list[str] = []
        notes: list[str] = []
        changed = 0
        for target in self.store.targets():
            try:
                n = await self._apply_target(plan, target, dry_run, notes)
            except BackendError as exc:
                cause = _cause(exc)
                failed.append(cause if cause.startswith(target.label + ":")
                              else f"{target.label}: {cause}")
                continue
            changed += n
            done.append(f"{target.label} ({n} change{'s' if n != 1 else ''})")
        if failed:
            APPLIES.labels(self.name, "error").inc()
            FAILING.labels(self.name).set(1)
            CONSECUTIVE.labels(self.name).inc()
            applied = "; applied: " + ", ".join(done) if done else "; nothing applied"
            raise BackendError(self.name, f"plan v{plan.version} not fully applied: failed: "
                               + "; ".join(failed) + applied)
        APPLIES.labels(self.name, "dry_run" if dry_run else "ok").inc()
        FAILING.labels(self.name).set(0)
        CONSECUTIVE.labels(self.name).set(0)
        return ApplyResult(self.name, plan.version, changed, dry_run, tuple(notes))

    async def aclose(self) -> None:
        await self.store.aclose()

    # internals ----------------------------------------------------------------------------
    def _desired(self, plan: Plan, target: Target) -> RRsets:
        """The store's desired state, computed once per (plan, target): the reconcile loop
        applies the same plan object again and again."""
        cached = self._desired_cache.get(target)
        if cached is not None and cached[0] is plan:
            return cached[1]
        wanted = self.store.desired(plan, target)
        self._desired_cache[target] = (plan, wanted)
        return wanted

    async def _apply_target(self, plan: Plan, target: Target, dry_run: bool,
                            notes: list[str]) -> int:
        # a state the store can prove when it writes (``known``): no read before a write
        base = None if dry_run else self._known(target)
        first: asyncio.Future[RRsets] | None = None
        if base is None:
            # the first read goes out before the desired state is computed: the server
            # (another process) prepares its answer while this one computes
            first = asyncio.ensure_future(self.store.read(target))
        try:
            if first is not None:
                for _ in range(_LET_IT_SEND):
                    await asyncio.sleep(0)
            wanted = self._desired(plan, target)
        except BaseException:
            if first is not None:
                first.cancel()
                with contextlib.suppress(BaseException):
                    await first
            raise
        attempts = max(1, self.retry.attempts)
        attempt = 0
        last: Exception | None = None
        while True:
            try:
                if base is not None:
                    existing, base = base, None
                    changes = diff(existing, wanted)
                    if not changes:  # a pass that writes nothing reads: drift is found so
                        existing = await self.store.read(target)
                        changes = diff(existing, wanted)
                else:
                    reading, first = first, None
                    existing = await (reading if reading is not None
                                      else self.store.read(target))
                    changes = diff(existing, wanted)
                self._report_drift(target, existing, wanted, changes)
                if dry_run or not changes:
                    if dry_run:
                        notes.extend(f"{target.label}: {c.describe()}" for c in changes)
                    else:
                        self._written[target] = wanted
                    return len(changes)
                self.stats.writes += 1
                await self.store.write(target, changes, wanted)
                self._written[target] = wanted
                left = diff(await self.store.read(target), wanted)
                if left:
                    raise BackendError(self.name, f"{target.label}: verify after write "
                                       f"found {len(left)} RRsets still different, e.g. "
                                       f"{left[0].describe()}")
                self.stats.changes += len(changes)
                CHANGES.labels(self.name).inc(len(changes))
                log.info("%s: %s: applied plan v%d: %d changes", self.name, target.label,
                         plan.version, len(changes))
                return len(changes)
            except Unproven:
                continue  # nothing was sent: the same attempt, from a read this time
            except Conflict as exc:
                self.stats.conflicts += 1
                last = exc
                log.warning("%s: %s: the zone changed while we wrote (%s); reading again",
                            self.name, target.label, exc)
            except Transient as exc:
                last = exc
                if attempt + 1 < self.retry.attempts:
                    delay = self.retry.delay(attempt)
                    log.warning("%s: %s: %s; retry in %.2fs", self.name, target.label, exc,
                                delay)
                    await asyncio.sleep(delay)
            attempt += 1
            if attempt >= attempts:
                break
            self.stats.retries += 1
        raise BackendError(self.name, f"{target.label}: gave up after "
                           f"{self.retry.attempts} attempts: {last}")

    def _known(self, target: Target) -> RRsets | None:
        known = getattr(self.store, "known", None)
        return None if known is None else cast(Callable[[Target], "RRsets | None"],
                                                known)(target)

    async def _read(self, target: Target) -> RRsets:
        last: Exception | None = None
        for attempt in range(self.retry.attempts):
            try:
                return await self.store.read(target)
            except Transient as exc:
                last = exc
                if attempt + 1 < self.retry.attempts:
                    await asyncio.sleep(self.retry.delay(attempt))
        raise BackendError(self.name, f"{target.label}: cannot read: {last}")

    def _drift(self, target: Target, existing: RRsets, wanted: RRsets | None = None,
               changes: Sequence[Change] = ()) -> list[Change]:
        """Managed RRsets that differ from what we last wrote there (edited by hand).

        When we still want what we last wrote, that is ``changes`` (existing -> wanted)
        read backwards: no second diff.
        """
        written = self._written.get(target)
        if written is None:
            return []
        if written is wanted:
            return [Change(c.name, c.rdtype, c.after, c.before) for c in changes]
        return list(diff(written, existing))

    def _report_drift(self, target: Target, existing: RRsets, wanted: RRsets,
                      changes: Sequence[Change]) -> None:
        for change in self._drift(target, existing, wanted, changes):
            self.stats.drift += 1
            DRIFT.labels(self.name).inc()
            log.warning("%s: %s: drift: %s was changed outside edgesteer (%s); putting it "
                        "back", self.name, target.label, f"{change.name} {change.rdtype.name}",
                        _drift_text(change))
            if self.on_drift is not None:
                self.on_drift(self.name, target, change)


def _drift_text(change: Change) -> str:
    """``change`` goes from what we wrote (before) to what the server has (after)."""
    if change.after is None:
        return "deleted"
    if change.before is None:
        return "added " + " ".join(change.after.values)
    return "now " + " ".join(change.after.values)


def _cause(exc: BackendError) -> str:
    text = str(exc)
    prefix = f"{exc.backend}: "
    return text[len(prefix):] if text.startswith(prefix) else text



class Reconciler:
    """Continuous apply of one ``SyncBackend``, for the steering daemon.

    ``apply`` only hands the plan over and returns: a slow or dead server never holds up
    the engine (nor the built-in DNS server next to it). The loop applies the latest plan;
    after a failure it keeps that plan and tries again with exponential backoff (the
    metrics say it is failing) until the server is back; once converged it still reads
    the server every ``interval_s`` and puts back whatever was edited by hand. Applying
    the same plan again writes nothing, so the periodic pass is cheap.
    """

    def __init__(self, backend: SyncBackend, *, interval_s: float = 30.0,
                 backoff: RetryPolicy | None = None) -> None:
        self.backend = backend
        self.name = backend.name
        self.interval_s = interval_s
        self.backoff = backoff or RetryPolicy(attempts=0, backoff_s=0.5, max_backoff_s=30.0)
        self.failures = 0
        self.last_error: str | None = None
        self.applied: int | None = None  # version of the plan last applied in full
        self.passes = 0
        self._plan: Plan | None = None
        self._wake = asyncio.Event()
        self._done = asyncio.Condition()
        self._task: asyncio.Task[None] | None = None

    async def apply(self, plan: Plan, *, dry_run: bool = False) -> ApplyResult:
        if dry_run:
            return await self.backend.apply(plan, dry_run=True)
        self._plan = plan
        self._wake.set()
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name=f"reconcile-{self.name}")
        return ApplyResult(self.name, plan.version, 0, notes=("queued for reconcile",))

    async def wait_converged(self, version: int) -> None:
        """Until plan ``version`` (or later) is applied in full (wrap in asyncio.timeout)."""
        async with self._done:
            await self._done.wait_for(lambda: self.applied is not None
                                      and self.applied >= version)

    async def wait_passes(self, n: int) -> None:
        """Until ``n`` passes (successful or not) have run in total."""
        async with self._done:
            await self._done.wait_for(lambda: self.passes >= n)

    async def aclose(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        await self.backend.aclose()

    async def _run(self) -> None:
        while True:
            delay = self.interval_s if self.failures == 0 else \
                self.backoff.delay(self.failures - 1)
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(delay):
                    await self._wake.wait()
            self._wake.clear()
            plan = self._plan
            if plan is None:
                continue
            try:
                await self.backend.apply(plan)
            except BackendError as exc:
                self.failures += 1
                self.last_error = str(exc)
                log.error("%s (attempt %d; keeping plan v%d, retry in %.1fs)", exc,
                          self.failures, plan.version, self.backoff.delay(self.failures - 1))
            except Exception as exc:  # a bug must not end the loop: say so loudly, retry
                self.failures += 1
                self.last_error = f"{self.name}: unexpected {type(exc).__name__}: {exc}"
                FAILING.labels(self.name).set(1)
                log.exception("%s: unexpected failure applying plan v%d (attempt %d)",
                              self.name, plan.version, self.failures)
            else:
                if self.failures:
                    log.warning("%s: converged on plan v%d after %d failed attempts",
                                self.name, plan.version, self.failures)
                self.failures = 0
                self.last_error = None
                self.applied = plan.version
            async with self._done:
                self.passes += 1
                self._done.notify_all()
