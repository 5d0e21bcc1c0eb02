"""Hypothesis: random shapes, group sizes, dtypes, cache positions vs gqa.reference."""

import numpy as np
from hypothesis import given, settings, strategies as st

import gqa
from gqa_testing import DTYPES, TOL, max_err, poisoned, rand


@settings(max_examples=60, deadline=None)
@given(B=st.integers(1, 3), S=st.integers(1, 40), Hkv=st.integers(1, 3), G=st.integers(1, 5),
       D=st.sampled_from([1, 2, 7, 16, 33, 64, 80, 128]), dtype=st.sampled_from(DTYPES),
       start=st.integers(0, 20), extra=st.integers(0, 5), causal=st.booleans(), cached=st.booleans(),
       seed=st.integers(0, 2**31))
def test_prefill_and_decode_match_reference(B, S, Hkv, G, D, dtype, start, extra, causal, cached, seed):
    rng = np.random.default_rng(seed)
    Hq = Hkv * G
    if not cached:
        start = 0
    q, k, v = rand(rng, (B, S, Hq, D), dtype), rand(rng, (B, S, Hkv, D), dtype), rand(rng, (B, S, Hkv, D), dtype)
    M = start + S + extra + 1
    caches = [rand(rng, (B, M, Hkv, D), dtype) for _ in range(2)] if cached else [None, None]
    refc = [c.copy() for c in caches] if cached else [None, None]
    out = poisoned(q.shape, dtype)
    gqa.prefill(q, k, v, *caches, start_pos=start, causal=causal, out=out)
    assert max_err(out, gqa.reference.prefill(q, k, v, *refc, start_pos=start, causal=causal)) <= TOL[dtype]
    if cached:
        assert caches[0].tobytes() == refc[0].tobytes() and caches[1].tobytes() == refc[1].tobytes()
        lens = rng.integers(0, M, size=B)
        dq, dk, dv = (rand(rng, (B, 1, h, D), dtype) for h in (Hq, Hkv, Hkv))
        dout = gqa.decode(dq, dk, dv, *caches, lens)
        assert max_err(dout, gqa.reference.decode(dq, dk, dv, *refc, lens)) <= TOL[dtype]
        assert caches[0].tobytes() == refc[0].tobytes()
