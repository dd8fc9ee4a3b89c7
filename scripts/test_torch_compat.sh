#!/usr/bin/env bash
# The oldest supported torch: builds fastmask CPU-only against torch 2.11.0 and torchvision 0.26.0
# in a venv of its own (.venv-torch2.11, kept between runs with its build folder, so a second run
# only installs and tests), installs it there and runs the test suite against the installed
# package, as scripts/test.sh does for torch 2.14. Extra arguments go to pytest.
# Environment: PYTHON (the venv's interpreter, default python3), MAX_JOBS.
set -euo pipefail
cd "$(dirname "$0")/.."
TORCH=2.11.0
TORCHVISION=0.26.0
VENV=.venv-torch2.11
VPY=$VENV/bin/python
export FASTMASK_CUDA=0  # CPU kernels only, whatever the caller exported (CI's wheel builds CUDA)

if [ ! -x "$VPY" ]; then
  echo "== creating $VENV with ${PYTHON:-python3}"
  "${PYTHON:-python3}" -m venv "$VENV"
fi
if ! "$VPY" -c "import torch, torchvision, numpy, pytest, pycocotools, tqdm, ninja, wheel
assert (torch.__version__.split('+')[0], torchvision.__version__.split('+')[0]) == ('$TORCH', '$TORCHVISION')" 2>/dev/null; then
  echo "== installing torch $TORCH, torchvision $TORCHVISION and the tools into $VENV"
  "$VPY" -m pip install --progress-bar off torch==$TORCH torchvision==$TORCHVISION \
    numpy pytest pycocotools tqdm ninja "setuptools>=77" wheel
fi

echo "== building fastmask (CPU-only) against torch $TORCH and installing it into $VENV"
# Its own build folder (DIST_EXTRA_CONFIG: an extra setup.cfg): the objects built against torch 2.11
# stay apart from the main build's in build/, so ninja rebuilds neither from scratch.
printf '[build]\nbuild_base = %s/build\n' "$VENV" > "$VENV/build.cfg"
"$VPY" -m pip uninstall -y -q fastmask 2>/dev/null || true
if ! DIST_EXTRA_CONFIG="$VENV/build.cfg" "$VPY" -m pip install --no-build-isolation --no-deps -v . \
    > "$VENV/build.log" 2>&1; then
  grep -E "error|Error" "$VENV/build.log" | head -40 >&2
  echo "fastmask: the build against torch $TORCH failed; the whole log is in $VENV/build.log" >&2
  exit 1
fi
sed -n '/fastmask build configuration/,/^ *=====/p' "$VENV/build.log"
"$VPY" -m pip check  # the installed fastmask's torch pin (torch>=2.11,<2.12) is met

echo "== tests against torch $TORCH and torchvision $TORCHVISION, on the installed package"
set +e
# As in scripts/test.sh: from tests/, so the source tree's fastmask/ is not on sys.path, and with
# only the venv on PATH.
(cd tests && env -u CUDA_HOME -u CUDA_PATH PATH="$(cd "../$VENV/bin" && pwd)" FASTMASK_EXPECT_INSTALLED=1 \
   "../$VENV/bin/pytest" -p no:cacheprovider "$@")
status=$?
set -e
# pytest exits 5 when a selection (-k, -m) matches no test: report it, do not fail on it.
if [ "$status" -eq 5 ]; then echo "pytest: no tests were collected for this selection"; status=0; fi
exit "$status"
