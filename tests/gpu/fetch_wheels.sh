#!/usr/bin/env bash
# tests/gpu/fetch_wheels.sh: run HERE (not on the device) before a device call. The device image
# has every Python package the GPU suite needs except cffi and pycparser, and reaches no package
# index; this downloads both as CPython 3.12 x86-64 wheels into ./.whl (git-ignored), which the
# device call carries (`carry: [".whl"]`) and tests/gpu/run.sh installs from.
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
cd "$ROOT"
if ls .whl/cffi-*.whl .whl/pycparser-*.whl >/dev/null 2>&1; then
    echo "fetch_wheels: .whl already holds $(ls .whl | tr '\n' ' ')"
    exit 0
fi
mkdir -p .whl
python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 \
    --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 --platform manylinux1_x86_64 \
    -d .whl cffi pycparser
echo "fetch_wheels: $(ls .whl | tr '\n' ' ')"
