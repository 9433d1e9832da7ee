"""ICMP probe throughput of one agent on one core, against fping, on emulated lab links (root).

Two lab namespaces joined by a veth (edge.lab.netns); nothing leaves them.

1. Throughput: ``--targets`` addresses in the server namespace (its kernel answers echo),
   every target probed every ``--interval`` seconds by one :class:`probes.agent.Agent` pinned
   to one CPU, for ``--seconds``. Reported: probes/s completed, CPU seconds per 1,000 probes
   (this process), false loss. Then fping on the same targets at the same total rate
   (``-p`` per target, ``-i`` between any two), its probes/s, CPU and loss.
2. Accuracy under that load: one more target, in a third namespace routed behind the
   server, answered by the userspace echo responder at a fixed 30 ms, probed every 20 ms
   while the agent carries the load (ours by the same agent, fping -C alongside, so both
   see the responder in the same state); the median rtts and their difference.

    sudo .venv/bin/python bench/probe_throughput.py [--targets 600] [--interval 0.1]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import resource
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from edge.lab.netns import Netns, echo_pair, stop, veth, wait_ready
from probes.agent import Agent
from probes.bus.memory import MemoryBus
from probes.measurement import ProbeKind, Sample
from probes.spec import LinkBinding, TargetSpec

FAR_ADDR = "198.19.0.2"  # behind the server namespace; the userspace responder answers


def target_addrs(n: int) -> list[str]:
    return [f"198.18.{1 + i // 250}.{1 + i % 250}" for i in range(n)]


def add_targets(server: Netns, addrs: list[str]) -> None:
    """Target addresses on the server's loopback, routed from the client."""
    batch = "".join(f"addr add {a}/32 dev lo\n" for a in addrs)
    subprocess.run(["ip", "netns", "exec", server.name, "ip", "-batch", "-"], input=batch,
                   text=True, check=True)


async def run_agent(client: Netns, addrs: list[str], interval: float, seconds: float,
                    source: str, fping: str) -> dict[str, float]:
    """The agent on every target plus the 30 ms one (every 20 ms), for ``seconds``; fping -C
    probes the 30 ms one at the same time, so both see the responder in the same state."""
    samples: list[Sample] = []
    specs = [TargetSpec(f"t{i}", ProbeKind.ICMP, a, 0, interval, 1.0)
             for i, a in enumerate(addrs)]
    specs.append(TargetSpec("far", ProbeKind.ICMP, FAR_ADDR, 0, 0.02, 1.0))
    bus = MemoryBus()
    agent = Agent("bench", specs, [LinkBinding("lab", source=source)], bus, window=10,
                  max_in_flight=100000, on_sample=samples.append)
    with client.entered():
        task = asyncio.create_task(agent.run())
        await asyncio.sleep(interval * 2)  # past the splay: every path is running
        samples.clear()
        cpu0, t0 = time.process_time(), time.perf_counter()
        far_fping = fping_rtts(client, int(seconds / 0.02), fping)
        await asyncio.sleep(seconds)
        cpu1, t1 = time.process_time(), time.perf_counter()
        done = list(samples)
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
    await bus.aclose()
    ok = [s for s in done if s.ok]
    far = [s.rtt_s for s in done if s.path.target == "far" and s.rtt_s is not None]
    theirs = await asyncio.to_thread(fping_read, far_fping)
    return {"far_p50": statistics.median(far), "far_n": len(far),
            "fping_far_p50": statistics.median(theirs), "fping_far_n": len(theirs),
            "probes_s": len(done) / (t1 - t0), "cpu_per_1000": (cpu1 - cpu0) / len(done) * 1000,
            "loss": 1 - len(ok) / len(done), "cpu_util": (cpu1 - cpu0) / (t1 - t0)}


def run_fping(client: Netns, addrs: list[str], interval: float, seconds: float,
              fping: str) -> dict[str, float]:
    """fping on every target at the same rate as the agent."""
    count = max(1, int(seconds / interval))
    gap_ms = interval * 1000 / len(addrs)
    argv = ["ip", "netns", "exec", client.name, fping, "-q", "-c", str(count),
            "-p", f"{interval * 1000:g}", "-i", f"{gap_ms:.3f}", "-t", "1000", *addrs]
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    done = subprocess.run(argv, capture_output=True, text=True, check=False)
    took = time.perf_counter() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime + after.ru_stime) - (before.ru_utime + before.ru_stime)
    sent = received = 0
    for m in re.finditer(r"xmt/rcv/%loss = (\d+)/(\d+)/", done.stderr):
        sent += int(m.group(1))
        received += int(m.group(2))
    if not sent:
        raise RuntimeError(f"fping printed no summary: {done.stderr[-500:]}")
    return {"probes_s": sent / took, "cpu_per_1000": cpu / sent * 1000,
            "loss": 1 - received / sent, "cpu_util": cpu / took}


def fping_rtts(client: Netns, n: int, fping: str) -> subprocess.Popen[str]:
    """fping -C on the 30 ms target, started in the background (read with fping_read)."""
    argv = ["ip", "netns", "exec", client.name, fping, "-q", "-C", str(n), "-p", "20",
            "-t", "1000", FAR_ADDR]
    return subprocess.Popen(argv, stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True)


def fping_read(proc: subprocess.Popen[str]) -> list[float]:
    _, err = proc.communicate()
    values = err.split(":", 1)[1].split()
    return [float(v) / 1000 for v in values if v != "-"]


def add_far(pair_server: Netns, client: Netns, server_addr: str) -> Netns:
    """A third namespace behind the server (routed), where the userspace responder answers
    FAR_ADDR at 30 ms while the server's own kernel answers the many targets."""
    far = Netns.create("esf")
    try:
        veth(pair_server, "far0", far, "lab0", a_addr="198.19.0.1/24", b_addr=f"{FAR_ADDR}/24")
        pair_server.sysctl("net.ipv4.ip_forward", "1")
        far.exec("ip", "route", "add", "default", "via", "198.19.0.1")
        far.sysctl("net.ipv4.icmp_echo_ignore_all", "1")
        client.exec("ip", "route", "add", "198.19.0.0/24", "via", server_addr)
    except BaseException:
        far.delete()
        raise
    return far


async def main() -> int:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--targets", type=int, default=600)
    p.add_argument("--interval", type=float, default=0.1)
    p.add_argument("--seconds", type=float, default=5.0)
    p.add_argument("--cpu", type=int, default=0, help="the one CPU the agent runs on")
    args = p.parse_args()
    fping = shutil.which("fping")
    if os.geteuid() != 0 or fping is None:
        print("needs root and fping (apt-get install fping)", file=sys.stderr)
        return 2
    os.sched_setaffinity(0, {args.cpu})
    addrs = target_addrs(args.targets)
    rate = args.targets / args.interval
    with echo_pair(kernel_echo=True) as pair:  # the targets' kernels answer: fast, exact
        add_targets(pair.server, addrs)
        pair.client.exec("ip", "route", "add", "198.18.0.0/16", "via", pair.server_addr)
        far = add_far(pair.server, pair.client, pair.server_addr)
        responder = far.python("edge.lab.echo", "--delay-ms", "30")
        try:
            wait_ready(responder, "echo responder")
            ours = await run_agent(pair.client, addrs, args.interval, args.seconds,
                                   pair.client_addr, fping)
            theirs = run_fping(pair.client, addrs, args.interval, args.seconds, fping)
        finally:
            stop(responder)
            far.delete()
    print(f"machine: {os.cpu_count()} CPUs, {os.uname().release}; agent pinned to CPU "
          f"{args.cpu}; {args.targets} targets every {args.interval:g}s = {rate:.0f}/s asked")
    for name, r in (("edgesteer", ours), ("fping", theirs)):
        print(f"{name:>10}: {r['probes_s']:8.0f} probes/s  {r['cpu_per_1000'] * 1000:7.1f} ms "
              f"CPU per 1000 probes  ({r['cpu_util'] * 100:.0f}% of a core)  "
              f"loss {r['loss'] * 100:.2f}%")
    print(f"ratio probes/s edgesteer/fping: {ours['probes_s'] / theirs['probes_s']:.2f}; "
          f"CPU per probe: {ours['cpu_per_1000'] / theirs['cpu_per_1000']:.2f}x fping")
    m_ours, m_theirs = ours["far_p50"], ours["fping_far_p50"]
    print(f"30 ms link, during the agent's load, median rtt: edgesteer {m_ours * 1000:.3f} ms "
          f"({ours['far_n']:.0f} replies), fping {m_theirs * 1000:.3f} ms "
          f"({ours['fping_far_n']:.0f}); difference {(m_ours - m_theirs) * 1000:+.3f} ms")
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
