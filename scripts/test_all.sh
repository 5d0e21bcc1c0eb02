#!/usr/bin/env bash
# Installs what the tests need and runs every suite:
#   ctest (C tests over the header and library; GPU tests skip with 77 when no device),
#   pytest (the Python package; GPU tests skip without a device),
#   reliability (ASan/UBSan/TSan builds, fuzzing, ABI check), callers (C package, Rust, Go, PyTorch)
#   and cuda-emulation (the CUDA kernels run on the CPU against the float64 reference).
# Uses the active virtual environment, else creates ./.venv. Exit status: non-zero if any suite failed.
# Options: --quick runs only ctest and pytest.
set -uo pipefail
cd "$(dirname "$0")/.."

quick=0
[ "${1:-}" = "--quick" ] && quick=1

if [ -n "${VIRTUAL_ENV:-}" ]; then
  PY=python
else
  [ -x .venv/bin/python ] || python3 -m venv .venv || exit 1
  PY="$PWD/.venv/bin/python"
fi
export PY

echo "== install: libgqa + test requirements (build dir build/py) =="
"$PY" -m pip install -q --upgrade pip || exit 1
# One build serves both suites: the wheel's libgqa.so and the ctest programs come from build/py.
"$PY" -m pip install -q ".[test]" -C build-dir=build/py -C cmake.define.GQA_BUILD_TESTS=ON || exit 1

declare -a names=() results=()
run_suite() {
  local name=$1; shift
  echo
  echo "== suite: $name =="
  local start=$SECONDS
  "$@"
  local rc=$?
  names+=("$name ($((SECONDS - start)) s)")
  results+=("$rc")
}

run_suite ctest ctest --test-dir build/py --output-on-failure
run_suite pytest "$PY" -m pytest -q -rs tests/python
# The CPU backend picks its ISA at run time; each forced path must pass the same tests.
# Where the CPU (or, for AMX, the OS) lacks a path, forcing it falls back to the automatic
# choice with a warning: the runs above already test that choice, and test_cpu_isa (in ctest)
# tests the fallback itself, so that path's runs are skipped, and the summary says so.
isa_falls_back() {
  GQA_CPU_ISA=$1 "$PY" -c 'import numpy as np, gqa
q = np.ones((1, 1, 2, 8), np.float32); k = np.ones((1, 1, 1, 8), np.float32); c = np.ones((1, 4, 1, 8), np.float32)
gqa.decode(q, k, k, c, c.copy(), 0)' 2>&1 | grep -q "is not supported by this CPU"
}
for isa in scalar avx2 avx512 avx512_bf16 amx_bf16; do
  if isa_falls_back "$isa"; then
    names+=("GQA_CPU_ISA=$isa (not on this CPU)"); results+=(skipped)
    continue
  fi
  run_suite "ctest GQA_CPU_ISA=$isa" env GQA_CPU_ISA=$isa ctest --test-dir build/py --output-on-failure -L cpu
  run_suite "pytest GQA_CPU_ISA=$isa" env GQA_CPU_ISA=$isa "$PY" -m pytest -q tests/python -m "not slow and not gpu"
done
# CI has no GPU: the CUDA kernels, compiled as host C++ (tests/gpu/emulate), are checked here
# against the float64 reference. Needs the CUDA headers (they come with nvcc).
cuda_emulation() {
  if ! command -v nvcc >/dev/null && [ ! -f /usr/local/cuda/include/cuda_runtime.h ]; then
    echo "cuda-emulation: skipped, no CUDA headers (nvcc not found)"
    return 0
  fi
  bash tests/gpu/emulate/emulate.sh plain
}
if [ "$quick" = 0 ]; then
  [ -f scripts/reliability/run_all.sh ] && run_suite reliability bash scripts/reliability/run_all.sh
  [ -f scripts/callers/run_all.sh ] && run_suite callers bash scripts/callers/run_all.sh
  run_suite cuda-emulation cuda_emulation
fi

echo
echo "== summary =="
passed=0 failed=0
for i in "${!names[@]}"; do
  if [ "${results[$i]}" = skipped ]; then status=SKIPPED
  elif [ "${results[$i]}" = 0 ]; then status=PASS; passed=$((passed + 1)); else status="FAIL (exit ${results[$i]})"; failed=$((failed + 1)); fi
  printf '  %-40s %s\n' "${names[$i]}" "$status"
done
echo "suites: $passed passed, $failed failed"
[ "$failed" = 0 ]
