#!/usr/bin/env bash
# The GPU checks of `augsearch bench` in one go, for a CUDA machine that cannot download anything (the
# project's lent H200: Python 3.12 with torch already there). Run it from the repository root there, after
# `bash scripts/device_wheels.sh` here has put the other packages in .whl/ (carry .whl along). Figures land
# in $OUT (default: ./device-out) as JSON, and as tables on stdout. The data are generated stand-ins of each
# dataset's shape (`--stand-in-data`): what a trial costs depends on the shapes, not on the pixels.
set -uo pipefail
cd "$(dirname "$0")/.."
OUT="${OUT:-device-out}"
PY="${PYTHON:-python3}"
DEVICE="${DEVICE:-cuda}"  # DEVICE=cpu INSTALL_WHEELS=0 PYTHON=.venv/bin/python: a dry run of the plumbing
mkdir -p "$OUT"
if [ -d .whl ] && [ "${INSTALL_WHEELS:-1}" != 0 ]; then
    "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site \
        .whl/*.whl || exit 1
    export PYTHONPATH="/tmp/site:$PWD${PYTHONPATH:+:$PYTHONPATH}"
else
    export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
fi
export NO_ALBUMENTATIONS_UPDATE=1 PYTHONUNBUFFERED=1
nvidia-smi -L || true
"$PY" -c "import torch, albumentations, optuna; print('torch', torch.__version__, torch.cuda.is_available(),
      'albumentations', albumentations.__version__, 'optuna', optuna.__version__, 'cpus', len(__import__('os').sched_getaffinity(0)))"

bench() {  # bench NAME ARGS...: one JSON file and its table
    local name=$1
    shift
    "$PY" -m augsearch bench --device "$DEVICE" --stand-in-data --json "$@" >"$OUT/$name.json" || return 1
    "$PY" -c 'import json, sys; from augsearch.bench import format_figures
print(format_figures(json.load(open(sys.argv[1]))))' "$OUT/$name.json"
}
status=0
bench cifar10 --space cifar10 --seconds 10 || status=1  # resnet32x4 -> resnet8x4, every spare core augmenting
bench default --space default --seconds 5 || status=1  # cnn-teacher -> cnn-tiny: augmentation-bound on a GPU
exit $status
