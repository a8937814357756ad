#!/usr/bin/env bash
# Install augsearch into ./.venv; with --test, also what the test suite needs. Safe to run again.
#   bash scripts/setup.sh          # to run searches
#   bash scripts/setup.sh --test   # to run the tests, with a local PostgreSQL on 127.0.0.1 (Debian)
#   bash scripts/setup.sh --postgres   # to run searches, plus that PostgreSQL server
set -euo pipefail
cd "$(dirname "$0")/.."

extras=""
debian="dataset-fashion-mnist"  # the default space's data; elsewhere torchvision downloads it
postgres=""
for argument in "$@"; do
  case "$argument" in
    --test)
      extras="[test]"
      debian="$debian chromium"  # the browser test drives /usr/bin/chromium through Playwright (no download)
      # tests/test_postgres.py needs a server: Debian's, on 127.0.0.1 only. Where there is no apt-get the
      # PostgreSQL tests skip, except under CI=true, which must run them, not skip them.
      if [ "${CI:-}" = "true" ] || command -v apt-get >/dev/null 2>&1; then postgres="yes"; fi
      ;;
    --postgres) postgres="yes" ;;
    *) echo "setup.sh: unknown argument $argument (use --test and/or --postgres)" >&2; exit 2 ;;
  esac
done
if [ -n "$postgres" ]; then debian="$debian postgresql"; fi

sudo=""
if [ "$(id -u)" -ne 0 ]; then sudo="sudo"; fi

# Debian packages, where apt-get exists, only those missing.
if command -v apt-get >/dev/null 2>&1; then
  missing=""
  for package in $debian; do
    if ! dpkg -s "$package" >/dev/null 2>&1; then missing="$missing $package"; fi
  done
  if [ -n "$missing" ]; then
    $sudo apt-get update -qq
    # shellcheck disable=SC2086  # one word per package
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq $missing
  fi
fi

# The PostgreSQL server the multi-worker tests use (tests/test_postgres.py): Debian's cluster, listening
# on 127.0.0.1 only, with a password user that may create the tests' throw-away databases. Idempotent.
# The tests read AUGSEARCH_TEST_POSTGRES (default postgresql://augsearch:augsearch@127.0.0.1/augsearch_test).
if [ -n "$postgres" ]; then
  version="$(ls /etc/postgresql 2>/dev/null | sort -V | tail -n 1)"
  if [ -z "$version" ]; then  # the package made no cluster (e.g. create_main_cluster = false)
    version="$(ls /usr/lib/postgresql | sort -V | tail -n 1)"
    $sudo pg_createcluster "$version" main
  fi
  conf="/etc/postgresql/$version/main/conf.d/augsearch.conf"
  wanted="listen_addresses = '127.0.0.1'"
  if [ "$($sudo cat "$conf" 2>/dev/null || true)" != "$wanted" ]; then
    echo "$wanted" | $sudo tee "$conf" >/dev/null
    $sudo pg_ctlcluster "$version" main stop 2>/dev/null || true  # restart to listen where told
  fi
  if ! $sudo pg_ctlcluster "$version" main status >/dev/null 2>&1; then
    $sudo pg_ctlcluster "$version" main start
  fi
  for _ in $(seq 30); do pg_isready -q -h 127.0.0.1 && break; sleep 1; done
  as_postgres() { $sudo runuser -u postgres -- "$@"; }
  as_postgres psql -q -v ON_ERROR_STOP=1 -c "DO \$\$ BEGIN
    IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'augsearch') THEN
      CREATE ROLE augsearch LOGIN CREATEDB PASSWORD 'augsearch';
    END IF; END \$\$;"
  if [ "$(as_postgres psql -tAc "SELECT 1 FROM pg_database WHERE datname = 'augsearch_test'")" != "1" ]; then
    as_postgres createdb -O augsearch augsearch_test
  fi
fi

if [ ! -x .venv/bin/python ]; then python3 -m venv .venv; fi
.venv/bin/python -m pip install -q --upgrade pip
.venv/bin/python -m pip install -q -e ".${extras}"
