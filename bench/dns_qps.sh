#!/usr/bin/env bash
# DNS QPS: dnsperf against `edgesteer serve` (1 and 2 workers), gdnsd (weighted plugin) and
# PowerDNS (LUA pickwrandom, enable-lua-records=shared), all serving the same weighted
# record on 127.0.0.1, in one run. Prints QPS, QPS per server core (server CPU time over
# the run), latency percentiles at a fixed 10,000 QPS, and the ratios.
#
#   bash bench/dns_qps.sh                 # 10 s per phase and server
#   bash bench/dns_qps.sh --seconds 30 --json /tmp/dns_qps.json
#
# Needs: dnsperf gdnsd pdns-server pdns-backend-sqlite3 (deploy/test-packages.txt; as root
# `bash deploy/install-test-deps.sh`). Loopback only.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(dirname "$here")
py="$root/.venv/bin/python"
[ -x "$py" ] || py=python3
for cmd in dnsperf gdnsd pdns_server; do
  command -v "$cmd" >/dev/null 2>&1 || [ -x "/usr/sbin/$cmd" ] || {
    echo "missing $cmd: bash deploy/install-test-deps.sh (as root)" >&2; exit 2; }
done
echo "load before the run: $(cut -d' ' -f1-3 /proc/loadavg) on $(nproc) cores"
exec "$py" "$here/dns_qps.py" "$@"
