#!/usr/bin/env bash
# Creates the project's virtualenv and installs edgesteer into it (editable, with dev extras).
# Usage: deploy/bootstrap-venv.sh PYTHON VENV
# On a fresh Debian, `python3 -m venv` needs the python3-venv package: installed here when
# running as root, otherwise the message says what to install.
set -euo pipefail
python=${1:-python3}
venv=${2:-.venv}
if ! command -v "$python" >/dev/null 2>&1; then
  echo "edgesteer needs Python 3.11+: '$python' not found (set PYTHON=/path/to/python3.11)" >&2
  exit 1
fi
if ! "$python" -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else 1)'; then
  echo "edgesteer needs Python 3.11+; $python is $("$python" -V 2>&1)" \
       "(set PYTHON=/path/to/python3.11)" >&2
  exit 1
fi
if ! "$python" -m venv --help >/dev/null 2>&1 || ! "$python" -c 'import ensurepip' 2>/dev/null; then
  pkg="python3-venv"
  if [ "$(id -u)" -eq 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "installing $pkg (needed to create $venv)"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq && apt-get install -y -qq --no-install-recommends "$pkg" >/dev/null
  else
    echo "cannot create a virtualenv: install $pkg (sudo apt-get install $pkg)" >&2
    exit 1
  fi
fi
[ -x "$venv/bin/python" ] || "$python" -m venv "$venv"
"$venv/bin/python" -m pip install --quiet --disable-pip-version-check --upgrade pip
"$venv/bin/python" -m pip install --quiet --disable-pip-version-check -e '.[dev]'
