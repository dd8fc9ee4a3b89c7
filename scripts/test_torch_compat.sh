#!/usr/bin/env bash
# The same wheel under other torch releases: scripts/test.sh builds wheelhouse/*.whl once (against
# torch 2.14.1); this installs that very file, with no rebuild and no compiler in reach, into a
# venv per torch release and runs the tests there against the installed package:
#   torch 2.11.0 + torchvision 0.26.0   the whole suite (the oldest supported torch, the GPU machine's)
#   torch 2.15.0 (no torchvision yet)   every test that does not need torchvision, and
#                                       scripts/cuda_smoke.py --device cpu (every op, forward and
#                                       backward). When torchvision 0.30 is released, put it in
#                                       TORCHVISION_2_15 below: this stage then runs the whole suite.
#   bash scripts/test_torch_compat.sh [--discard-new-venvs] [2.11|2.15 ...] [-- pytest arguments]
# Venvs: .venv-torch2.11, .venv-torch2.15, kept between runs; --discard-new-venvs removes after its
# stage each venv this call created (CI: each holds 5 GB of torch and CUDA libraries, and a clean
# clone has no later use for them; a venv that was already there stays). Environment: PYTHON (the
# venvs' interpreter, default python3).
set -euo pipefail
cd "$(dirname "$0")/.."
TORCHVISION_2_11=0.26.0
TORCHVISION_2_15=""  # no torchvision release for torch 2.15 yet
releases=() pytest_args=() discard_new_venvs=0
while [ $# -gt 0 ]; do
  case $1 in
    --) shift; pytest_args=("$@"); break ;;
    --discard-new-venvs) discard_new_venvs=1; shift ;;
    *) releases+=("$1"); shift ;;
  esac
done
[ ${#releases[@]} -gt 0 ] || releases=(2.11 2.15)
wheel=$(ls wheelhouse/*.whl 2>/dev/null | head -1)
[ -n "$wheel" ] || { echo "no wheel in wheelhouse/: run bash scripts/test.sh (or scripts/build_wheel.sh) first" >&2; exit 1; }

stage() {  # stage RELEASE TORCH TORCHVISION
  local release=$1 torch=$2 torchvision=$3
  local venv=.venv-torch$release vpy=.venv-torch$release/bin/python
  local what="torch $torch + torchvision $torchvision"
  [ -n "$torchvision" ] || what="torch $torch (no torchvision: the tests that need it are skipped)"
  echo "== $what: $wheel"
  local created=0
  [ -e "$venv" ] || { "${PYTHON:-python3}" -m venv "$venv"; created=1; }
  local want="torch==$torch${torchvision:+ torchvision==$torchvision}"
  if ! "$vpy" -c "import torch, numpy, pytest
assert torch.__version__.split('+')[0] == '$torch'
${torchvision:+import torchvision, pycocotools, tqdm; assert torchvision.__version__.split('+')[0] == '$torchvision'}" 2>/dev/null; then
    # A machine-wide pip constraint (here /etc/xdg/pip/constraints.txt caps torch at 2.14.1) must not
    # refuse the release under test: PIP_CONSTRAINT names an empty file instead (an empty
    # PIP_CONSTRAINT does not override the config file's, as this stage found out on torch 2.15).
    # shellcheck disable=SC2086  # $want: one or two requirements
    PIP_CONSTRAINT=/dev/null "$vpy" -m pip install --progress-bar off $want numpy pytest ${torchvision:+pycocotools tqdm}
  fi
  "$vpy" -m pip uninstall -y -q fastmask 2>/dev/null || true
  "$vpy" -m pip install --no-deps "$wheel"
  "$vpy" -m pip check  # the wheel's requirement (torch>=2.11) is met
  set +e
  # As in scripts/test.sh: from tests/, so the source tree's fastmask/ is not on sys.path, and with
  # only the venv on PATH (no compiler, nvcc or CUDA_HOME).
  (cd tests && env -u CUDA_HOME -u CUDA_PATH PATH="$(cd "../$venv/bin" && pwd)" FASTMASK_EXPECT_INSTALLED=1 \
     "../$venv/bin/pytest" -p no:cacheprovider "${pytest_args[@]}")
  local status=$?
  set -e
  # pytest exits 5 when a selection (-k, -m) matches no test: report it, do not fail on it.
  if [ "$status" -eq 5 ]; then echo "pytest: no tests were collected for this selection"; status=0; fi
  [ "$status" -eq 0 ] || exit "$status"
  if [ -z "$torchvision" ]; then
    echo "== torch $torch: every op once, forward and backward (scripts/cuda_smoke.py --device cpu)"
    (cd tests && env -u CUDA_HOME -u CUDA_PATH PATH="$(cd "../$venv/bin" && pwd)" "../$venv/bin/python" \
       ../scripts/cuda_smoke.py --device cpu)
  fi
  if [ "$discard_new_venvs" = 1 ] && [ "$created" = 1 ]; then rm -rf "$venv"; fi
}

for release in "${releases[@]}"; do
  case $release in
    2.11) stage 2.11 2.11.0 "$TORCHVISION_2_11" ;;
    2.15) stage 2.15 2.15.0 "$TORCHVISION_2_15" ;;
    *) echo "unknown torch release $release (2.11 or 2.15)" >&2; exit 2 ;;
  esac
done
