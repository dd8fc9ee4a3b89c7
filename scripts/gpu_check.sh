#!/usr/bin/env bash
# The whole GPU check in one command, from a clean checkout on a GPU machine with its own torch
# and no network:
#
#   bash scripts/gpu_check.sh [--mode auto|gpu|cpu] [--only STAGE,...] [--pack] [--dry-run]
#
# Every stage's full log goes to $OUT/logs/ ($OUT defaults to ./gpu-check); the benchmark table
# to $OUT/bench/. The LAST thing printed is a summary table (stage, result, seconds, note) and
# the headline speed-ups; it is also written to $OUT/summary.txt. Exit status: 0 when no stage
# failed. PYTHON (default python3) is the interpreter whose torch is built against and tested.
#
# Options: --mode gpu|cpu forces a mode (auto: gpu when torch sees a CUDA device); --only runs a
# subset of the stages (e.g. --only bench to rerun the benchmarks on a build left in place);
# --pack bundles the logs into $OUT/logs.tar.gz and leaves only summary.txt, bench.md,
# bench.json and logs.tar.gz in $OUT (for transports that bring few files back: the lent GPU
# machine's tool returns at most 8 files, and an unpacked run writes more); --dry-run prints
# each stage's command and timeout instead of running it (GPU_CHECK_ARCH=9.0 stands in for the
# GPU's architecture when there is none).
#
# GPU mode, stage budgets in seconds (timeouts; a stage's timeout is also cut to what is left of
# the 470 s total, so the script ends within 8 minutes on 16 cores):
#   probe        30  nvidia-smi, torch, the GPU's compute capability, package versions (45 in CPU
#                    mode; a fresh machine's first torch import reads its libraries from a cold disk)
#   build       150  setup.py build_ext --inplace for this GPU's architecture only
#                    (TORCH_CUDA_ARCH_LIST=<cc>, FASTMASK_CUDA=1, MAX_JOBS=nproc): 31 translation
#                    units in the two op libraries and _C (the stable-ABI bindings compile faster
#                    than the ATen ones did: a CPU+CUDA in-place build took 32 s on the 2-core dev
#                    machine, sm_90 only, with the CPU objects already built), so well under a
#                    minute on 16 cores
#   cuda-tests   90  pytest -m cuda
#   checks      100  in parallel (CPU-bound tests beside GPU-bound sanitizer runs):
#                    suite      pytest -m "not cuda and not slow" (the rest of the suite; pytest-xdist if present)
#                    smoke      scripts/cuda_smoke.py: every fastmask kernel once, no sanitizer
#                    memcheck, racecheck, synccheck   compute-sanitizer on scripts/cuda_smoke.py,
#                               fastmask's kernels only (--kernel-name kns=fastmask)
#   bench       95+  benchmarks/compare.py --device cuda: the model first (batch 1 and 8; eager,
#                    and forward_static in a CUDA graph in float32, bfloat16 and float16), then
#                    every op; it gets whatever is left of the total, so time the build did not
#                    need goes to it (a run cut short keeps the rows it measured).
#                    GPU_CHECK_BENCH_ARGS adds arguments, e.g. "--export" for the exported
#                    package's rows (batch 8, three AOTInductor compiles: minutes, so not by default)
#   total       470
#
# CPU mode (no GPU, or --mode cpu; CI runs it so, after scripts/test.sh, so that this script and
# its tools cannot rot), what is cheap and meaningful without a GPU, well under 3 minutes on 2 cores:
#   probe; build: skipped when this tree has an in-place build that loads, or else PYTHON has
#   fastmask installed (CI: the wheel scripts/test.sh put in .venv-wheel), else builds in place;
#   cuda-tests: collects the CUDA tests (they skip without a GPU; none collected fails); suite:
#   skipped (scripts/test.sh runs the whole suite); smoke: the driver on the CPU kernels;
#   sanitizers: skipped (no GPU); bench: compare.py on the CPU for one op, two runs (the table,
#   JSON and plot code).
set -uo pipefail
# PYTHON or OUT given as a relative path (CI: PYTHON=.venv-wheel/bin/python) is relative to the
# caller's folder; the stages run PYTHON from tests/ and $OUT too: make both absolute first
# (without resolving links: a venv's python is one).
PYTHON=${PYTHON:-python3}
case $PYTHON in /*) ;; */*) PYTHON=$PWD/$PYTHON ;; esac
case ${OUT:-} in "" | /*) ;; *) OUT=$PWD/$OUT ;; esac
cd "$(dirname "$0")/.." || exit 2
ROOT=$PWD
OUT=${OUT:-$ROOT/gpu-check}
MODE=auto ONLY="" PACK=0 DRY=0
while [ $# -gt 0 ]; do
  case "$1" in
    --mode) MODE=$2; shift 2 ;;
    --only) ONLY=$2; shift 2 ;;
    --pack) PACK=1; shift ;;
    --dry-run) DRY=1; shift ;;
    -h|--help) sed -n '2,/^set -uo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
    *) echo "gpu_check: unknown argument $1 (see --help)" >&2; exit 2 ;;
  esac
done
TOTAL_BUDGET=${GPU_CHECK_TOTAL_S:-470}  # seconds; GPU_CHECK_TOTAL_S overrides (e.g. to test the time box)
START=$SECONDS
mkdir -p "$OUT/logs" "$OUT/bench"
OUT=$(cd "$OUT" && pwd)
LOGS=$OUT/logs
export PYTHONUNBUFFERED=1
SUMMARY=()   # "stage|result|seconds|note"
FAILED=0

if [ "$MODE" = auto ]; then
  if "$PYTHON" -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)" 2>/dev/null; then
    MODE=gpu
  else
    MODE=cpu
  fi
fi
NPROC=$(nproc)

wanted() { [ -z "$ONLY" ] || [[ ",$ONLY," == *",$1,"* ]]; }

# Seconds a stage may take: its budget, cut to what is left of the total (10 s kept for the summary).
stage_timeout() {
  local left=$((TOTAL_BUDGET - (SECONDS - START) - 10))
  if [ "$1" -lt "$left" ]; then echo "$1"; else echo "$left"; fi
}

record() { SUMMARY+=("$1|$2|$3|$4"); [ "$2" = fail ] && FAILED=1; return 0; }

# run_stage NAME BUDGET CMD...: runs CMD under a timeout, all output to $LOGS/NAME.log; sets RC.
run_stage() {
  local name=$1 budget=$2; shift 2
  local limit; limit=$(stage_timeout "$budget")
  if [ "$DRY" = 1 ]; then
    printf '[%s, %ss] %s\n' "$name" "$limit" "$*"
    RC=0; return
  fi
  if [ "$limit" -lt 5 ]; then record "$name" skipped 0 "out of time"; RC=125; return; fi
  echo "== $name (timeout ${limit}s)"
  printf '$ %s\n' "$*" > "$LOGS/$name.log"
  timeout --kill-after=10 "$limit" "$@" >> "$LOGS/$name.log" 2>&1
  RC=$?
}

# The same in the background: start_stage NAME BUDGET CMD... ; then finish_stage NAME sets RC and
# SECS (the stage's own duration: the parallel stages end at different times).
declare -A PIDS
STATE=$(mktemp -d)
restore_pyproject() { if [ -f "$STATE/pyproject.toml" ]; then mv "$STATE/pyproject.toml" "$ROOT/pyproject.toml"; fi; }
trap 'restore_pyproject; rm -rf "$STATE"' EXIT
start_stage() {
  local name=$1 budget=$2; shift 2
  local limit; limit=$(stage_timeout "$budget")
  PIDS[$name]=""
  if [ "$DRY" = 1 ]; then printf '[%s, %ss, in parallel] %s\n' "$name" "$limit" "$*"; return; fi
  if [ "$limit" -lt 5 ]; then record "$name" skipped 0 "out of time"; return; fi
  echo "== $name (timeout ${limit}s, in parallel)"
  printf '$ %s\n' "$*" > "$LOGS/$name.log"
  (
    start=$(date +%s)
    timeout --kill-after=10 "$limit" "$@" >> "$LOGS/$name.log" 2>&1
    rc=$?
    echo $(($(date +%s) - start)) > "$STATE/$name.seconds"
    exit $rc
  ) &
  PIDS[$name]=$!
}
finish_stage() {  # RC=125: never started (out of time, already recorded)
  RC=125 SECS=0
  if [ -n "${PIDS[$1]}" ]; then wait "${PIDS[$1]}"; RC=$?; SECS=$(cat "$STATE/$1.seconds" 2>/dev/null || echo "?"); fi
}

elapsed_since() { echo $((SECONDS - $1)); }
timed_out() { [ "$1" -eq 124 ] || [ "$1" -eq 137 ]; }

# pytest's result line ("12 passed, 3 skipped in 4.2s") from a log.
pytest_line() { grep -E "^(=+ )?([0-9]+ [a-z]+(, )?)+ in [0-9.]+s|no tests ran" "$1" | tail -1 | sed -E 's/^=+ //; s/ =+$//'; }

# ---------------------------------------------------------------------------------------- probe
PROBE_PY='
import importlib.metadata as md, sys, torch
print("python", sys.version.split()[0], sys.executable)
def version(name):
    try:
        return md.version(name)
    except md.PackageNotFoundError:
        return "-"
# What the build and the stages rely on (setuptools >= 77 reads pyproject.toml as it is).
print("packages", ", ".join(n + " " + version(n) for n in ("torchvision", "setuptools", "packaging", "ninja", "pytest", "pytest-xdist")))
print("torch", torch.__version__, "CUDA", torch.version.cuda, "available", torch.cuda.is_available())
for i in range(torch.cuda.device_count()):
    print("device", i, torch.cuda.get_device_name(i), "cc %d.%d" % torch.cuda.get_device_capability(i))
'
probe() {
  local t=$SECONDS
  # shellcheck disable=SC2016  # expanded by the inner bash
  run_stage probe "$( [ "$MODE" = gpu ] && echo 30 || echo 45)" bash -c 'nvidia-smi 2>&1 | head -20; "$0" -c "$1" && { command -v nvcc && nvcc --version | tail -2; echo "nproc $(nproc)"; true; }' \
    "$PYTHON" "$PROBE_PY"
  [ "$DRY" = 1 ] || [ "$RC" -eq 125 ] && return
  if [ "$RC" -ne 0 ]; then record probe fail "$(elapsed_since "$t")" "see logs/probe.log"; return; fi
  record probe pass "$(elapsed_since "$t")" "$(grep -E '^(device 0|torch )' "$LOGS/probe.log" | tr '\n' ' ' | cut -c1-90)"
}

gpu_arch() {
  if [ -n "${GPU_CHECK_ARCH:-}" ]; then echo "$GPU_CHECK_ARCH"; return; fi
  "$PYTHON" -c "import torch; print('%d.%d' % torch.cuda.get_device_capability())" 2>/dev/null \
    || nvidia-smi --query-gpu=compute_cap --format=csv,noheader 2>/dev/null | head -1
}

# ---------------------------------------------------------------------------------------- build
# Which fastmask the stages use: "installed" (PYTHON's own, CPU mode) or "inplace" (this tree's,
# put first on PYTHONPATH). The stages run Python from tests/, scripts/ and benchmarks/, so the
# source tree shadows an installed fastmask only through PYTHONPATH.
loads_fastmask() {  # loads_fastmask PYTHONPATH: prints where fastmask's kernels come from if they load
  (cd "$OUT" && PYTHONPATH=$1 "$PYTHON" -c "import fastmask; print(fastmask._loader.require_extension().__file__, fastmask.__version__)") 2>/dev/null
}
inplace_loads() {  # this tree's in-place build loads (prints where from, and its version)
  local found; found=$(loads_fastmask "$ROOT") && [[ "$found" == "$ROOT/"* ]] && echo "$found"
}
use_inplace() { [[ ":${PYTHONPATH:-}:" == *":$ROOT:"* ]] || export PYTHONPATH="$ROOT${PYTHONPATH:+:$PYTHONPATH}"; }

build() {
  local t=$SECONDS note found
  if [ "$MODE" = gpu ]; then
    local arch; arch=$(gpu_arch)
    if [ -z "$arch" ]; then record build fail 0 "cannot read the GPU's compute capability"; return; fi
    export FASTMASK_CUDA=1 TORCH_CUDA_ARCH_LIST=$arch MAX_JOBS=${MAX_JOBS:-$NPROC}
    note="FASTMASK_CUDA=1 TORCH_CUDA_ARCH_LIST=$arch MAX_JOBS=$MAX_JOBS"
  else
    if [ "$DRY" = 0 ] && found=$(inplace_loads); then
      use_inplace
      record build skipped 0 "reusing this tree's in-place build: ${found#* }"
      return
    fi
    if [ "$DRY" = 0 ] && found=$(loads_fastmask ""); then
      record build skipped 0 "using the installed fastmask: $found"
      return
    fi
    # CPU-only unless asked: no CUDA kernel runs in this mode, and with nvcc in reach setup.py
    # would build them for every default architecture, far past the stage's timeout.
    export FASTMASK_CUDA=${FASTMASK_CUDA:-0} MAX_JOBS=${MAX_JOBS:-$NPROC}
    note="FASTMASK_CUDA=$FASTMASK_CUDA MAX_JOBS=$MAX_JOBS"
  fi
  use_inplace
  [ "$DRY" = 1 ] && echo "[build environment] $note PYTHONPATH=$PYTHONPATH"
  # setup.py build_ext reads pyproject.toml's [project] too, and setuptools < 77 rejects its SPDX
  # license string: with such a setuptools (an image's own, nothing to install), build with the
  # older table form and put the file back after (the EXIT trap too, if the script is stopped).
  if [ "$DRY" = 0 ] && "$PYTHON" -c "import setuptools, sys; sys.exit(int(setuptools.__version__.split('.')[0]) >= 77)" 2>/dev/null; then
    cp pyproject.toml "$STATE/pyproject.toml"
    sed -i -E 's/^license = "([^"]*)"$/license = {text = "\1"}/' pyproject.toml
    note="$note; setuptools < 77: pyproject's license as a table for this build"
  fi
  # shellcheck disable=SC2016  # expanded by the inner bash
  run_stage build 150 bash -c '"$0" setup.py build_ext --inplace && "$0" -m fastmask.collect_env' "$PYTHON"
  restore_pyproject
  [ "$DRY" = 1 ] || [ "$RC" -eq 125 ] && return
  if [ "$RC" -eq 0 ] && [ "$MODE" = gpu ] && ! "$PYTHON" -c "import fastmask, sys; sys.exit(0 if fastmask._loader._state['cuda_error'] is None else 1)"; then
    RC=1; note="built, but the CUDA op library did not load (python -m fastmask.collect_env says why)"
  fi
  if [ "$RC" -eq 0 ]; then record build pass "$(elapsed_since "$t")" "$note"
  elif timed_out "$RC"; then record build fail "$(elapsed_since "$t")" "timed out; $note"
  else record build fail "$(elapsed_since "$t")" "$(grep -m1 -E 'error' "$LOGS/build.log" | cut -c1-80)"
  fi
}

# A pytest stage's summary row from its exit status, duration and log (5: nothing collected).
record_pytest() {
  local name=$1 secs=$2 line; line=$(pytest_line "$LOGS/$name.log")
  if [ "$RC" -eq 0 ]; then record "$name" pass "$secs" "$line"
  elif timed_out "$RC"; then record "$name" fail "$secs" "timed out; ${line:-no result line}"
  elif [ "$RC" -eq 5 ]; then record "$name" fail "$secs" "no tests collected"
  else record "$name" fail "$secs" "${line:-exit $RC, see logs/$name.log}"
  fi
}

# From tests/, as scripts/test.sh runs them, so that an installed fastmask is the one tested.
# --durations: the logs name the slowest tests, to size the time boxes from the first GPU run.
PYTEST=(bash -c 'cd tests && exec "$@"' pytest "$PYTHON" -m pytest -p no:cacheprovider -q -rs --durations=10)

cuda_tests() {
  local t=$SECONDS
  run_stage cuda-tests 90 "${PYTEST[@]}" -m cuda
  [ "$DRY" = 1 ] || [ "$RC" -eq 125 ] && return
  if [ "$MODE" = cpu ] && [ "$RC" -eq 0 ]; then
    # Without a GPU every CUDA test skips: passing means they were collected, and all skipped.
    local line; line=$(pytest_line "$LOGS/cuda-tests.log")
    if [[ "$line" == *passed* ]] || [[ "$line" != *skipped* ]]; then RC=1; fi
  fi
  record_pytest cuda-tests "$(elapsed_since "$t")"
}

SANITIZER_TOOLS=(memcheck racecheck synccheck)

find_sanitizer() {
  local home=${CUDA_HOME:-/usr/local/cuda} candidate
  for candidate in "$(command -v compute-sanitizer)" "$home/bin/compute-sanitizer" \
                   "$home/compute-sanitizer/compute-sanitizer" /usr/local/cuda/bin/compute-sanitizer; do
    [ -n "$candidate" ] && [ -x "$candidate" ] && { echo "$candidate"; return; }
  done
}

# The suite, the plain driver run and the three sanitizer runs, side by side.
checks() {
  local sanitizer="" tool suite_cmd=()
  if wanted suite; then
    if [ "$MODE" = gpu ]; then
      # pytest-xdist, if there: 6 workers x 2 threads, 12 cores, the rest for the sanitizer runs
      # (some tests need >= 2 threads for torch's exact CPU paths).
      "$PYTHON" -c "import xdist" 2>/dev/null && suite_cmd=(OMP_NUM_THREADS=2 "${PYTEST[@]}" -m "not cuda and not slow" -n 6)
      [ ${#suite_cmd[@]} -gt 0 ] || suite_cmd=("OMP_NUM_THREADS=$NPROC" "${PYTEST[@]}" -m "not cuda and not slow")
      start_stage suite 100 env "${suite_cmd[@]}"
    else
      record suite skipped 0 "CPU mode: scripts/test.sh runs the whole suite"
    fi
  fi
  wanted smoke && start_stage smoke 100 "$PYTHON" scripts/cuda_smoke.py --device "$( [ "$MODE" = gpu ] && echo cuda || echo cpu)"
  if [ "$MODE" = gpu ]; then
    sanitizer=$(find_sanitizer)
    [ -z "$sanitizer" ] && [ "$DRY" = 1 ] && sanitizer="<compute-sanitizer>"
    for tool in "${SANITIZER_TOOLS[@]}"; do
      wanted "$tool" || continue
      if [ -z "$sanitizer" ]; then record "$tool" skipped 0 "no compute-sanitizer found"; continue; fi
      # --launch-timeout: the smoke driver reaches CUDA only after importing torch, beside the
      # suite's workers and the other runs doing the same; past the default 10 s the sanitizer
      # can fail to attach, and then waits out the stage's timeout.
      start_stage "$tool" 100 env PYTORCH_NO_CUDA_MEMORY_CACHING=1 "$sanitizer" --tool "$tool" \
        --kernel-name kns=fastmask --launch-timeout 60 --error-exitcode 97 --print-limit 20 \
        "$PYTHON" scripts/cuda_smoke.py
    done
  else
    for tool in "${SANITIZER_TOOLS[@]}"; do wanted "$tool" && record "$tool" skipped 0 "CPU mode: no GPU"; done
  fi
  [ "$DRY" = 1 ] && return
  if [ "$MODE" = gpu ] && wanted suite; then
    finish_stage suite
    [ "$RC" -eq 125 ] || record_pytest suite "$SECS"
  fi
  local smoke_rc=""
  if wanted smoke; then
    finish_stage smoke
    smoke_rc=$RC
    if [ "$RC" -eq 125 ]; then :
    elif [ "$RC" -eq 0 ]; then record smoke pass "$SECS" "$(tail -1 "$LOGS/smoke.log")"
    else record smoke fail "$SECS" "$(grep -m1 -E '^FAIL|Error' "$LOGS/smoke.log" | cut -c1-90)"
    fi
  fi
  [ "$MODE" = gpu ] && [ -n "$sanitizer" ] || return 0
  for tool in "${SANITIZER_TOOLS[@]}"; do
    wanted "$tool" || continue
    finish_stage "$tool"
    [ "$RC" -eq 125 ] && continue
    local log=$LOGS/$tool.log secs=$SECS
    local errors; errors=$(grep -m1 -E "ERROR SUMMARY" "$log" | sed -E 's/^=+ *//')
    if [ "$RC" -eq 0 ]; then record "$tool" pass "$secs" "${errors:-no errors}"
    elif [ "$RC" -eq 97 ]; then record "$tool" fail "$secs" "${errors:-errors found}, see logs/$tool.log"
    elif timed_out "$RC"; then record "$tool" fail "$secs" "timed out"
    elif grep -qiE "not supported|unable to|failed to (initialize|attach)|error 999|could not" <(grep -E '^=+' "$log"); then
      # The sanitizer could not attach (e.g. gVisor's runtime); the plain smoke run still checked the launches.
      record "$tool" skipped "$secs" "cannot attach: $(grep -m1 -iE 'not supported|unable to|failed to|error 999|could not' "$log" | sed -E 's/^=+ *//' | cut -c1-70)"
    else record "$tool" fail "$secs" "exit $RC${smoke_rc:+ (plain driver run: exit $smoke_rc)}, see logs/$tool.log"
    fi
  done
}

bench() {
  local t=$SECONDS
  if [ "$MODE" = gpu ]; then
    # shellcheck disable=SC2086  # GPU_CHECK_BENCH_ARGS: words to split
    run_stage bench "$TOTAL_BUDGET" "$PYTHON" benchmarks/compare.py --device cuda --repeats 20 --warmup 3 --case-budget-s 1.5 --out "$OUT/bench" ${GPU_CHECK_BENCH_ARGS:-}
  else
    run_stage bench 120 "$PYTHON" benchmarks/compare.py --device cpu --op resize_bilinear --repeats 2 --warmup 1 --out "$OUT/bench"
  fi
  [ "$DRY" = 1 ] || [ "$RC" -eq 125 ] && return
  if [ "$RC" -eq 0 ]; then record bench pass "$(elapsed_since "$t")" "table: bench/*.md (--pack: bench.md)"
  elif timed_out "$RC"; then record bench fail "$(elapsed_since "$t")" "timed out; the rows measured are in bench/"
  else record bench fail "$(elapsed_since "$t")" "$(grep -m1 -E '^FAILED|Error' "$LOGS/bench.log" | cut -c1-90)"
  fi
}

latest_bench_json() {  # compare.py names its files <device>-<date>: the last in name order is the newest
  local files; files=$(compgen -G "$OUT/bench/*.json" | sort | tail -1); echo "$files"
}

# Headline speed-ups from the benchmark's JSON: geometric mean over the op rows, and the model rows.
headline() {
  local json; json=$(latest_bench_json)
  [ -n "$json" ] || return 0
  "$PYTHON" - "$json" <<'EOF'
import json, math, sys
data = json.load(open(sys.argv[1]))
rows = [r for r in data["rows"] if not r.get("error")]
ops = [r for r in rows if not r["op"].startswith("Mask R-CNN")]
print(f"headline speed-ups ({data['meta']['device']}; torchvision / fastmask time, median):")
if ops:
    gmean = math.exp(sum(math.log(r["speedup"]) for r in ops) / len(ops))
    lo, hi = min(ops, key=lambda r: r["speedup"]), max(ops, key=lambda r: r["speedup"])
    print(f"  ops: geometric mean {gmean:.2f}x over {len(ops)} rows; lowest {lo['speedup']:.2f}x ({lo['op']}, "
          f"{lo['workload'][:40]}), highest {hi['speedup']:.1f}x ({hi['op']})")
    bw = [r for r in ops if r.get("copy_fraction")]
    if bw:
        print(f"  bandwidth: {len(bw)} memory-bound rows at {min(r['copy_fraction'] for r in bw):.0%}.."
              f"{max(r['copy_fraction'] for r in bw):.0%} of a {data['meta']['copy_gbs']:.0f} GB/s copy")
for r in rows:
    if r["op"].startswith("Mask R-CNN"):
        print(f"  {r['speedup']:.2f}x  {r['op']}: {r['workload']}")
        if r.get("versus_speedup"):
            print(f"         ({r['versus_speedup']:.2f}x over {r['versus']})")
failed = [r for r in data["rows"] if r.get("error")]
if failed:
    print(f"  {len(failed)} benchmark case(s) FAILED: " + "; ".join(f"{r['op']}: {r['error'][:60]}" for r in failed))
EOF
}

summary() {
  local line stage result secs note
  {
    echo
    echo "== gpu_check summary: $MODE mode, $(elapsed_since "$START") s of the ${TOTAL_BUDGET} s budget, logs in $OUT"
    printf '%-11s %-8s %7s  %s\n' stage result seconds note
    for line in "${SUMMARY[@]}"; do
      IFS='|' read -r stage result secs note <<< "$line"
      printf '%-11s %-8s %7s  %s\n' "$stage" "$result" "$secs" "$note"
    done
    headline
  } | tee "$OUT/summary.txt"
}

pack() {
  local latest; latest=$(latest_bench_json)
  if [ -n "$latest" ]; then cp "$latest" "$OUT/bench.json"; cp "${latest%.json}.md" "$OUT/bench.md"; fi
  tar -czf "$OUT/logs.tar.gz" -C "$OUT" logs bench && rm -rf "$LOGS" "$OUT/bench"
}

echo "gpu_check: $MODE mode, python $PYTHON, output in $OUT"
if [ "$MODE" = gpu ] && [ "$DRY" = 1 ] && [ -z "$(gpu_arch)" ]; then GPU_CHECK_ARCH="<cc>"; fi
wanted probe && probe
if wanted build; then build; fi
# Later stages need a fastmask whose kernels load. Without the build stage (--only): GPU mode
# uses the in-place build; CPU mode too if it loads, else an installed fastmask.
if ! wanted build && { [ "$MODE" = gpu ] || [ "$DRY" = 1 ] || inplace_loads > /dev/null; }; then use_inplace; fi
if [ "$DRY" = 0 ] && ! loads_fastmask "${PYTHONPATH:-}" > /dev/null; then
  (cd "$OUT" && "$PYTHON" -c "import fastmask; fastmask._loader.require_extension()") > "$LOGS/import.log" 2>&1
  record import fail 0 "fastmask does not load: $(tail -1 "$LOGS/import.log" | cut -c1-80)"
else
  wanted cuda-tests && cuda_tests
  checks
  wanted bench && bench
fi
if [ "$DRY" = 1 ]; then
  for line in "${SUMMARY[@]}"; do echo "[decided] $line"; done
  exit 0
fi
summary_text=$(summary)
[ "$PACK" = 1 ] && pack
# The summary is printed last.
echo "$summary_text"
exit "$FAILED"
