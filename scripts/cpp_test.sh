#!/usr/bin/env bash
# Build the libtorch (C++) library fastmask_ops with CMake and run its ctest.
#
#   bash scripts/cpp_test.sh [python] [extra cmake -D options...]
#
# python: the interpreter whose torch to build against (default: .venv/bin/python if present,
# else python3). Builds into cmake-build/ (reused by later runs). FASTMASK_CMAKE_CUDA=ON in the
# environment builds the CUDA kernels too (default OFF: CPU only, no CUDA toolkit needed).
# Exits non-zero if configuring, building or any test fails.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
BUILD="$ROOT/cmake-build"

if [[ $# -ge 1 ]]; then
  PY="$1"
  shift
elif [[ -x "$ROOT/.venv/bin/python" ]]; then
  PY="$ROOT/.venv/bin/python"
else
  PY=python3
fi

PREFIX="$("$PY" -c 'import torch; print(torch.utils.cmake_prefix_path)')" || {
  echo "cpp_test.sh: cannot import torch with $PY" >&2
  exit 1
}
echo "cpp_test.sh: python $PY, torch cmake prefix $PREFIX"

# A build dir configured against another torch keeps that torch's cached paths
# (Torch_DIR, Caffe2_DIR, found libraries): start it afresh then.
CACHE="$BUILD/CMakeCache.txt"
if [[ -f "$CACHE" ]] && ! grep -qxF "Torch_DIR:PATH=$PREFIX/Torch" "$CACHE"; then
  echo "cpp_test.sh: $BUILD was configured for another torch; reconfiguring from scratch"
  rm -rf "$CACHE" "$BUILD/CMakeFiles"
fi

GEN=()
if [[ ! -f "$CACHE" ]] && command -v ninja >/dev/null 2>&1; then
  GEN=(-G Ninja)  # only on a fresh dir: the generator of an existing build dir cannot change
fi

start=$(date +%s)
cmake -S "$ROOT" -B "$BUILD" "${GEN[@]}" \
  -DCMAKE_PREFIX_PATH="$PREFIX" \
  -DFASTMASK_CUDA="${FASTMASK_CMAKE_CUDA:-OFF}" \
  "$@"
cmake --build "$BUILD" -j 2
echo "cpp_test.sh: configure + build took $(( $(date +%s) - start )) s"

ctest --test-dir "$BUILD" --output-on-failure
