#!/usr/bin/env bash
# libFuzzer run over prefill, decode, the batched op and merge (tests/fuzz/), time-boxed.
#   fuzz.sh [seconds]          default 60 (env GQA_FUZZ_SECONDS)
# libgqa is built with clang, -fsanitize=address,undefined,fuzzer-no-link (coverage inside the
# library too), the harness with -fsanitize=fuzzer,address,undefined. The run starts from a
# copy of the committed corpus (tests/fuzz/corpus/), so the repository is not modified; a
# failing input is saved to $REL_BUILD/fuzz/artifacts/ and printed as hex for the log.
set -uo pipefail
source "$(dirname "$0")/common.sh"
rel_need cmake:cmake clang:clang clang++:clang "llvm-symbolizer:llvm" && rel_need_clang_rt || exit 1
seconds="${1:-${GQA_FUZZ_SECONDS:-60}}"

dir="$REL_BUILD/fuzz"
lib="$dir/lib"
mkdir -p "$dir"
rt_dir="$(dirname "$(clang -print-file-name=libclang_rt.asan-x86_64.so)")"
san="-fsanitize=address,undefined,fuzzer-no-link -fno-sanitize-recover=all -fno-omit-frame-pointer -g"
# The library links with -Wl,--no-undefined: it needs the sanitizer runtime as a shared library
# (-shared-libsan), which also defines the coverage callbacks libFuzzer overrides at run time.
rel_log "configure clang ASan+UBSan+coverage libgqa in $lib"
cmake -S "$ROOT" -B "$lib" -DGQA_ENABLE_CUDA=OFF -DGQA_BUILD_TESTS=OFF -DCMAKE_BUILD_TYPE=RelWithDebInfo \
  -DCMAKE_C_COMPILER=clang -DCMAKE_CXX_COMPILER=clang++ \
  -DCMAKE_C_FLAGS_RELWITHDEBINFO="-O1 -g" -DCMAKE_CXX_FLAGS_RELWITHDEBINFO="-O1 -g" \
  -DCMAKE_C_FLAGS="$san" -DCMAKE_CXX_FLAGS="$san" \
  -DCMAKE_SHARED_LINKER_FLAGS="-fsanitize=address,undefined -shared-libsan" >"$lib.configure.log" 2>&1 ||
  { cat "$lib.configure.log"; exit 1; }
rel_log "build libgqa (-j$REL_JOBS)"
cmake --build "$lib" -j"$REL_JOBS" --target gqa >"$lib.build.log" 2>&1 || { tail -60 "$lib.build.log"; exit 1; }
so_dir="$(dirname "$(find "$lib" -name 'libgqa.so' | head -1)")"

rel_log "build the harness"
clang -std=c11 -O1 -g -fsanitize=fuzzer,address,undefined -fno-sanitize-recover=all -shared-libsan \
  -I"$ROOT/include" -I"$ROOT/tests/support" \
  "$ROOT"/tests/fuzz/fuzz_{gqa,common,attention,batch,merge}.c \
  "$ROOT/tests/support/gqa_test.c" "$ROOT/tests/support/attn_case.c" \
  -L"$so_dir" -lgqa -lm -Wl,-rpath,"$so_dir" -Wl,-rpath,"$rt_dir" -o "$dir/fuzz_gqa" || exit 1

rm -rf "$dir/corpus" "$dir/artifacts"
mkdir -p "$dir/corpus" "$dir/artifacts"
cp "$ROOT"/tests/fuzz/corpus/* "$dir/corpus/"
export ASAN_OPTIONS="halt_on_error=1:detect_leaks=1:symbolize=1"
export UBSAN_OPTIONS="halt_on_error=1:print_stacktrace=1"
export GQA_LOG_LEVEL=OFF
rel_log "fuzz for $seconds s from $(ls "$dir/corpus" | wc -l) corpus inputs"
# libFuzzer's libstdc++ comes before the shared ASan runtime in the link order: preload it.
LD_PRELOAD="$rt_dir/libclang_rt.asan-x86_64.so" \
  "$dir/fuzz_gqa" "$dir/corpus" -max_total_time="$seconds" -timeout=20 -rss_limit_mb=4096 -max_len=256 \
  -print_final_stats=1 -artifact_prefix="$dir/artifacts/" >"$dir/fuzz.log" 2>&1
rc=$?
grep -E '^(INFO: Seed|#[0-9]+ +DONE|stat::)' "$dir/fuzz.log"
execs=$(awk '/stat::number_of_executed_units/ {print $2}' "$dir/fuzz.log")
rel_log "fuzz executions: ${execs:-unknown}, corpus now $(ls "$dir/corpus" | wc -l) inputs, exit $rc"
if [ "$rc" != 0 ]; then
  tail -80 "$dir/fuzz.log"
  for f in "$dir"/artifacts/*; do
    [ -f "$f" ] || continue
    rel_log "reproducer $f (run: LD_PRELOAD=$rt_dir/libclang_rt.asan-x86_64.so $dir/fuzz_gqa $f):"
    od -An -tx1 -v "$f"
  done
  exit 1
fi
