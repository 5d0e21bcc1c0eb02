"""gqa.reference.batch_attention and gqa.PagedKVCache: the oracle and the helper of the batched op.

The batched reference must equal the dense reference run one sequence at a time on contiguous
caches, whatever the page size and page order, read nothing outside the live slots (NaN
everywhere else) and write exactly the new positions."""
import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

import gqa
from batch_support import PAGE_SIZES, contiguous, expected, live_mask, make_case, ragged_batches
from gqa_testing import DTYPES


def run_reference(case, **options):
    k_cache, v_cache = case.copy_caches()
    out = gqa.reference.batch_attention(case.q, case.k, case.v, k_cache, v_cache, **case.arguments(), **options)
    return out, k_cache, v_cache


def assert_matches(case, **options):
    out, k_cache, v_cache = run_reference(case, **options)
    want, want_k, want_v = expected(case, **options)
    np.testing.assert_allclose(out, want, rtol=0, atol=1e-12)
    # Written slots equal the new K/V bit for bit; every other slot keeps its bits (NaN included).
    assert k_cache.tobytes() == want_k.tobytes() and v_cache.tobytes() == want_v.tobytes()
    assert not np.isnan(out).any()


@pytest.mark.parametrize("page_size", PAGE_SIZES)
@pytest.mark.parametrize("causal", [True, False])
def test_mixed_batch_matches_dense_reference(page_size, causal):
    rng = np.random.default_rng(page_size)
    # decode, a prompt chunk after a cached prefix, an empty row, a fresh prompt, spec verify
    case = make_case(rng, [1, 9, 0, 13, 4], [30, 17, 5, 0, 300], 6, 2, 16, np.float32, page_size)
    assert_matches(case, causal=causal)


@settings(max_examples=40, deadline=None)
@given(batch=ragged_batches(), page_size=st.sampled_from(PAGE_SIZES), Hkv=st.integers(1, 3), G=st.integers(1, 4),
       D=st.sampled_from([1, 3, 16, 33]), dtype=st.sampled_from(DTYPES), causal=st.booleans(),
       seed=st.integers(0, 2**31))
def test_random_ragged_batches(batch, page_size, Hkv, G, D, dtype, causal, seed):
    q_lens, kv_lens = batch
    case = make_case(np.random.default_rng(seed), q_lens, kv_lens, Hkv * G, Hkv, D, dtype, page_size)
    assert_matches(case, causal=causal, scale=0.3)


def test_shuffled_pages_equal_the_contiguous_layout():
    case = make_case(np.random.default_rng(1), [3, 1, 8], [20, 45, 0], 4, 2, 8, np.float16, 7)
    paged, _, _ = run_reference(case)
    dense, k_dense, _ = run_reference(contiguous(case))
    assert paged.tobytes() == dense.tobytes()
    assert k_dense.shape[0] == case.batch  # one page per sequence


def test_spec_decode_verification_equals_single_token_steps():
    """k draft tokens verified in one call equal k one-token decode calls, for k = 1..8."""
    rng = np.random.default_rng(2)
    for k in range(1, 9):
        case = make_case(rng, [k, k], [11, 40], 6, 3, 16, np.float32, 4)
        out, k_all, v_all = run_reference(case)
        k_step, v_step = case.copy_caches()
        for j in range(k):
            rows = np.array([case.rows(0).start + j, case.rows(1).start + j])
            one = gqa.reference.batch_attention(
                case.q[rows], case.k[rows], case.v[rows], k_step, v_step, q_indptr=np.array([0, 1, 2]),
                kv_lens=case.kv_lens + j, page_table=case.page_table)
            np.testing.assert_allclose(one, out[rows], rtol=0, atol=1e-12)
        assert k_step.tobytes() == k_all.tobytes() and v_step.tobytes() == v_all.tobytes()


def test_empty_sequences_are_untouched():
    case = make_case(np.random.default_rng(3), [0, 2, 0], [9, 3, 0], 2, 1, 4, np.float32, 2)
    before_k, _ = case.copy_caches()
    _, k_cache, _ = run_reference(case)
    for b in (0,):  # sequence 0 cached 9 tokens and adds none: its pages keep their bits
        pages = case.page_table[b][case.page_table[b] >= 0]
        assert k_cache[pages].tobytes() == before_k[pages].tobytes()
    assert not live_mask(case)[case.page_table[2][case.page_table[2] >= 0]].any()


# ---------------------------------------------------------------- gqa.PagedKVCache

def test_paged_cache_steps_build_the_metadata():
    cache = gqa.PagedKVCache(num_pages=8, page_size=4, num_kv_heads=2, head_dim=8, num_layers=2,
                             max_pages_per_seq=5)
    a, b = cache.add(), cache.add()
    step = cache.step({a: 6, b: 1})
    assert step.seq_ids == (a, b) and step.total_q == 7
    assert step.q_indptr.tolist() == [0, 6, 7] and step.kv_lens.tolist() == [0, 0]
    assert step.page_table.dtype == np.int32 and step.page_table.shape == (2, 5)
    assert step.page_table[0, :2].tolist() == cache.pages(a) and step.page_table[0, 2:].tolist() == [-1] * 3
    assert step.rows(b) == slice(6, 7)
    step = cache.step({b: 4, a: 1})  # any order; a decode token for a
    assert step.kv_lens.tolist() == [1, 6] and cache.length(a) == 7 and cache.length(b) == 5
    assert len(cache.pages(b)) == 2 and cache.num_free_pages == 4
    assert cache.k_caches[1].shape == cache.pool_shape == (8, 4, 2, 8)
    cache.free(a)
    assert cache.num_free_pages == 6 and cache.sequences == (b,)


def test_paged_cache_runs_a_model_step_by_step_like_the_dense_reference():
    """Prompts arriving at different steps, then decode, through the helper and the batched
    reference, equal each sequence prefilled then decoded alone with the dense reference."""
    rng = np.random.default_rng(4)
    Hq, Hkv, D = 4, 2, 8
    cache = gqa.PagedKVCache(num_pages=40, page_size=3, num_kv_heads=Hkv, head_dim=D, dtype=np.float32,
                             fill=np.nan)
    plan = [{"a": 5}, {"a": 1, "b": 7}, {"a": 1, "b": 1, "c": 2}, {"b": 1, "c": 1}]
    dense = {s: [np.zeros((1, 64, Hkv, D), np.float32) for _ in range(2)] for s in "abc"}
    for wanted in plan:
        for s in wanted:
            if s not in cache.sequences:
                cache.add(s)
        step = cache.step(wanted)
        q, k, v = (rng.standard_normal((step.total_q, h, D)).astype(np.float32) for h in (Hq, Hkv, Hkv))
        out = gqa.reference.batch_attention(q, k, v, cache.k_caches[0], cache.v_caches[0], **step.arguments())
        for b, s in enumerate(step.seq_ids):
            r = step.rows(s)
            alone = gqa.reference.prefill(q[None, r], k[None, r], v[None, r], *dense[s],
                                          start_pos=int(step.kv_lens[b]))
            np.testing.assert_allclose(out[r], alone[0], rtol=0, atol=1e-12)


def test_paged_cache_fork_shares_full_pages_and_copies_the_last():
    cache = gqa.PagedKVCache(num_pages=6, page_size=4, num_kv_heads=1, head_dim=2, dtype=np.float32)
    a = cache.add()
    cache.step({a: 6})
    cache.k_caches[0][cache.pages(a)[1]] = 7.0
    child = cache.fork(a)
    assert cache.length(child) == 6 and cache.pages(child)[0] == cache.pages(a)[0]
    assert cache.pages(child)[1] != cache.pages(a)[1]
    assert (cache.k_caches[0][cache.pages(child)[1]] == 7.0).all()
    assert cache.num_free_pages == 3
    cache.free(a)  # the shared page stays with the child
    assert cache.num_free_pages == 4
    cache.free(child)
    assert cache.num_free_pages == 6


def test_paged_cache_errors_are_gqa_errors():
    cache = gqa.PagedKVCache(num_pages=2, page_size=2, num_kv_heads=1, head_dim=1, num_layers=0)
    a = cache.add()
    with pytest.raises(gqa.CacheOverflowError, match="2 of 2 are free|max_pages_per_seq"):
        cache.step({a: 5})
    assert cache.length(a) == 0
    with pytest.raises(gqa.InvalidArgumentError, match="already exists"):
        cache.add(a)
    with pytest.raises(gqa.InvalidArgumentError, match="no sequence 'x'"):
        cache.free("x")
    with pytest.raises(gqa.InvalidArgumentError, match="page_size"):
        gqa.PagedKVCache(num_pages=1, page_size=0, num_kv_heads=1, head_dim=1)
    with pytest.raises(gqa.InvalidArgumentError, match="num_tokens"):
        cache.extend(a, -1)


@pytest.mark.parametrize("page_size", [1, 16])
def test_variant_options_reach_every_sequence(page_size):
    """window, softcap, sinks and LSE mean per sequence what they mean to the dense prefill."""
    rng = np.random.default_rng(5)
    case = make_case(rng, [1, 6, 0, 3], [20, 9, 2, 0], 4, 2, 8, np.float32, page_size)
    options = dict(window=(5, 1), softcap=2.5, sinks=rng.standard_normal(4).astype(np.float32), return_lse=True)
    k_cache, v_cache = case.copy_caches()
    out, lse = gqa.reference.batch_attention(case.q, case.k, case.v, k_cache, v_cache, **case.arguments(),
                                             causal=False, **options)
    want, want_k, _, want_lse = expected(case, causal=False, **options)
    np.testing.assert_allclose(out, want, rtol=0, atol=1e-12)
    np.testing.assert_allclose(lse, want_lse, rtol=0, atol=1e-12)
    assert lse.shape == (4, case.q.shape[0]) and k_cache.tobytes() == want_k.tobytes()
