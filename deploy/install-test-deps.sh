#!/usr/bin/env bash
# Installs the Debian packages the test suite needs, when running as root and missing.
# Not root and missing: say so; the tests that need them fail under CI=true, skip otherwise.
set -euo pipefail
need=()
# command -> Debian package
declare -A pkgs=(
  [dig]=bind9-dnsutils
)
for cmd in "${!pkgs[@]}"; do
  command -v "$cmd" >/dev/null 2>&1 || need+=("${pkgs[$cmd]}")
done
[ ${#need[@]} -eq 0 ] && exit 0
if [ "$(id -u)" -eq 0 ] && command -v apt-get >/dev/null 2>&1; then
  echo "installing test dependencies: ${need[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
else
  echo "missing test dependencies (install as root): ${need[*]}" >&2
fi
