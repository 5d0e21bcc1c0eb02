"""The CPU decode kernel's paths (src/cpu/decode_simd.inl) against the float64 reference: K/V
rows read from the cache (f32, G = 1 bf16/f16, and G > 1 bf16/f16 on AVX2 and AMD's AVX-512,
bf16 scores of G > 4 as vdpbf16ps dot products under avx512_bf16 where K is read in place) or staged
in fp32 (G > 1 bf16/f16 K on Intel's AVX-512, a head_dim that is not whole vectors),
fixed and generic widths, caches long enough to be split and merged by the last split's task,
and NaN past the visible positions. Run under every GQA_CPU_ISA by the test command."""

import numpy as np
import pytest

import gqa
from gqa_testing import DTYPES, TOL, max_err, poisoned, rand

# (Hq, Hkv, D): G = 1, 2, 4, 5, 7 and 8; head dims of 4, 5, 6, 8, 12.5 and 0.25 AVX-512 vectors.
SHAPES = [(32, 32, 96), (6, 3, 64), (32, 8, 128), (14, 2, 64), (8, 1, 80), (5, 5, 200), (4, 2, 4), (16, 16, 128),
          (10, 2, 96), (16, 2, 128)]


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("Hq,Hkv,D", SHAPES)
@pytest.mark.parametrize("B,cache_len", [(1, 1000), (3, 600), (1, 5)])
def test_long_decode_matches_reference(dtype, Hq, Hkv, D, B, cache_len):
    rng = np.random.default_rng(Hq * 1000 + D + cache_len)
    M = cache_len + 7
    q, k, v = rand(rng, (B, 1, Hq, D), dtype), rand(rng, (B, 1, Hkv, D), dtype), rand(rng, (B, 1, Hkv, D), dtype)
    kc, vc = poisoned((B, M, Hkv, D), dtype), poisoned((B, M, Hkv, D), dtype)
    kc[:, :cache_len] = rand(rng, (B, cache_len, Hkv, D), dtype)
    vc[:, :cache_len] = rand(rng, (B, cache_len, Hkv, D), dtype)
    rkc, rvc = kc.copy(), vc.copy()
    out = poisoned((B, 1, Hq, D), dtype)
    gqa.decode(q, k, v, kc, vc, cache_len, out=out)
    want = gqa.reference.decode(q, k, v, rkc, rvc, cache_len)
    assert max_err(out, want) <= TOL[dtype]  # NaN anywhere fails
    assert np.isnan(kc[:, cache_len + 1:].astype(np.float32)).all()  # only the new row was written


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("splits", [1, 2, 5, 64])
def test_forced_splits_agree(dtype, splits):
    rng = np.random.default_rng(splits)
    B, Hq, Hkv, D, L = 2, 12, 4, 96, 700
    q, k, v = rand(rng, (B, 1, Hq, D), dtype), rand(rng, (B, 1, Hkv, D), dtype), rand(rng, (B, 1, Hkv, D), dtype)
    kc, vc = rand(rng, (B, L + 1, Hkv, D), dtype), rand(rng, (B, L + 1, Hkv, D), dtype)
    want = gqa.reference.decode(q, k, v, kc.copy(), vc.copy(), L)
    out = gqa.decode(q, k, v, kc, vc, L, num_splits=splits)
    assert max_err(out, want) <= TOL[dtype]


def test_ragged_lengths_with_long_and_empty_caches():
    rng = np.random.default_rng(5)
    B, Hq, Hkv, D, M = 4, 32, 32, 96, 1500
    lens = np.array([0, 1499, 300, 1], dtype=np.int32)
    dtype = np.dtype(np.float32)
    q, k, v = rand(rng, (B, 1, Hq, D), dtype), rand(rng, (B, 1, Hkv, D), dtype), rand(rng, (B, 1, Hkv, D), dtype)
    kc, vc = poisoned((B, M, Hkv, D), dtype), poisoned((B, M, Hkv, D), dtype)
    for b, n in enumerate(lens):
        kc[b, :n] = rand(rng, (n, Hkv, D), dtype)
        vc[b, :n] = rand(rng, (n, Hkv, D), dtype)
    want = gqa.reference.decode(q, k, v, kc.copy(), vc.copy(), lens)
    out = gqa.decode(q, k, v, kc, vc, lens)
    assert max_err(out, want) <= TOL[dtype]


@pytest.mark.parametrize("threads", [1, 2, 3, 5])
def test_split_decode_bits_do_not_depend_on_threads(threads):
    rng = np.random.default_rng(9)
    dtype = np.dtype(np.float16)
    B, Hq, Hkv, D, L = 3, 14, 2, 64, 2000
    q, k, v = rand(rng, (B, 1, Hq, D), dtype), rand(rng, (B, 1, Hkv, D), dtype), rand(rng, (B, 1, Hkv, D), dtype)
    kc, vc = rand(rng, (B, L + 1, Hkv, D), dtype), rand(rng, (B, L + 1, Hkv, D), dtype)
    old = gqa.get_num_threads()
    try:
        gqa.set_num_threads(1)
        one = gqa.decode(q, k, v, kc, vc, L)
        gqa.set_num_threads(threads)
        many = gqa.decode(q, k, v, kc, vc, L)
    finally:
        gqa.set_num_threads(old)
    assert one.tobytes() == many.tobytes()
