"""f32 prefill reads K in place when a sequence has few query rows per KV head
(src/cpu/attention.cpp kKeysInPlaceMaxRows = 1024 rows: positions x group) and packs it
otherwise. Both ways hold the float64 reference and give the same bits: under causal masking
the first S rows of a call with S + 1 positions (packed, just past the limit) equal a call with
S positions (in place, at the limit). Run under every GQA_CPU_ISA by the test command."""

import numpy as np
import pytest

import gqa
from gqa_testing import TOL, max_err, poisoned, rand

F32 = np.dtype(np.float32)
LIMIT_ROWS = 1024  # kKeysInPlaceMaxRows


@pytest.mark.parametrize("hq, hkv, d", [(8, 1, 64), (4, 4, 96), (8, 2, 128)])
@pytest.mark.parametrize("cached", [False, True], ids=["plain", "cache"])
def test_keys_in_place_and_packed_agree(hq, hkv, d, cached):
    group = hq // hkv
    s = LIMIT_ROWS // group  # at the limit: in place; s + 1 positions: packed
    start, m = (37, 37 + s + 1) if cached else (0, 0)
    rng = np.random.default_rng(s + d)
    q, k, v = (rand(rng, (2, s + 1, h, d), F32) for h in (hq, hkv, hkv))
    kc = vc = None
    if cached:
        kc, vc = poisoned((2, m, hkv, d), F32), poisoned((2, m, hkv, d), F32)
        kc[:, :start], vc[:, :start] = rand(rng, (2, start, hkv, d), F32), rand(rng, (2, start, hkv, d), F32)

    def run(n):
        caches = (kc.copy(), vc.copy()) if cached else (None, None)
        out = gqa.prefill(q[:, :n], k[:, :n], v[:, :n], *caches, start_pos=start)
        want = gqa.reference.prefill(q[:, :n], k[:, :n], v[:, :n], *caches, start_pos=start)
        assert max_err(out, want) <= TOL[F32]  # NaN anywhere fails
        return out

    in_place, packed = run(s), run(s + 1)
    assert in_place.tobytes() == np.ascontiguousarray(packed[:, :s]).tobytes()
