#!/usr/bin/env bash
# ThreadSanitizer build (gcc) of libgqa and the many-threads test (16 caller threads, plus a
# thread changing the CPU thread count and the log level), and the determinism test (the CPU
# backend's own worker threads at 1, 2, 3 and 8), both again with workers that sleep at once.
# Any data race report fails.
set -uo pipefail
source "$(dirname "$0")/common.sh"
rel_need cmake:cmake gcc:gcc g++:g++

dir="$REL_BUILD/tsan"
san="-fsanitize=thread -fno-omit-frame-pointer"
rel_log "configure TSan build in $dir"
rel_configure "$dir" -DCMAKE_BUILD_TYPE=RelWithDebInfo \
  -DCMAKE_C_FLAGS_RELWITHDEBINFO="-O1 -g" -DCMAKE_CXX_FLAGS_RELWITHDEBINFO="-O1 -g" \
  -DCMAKE_C_FLAGS="$san" -DCMAKE_CXX_FLAGS="$san" \
  -DCMAKE_SHARED_LINKER_FLAGS="-fsanitize=thread" -DCMAKE_EXE_LINKER_FLAGS="-fsanitize=thread" || exit 1
rel_log "build libgqa + rel_test_threads + rel_test_determinism (-j$REL_JOBS)"
cmake --build "$dir" -j"$REL_JOBS" --target rel_test_threads rel_test_determinism >"$dir.build.log" 2>&1 ||
  { tail -60 "$dir.build.log"; exit 1; }

bin=$(find "$dir" -name rel_test_threads -type f -perm -u+x | head -1)
det=$(find "$dir" -name rel_test_determinism -type f -perm -u+x | head -1)
export TSAN_OPTIONS="halt_on_error=1:second_deadlock_stack=1:exitcode=66"
export GQA_LOG_LEVEL=WARNING
rc=0
rel_log "TSan: $bin ${GQA_REL_TSAN_ROUNDS:-3} rounds (exit 66 = data race report)"
"$bin" "${GQA_REL_TSAN_ROUNDS:-3}" || rc=1
rel_log "TSan: $det"
"$det" || rc=1
# Workers that sleep at once: nearly every run is closed by its caller before some worker wakes
# up, the path where a late worker must leave the run alone (thread_pool.hpp).
rel_log "TSan: $det, GQA_CPU_SPIN_US=0"
GQA_CPU_SPIN_US=0 "$det" || rc=1
rel_log "TSan: $bin 1 round, GQA_CPU_SPIN_US=0"
GQA_CPU_SPIN_US=0 "$bin" 1 || rc=1
exit $rc
