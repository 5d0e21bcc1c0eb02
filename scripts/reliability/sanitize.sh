#!/usr/bin/env bash
# ASan + UBSan build (gcc, -fno-sanitize-recover=all) of libgqa and every C test, then the whole
# ctest (tests/c and tests/reliability) in it. Any sanitizer report fails the test that hit it.
# Exit status: non-zero on any failure.
set -uo pipefail
source "$(dirname "$0")/common.sh"
rel_need cmake:cmake gcc:gcc g++:g++

dir="$REL_BUILD/asan"
san="-fsanitize=address,undefined -fno-sanitize-recover=all -fno-omit-frame-pointer"
# RelWithDebInfo without -DNDEBUG: optimised (the scalar kernels are slow under ASan otherwise),
# with line numbers in reports and assertions left on.
rel_log "configure ASan+UBSan build in $dir"
rel_configure "$dir" -DCMAKE_BUILD_TYPE=RelWithDebInfo \
  -DCMAKE_C_FLAGS_RELWITHDEBINFO="-O1 -g" -DCMAKE_CXX_FLAGS_RELWITHDEBINFO="-O1 -g" \
  -DCMAKE_C_FLAGS="$san" -DCMAKE_CXX_FLAGS="$san" \
  -DCMAKE_SHARED_LINKER_FLAGS="-fsanitize=address,undefined" \
  -DCMAKE_EXE_LINKER_FLAGS="-fsanitize=address,undefined" || exit 1
rel_log "build (-j$REL_JOBS)"
cmake --build "$dir" -j"$REL_JOBS" >"$dir.build.log" 2>&1 || { tail -60 "$dir.build.log"; exit 1; }

export ASAN_OPTIONS="halt_on_error=1:abort_on_error=0:detect_leaks=1:detect_stack_use_after_return=1:check_initialization_order=1:strict_init_order=1:strict_string_checks=1:exitcode=86"
export UBSAN_OPTIONS="halt_on_error=1:print_stacktrace=1:exitcode=87"
export GQA_LOG_LEVEL=WARNING
rel_log "ctest under ASan+UBSan (exit 86 = ASan report, 87 = UBSan report)"
# GPU tests skip themselves (77) on a machine without a device.
ctest --test-dir "$dir" --output-on-failure -j"$REL_JOBS" --timeout 900
rc=$?
# The counts the reliability tests print (ctest keeps every test's output in LastTest.log).
rel_log "counts from the reliability tests (ASan+UBSan build):"
grep -h -E '^  (total|prefill|decode)[^:]* +[0-9]+ tried|^valid edge calls|^other entry points|^test_large_offsets: batch|test_threads: [0-9]+ caller|^  phase [12]|^(test_[a-z_]+): [0-9]+ checks|^test_bad_inputs: ' \
  "$dir"/Testing/Temporary/LastTest.log | sed 's/^/    /'
# The same promises hold for every CPU kernel, not only the one this machine picks.
for isa in scalar avx2; do
  rel_log "reliability tests again with GQA_CPU_ISA=$isa"
  GQA_CPU_ISA=$isa ctest --test-dir "$dir" -L reliability --output-on-failure -j"$REL_JOBS" --timeout 900 >"$dir/ctest-$isa.log" 2>&1
  isa_rc=$?
  grep -E 'tests passed|\*\*\*|FAIL' "$dir/ctest-$isa.log" | head -40 | sed "s/^/    [$isa] /"
  [ "$isa_rc" = 0 ] || rc=1
done
exit $rc
