#!/usr/bin/env bash
# Installs the Debian packages the test suite needs (deploy/test-packages.txt), when
# running as root and missing. Not root: say what is missing; the tests that need it
# fail under CI=true and skip otherwise.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
need=()
while read -r cmd pkg; do
  case "$cmd" in ''|'#'*) continue ;; esac
  # Some daemons live in sbin, which a non-login PATH may lack.
  # A COMMAND starting with / is a file the package ships (for packages with no command).
  if [ "${cmd#/}" != "$cmd" ]; then
    [ -e "$cmd" ] || need+=("$pkg")
  elif ! command -v "$cmd" >/dev/null 2>&1 && [ ! -x "/usr/sbin/$cmd" ]; then
    need+=("$pkg")
  fi
done < "$here/test-packages.txt"
[ ${#need[@]} -eq 0 ] && exit 0
mapfile -t need < <(printf '%s\n' "${need[@]}" | sort -u)
if [ "$(id -u)" -eq 0 ] && command -v apt-get >/dev/null 2>&1; then
  echo "installing test dependencies: ${need[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  # policy-rc.d: do not let the packages start their daemons (tests start their own).
  if [ ! -e /usr/sbin/policy-rc.d ]; then
    printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d && chmod +x /usr/sbin/policy-rc.d
    trap 'rm -f /usr/sbin/policy-rc.d' EXIT
  fi
  apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
else
  echo "missing test dependencies (run as root to install): ${need[*]}" >&2
fi
