"""``edgesteer serve``: the built-in authoritative DNS server alone, on uvloop, N processes.

The data plane of a node whose plan is computed elsewhere, or the fastest way to serve a
config (``edge.runtime.NodeRuntime`` composes agent -> engine -> built-in DNS in one
process; that is ``edgesteer run``). Without ``--follow``, ``serve`` answers from the plan
computed from the config with every link assumed up, the same plan ``edgesteer plan
CONFIG`` prints. With ``--follow`` it answers from the current plan of a steering engine
(``edgesteer steer`` or ``run`` with the same ``guard.state_dir``): it watches the engine's
``engine.json`` there (``edge.planfeed``: a stat per interval, parse off the loop, whole
swap), starts from the plan in it when there is one, and keeps the last good plan when
the file is unusable (logged, counted as the ``plan_feed_rejected`` event). With a Redis
bus (``bus.kind: redis``) it follows the leader's plan history in Redis instead (unless
``--state-dir`` names a directory). Every worker follows the source itself, so all of
them swap.

``--workers N`` (N > 1) forks N processes that each bind every listener with
SO_REUSEPORT, so the kernel spreads queries over them; the parent supervises, sums their
counters for ``--metrics`` and stops them on SIGTERM/SIGINT. A worker that dies takes the
service down with exit code 1 (systemd restarts it): half a server is worse than a
restart.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import logging
import multiprocessing
import multiprocessing.connection
import signal
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine
from dataclasses import dataclass, replace
from multiprocessing.process import BaseProcess
from pathlib import Path
from typing import Any

from redis.exceptions import RedisError

from dns_backends.base import BackendError
from dns_backends.builtin import cookies as dns_cookies
from dns_backends.builtin.metrics import DnsCollector, Snapshot
from dns_backends.builtin.rrl import RateLimiter
from dns_backends.builtin.server import BuiltinDnsServer
from edge import planfeed
from edge.buses import redis_client
from edge.commands.common import load_or_report, snapshot_from_states
from edge.config.schema import Config
from edge.lab.runner import parse_listen
from edge.plan import Plan
from edge.steering.planner import plan as make_plan
from edge.steering.statefile import state_dir
from geo.geoip import GeoIP
from geo.segment import SegmentMatcher

log = logging.getLogger("edgesteer.serve")
REPORT_EVERY_S = 1.0


def add_parser(sub: Any) -> None:
    p: argparse.ArgumentParser = sub.add_parser(
        "serve", help="serve the config's steered zones from the built-in DNS server",
        description="Answer for the zones of CONFIG from the built-in authoritative DNS "
        "server (UDP and TCP, IPv4 and IPv6), with the plan computed from CONFIG with every "
        "link assumed up, or (--follow) the current plan of the steering engine that "
        "shares CONFIG's guard.state_dir or Redis bus. Runs on uvloop; --workers N forks "
        "N processes sharing each port (SO_REUSEPORT). SIGTERM or SIGINT stops it "
        "cleanly. Prints one line when it serves.")
    p.add_argument("config_pos", nargs="?", metavar="CONFIG", help="edgesteer YAML config")
    p.add_argument("--config", dest="config_opt", metavar="FILE",
                   help="edgesteer YAML config (same as CONFIG)")
    p.add_argument("--listen", action="append", metavar="HOST:PORT",
                   help="listen address, UDP and TCP (repeatable; default: dns.listen of "
                   "CONFIG; [::1]:53 for IPv6)")
    p.add_argument("--workers", type=int, default=1, metavar="N",
                   help="server processes (default 1); N > 1 needs fixed ports")
    p.add_argument("--metrics", metavar="HOST:PORT",
                   help="serve Prometheus /metrics and /healthz here")
    p.add_argument("--rrl-rate", type=float, default=0.0, metavar="R",
                   help="response rate limit: R responses/s per client /24 (IPv4) or /56 "
                   "(IPv6) over UDP; 0 = off (default)")
    p.add_argument("--rrl-slip", type=int, default=2, metavar="S",
                   help="over the limit, send every S-th response truncated (TC=1) so "
                   "real clients retry over TCP; 0 = drop all (default 2)")
    p.add_argument("--query-log-sample", type=int, default=0, metavar="N",
                   help="log one query in N (client address cut to /24 or /48); 0 = off")
    p.add_argument("--tcp-max-connections", type=int, default=256, metavar="N",
                   help="open TCP connections per process (default 256)")
    p.add_argument("--tcp-idle-timeout", type=float, default=10.0, metavar="S",
                   help="close idle TCP connections after S seconds (default 10)")
    p.add_argument("--follow", action="store_true",
                   help="answer from the steering engine's current plan: follow the leader's "
                   "plan history in Redis when CONFIG has a Redis bus, else engine.json in "
                   "guard.state_dir of CONFIG (or --state-dir); each new plan is swapped in "
                   "whole, a bad one keeps the last good plan")
    p.add_argument("--state-dir", metavar="DIR",
                   help="with --follow: follow engine.json in this state directory (default: "
                   "the Redis plan history with a Redis bus, else guard.state_dir of CONFIG)")
    p.add_argument("--follow-interval", type=float, default=planfeed.DEFAULT_INTERVAL_S,
                   metavar="S", help="with --follow: check the file every S seconds "
                   f"(default {planfeed.DEFAULT_INTERVAL_S})")
    p.add_argument("--no-uvloop", action="store_true",
                   help="use the default asyncio event loop (slower; for comparison)")
    p.add_argument("--no-udp-batch", action="store_true",
                   help="UDP through the event loop's transport, one system call per "
                   "datagram, instead of recvmmsg/sendmmsg batches (Linux)")
    p.set_defaults(run=run)


@dataclass(frozen=True, slots=True)
class ServeOptions:
    listen: tuple[tuple[str, int], ...]
    workers: int
    metrics: tuple[str, int] | None
    rrl_rate: float
    rrl_slip: int
    query_log_sample: int
    tcp_max_connections: int
    tcp_idle_timeout: float
    uvloop: bool
    udp_batch: bool = True
    follow: Path | None = None  # the engine's file to follow (--follow)
    follow_interval: float = planfeed.DEFAULT_INTERVAL_S
    follow_history: bool = False  # --follow with a Redis bus: the Redis plan history


@dataclass(frozen=True, slots=True)
class _Start:
    """The plan each process starts with, and (--follow) the file version or the plan
    record it came from."""

    plan: Plan
    seen: planfeed.Signature | str | None = None  # file version or plan record ID


def initial_plan(config: Config) -> Plan:
    """The plan of ``config`` with every link assumed up (what ``edgesteer plan`` shows)."""
    return make_plan(config, snapshot_from_states(config, []), version=1, now=time.time())


def build_server(config: Config, opts: ServeOptions) -> BuiltinDnsServer:
    rrl = RateLimiter(opts.rrl_rate, slip=opts.rrl_slip) if opts.rrl_rate > 0 else None
    return BuiltinDnsServer(config.zones, config.services, SegmentMatcher(config.segments),
                            opts.listen, reuse_port=opts.workers > 1, rrl=rrl,
                            query_log_every=opts.query_log_sample,
                            max_tcp_connections=opts.tcp_max_connections,
                            tcp_idle_timeout=opts.tcp_idle_timeout, udp_batch=opts.udp_batch,
                            geo=open_geo(config),
                            cookies=dns_cookies.keyed(config.dns.cookie_secret))


def open_geo(config: Config) -> GeoIP | None:
    """The config's GeoIP databases (``geo.databases``), or None. Opened per process (after
    a fork) and kept for its life: the readers are read-only memory maps."""
    return GeoIP(config.geo.databases) if config.geo.databases else None


def run(args: argparse.Namespace) -> int:
    path = args.config_opt or args.config_pos
    if path is None or (args.config_opt and args.config_pos):
        print("edgesteer serve: give the config once, as CONFIG or --config FILE",
              file=sys.stderr)
        return 2
    config = load_or_report(path, "serve")
    if config is None:
        return 2
    try:
        opts = _options(args, config)
    except ValueError as exc:
        print(f"edgesteer serve: {exc}", file=sys.stderr)
        return 2
    if args.verbose == 0:
        logging.getLogger().setLevel(logging.INFO)
    plan = initial_plan(config)
    followed: Plan | None = None
    seen: planfeed.Signature | str | None = None
    if opts.follow is not None:
        followed, seen = planfeed.initial(opts.follow)
    elif opts.follow_history:
        followed, seen = asyncio.run(_history_initial(config))
    if followed is not None:
        plan = followed
    elif opts.follow is not None or opts.follow_history:
        log.info("following %s: no plan there yet; serving the config's plan until the "
                 "engine writes one", opts.follow or "the Redis plan history")
    start = _Start(plan, seen)
    try:
        if opts.workers == 1:
            _run_loop(_serve_one(config, opts, start), opts.uvloop)
            return 0
        return _supervise(config, opts, start)
    except OSError as exc:
        print(f"edgesteer serve: {exc}", file=sys.stderr)
        return 1


def _options(args: argparse.Namespace, config: Config) -> ServeOptions:
    listen = parse_listen(args.listen) if args.listen else config.dns.listen
    if args.workers < 1:
        raise ValueError(f"--workers {args.workers}: expected 1 or more")
    if args.workers > 1 and any(port == 0 for _, port in listen):
        raise ValueError("--workers > 1 needs fixed ports (port 0 would give each worker "
                         "its own port)")
    metrics = parse_listen([args.metrics])[0] if args.metrics else None
    if args.rrl_rate < 0 or args.rrl_slip < 0 or args.query_log_sample < 0:
        raise ValueError("--rrl-rate, --rrl-slip and --query-log-sample must be >= 0")
    follow: Path | None = None
    history = False
    if args.follow:
        directory = Path(args.state_dir) if args.state_dir else state_dir(config)
        if config.bus.kind == "redis" and not args.state_dir:
            history = True
        elif directory is None:
            raise ValueError("--follow needs guard.state_dir in the config, a Redis bus, or "
                             "--state-dir DIR")
        else:
            follow = planfeed.engine_file(directory)
    elif args.state_dir:
        raise ValueError("--state-dir goes with --follow")
    if not args.follow_interval > 0:
        raise ValueError("--follow-interval must be > 0")
    return ServeOptions(tuple(listen), args.workers, metrics, args.rrl_rate, args.rrl_slip,
                        args.query_log_sample, args.tcp_max_connections,
                        args.tcp_idle_timeout, not args.no_uvloop, not args.no_udp_batch,
                        follow, args.follow_interval, history)


def _run_loop(main: Coroutine[Any, Any, None], use_uvloop: bool) -> None:
    if use_uvloop:
        import uvloop

        uvloop.run(main)
    else:
        asyncio.run(main)


def _settle_gc() -> None:
    """Move everything allocated at startup (config, dnspython, tables) out of the cyclic
    collector's reach: a full collection then walks only what the query path made, which
    keeps its pauses (and the latency tail) short."""
    gc.collect()
    gc.freeze()


def _stop_event() -> asyncio.Event:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    return stop


def _announce(plan: Plan, server_bound: list[tuple[str, int]], workers: int,
              opts: ServeOptions) -> None:
    where = ", ".join(f"[{h}]:{p}" if ":" in h else f"{h}:{p}" for h, p in server_bound)
    metrics = opts.metrics
    extra = f"; metrics on {metrics[0]}:{metrics[1]}" if metrics else ""
    if opts.follow is not None:
        extra += f"; following {opts.follow}"
    elif opts.follow_history:
        extra += "; following the Redis plan history"
    print(f"edgesteer serve: plan v{plan.version} ({len(plan.answers)} answer sets) on "
          f"{where} udp+tcp, {workers} worker(s){extra}", flush=True)


async def _with_metrics(opts: ServeOptions, source: Callable[[], list[Snapshot]],
                        body: Callable[[], Awaitable[None]]) -> None:
    """Run ``body`` with /metrics served from ``source`` when --metrics was given."""
    if opts.metrics is None:
        await body()
        return
    from prometheus_client import CollectorRegistry

    from edge.api.metrics import start_metrics_server

    registry = CollectorRegistry()
    registry.register(DnsCollector(source))
    runner = await start_metrics_server(*opts.metrics, registry=registry)
    try:
        await body()
    finally:
        await runner.cleanup()


def _apply_first(server: BuiltinDnsServer, config: Config, start: _Start) -> Plan:
    """Serve the start plan; a followed plan this server refuses gives way to the
    config's (the feed then waits for the engine's next one)."""
    plan = start.plan
    try:
        result = server.apply_now(plan)
    except BackendError as exc:
        if start.seen is None:
            raise
        log.warning("not serving the followed plan: %s", exc)  # the feed counts it
        plan = initial_plan(config)
        result = server.apply_now(plan)
    for note in result.notes:
        log.warning("plan v%d: %s", plan.version, note)
    return plan


async def _history_initial(config: Config) -> tuple[Plan | None, str | None]:
    """The newest plan in the Redis plan history, and its record ID (None when there is
    none, or it cannot be read now: the feed keeps trying)."""
    client = redis_client(config)
    try:
        entry_id, plan = await planfeed.newest_record(
            client, planfeed.history_key(config.bus.prefix))
        return plan, entry_id
    except planfeed.FeedError as exc:
        log.warning("not starting from the Redis plan history: %s", exc)
    except (RedisError, OSError, TimeoutError) as exc:
        log.warning("Redis plan history unreachable at start, serving the config's plan: "
                    "%s", exc)
    finally:
        await client.aclose()
    return None, None


def _feed(server: BuiltinDnsServer, config: Config, opts: ServeOptions, plan: Plan,
          start: _Start) -> planfeed.StateFileFeed | planfeed.HistoryFeed | None:
    """The plan follower of one process (--follow), swapping plans into ``server``."""
    if opts.follow is None and not opts.follow_history:
        return None
    events = server.stats["events"]

    def apply(new: Plan) -> None:
        result = server.apply_now(new)  # BackendError: the feed keeps the last good plan
        for note in result.notes:
            log.warning("plan v%d: %s", new.version, note)
        events["plan_feed_applied"] += 1
        gc.freeze()  # the new table joins the startup data, out of the collector's walks

    def reject(_reason: str) -> None:
        events["plan_feed_rejected"] += 1

    seen = start.seen if plan is start.plan else None
    if opts.follow is None:
        return planfeed.HistoryFeed(redis_client(config), config.bus.prefix, apply,
                                    interval=opts.follow_interval, on_reject=reject,
                                    applied=plan, seen=seen if isinstance(seen, str) else None)
    return planfeed.StateFileFeed(opts.follow, apply, interval=opts.follow_interval,
                                  on_reject=reject, applied=plan,
                                  seen=seen if isinstance(seen, planfeed.Signature) else None)


@contextlib.asynccontextmanager
async def _following(feed: planfeed.StateFileFeed | planfeed.HistoryFeed | None,
                     ) -> AsyncIterator[None]:
    if feed is None:
        yield
        return
    task = asyncio.create_task(feed.run(), name="plan-feed")
    try:
        yield
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        await feed.aclose()


async def _serve_one(config: Config, opts: ServeOptions, start: _Start) -> None:
    """One process: the server, its metrics, until SIGTERM/SIGINT."""
    server = build_server(config, opts)
    stop = _stop_event()
    await server.start()
    try:
        plan = _apply_first(server, config, start)
        _settle_gc()

        async def body() -> None:
            _announce(plan, server.bound, 1, opts)
            await stop.wait()
            log.info("signal received, stopping")

        async with _following(_feed(server, config, opts, plan, start)):
            await _with_metrics(opts, lambda: [server.snapshot()], body)
    finally:
        await server.aclose()


# -- several processes ------------------------------------------------------------------

def _worker(config: Config, opts: ServeOptions, start: _Start,
            conn: multiprocessing.connection.Connection) -> None:
    """A worker process: serve, report counters every second, stop on SIGTERM/SIGINT."""
    _die_with_parent()

    async def main() -> None:
        server = build_server(config, opts)
        stop = _stop_event()
        await server.start()
        try:
            plan = _apply_first(server, config, start)
            _settle_gc()
            conn.send(("ready", (server.bound, plan.version)))
            async with _following(_feed(server, config, opts, plan, start)):
                while not stop.is_set():
                    with contextlib.suppress(TimeoutError):
                        async with asyncio.timeout(REPORT_EVERY_S):
                            await stop.wait()
                    conn.send(("stats", server.snapshot()))
        finally:
            await server.aclose()
            with contextlib.suppress(OSError):
                conn.close()

    try:
        _run_loop(main(), opts.uvloop)
    except OSError as exc:
        with contextlib.suppress(OSError):
            conn.send(("error", str(exc)))
        raise SystemExit(1) from exc


def _die_with_parent() -> None:
    """Linux: SIGTERM this worker when the supervisor dies, even by SIGKILL (no orphans
    left holding the port)."""
    if not sys.platform.startswith("linux"):
        return
    import ctypes

    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


def _supervise(config: Config, opts: ServeOptions, start: _Start) -> int:
    """Fork the workers (before any event loop exists), then watch them from a loop."""
    ctx = multiprocessing.get_context("fork")
    workers: list[tuple[BaseProcess, multiprocessing.connection.Connection]] = []
    for i in range(opts.workers):
        parent_end, child_end = ctx.Pipe(duplex=False)
        proc: BaseProcess = ctx.Process(target=_worker, args=(config, opts, start, child_end),
                                        name=f"edgesteer-serve-{i}", daemon=True)
        proc.start()
        child_end.close()
        workers.append((proc, parent_end))
    code = 1
    try:
        result: list[int] = []
        _run_loop(_watch(workers, opts, start.plan, result), opts.uvloop)
        code = result[0] if result else 1
    finally:
        for proc, _ in workers:
            if proc.is_alive():
                proc.terminate()
        for proc, conn in workers:
            proc.join(5.0)
            if proc.is_alive():
                proc.kill()
                proc.join()
            conn.close()
    return code


async def _watch(workers: list[tuple[BaseProcess, multiprocessing.connection.Connection]],
                 opts: ServeOptions, plan: Plan, result: list[int]) -> None:
    loop = asyncio.get_running_loop()
    stop = _stop_event()
    latest: dict[int, Snapshot] = {}
    ready: dict[int, tuple[list[tuple[str, int]], int]] = {}
    failed = asyncio.Event()
    all_ready = asyncio.Event()

    def on_message(i: int, conn: multiprocessing.connection.Connection) -> None:
        try:
            kind, data = conn.recv()
        except (EOFError, OSError):
            loop.remove_reader(conn.fileno())
            if not stop.is_set():
                log.error("worker %d went away", i)
                failed.set()
            return
        if kind == "stats":
            latest[i] = data
        elif kind == "ready":
            ready[i] = data
            if len(ready) == len(workers):
                all_ready.set()
        elif kind == "error":
            log.error("worker %d: %s", i, data)
            failed.set()

    for i, (_, conn) in enumerate(workers):
        loop.add_reader(conn.fileno(), on_message, i, conn)

    async def body() -> None:
        waits = {asyncio.ensure_future(e.wait()) for e in (stop, failed, all_ready)}
        await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
        if all_ready.is_set() and not failed.is_set() and not stop.is_set():
            bound, version = ready[0]
            _announce(replace(plan, version=version), bound, len(workers), opts)
            await asyncio.wait(waits - {w for w in waits if w.done()},
                               return_when=asyncio.FIRST_COMPLETED)
        for w in waits:
            w.cancel()
        await asyncio.gather(*waits, return_exceptions=True)
        result.append(1 if failed.is_set() and not stop.is_set() else 0)
        if stop.is_set():
            log.info("signal received, stopping %d workers", len(workers))

    try:
        await _with_metrics(opts, lambda: list(latest.values()), body)
    finally:
        for _, conn in workers:
            with contextlib.suppress(OSError, ValueError):
                loop.remove_reader(conn.fileno())
