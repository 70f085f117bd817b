#!/usr/bin/env bash
# Set up hwkit in ./.venv on a fresh machine: the pinned stack, finn-plus without its conflicting
# pins, and hwkit itself (editable). `--dev` adds the test tools. Re-running is cheap: the install
# is skipped while requirements.lock.txt, pyproject.toml and this script are unchanged.
set -euo pipefail
cd "$(dirname "$0")/.."

dev=0
for arg in "$@"; do
  case "$arg" in
    --dev) dev=1 ;;
    *) echo "setup.sh: unknown option '$arg' (use --dev for the test tools)" >&2; exit 2 ;;
  esac
done

PY=${PYTHON:-python3}
if ! "$PY" -c 'import sys; sys.exit(0 if sys.version_info[:2] == (3, 11) else 1)'; then
  echo "setup.sh: hwkit's pinned stack needs Python 3.11 (found $("$PY" --version 2>&1)); set PYTHON=python3.11" >&2
  exit 2
fi

stamp=.venv/.hwkit-setup-stamp
want="$(cat requirements.lock.txt requirements-dev.txt pyproject.toml scripts/setup.sh | sha256sum | cut -d' ' -f1)-dev$dev"
if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]; then
  exit 0
fi
# A dev install also satisfies a plain one.
if [ "$dev" = 0 ] && [ -f "$stamp" ] && [ "$(cat "$stamp")" = "${want%-dev0}-dev1" ]; then
  exit 0
fi

[ -x .venv/bin/python ] || "$PY" -m venv .venv
pip=(.venv/bin/python -m pip --disable-pip-version-check -q)
"${pip[@]}" install --upgrade "pip>=25"
# torch 2.13.0 CPU comes from this machine's wheel store when present, else from PyPI.
"${pip[@]}" install -r requirements.lock.txt
# finn-plus pins brevitas==0.13.0 (broken on torch 2.13, needs setuptools<70): install it without
# its dependencies, which requirements.lock.txt already provides. `pip check` flags that pin; expected.
"${pip[@]}" install --no-deps finn-plus==1.6.1
"${pip[@]}" install --no-deps -e .
if [ "$dev" = 1 ]; then
  "${pip[@]}" install -r requirements-dev.txt
  # The HTML report is tested in a real headless Chromium (Debian's package; Playwright drives it
  # and never downloads a browser of its own).
  if ! command -v chromium >/dev/null 2>&1; then
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
      apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null
    else
      echo "setup.sh: install Debian's chromium (apt-get install chromium) for the HTML report tests" >&2
    fi
  fi
  # The explore tests start a private PostgreSQL server (Debian's package; initdb/pg_ctl run as the
  # postgres user when the tests run as root).
  if ! ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 && ! command -v initdb >/dev/null 2>&1; then
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
      apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >/dev/null
    else
      echo "setup.sh: install Debian's postgresql (apt-get install postgresql) for the explore tests" >&2
    fi
  fi
fi
echo "$want" > "$stamp"
echo "hwkit set up in .venv ($(.venv/bin/hwkit --version))"
