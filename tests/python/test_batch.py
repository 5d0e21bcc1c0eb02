"""gqa.batch_attention on the CPU against the float64 reference run one sequence at a time.

Every case lives in a shuffled page pool where everything a call must not read is NaN (pages of
no sequence, slots past a sequence's end, the slots about to be written), so a wrong page, slot
or length shows as NaN or as a wrong value. test_all.sh runs this file once per GQA_CPU_ISA."""
import re

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

import gqa
from batch_support import PAGE_SIZES, contiguous, expected, make_case, ragged_batches
from gqa_testing import BF16, DTYPES, TOL, max_err, poisoned, rand


def run(case, **options):
    k_cache, v_cache = case.copy_caches()
    out = poisoned(case.q.shape, case.q.dtype)
    gqa.batch_attention(case.q, case.k, case.v, k_cache, v_cache, **case.arguments(), out=out, **options)
    return out, k_cache, v_cache


def check(case, num_splits=0, **options):
    out, k_cache, v_cache = run(case, num_splits=num_splits, **options)
    want, want_k, want_v = expected(case, **options)
    assert not np.isnan(out).any()
    assert out.size == 0 or max_err(out, want) <= TOL[case.q.dtype]
    # The new K/V are in their slots bit for bit; every other slot keeps its bits (NaN included).
    assert k_cache.tobytes() == want_k.tobytes() and v_cache.tobytes() == want_v.tobytes()
    return out


@pytest.mark.parametrize("page_size", PAGE_SIZES)
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("causal", [True, False])
def test_mixed_prefill_and_decode_batch(page_size, dtype, causal):
    rng = np.random.default_rng(page_size)
    # decode steps, a prompt chunk after a cached prefix, an empty row, a fresh prompt, a long
    # chunk (tiled as prefill), a speculative verification of 5 tokens
    case = make_case(rng, [1, 9, 0, 13, 70, 5, 1], [30, 17, 5, 0, 3, 300, 0], 14, 2, 64, dtype, page_size)
    check(case, causal=causal)


@settings(max_examples=50, deadline=None)
@given(batch=ragged_batches(), page_size=st.sampled_from(PAGE_SIZES), Hkv=st.integers(1, 3), G=st.integers(1, 5),
       D=st.sampled_from([1, 3, 16, 33, 64, 80, 128]), dtype=st.sampled_from(DTYPES), causal=st.booleans(),
       num_splits=st.sampled_from([0, 1, 3]), seed=st.integers(0, 2**31))
def test_random_ragged_batches(batch, page_size, Hkv, G, D, dtype, causal, num_splits, seed):
    q_lens, kv_lens = batch
    case = make_case(np.random.default_rng(seed), q_lens, kv_lens, Hkv * G, Hkv, D, dtype, page_size)
    check(case, causal=causal, num_splits=num_splits)


@pytest.mark.parametrize("Hq,Hkv,dtype", [(9, 3, np.float16), (4, 4, BF16), (8, 2, np.float32)], ids=str)
@pytest.mark.parametrize("page_size", PAGE_SIZES)
def test_shuffled_pages_give_the_contiguous_bits(page_size, Hq, Hkv, dtype):
    """The work split never depends on the page layout: a shuffled pool gives bitwise the output
    of one page per sequence (the dense cache as a special case). Groups of 3 (K staged, V read
    in place), 1 and f32 (K and V read in place, through each block's row offsets when it spans
    pages)."""
    case = make_case(np.random.default_rng(7), [1, 1, 20, 3, 0, 100], [600, 33, 40, 250, 9, 70], Hq, Hkv, 64,
                     dtype, page_size)
    paged, _, _ = run(case)
    dense, _, _ = run(contiguous(case))
    assert paged.tobytes() == dense.tobytes()


def test_one_driver_serves_prefill_decode_and_the_batched_op():
    """Uniform batches in the contiguous layout give the bits of gqa.prefill and gqa.decode."""
    rng = np.random.default_rng(8)
    B, Hq, Hkv, D, M = 3, 8, 2, 64, 300
    for S, start in ((40, 17), (1, 200)):
        q, k, v = rand(rng, (B, S, Hq, D), np.float16), rand(rng, (B, S, Hkv, D), np.float16), rand(rng, (B, S, Hkv, D), np.float16)
        k_cache, v_cache = rand(rng, (B, M, Hkv, D), np.float16), rand(rng, (B, M, Hkv, D), np.float16)
        kb, vb = k_cache.copy(), v_cache.copy()
        if S == 1:
            dense = gqa.decode(q, k, v, k_cache, v_cache, start)
        else:
            dense = gqa.prefill(q, k, v, k_cache, v_cache, start_pos=start)
        batched = gqa.batch_attention(q.reshape(B * S, Hq, D), k.reshape(B * S, Hkv, D), v.reshape(B * S, Hkv, D), kb, vb,
                                      q_indptr=np.arange(B + 1) * S, kv_lens=[start] * B,
                                      page_table=np.arange(B)[:, None])
        assert batched.tobytes() == dense.reshape(B * S, Hq, D).tobytes()
        assert kb.tobytes() == k_cache.tobytes() and vb.tobytes() == v_cache.tobytes()


@pytest.mark.parametrize("k", range(1, 9))
def test_spec_decode_verification_equals_single_token_decodes(k):
    """k new tokens verified in one call == k one-token calls (outputs and cache), both within
    the float64 reference's tolerance and the cache bit for bit."""
    rng = np.random.default_rng(k)
    case = make_case(rng, [k, k, k], [11, 400, 0], 14, 2, 64, np.float16, 16)
    out, k_all, v_all = run(case)
    k_step, v_step = case.copy_caches()
    want, _, _ = expected(case)
    for j in range(k):
        rows = np.array([case.rows(b).start + j for b in range(case.batch)])
        one = gqa.batch_attention(case.q[rows], case.k[rows], case.v[rows], k_step, v_step, q_indptr=[0, 1, 2, 3],
                                  kv_lens=case.kv_lens + j, page_table=case.page_table)
        assert max_err(one, want[rows]) <= TOL[np.dtype(np.float16)]
        assert max_err(out[rows], want[rows]) <= TOL[np.dtype(np.float16)]
    assert k_step.tobytes() == k_all.tobytes() and v_step.tobytes() == v_all.tobytes()


def test_a_shared_read_only_prefix_page_is_allowed():
    """Two sequences fork from one prompt: they share its full pages and write their own."""
    rng = np.random.default_rng(9)
    cache = gqa.PagedKVCache(num_pages=16, page_size=4, num_kv_heads=2, head_dim=16, dtype=np.float32, fill=np.nan)
    root = cache.add()
    prompt = [rand(rng, (9, h, 16), np.float32) for h in (4, 2, 2)]
    step = cache.step({root: 9})
    gqa.batch_attention(*prompt, cache.k_caches[0], cache.v_caches[0], **step.arguments())
    a, b = cache.fork(root), cache.fork(root)
    assert cache.pages(a)[:2] == cache.pages(b)[:2] == cache.pages(root)[:2]
    step = cache.step({a: 1, b: 2})
    q, k, v = (rand(rng, (3, h, 16), np.float32) for h in (4, 2, 2))
    k_ref, v_ref = cache.k_caches[0].copy(), cache.v_caches[0].copy()
    out = gqa.batch_attention(q, k, v, cache.k_caches[0], cache.v_caches[0], **step.arguments())
    want = gqa.reference.batch_attention(q, k, v, k_ref, v_ref, **step.arguments())
    assert max_err(out, want) <= TOL[np.dtype(np.float32)]
    assert cache.k_caches[0].tobytes() == k_ref.tobytes()


def test_untouched_sequences_may_have_any_page_ids():
    """A q_len-0 sequence reads nothing: its page ids and kv_len are not looked at (beyond sign)."""
    case = make_case(np.random.default_rng(10), [2, 0], [5, 7], 4, 2, 8, np.float32, 4)
    case.page_table[1] = 10**6
    check(case)


@pytest.mark.parametrize("page_size", [1, 7, 16])
@pytest.mark.parametrize("causal", [True, False])
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_variant_options_hold_per_sequence(page_size, causal, dtype):
    """window, softcap, sinks and LSE ([Hq, total_q]) on a mixed batch mean per sequence what
    they mean to the dense reference; NaN keys outside the windows are never read."""
    rng = np.random.default_rng(page_size)
    case = make_case(rng, [1, 6, 0, 3, 20, 4], [20, 9, 2, 0, 40, 300], 4, 2, 16, dtype, page_size)
    options = dict(window=(5, 1), softcap=2.5, sinks=rng.standard_normal(4).astype(np.float32), return_lse=True)
    k_cache, v_cache = case.copy_caches()
    out, lse = gqa.batch_attention(case.q, case.k, case.v, k_cache, v_cache, **case.arguments(), causal=causal,
                                   **options)
    want, want_k, want_v, want_lse = expected(case, causal=causal, **options)
    assert max_err(out, want) <= TOL[np.dtype(dtype)]
    assert lse.shape == (4, case.q.shape[0]) and np.abs(lse - want_lse).max() <= 1e-4 * max(1, np.abs(want_lse).max())
    assert k_cache.tobytes() == want_k.tobytes() and v_cache.tobytes() == want_v.tobytes()
    paged = gqa.batch_attention(case.q, case.k, case.v, *case.copy_caches(), **case.arguments(), causal=causal,
                                **options)[0]
    dense = contiguous(case)
    assert paged.tobytes() == gqa.batch_attention(dense.q, dense.k, dense.v, *dense.copy_caches(), **dense.arguments(),
                                                  causal=causal, **options)[0].tobytes()


def test_strided_views_of_a_fused_qkv_buffer_give_the_contiguous_bits():
    case = make_case(np.random.default_rng(14), [1, 9, 3], [30, 0, 17], 6, 2, 16, np.float16, 7)
    total_q, Hq, D = case.q.shape
    fused = np.concatenate([case.q, case.k, case.v], axis=1)  # [total_q, Hq + 2 Hkv, D]
    q, k, v = fused[:, :Hq], fused[:, Hq:Hq + 2], fused[:, Hq + 2:]
    out = np.full((total_q, 2 * Hq, D), np.nan, np.float16)[:, ::2]  # every other head slot
    got_k, got_v = case.copy_caches()
    gqa.batch_attention(q, k, v, got_k, got_v, **case.arguments(), out=out)
    want, want_k, _ = run(case)
    assert np.ascontiguousarray(out).tobytes() == want.tobytes() and got_k.tobytes() == want_k.tobytes()


def test_workspace_size_is_zero_on_the_cpu():
    assert gqa.batch_workspace_size(4, 10, 14, 2, 64, 16, 100, 8, device="cpu") == 0


def test_bfloat16_long_decode_batch_splits():
    """Lengths from 1 to 5000 in one decode batch (split-KV over several splits)."""
    case = make_case(np.random.default_rng(12), [1] * 5, [0, 1, 257, 1500, 5000], 32, 8, 128, BF16, 16)
    check(case)


# ---------------------------------------------------------------- rejected calls (C level)

from gqa._ffi import ffi, lib  # noqa: E402


class RawCall:
    """One valid batched call through cffi; a test spoils one field and checks the rejection."""

    def __init__(self, case):
        self.case = case
        self.k_cache, self.v_cache = case.copy_caches()
        self.out = poisoned(case.q.shape, case.q.dtype)
        self.indptr = case.q_indptr.copy()
        self.lens = case.kv_lens.copy()
        self.table = case.page_table.copy()
        c = self.cfg = ffi.new("gqa_batch_config*")
        assert lib.gqa_batch_config_init_sized(c, ffi.sizeof("gqa_batch_config")) == 0
        c.dtype = lib.GQA_DTYPE_F32
        c.batch_size, c.total_q = case.batch, case.q.shape[0]
        c.num_q_heads, c.num_kv_heads, c.head_dim = case.q.shape[1], case.k.shape[1], case.q.shape[2]
        c.num_pages, c.page_size = case.k_cache.shape[:2]
        c.max_pages_per_seq = case.page_table.shape[1]
        self.point()

    def point(self):
        self.cfg.q_indptr = ffi.cast("const int32_t*", self.indptr.ctypes.data)
        self.cfg.kv_lens = ffi.cast("const int32_t*", self.lens.ctypes.data)
        self.cfg.page_table = ffi.cast("const int32_t*", self.table.ctypes.data)

    def call(self, **pointers):
        arrays = dict(out=self.out, q=self.case.q, k=self.case.k, v=self.case.v, k_cache=self.k_cache,
                      v_cache=self.v_cache)
        p = {name: ffi.cast("void*", pointers.get(name, array.ctypes.data)) for name, array in arrays.items()}
        return lib.gqa_attention_batch(p["out"], p["q"], p["k"], p["v"], p["k_cache"], p["v_cache"], self.cfg, ffi.NULL)

    def rejected(self, status, message, **pointers):
        got = self.call(**pointers)
        error = ffi.string(lib.gqa_last_error()).decode()
        assert got == status, error
        assert re.search(message, error), error
        assert np.isnan(self.out).all(), "a rejected call wrote out"
        assert self.k_cache.tobytes() == self.case.k_cache.tobytes(), "a rejected call wrote k_cache"
        assert self.v_cache.tobytes() == self.case.v_cache.tobytes(), "a rejected call wrote v_cache"


def raw_case():
    return make_case(np.random.default_rng(13), [3, 1, 0], [6, 9, 2], 4, 2, 8, np.float32, 4, spare_pages=1)


INVALID, OVERFLOW = 1, 2


def field_spoilers():
    """(name, spoil(call), status, message regex) for every field of gqa_batch_config."""
    def setf(name, value):
        return lambda r: setattr(r.cfg, name, value)

    def seti(array, index, value):
        return lambda r: getattr(r, array).__setitem__(index, value)

    return [
        ("batch_size", setf("batch_size", 0), INVALID, r"batch_size \(0\) must be > 0"),
        ("total_q", setf("total_q", -1), INVALID, r"total_q \(-1\) must be >= 0"),
        ("total_q_mismatch", setf("total_q", 3), INVALID, r"q_indptr\[batch_size\] \(4\) must equal total_q \(3\)"),
        ("max_q_len", setf("max_q_len", 2), INVALID, r"sequence 0 has q_len 3 .*max_q_len \(2\)"),
        ("max_q_len_negative", setf("max_q_len", -3), INVALID, r"max_q_len \(-3\) must be >= 0"),
        ("num_q_heads", setf("num_q_heads", 3), INVALID, r"num_q_heads \(3\) must be a multiple of num_kv_heads \(2\)"),
        ("head_dim", setf("head_dim", 0), INVALID, r"head_dim \(0\) must be > 0"),
        ("page_size", setf("page_size", 0), INVALID, r"page_size \(0\) must be > 0"),
        ("num_pages", setf("num_pages", 0), INVALID, r"num_pages \(0\) must be > 0"),
        ("num_pages_small", setf("num_pages", 2), INVALID, r"page_table\[\d\]\[\d\] \(\d+\) must be in \[0, num_pages = 2\)"),
        ("max_pages_per_seq", setf("max_pages_per_seq", 0), INVALID, r"max_pages_per_seq \(0\) must be > 0"),
        ("capacity", setf("max_pages_per_seq", 2), OVERFLOW, r"kv_lens\[0\] \(6\) \+ q_len \(3\) exceeds max_pages_per_seq \(2\) \* page_size \(4\)"),
        ("causal", setf("causal", 2), INVALID, r"causal \(2\) must be 0 or 1"),
        ("scale", setf("scale", float("nan")), INVALID, r"scale \(nan\)"),
        ("num_splits", setf("num_splits", 257), INVALID, r"num_splits \(257\)"),
        ("dtype", setf("dtype", 9), INVALID, r"dtype \(9\)"),
        ("device", setf("device", 7), INVALID, r"device \(7\)"),
        ("struct_size", setf("struct_size", 12), 6, r"struct_size \(12\)"),
        ("window_left", setf("window_left", -2), INVALID, r"window_left \(-2\)"),
        ("window_right", setf("window_right", -5), INVALID, r"window_right \(-5\)"),
        ("softcap", setf("softcap", -1.0), INVALID, r"softcap \(-1\)"),
        ("reserved", setf("reserved", 1), INVALID, r"reserved \(1\) must be 0"),
        ("q_strides", lambda r: setattr(r.cfg.q_strides, "batch", 5), INVALID, r"q_strides.batch \(5\) must be 0"),
        ("k_strides", lambda r: setattr(r.cfg.k_strides, "token", -1), INVALID, r"k_strides \(token -1"),
        ("indptr_start", seti("indptr", 0, 1), INVALID, r"q_indptr\[0\] \(1\) must be 0"),
        ("indptr_order", seti("indptr", 2, 2), INVALID, r"q_indptr\[2\] \(2\) is less than q_indptr\[1\] \(3\)"),
        ("kv_len_negative", seti("lens", 1, -1), INVALID, r"kv_lens\[1\] \(-1\) must be >= 0"),
        ("kv_len_capacity", seti("lens", 1, 1000), OVERFLOW, r"kv_lens\[1\] \(1000\)"),
        ("page_id_negative", seti("table", (0, 1), -1), INVALID, r"page_table\[0\]\[1\] \(-1\) must be in \[0, num_pages"),
        ("page_id_large", seti("table", (1, 2), 99), INVALID, r"page_table\[1\]\[2\] \(99\) must be in \[0, num_pages"),
        ("written_page_shared", lambda r: r.table.__setitem__((1, 2), r.table[0, 1]), INVALID,
         r"sequence 1 writes page \d+ \(page_table\[1\]\[2\]\), which sequence 0 also uses \(page_table\[0\]\[1\]\)"),
        ("page_mapped_twice", lambda r: r.table.__setitem__((0, 0), r.table[0, 2]), INVALID,
         r"sequence 0 writes page \d+ \(page_table\[0\]\[2\]\), which sequence 0 also uses \(page_table\[0\]\[0\]\)"),
    ]


@pytest.mark.parametrize("name,spoil,status,message", field_spoilers(), ids=[f[0] for f in field_spoilers()])
def test_a_bad_field_is_rejected_and_nothing_is_written(name, spoil, status, message):
    r = RawCall(raw_case())
    assert r.call() == 0, ffi.string(lib.gqa_last_error()).decode()  # the unspoilt call is valid
    r = RawCall(raw_case())
    spoil(r)
    r.rejected(status, message)


@pytest.mark.parametrize("pointer", ["out", "q", "k", "v", "k_cache", "v_cache"])
def test_a_null_tensor_is_rejected(pointer):
    RawCall(raw_case()).rejected(INVALID, f"^{pointer} is NULL", **{pointer: 0})


@pytest.mark.parametrize("field", ["q_indptr", "kv_lens", "page_table"])
def test_null_metadata_is_rejected(field):
    r = RawCall(raw_case())
    setattr(r.cfg, field, ffi.NULL)
    r.rejected(INVALID, f"^{field} is NULL")


def test_a_cache_over_the_metadata_is_rejected():
    r = RawCall(raw_case())
    # k_cache's bytes in a buffer of their own that starts with the page table: the cache overlaps
    # the table and nothing else, wherever the allocator put out (which is checked first).
    room = np.zeros(r.k_cache.nbytes // 4 + r.table.size, dtype=np.int32)
    room[:r.table.size] = r.table.ravel()
    r.table = room[:r.table.size].reshape(r.table.shape)
    r.point()
    r.rejected(INVALID, "k_cache overlaps page_table", k_cache=room.ctypes.data)


def test_a_cuda_call_with_host_memory_is_refused_before_anything_is_written():
    r = RawCall(raw_case())
    r.cfg.device, r.cfg.dtype = lib.GQA_DEVICE_CUDA, lib.GQA_DTYPE_F16
    r.rejected(INVALID if gqa.cuda_available() else 4, "CUDA")
