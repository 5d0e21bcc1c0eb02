"""gqa.prefill / gqa.decode against the float64 gqa.reference: grids, odd sizes, caches."""

import numpy as np
import pytest

import gqa
from gqa_testing import BF16, DTYPES, TOL, max_err, poisoned, rand

HEADS = [(14, 2, 64), (32, 32, 96), (7, 1, 64), (4, 4, 32)]


def run_prefill(rng, dtype, B, S, Hq, Hkv, D, max_seq=None, start=0, causal=True, with_cache=True):
    q, k, v = rand(rng, (B, S, Hq, D), dtype), rand(rng, (B, S, Hkv, D), dtype), rand(rng, (B, S, Hkv, D), dtype)
    out = poisoned((B, S, Hq, D), dtype)
    caches = [None, None]
    ref_caches = [None, None]
    if with_cache:
        max_seq = max_seq or start + S + 3
        caches = [rand(rng, (B, max_seq, Hkv, D), dtype) for _ in range(2)]
        ref_caches = [c.copy() for c in caches]
    gqa.prefill(q, k, v, *caches, start_pos=start, causal=causal, out=out)
    want = gqa.reference.prefill(q, k, v, *ref_caches, start_pos=start, causal=causal)
    assert not np.isnan(out.astype(np.float32)).any()
    assert max_err(out, want) <= TOL[dtype]
    if with_cache:  # exact bytes, the rest untouched
        assert caches[0].tobytes() == ref_caches[0].tobytes()
        assert caches[1].tobytes() == ref_caches[1].tobytes()
    return out


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("Hq,Hkv,D", HEADS)
@pytest.mark.parametrize("S", [1, 16, 128, 512])
def test_prefill_grid(dtype, Hq, Hkv, D, S):
    run_prefill(np.random.default_rng(S * 7 + Hq), dtype, 1, S, Hq, Hkv, D)


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_prefill_512_qwen_shape(dtype):
    run_prefill(np.random.default_rng(5), dtype, 1, 512, 14, 2, 64, max_seq=1024)


@pytest.mark.parametrize("D", [1, 3, 8, 80, 96, 128, 200, 256])
@pytest.mark.parametrize("causal", [True, False])
def test_prefill_head_dims(D, causal):
    run_prefill(np.random.default_rng(D), np.dtype(np.float16), 2, 17, 6, 2, D, causal=causal)


@pytest.mark.parametrize("S", [3, 17, 113, 239])
@pytest.mark.parametrize("with_cache", [True, False])
@pytest.mark.parametrize("causal", [True, False])
def test_prefill_odd_lengths(S, with_cache, causal):
    run_prefill(np.random.default_rng(S), np.dtype(np.float32), 2, S, 4, 2, 24, causal=causal, with_cache=with_cache)


@pytest.mark.parametrize("start", [1, 5, 100])
@pytest.mark.parametrize("causal", [True, False])
def test_prefill_start_pos(start, causal):
    run_prefill(np.random.default_rng(start), BF16, 2, 9, 8, 2, 64, start=start, causal=causal)


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_chunked_prefill_equals_whole(dtype):
    rng = np.random.default_rng(1)
    B, S, Hq, Hkv, D, M = 2, 61, 14, 2, 64, 80
    q, k, v = rand(rng, (B, S, Hq, D), dtype), rand(rng, (B, S, Hkv, D), dtype), rand(rng, (B, S, Hkv, D), dtype)
    kc1, vc1 = rand(rng, (B, M, Hkv, D), dtype), rand(rng, (B, M, Hkv, D), dtype)
    kc2, vc2 = kc1.copy(), vc1.copy()
    whole = gqa.prefill(q, k, v, kc1, vc1)
    pieces = []
    for a, b in [(0, 7), (7, 8), (8, 40), (40, 61)]:
        pieces.append(gqa.prefill(q[:, a:b].copy(), k[:, a:b].copy(), v[:, a:b].copy(), kc2, vc2, start_pos=a))
    chunked = np.concatenate(pieces, axis=1)
    assert kc1.tobytes() == kc2.tobytes() and vc1.tobytes() == vc2.tobytes()
    assert max_err(chunked, whole.astype(np.float64)) <= 2 * TOL[dtype]
    assert max_err(chunked, gqa.reference.prefill(q, k, v)) <= TOL[dtype]


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("Hq,Hkv,D", HEADS)
@pytest.mark.parametrize("cache_len", [0, 1, 100, "max-1"])
def test_decode_grid(dtype, Hq, Hkv, D, cache_len):
    rng = np.random.default_rng(Hq + D)
    B, M = 2, 128
    n = M - 1 if cache_len == "max-1" else cache_len
    q, k, v = rand(rng, (B, 1, Hq, D), dtype), rand(rng, (B, 1, Hkv, D), dtype), rand(rng, (B, 1, Hkv, D), dtype)
    kc, vc = rand(rng, (B, M, Hkv, D), dtype), rand(rng, (B, M, Hkv, D), dtype)
    rkc, rvc = kc.copy(), vc.copy()
    out = poisoned((B, 1, Hq, D), dtype)
    gqa.decode(q, k, v, kc, vc, n, out=out)
    want = gqa.reference.decode(q, k, v, rkc, rvc, n)
    assert max_err(out, want) <= TOL[dtype]
    assert kc.tobytes() == rkc.tobytes() and vc.tobytes() == rvc.tobytes()


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_decode_per_sequence_lengths(dtype):
    rng = np.random.default_rng(3)
    B, Hq, Hkv, D, M = 5, 14, 2, 64, 50
    lens = [0, 1, 17, 48, 49]
    q, k, v = rand(rng, (B, 1, Hq, D), dtype), rand(rng, (B, 1, Hkv, D), dtype), rand(rng, (B, 1, Hkv, D), dtype)
    kc, vc = rand(rng, (B, M, Hkv, D), dtype), rand(rng, (B, M, Hkv, D), dtype)
    rkc, rvc = kc.copy(), vc.copy()
    out = gqa.decode(q, k, v, kc, vc, np.array(lens))
    want = gqa.reference.decode(q, k, v, rkc, rvc, lens)
    assert max_err(out, want) <= TOL[dtype]
    assert kc.tobytes() == rkc.tobytes() and vc.tobytes() == rvc.tobytes()


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_generation_equals_whole_prefill(dtype):
    """Prefill a prompt, then decode token by token: rows equal the whole-sequence prefill."""
    rng = np.random.default_rng(11)
    B, P, N, Hq, Hkv, D, M = 2, 13, 9, 14, 2, 64, 32
    S = P + N
    q, k, v = rand(rng, (B, S, Hq, D), dtype), rand(rng, (B, S, Hkv, D), dtype), rand(rng, (B, S, Hkv, D), dtype)
    kc, vc = poisoned((B, M, Hkv, D), dtype), poisoned((B, M, Hkv, D), dtype)
    rows = [gqa.prefill(q[:, :P].copy(), k[:, :P].copy(), v[:, :P].copy(), kc, vc)]
    for t in range(P, S):
        rows.append(gqa.decode(q[:, t:t + 1].copy(), k[:, t:t + 1].copy(), v[:, t:t + 1].copy(), kc, vc, t))
    gen = np.concatenate(rows, axis=1)
    whole = gqa.reference.prefill(q, k, v)
    assert max_err(gen, whole) <= TOL[dtype]
    assert kc[:, :S].tobytes() == k.tobytes() and vc[:, :S].tobytes() == v.tobytes()
    assert np.isnan(kc[:, S:].astype(np.float32)).all()  # nothing past the tokens written


def test_fp16_large_logits_finite():
    rng = np.random.default_rng(2)
    B, S, Hq, Hkv, D = 1, 33, 4, 1, 64
    q = (rng.standard_normal((B, S, Hq, D)) * 12).astype(np.float16)  # |q.k| ~ 1e4 with scale 1
    k = (rng.standard_normal((B, S, Hkv, D)) * 12).astype(np.float16)
    v = rand(rng, (B, S, Hkv, D), np.float16)
    out = gqa.prefill(q, k, v, scale=1.0)
    assert np.isfinite(out.astype(np.float32)).all()
    assert max_err(out, gqa.reference.prefill(q, k, v, scale=1.0)) <= TOL[np.dtype(np.float16)]


def test_explicit_scale():
    rng = np.random.default_rng(4)
    q, k, v = rand(rng, (1, 9, 4, 16), np.float32), rand(rng, (1, 9, 2, 16), np.float32), rand(rng, (1, 9, 2, 16), np.float32)
    for s in (0.05, 0.7):
        assert max_err(gqa.prefill(q, k, v, scale=s), gqa.reference.prefill(q, k, v, scale=s)) <= TOL[np.dtype(np.float32)]


def test_noncontiguous_inputs_are_copied():
    rng = np.random.default_rng(6)
    big = rand(rng, (1, 9, 4, 32), np.float32)
    q = big[:, :, :, ::2]  # non-contiguous input: copied, documented
    k, v = rand(rng, (1, 9, 2, 16), np.float32), rand(rng, (1, 9, 2, 16), np.float32)
    assert not q.flags.c_contiguous
    assert max_err(gqa.prefill(q, k, v), gqa.reference.prefill(q, k, v)) <= TOL[np.dtype(np.float32)]


@pytest.mark.parametrize("threads", [1, 2, 3])
def test_threads_bitwise_deterministic(threads):
    rng = np.random.default_rng(8)
    q, k, v = rand(rng, (2, 57, 14, 64), np.float16), rand(rng, (2, 57, 2, 64), np.float16), rand(rng, (2, 57, 2, 64), np.float16)
    old = gqa.get_num_threads()
    try:
        gqa.set_num_threads(1)
        base = gqa.prefill(q, k, v)
        gqa.set_num_threads(threads)
        assert gqa.get_num_threads() == threads
        assert gqa.prefill(q, k, v).tobytes() == base.tobytes()
    finally:
        gqa.set_num_threads(old)
