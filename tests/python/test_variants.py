"""The attention variants of gqa.h (window, softcap, sinks, LSE, merge_states, strides, head_dim
up to 512) on the CPU, against the float64 gqa.reference: NaN-poisoned outputs and cache slots
outside the window, odd sizes, every option combined, split decode, threads."""

import numpy as np
import pytest

import gqa
from gqa_testing import BF16, DTYPES, TOL, max_err, poisoned, rand

F32, F16 = np.dtype(np.float32), np.dtype(np.float16)
LSE_TOL = 2e-3  # lse of fp32 scores from rounded inputs, against float64 on the same inputs


def _qkv(rng, B, S, Hq, Hkv, D, dtype):
    return rand(rng, (B, S, Hq, D), dtype), rand(rng, (B, S, Hkv, D), dtype), rand(rng, (B, S, Hkv, D), dtype)


def _sinks(rng, Hq):
    return (rng.standard_normal(Hq) * 2).astype(np.float32)


def _poison_outside(cache, b, lo, hi):
    """NaN in every cache position of sequence b outside [lo, hi): a kernel that reads one of
    them puts a NaN in the output."""
    cache[b, :lo] = np.nan
    cache[b, hi:] = np.nan


# ---- prefill


PREFILL_OPTIONS = [
    {},
    {"window": (0, -1)},
    {"window": (1, -1)},
    {"window": (5, -1)},
    {"window": (1000, -1)},
    {"softcap": 0.5},
    {"sinks": True},
    {"window": (7, -1), "softcap": 2.0, "sinks": True},
]


def _options(rng, Hq, options):
    out = dict(options)
    if out.pop("sinks", False):
        out["sinks"] = _sinks(rng, Hq)
    return out


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("options", PREFILL_OPTIONS, ids=str)
@pytest.mark.parametrize("B,S,start,Hq,Hkv,D", [(2, 37, 0, 8, 2, 16), (1, 113, 20, 14, 2, 64), (2, 3, 5, 7, 1, 80)])
def test_prefill_options(dtype, options, B, S, start, Hq, Hkv, D):
    rng = np.random.default_rng(S + D)
    q, k, v = _qkv(rng, B, S, Hq, Hkv, D, dtype)
    opts = _options(rng, Hq, options)
    caches, ref_caches = [None, None], [None, None]
    if start:
        caches = [rand(rng, (B, start + S + 4, Hkv, D), dtype) for _ in range(2)]
        ref_caches = [c.copy() for c in caches]
    out = poisoned((B, S, Hq, D), dtype)
    got, lse = gqa.prefill(q, k, v, *caches, start_pos=start, out=out, return_lse=True, **opts)
    want, want_lse = gqa.reference.prefill(q, k, v, *ref_caches, start_pos=start, return_lse=True, **opts)
    assert got is out and lse.shape == (B, Hq, S) and lse.dtype == np.float32
    assert max_err(out, want) <= TOL[dtype]
    assert np.abs(lse - want_lse).max() <= LSE_TOL
    if start:
        assert caches[0].tobytes() == ref_caches[0].tobytes() and caches[1].tobytes() == ref_caches[1].tobytes()


@pytest.mark.parametrize("causal", [True, False])
@pytest.mark.parametrize("window", [(0, 0), (3, 2), (-1, 4), (2, -1), (50, 50)])
def test_prefill_two_sided_windows(causal, window):
    rng = np.random.default_rng(sum(window) + causal)
    B, S, start, Hq, Hkv, D = 2, 29, 11, 6, 3, 24
    q, k, v = _qkv(rng, B, S, Hq, Hkv, D, F32)
    kc, vc = rand(rng, (B, start + S, Hkv, D), F32), rand(rng, (B, start + S, Hkv, D), F32)
    rkc, rvc = kc.copy(), vc.copy()
    got = gqa.prefill(q, k, v, kc, vc, start_pos=start, causal=causal, window=window)
    assert max_err(got, gqa.reference.prefill(q, k, v, rkc, rvc, start_pos=start, causal=causal, window=window)) <= 1e-4


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("window_left", [0, 1, 9, 130])
def test_prefill_never_reads_keys_left_of_the_window(dtype, window_left):
    """Cache positions left of every query's window are NaN: the output stays finite and right
    (also on the packed paths: fp32 FMA, AVX-512 BF16 and AMX for bf16)."""
    rng = np.random.default_rng(window_left)
    B, S, start, Hq, Hkv, D = 1, 40, 300, 8, 2, 32
    q, k, v = _qkv(rng, B, S, Hq, Hkv, D, dtype)
    kc, vc = rand(rng, (B, start + S + 5, Hkv, D), dtype), rand(rng, (B, start + S + 5, Hkv, D), dtype)
    rkc, rvc = kc.copy(), vc.copy()
    want = gqa.reference.prefill(q, k, v, rkc, rvc, start_pos=start, window=(window_left, -1))
    first_seen = start - window_left  # the first query's first key; later queries see less
    _poison_outside(kc, 0, first_seen, start)
    _poison_outside(vc, 0, first_seen, start)
    got = gqa.prefill(q, k, v, kc, vc, start_pos=start, window=(window_left, -1))
    assert np.isfinite(got.astype(np.float32)).all()
    assert max_err(got, want) <= TOL[dtype]


# ---- decode


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("options", PREFILL_OPTIONS, ids=str)
@pytest.mark.parametrize("num_splits", [0, 1, 5])
def test_decode_options(dtype, options, num_splits):
    rng = np.random.default_rng(num_splits + len(options))
    B, Hq, Hkv, D, M = 3, 8, 2, 64, 700
    lens = np.array([0, 333, 698])
    q, k, v = _qkv(rng, B, 1, Hq, Hkv, D, dtype)
    kc, vc = rand(rng, (B, M, Hkv, D), dtype), rand(rng, (B, M, Hkv, D), dtype)
    rkc, rvc = kc.copy(), vc.copy()
    opts = _options(rng, Hq, options)
    out = poisoned((B, 1, Hq, D), dtype)
    got, lse = gqa.decode(q, k, v, kc, vc, lens, out=out, num_splits=num_splits, return_lse=True, **opts)
    want, want_lse = gqa.reference.decode(q, k, v, rkc, rvc, lens, return_lse=True, **opts)
    assert lse.shape == (B, Hq)
    assert max_err(out, want) <= TOL[dtype]
    assert np.abs(lse - want_lse).max() <= LSE_TOL
    assert kc.tobytes() == rkc.tobytes() and vc.tobytes() == rvc.tobytes()


@pytest.mark.parametrize("window_left", [0, 1, 3, 100, 5000])
@pytest.mark.parametrize("num_splits", [0, 1, 4])
def test_decode_window_never_reads_outside(window_left, num_splits):
    """Windows of 0, 1, a few, and more than the cache: every position outside is NaN."""
    rng = np.random.default_rng(window_left + num_splits)
    B, Hq, Hkv, D, M = 2, 6, 2, 32, 1200
    lens = np.array([1000, 7])
    q, k, v = _qkv(rng, B, 1, Hq, Hkv, D, BF16)
    kc, vc = rand(rng, (B, M, Hkv, D), BF16), rand(rng, (B, M, Hkv, D), BF16)
    want = gqa.reference.decode(q, k, v, kc.copy(), vc.copy(), lens, window=(window_left, -1))
    for b, n in enumerate(lens):
        lo = max(0, int(n) - window_left)
        _poison_outside(kc, b, lo, int(n))  # the new token (position n) is written by the call
        _poison_outside(vc, b, lo, int(n))
        kc[b, n] = vc[b, n] = 0  # overwritten with k, v
    got = gqa.decode(q, k, v, kc, vc, lens, window=(window_left, -1), num_splits=num_splits)
    assert np.isfinite(got.astype(np.float32)).all()
    assert max_err(got, want) <= TOL[BF16]


def test_decode_sinks_added_once_across_splits():
    rng = np.random.default_rng(21)
    B, Hq, Hkv, D, n = 1, 4, 1, 16, 2000
    q, k, v = _qkv(rng, B, 1, Hq, Hkv, D, F32)
    kc, vc = rand(rng, (B, n + 1, Hkv, D), F32), rand(rng, (B, n + 1, Hkv, D), F32)
    sinks = np.full(Hq, 8.0, np.float32)  # a heavy sink: counted twice would show at once
    want, want_lse = gqa.reference.decode(q, k, v, kc.copy(), vc.copy(), n, sinks=sinks, return_lse=True)
    for splits in (1, 2, 8, 33):
        got, lse = gqa.decode(q, k, v, kc.copy(), vc.copy(), n, sinks=sinks, num_splits=splits, return_lse=True)
        assert max_err(got, want) <= 1e-4 and np.abs(lse - want_lse).max() <= 1e-4


def test_windowed_generation_equals_windowed_prefill():
    """Prefill a prompt then decode token by token under one window: rows equal the prefill."""
    rng = np.random.default_rng(4)
    B, P, N, Hq, Hkv, D, M, w = 2, 21, 15, 8, 2, 32, 40, (6, -1)
    S = P + N
    q, k, v = _qkv(rng, B, S, Hq, Hkv, D, F16)
    sinks = _sinks(rng, Hq)
    kc, vc = poisoned((B, M, Hkv, D), F16), poisoned((B, M, Hkv, D), F16)
    rows = [gqa.prefill(q[:, :P], k[:, :P], v[:, :P], kc, vc, window=w, softcap=3.0, sinks=sinks)]
    for t in range(P, S):
        rows.append(gqa.decode(q[:, t:t + 1], k[:, t:t + 1], v[:, t:t + 1], kc, vc, t, window=w, softcap=3.0,
                               sinks=sinks))
    whole = gqa.reference.prefill(q, k, v, window=w, softcap=3.0, sinks=sinks)
    assert max_err(np.concatenate(rows, axis=1), whole) <= TOL[F16]


# ---- merge_states


def _partial_decodes(rng, dtype, B, Hq, Hkv, D, cuts, **options):
    """One decode of the same queries split at `cuts` of one cache: per part, decode over that
    part alone (the part's keys moved to a cache of its own)."""
    n = cuts[-1]
    q, k, v = _qkv(rng, B, 1, Hq, Hkv, D, dtype)
    kc, vc = rand(rng, (B, n, Hkv, D), dtype), rand(rng, (B, n, Hkv, D), dtype)
    kc[:, n - 1], vc[:, n - 1] = k[:, 0], v[:, 0]  # the new token is the last position
    states, lses = [], []
    for a, b in zip(cuts[:-1], cuts[1:]):
        keys, values = kc[:, a:b].copy(), vc[:, a:b].copy()
        # Non-causal prefill of the one query over the part's keys: its own cache of b - a slots.
        o, lse = gqa.prefill(q, keys[:, -1:].copy(), values[:, -1:].copy(), keys, values, start_pos=b - a - 1, causal=False,
                             return_lse=True, **options)
        states.append(o)
        lses.append(lse[..., 0])
    whole = gqa.reference.attention(q, kc, vc, n - 1, **options)
    return np.stack(states), np.stack(lses), whole, q


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("cuts", [[0, 50], [0, 17, 50], [0, 1, 2, 30, 50]])
def test_merge_of_split_decodes_is_the_whole(dtype, cuts):
    rng = np.random.default_rng(len(cuts))
    B, Hq, Hkv, D = 2, 8, 2, 64
    sinks = _sinks(rng, Hq)
    states, lses, (whole, whole_lse), _ = _partial_decodes(rng, dtype, B, Hq, Hkv, D, cuts, softcap=5.0)
    merged, lse = gqa.merge_states(states, lses, return_lse=True)
    assert merged.shape == (B, 1, Hq, D) and lse.shape == (B, Hq)
    assert max_err(merged, whole) <= 2 * TOL[dtype]
    assert np.abs(lse - whole_lse[..., 0]).max() <= LSE_TOL
    # Sinks added once in the merge equal the reference merge of the same partials with sinks.
    want = gqa.reference.merge_states(states, lses, sinks=sinks)
    assert max_err(gqa.merge_states(states, lses, sinks=sinks), want) <= TOL[dtype]


def test_merge_empty_partials_weigh_zero_and_are_not_read():
    rng = np.random.default_rng(3)
    N, B, S, H, D = 4, 2, 3, 5, 8
    states = rand(rng, (N, B, S, H, D), F32)
    lses = rand(rng, (N, B, H, S), F32)
    states[2] = np.nan
    lses[2] = -np.inf
    out, lse = gqa.merge_states(states, lses, return_lse=True)
    want, want_lse = gqa.reference.merge_states(states[[0, 1, 3]], lses[[0, 1, 3]], return_lse=True)
    assert max_err(out, want) <= 1e-5 and np.abs(lse - want_lse).max() <= 1e-5
    lses[:] = -np.inf  # nothing seen at all: out 0, lse -inf; with sinks lse = the sink
    out, lse = gqa.merge_states(states, lses, return_lse=True)
    assert (out == 0).all() and np.isneginf(lse).all()
    sinks = _sinks(rng, H)
    out, lse = gqa.merge_states(states, lses, sinks=sinks, return_lse=True)
    assert (out == 0).all() and np.array_equal(lse, np.broadcast_to(sinks[None, :, None], lse.shape))


@pytest.mark.parametrize("threads", [1, 2, 3])
def test_merge_bitwise_deterministic_across_threads(threads):
    rng = np.random.default_rng(9)
    states, lses = rand(rng, (6, 3, 40, 8, 64), F16), rand(rng, (6, 3, 8, 40), F32)
    old = gqa.get_num_threads()
    try:
        gqa.set_num_threads(1)
        base = gqa.merge_states(states, lses)
        gqa.set_num_threads(threads)
        assert gqa.merge_states(states, lses).tobytes() == base.tobytes()
    finally:
        gqa.set_num_threads(old)


def test_merge_rejects_bad_arguments():
    states, lses = np.zeros((2, 1, 3, 4, 8), np.float32), np.zeros((2, 1, 4, 3), np.float32)
    with pytest.raises(gqa.InvalidArgumentError, match="lses"):
        gqa.merge_states(states, lses[:1])
    with pytest.raises(gqa.InvalidArgumentError, match="float32"):
        gqa.merge_states(states, lses.astype(np.float16))
    out = poisoned((1, 3, 4, 8), np.float32)
    with pytest.raises(gqa.InvalidArgumentError, match="sinks"):
        gqa.merge_states(states, lses, sinks=np.array([0, np.nan, 0, 0], np.float32), out=out)
    assert np.isnan(out).all()  # rejected: nothing written


# ---- everything at once, odd sizes, head_dim up to 512, threads


@pytest.mark.parametrize("D", [1, 3, 257, 300, 511, 512])
@pytest.mark.parametrize("dtype", [F32, BF16], ids=str)
def test_head_dims_up_to_512(D, dtype):
    rng = np.random.default_rng(D)
    B, S, start, Hq, Hkv = 1, 19, 6, 4, 2
    q, k, v = _qkv(rng, B, S, Hq, Hkv, D, dtype)
    kc, vc = rand(rng, (B, start + S + 1, Hkv, D), dtype), rand(rng, (B, start + S + 1, Hkv, D), dtype)
    rkc, rvc = kc.copy(), vc.copy()
    sinks = _sinks(rng, Hq)
    got = gqa.prefill(q, k, v, kc, vc, start_pos=start, window=(4, -1), sinks=sinks)
    assert max_err(got, gqa.reference.prefill(q, k, v, rkc, rvc, start_pos=start, window=(4, -1), sinks=sinks)) \
        <= TOL[dtype]
    dq, dk, dv = _qkv(rng, B, 1, Hq, Hkv, D, dtype)
    got = gqa.decode(dq, dk, dv, kc, vc, start + S, softcap=1.5)
    assert max_err(got, gqa.reference.decode(dq, dk, dv, rkc, rvc, start + S, softcap=1.5)) <= TOL[dtype]


def test_head_dim_past_512_is_unsupported():
    q = np.zeros((1, 1, 1, 513), np.float32)
    with pytest.raises(gqa.UnsupportedError, match="head_dim"):
        gqa.prefill(q, q, q)


@pytest.mark.parametrize("threads", [1, 2, 3])
def test_options_bitwise_deterministic_across_threads(threads):
    rng = np.random.default_rng(12)
    q, k, v = _qkv(rng, 2, 57, 14, 2, 64, F16)
    opts = dict(window=(9, -1), softcap=4.0, sinks=_sinks(rng, 14), return_lse=True)
    old = gqa.get_num_threads()
    try:
        gqa.set_num_threads(1)
        base, base_lse = gqa.prefill(q, k, v, **opts)
        gqa.set_num_threads(threads)
        got, lse = gqa.prefill(q, k, v, **opts)
        assert got.tobytes() == base.tobytes() and lse.tobytes() == base_lse.tobytes()
    finally:
        gqa.set_num_threads(old)


def test_variant_arguments_are_validated():
    q = np.zeros((1, 2, 2, 8), np.float32)
    out = poisoned((1, 2, 2, 8), np.float32)
    for kwargs, word in [({"window": (-2, -1)}, "window_left"), ({"window": (0, -7)}, "window_right"),
                         ({"softcap": -1.0}, "softcap"), ({"softcap": float("nan")}, "softcap"),
                         ({"sinks": np.array([0, np.inf], np.float32)}, "sinks"),
                         ({"sinks": np.zeros(3, np.float32)}, "sinks"), ({"window": 4}, "window")]:
        with pytest.raises(gqa.InvalidArgumentError, match=word):
            gqa.prefill(q, q, q, out=out, **kwargs)
        assert np.isnan(out).all()


# ---- strides: views go in with no copy


def _fused_qkv(rng, B, S, Hq, Hkv, D, dtype):
    """Three views of one fused projection [B, S, (Hq + 2 Hkv) * D], as an engine has them."""
    fused = rand(rng, (B, S, Hq + 2 * Hkv, D), dtype)
    return fused, fused[:, :, :Hq], fused[:, :, Hq:Hq + Hkv], fused[:, :, Hq + Hkv:]


@pytest.mark.parametrize("with_cache", [False, True])
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_prefill_fused_qkv_views(with_cache, dtype):
    rng = np.random.default_rng(7)
    B, S, Hq, Hkv, D = 2, 33, 8, 2, 64
    fused, q, k, v = _fused_qkv(rng, B, S, Hq, Hkv, D, dtype)
    assert not q.flags.c_contiguous
    before = fused.copy()
    caches = [rand(rng, (B, S + 3, Hkv, D), dtype) for _ in range(2)] if with_cache else [None, None]
    ref_caches = [c.copy() if c is not None else None for c in caches]
    got = gqa.prefill(q, k, v, *caches, window=(6, -1))
    want = gqa.reference.prefill(q.copy(), k.copy(), v.copy(), *ref_caches, window=(6, -1))
    assert max_err(got, want) <= TOL[dtype]
    assert fused.tobytes() == before.tobytes()
    if with_cache:
        assert caches[0].tobytes() == ref_caches[0].tobytes() and caches[1].tobytes() == ref_caches[1].tobytes()


def test_prefill_bhsd_views_and_strided_out():
    """q, k, v transposed from [B, H, S, D] storage; out written into every other head slot of a
    NaN-poisoned buffer, whose other slots stay NaN (nothing written outside the view)."""
    rng = np.random.default_rng(8)
    B, S, Hq, Hkv, D = 2, 21, 6, 3, 32
    qs, ks, vs = rand(rng, (B, Hq, S, D), F32), rand(rng, (B, Hkv, S, D), F32), rand(rng, (B, Hkv, S, D), F32)
    q, k, v = (x.transpose(0, 2, 1, 3) for x in (qs, ks, vs))
    big = poisoned((B, S, 2 * Hq, D), F32)
    out = big[:, :, ::2]
    gqa.prefill(q, k, v, out=out, softcap=3.0, return_lse=False)
    assert max_err(out, gqa.reference.prefill(q, k, v, softcap=3.0)) <= 1e-4
    assert np.isnan(big[:, :, 1::2]).all()


def test_decode_strided_q_and_out():
    rng = np.random.default_rng(10)
    B, Hq, Hkv, D, n = 3, 8, 2, 64, 50
    fused, q, k, v = _fused_qkv(rng, B, 1, Hq, Hkv, D, BF16)
    kc, vc = rand(rng, (B, n + 1, Hkv, D), BF16), rand(rng, (B, n + 1, Hkv, D), BF16)
    rkc, rvc = kc.copy(), vc.copy()
    big = poisoned((B, 1, Hq, 2 * D), BF16)
    out = big[..., :D]
    gqa.decode(q, k, v, kc, vc, n, out=out, window=(20, -1))
    want = gqa.reference.decode(q.copy(), k.copy(), v.copy(), rkc, rvc, n, window=(20, -1))
    assert max_err(out, want) <= TOL[BF16]
    assert np.isnan(big[..., D:].astype(np.float32)).all()
    assert kc.tobytes() == rkc.tobytes() and vc.tobytes() == rvc.tobytes()


def test_a_broadcast_input_is_read_as_its_copy():
    """A stride-0 axis of extent > 1 (np.broadcast_to: one KV head for all) is no stride libgqa
    can take (its 0 means "contiguous"): the input is copied, and the result is the copy's."""
    rng = np.random.default_rng(12)
    q, v = rand(rng, (1, 5, 4, 16), F32), rand(rng, (1, 5, 2, 16), F32)
    k = np.broadcast_to(rand(rng, (1, 5, 1, 16), F32), (1, 5, 2, 16))
    assert k.strides[2] == 0
    got, want = gqa.prefill(q, k, v, window=(2, -1)), gqa.prefill(q, np.ascontiguousarray(k), v, window=(2, -1))
    assert got.tobytes() == want.tobytes()


def test_strided_out_overlapping_an_input_is_rejected():
    rng = np.random.default_rng(11)
    fused, q, k, v = _fused_qkv(rng, 1, 5, 4, 2, 16, F32)
    before = fused.copy()
    with pytest.raises(gqa.InvalidArgumentError, match="out overlaps"):
        gqa.prefill(q, k, v, out=fused[:, :, 4:8])  # out = k and v's slots: shared elements
    assert fused.tobytes() == before.tobytes()


@pytest.mark.parametrize("softcap", [30.0, 3000.0, 30000.0, 1e6])
def test_softcap_large_caps_keep_fp32_accuracy(softcap):
    """A cap far above the logits leaves them almost unchanged: c * tanh(s / c) must not lose
    fp32 accuracy to cancellation in tanh near 0 (the SIMD paths' 1 - 2 / (e^2x + 1) alone gave
    an output error of 1e-3 at c = 30000, above the f32 tolerance). Prefill and decode."""
    rng = np.random.default_rng(int(softcap) % 1000)
    B, S, L, Hq, Hkv, D = 2, 113, 200, 8, 2, 64
    q, k, v = _qkv(rng, B, S, Hq, Hkv, D, F32)
    out = poisoned((B, S, Hq, D), F32)
    gqa.prefill(q, k, v, out=out, softcap=softcap)
    assert max_err(out, gqa.reference.prefill(q, k, v, softcap=softcap)) <= TOL[F32]
    kc, vc = rand(rng, (B, L + 1, Hkv, D), F32), rand(rng, (B, L + 1, Hkv, D), F32)
    rkc, rvc = kc.copy(), vc.copy()
    dq, dk, dv = _qkv(rng, B, 1, Hq, Hkv, D, F32)
    got = gqa.decode(dq, dk, dv, kc, vc, L, softcap=softcap)
    assert max_err(got, gqa.reference.decode(dq, dk, dv, rkc, rvc, L, softcap=softcap)) <= TOL[F32]
