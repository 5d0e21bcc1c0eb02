#!/usr/bin/env bash
# tests/gpu/emulate/emulate.sh [plain|thread|address]: checks the CUDA kernels WITHOUT a GPU.
#
# Compiles cuda/*.cu as host C++ with emu.hpp (one std::thread per CUDA thread, std::barrier for
# __syncthreads; mma.sync, ldmatrix and cp.async emulated as warp collectives), links them with
# the API layer (src/*.cpp) and emu_runtime.cpp, and runs tests/c/test_gpu_basic.c and sweep.c
# against the float64 reference.
#   plain    optimised build                          (about 6 minutes on 2 free cores)
#   thread   -fsanitize=thread: a missing barrier or shared-memory race is reported
#   address  -fsanitize=address,undefined: an out-of-bounds access is reported
# Needs g++ >= 12 and the CUDA headers (nvcc's include folder); no driver, no GPU.
# What it cannot show: GPU memory-model effects, performance, anything the real hardware does
# differently (warp scheduling, bank conflicts); the GPU run (tests/gpu/run.sh) is the real test.
set -euo pipefail
MODE=${1:-plain}
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../../.." && pwd)
HERE="$ROOT/tests/gpu/emulate"
WORK=${EMU_DIR:-/tmp/gqa-emulate-$MODE}
if [ -z "${CUDA_INC:-}" ]; then
    CUDA_INC=/usr/local/cuda/include
    [ -f "$CUDA_INC/cuda_runtime.h" ] || CUDA_INC=$(dirname "$(readlink -f "$(command -v nvcc)")")/../include
fi
case "$MODE" in
    plain) FLAGS="-O2" ;;
    thread) FLAGS="-O1 -g -fsanitize=thread" ;;
    address) FLAGS="-O1 -g -fsanitize=address,undefined -fno-sanitize-recover=undefined" ;;
    *) echo "usage: $0 [plain|thread|address]" >&2; exit 2 ;;
esac

rm -rf "$WORK"
mkdir -p "$WORK/cuda/instances" "$WORK/obj"
# Kernel launches become emu_launch(kernel, grid, block, p, smem).
for f in "$ROOT"/cuda/*.cuh "$ROOT"/cuda/*.hpp "$ROOT"/cuda/*.cu "$ROOT"/cuda/instances/*.cu; do
    sed -E 's/([A-Za-z_:<>, 0-9]+)<<<([^,]+), ([^,]+), ([^,]+), stream>>>\(p\);/emu_launch(\1, dim3(\2), dim3(\3), p, \4);/' \
        "$f" >"$WORK/cuda/${f#"$ROOT"/cuda/}"
done
if grep -q "<<<" "$WORK"/cuda/*.cu "$WORK"/cuda/*.cuh; then
    echo "emulate.sh: a kernel launch was not rewritten (expected 'kernel<<<grid, block, smem, stream>>>(p);')" >&2
    exit 1
fi

CXX=(g++ -std=c++20 -pthread $FLAGS -w -I"$HERE" -I"$WORK/cuda" -I"$ROOT/src" -I"$ROOT/include"
     -isystem "$CUDA_INC")
# Compile in parallel, one object per source; a failed compile fails the script.
pids=()
n=0
compile() {
    n=$((n + 1))
    "${CXX[@]}" "$@" -c -o "$WORK/obj/$n.o" &
    pids+=($!)
    while [ "$(jobs -rp | wc -l)" -ge "$(nproc)" ]; do sleep 0.1; done
}
for f in "$WORK"/cuda/*.cu "$WORK"/cuda/instances/*.cu; do compile -x c++ -include "$HERE/emu.hpp" "$f"; done
for f in "$ROOT"/src/*.cpp "$HERE/cpu_stub.cpp" "$HERE/emu_runtime.cpp"; do
    case "$f" in *cuda_unavailable.cpp) ;; *) compile "$f" ;; esac
done
for pid in "${pids[@]}"; do wait "$pid"; done
# The C test toolkit (tests/support/gqa_test.h) the two programs share.
gcc -std=c99 $FLAGS -I"$ROOT/include" -c "$ROOT/tests/support/gqa_test.c" -o "$WORK/gqa_test.o"
for src in "$ROOT/tests/c/test_gpu_basic.c" "$HERE/sweep.c"; do
    name=$(basename "$src" .c)
    gcc -std=c99 $FLAGS -I"$ROOT/include" -I"$ROOT/tests/support" -isystem "$CUDA_INC" -c "$src" -o "$WORK/$name.o"
    "${CXX[@]}" -o "$WORK/$name" "$WORK/$name.o" "$WORK/gqa_test.o" "$WORK"/obj/*.o -lm
done

status=0
"$WORK/test_gpu_basic" || status=1
"$WORK/sweep" >"$WORK/sweep.log" || status=1
grep -E "^FAIL|^decode kernel|cases," "$WORK/sweep.log"
echo "emulate.sh $MODE: $([ $status -eq 0 ] && echo PASS || echo FAIL)"
exit $status
