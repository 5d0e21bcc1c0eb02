#!/usr/bin/env bash
# tests/gpu/emulate/emulate.sh [plain|thread|address]: checks the CUDA kernels WITHOUT a GPU.
#
# Compiles cuda/*.cu as host C++ with emu.hpp force-included (each CUDA thread a fiber that runs
# until its next barrier, emu_fibers.cpp; a std::thread per CUDA thread in the thread and address
# modes; mma.sync, ldmatrix and cp.async emulated as warp collectives;
# cuda/launch.cu's one launch call runs the kernel there), links them with the API layer
# (src/*.cpp) and emu_runtime.cpp (emulated devices), and runs emu_selftest.cpp (the emulator's
# own checks), tests/c/test_gpu_basic.c, limits.c (devices with less shared memory or fewer SMs,
# host work per call), sweep.c (prefill and decode over many shapes against the float64
# reference) and batch_sweep.c (the batched op: ragged batches, paged caches, bad metadata).
#   plain    optimised build, fibers                  (about 5 minutes on 2 cores, compiling included)
#   thread   -fsanitize=thread: a missing barrier or shared-memory race is reported
#   address  -fsanitize=address,undefined: an out-of-bounds access is reported
# Environment (for scripted checks such as barrier_check.sh):
#   EMU_CUDA_DIR  the kernel sources to compile (default: cuda/ of this checkout)
#   EMU_RUN       the programs to run (default "emu_selftest test_gpu_basic limits sweep batch_sweep
#                 python_batch"; python_batch, plain mode only: test_python_batch.py through the
#                 Python package on libgqa_emu.so, skipped when EMU_PYTHON (default .venv/bin/python,
#                 else python3) lacks numpy, cffi, pytest, hypothesis or ml_dtypes)
#   EMU_CACHE     object cache, keyed by the preprocessed source (default /tmp/gqa-emulate-cache-MODE)
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
    plain) FLAGS="-O2 -fPIC" ;;  # -fPIC: the objects also make libgqa_emu.so (python_batch)
    thread) FLAGS="-O1 -g -fsanitize=thread" ;;
    address) FLAGS="-O1 -g -fsanitize=address,undefined -fno-sanitize-recover=undefined" ;;
    *) echo "usage: $0 [plain|thread|address]" >&2; exit 2 ;;
esac

CUDA_SRC=${EMU_CUDA_DIR:-$ROOT/cuda}
RUN=${EMU_RUN:-emu_selftest test_gpu_basic limits sweep batch_sweep python_batch}
CACHE=${EMU_CACHE:-/tmp/gqa-emulate-cache-$MODE}
rm -rf "$WORK"
mkdir -p "$WORK/obj" "$CACHE"

CXX=(g++ -std=c++20 -pthread $FLAGS -w -I"$HERE" -I"$CUDA_SRC" -I"$ROOT/src" -I"$ROOT/include"
     -isystem "$CUDA_INC")
# Compile in parallel, one object per source, reusing the cached object of an identical
# preprocessed source; a failed compile fails the script.
n=0
compile() {
    n=$((n + 1))
    local obj="$WORK/obj/$n.o"
    (
        key=$({ echo "$FLAGS"; "${CXX[@]}" -E -P "$@"; } | sha1sum | cut -c1-40)
        if [ ! -f "$CACHE/$key.o" ]; then
            "${CXX[@]}" "$@" -c -o "$obj" && cp "$obj" "$CACHE/$key.o.$BASHPID" &&
                mv "$CACHE/$key.o.$BASHPID" "$CACHE/$key.o"
        else
            cp "$CACHE/$key.o" "$obj"
        fi
    ) || touch "$WORK/compile-failed" &
    while [ "$(jobs -rp | wc -l)" -ge "$(nproc)" ]; do sleep 0.1; done
}
for f in "$CUDA_SRC"/*.cu "$CUDA_SRC"/instances/*.cu; do compile -x c++ -include "$HERE/emu.hpp" "$f"; done
for f in "$ROOT"/src/*.cpp "$HERE/cpu_stub.cpp" "$HERE/emu_runtime.cpp" "$HERE/emu_fibers.cpp"; do
    case "$f" in *cuda_unavailable.cpp) ;; *) compile "$f" ;; esac
done
wait
if [ -e "$WORK/compile-failed" ]; then echo "emulate.sh: a compile failed" >&2; exit 1; fi
# The C test toolkit (tests/support/gqa_test.h) the C programs share.
gcc -std=c99 $FLAGS -I"$ROOT/include" -c "$ROOT/tests/support/gqa_test.c" -o "$WORK/gqa_test.o"
for name in $RUN; do
    if [ "$name" = python_batch ]; then  # the whole emulated library, for the Python package
        [ "$MODE" = plain ] && "${CXX[@]}" -shared -o "$WORK/libgqa_emu.so" "$WORK"/obj/*.o
        continue
    elif [ -f "$HERE/$name.cpp" ]; then  # the emulator's own tests: C++ with emu.hpp
        "${CXX[@]}" -include "$HERE/emu.hpp" -c "$HERE/$name.cpp" -o "$WORK/$name.o"
    else
        src="$HERE/$name.c"
        [ -f "$src" ] || src="$ROOT/tests/c/$name.c"
        gcc -std=c99 $FLAGS -I"$ROOT/include" -I"$ROOT/tests/support" -I"$HERE" -isystem "$CUDA_INC" -c "$src" -o "$WORK/$name.o"
    fi
    "${CXX[@]}" -o "$WORK/$name" "$WORK/$name.o" "$WORK/gqa_test.o" "$WORK"/obj/*.o -lm
done

status=0
# The long programs start at once and run beside the others (each fiber-run program keeps one
# core busy); their logs go to files, read in order below.
long_running() { [ "$1" = sweep ] || [ "$1" = batch_sweep ]; }
declare -A started
for name in $RUN; do
    if long_running "$name"; then
        "$WORK/$name" >"$WORK/$name.log" 2>&1 &
        started[$name]=$!
    fi
done
for name in $RUN; do
    if [ "$name" = python_batch ]; then
        PY=${EMU_PYTHON:-$ROOT/.venv/bin/python}
        [ -x "$PY" ] || PY=python3
        if [ "$MODE" != plain ]; then
            echo "python_batch: skipped (plain mode only)"
        elif ! "$PY" -c "import numpy, cffi, pytest, hypothesis, ml_dtypes" 2>/dev/null; then
            echo "python_batch: skipped ($PY lacks numpy, cffi, pytest, hypothesis or ml_dtypes)"
        else
            echo "python_batch:"
            GQA_LIBRARY="$WORK/libgqa_emu.so" PYTHONPATH="$ROOT/python:$ROOT/tests/python" \
                "$PY" -m pytest -q -p no:cacheprovider "$HERE/test_python_batch.py" || status=1
        fi
    elif long_running "$name"; then  # the log to a file, failures to the terminal
        wait "${started[$name]}" || status=1
        echo "$name:"
        grep -E "^FAIL|^decode kernel|cases,|emulated kernel error" "$WORK/$name.log"
    else
        "$WORK/$name" || status=1
    fi
done
echo "emulate.sh $MODE: $([ $status -eq 0 ] && echo PASS || echo FAIL)"
exit $status
