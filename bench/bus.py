"""Measurements per second that one engine ingests from 20 simulated agents over a real Redis.

    .venv/bin/python bench/bus.py [--agents 20] [--per-agent 25000] [--paths 50]
        [--prefill] [--feed-tracker [incremental|full]]

Starts its own redis-server on a free loopback port (no persistence). The agents run in a
second process (20 RedisStreamsBus publishers, each with its own connection, each with
``--paths`` paths); the engine in this one reads through its consumer group, decodes, acks
and feeds every measurement to a real HealthTracker. Reported: the engine's ingest rate from
its first to its last measurement, the agents' publish rate, and, as the peer on the same
server in the same run, ``redis-benchmark`` XADD of one small entry per request, pipelined
(the ceiling of a one-measurement-per-entry design), and the ratio between them.
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from edge.config.build import DEFAULT_THRESHOLDS
from edge.config.schema import HealthSettings
from edge.health.tracker import HealthTracker
from probes.bus.redis_streams import RedisSettings, RedisStreamsBus, connect
from probes.measurement import Measurement, PathKey, ProbeKind


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def start_redis(port: int, workdir: str) -> subprocess.Popen[bytes]:
    proc = subprocess.Popen(["redis-server", "--port", str(port), "--bind", "127.0.0.1",
                             "--save", "", "--appendonly", "no", "--dir", workdir],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    for _ in range(200):
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return proc
        time.sleep(0.02)
    proc.kill()
    raise RuntimeError("redis-server did not start")


def m(node: str, i: int, paths: int, at: float) -> Measurement:
    rtt = 0.030 + (i % 7) * 0.001
    return Measurement(
        path=PathKey(node, f"link{i % 4}", f"t{i % paths}"), kind=ProbeKind.ICMP, at=at + i,
        window_s=10.0, sent=10, received=10, loss=0.0, rtt_min=rtt, rtt_p50=rtt,
        rtt_p95=rtt, rtt_p99=rtt, rtt_max=rtt, rtt_mean=rtt, jitter_s=0.001,
        mean_abs_diff_s=0.001, ewma_rtt=rtt)


async def agents(url: str, n_agents: int, per_agent: int, paths: int) -> float:
    t0 = time.time()

    async def one(k: int) -> None:
        bus = RedisStreamsBus(connect(RedisSettings(url=url)), buffer_max=per_agent + 1)
        node = f"agent{k}"
        for i in range(per_agent):
            await bus.publish(m(node, i, paths, t0))
            if i % 500 == 499:
                await asyncio.sleep(0)  # let the sender run, like a real agent between probes
        await bus.flush()
        await bus.aclose()

    start = time.perf_counter()
    await asyncio.gather(*(one(k) for k in range(n_agents)))
    return time.perf_counter() - start


def agents_process(url: str, n_agents: int, per_agent: int, paths: int,
                   out: multiprocessing.Queue[float]) -> None:
    out.put(asyncio.run(agents(url, n_agents, per_agent, paths)))


async def engine(url: str, total: int, ready: asyncio.Event,
                 feed: str | None, prefilled: bool = False) -> tuple[float, int]:
    bus = RedisStreamsBus(connect(RedisSettings(url=url)), group="bench", consumer="engine",
                          read_count=256, block_ms=200)
    settings = HealthSettings(window=10, rise=3, fall=3, hold_down_s=10, stale_after_s=1e9,
                              quorum="majority", degraded_weight=0.5,
                              thresholds=DEFAULT_THRESHOLDS)
    tracker = HealthTracker(settings, {}, incremental=feed != "full")
    sub = bus.subscribe()
    sub._group_start = "0"  # with --prefill the group is made after the agents: read it all
    await sub._ensure_group()  # the group exists before the agents start
    ready.set()
    got = 0
    first = time.perf_counter()  # --prefill: the stream is full, the clock starts now
    async for meas in sub:
        if got == 0 and not prefilled:
            first = time.perf_counter()  # concurrent: from the first measurement on
        if feed:
            tracker.feed(meas)
        got += 1
        if got >= total:
            break
    elapsed = time.perf_counter() - first
    await sub.aclose()
    await bus.aclose()
    return elapsed, got


def redis_benchmark(port: int, requests: int) -> float:
    exe = shutil.which("redis-benchmark")
    if exe is None:
        return float("nan")
    out = subprocess.run([exe, "-p", str(port), "-n", str(requests), "-P", "64", "-q",
                          "XADD", "peerbench", "MAXLEN", "~", "100000", "*", "m", "x" * 200],
                         capture_output=True, text=True, timeout=120).stdout
    found = re.findall(r"([\d.]+) requests per second", out)
    return float(found[-1]) if found else float("nan")


async def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--agents", type=int, default=20)
    p.add_argument("--per-agent", type=int, default=25_000)
    p.add_argument("--paths", type=int, default=50)
    p.add_argument("--peer-requests", type=int, default=500_000)
    p.add_argument("--prefill", action="store_true",
                   help="agents publish everything first; then the engine drains the stream "
                   "alone (its ingest capacity, not bounded by the agents' CPU)")
    p.add_argument("--feed-tracker", nargs="?", const="incremental",
                   choices=["incremental", "full"],
                   help="also feed each measurement to a HealthTracker; 'full' re-combines "
                   "the link from all its paths on every measurement (the reference, whose "
                   "cost grows with the paths per link)")
    args = p.parse_args()
    total = args.agents * args.per_agent
    workdir = tempfile.mkdtemp(prefix="edgesteer-bench-")
    port = free_port()
    redis = start_redis(port, workdir)
    url = f"redis://127.0.0.1:{port}/0"
    try:
        results: multiprocessing.Queue[float] = multiprocessing.Queue()
        proc = multiprocessing.Process(target=agents_process,
                                       args=(url, args.agents, args.per_agent, args.paths,
                                             results))
        ready = asyncio.Event()
        if args.prefill:  # agents first, then the engine drains the stream alone
            proc.start()
            publish_s = await asyncio.to_thread(results.get, True, 600)
            proc.join(30)
            ready = asyncio.Event()
            elapsed, got = await engine(url, total, ready, args.feed_tracker, prefilled=True)
        else:
            eng = asyncio.create_task(engine(url, total, ready, args.feed_tracker))
            await ready.wait()
            proc.start()
            elapsed, got = await eng
            publish_s = await asyncio.to_thread(results.get, True, 600)
            proc.join(30)
        ours = got / elapsed
        peer = redis_benchmark(port, args.peer_requests)
        print(f"engine ingest: {got} measurements from {args.agents} agents in {elapsed:.2f} s"
              f" = {ours:,.0f} measurements/s (read + decode + dedup + ack"
              f"{f' + HealthTracker.feed ({args.feed_tracker})' if args.feed_tracker else ''})")
        print(f"agents publish: {total / publish_s:,.0f} measurements/s "
              f"(batched entries, pipelined XADD MAXLEN ~)")
        print(f"peer redis-benchmark XADD -P 64 (one entry per request): {peer:,.0f} entries/s")
        print(f"ratio ours / peer: {ours / peer:.2f}")
    finally:
        redis.terminate()
        redis.wait(10)
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    asyncio.run(main())
