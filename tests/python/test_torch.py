"""gqa.torch: libgqa on torch tensors, checked against float64 attention written in torch."""
import math

import pytest

torch = pytest.importorskip("torch")
gt = pytest.importorskip("gqa.torch")
import gqa  # noqa: E402
from gqa_testing import TOLERANCE as BY_NAME  # noqa: E402

TOLERANCE = {torch.float32: BY_NAME["float32"], torch.float16: BY_NAME["float16"], torch.bfloat16: BY_NAME["bfloat16"]}
DTYPES = list(TOLERANCE)


def reference(q, k_cache, v_cache, last):
    """float64 attention: q [B,S,Hq,D]; query s of sequence b sees cache positions 0..last[b][s]."""
    batch, seq, q_heads, dim = q.shape
    group = q_heads // k_cache.shape[2]
    # Unwritten (NaN-poisoned) positions are masked out; zero them so 0 * NaN cannot leak in.
    keys = k_cache.double().nan_to_num(0.0).repeat_interleave(group, dim=2)  # [B,T,Hq,D]
    values = v_cache.double().nan_to_num(0.0).repeat_interleave(group, dim=2)
    scores = torch.einsum("bshd,bthd->bhst", q.double(), keys) / math.sqrt(dim)
    positions = torch.arange(k_cache.shape[1])
    allowed = positions[None, None, :] <= torch.as_tensor(last)[:, :, None]  # [B,S,T]
    scores = scores.masked_fill(~allowed[:, None], float("-inf"))
    return torch.einsum("bhst,bthd->bshd", scores.softmax(-1), values)


def randn(*shape, dtype, generator):
    return torch.randn(*shape, generator=generator, dtype=torch.float32).to(dtype)


@pytest.mark.parametrize("dtype", DTYPES)
def test_prefill_then_decode_match_reference_and_write_caches(dtype):
    g = torch.Generator().manual_seed(0)
    batch, q_heads, kv_heads, dim, max_seq = 2, 14, 2, 64, 40
    k_cache = torch.full((batch, max_seq, kv_heads, dim), float("nan"), dtype=dtype)
    v_cache = torch.full_like(k_cache, float("nan"))
    cache_ptrs = (k_cache.data_ptr(), v_cache.data_ptr())

    # A 17-token prompt in two chunks (10, then 7 at start_pos 10).
    for start, seq in ((0, 10), (10, 7)):
        q = randn(batch, seq, q_heads, dim, dtype=dtype, generator=g)
        k = randn(batch, seq, kv_heads, dim, dtype=dtype, generator=g)
        v = randn(batch, seq, kv_heads, dim, dtype=dtype, generator=g)
        out = gt.prefill(q, k, v, k_cache, v_cache, start_pos=start)
        assert out.shape == q.shape and out.dtype == dtype
        assert torch.equal(k_cache[:, start:start + seq], k) and torch.equal(v_cache[:, start:start + seq], v)
        last = [[start + s for s in range(seq)]] * batch
        err = (out.double() - reference(q, k_cache, v_cache, last)).abs().max().item()
        assert err <= TOLERANCE[dtype], err

    # Decode: one length for both sequences, then per-sequence lengths as a tensor.
    for cache_len in (17, torch.tensor([18, 11], dtype=torch.int32)):
        q = randn(batch, 1, q_heads, dim, dtype=dtype, generator=g)
        k = randn(batch, 1, kv_heads, dim, dtype=dtype, generator=g)
        v = randn(batch, 1, kv_heads, dim, dtype=dtype, generator=g)
        out = torch.full_like(q, float("nan"))
        result = gt.decode(q, k, v, k_cache, v_cache, cache_len, out=out)
        assert result is out  # filled in place
        lens = cache_len.tolist() if isinstance(cache_len, torch.Tensor) else [cache_len] * batch
        for b, n in enumerate(lens):
            assert torch.equal(k_cache[b, n], k[b, 0]) and torch.equal(v_cache[b, n], v[b, 0])
        err = (out.double() - reference(q, k_cache, v_cache, [[n] for n in lens])).abs().max().item()
        assert err <= TOLERANCE[dtype], err
    assert (k_cache.data_ptr(), v_cache.data_ptr()) == cache_ptrs


def test_prefill_without_cache_and_non_contiguous_inputs():
    g = torch.Generator().manual_seed(1)
    seq, q_heads, kv_heads, dim = 13, 9, 3, 64
    # BHSD tensors viewed as BSHD: not contiguous, so they are copied (inputs only).
    q = randn(1, q_heads, seq, dim, dtype=torch.float32, generator=g).transpose(1, 2)
    k = randn(1, kv_heads, seq, dim, dtype=torch.float32, generator=g).transpose(1, 2)
    v = randn(1, kv_heads, seq, dim, dtype=torch.float32, generator=g).transpose(1, 2)
    for causal in (True, False):
        out = gt.prefill(q, k, v, causal=causal, scale=0.2)
        last = [[s if causal else seq - 1 for s in range(seq)]]
        want = reference(q * (0.2 * math.sqrt(dim)), k, v, last)  # fold scale into q
        assert (out.double() - want).abs().max().item() <= TOLERANCE[torch.float32]


def test_out_given_is_written_in_place_with_no_copy():
    q = torch.randn(1, 3, 4, 16)
    k, v = torch.randn(1, 3, 2, 16), torch.randn(1, 3, 2, 16)
    out = torch.full_like(q, float("nan"))
    assert gt.prefill(q, k, v, out=out) is out
    assert not out.isnan().any()


def test_bad_tensors_are_refused_before_anything_is_written():
    q, k, v = torch.randn(1, 1, 4, 16), torch.randn(1, 1, 2, 16), torch.randn(1, 1, 2, 16)
    cache = torch.zeros(1, 8, 2, 16)
    strided_cache = torch.zeros(1, 2, 8, 16).transpose(1, 2)  # BSHD view, not contiguous
    with pytest.raises(ValueError, match="k_cache"):
        gt.decode(q, k, v, strided_cache, cache.clone(), 0)
    with pytest.raises(gqa.InvalidArgumentError, match="float64"):
        gt.prefill(q.double(), k.double(), v.double())
    with pytest.raises(ValueError, match="out must match"):
        gt.prefill(q, k, v, out=torch.empty(1, 1, 4, 8))
    before = cache.clone()
    with pytest.raises(gqa.CacheOverflowError, match="cache_len"):
        gt.decode(q, k, v, cache, cache.clone(), 8)  # cache_len == max_seq_len
    assert torch.equal(cache, before)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_cuda_tensors(dtype):
    g = torch.Generator().manual_seed(2)
    q = randn(2, 5, 8, 64, dtype=dtype, generator=g)
    k, v = randn(2, 5, 2, 64, dtype=dtype, generator=g), randn(2, 5, 2, 64, dtype=dtype, generator=g)
    k_cache = torch.zeros(2, 16, 2, 64, dtype=dtype)
    v_cache = torch.zeros_like(k_cache)
    want = gt.prefill(q, k, v, k_cache.clone(), v_cache.clone())
    kc, vc = k_cache.cuda(), v_cache.cuda()
    got = gt.prefill(q.cuda(), k.cuda(), v.cuda(), kc, vc)
    torch.cuda.synchronize()
    assert got.is_cuda
    assert (got.cpu().double() - want.double()).abs().max().item() <= TOLERANCE[dtype]
    assert torch.equal(kc[:, :5].cpu(), k)
