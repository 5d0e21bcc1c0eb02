#!/usr/bin/env bash
# tests/gpu/run.sh: the whole GPU check of libgqa in one command (one device call).
#
#   1. build libgqa + the C tests (CMake, default arches 80;90)   -> build.log
#   2. install the Python package (scikit-build-core, no network) -> build.log
#   3. ctest, every label (cpu and gpu)                           -> ctest.log
#   4. pytest -m gpu over tests/python                            -> pytest.log, pytest-junit.xml
#   5. compute-sanitizer memcheck, racecheck, initcheck, synccheck over tests/c/test_gpu_basic
#      and the small pytest subset (tests named test_small_*)     -> sanitizer.log
#   6. the GPU benchmarks, python -m gqa.bench {overhead,decode,prefill} --device cuda
#      (overhead first: seconds, so a run cut short still has the host cost per call)
#                                                                 -> bench/ (logs, JSON, PNG, RESULTS.md)
#   7. a summary with counts                                      -> summary.txt (also printed)
#
# Run from anywhere inside the repository:  tests/gpu/run.sh
# Environment:
#   OUT            log folder (default /tmp/gqa-gpu-out); at most 6 files are written there,
#                  plus the benchmarks' folder bench/
#   GQA_BUILD_DIR  CMake build folder (default build/gpu in this checkout); reused when it exists
#   JOBS           parallel build jobs (default: all cores)
#   GQA_STEPS      steps to run (default "build python ctest pytest sanitizers bench"); e.g. a
#                  second device call on the same warm machine can run GQA_STEPS=sanitizers alone.
#                  Without "python", Python uses python/gqa with GQA_LIBRARY=$GQA_BUILD_DIR/libgqa.so
#                  (saves the package's second CUDA compile; the device plan in cuda/README.md)
#   GQA_BENCH_ARGS     extra options for the benchmarks, e.g. "--quick" or "--no-graph"
#   GQA_BENCH_TIMEOUT  seconds per benchmark (default 900)
#   GQA_SKIP_SANITIZERS=1   skip step 5
#   GQA_SANITIZER_TIMEOUT   seconds per sanitizer run (default 240)
#   GQA_SANITIZER_PYTEST_TOOLS  tools that also run over the pytest subset (default: all four;
#                           the C test always gets all four)
#   GQA_SANITIZER_PY_ARGS   extra compute-sanitizer options for the pytest runs, e.g.
#                           "--kernel-name kns=gqa" to check only libgqa's kernels
# Python packages missing on the machine (cffi, pycparser) are installed from ./.whl if present.
# Exit status: 0 only when every step passed; with a GPU visible, GPU tests that were skipped
# count as failures (a GPU run that tested nothing is not a pass).
set -u
set -o pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
OUT_DIR=${OUT:-/tmp/gqa-gpu-out}
BUILD=${GQA_BUILD_DIR:-$ROOT/build/gpu}
SITE=${GQA_SITE_DIR:-/tmp/gqa-gpu-site}
JOBS=${JOBS:-$(nproc)}
PY=${PYTHON:-python3}
mkdir -p "$OUT_DIR"
for log in build ctest pytest sanitizer; do : >"$OUT_DIR/$log.log"; done

declare -a NAMES=() RESULTS=() NOTES=()
record() { NAMES+=("$1"); RESULTS+=("$2"); NOTES+=("$3"); }

# step NAME LOG CMD...: runs CMD, appending its output to LOG; records PASS/FAIL.
step() {
    local name=$1 log=$2
    shift 2
    echo "=== $name: $*" >>"$log"
    local t0=$SECONDS
    "$@" >>"$log" 2>&1
    local rc=$?
    echo "=== $name: exit $rc after $((SECONDS - t0)) s" >>"$log"
    if [ $rc -eq 0 ]; then record "$name" PASS "$((SECONDS - t0)) s"; else record "$name" FAIL "exit $rc, see $(basename "$log")"; fi
    return $rc
}

STEPS=${GQA_STEPS:-build python ctest pytest sanitizers bench}
want() { case " $STEPS " in *" $1 "*) return 0 ;; *) return 1 ;; esac; }

GPU_NAME=$(nvidia-smi -L 2>/dev/null | head -1)
HAVE_GPU=0
[ -n "$GPU_NAME" ] && HAVE_GPU=1

# ---- 1. build --------------------------------------------------------------------------
cd "$ROOT" || exit 1
T0=$SECONDS
BUILD_OK=0
if want build; then
    step configure "$OUT_DIR/build.log" cmake -S "$ROOT" -B "$BUILD" -DCMAKE_BUILD_TYPE=Release \
        -DCMAKE_CUDA_FLAGS="-Xptxas -v -lineinfo" &&
        step build "$OUT_DIR/build.log" cmake --build "$BUILD" -j "$JOBS"
    BUILD_OK=$?
fi
BUILD_S=$((SECONDS - T0))

# ---- 2. Python package -------------------------------------------------------------------
if ! "$PY" -c "import cffi" >/dev/null 2>&1 && ls "$ROOT"/.whl/*.whl >/dev/null 2>&1; then
    rm -rf "$SITE-deps"
    step python-deps "$OUT_DIR/build.log" "$PY" -m pip install -q --no-index --no-deps \
        --no-compile --target "$SITE-deps" "$ROOT"/.whl/*.whl
    export PYTHONPATH="$SITE-deps${PYTHONPATH:+:$PYTHONPATH}"
fi
if want python; then
    rm -rf "$SITE"
    step python-install "$OUT_DIR/build.log" "$PY" -m pip install --no-build-isolation --no-deps \
        --no-index --target "$SITE" -C build-dir="$BUILD-py" "$ROOT"
    export PYTHONPATH="$SITE${PYTHONPATH:+:$PYTHONPATH}"
elif [ -f "$BUILD/libgqa.so" ]; then
    # No package install (it would compile the CUDA code a second time): the source package
    # python/gqa loads the library step 1 built.
    export GQA_LIBRARY="$BUILD/libgqa.so" PYTHONPATH="$ROOT/python${PYTHONPATH:+:$PYTHONPATH}"
fi

# ---- 3. ctest ----------------------------------------------------------------------------
CTEST_NOTE="not run"
if want ctest && [ $BUILD_OK -eq 0 ]; then
    step ctest "$OUT_DIR/ctest.log" ctest --test-dir "$BUILD" --output-on-failure -j 4
    CTEST_NOTE=$(grep -E "tests passed" "$OUT_DIR/ctest.log" | tail -1)
    SKIPPED_GPU=$(grep -E "test_gpu_\S+ .*(Skipped|Not Run)" "$OUT_DIR/ctest.log" | wc -l)
    if [ $HAVE_GPU -eq 1 ] && [ "$SKIPPED_GPU" -gt 0 ]; then
        record ctest-gpu-ran FAIL "$SKIPPED_GPU GPU C test(s) skipped although a GPU is visible"
    fi
fi

# ---- 4. pytest -m gpu ----------------------------------------------------------------------
export PYTHONUNBUFFERED=1
PYTEST_NOTE="not run"
if want pytest; then
    # Exit status 5 (nothing collected: every module skipped) is not a failure by itself; with a
    # GPU visible the check below turns "nothing passed" into one.
    step pytest-gpu "$OUT_DIR/pytest.log" sh -c '"$@"; rc=$?; [ $rc -eq 5 ] && rc=0; exit $rc' sh \
        "$PY" -m pytest "$ROOT/tests/python" -m gpu -q -rfEs -p no:cacheprovider \
        --junitxml="$OUT_DIR/pytest-junit.xml"
    PYTEST_NOTE=$(grep -E "(passed|failed|skipped|error)" "$OUT_DIR/pytest.log" | grep -E " in [0-9.]+s" | tail -1)
    if [ $HAVE_GPU -eq 1 ] && ! echo "$PYTEST_NOTE" | grep -q " passed"; then
        record pytest-gpu-ran FAIL "no GPU test passed although a GPU is visible"
    fi
fi

# ---- 5. compute-sanitizer ------------------------------------------------------------------
CS=$(command -v compute-sanitizer || true)
for c in /usr/local/cuda/bin/compute-sanitizer /usr/local/cuda/compute-sanitizer/compute-sanitizer; do
    [ -z "$CS" ] && [ -x "$c" ] && CS=$c
done
TO=${GQA_SANITIZER_TIMEOUT:-240}
if ! want sanitizers || [ "${GQA_SKIP_SANITIZERS:-0}" = 1 ]; then
    record sanitizers SKIP "not requested"
elif [ $HAVE_GPU -eq 0 ]; then
    record sanitizers SKIP "no GPU visible"
elif [ -z "$CS" ]; then
    record sanitizers FAIL "compute-sanitizer not found"
else
    C_TEST="$BUILD/tests/c/test_gpu_basic"
    for tool in memcheck racecheck initcheck synccheck; do
        step "$tool:test_gpu_basic" "$OUT_DIR/sanitizer.log" timeout "$TO" "$CS" --tool "$tool" \
            --error-exitcode 99 "$C_TEST"
        case " ${GQA_SANITIZER_PYTEST_TOOLS:-memcheck racecheck initcheck synccheck} " in
            *" $tool "*) ;;
            *) record "$tool:pytest-small" SKIP "not in GQA_SANITIZER_PYTEST_TOOLS"; continue ;;
        esac
        # Each torch tensor its own cudaMalloc, so that memcheck sees every boundary.
        # shellcheck disable=SC2086
        step "$tool:pytest-small" "$OUT_DIR/sanitizer.log" timeout "$TO" env PYTORCH_NO_CUDA_MEMORY_CACHING=1 \
            "$CS" --tool "$tool" --error-exitcode 99 ${GQA_SANITIZER_PY_ARGS:-} \
            "$PY" -m pytest "$ROOT/tests/python/test_gpu.py" "$ROOT/tests/python/test_gpu_batch.py" -m gpu -k small -q \
            -p no:cacheprovider
    done
fi

# ---- 6. GPU benchmarks ----------------------------------------------------------------------
# Each mode writes its JSON, PNG and RESULTS.md section into $OUT_DIR/bench, on a copy of the
# checkout's RESULTS.md (so the CPU section stays); copy them into benchmarks/ to publish. A run
# cut short leaves a partial JSON: python -m gqa.bench --device cuda --from-json FILE reports it.
if want bench; then
    if [ $HAVE_GPU -eq 0 ]; then
        record bench SKIP "no GPU visible"
    else
        BENCH_DIR="$OUT_DIR/bench"
        mkdir -p "$BENCH_DIR"
        [ -f "$BENCH_DIR/RESULTS.md" ] || cp "$ROOT/benchmarks/RESULTS.md" "$BENCH_DIR/RESULTS.md"
        for mode in overhead decode prefill; do
            : >"$BENCH_DIR/bench-$mode.log"
            # shellcheck disable=SC2086
            step "bench-$mode" "$BENCH_DIR/bench-$mode.log" timeout "${GQA_BENCH_TIMEOUT:-900}" \
                env TQDM_MININTERVAL=10 "$PY" -m gqa.bench "$mode" --device cuda --out-dir "$BENCH_DIR" \
                --results-md "$BENCH_DIR/RESULTS.md" ${GQA_BENCH_ARGS:-}
        done
    fi
fi

# ---- 7. summary ----------------------------------------------------------------------------
{
    echo "libgqa GPU run: $(date -u +%Y-%m-%dT%H:%M:%SZ), commit $(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo none)"
    echo "device: ${GPU_NAME:-none visible}"
    echo "build: ${BUILD_S} s with -j $JOBS"
    echo "ctest: ${CTEST_NOTE}"
    echo "pytest -m gpu: ${PYTEST_NOTE:-no summary line}"
    FAILS=0
    for i in "${!NAMES[@]}"; do
        printf '  %-28s %-4s %s\n' "${NAMES[$i]}" "${RESULTS[$i]}" "${NOTES[$i]}"
        [ "${RESULTS[$i]}" = FAIL ] && FAILS=$((FAILS + 1))
    done
    echo "steps: ${#NAMES[@]}, failed: $FAILS"
    grep -E "^(FAIL|FAILED|ERROR)" "$OUT_DIR/pytest.log" 2>/dev/null | head -20
    grep -E "ERROR SUMMARY" "$OUT_DIR/sanitizer.log" 2>/dev/null | sort | uniq -c
    grep -hE "^gqa.bench .*(configs,|WRONG|ERROR)|^gqa.bench overhead: libgqa C ABI: decode, " \
        "$OUT_DIR"/bench/bench-*.log 2>/dev/null
} | tee "$OUT_DIR/summary.txt"
grep -q "failed: 0$" "$OUT_DIR/summary.txt"
