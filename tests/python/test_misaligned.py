"""NumPy arrays at any byte address (np.frombuffer at an odd offset is legal) work on the CPU:
every tensor of the call misaligned, results equal to the float64 reference, caches exact.
(The ASan+UBSan build checks the same in C for every ISA: tests/reliability/test_misaligned.c.)"""

import numpy as np
import pytest

import gqa
from gqa_testing import DTYPES, TOL, rand


def misaligned_copy(a, offset=1):
    """a copied into a buffer at `offset` bytes past an aligned address."""
    raw = np.zeros(a.nbytes + 64, np.uint8)
    start = (-raw.ctypes.data) % 64 + offset
    view = np.frombuffer(raw.data, dtype=a.dtype, count=a.size, offset=start).reshape(a.shape)
    view[...] = a
    assert view.ctypes.data % a.dtype.itemsize != 0 or a.dtype.itemsize == 1
    return view


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_prefill_then_decode_at_odd_addresses(dtype):
    rng = np.random.default_rng(5)
    B, S, HQ, HKV, D, M = 2, 9, 6, 2, 24, 16
    q, k, v = rand(rng, (B, S, HQ, D), dtype), rand(rng, (B, S, HKV, D), dtype), rand(rng, (B, S, HKV, D), dtype)
    kc, vc = rand(rng, (B, M, HKV, D), dtype), rand(rng, (B, M, HKV, D), dtype)
    want_kc, want_vc = kc.copy(), vc.copy()
    want = gqa.reference.prefill(q, k, v, want_kc, want_vc, start_pos=3)
    mq, mk, mv, mkc, mvc = (misaligned_copy(x) for x in (q, k, v, kc, vc))
    out = misaligned_copy(np.full_like(q, np.nan))
    got = gqa.prefill(mq, mk, mv, mkc, mvc, start_pos=3, out=out)
    assert got is out and np.max(np.abs(got.astype(np.float64) - want)) < TOL[np.dtype(dtype)]
    assert mkc.tobytes() == want_kc.tobytes() and mvc.tobytes() == want_vc.tobytes()

    q1, k1, v1 = (misaligned_copy(rand(rng, (B, 1, h, D), dtype)) for h in (HQ, HKV, HKV))
    want1 = gqa.reference.decode(q1, k1, v1, want_kc, want_vc, [12, 3])
    got1 = gqa.decode(q1, k1, v1, mkc, mvc, [12, 3], out=misaligned_copy(np.full_like(q1, np.nan)))
    assert np.max(np.abs(got1.astype(np.float64) - want1)) < TOL[np.dtype(dtype)]
    assert mkc.tobytes() == want_kc.tobytes() and mvc.tobytes() == want_vc.tobytes()


def test_misaligned_sinks_are_copied_aligned():
    """sinks is a float* in gqa.h (naturally aligned): a NumPy array at an odd address is copied."""
    rng = np.random.default_rng(6)
    q, k, v = rand(rng, (1, 5, 4, 16), np.float32), rand(rng, (1, 5, 2, 16), np.float32), rand(rng, (1, 5, 2, 16), np.float32)
    sinks = rng.standard_normal(4).astype(np.float32)
    want = gqa.reference.prefill(q, k, v, sinks=sinks)
    got = gqa.prefill(q, k, v, sinks=misaligned_copy(sinks))
    assert np.max(np.abs(got - want)) < TOL[np.dtype(np.float32)]
