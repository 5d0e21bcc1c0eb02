"""Prefill whose packed K/V spans several slabs (src/cpu/attention.cpp run_prefill: about
kPackSlabBytesPerThread = 1.5 MiB of packed blocks per thread at a time, so the slab boundaries
move with the thread count and fall between the heads of one sequence and between sequences):
the float64 reference holds, and the output bits do not depend on the thread count. Run under
every GQA_CPU_ISA by the test command."""

import numpy as np
import pytest

import gqa
from gqa_testing import BF16, TOL, max_err, poisoned, rand

# B 2, S 600, 8:8 heads, d96: 16 (sequence, KV head) pairs of 5 key blocks; packed fp32 about
# 7.5 MiB (6 slabs at 1 thread, 2 at 3 threads), bf16 half that.
B, S, H, D = 2, 600, 8, 96
START, M = 70, 700  # the call with caches: START cached positions, S new ones


@pytest.mark.parametrize("dtype", [np.dtype(np.float32), BF16], ids=str)
def test_multi_slab_prefill_matches_reference_and_threads(dtype):
    rng = np.random.default_rng(600)
    q, k, v = rand(rng, (B, S, H, D), dtype), rand(rng, (B, S, H, D), dtype), rand(rng, (B, S, H, D), dtype)
    kc, vc = poisoned((B, M, H, D), dtype), poisoned((B, M, H, D), dtype)
    kc[:, :START] = rand(rng, (B, START, H, D), dtype)
    vc[:, :START] = rand(rng, (B, START, H, D), dtype)
    want_plain = gqa.reference.prefill(q, k, v)
    want_cached = gqa.reference.prefill(q, k, v, kc.copy(), vc.copy(), start_pos=START)
    old = gqa.get_num_threads()
    try:
        outs = []
        for threads in (1, 2, 3):
            gqa.set_num_threads(threads)
            plain = gqa.prefill(q, k, v)
            kt, vt = kc.copy(), vc.copy()
            cached = gqa.prefill(q, k, v, kt, vt, start_pos=START)
            assert max_err(plain, want_plain) <= TOL[dtype]  # NaN anywhere fails
            assert max_err(cached, want_cached) <= TOL[dtype]
            outs.append((plain.tobytes(), cached.tobytes()))
        assert outs[1] == outs[0] and outs[2] == outs[0]
    finally:
        gqa.set_num_threads(old)
