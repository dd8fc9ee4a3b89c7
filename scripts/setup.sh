#!/usr/bin/env bash
# Sets up the project venv (.venv) and builds fastmask into it (editable). Idempotent: a re-run
# only rebuilds what changed. --no-build: only the venv and its packages. Environment:
#   PYTHON         interpreter for the venv (default python3)
#   FASTMASK_CUDA  0: CPU-only build; 1: require the CUDA kernels; unset: build them if nvcc is found
#   TORCH_CUDA_ARCH_LIST, MAX_JOBS   passed to the build
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  echo "== creating .venv with $PYTHON"
  "$PYTHON" -m venv .venv
fi
PY=.venv/bin/python
if ! "$PY" -c "import torch, torchvision, pytest, ninja, numpy, tqdm, matplotlib, pycocotools, torchao, ruff" 2>/dev/null; then
  echo "== installing torch 2.14.1, torchvision 0.29.1, torchao 0.18.0 and the tools (several GB the first time)"
  "$PY" -m pip install --progress-bar off torch==2.14.1 torchvision==0.29.1 torchao==0.18.0 \
    pytest ninja numpy tqdm matplotlib pycocotools pytest-benchmark "setuptools>=77" wheel ruff
fi
[ "${1:-}" = "--no-build" ] && exit 0
echo "== building fastmask (pip install --no-build-isolation -e .)"
if ! "$PY" -m pip install --no-build-isolation --no-deps -v -e . > .venv/build.log 2>&1; then
  grep -E "error|Error" .venv/build.log | head -40 >&2
  echo "fastmask: the build failed; the whole log is in .venv/build.log" >&2
  exit 1
fi
sed -n '/fastmask build configuration/,/^ *=====/p' .venv/build.log | tail -n +1
"$PY" -m fastmask.collect_env
