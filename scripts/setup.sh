#!/usr/bin/env bash
# Install augsearch into ./.venv; with --test, also what the test suite needs. Safe to run again.
#   bash scripts/setup.sh          # to run searches
#   bash scripts/setup.sh --test   # to run the tests
set -euo pipefail
cd "$(dirname "$0")/.."

extras=""
if [ "${1:-}" = "--test" ]; then extras="[test]"; fi

# Fashion-MNIST (the default space's data) from Debian, where apt-get exists; elsewhere torchvision downloads it.
if command -v apt-get >/dev/null 2>&1 && ! dpkg -s dataset-fashion-mnist >/dev/null 2>&1; then
  sudo=""
  if [ "$(id -u)" -ne 0 ]; then sudo="sudo"; fi
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq dataset-fashion-mnist
fi

if [ ! -x .venv/bin/python ]; then python3 -m venv .venv; fi
.venv/bin/python -m pip install -q --upgrade pip
.venv/bin/python -m pip install -q -e ".${extras}"
