#!/usr/bin/env bash
# Build the libtorch (C++) library fastmask_ops with CMake and run its ctest.
#
#   bash scripts/cpp_test.sh [python] [extra cmake -D options...]
#
# python: the interpreter whose torch to build against (default: .venv/bin/python if present,
# else python3). Builds into cmake-build/ (reused by later runs). FASTMASK_CMAKE_CUDA=ON in the
# environment builds the CUDA kernels too (default OFF: CPU only, no CUDA toolkit needed).
# FASTMASK_EXPORT_PYTHON: the Python (with fastmask installed, the same torch, and a C++ compiler)
# that exports the tiny model of the exported-model test (default: python, if it imports
# fastmask._C; otherwise that test is left out, and this script says so).
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
if [[ "$PY" == */* ]]; then PY="$(cd "$(dirname "$PY")" && pwd)/$(basename "$PY")"; fi  # absolute

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

EXPORT_PY="${FASTMASK_EXPORT_PYTHON:-}"
if [[ -z "$EXPORT_PY" ]]; then
  if (cd / && "$PY" -c 'import fastmask._C') 2>/dev/null; then  # an installed (or editable) fastmask
    EXPORT_PY="$PY"
  else
    echo "cpp_test.sh: $PY has no fastmask: the exported-model test is left out (set FASTMASK_EXPORT_PYTHON)"
  fi
fi
if [[ "$EXPORT_PY" == */* ]]; then
  EXPORT_PY="$(cd "$(dirname "$EXPORT_PY")" && pwd)/$(basename "$EXPORT_PY")"  # ctest runs it from $BUILD
fi
if [[ -n "$EXPORT_PY" ]]; then
  echo "cpp_test.sh: the exported-model test's package is made by $EXPORT_PY"
fi

start=$(date +%s)
cmake -S "$ROOT" -B "$BUILD" "${GEN[@]}" \
  -DCMAKE_PREFIX_PATH="$PREFIX" \
  -DFASTMASK_EXPORT_TEST_PYTHON="$EXPORT_PY" \
  -DFASTMASK_CUDA="${FASTMASK_CMAKE_CUDA:-OFF}" \
  "$@"
cmake --build "$BUILD" -j 2
echo "cpp_test.sh: configure + build took $(( $(date +%s) - start )) s"

ctest --test-dir "$BUILD" --output-on-failure
