"""The CPU kernels' software prefetches must be in the built library.

GCC 12 at -O2/-O3 deleted every loop whose body was only _mm_prefetch calls, so for a long time
libgqa had none of the prefetches its source asked for (benchmarks/NOTES.md section 20); the
kernels now issue them through volatile asm (simd_helpers.inl, prefetch_l1 / prefetch_l2). This
counts them in the disassembly of the library under test, so a compiler or a rewrite that drops
them again fails here rather than showing up, months later, as lost bandwidth.
"""
import platform
import shutil
import subprocess

import pytest

ffi_module = pytest.importorskip("gqa._ffi")

# prefetch_block and prefetch_row (prefill_lanes) and prefetch_positions (decode), compiled once
# per x86 ISA file: far more than this when they are kept, 0 when the compiler drops them.
MIN_PREFETCHES = 8


@pytest.mark.skipif(platform.machine() not in ("x86_64", "AMD64"), reason="the prefetch helpers are x86 only")
def test_library_keeps_its_prefetch_instructions():
    objdump = shutil.which("objdump")
    if objdump is None:
        pytest.skip("objdump (binutils) is not installed")
    text = subprocess.run([objdump, "-d", "--no-show-raw-insn", ffi_module.LIBRARY_PATH], check=True,
                          capture_output=True, text=True, timeout=300).stdout
    count = sum(1 for line in text.splitlines() if "prefetcht0" in line or "prefetcht1" in line)
    assert count >= MIN_PREFETCHES, f"{ffi_module.LIBRARY_PATH}: {count} prefetch instructions"
