#!/usr/bin/env bash
# ABI guard for libgqa.so (see abi/README.md):
#   1. export allow-list: `nm -D --defined-only libgqa.so` must list exactly abi/exports.txt,
#      and abi/exports.txt must list exactly the GQA_API functions declared in include/gqa.h;
#   2. ABI baseline: `abidw` of the freshly built library (types from include/ only) compared
#      with abi/libgqa.abi by `abidiff`; any change fails (abidiff exit status is a bit mask:
#      4 = ABI change, 8 = incompatible change).
#   abi_check.sh --update   regenerates both files after a deliberate change (then commit them).
set -uo pipefail
source "$(dirname "$0")/common.sh"
rel_need cmake:cmake gcc:gcc nm:binutils abidw:abigail-tools abidiff:abigail-tools
update=0
[ "${1:-}" = "--update" ] && update=1

dir="$REL_BUILD/abi"
rel_log "build libgqa (RelWithDebInfo: abidw reads the DWARF) in $dir"
cmake -S "$ROOT" -B "$dir" -DGQA_ENABLE_CUDA=OFF -DGQA_BUILD_TESTS=OFF -DCMAKE_BUILD_TYPE=RelWithDebInfo \
  >"$dir.configure.log" 2>&1 || { cat "$dir.configure.log"; exit 1; }
cmake --build "$dir" -j"$REL_JOBS" --target gqa >"$dir.build.log" 2>&1 || { tail -60 "$dir.build.log"; exit 1; }
so="$(find "$dir" -maxdepth 2 -name 'libgqa.so.*.*' -type f | head -1)"
[ -n "$so" ] || { rel_log "libgqa.so not found under $dir"; exit 1; }

nm -D --defined-only "$so" | awk '{print $NF}' | sort -u >"$dir/exports.got"
# GQA_API declarations of the header: the name before the '(' on each GQA_API line.
sed -n 's/^GQA_API[^(]*[ *]\(gqa_[a-z0-9_]*\)(.*/\1/p' "$ROOT/include/gqa.h" | sort -u >"$dir/exports.header"
abidw --headers-dir "$ROOT/include" --drop-private-types --exported-interfaces-only --no-elf-needed \
  --no-corpus-path --no-comp-dir-path --no-show-locs --type-id-style hash \
  --out-file "$dir/libgqa.abi" "$so" || { rel_log "abidw failed"; exit 1; }

if [ "$update" = 1 ]; then
  cp "$dir/exports.got" "$ROOT/abi/exports.txt"
  cp "$dir/libgqa.abi" "$ROOT/abi/libgqa.abi"
  rel_log "updated abi/exports.txt ($(wc -l <"$ROOT/abi/exports.txt") symbols) and abi/libgqa.abi; review and commit them"
fi

rc=0
if diff -u "$ROOT/abi/exports.txt" "$dir/exports.got"; then
  rel_log "exports: OK, $(wc -l <"$dir/exports.got") symbols, all in abi/exports.txt"
else
  rel_log "exports: FAIL: the symbols libgqa.so exports (+) differ from abi/exports.txt (-)"
  rc=1
fi
if diff -u "$ROOT/abi/exports.txt" "$dir/exports.header"; then
  rel_log "header: OK, every GQA_API function of include/gqa.h is in abi/exports.txt"
else
  rel_log "header: FAIL: GQA_API functions of include/gqa.h (+) differ from abi/exports.txt (-)"
  rc=1
fi
abidiff --no-unreferenced-symbols "$ROOT/abi/libgqa.abi" "$dir/libgqa.abi" >"$dir/abidiff.txt" 2>&1
abi_rc=$?
if [ "$abi_rc" = 0 ]; then
  rel_log "abidiff: OK, the ABI equals the baseline abi/libgqa.abi"
else
  cat "$dir/abidiff.txt"
  rel_log "abidiff: FAIL (exit $abi_rc: 4 = ABI changed, 8 = incompatible). If deliberate, see abi/README.md"
  rc=1
fi
exit $rc
