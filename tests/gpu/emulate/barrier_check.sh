#!/usr/bin/env bash
# tests/gpu/emulate/barrier_check.sh [FILE...]: shows that the CPU emulation catches a missing
# barrier. For every __syncthreads() in the given kernel headers (default: the four kernels,
# cuda/{prefill,decode}{,_tc}_kernel.cuh), deletes that one barrier in a copy of cuda/, builds
# the emulation of the copy (emulate.sh, objects of unchanged files come from its cache) and runs
# the programs of EMU_RUN (default "limits test_gpu_basic sweep": limits and test_gpu_basic alone
# run the SIMT prefill over one key tile only, so they miss its end-of-tile barrier).
# Prints one line per barrier: CAUGHT when the emulation failed, MISSED when it passed. Exit
# status 1 when a barrier was MISSED. About 8 minutes for all 11 barriers on 2 cores.
set -uo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../../.." && pwd)
FILES=("$@")
[ ${#FILES[@]} -gt 0 ] || FILES=(prefill_kernel.cuh prefill_tc_kernel.cuh decode_kernel.cuh decode_tc_kernel.cuh)
TMP=$(mktemp -d /tmp/gqa-barrier-check.XXXXXX)
trap 'rm -rf "$TMP"' EXIT
missed=0
for file in "${FILES[@]}"; do
    file=$(basename "$file")
    for line in $(grep -n "__syncthreads();" "$ROOT/cuda/$file" | cut -d: -f1); do
        rm -rf "$TMP/cuda" "$TMP/work"
        cp -r "$ROOT/cuda" "$TMP/cuda"
        sed -i "${line}s/__syncthreads();/\/* deleted barrier *\//" "$TMP/cuda/$file"
        what=$(sed -n "${line}p" "$ROOT/cuda/$file" | sed -E 's/^ +//')
        if EMU_CUDA_DIR="$TMP/cuda" EMU_DIR="$TMP/work" EMU_RUN="${EMU_RUN:-limits test_gpu_basic sweep}" \
            bash "$ROOT/tests/gpu/emulate/emulate.sh" plain >"$TMP/log" 2>&1; then
            echo "MISSED $file:$line  $what"
            missed=1
        else
            why=$(grep -m1 -E "emulated kernel error|^FAIL" "$TMP/log" | cut -c1-160)
            echo "CAUGHT $file:$line  $what"
            echo "       ${why:-(see the emulation log)}"
        fi
    done
done
exit $missed
