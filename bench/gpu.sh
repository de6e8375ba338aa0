#!/usr/bin/env bash
# The GPU part of bench/vs_trl.py as one command for the device machine (see the device tool's
# README): the library's CUDA tests (tests/e2e/test_cuda.py), then policyforge and TRL on CUDA,
# small and large settings. Its image has torch and
# transformers but not trl, datasets, tyro or peft, so those travel as wheels in .whl/ (ignored by git):
#
#   here:   echo /.whl/ >> .git/info/exclude && bash bench/gpu.sh --fetch-wheels
#   device: run with carry [".whl"] and command "bash bench/gpu.sh" (output lands in $OUT/gpu-bench.log)
#
# pyarrow (55 MB) does not fit the 64 MiB a call may carry; the image's own pyarrow is used.
set -euo pipefail
cd "$(dirname "$0")/.."
WHEELS="trl==1.16.0 datasets==5.2.0 dill==0.4.1 multiprocess==0.70.19 tyro==1.0.17 docstring-parser==0.18.0
typeguard==4.6.1 peft==0.21.2"
if [ "${1:-}" = "--fetch-wheels" ]; then
    rm -rf .whl && mkdir -p .whl  # one version of each package: two would stop the install there
    # shellcheck disable=SC2086
    python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
        --platform manylinux_2_28_x86_64 --platform manylinux2014_x86_64 -d .whl $WHEELS
    ls -la .whl
    exit 0
fi
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl
export PYTHONPATH="/tmp/site:$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 \
    HF_HUB_DISABLE_TELEMETRY=1
log="${OUT:-/tmp}/gpu-bench.log"
{
    nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true
    # everything the bench imports, before any model loads (trl imports lazily)
    python3 -c "import torch, transformers, trl, datasets, pyarrow, fsspec, accelerate
from trl import GRPOConfig, GRPOTrainer
import policyforge.train.loop
print({m.__name__: m.__version__ for m in (torch, transformers, trl, datasets, pyarrow, fsspec, accelerate)},
      'cuda', torch.cuda.is_available())"
    # the library's CUDA paths first (they skip on CPU machines); a failure is reported, the bench still runs
    timeout 120 python3 -m pytest -q -p no:cacheprovider tests/e2e/test_cuda.py || echo "bench/gpu.sh: CUDA tests failed"
    rc=0
    timeout "${BENCH_TIMEOUT:-480}" python3 bench/vs_trl.py --device cuda --settings "${SETTINGS:-small,large}" \
        --steps "${STEPS:-5}" --warmup 2 --wait-quiet 0 || rc=$?
    # the device tool reads 124 as its own time limit: say which limit it was
    if [ "$rc" = 124 ]; then echo "bench/gpu.sh: BENCH_TIMEOUT (${BENCH_TIMEOUT:-480} s) ran out"; exit 3; fi
    exit "$rc"
} 2>&1 | tee "$log"
