#!/usr/bin/env bash
# Set up (if needed), then run the test suite (CUDA tests skip without a GPU) and the C++
# (libtorch) build and test. Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
set +e
.venv/bin/python -m pytest tests "$@"
status=$?
set -e
# pytest exits 5 when a selection (-k, -m) matches no test: report it, do not fail on it.
if [ "$status" -eq 5 ]; then echo "pytest: no tests were collected for this selection"; status=0; fi
[ "$status" -eq 0 ] || exit "$status"
bash scripts/cpp_test.sh .venv/bin/python
