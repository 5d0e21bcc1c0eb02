#!/usr/bin/env bash
# The reliability suite, as CI runs it (from the repository root):
#   bash scripts/reliability/run_all.sh
# 1. ABI guard: export allow-list + abidiff against abi/libgqa.abi        (abi_check.sh)
# 2. ASan + UBSan build, whole ctest (tests/c + tests/reliability)        (sanitize.sh)
# 3. ThreadSanitizer build, many-threads + determinism tests              (tsan.sh)
# 4. libFuzzer, time-boxed (60 s, env GQA_FUZZ_SECONDS)                   (fuzz.sh)
# Installs its tools itself (apt-get: clang libclang-rt-dev llvm abigail-tools when missing). Every step runs
# even when an earlier one failed; the exit status is non-zero if any failed.
# Environment: GQA_REL_BUILD (build root, default build/reliability), GQA_REL_JOBS (2),
# GQA_FUZZ_SECONDS (60), GQA_REL_TSAN_ROUNDS (3).
set -uo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
source "$here/common.sh"
export DEBIAN_FRONTEND=noninteractive
{ rel_need cmake:cmake gcc:gcc g++:g++ clang:clang llvm-symbolizer:llvm abidw:abigail-tools nm:binutils && rel_need_clang_rt; } ||
  { rel_log "could not install the tools (clang llvm abigail-tools)"; exit 1; }

declare -a names=() results=() times=()
step() {
  local name=$1
  shift
  echo
  rel_log "===== $name ====="
  local start=$SECONDS
  bash "$@" 2>&1 | tee "$REL_BUILD/$name.log"
  local rc=${PIPESTATUS[0]}
  names+=("$name")
  results+=("$rc")
  times+=("$((SECONDS - start))")
}

total_start=$SECONDS
step abi "$here/abi_check.sh"
step asan-ubsan "$here/sanitize.sh"
step tsan "$here/tsan.sh"
step fuzz "$here/fuzz.sh"

echo
rel_log "===== summary (logs in $REL_BUILD) ====="
# Counts the tests print, gathered for the note.
sed -n '/counts from the reliability tests/,$p' "$REL_BUILD"/asan-ubsan.log 2>/dev/null | grep -v '^\[' | sed 's/^  //'
grep -h -E 'tests passed|Skipped|\*\*\*|Failed|Not Run' "$REL_BUILD"/asan-ubsan.log 2>/dev/null | sed 's/^/  ctest (asan+ubsan): /'
grep -h -E 'phase [12]|checks, [0-9]+ failed' "$REL_BUILD"/tsan.log 2>/dev/null | sed 's/^ */  tsan: /'
grep -h -E 'fuzz executions' "$REL_BUILD"/fuzz.log 2>/dev/null | sed 's/^\[[^]]*\] /  /'
failed=0
for i in "${!names[@]}"; do
  if [ "${results[$i]}" = 0 ]; then status=PASS; else status="FAIL (exit ${results[$i]})"; failed=$((failed + 1)); fi
  printf '  %-12s %-16s %4d s\n' "${names[$i]}" "$status" "${times[$i]}"
done
rel_log "reliability: ${#names[@]} steps, $failed failed, $((SECONDS - total_start)) s"
[ "$failed" = 0 ]
