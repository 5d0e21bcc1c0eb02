"""gqa.reference's options (window, softcap, sinks, LSE, merge_states) against independent peers:
onnxruntime's GroupQueryAttention and torch SDPA with the equivalent explicit mask; and against
itself (merging partials over disjoint key sets gives the whole). The reference is the oracle of
every libgqa test, so its options are checked here before they check anything else."""

import numpy as np
import pytest

from gqa import reference
from gqa_testing import rand

# onnxruntime and torch compute in float32; the reference in float64 (O(1) data).
PEER_TOL = 2e-5
LSE_TOL = 2e-5

OPTIONS = {
    "plain": {},
    "window0": {"window": (0, -1)},
    "window1": {"window": (1, -1)},
    "window5": {"window": (5, -1)},
    "window_past_all": {"window": (10_000, -1)},
    "softcap": {"softcap": 0.7},
    "sinks": {"sinks": "random"},
    "smooth_softmax": {"sinks": "zeros"},
    "combined": {"window": (4, -1), "softcap": 1.5, "sinks": "random"},
}


def _sinks(spec, Hq, rng):
    if spec == "random":
        return rng.standard_normal(Hq) * 2
    if spec == "zeros":
        return np.zeros(Hq)
    return None


def _ort_args(options, sinks):
    return dict(window_left=options.get("window", (-1, -1))[0], softcap=options.get("softcap", 0.0),
                sinks=None if options.get("sinks") == "zeros" else sinks,
                smooth_softmax=options.get("sinks") == "zeros")


def _ref_args(options, sinks):
    return dict(window=options.get("window", (-1, -1)), softcap=options.get("softcap", 0.0), sinks=sinks)


def _qkv(rng, B, S, Hq, Hkv, D):
    return rand(rng, (B, S, Hq, D), np.float32), rand(rng, (B, S, Hkv, D), np.float32), rand(rng, (B, S, Hkv, D), np.float32)


# onnxruntime takes head sizes that are multiples of 8 only (odd head_dim: the torch cases).
SHAPES = [(2, 37, 8, 2, 16), (1, 113, 7, 1, 80), (3, 1, 4, 4, 8), (1, 64, 6, 3, 24)]


@pytest.mark.parametrize("name", OPTIONS)
@pytest.mark.parametrize("B,S,Hq,Hkv,D", SHAPES)
def test_prefill_matches_onnxruntime(name, B, S, Hq, Hkv, D):
    pytest.importorskip("onnx")
    pytest.importorskip("onnxruntime")
    from peer_oracles import ort_group_query_attention

    rng = np.random.default_rng(S * 31 + D)
    q, k, v = _qkv(rng, B, S, Hq, Hkv, D)
    sinks = _sinks(OPTIONS[name].get("sinks"), Hq, rng)
    want = ort_group_query_attention(q, k, v, **_ort_args(OPTIONS[name], sinks))
    got = reference.prefill(q, k, v, **_ref_args(OPTIONS[name], sinks))
    assert np.abs(got - want).max() <= PEER_TOL


@pytest.mark.parametrize("name", OPTIONS)
@pytest.mark.parametrize("past", [0, 1, 50, 239])
def test_decode_matches_onnxruntime(name, past):
    pytest.importorskip("onnx")
    pytest.importorskip("onnxruntime")
    from peer_oracles import ort_group_query_attention

    rng = np.random.default_rng(past + 7)
    B, Hq, Hkv, D, M = 2, 8, 2, 24, past + 3
    q, k, v = _qkv(rng, B, 1, Hq, Hkv, D)
    k_cache, v_cache = rand(rng, (B, M, Hkv, D), np.float32), rand(rng, (B, M, Hkv, D), np.float32)
    sinks = _sinks(OPTIONS[name].get("sinks"), Hq, rng)
    want = ort_group_query_attention(q, k, v, k_cache[:, :past], v_cache[:, :past], **_ort_args(OPTIONS[name], sinks))
    got = reference.decode(q, k, v, k_cache, v_cache, past, **_ref_args(OPTIONS[name], sinks))
    assert np.abs(got - want).max() <= PEER_TOL


@pytest.mark.parametrize("name", ["plain", "window0", "window5", "combined"])
def test_chunked_prefill_matches_onnxruntime(name):
    """S > 1 new tokens after a cached prefix (onnxruntime takes batch 1 there)."""
    pytest.importorskip("onnx")
    pytest.importorskip("onnxruntime")
    from peer_oracles import ort_group_query_attention

    rng = np.random.default_rng(3)
    B, S, P, Hq, Hkv, D = 1, 17, 40, 6, 2, 32
    q, k, v = _qkv(rng, B, S, Hq, Hkv, D)
    k_cache, v_cache = rand(rng, (B, P + S, Hkv, D), np.float32), rand(rng, (B, P + S, Hkv, D), np.float32)
    sinks = _sinks(OPTIONS[name].get("sinks"), Hq, rng)
    want = ort_group_query_attention(q, k, v, k_cache[:, :P], v_cache[:, :P], **_ort_args(OPTIONS[name], sinks))
    got = reference.prefill(q, k, v, k_cache, v_cache, start_pos=P, **_ref_args(OPTIONS[name], sinks))
    assert np.abs(got - want).max() <= PEER_TOL


# torch: every window shape (right windows and non-causal too, which onnxruntime lacks),
# start positions, head_dim 512, and the LSE.
TORCH_CASES = [
    # (B, S, start, Hq, Hkv, D, causal, window, softcap, with sinks)
    (2, 29, 0, 8, 2, 16, True, (3, -1), 0.0, False),
    (1, 31, 0, 4, 1, 8, False, (2, 5), 0.0, True),
    (1, 31, 0, 4, 1, 8, False, (-1, 0), 0.0, False),
    (2, 9, 30, 6, 3, 64, True, (7, -1), 0.0, True),
    (1, 12, 20, 4, 2, 32, False, (4, 2), 0.0, False),
    (1, 5, 3, 4, 2, 512, True, (2, -1), 0.0, True),
    (1, 3, 0, 2, 1, 1, False, (0, 0), 0.0, False),
]


def _prefill_case(rng, B, S, start, Hq, Hkv, D, with_sinks):
    q, k, v = _qkv(rng, B, S, Hq, Hkv, D)
    caches = [None, None]
    keys, values = k, v
    if start:
        caches = [rand(rng, (B, start + S + 2, Hkv, D), np.float32) for _ in range(2)]
        keys = np.concatenate([caches[0][:, :start], k], 1)
        values = np.concatenate([caches[1][:, :start], v], 1)
    sinks = rng.standard_normal(Hq) if with_sinks else None
    return q, k, v, caches, keys, values, sinks


@pytest.mark.parametrize("case", TORCH_CASES)
def test_prefill_matches_torch_sdpa_with_mask(case):
    pytest.importorskip("torch")
    from peer_oracles import torch_sdpa_masked

    B, S, start, Hq, Hkv, D, causal, window, softcap, with_sinks = case
    rng = np.random.default_rng(S + D)
    q, k, v, caches, keys, values, sinks = _prefill_case(rng, B, S, start, Hq, Hkv, D, with_sinks)
    visible = reference._visible(start + np.arange(S), start + S, causal, window)
    want = torch_sdpa_masked(q, keys, values, visible, sinks=sinks)
    got = reference.prefill(q, k, v, *caches, start_pos=start, causal=causal, window=window, sinks=sinks)
    assert np.abs(got - want).max() <= 1e-10  # both float64


@pytest.mark.parametrize("case", TORCH_CASES)
def test_lse_matches_torch_flash(case):
    pytest.importorskip("torch")
    from peer_oracles import torch_sdpa_masked

    B, S, start, Hq, Hkv, D, causal, window, softcap, with_sinks = case
    rng = np.random.default_rng(S * 3 + D)
    q, k, v, caches, keys, values, sinks = _prefill_case(rng, B, S, start, Hq, Hkv, D, with_sinks)
    visible = reference._visible(start + np.arange(S), start + S, causal, window)
    want_out, want_lse = torch_sdpa_masked(q, keys, values, visible, sinks=sinks, return_lse=True)
    got_out, got_lse = reference.prefill(q, k, v, *caches, start_pos=start, causal=causal, window=window, sinks=sinks,
                                         return_lse=True)
    assert got_lse.shape == (B, Hq, S)
    assert np.abs(got_lse - want_lse).max() <= LSE_TOL
    assert np.abs(got_out - want_out).max() <= PEER_TOL


def test_decode_lse_matches_torch_flash():
    pytest.importorskip("torch")
    from peer_oracles import torch_sdpa_masked

    rng = np.random.default_rng(12)
    B, Hq, Hkv, D, n, window = 2, 8, 2, 64, 100, (33, -1)
    q, k, v = _qkv(rng, B, 1, Hq, Hkv, D)
    k_cache, v_cache = rand(rng, (B, n + 1, Hkv, D), np.float32), rand(rng, (B, n + 1, Hkv, D), np.float32)
    sinks = rng.standard_normal(Hq)
    got_out, got_lse = reference.decode(q, k, v, k_cache, v_cache, n, window=window, sinks=sinks, return_lse=True)
    visible = reference._visible([n], n + 1, True, window)
    want_out, want_lse = torch_sdpa_masked(q, k_cache, v_cache, visible, sinks=sinks, return_lse=True)
    assert got_lse.shape == (B, Hq)
    assert np.abs(got_lse - want_lse[:, :, 0]).max() <= LSE_TOL
    assert np.abs(got_out - want_out).max() <= PEER_TOL


# ---- merge_states: the exact attention over the union of disjoint key sets


def _partials(q, k, v, cuts, **options):
    """Non-causal attention of q over each key range [cuts[i], cuts[i+1]): states, lses."""
    outs, lses = [], []
    for a, b in zip(cuts[:-1], cuts[1:]):
        o, lse = reference.attention(q, k[:, a:b], v[:, a:b], causal=False, **options)
        outs.append(o)
        lses.append(lse)
    return np.stack(outs), np.stack(lses)


@pytest.mark.parametrize("cuts", [[0, 41], [0, 20, 41], [0, 1, 2, 17, 41]])
@pytest.mark.parametrize("with_sinks", [False, True])
def test_merge_of_partials_is_the_whole(cuts, with_sinks):
    rng = np.random.default_rng(len(cuts))
    B, S, H, D, T = 2, 5, 6, 16, 41
    q, k, v = rand(rng, (B, S, H, D), np.float32), rand(rng, (B, T, H, D), np.float32), rand(rng, (B, T, H, D), np.float32)
    sinks = rng.standard_normal(H) if with_sinks else None
    states, lses = _partials(q, k, v, cuts, softcap=2.0)
    whole, whole_lse = reference.attention(q, k, v, causal=False, softcap=2.0, sinks=sinks)
    merged, merged_lse = reference.merge_states(states, lses, sinks=sinks, return_lse=True)
    assert np.abs(merged - whole).max() <= 1e-12
    assert np.abs(merged_lse - whole_lse).max() <= 1e-12


def test_merge_empty_partial_weighs_zero_and_sink_only_row():
    rng = np.random.default_rng(5)
    N, B, S, H, D = 3, 1, 2, 4, 8
    states = rng.standard_normal((N, B, S, H, D))
    lses = rng.standard_normal((N, B, H, S))
    states[1] = np.nan  # an empty partial: whatever its state holds is never used
    lses[1] = -np.inf
    merged = reference.merge_states(states, lses)
    keep = [0, 2]
    assert np.abs(merged - reference.merge_states(states[keep], lses[keep])).max() == 0
    # Every partial empty: out 0; lse -inf without sinks, the sink with them.
    lses[:] = -np.inf
    sinks = rng.standard_normal(H)
    out, lse = reference.merge_states(states, lses, return_lse=True)
    assert (out == 0).all() and np.isneginf(lse).all()
    out, lse = reference.merge_states(states, lses, sinks=sinks, return_lse=True)
    assert (out == 0).all() and np.array_equal(lse, np.broadcast_to(sinks[None, :, None], lse.shape))


def test_merge_decode_layout():
    """Decode partials: states [N, B, 1, H, D] with lses [N, B, H]; lse comes back as [B, H]."""
    rng = np.random.default_rng(6)
    states, lses = rng.standard_normal((2, 3, 1, 4, 8)), rng.standard_normal((2, 3, 4))
    out, lse = reference.merge_states(states, lses, return_lse=True)
    out4, lse4 = reference.merge_states(states, lses[..., None], return_lse=True)
    assert out.shape == (3, 1, 4, 8) and lse.shape == (3, 4)
    assert np.array_equal(out, out4) and np.array_equal(lse, lse4[..., 0])


def test_window_larger_than_the_cache_is_unbounded():
    rng = np.random.default_rng(9)
    q, k, v = _qkv(rng, 1, 19, 4, 2, 8)
    for causal in (True, False):
        base = reference.prefill(q, k, v, causal=causal)
        assert np.array_equal(reference.prefill(q, k, v, causal=causal, window=(19, 19)), base)
