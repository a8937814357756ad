#!/usr/bin/env bash
# Install augsearch into ./.venv; with --test, also what the test suite needs. Safe to run again.
#   bash scripts/setup.sh          # to run searches
#   bash scripts/setup.sh --test   # to run the tests
set -euo pipefail
cd "$(dirname "$0")/.."

extras=""
debian="dataset-fashion-mnist"  # the default space's data; elsewhere torchvision downloads it
if [ "${1:-}" = "--test" ]; then
  extras="[test]"
  debian="$debian chromium"  # the browser test drives /usr/bin/chromium through Playwright (no download)
fi

# Debian packages, where apt-get exists, only those missing.
if command -v apt-get >/dev/null 2>&1; then
  missing=""
  for package in $debian; do
    if ! dpkg -s "$package" >/dev/null 2>&1; then missing="$missing $package"; fi
  done
  if [ -n "$missing" ]; then
    sudo=""
    if [ "$(id -u)" -ne 0 ]; then sudo="sudo"; fi
    $sudo apt-get update -qq
    # shellcheck disable=SC2086  # one word per package
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq $missing
  fi
fi

if [ ! -x .venv/bin/python ]; then python3 -m venv .venv; fi
.venv/bin/python -m pip install -q --upgrade pip
.venv/bin/python -m pip install -q -e ".${extras}"
