"""gqa.torch: libgqa's four operations as torch.library operators, on torch tensors.

Results are checked bit for bit against the NumPy API on the same data (one C library, so the
same bits), and against the float64 reference (gqa.reference, or float64 attention written in
torch). Also: strided views with no copy, the eager route and the operator route giving the
same bits, which route is taken, torch.compile(fullgraph=True) with no graph break,
torch.export, meta tensors, opcheck, requires_grad refused, and every error a gqa.GQAError."""
import math

import numpy as np
import pytest

torch = pytest.importorskip("torch")
gt = pytest.importorskip("gqa.torch")
import gqa  # noqa: E402
import gqa._torch_ops  # noqa: E402
from torch._subclasses.fake_tensor import FakeTensor, FakeTensorMode  # noqa: E402
from batch_support import expected as batch_expected, make_case  # noqa: E402
from gqa_testing import BF16, DTYPES as NUMPY_DTYPES, TOL, TOLERANCE as BY_NAME, max_err, poisoned, rand  # noqa: E402

TOLERANCE = {torch.float32: BY_NAME["float32"], torch.float16: BY_NAME["float16"], torch.bfloat16: BY_NAME["bfloat16"]}
DTYPES = list(TOLERANCE)
LSE_TOL = 2e-3  # as test_variants: fp32 logsumexp of rounded inputs against float64


def to_torch(a: np.ndarray):
    """A torch copy of a NumPy array (ml_dtypes bfloat16 too)."""
    if a.dtype == BF16:
        return torch.from_numpy(a.view(np.int16).copy()).view(torch.bfloat16)
    return torch.from_numpy(a.copy())


def to_numpy(t):
    """The NumPy view of a CPU tensor (bfloat16 as ml_dtypes.bfloat16)."""
    t = t.detach()
    return t.view(torch.int16).numpy().view(BF16) if t.dtype == torch.bfloat16 else t.numpy()


def same_bits(t, a) -> bool:
    return to_numpy(t).tobytes() == np.ascontiguousarray(a).tobytes()


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


# ---- the variants: the same bits as the NumPy API, within tolerance of the float64 reference ----

VARIANTS = [
    {},
    {"window": (3, -1)},
    {"softcap": 2.0},
    {"sinks": True},
    {"return_lse": True},
    {"window": (5, -1), "softcap": 3.0, "sinks": True, "return_lse": True},
]


def _options(rng, Hq, options):
    """(NumPy options, torch options): sinks drawn when asked for."""
    numpy_options, torch_options = dict(options), dict(options)
    if options.get("sinks"):
        sinks = (rng.standard_normal(Hq) * 2).astype(np.float32)
        numpy_options["sinks"], torch_options["sinks"] = sinks, torch.from_numpy(sinks.copy())
    return numpy_options, torch_options


def _split(result, return_lse):
    return result if return_lse else (result, None)


@pytest.mark.parametrize("dtype", NUMPY_DTYPES, ids=str)
@pytest.mark.parametrize("options", VARIANTS + [{"window": (2, 4), "causal": False}], ids=str)
def test_prefill_variants_equal_the_numpy_api_and_the_reference(dtype, options):
    rng = np.random.default_rng(len(str(options)))
    B, S, start, Hq, Hkv, D, T = 2, 13, 6, 8, 2, 48, 40
    q, k, v = rand(rng, (B, S, Hq, D), dtype), rand(rng, (B, S, Hkv, D), dtype), rand(rng, (B, S, Hkv, D), dtype)
    k_cache, v_cache = poisoned((B, T, Hkv, D), dtype), poisoned((B, T, Hkv, D), dtype)
    k_cache[:, :start], v_cache[:, :start] = rand(rng, (B, start, Hkv, D), dtype), rand(rng, (B, start, Hkv, D), dtype)
    numpy_options, torch_options = _options(rng, Hq, options)
    tk_cache, tv_cache = to_torch(k_cache), to_torch(v_cache)
    ref_k, ref_v = k_cache.copy(), v_cache.copy()
    want, want_lse = _split(gqa.prefill(q, k, v, k_cache, v_cache, start_pos=start, **numpy_options),
                            options.get("return_lse"))
    got, lse = _split(gt.prefill(to_torch(q), to_torch(k), to_torch(v), tk_cache, tv_cache, start_pos=start,
                                 **torch_options), options.get("return_lse"))
    assert same_bits(got, want) and same_bits(tk_cache, k_cache) and same_bits(tv_cache, v_cache)
    ref, ref_lse = _split(gqa.reference.prefill(q, k, v, ref_k, ref_v, start_pos=start, **numpy_options),
                          options.get("return_lse"))
    assert max_err(to_numpy(got), ref) <= TOL[dtype]
    if options.get("return_lse"):
        assert lse.dtype == torch.float32 and lse.shape == (B, Hq, S) and same_bits(lse, want_lse)
        assert np.abs(lse.numpy() - ref_lse).max() <= LSE_TOL


@pytest.mark.parametrize("dtype", NUMPY_DTYPES, ids=str)
@pytest.mark.parametrize("options", VARIANTS, ids=str)
@pytest.mark.parametrize("num_splits", [0, 3])
def test_decode_variants_equal_the_numpy_api_and_the_reference(dtype, options, num_splits):
    rng = np.random.default_rng(len(str(options)) + num_splits)
    B, Hq, Hkv, D, T, lens = 3, 12, 4, 64, 113, [100, 7, 0]
    q, k, v = rand(rng, (B, 1, Hq, D), dtype), rand(rng, (B, 1, Hkv, D), dtype), rand(rng, (B, 1, Hkv, D), dtype)
    k_cache, v_cache = rand(rng, (B, T, Hkv, D), dtype), rand(rng, (B, T, Hkv, D), dtype)
    for b, n in enumerate(lens):  # never read: past each sequence's new token
        k_cache[b, n + 1:], v_cache[b, n + 1:] = np.nan, np.nan
    numpy_options, torch_options = _options(rng, Hq, options)
    tk_cache, tv_cache = to_torch(k_cache), to_torch(v_cache)
    ref_k, ref_v = k_cache.copy(), v_cache.copy()
    want, want_lse = _split(gqa.decode(q, k, v, k_cache, v_cache, lens, num_splits=num_splits, **numpy_options),
                            options.get("return_lse"))
    got, lse = _split(gt.decode(to_torch(q), to_torch(k), to_torch(v), tk_cache, tv_cache, lens,
                                num_splits=num_splits, **torch_options), options.get("return_lse"))
    assert same_bits(got, want) and same_bits(tk_cache, k_cache) and same_bits(tv_cache, v_cache)
    ref, ref_lse = _split(gqa.reference.decode(q, k, v, ref_k, ref_v, lens, **numpy_options), options.get("return_lse"))
    assert max_err(to_numpy(got), ref) <= TOL[dtype]
    if options.get("return_lse"):
        assert lse.shape == (B, Hq) and same_bits(lse, want_lse) and np.abs(lse.numpy() - ref_lse).max() <= LSE_TOL


def test_sinks_of_another_float_dtype_are_read_as_float32():
    g = torch.Generator().manual_seed(3)
    q, k, v = randn(1, 4, 6, 16, dtype=torch.float32, generator=g), torch.randn(1, 4, 2, 16), torch.randn(1, 4, 2, 16)
    sinks = torch.randn(6, dtype=torch.bfloat16)
    assert torch.equal(gt.prefill(q, k, v, sinks=sinks), gt.prefill(q, k, v, sinks=sinks.float()))


# ---- strided views: no copy ------------------------------------------------------------------------

def _copies(call) -> int:
    """How many copies of tensor data (aten::copy_, under .contiguous() and .clone() too) `call` makes."""
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
        call()
    return sum(1 for e in prof.events() if e.name == "aten::copy_")


def test_fused_qkv_and_strided_out_views_go_in_without_a_copy():
    g = torch.Generator().manual_seed(7)
    B, S, Hq, Hkv, D, T = 2, 9, 6, 2, 32, 24
    fused = randn(B, S, (Hq + 2 * Hkv) * D, dtype=torch.float32, generator=g)  # one QKV projection
    q = fused[..., :Hq * D].unflatten(-1, (Hq, D))
    k = fused[..., Hq * D:(Hq + Hkv) * D].unflatten(-1, (Hkv, D))
    v = fused[..., (Hq + Hkv) * D:].unflatten(-1, (Hkv, D))
    wide = torch.full((B, S, 2 * Hq, D), float("nan"))
    out = wide[:, :, ::2]  # every other head slot of a wider buffer
    k_cache, v_cache = torch.full((B, T, Hkv, D), float("nan")), torch.full((B, T, Hkv, D), float("nan"))
    assert not (q.is_contiguous() or k.is_contiguous() or v.is_contiguous() or out.is_contiguous())
    assert _copies(lambda: gt.prefill(q, k, v, k_cache, v_cache, start_pos=0, out=out)) == 0
    want_kc, want_vc = torch.full_like(k_cache, float("nan")), torch.full_like(v_cache, float("nan"))
    want = gt.prefill(q.contiguous(), k.contiguous(), v.contiguous(), want_kc, want_vc, start_pos=0)
    assert torch.equal(out, want) and wide[:, :, 1::2].isnan().all()  # the other slots untouched
    assert torch.equal(k_cache.nan_to_num(7), want_kc.nan_to_num(7))

    # decode: BHSD-stored q (its token axis of extent 1), a strided out, the same bits
    q1 = randn(B, Hq, 1, D, dtype=torch.float32, generator=g).transpose(1, 2)
    q1 = torch.cat([q1, q1], dim=3)[..., :D]  # and a gap after each head: not contiguous
    k1, v1 = randn(B, 1, Hkv, D, dtype=torch.float32, generator=g), randn(B, 1, Hkv, D, dtype=torch.float32, generator=g)
    out1 = torch.full((B, 1, Hq, 2 * D), float("nan"))[..., :D]
    assert not (q1.is_contiguous() or out1.is_contiguous())
    assert _copies(lambda: gt.decode(q1, k1, v1, k_cache, v_cache, S, out=out1)) == 0
    want1 = gt.decode(q1.contiguous(), k1, v1, want_kc, want_vc, S)
    assert torch.equal(out1, want1)


def test_a_strided_last_axis_is_copied_for_an_input_and_refused_for_out():
    q, k, v = torch.randn(1, 5, 4, 32)[..., ::2], torch.randn(1, 5, 2, 16), torch.randn(1, 5, 2, 16)
    assert q.stride(-1) == 2
    assert _copies(lambda: gt.prefill(q, k, v)) == 1  # the one copy of q
    assert torch.equal(gt.prefill(q, k, v), gt.prefill(q.contiguous(), k, v))
    out = torch.full((1, 5, 4, 32), float("nan"))[..., ::2]
    with pytest.raises(gqa.InvalidArgumentError, match="out must have a contiguous last axis"):
        gt.prefill(q, k, v, out=out)
    assert out.isnan().all()


def test_a_broadcast_input_is_copied_and_a_broadcast_out_refused():
    g = torch.Generator().manual_seed(8)
    q, v = randn(1, 5, 4, 16, dtype=torch.float32, generator=g), randn(1, 5, 2, 16, dtype=torch.float32, generator=g)
    k = randn(1, 5, 1, 16, dtype=torch.float32, generator=g).expand(1, 5, 2, 16)  # stride 0 over the heads
    assert k.stride(2) == 0
    assert torch.equal(gt.prefill(q, k, v), gt.prefill(q, k.contiguous(), v))
    q1 = randn(1, 1, 1, 16, dtype=torch.float32, generator=g).expand(3, 1, 4, 16)  # broadcast over batch and heads
    k_cache, v_cache = randn(3, 6, 2, 16, dtype=torch.float32, generator=g), randn(3, 6, 2, 16, dtype=torch.float32, generator=g)
    want_caches = (k_cache.clone(), v_cache.clone())
    k1, v1 = torch.zeros(3, 1, 2, 16), torch.zeros(3, 1, 2, 16)
    assert torch.equal(gt.decode(q1, k1, v1, k_cache, v_cache, 4), gt.decode(q1.contiguous(), k1, v1, *want_caches, 4))
    out = torch.full((1, 5, 1, 16), float("nan")).expand(1, 5, 4, 16)
    with pytest.raises(gqa.InvalidArgumentError, match="out must have a contiguous last axis .* no broadcast axis"):
        gt.prefill(q, k, v, out=out)
    assert out.isnan().all()


# ---- merge_states and batch_attention ---------------------------------------------------------------

@pytest.mark.parametrize("dtype", NUMPY_DTYPES, ids=str)
@pytest.mark.parametrize("layout", ["prefill", "decode"])
def test_merge_states_equals_the_numpy_api_and_the_reference(dtype, layout):
    rng = np.random.default_rng(11)
    N, B, S, H, D = 3, 2, (5 if layout == "prefill" else 1), 6, 40
    states = rand(rng, (N, B, S, H, D), dtype)
    lses = rand(rng, (N, B, H, S) if layout == "prefill" else (N, B, H), np.float32)
    lses[1, 0] = -np.inf  # an empty partial weighs 0 and is not read
    states[1, 0] = np.nan
    sinks = rng.standard_normal(H).astype(np.float32)
    want, want_lse = gqa.merge_states(states, lses, sinks=sinks, return_lse=True)
    got, lse = gt.merge_states(to_torch(states), to_torch(lses), sinks=torch.from_numpy(sinks), return_lse=True)
    assert same_bits(got, want) and same_bits(lse, want_lse) and lse.shape == lses.shape[1:]
    ref, ref_lse = gqa.reference.merge_states(states, lses, sinks=sinks, return_lse=True)
    assert max_err(to_numpy(got), ref) <= TOL[dtype] and np.abs(lse.numpy() - ref_lse).max() <= 1e-5
    assert same_bits(gt.merge_states(to_torch(states), to_torch(lses)), gqa.merge_states(states, lses))


@pytest.mark.parametrize("dtype", NUMPY_DTYPES, ids=str)
@pytest.mark.parametrize("options", [{}, {"window": (4, -1), "softcap": 3.0, "sinks": True, "return_lse": True}],
                         ids=str)
def test_batch_attention_equals_the_numpy_api_and_the_reference(dtype, options):
    rng = np.random.default_rng(5)
    # decode steps, a chunk after a cached prefix, an empty row, a fresh prompt, a verification
    case = make_case(rng, [1, 9, 0, 13, 5], [30, 17, 5, 0, 40], 8, 2, 32, dtype, page_size=7)
    numpy_options, torch_options = _options(rng, 8, options)
    k_pool, v_pool = case.copy_caches()
    tk_pool, tv_pool = to_torch(k_pool), to_torch(v_pool)
    want, want_lse = _split(gqa.batch_attention(case.q, case.k, case.v, k_pool, v_pool, **case.arguments(),
                                                **numpy_options), options.get("return_lse"))
    metadata = {name: torch.from_numpy(a) for name, a in case.arguments().items()}  # int32 tensors
    got, lse = _split(gt.batch_attention(to_torch(case.q), to_torch(case.k), to_torch(case.v), tk_pool, tv_pool,
                                         **metadata, **torch_options), options.get("return_lse"))
    assert same_bits(got, want) and same_bits(tk_pool, k_pool) and same_bits(tv_pool, v_pool)
    ref = batch_expected(case, **numpy_options)
    assert max_err(to_numpy(got), ref[0]) <= TOL[dtype]
    assert same_bits(tk_pool, ref[1]) and same_bits(tv_pool, ref[2])  # new K/V in their slots, NaN elsewhere
    if options.get("return_lse"):
        assert same_bits(lse, want_lse) and lse.shape == (8, case.q.shape[0])
        rows = np.isfinite(ref[3])
        assert np.abs(lse.numpy()[rows] - ref[3][rows]).max() <= LSE_TOL


def test_batch_attention_takes_numpy_metadata_and_strided_rows():
    rng = np.random.default_rng(6)
    case = make_case(rng, [3, 1, 4], [5, 9, 0], 4, 2, 16, np.dtype(np.float32), page_size=4)
    total_q = case.q.shape[0]
    fused = torch.from_numpy(np.concatenate([case.q.reshape(total_q, -1), case.k.reshape(total_q, -1),
                                             case.v.reshape(total_q, -1)], axis=1))
    q, k, v = fused[:, :64].unflatten(-1, (4, 16)), fused[:, 64:96].unflatten(-1, (2, 16)), fused[:, 96:].unflatten(-1, (2, 16))
    k_pool, v_pool = case.copy_caches()
    tk_pool, tv_pool = to_torch(k_pool), to_torch(v_pool)
    got = gt.batch_attention(q, k, v, tk_pool, tv_pool, **case.arguments())  # NumPy int32 metadata, converted
    want = gqa.batch_attention(case.q, case.k, case.v, k_pool, v_pool, **case.arguments())
    assert same_bits(got, want) and same_bits(tk_pool, k_pool)


# ---- the two routes: eager calls skip the dispatcher; anything that watches gets the operator ------

def _decode_args(seed=1, **options):
    g = torch.Generator().manual_seed(seed)
    B, Hq, Hkv, D, T = 2, 6, 2, 32, 20
    q, k, v = (randn(B, 1, h, D, dtype=torch.float32, generator=g) for h in (Hq, Hkv, Hkv))
    caches = [randn(B, T, Hkv, D, dtype=torch.float32, generator=g) for _ in range(2)]
    return (q, k, v, *caches, 9), options


@pytest.mark.parametrize("options", [{}, {"window": (4, -1), "sinks": True, "return_lse": True}], ids=str)
def test_eager_and_operator_routes_give_the_same_bits_and_versions(options):
    (q, k, v, kc, vc, n), _ = _decode_args()
    sinks = torch.randn(6) if options.get("sinks") else None
    window = options.get("window", (-1, -1))
    lse_shape = (2, 6)
    routes = []
    for through_operator in (False, True):
        k_cache, v_cache, out = kc.clone(), vc.clone(), torch.empty_like(q)
        lse = torch.empty(lse_shape) if options.get("return_lse") else None
        versions = (out._version, k_cache._version)
        if through_operator:
            torch.ops.gqa.decode.default(out, q, k, v, k_cache, v_cache, n, None, 0.0, 0, None, *window, 0.0, sinks, lse)
        else:
            result = gt.decode(q, k, v, k_cache, v_cache, n, out=out, window=window, sinks=sinks,
                               return_lse=bool(options.get("return_lse")))
            if lse is not None:
                lse = result[1]
        assert (out._version, k_cache._version) == (versions[0] + 1, versions[1] + 1)
        routes.append((out, k_cache, v_cache, lse))
    for eager, operator in zip(*routes):
        assert (eager is None and operator is None) or torch.equal(eager, operator)


class _Spy:
    """Stands in for gqa.torch's handle on the kernels: records the kernels the eager route ran
    (a plain_* attempt that found the call not plain, and so ran nothing, is not recorded)."""

    def __init__(self, kernels):
        self.kernels, self.used = kernels, []

    def __getattr__(self, name):
        kernel = getattr(self.kernels, name)

        def recorded(*args, **kwargs):
            result = kernel(*args, **kwargs)
            if not (name.startswith("plain_") and result is None):
                self.used.append(name)
            return result

        return recorded


class _Recorder(torch.utils._python_dispatch.TorchDispatchMode):
    def __init__(self):
        super().__init__()
        self.ops = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.ops.append(str(func))
        return func(*args, **(kwargs or {}))


def test_the_operator_route_is_taken_whenever_something_watches(monkeypatch):
    spy = _Spy(gqa._torch_ops)
    monkeypatch.setattr(gt, "_kernels", spy)
    args, _ = _decode_args()
    want = gt.decode(*args)
    for _ in range(2):  # calls like it: the eager route's guard is made, and passes them
        assert torch.equal(gt.decode(*_decode_args()[0]), want)
    assert spy.used == ["plain_decode"] * 3  # eager: the kernel, directly
    assert gqa._torch_ops._last.decode.guard is not None or gqa._torch_ops._TensorGuards is None
    spy.used.clear()

    with _Recorder() as recorder:  # a dispatch mode sees the operator
        assert torch.equal(gt.decode(*_decode_args()[0]), want)
    assert "gqa.decode.default" in recorder.ops and not spy.used

    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
        gt.decode(*_decode_args()[0])
    assert any(e.name == "gqa::decode" for e in prof.events()) and not spy.used

    param = torch.nn.Parameter(args[0].clone(), requires_grad=False)  # a tensor subclass
    gt.decode(param, *_decode_args()[0][1:])
    assert not spy.used

    torch._dynamo.reset()
    compiled = torch.compile(lambda *a: gt.decode(*a), fullgraph=True, backend="eager")
    assert torch.equal(compiled(*_decode_args()[0]), want) and not spy.used

    class Decode(torch.nn.Module):
        def forward(self, q, k, v, k_cache, v_cache):
            return gt.decode(q, k, v, k_cache, v_cache, 9)

    program = torch.export.export(Decode(), _decode_args()[0][:5])
    assert "torch.ops.gqa.decode.default" in program.graph_module.code and not spy.used

    meta = [torch.empty(t.shape, device="meta") for t in _decode_args()[0][:5]]
    assert gt.decode(*meta, 9).device.type == "meta" and not spy.used

    with FakeTensorMode():  # made under the mode (fake) and plain tensors given to it alike
        assert type(gt.decode(*_decode_args()[0])) is FakeTensor
    mode = FakeTensorMode()
    fakes = [mode.from_tensor(t) for t in _decode_args()[0][:5]]
    with mode:
        assert gt.decode(*fakes, 9).shape == want.shape
    assert type(gt.decode(*fakes, 9)) is FakeTensor and not spy.used  # fake tensors outside their mode

    with torch.device("cpu"):  # a torch-function mode
        assert torch.equal(gt.decode(*_decode_args()[0]), want)
    assert not spy.used

    traced = torch.jit.trace(lambda *a: gt.decode(*a, 9), tuple(_decode_args()[0][:5]), check_trace=False)
    assert "gqa::decode" in str(traced.graph) and not spy.used

    args = _decode_args()[0]
    with pytest.raises(RuntimeError, match="gqa::decode"):  # vmap reaches the operator (which has no batching rule)
        torch.func.vmap(lambda q: gt.decode(q[None], *args[1:])[0])(args[0])
    assert not spy.used

    with torch.inference_mode():  # nothing watches: the eager route, the same result
        assert torch.equal(gt.decode(*_decode_args()[0]), want)
        assert spy.used == ["plain_decode"]


def _route_calls(operator, caches, q, k, v, kc, vc, n):
    """call(**changed): the decode (caches) or prefill without caches of these tensors, with
    some replaced, through gqa.torch (operator False) or torch.ops.gqa.* (out made like q when
    not given); and the thread's _Last of that route and op."""
    def call(q=q, k=k, v=v, k_cache=kc, v_cache=vc, out=None):
        if not operator:
            return (gt.decode(q, k, v, k_cache, v_cache, n, out=out) if caches
                    else gt.prefill(q, k, v, start_pos=0, out=out))
        out = torch.empty_like(q) if out is None else out
        if caches:
            torch.ops.gqa.decode.default(out, q, k, v, k_cache, v_cache, n, None, 0.0, 0, None)
        else:
            torch.ops.gqa.prefill.default(out, q, k, v, None, None, 0, True, 0.0)
        return out

    def last():
        route = gqa._torch_ops._last_kernel if operator else gqa._torch_ops._last
        return route.decode if caches else route.prefill_without_caches

    return call, last


@pytest.mark.parametrize("operator", [False, True], ids=["eager", "operator"])
@pytest.mark.parametrize("caches", [True, False], ids=["decode", "prefill-no-caches"])
def test_a_call_like_the_last_one_is_refused_for_what_the_first_is(caches, operator):
    """The repeat calls (one guard check for the tensors of a call like the previous one), of
    gqa.torch's eager route and of the operators' kernels (each its own guards): a tensor that
    differs in dtype, layout, requires_grad or type is checked in full, so refused with the same
    errors before anything is written, or sent to the operator."""
    (q, k, v, kc, vc, n), _ = _decode_args()
    call, last = _route_calls(operator, caches, q, k, v, kc, vc, n)
    want = call()
    for _ in range(3):
        out = call()
        assert torch.equal(out, want) and out._version == (1 if operator else 0)  # new: nobody holds a version
    assert last().guard is not None or gqa._torch_ops._TensorGuards is None
    given = torch.empty_like(q)
    for _ in range(3):
        before = (given._version, kc._version)
        assert call(out=given) is given and torch.equal(given, want)
        assert given._version == before[0] + 1 and kc._version == before[1] + (1 if caches else 0)
    strided = torch.empty(2, 1, 6, 64)[..., ::2]  # q's shape, a strided last axis
    bad = [
        (dict(k=k.clone().requires_grad_()), "k requires grad"),
        (dict(q=q.double()), "float64"),
        (dict(v=v.half()), "v has dtype torch.float16"),
        (dict(out=torch.empty_like(q, dtype=torch.float64)), "out has dtype"),
        (dict(out=strided), "out must have a contiguous last axis"),
        (dict(out=torch.empty_like(q).requires_grad_()), "out requires grad"),
        (dict(v=v[:, :, :1]), r"v has shape \[2, 1, 1, 32\]"),
        (dict(k=k.to("meta")), "k is on meta but q is on cpu"),
    ]
    if not operator:  # the dispatcher refuses these itself
        bad += [(dict(q=q.numpy()), "q is a ndarray"), (dict(out=q.numpy()), "out is a ndarray")]
    if caches:
        bad += [(dict(k_cache=kc.transpose(1, 2).contiguous().transpose(1, 2)), "k_cache must be contiguous"),
                (dict(v_cache=vc.double()), "v_cache has dtype")]
    for changed, message in bad:
        before = kc.clone()
        with pytest.raises(gqa.GQAError, match=message):
            call(**changed)
        assert torch.equal(kc, before)
        assert torch.equal(call(), want)  # and the call after is a repeat call again
    assert torch.equal(call(k=k, v=k.clone().copy_(v)), want)  # other tensors of the same metadata
    assert torch.equal(call(k=v, v=v), call(k=v.clone(), v=v))  # one tensor twice: checked in full, runs
    assert torch.equal(call(out=q.clone()), want)  # out from q: a new tensor of its metadata
    param = torch.nn.Parameter(q.clone(), requires_grad=False)
    assert torch.equal(call(q=param), want)  # a subclass: the operator route, or checked in full
    with torch.no_grad():
        assert torch.equal(call(k=k.clone().requires_grad_()), want)
    with torch.inference_mode():  # other TLS dispatch keys: checked in full, then repeat calls again
        for _ in range(3):
            assert torch.equal(call(), want)


def test_the_routes_remember_their_calls_apart():
    """An eager call and an operator call of one config, in turn: each route keeps its own guard
    (a kernel runs under other TLS dispatch keys than gqa.torch's caller), so neither misses."""
    (q, k, v, kc, vc, n), _ = _decode_args()
    eager, eager_last = _route_calls(False, True, q, k, v, kc, vc, n)
    operator, operator_last = _route_calls(True, True, q, k, v, kc, vc, n)
    want = eager()
    for _ in range(3):
        assert torch.equal(eager(), want) and torch.equal(operator(), want)
    if gqa._torch_ops._TensorGuards is not None:
        assert eager_last() is not operator_last()
        assert eager_last().guard is not None and not eager_last().missed
        assert operator_last().guard is not None and not operator_last().missed


def test_version_counters_let_autograd_see_a_saved_cache_overwritten():
    (q, k, v, k_cache, v_cache, n), _ = _decode_args()
    w = torch.randn(k_cache.shape, requires_grad=True)
    loss = (w * k_cache).sum()  # saves k_cache for w's gradient
    gt.decode(q, k, v, k_cache, v_cache, n)
    with pytest.raises(RuntimeError, match="modified by an inplace operation"):
        loss.backward()


# ---- torch.compile, torch.export, meta tensors, opcheck ---------------------------------------------

def _step(q, k, v, q1, k1, v1, k_cache, v_cache, lens, sinks, bq, bk, bv, k_pool, v_pool, q_indptr, kv_lens, table):
    """What model layers do: a prompt prefill (windowed, soft-capped), a decode with per-sequence
    lengths, sinks and its LSE, a merge of two partials, and one batched call on a paged pool."""
    out = gt.prefill(q, k, v, k_cache, v_cache, start_pos=0, window=(3, -1), softcap=4.0)
    out1, lse1 = gt.decode(q1, k1, v1, k_cache, v_cache, lens, sinks=sinks, return_lse=True)
    merged = gt.merge_states(torch.stack([out1, out1 * 0.5]), torch.stack([lse1, lse1 - 1.0]))
    batched = gt.batch_attention(bq, bk, bv, k_pool, v_pool, q_indptr=q_indptr, kv_lens=kv_lens, page_table=table)
    return out * 2.0, out1 + 1.0, lse1 * 1.0, merged, batched  # elementwise: bitwise the same compiled or not


def _step_inputs(dtype=torch.float32):
    g = torch.Generator().manual_seed(5)
    B, S, Hq, Hkv, D, T = 2, 7, 6, 2, 32, 16
    args = [randn(B, n, h, D, dtype=dtype, generator=g) for n, h in ((S, Hq), (S, Hkv), (S, Hkv), (1, Hq), (1, Hkv), (1, Hkv))]
    k_cache = torch.full((B, T, Hkv, D), float("nan"), dtype=dtype)
    lens, sinks = torch.tensor([7, 3], dtype=torch.int32), randn(Hq, dtype=torch.float32, generator=g)
    case = make_case(np.random.default_rng(2), [1, 4, 2], [6, 0, 9], Hq, Hkv, D, np.dtype(np.float32), page_size=4)
    pool = [to_torch(a) for a in case.copy_caches()]
    metadata = [torch.from_numpy(a) for a in case.arguments().values()]
    batch = [to_torch(a) for a in (case.q, case.k, case.v)]
    return [*args, k_cache, torch.full_like(k_cache, float("nan")), lens, sinks, *batch, *pool, *metadata]


WRITTEN = (6, 7, 13, 14)  # the caches and pools in _step's arguments


def _clone_written(args):
    return [a.clone() if i in WRITTEN else a for i, a in enumerate(args)]


def _assert_equal(got, want):
    for a, b in zip(got, want):
        assert torch.equal(a.nan_to_num(7), b.nan_to_num(7))


@pytest.mark.parametrize("backend", ["eager", "inductor"])
def test_torch_compile_fullgraph_traces_every_operator_and_keeps_their_writes(backend):
    torch._dynamo.reset()
    args = _step_inputs()
    want_args = _clone_written(args)
    want = _step(*want_args)
    compiled = torch.compile(_step, fullgraph=True, backend=backend)  # fullgraph: a break fails
    _assert_equal(compiled(*args), want)
    _assert_equal([args[i] for i in WRITTEN], [want_args[i] for i in WRITTEN])  # the writes are kept
    explanation = torch._dynamo.explain(_step)(*_clone_written(_step_inputs()))
    assert explanation.graph_break_count == 0, explanation.break_reasons


def test_torch_export_keeps_every_operator_and_its_writes():
    class Layer(torch.nn.Module):
        def forward(self, *args):
            return _step(*args)

    args = _step_inputs()
    program = torch.export.export(Layer(), tuple(_clone_written(args)))
    code = program.graph_module.code
    for name in ("prefill", "decode", "merge_states", "batch_attention"):
        assert f"torch.ops.gqa.{name}.default" in code
    want_args = _clone_written(args)
    want = _step(*want_args)
    _assert_equal(program.module()(*args), want)
    _assert_equal([args[i] for i in WRITTEN], [want_args[i] for i in WRITTEN])


def test_meta_tensors_run_the_checks_and_give_the_shapes():
    def meta(*shape, dtype=torch.float32):
        return torch.empty(*shape, dtype=dtype, device="meta")

    q, k = meta(2, 5, 6, 32), meta(2, 5, 2, 32)
    out, lse = gt.prefill(q, k, k, return_lse=True)
    assert out.device.type == "meta" and out.shape == q.shape and lse.shape == (2, 6, 5) and lse.dtype == torch.float32
    with pytest.raises(gqa.InvalidArgumentError, match="v has shape"):
        gt.prefill(q, k, k[:, :4])
    out, lse = gt.decode(meta(2, 1, 6, 32), meta(2, 1, 2, 32), meta(2, 1, 2, 32), meta(2, 9, 2, 32), meta(2, 9, 2, 32),
                         3, return_lse=True)
    assert out.shape == (2, 1, 6, 32) and lse.shape == (2, 6)
    with pytest.raises(gqa.InvalidArgumentError, match="sinks has shape"):
        gt.decode(meta(2, 1, 6, 32), meta(2, 1, 2, 32), meta(2, 1, 2, 32), meta(2, 9, 2, 32), meta(2, 9, 2, 32), 3,
                  sinks=meta(5))
    out, lse = gt.merge_states(meta(3, 2, 1, 6, 32), meta(3, 2, 6), return_lse=True)
    assert out.shape == (2, 1, 6, 32) and lse.shape == (2, 6)
    i32 = torch.int32
    out, lse = gt.batch_attention(meta(7, 6, 32), meta(7, 2, 32), meta(7, 2, 32), meta(10, 4, 2, 32), meta(10, 4, 2, 32),
                                  q_indptr=meta(3, dtype=i32), kv_lens=meta(2, dtype=i32), page_table=meta(2, 5, dtype=i32),
                                  return_lse=True)
    assert out.shape == (7, 6, 32) and lse.shape == (6, 7)
    with pytest.raises(gqa.InvalidArgumentError, match="kv_lens has shape"):
        gt.batch_attention(meta(7, 6, 32), meta(7, 2, 32), meta(7, 2, 32), meta(10, 4, 2, 32), meta(10, 4, 2, 32),
                           q_indptr=meta(3, dtype=i32), kv_lens=meta(3, dtype=i32), page_table=meta(2, 5, dtype=i32))


def test_the_operators_declare_what_they_write():
    for op, written in ((torch.ops.gqa.prefill.default, {"out", "k_cache", "v_cache", "lse"}),
                        (torch.ops.gqa.decode.default, {"out", "k_cache", "v_cache", "workspace", "lse"}),
                        (torch.ops.gqa.merge_states.default, {"out", "lse"}),
                        (torch.ops.gqa.batch_attention.default,
                         {"out", "k_cache", "v_cache", "lse", "workspace", "error_flags"})):
        schema = op._schema
        assert {a.name for a in schema.arguments if a.alias_info and a.alias_info.is_write} == written
        assert not schema.returns


def test_opcheck_passes_for_every_operator():
    args = _step_inputs()
    q, k, v, q1, k1, v1, k_cache, v_cache, lens, sinks, bq, bk, bv, k_pool, v_pool, indptr, kv_lens, table = args
    lse = torch.empty(2, 6)
    cases = [
        (torch.ops.gqa.prefill.default, (torch.empty_like(q), q, k, v, k_cache, v_cache, 0, True, 0.0, 3, -1, 4.0)),
        (torch.ops.gqa.decode.default, (torch.empty_like(q1), q1, k1, v1, k_cache.nan_to_num(0), v_cache.nan_to_num(0),
                                        0, lens, 0.0, 0, None, -1, -1, 0.0, sinks, lse)),
        (torch.ops.gqa.merge_states.default, (torch.empty_like(q1), torch.stack([q1, q1]), torch.stack([lse, lse]))),
        (torch.ops.gqa.batch_attention.default, (torch.empty_like(bq), bq, bk, bv, k_pool, v_pool, indptr, kv_lens, table)),
    ]
    for op, op_args in cases:
        torch.library.opcheck(op, op_args)


# ---- errors: gqa.GQAError subclasses only, nothing written -------------------------------------------

def test_inputs_that_require_grad_are_refused_with_a_clear_error():
    q, k, v = torch.randn(1, 2, 4, 16, requires_grad=True), torch.randn(1, 2, 2, 16), torch.randn(1, 2, 2, 16)
    with pytest.raises(gqa.InvalidArgumentError, match="q requires grad, but libgqa computes no gradient"):
        gt.prefill(q, k, v)
    with torch.no_grad():  # no graph is recorded: fine
        assert not gt.prefill(q, k, v).requires_grad
    sinks = torch.nn.Parameter(torch.zeros(4))  # a model's sink logits
    with pytest.raises(gqa.InvalidArgumentError, match="sinks requires grad"):
        gt.prefill(q.detach(), k, v, sinks=sinks)
    with pytest.raises(gqa.InvalidArgumentError, match="out requires grad"):
        gt.prefill(q.detach(), k, v, out=torch.zeros(1, 2, 4, 16, requires_grad=True))
    compiled = torch.compile(lambda q, k, v: gt.prefill(q, k, v), fullgraph=True, backend="eager")
    with pytest.raises(Exception, match="libgqa computes no gradient"):
        compiled(q, k, v)


def test_bad_arguments_are_refused_with_gqa_errors_before_anything_is_written():
    q, k, v = torch.randn(1, 1, 4, 16), torch.randn(1, 1, 2, 16), torch.randn(1, 1, 2, 16)
    cache = torch.full((1, 8, 2, 16), float("nan"))
    strided_cache = torch.zeros(1, 2, 8, 16).transpose(1, 2)  # BSHD view, not contiguous
    i32 = torch.int32
    bq, bkv, pool = torch.randn(3, 4, 16), torch.randn(3, 2, 16), torch.full((4, 2, 2, 16), float("nan"))
    meta = {"q_indptr": torch.tensor([0, 3], dtype=i32), "kv_lens": torch.tensor([1], dtype=i32),
            "page_table": torch.tensor([[0, 1, -1]], dtype=i32)}
    cases = [
        (lambda: gt.decode(q, k, v, strided_cache, cache, 0), "k_cache must be contiguous"),
        (lambda: gt.prefill(q.double(), k.double(), v.double()), "float64"),
        (lambda: gt.prefill(q, k, v, out=torch.empty(1, 1, 4, 8)), r"out has shape \[1, 1, 4, 8\]"),
        (lambda: gt.prefill(q, k.half(), v), "k has dtype torch.float16 but q has torch.float32"),
        (lambda: gt.decode(q, k, v, cache, cache[:, :4].clone(), 0), "v_cache has shape"),
        (lambda: gt.decode(q, k, v, cache, cache.clone(), [0, 1]), "cache_len has shape"),
        (lambda: torch.ops.gqa.decode(torch.empty_like(q), q, k, v, cache, cache.clone(), 0,
                                      torch.zeros(2, dtype=i32), 0.0, 0, None), r"cache_lens has shape \[2\]"),
        (lambda: torch.ops.gqa.prefill(torch.empty_like(q), q, k, v, None, None, 2 ** 40, True, 0.0), "start_pos"),
        (lambda: gt.decode(q, k, v, cache, cache.clone(), [2 ** 40]), "int32"),
        (lambda: gt.decode(q, k, v, cache, cache.clone(), 1.0), "cache_len"),
        (lambda: gt.prefill(q, k, v, cache), "both k_cache and v_cache"),
        (lambda: gt.prefill(q.numpy(), k, v), "q is a ndarray"),
        (lambda: gt.decode(q, k.numpy(), v, cache, cache.clone(), 0, out=torch.empty_like(q)), "k is a ndarray"),
        (lambda: gt.prefill(q.to_sparse(), k, v), "sparse"),
        (lambda: gt.decode(q, k, v, cache, cache.clone(), 8), "cache_len"),  # == max_seq_len: from C
        (lambda: gt.prefill(q, k, v, window=(1,)), "window"),
        (lambda: gt.prefill(q, k, v, window=(-2, -1)), "window_left"),  # from C
        (lambda: gt.prefill(q, k, v, softcap=-1.0), "softcap"),
        (lambda: gt.prefill(q, k, v, softcap="1"), "softcap"),
        (lambda: gt.prefill(q, k, v, sinks=torch.zeros(3)), r"sinks has shape \[3\]"),
        (lambda: gt.prefill(q, k, v, sinks=[0.0] * 4), "sinks is a list"),
        (lambda: gt.prefill(q, k, v, sinks=torch.zeros(4, dtype=i32)), "sinks has dtype torch.int32"),
        (lambda: gt.prefill(q, k, v, return_lse=2), "return_lse"),
        (lambda: torch.ops.gqa.decode(torch.empty_like(q), q, k, v, cache, cache.clone(), 0, None, 0.0, 0, None,
                                      -1, -1, 0.0, None, torch.empty(1, 4, dtype=torch.float16)), "lse has dtype"),
        (lambda: gt.merge_states(torch.randn(2, 1, 3, 4, 8), torch.randn(2, 1, 4, 2)), "lses has shape"),
        (lambda: gt.merge_states(torch.randn(2, 1, 3, 4, 8), torch.randn(2, 1, 4, 3).double()), "lses has dtype"),
        (lambda: gt.merge_states(torch.randn(2, 3, 4, 8), torch.randn(2, 1, 4, 3)), "states has shape"),
        (lambda: gt.batch_attention(bq, bkv, bkv, pool, pool.clone(), **{**meta, "kv_lens": torch.tensor([1.0])}),
         "kv_lens has dtype torch.float32"),
        (lambda: gt.batch_attention(bq, bkv, bkv, pool, pool.clone(), **{**meta, "page_table": [[0, 9, -1]]}),
         "page"),  # from C: page id 9 outside the pool of 4
        (lambda: torch.ops.gqa.batch_attention(torch.empty_like(bq), bq, bkv, bkv, pool, pool.clone(),
                                               meta["q_indptr"], meta["kv_lens"], meta["page_table"].repeat(1, 2)[:, ::2]),
         "page_table must be contiguous"),
        (lambda: gt.batch_attention(bq, bkv, bkv, pool, pool.clone(), **{**meta, "q_indptr": [0, 2]}), "q_indptr"),
    ]
    for call, message in cases:
        before, pool_before = cache.clone(), pool.clone()
        with pytest.raises(gqa.GQAError, match=message):
            call()
        assert torch.equal(cache.nan_to_num(7), before.nan_to_num(7))
        assert torch.equal(pool.nan_to_num(7), pool_before.nan_to_num(7))
    with pytest.raises(gqa.CacheOverflowError):
        gt.decode(q, k, v, cache, cache.clone(), 8)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_cuda_tensors(dtype):
    g = torch.Generator().manual_seed(2)
    q = randn(2, 5, 8, 64, dtype=dtype, generator=g)
    k, v = randn(2, 5, 2, 64, dtype=dtype, generator=g), randn(2, 5, 2, 64, dtype=dtype, generator=g)
    k_cache = torch.zeros(2, 16, 2, 64, dtype=dtype)
    v_cache = torch.zeros_like(k_cache)
    cpu_caches = (k_cache.clone(), v_cache.clone())
    want = gt.prefill(q, k, v, *cpu_caches)
    kc, vc = k_cache.cuda(), v_cache.cuda()
    got = gt.prefill(q.cuda(), k.cuda(), v.cuda(), kc, vc)
    torch.cuda.synchronize()
    assert got.is_cuda
    assert (got.cpu().double() - want.double()).abs().max().item() <= TOLERANCE[dtype]
    assert torch.equal(kc[:, :5].cpu(), k)
    got1 = gt.decode(q[:, :1].cuda(), k[:, :1].cuda(), v[:, :1].cuda(), kc, vc, 5)  # the eager route on CUDA
    want1 = gt.decode(q[:, :1], k[:, :1], v[:, :1], *cpu_caches, 5)
    torch.cuda.synchronize()
    assert (got1.cpu().double() - want1.double()).abs().max().item() <= TOLERANCE[dtype]
