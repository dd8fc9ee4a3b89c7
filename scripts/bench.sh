#!/usr/bin/env bash
# The main job: set up (if needed), then compare fastmask's kernels with torchvision's on the
# default detection workload (GPU if there is one, else CPU). Extra arguments go to
# benchmarks/compare.py (e.g. --op roi_align --device cpu).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
exec .venv/bin/python benchmarks/compare.py "$@"
