#!/usr/bin/env bash
# Fetch, here (where pip reaches PyPI), the wheels augsearch needs on a GPU machine that cannot download
# anything: Python 3.12 on x86-64 with torch, torchvision, numpy, scipy, opencv, PyYAML, tqdm, pandas,
# matplotlib and pillow already installed (the project's lent H200 machine; /work/.library/device/KINDS.md).
# They land in .whl/ (git-ignored), which scripts/device_bench.sh installs from. Pinned to the versions
# this repository is tested with.
set -euo pipefail
cd "$(dirname "$0")/.."
PY="${PYTHON:-.venv/bin/python}"
WHEELS=(
    albumentations==2.0.8 albucore==0.0.24 pydantic==2.14.4 pydantic-core==2.50.5 annotated-types==0.8.0
    typing-inspection==0.4.5 simsimd==6.5.16 stringzilla==5.3.2
    optuna==5.0.0 alembic==1.20.1 sqlalchemy==2.1.9 greenlet==3.5.6 mako==1.4.3 colorlog==6.12.0
    optuna-dashboard==0.21.0 bottle
)
PLATFORMS=()
for tag in manylinux_2_28_x86_64 manylinux_2_27_x86_64 manylinux_2_24_x86_64 manylinux_2_17_x86_64 \
    manylinux2014_x86_64 manylinux1_x86_64; do
    PLATFORMS+=(--platform "$tag")
done
rm -rf .whl && mkdir -p .whl
"$PY" -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    "${PLATFORMS[@]}" -d .whl "${WHEELS[@]}"
du -sh .whl
