"""dnsperf helpers shared by the DNS benchmarks: run it, parse its report, CPU time of pids.

dnsperf (DNS-OARC, Debian package ``dnsperf``) prints a summary; with ``-v`` it prints
one line per response with its latency, from which the percentiles are computed.
"""

from __future__ import annotations

import asyncio
import os
import re
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

CLK_TCK = os.sysconf("SC_CLK_TCK")
ECS_10_1_2 = "8:000118000a0102"  # EDNS option 8 (ECS): IPv4, source /24, 10.1.2.0


@dataclass
class PerfResult:
    sent: int = 0
    completed: int = 0
    lost: int = 0
    rcodes: dict[str, int] = field(default_factory=dict)
    qps: float = 0.0
    avg_latency_s: float = 0.0
    run_time_s: float = 0.0
    latencies_s: list[float] = field(default_factory=list)

    def percentile(self, p: float) -> float:
        if not self.latencies_s:
            return float("nan")
        ordered = sorted(self.latencies_s)
        return ordered[min(len(ordered) - 1, int(p / 100.0 * len(ordered)))]


def dnsperf_binary() -> str:
    found = shutil.which("dnsperf")
    if found is None:
        raise SystemExit("dnsperf not found: apt-get install dnsperf")
    return found


def write_queries(path: Path, lines: list[str]) -> Path:
    path.write_text("".join(f"{line}\n" for line in lines))
    return path


async def run_dnsperf(port: int, datafile: Path, *, seconds: float, qps: int | None = None,
                      ecs: str | None = ECS_10_1_2, verbose: bool = False,
                      outstanding: int = 100, clients: int = 1) -> PerfResult:
    """dnsperf against 127.0.0.1:port; ``verbose`` collects every latency (slower)."""
    argv = [dnsperf_binary(), "-s", "127.0.0.1", "-p", str(port), "-d", str(datafile),
            "-l", str(seconds), "-q", str(outstanding), "-c", str(clients), "-t", "2"]
    if qps:
        argv += ["-Q", str(qps)]
    if ecs:
        argv += ["-E", ecs]
    if verbose:
        argv += ["-v"]
    # The report goes to a file, read after the run: a reader draining 10,000 lines/s
    # from a pipe would take CPU from the server under test.
    with tempfile.TemporaryFile() as out:
        proc = await asyncio.create_subprocess_exec(*argv, stdout=out,
                                                    stderr=asyncio.subprocess.STDOUT)
        await proc.wait()
        out.seek(0)
        text = out.read().decode(errors="replace")
    if proc.returncode != 0:
        raise RuntimeError(f"dnsperf failed ({proc.returncode}): {text[-2000:]}")
    return parse_report(text)


_VERBOSE = re.compile(r"^> (\w+) \S+ \S+ ([0-9.]+)$")


def parse_report(text: str) -> PerfResult:
    res = PerfResult()
    for line in text.splitlines():
        line = line.strip()
        if m := _VERBOSE.match(line):
            res.latencies_s.append(float(m.group(2)))
        elif m := re.match(r"Queries sent:\s+(\d+)", line):
            res.sent = int(m.group(1))
        elif m := re.match(r"Queries completed:\s+(\d+)", line):
            res.completed = int(m.group(1))
        elif m := re.match(r"Queries lost:\s+(\d+)", line):
            res.lost = int(m.group(1))
        elif line.startswith("Response codes:"):
            for code, count in re.findall(r"(\w+) (\d+) \(", line):
                res.rcodes[code] = int(count)
        elif m := re.match(r"Queries per second:\s+([0-9.]+)", line):
            res.qps = float(m.group(1))
        elif m := re.match(r"Average Latency \(s\):\s+([0-9.]+)", line):
            res.avg_latency_s = float(m.group(1))
        elif m := re.match(r"Run time \(s\):\s+([0-9.]+)", line):
            res.run_time_s = float(m.group(1))
    return res


def cpu_seconds(pids: list[int]) -> float:
    """User + system CPU time of these processes (and their reaped children), seconds."""
    total = 0
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
        except OSError:
            continue
        # after the command: state(0) ... utime(11) stime(12) cutime(13) cstime(14)
        total += sum(int(fields[i]) for i in (11, 12, 13, 14))
    return total / CLK_TCK


def tree(pid: int) -> list[int]:
    """``pid`` and its descendants (worker processes)."""
    out = [pid]
    children = Path(f"/proc/{pid}/task/{pid}/children")
    if children.exists():
        for child in children.read_text().split():
            out += tree(int(child))
    return out
