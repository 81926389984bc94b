#!/usr/bin/env bash
# The one command for a machine with a GPU: build for the local GPU, run the whole test
# suite, run compute-sanitizer (memcheck, racecheck, synccheck, initcheck) on a quick
# subset of the CUDA tests, run the GPU benchmark and the per-kernel times of one call, and
# write logs and summary.md to OUTDIR.
#
#   scripts/gpu_check.sh OUTDIR            # about 6-8 minutes on one H100 with 16 cores
#   scripts/gpu_check.sh --dry-run OUTDIR  # print the steps, run nothing (CI runs this)
#
# Needs no network: it builds against the torch already installed
# (pip install --no-build-isolation --no-deps .). Tests whose optional package is missing
# skip with the reason. Every step has a time limit, so the script always finishes and
# the summary says which step ran out of time.
set -uo pipefail
cd "$(dirname "$0")/.."

DRY_RUN=0
if [[ "${1:-}" == "--dry-run" ]]; then DRY_RUN=1; shift; fi
OUTDIR="${1:?usage: scripts/gpu_check.sh [--dry-run] OUTDIR}"
mkdir -p "$OUTDIR"
OUTDIR="$(cd "$OUTDIR" && pwd)"

PYTHON="${PYTHON:-python3}"
JOBS="${JOBS:-$(nproc)}"
BUILD_LIMIT_S="${BUILD_LIMIT_S:-200}"
TEST_LIMIT_S="${TEST_LIMIT_S:-230}"
SANITIZER_LIMIT_S="${SANITIZER_LIMIT_S:-230}"
BENCH_LIMIT_S="${BENCH_LIMIT_S:-120}"
TIMINGS="$OUTDIR/timings.tsv"

# -P: never import ./aploss_cuda (the uncompiled source tree) instead of the installed one.
PY=("$PYTHON" -P)

# The CUDA tests under the sanitizers: every kernel once (a single ranking's gather,
# one-block sort and index, pass 1 with shared and global sums, the three positive stages,
# pass 2 in both variants, the second round beyond the one-block sort; the pairwise and
# grouped kernels, the deterministic records), every score dtype, and the error paths.
SANITIZER_TESTS=(
  "tests/test_devices.py::test_tiny_and_empty_inputs[sorted-cuda]"
  "tests/test_devices.py::test_tiny_and_empty_inputs[pairwise-cuda]"
  "tests/test_cuda.py::test_positive_counts_across_shared_memory_limits[1]"
  "tests/test_cuda.py::test_cuda_matches_cpu"
  "tests/test_devices.py::test_grouped_rankings[float64-per-image-cuda]"
  "tests/test_deterministic.py::test_deterministic_pass1_equals_the_kernel[plain-0-cuda]"
  "tests/test_devices.py::test_non_finite_scores_raise[negative-nan-sorted-cuda]"
  "tests/test_devices.py::test_non_finite_scores_raise[negative-nan-pairwise-cuda]"
  "tests/test_cuda.py::test_positive_counts_across_shared_memory_limits[7300]"
  "tests/test_cuda.py::test_positive_counts_across_shared_memory_limits[9700]"
  "tests/test_cuda.py::test_positive_counts_across_shared_memory_limits[20000]"
  "tests/test_family.py::test_groups[per-class-cuda]"
  "tests/test_family.py::test_rank_sort_matches_reference[ties-float32-cuda]"
  "tests/test_family.py::test_alrp_matches_reference[ties-float32-cuda]"
  "tests/test_family.py::test_bad_regression_losses[cuda]"
)
SANITIZER_TOOLS=(memcheck racecheck synccheck initcheck)

run_step() {  # name limit_s command...: runs with a time limit, logs to OUTDIR/name.log
  local name="$1" limit="$2"; shift 2
  if (( DRY_RUN )); then
    printf '[dry-run] %s (limit %ss): %s\n' "$name" "$limit" "$*"
    return 0
  fi
  local start=$SECONDS rc
  echo "== $name (limit ${limit}s)"
  timeout --kill-after=10 "$limit" "$@" >"$OUTDIR/$name.log" 2>&1
  rc=$?
  printf '%s\t%s\t%s\n' "$name" "$rc" "$((SECONDS - start))" >>"$TIMINGS"
  echo "   rc=$rc in $((SECONDS - start))s"
  return $rc
}

find_sanitizer() {
  command -v compute-sanitizer && return
  local candidate
  for candidate in "${CUDA_HOME:-/nonexistent}"/bin/compute-sanitizer /usr/local/cuda*/bin/compute-sanitizer \
                   /usr/local/cuda*/compute-sanitizer/compute-sanitizer; do
    [[ -x "$candidate" ]] && { echo "$candidate"; return; }
  done
  return 1
}

# ---- device and environment --------------------------------------------------------
: >"$TIMINGS"
if (( DRY_RUN )); then
  echo "[dry-run] environment: nvidia-smi, python/torch versions -> $OUTDIR/environment.txt"
else
  {
    date -u +"%Y-%m-%dT%H:%M:%SZ"
    echo "commit: $(git describe --always --dirty 2>/dev/null || echo unknown)"
    nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>&1
    "${PY[@]}" -c "import sys, torch; print('python', sys.version.split()[0]); print('torch', torch.__version__, 'cuda', torch.version.cuda); p = torch.cuda.get_device_properties(0) if torch.cuda.is_available() else None; print('gpu', p.name if p else None, 'sm', f'{p.major}.{p.minor}' if p else None, 'SMs', p.multi_processor_count if p else None)"
    nproc
  } >"$OUTDIR/environment.txt" 2>&1
  cat "$OUTDIR/environment.txt"
fi

# ---- build for the local GPU only ----------------------------------------------------
ARCH="$("${PY[@]}" -c "import torch; p = torch.cuda.get_device_capability(0); print(f'{p[0]}.{p[1]}')" 2>/dev/null || echo 9.0)"
build() {  # step name, then extra environment (e.g. CC=... CXX=...)
  local name="$1"; shift
  run_step "$name" "$BUILD_LIMIT_S" env "$@" FORCE_CUDA=1 TORCH_CUDA_ARCH_LIST="$ARCH" MAX_JOBS="$JOBS" \
    "$PYTHON" -m pip install --no-build-isolation --no-deps --no-cache-dir --force-reinstall -v .
}
build build
BUILD_RC=$?
# Every C++-side input error must raise, not crash. On the lent machines' image the
# default CXX (/opt/gcc/bin/g++, a wrapper around GCC 13.3) built an extension whose
# label/score errors segfaulted while /usr/bin/g++ (GCC 13.3) did not; so when the error
# paths crash, the summary records it and the check goes on with the system compiler.
run_step error-paths 300 "${PY[@]}" scripts/error_paths_smoke.py
if [[ $? -ne 0 && $DRY_RUN == 0 && -x /usr/bin/g++ && "$(command -v "${CXX:-c++}")" != /usr/bin/g++ ]]; then
  { echo "built with CXX=${CXX:-c++}"; cat "$OUTDIR/error-paths.log"; } >"$OUTDIR/error-paths-first-compiler.log"
  rm -f "$OUTDIR/error-paths.log"
  build build-with-system-gcc CC=/usr/bin/gcc CXX=/usr/bin/g++
  BUILD_RC=$?
  run_step error-paths 300 "${PY[@]}" scripts/error_paths_smoke.py
  # The tests build the emulated device (tests/simt) with the same compiler.
  export CC=/usr/bin/gcc CXX=/usr/bin/g++
fi
run_step info 60 "${PY[@]}" -c "import aploss_cuda, json; print(json.dumps(aploss_cuda.info()))"

# ---- the whole test suite, with the sanitizers beside it -----------------------------
PYTEST_ARGS=(-v -rfEs -p no:cacheprovider --junitxml="$OUTDIR/junit.xml")
if "${PY[@]}" -c "import xdist" 2>/dev/null; then PYTEST_ARGS+=(-n "$(( JOBS > 8 ? 8 : JOBS ))"); fi
if "${PY[@]}" -c "import pytest_timeout" 2>/dev/null; then PYTEST_ARGS+=(--timeout 200); fi

SANITIZER="$(find_sanitizer || true)"
SANITIZER_PIDS=()
# Only our kernels are instrumented (their names contain the aploss namespace), where
# this compute-sanitizer can filter by name.
KERNEL_FILTER=(--kernel-name kns=aploss)
if [[ -n "$SANITIZER" ]] && ! "$SANITIZER" --help 2>&1 | grep -q -- "--kernel-name"; then KERNEL_FILTER=(); fi
if [[ -n "$SANITIZER" || $DRY_RUN == 1 ]]; then
  for tool in "${SANITIZER_TOOLS[@]}"; do
    # No caching allocator, so an out-of-bounds access lands outside every allocation.
    run_step "sanitizer-$tool" "$SANITIZER_LIMIT_S" env PYTORCH_NO_CUDA_MEMORY_CACHING=1 \
      "${SANITIZER:-compute-sanitizer}" --tool "$tool" "${KERNEL_FILTER[@]}" --print-limit 20 \
      "${PY[@]}" -m pytest -v -p no:cacheprovider "${SANITIZER_TESTS[@]}" &
    SANITIZER_PIDS+=($!)
  done
else
  echo "compute-sanitizer not found: sanitizer steps skipped" | tee "$OUTDIR/sanitizer-missing.log"
fi
run_step tests "$TEST_LIMIT_S" "${PY[@]}" -m pytest tests "${PYTEST_ARGS[@]}"
TEST_RC=$?
for pid in "${SANITIZER_PIDS[@]}"; do wait "$pid"; done

# ---- the GPU benchmark, alone on the device ------------------------------------------
run_step bench "$BENCH_LIMIT_S" env PYTHONUNBUFFERED=1 "${PY[@]}" benchmarks/run.py \
  --device cuda --quick --retinanet on --no-progress --no-plot --out "$OUTDIR/bench"

# ---- where one call spends its time: every kernel at the CUDA budget's two points --------
run_step kernel-times "$BENCH_LIMIT_S" "${PY[@]}" scripts/gpu_kernel_times.py "$OUTDIR/kernel-times.md"

# ---- summary -------------------------------------------------------------------------
if (( DRY_RUN )); then
  echo "[dry-run] summary: scripts/gpu_check_summary.py $OUTDIR -> $OUTDIR/summary.md"
  exit 0
fi
"${PY[@]}" scripts/gpu_check_summary.py "$OUTDIR"
cat "$OUTDIR/summary.md"
(( BUILD_RC == 0 && TEST_RC == 0 ))
