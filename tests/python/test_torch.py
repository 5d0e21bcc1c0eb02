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


def test_bad_tensors_are_refused_with_gqa_errors_before_anything_is_written():
    q, k, v = torch.randn(1, 1, 4, 16), torch.randn(1, 1, 2, 16), torch.randn(1, 1, 2, 16)
    cache = torch.full((1, 8, 2, 16), float("nan"))
    strided_cache = torch.zeros(1, 2, 8, 16).transpose(1, 2)  # BSHD view, not contiguous
    cases = [
        (lambda: gt.decode(q, k, v, strided_cache, cache, 0), "k_cache must be contiguous"),
        (lambda: gt.prefill(q.double(), k.double(), v.double()), "float64"),
        (lambda: gt.prefill(q, k, v, out=torch.empty(1, 1, 4, 8)), r"out has shape \[1, 1, 4, 8\]"),
        (lambda: gt.prefill(q, k.half(), v), "k is torch.float16"),
        (lambda: gt.decode(q, k, v, cache, cache[:, :4].clone(), 0), "v_cache has shape"),
        (lambda: gt.decode(q, k, v, cache, cache.clone(), [0, 1]), "cache_len has shape"),
        (lambda: torch.ops.gqa.decode(torch.empty_like(q), q, k, v, cache, cache.clone(), 0,
                                      torch.zeros(2, dtype=torch.int32), 0.0, 0, None), "cache_lens is"),
        (lambda: torch.ops.gqa.prefill(torch.empty_like(q), q, k, v, None, None, 2 ** 40, True, 0.0), "start_pos"),
        (lambda: gt.decode(q, k, v, cache, cache.clone(), [2 ** 40]), "int32"),
        (lambda: gt.prefill(q, k, v, cache), "both k_cache and v_cache"),
        (lambda: gt.prefill(q.numpy(), k, v), "q is a ndarray"),
        (lambda: gt.decode(q, k, v, cache, cache.clone(), 8), "cache_len"),  # == max_seq_len: from C
    ]
    for call, message in cases:
        before = cache.clone()
        with pytest.raises(gqa.GQAError, match=message):
            call()
        assert torch.equal(cache.nan_to_num(7), before.nan_to_num(7))
    with pytest.raises(gqa.CacheOverflowError):
        gt.decode(q, k, v, cache, cache.clone(), 8)


def test_inputs_that_require_grad_are_refused_with_a_clear_error():
    q, k, v = torch.randn(1, 2, 4, 16, requires_grad=True), torch.randn(1, 2, 2, 16), torch.randn(1, 2, 2, 16)
    with pytest.raises(gqa.InvalidArgumentError, match="q requires grad, but libgqa computes no gradient"):
        gt.prefill(q, k, v)
    with torch.no_grad():  # no graph is recorded: fine
        assert not gt.prefill(q, k, v).requires_grad
    compiled = torch.compile(lambda q, k, v: gt.prefill(q, k, v), fullgraph=True, backend="eager")
    with pytest.raises(Exception, match="libgqa computes no gradient"):
        compiled(q, k, v)


def _step(q, k, v, q1, k1, v1, k_cache, v_cache, lens):
    """A prompt prefill, then one decode with per-sequence lengths: what a model layer does."""
    out = gt.prefill(q, k, v, k_cache, v_cache, start_pos=0)
    out1 = gt.decode(q1, k1, v1, k_cache, v_cache, lens)
    return out * 2.0, out1 + 1.0  # elementwise: bitwise the same compiled or not


def _step_inputs(dtype=torch.float32):
    g = torch.Generator().manual_seed(5)
    B, S, Hq, Hkv, D, T = 2, 7, 6, 2, 32, 16
    args = [randn(B, n, h, D, dtype=dtype, generator=g) for n, h in ((S, Hq), (S, Hkv), (S, Hkv), (1, Hq), (1, Hkv), (1, Hkv))]
    k_cache = torch.full((B, T, Hkv, D), float("nan"), dtype=dtype)
    return args, k_cache, torch.full_like(k_cache, float("nan")), torch.tensor([7, 3], dtype=torch.int32)


@pytest.mark.parametrize("backend", ["eager", "inductor"])
def test_torch_compile_fullgraph_traces_the_ops_and_writes_the_caches(backend):
    torch._dynamo.reset()
    args, kc, vc, lens = _step_inputs()
    want = _step(*args, kc.clone(), vc.clone(), lens)
    want_caches = (kc.clone(), vc.clone())
    _step(*args, want_caches[0], want_caches[1], lens)
    compiled = torch.compile(_step, fullgraph=True, backend=backend)  # fullgraph: a break fails
    got = compiled(*args, kc, vc, lens)
    for a, b in zip(got, want):
        assert torch.equal(a, b)
    assert torch.equal(kc.nan_to_num(7), want_caches[0].nan_to_num(7))  # the mutation is kept
    assert torch.equal(vc.nan_to_num(7), want_caches[1].nan_to_num(7))
    explanation = torch._dynamo.explain(_step)(*_step_inputs()[0], kc.clone(), vc.clone(), lens)
    assert explanation.graph_break_count == 0, explanation.break_reasons


def test_torch_export_keeps_the_ops_and_their_cache_writes():
    class Layer(torch.nn.Module):
        def forward(self, q, k, v, q1, k1, v1, k_cache, v_cache, lens):
            return _step(q, k, v, q1, k1, v1, k_cache, v_cache, lens)

    args, kc, vc, lens = _step_inputs()
    program = torch.export.export(Layer(), (*args, kc.clone(), vc.clone(), lens))
    code = program.graph_module.code
    assert "torch.ops.gqa.prefill.default" in code and "torch.ops.gqa.decode.default" in code
    want_kc, want_vc = kc.clone(), vc.clone()
    want = _step(*args, want_kc, want_vc, lens)
    got = program.module()(*args, kc, vc, lens)
    for a, b in zip(got, want):
        assert torch.equal(a, b)
    assert torch.equal(kc.nan_to_num(7), want_kc.nan_to_num(7))


def test_meta_tensors_run_the_shape_checks_only():
    q, k = torch.empty(2, 5, 6, 32, device="meta"), torch.empty(2, 5, 2, 32, device="meta")
    out = gt.prefill(q, k, k)
    assert out.device.type == "meta" and out.shape == q.shape
    with pytest.raises(gqa.InvalidArgumentError, match="v has shape"):
        gt.prefill(q, k, k[:, :4])


def test_the_operators_declare_what_they_write():
    for op, written in ((torch.ops.gqa.prefill.default, {"out", "k_cache", "v_cache"}),
                        (torch.ops.gqa.decode.default, {"out", "k_cache", "v_cache", "workspace"})):
        schema = op._schema
        assert {a.name for a in schema.arguments if a.alias_info and a.alias_info.is_write} == written
        assert not schema.returns


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
