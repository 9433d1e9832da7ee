"""Plan swaps under load: dnsperf against the server while plans swap 10 times a second.

Runs bench/dns_swap.py for 5 s (the 30 s run is the benchmark): zero lost, NOERROR only,
zero SERVFAIL, no response mixing two plans, the SOA serial never going back.
"""

from __future__ import annotations

import json
import subprocess
import sys

from tests.conftest import require_binary
from tests.servers_dns_peers import ROOT


def test_plan_swaps_under_dnsperf_load() -> None:
    require_binary("dnsperf", "dnsperf")
    done = subprocess.run([sys.executable, str(ROOT / "bench" / "dns_swap.py"), "--duration",
                           "5", "--qps", "5000", "--json"], capture_output=True, text=True,
                          cwd=ROOT, timeout=90)
    assert done.stdout, done.stderr
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["swaps"] >= 40  # 10 per second, with slack for a loaded machine
    assert result["sent"] > 10000 and result["lost"] == 0, result
    assert set(result["rcodes"]) == {"NOERROR"}, result
    assert "SERVFAIL" not in result["server_rcodes"] and result["server_errors"] == 0
    assert result["mixed_count"] == 0, result["mixed"]
    assert result["checked"]["X"] > 10 and result["checked"]["Y"] > 10
    assert result["serials_monotonic"] and result["fast_answers"] > 10000
    assert result["ok"] and done.returncode == 0
