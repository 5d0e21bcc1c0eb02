"""The CUDA backend on a real GPU (pytest marker `gpu`).

Skipped without a usable CUDA device or without PyTorch/CuPy; fails when a device is present
and anything is wrong. What it checks:
  * FlashAttention's tolerance rule: max |kernel - float64| <= 2 * max |same-precision torch
    attention - float64| + a floor, and within the project's absolute bounds (f16 4e-3,
    bf16 3e-2), over seq lengths 1..4096, group sizes 1..16, head dims 32..256, f16 and bf16,
    cache_len 0, 1 and max-1, causal and not, with and without caches;
  * the exact bytes written to the caches (the new rows; everything else untouched);
  * NaN in cache slots past the attended range not changing the output (bitwise);
  * 250 repeated calls bitwise identical; CPU and CUDA backends agreeing;
  * a rejected call writing nothing; split-KV (explicit, automatic) agreeing with no split;
  * per-sequence cache lengths, batches over one launch's 256 sequences, non-default streams,
    CUDA-graph capture;
  * the variants against gqa.reference (float64) with each kernel forced: windows (0, 1, two-
    sided, larger than the cache) with NaN in every cache slot left of the windows, softcap,
    sinks, lse, huge scales (1e20 and the validated bound), head_dim 512, split-KV 1/auto/7;
    fused-QKV and padded-out views bitwise equal to contiguous calls; strides off 16-byte
    rows rejected; merge_states on CUDA equal to the whole decode and to the CPU merge.
Tests named test_small_* are the subset tests/gpu/run.sh runs under compute-sanitizer.

Split-KV (with a workspace), per-sequence cache lengths and CUDA graphs go through gqa.decode
like everything else (split_decode below).
"""
import math

import numpy as np
import pytest
from gqa_testing import TOLERANCE

gqa = pytest.importorskip("gqa")

pytestmark = pytest.mark.gpu


def _cuda_ok():
    try:
        return bool(gqa.cuda_available())
    except Exception:  # noqa: BLE001 - any failure means "no usable device"
        return False


try:
    import torch

    HAVE_TORCH = torch.cuda.is_available()
except ImportError:
    torch = None
    HAVE_TORCH = False
try:
    import cupy

    HAVE_CUPY = True
except ImportError:
    cupy = None
    HAVE_CUPY = False

if not _cuda_ok():
    pytest.skip("no usable CUDA device for libgqa", allow_module_level=True)
if not (HAVE_TORCH or HAVE_CUPY):
    pytest.skip("neither PyTorch (with CUDA) nor CuPy is importable", allow_module_level=True)

needs_torch = pytest.mark.skipif(not HAVE_TORCH, reason="needs PyTorch with CUDA")

# Absolute bounds against float64 on O(1) data, and the floor of FlashAttention's rule (half an
# ulp of the storage type at the output's magnitude: what output rounding alone may cost).
ABS_TOL = {"f16": TOLERANCE["float16"], "bf16": TOLERANCE["bfloat16"]}
FLOOR = {"f16": 2.0 ** -11, "bf16": 2.0 ** -8}


# The two prefill kernels: tensor cores (default) and the SIMT reference path. Every prefill
# numerics test runs both (GQA_CUDA_PREFILL is read at each call).
@pytest.fixture(params=["tensor_core", "simt"])
def prefill_kernel(request, monkeypatch):
    monkeypatch.setenv("GQA_CUDA_PREFILL", request.param)
    return request.param


# The two decode kernels: tensor cores (the default from 4 query heads per KV head) and SIMT
# (the default below). Every decode numerics test forces each one for every group size.
@pytest.fixture(params=["tensor_core", "simt"])
def decode_kernel(request, monkeypatch):
    monkeypatch.setenv("GQA_CUDA_DECODE", request.param)
    return request.param


def tdtype(name):
    return {"f16": torch.float16, "bf16": torch.bfloat16}[name]


_DTYPE_NAMES = {} if torch is None else {torch.float16: "float16", torch.bfloat16: "bfloat16"}


# ---------------------------------------------------------------------------------------------
# Helpers (torch)
# ---------------------------------------------------------------------------------------------
def randn(shape, dtype, gen):
    return torch.randn(*shape, generator=gen, device="cuda", dtype=torch.float32).to(tdtype(dtype))


def host(t):
    """A CUDA tensor as a NumPy array (bfloat16 as ml_dtypes.bfloat16), for the CPU backend."""
    if t.dtype == torch.bfloat16:
        import ml_dtypes

        return t.view(torch.int16).cpu().numpy().view(ml_dtypes.bfloat16)
    return t.cpu().numpy()


def nan_like(t):
    return torch.full_like(t, float("nan"))


def same_bits(a, b):
    return a.shape == b.shape and torch.equal(a.view(torch.int16), b.view(torch.int16))


def attention(q, keys, values, starts, causal, scale, dt):
    """Attention in dtype dt. q [B,S,Hq,D]; keys[b], values[b] [L_b,Hkv,D] with L_b = starts[b]+S;
    query s of sequence b sits at position starts[b]+s."""
    batch, seq, q_heads, _ = q.shape
    outs = []
    for b in range(batch):
        group = q_heads // keys[b].shape[1]
        qb = q[b].to(dt).transpose(0, 1)  # [Hq,S,D]
        kb = keys[b].to(dt).repeat_interleave(group, dim=1).transpose(0, 1)  # [Hq,L,D]
        vb = values[b].to(dt).repeat_interleave(group, dim=1).transpose(0, 1)
        s = torch.matmul(qb, kb.transpose(1, 2)) * scale
        if causal:
            i = torch.arange(seq, device="cuda")[:, None]
            j = torch.arange(kb.shape[1], device="cuda")[None, :]
            s = s.masked_fill(j > starts[b] + i, float("-inf"))
        outs.append(torch.matmul(torch.softmax(s, dim=-1), vb).transpose(0, 1))
    return torch.stack(outs)


def check_numerics(out, q, keys, values, starts, causal, scale, dtype, what):
    assert torch.isfinite(out.float()).all(), f"{what}: output has NaN/inf (unwritten or poisoned)"
    ref = attention(q, keys, values, starts, causal, scale, torch.float64)
    low = attention(q, keys, values, starts, causal, scale, tdtype(dtype))
    err = (out.double() - ref).abs().max().item()
    err_low = (low.double() - ref).abs().max().item()
    bound = 2.0 * err_low + FLOOR[dtype] * max(1.0, ref.abs().max().item())
    assert err <= bound, f"{what}: error {err:.3g} > 2 * torch {dtype} error {err_low:.3g} + floor"
    assert err <= ABS_TOL[dtype], f"{what}: error {err:.3g} > {ABS_TOL[dtype]}"
    return err


def make_cache(batch, max_seq, kv_heads, dim, lens, dtype, gen):
    """NaN everywhere except random rows [0, lens[b]) of each sequence."""
    cache = torch.full((batch, max_seq, kv_heads, dim), float("nan"), device="cuda",
                       dtype=tdtype(dtype))
    for b in range(batch):
        cache[b, : lens[b]] = randn((lens[b], kv_heads, dim), dtype, gen)
    return cache


def split_decode(q, k, v, k_cache, v_cache, cache_lens, *, num_splits=1, workspace="auto", out=None,
                 stream=None):
    """gqa.decode with per-sequence cache_lens and a split request. workspace: "auto" (a uint8
    tensor of gqa.decode_workspace_size bytes for this num_splits), None, or a device buffer.
    Returns (out, workspace)."""
    if isinstance(workspace, str):
        batch, _, q_heads, dim = q.shape
        size = gqa.decode_workspace_size(batch, q_heads, k.shape[2], dim, k_cache.shape[1],
                                         dtype=_DTYPE_NAMES[q.dtype], num_splits=num_splits)
        workspace = torch.empty(size, dtype=torch.uint8, device="cuda") if size else None
    if out is None:
        out = nan_like(q)
    gqa.decode(q, k, v, k_cache, v_cache, [int(n) for n in cache_lens], num_splits=num_splits,
               workspace=workspace, out=out, stream=stream)
    return out, workspace


def decode_inputs(batch, q_heads, kv_heads, dim, max_seq, lens, dtype, seed):
    gen = torch.Generator(device="cuda").manual_seed(seed)
    q = randn((batch, 1, q_heads, dim), dtype, gen)
    k = randn((batch, 1, kv_heads, dim), dtype, gen)
    v = randn((batch, 1, kv_heads, dim), dtype, gen)
    kc = make_cache(batch, max_seq, kv_heads, dim, lens, dtype, gen)
    vc = make_cache(batch, max_seq, kv_heads, dim, lens, dtype, gen)
    return q, k, v, kc, vc


def expected_decode_caches(kc, vc, k, v, lens):
    kc2, vc2 = kc.clone(), vc.clone()
    for b, n in enumerate(lens):
        kc2[b, n] = k[b, 0]
        vc2[b, n] = v[b, 0]
    return kc2, vc2


def check_decode(out, q, k, v, kc_before, vc_before, lens, dtype, what):
    keys = [torch.cat([kc_before[b, :n], k[b]]) for b, n in enumerate(lens)]
    vals = [torch.cat([vc_before[b, :n], v[b]]) for b, n in enumerate(lens)]
    return check_numerics(out, q, keys, vals, list(lens), True, 1.0 / math.sqrt(q.shape[-1]),
                          dtype, what)


# ---------------------------------------------------------------------------------------------
# Prefill sweep (public API): sampled, not the cartesian product.
# ---------------------------------------------------------------------------------------------
SEQS = [1, 3, 17, 113, 239, 799, 1023, 1025, 2048, 4096]
GROUPS = [1, 2, 3, 4, 5, 7, 8, 16]
DIMS = [64, 80, 96, 128, 256, 32]
MODES = ["start0", "start1", "end", "nocache"]  # cache_len 0, 1, last row at max-1, no cache


def _prefill_cases():
    cases = []
    for i, seq in enumerate(SEQS):
        long = seq >= 2048
        cases.append(dict(batch=1 if seq >= 799 else 2, seq=seq, group=GROUPS[i % 8],
                          kv_heads=1 if long else 2, dim=DIMS[i % 6],
                          dtype=["f16", "bf16"][i % 2], mode=MODES[i % 4], causal=i % 3 != 2))
    for i, group in enumerate(GROUPS):  # every group size
        cases.append(dict(batch=2, seq=17, group=group, kv_heads=2 if group < 16 else 1,
                          dim=DIMS[(i + 3) % 6], dtype=["bf16", "f16"][i % 2],
                          mode=MODES[(i + 1) % 4], causal=True))
    for dim in DIMS:  # every head dim, both dtypes, a chunk after a cached prefix
        for dtype in ("f16", "bf16"):
            cases.append(dict(batch=2, seq=113, group=4, kv_heads=2, dim=dim, dtype=dtype,
                              mode="mid", causal=dtype == "f16"))
    return cases


def _case_id(c):
    return (f"S{c['seq']}-G{c['group']}-kv{c['kv_heads']}-d{c['dim']}-{c['dtype']}-{c['mode']}"
            f"-{'causal' if c['causal'] else 'full'}")


def run_prefill(c, seed=0, scale=None):
    gen = torch.Generator(device="cuda").manual_seed(seed)
    batch, seq, dim, dtype = c["batch"], c["seq"], c["dim"], c["dtype"]
    kv_heads = c["kv_heads"]
    q_heads = kv_heads * c["group"]
    q = randn((batch, seq, q_heads, dim), dtype, gen)
    k = randn((batch, seq, kv_heads, dim), dtype, gen)
    v = randn((batch, seq, kv_heads, dim), dtype, gen)
    out = nan_like(q)
    mode = c["mode"]
    if mode == "nocache":
        res = gqa.prefill(q, k, v, causal=c["causal"], scale=scale, out=out)
        torch.cuda.synchronize()
        starts, keys, vals = [0] * batch, list(k), list(v)
    else:
        max_seq = seq + 40
        start = {"start0": 0, "start1": 1, "end": max_seq - seq, "mid": 29}[mode]
        kc = make_cache(batch, max_seq, kv_heads, dim, [start] * batch, dtype, gen)
        vc = make_cache(batch, max_seq, kv_heads, dim, [start] * batch, dtype, gen)
        kc_before, vc_before = kc.clone(), vc.clone()
        res = gqa.prefill(q, k, v, kc, vc, start_pos=start, causal=c["causal"], scale=scale,
                          out=out)
        torch.cuda.synchronize()
        want_k, want_v = kc_before.clone(), vc_before.clone()
        want_k[:, start:start + seq] = k
        want_v[:, start:start + seq] = v
        assert same_bits(kc, want_k), "k_cache: bytes other than the new rows changed, or wrong rows"
        assert same_bits(vc, want_v), "v_cache: bytes other than the new rows changed, or wrong rows"
        starts = [start] * batch
        keys = [torch.cat([kc_before[b, :start], k[b]]) for b in range(batch)]
        vals = [torch.cat([vc_before[b, :start], v[b]]) for b in range(batch)]
    assert res is None or res.data_ptr() == out.data_ptr(), "prefill did not write into out="
    s = scale if scale is not None else 1.0 / math.sqrt(dim)
    return check_numerics(out, q, keys, vals, starts, c["causal"], s, dtype, _case_id(c))


@needs_torch
@pytest.mark.parametrize("case", _prefill_cases(), ids=_case_id)
def test_prefill_matches_reference(case, prefill_kernel):
    run_prefill(case)


@needs_torch
def test_small_prefill_custom_scale_and_chunk(prefill_kernel):
    run_prefill(dict(batch=2, seq=17, group=3, kv_heads=2, dim=80, dtype="f16", mode="mid",
                     causal=True), seed=3, scale=0.3)


@needs_torch
def test_small_prefill_nocache_noncausal(prefill_kernel):
    run_prefill(dict(batch=2, seq=33, group=2, kv_heads=2, dim=64, dtype="bf16", mode="nocache",
                     causal=False), seed=4)


# ---------------------------------------------------------------------------------------------
# Decode sweep (public API, one cache_len for the batch)
# ---------------------------------------------------------------------------------------------
def _decode_cases():
    cases = []
    lens = [0, 1, 17, 1000, "max-1"]
    for i, group in enumerate(GROUPS):
        for j, dtype in enumerate(("f16", "bf16")):
            cases.append(dict(batch=1 + (i % 3), group=group, kv_heads=1 + (i % 2) * 3,
                              dim=DIMS[(i + j) % 6], dtype=dtype, cache_len=lens[(i + j) % 5]))
    return cases


def _decode_id(c):
    return f"G{c['group']}-kv{c['kv_heads']}-d{c['dim']}-{c['dtype']}-len{c['cache_len']}-b{c['batch']}"


@needs_torch
@pytest.mark.parametrize("case", _decode_cases(), ids=_decode_id)
def test_decode_matches_reference(case, decode_kernel):
    max_seq = 1100
    n = max_seq - 1 if case["cache_len"] == "max-1" else case["cache_len"]
    batch, kv_heads = case["batch"], case["kv_heads"]
    q, k, v, kc, vc = decode_inputs(batch, kv_heads * case["group"], kv_heads, case["dim"],
                                    max_seq, [n] * batch, case["dtype"], seed=11)
    kc_before, vc_before = kc.clone(), vc.clone()
    out = nan_like(q)
    gqa.decode(q, k, v, kc, vc, n, out=out)
    torch.cuda.synchronize()
    want_k, want_v = expected_decode_caches(kc_before, vc_before, k, v, [n] * batch)
    assert same_bits(kc, want_k) and same_bits(vc, want_v), "decode wrote the wrong cache bytes"
    check_decode(out, q, k, v, kc_before, vc_before, [n] * batch, case["dtype"], _decode_id(case))


# ---------------------------------------------------------------------------------------------
# Split-KV, per-sequence lengths, batches over one launch (C ABI)
# ---------------------------------------------------------------------------------------------
SPLIT_CASES = [
    # batch, q_heads, kv_heads, dim, max_seq, lens, dtype
    (1, 32, 8, 128, 4096, [4000], "f16"),
    (1, 14, 2, 64, 8192, [8191], "bf16"),
    (2, 32, 32, 96, 2048, [1500, 3], "f16"),
    (5, 16, 1, 256, 1030, [0, 1, 37, 500, 1029], "bf16"),
    (3, 12, 4, 80, 600, [599, 256, 255], "f16"),
    (2, 10, 2, 32, 300, [64, 65], "bf16"),
]


@needs_torch
@pytest.mark.parametrize("case", SPLIT_CASES, ids=lambda c: f"b{c[0]}-{c[1]}:{c[2]}-d{c[3]}-{c[6]}")
def test_split_kv_agrees_with_no_split(case, decode_kernel):
    batch, hq, hkv, dim, max_seq, lens, dtype = case
    q, k, v, kc, vc = decode_inputs(batch, hq, hkv, dim, max_seq, lens, dtype, seed=5)
    kc_before, vc_before = kc.clone(), vc.clone()
    want_k, want_v = expected_decode_caches(kc_before, vc_before, k, v, lens)
    results = {}
    for splits in (1, 0, 2, 3, 7, 16):
        kc.copy_(kc_before)
        vc.copy_(vc_before)
        out, _ = split_decode(q, k, v, kc, vc, lens, num_splits=splits,
                            workspace=None if splits == 1 else "auto")
        torch.cuda.synchronize()
        assert same_bits(kc, want_k) and same_bits(vc, want_v), f"splits={splits}: cache bytes"
        check_decode(out, q, k, v, kc_before, vc_before, lens, dtype, f"splits={splits}")
        results[splits] = out
    # Same fp32 math in another order: at most about one ulp of the output apart.
    ulp = {"f16": 2.0 ** -10, "bf16": 2.0 ** -7}[dtype]
    scale_out = results[1].float().abs().max().item()
    for splits, out in results.items():
        diff = (out.float() - results[1].float()).abs().max().item()
        assert diff <= 2 * ulp * max(scale_out, 1.0), f"splits={splits} vs none: {diff:.3g}"


@needs_torch
def test_small_decode_per_sequence_lengths_and_splits(decode_kernel):
    lens = [0, 1, 31, 32, 33, 70]
    q, k, v, kc, vc = decode_inputs(6, 8, 2, 128, 71, lens, "f16", seed=6)
    kc_before, vc_before = kc.clone(), vc.clone()
    for splits in (1, 0, 3):
        kc.copy_(kc_before)
        vc.copy_(vc_before)
        out, _ = split_decode(q, k, v, kc, vc, lens, num_splits=splits,
                            workspace=None if splits == 1 else "auto")
        torch.cuda.synchronize()
        want_k, want_v = expected_decode_caches(kc_before, vc_before, k, v, lens)
        assert same_bits(kc, want_k) and same_bits(vc, want_v)
        check_decode(out, q, k, v, kc_before, vc_before, lens, "f16", f"splits={splits}")


@needs_torch
def test_batch_larger_than_one_launch(decode_kernel):
    """Batches over 256 sequences take several launches (per-sequence starts by value)."""
    batch = 300
    gen = torch.Generator().manual_seed(7)
    lens = torch.randint(0, 39, (batch,), generator=gen).tolist()
    q, k, v, kc, vc = decode_inputs(batch, 4, 2, 64, 40, lens, "bf16", seed=7)
    kc_before, vc_before = kc.clone(), vc.clone()
    out, _ = split_decode(q, k, v, kc, vc, lens, num_splits=2)
    torch.cuda.synchronize()
    want_k, want_v = expected_decode_caches(kc_before, vc_before, k, v, lens)
    assert same_bits(kc, want_k) and same_bits(vc, want_v)
    check_decode(out, q, k, v, kc_before, vc_before, lens, "bf16", "batch 300 decode")
    run_prefill(dict(batch=batch, seq=3, group=2, kv_heads=1, dim=32, dtype="f16", mode="start1",
                     causal=True), seed=8)


# ---------------------------------------------------------------------------------------------
# NaN past the attended range, determinism, CPU agreement, rejections, streams, graphs
# ---------------------------------------------------------------------------------------------
@needs_torch
def test_small_nan_past_the_attended_range_changes_nothing(decode_kernel):
    lens = [5, 40]
    q, k, v, kc_nan, vc_nan = decode_inputs(2, 6, 2, 96, 64, lens, "f16", seed=9)
    gen = torch.Generator(device="cuda").manual_seed(10)
    kc_rand, vc_rand = kc_nan.clone(), vc_nan.clone()
    for b, n in enumerate(lens):  # the same valid rows; random instead of NaN past them
        kc_rand[b, n:] = randn(kc_rand[b, n:].shape, "f16", gen)
        vc_rand[b, n:] = randn(vc_rand[b, n:].shape, "f16", gen)
    for splits in (1, 3):
        ws = None if splits == 1 else "auto"
        a, _ = split_decode(q, k, v, kc_nan.clone(), vc_nan.clone(), lens, num_splits=splits, workspace=ws)
        b_, _ = split_decode(q, k, v, kc_rand.clone(), vc_rand.clone(), lens, num_splits=splits, workspace=ws)
        torch.cuda.synchronize()
        assert torch.isfinite(a.float()).all()
        assert same_bits(a, b_), f"splits={splits}: cache slots past cache_len+1 changed the output"
    # Prefill: rows past start+seq_len are NaN in make_cache; compare with random ones.
    gen = torch.Generator(device="cuda").manual_seed(12)
    q = randn((1, 9, 4, 64), "bf16", gen)
    kn = randn((1, 9, 2, 64), "bf16", gen)
    vn = randn((1, 9, 2, 64), "bf16", gen)
    kc = make_cache(1, 32, 2, 64, [7], "bf16", gen)
    vc = make_cache(1, 32, 2, 64, [7], "bf16", gen)
    kr, vr = kc.clone(), vc.clone()
    kr[0, 7:] = randn(kr[0, 7:].shape, "bf16", gen)
    vr[0, 7:] = randn(vr[0, 7:].shape, "bf16", gen)
    for causal in (True, False):
        a, b_ = nan_like(q), nan_like(q)
        gqa.prefill(q, kn, vn, kc.clone(), vc.clone(), start_pos=7, causal=causal, out=a)
        gqa.prefill(q, kn, vn, kr.clone(), vr.clone(), start_pos=7, causal=causal, out=b_)
        torch.cuda.synchronize()
        assert torch.isfinite(a.float()).all() and same_bits(a, b_)


@needs_torch
def test_250_calls_bitwise_identical():
    gen = torch.Generator(device="cuda").manual_seed(13)
    q = randn((2, 50, 8, 128), "f16", gen)
    k = randn((2, 50, 2, 128), "f16", gen)
    v = randn((2, 50, 2, 128), "f16", gen)
    kc = make_cache(2, 128, 2, 128, [20, 20], "f16", gen)
    vc = make_cache(2, 128, 2, 128, [20, 20], "f16", gen)
    first = nan_like(q)
    gqa.prefill(q, k, v, kc, vc, start_pos=20, out=first)
    lens = [3000, 17]
    dq, dk, dv, dkc, dvc = decode_inputs(2, 32, 8, 128, 3100, lens, "bf16", seed=14)
    dfirst, ws = split_decode(dq, dk, dv, dkc, dvc, lens, num_splits=0)
    dfirst = dfirst.clone()
    out, dout = nan_like(q), nan_like(dq)
    for i in range(250):
        gqa.prefill(q, k, v, kc, vc, start_pos=20, out=out)
        split_decode(dq, dk, dv, dkc, dvc, lens, num_splits=0, workspace=ws, out=dout)
        if i % 50 == 49:
            torch.cuda.synchronize()
            assert same_bits(out, first), f"prefill call {i + 1} differs from the first"
            assert same_bits(dout, dfirst), f"decode call {i + 1} differs from the first"


def assert_cpu_and_cuda_agree(gpu, cpu, cache_gpu, cache_cpu, dtype, kernel):
    """The CUDA output within a few ulp of the CPU backend's, and the same cache bytes."""
    torch.cuda.synchronize()
    a = host(gpu).astype(np.float64)
    diff = np.abs(a - np.asarray(cpu).astype(np.float64)).max()
    # Both accumulate in fp32. The SIMT kernels keep P in fp32 like the CPU, so only the final
    # rounding differs (about one ulp); the tensor-core kernels also round P to the storage
    # type before P·V (as FlashAttention does), which may cost about one more ulp of |V|.
    ulp = {"f16": 2.0 ** -10, "bf16": 2.0 ** -7}[dtype] * max(1.0, np.abs(a).max())
    allowed = 2 * ulp if kernel == "simt" else 4 * ulp
    assert diff <= allowed, f"{dtype} {kernel}: CPU and CUDA differ by {diff:.3g}"
    assert np.array_equal(host(cache_gpu).view(np.uint16), cache_cpu.view(np.uint16)), "caches differ"


@needs_torch
def test_small_cpu_and_cuda_agree(prefill_kernel):
    for dtype, dim in (("f16", 128), ("bf16", 80)):
        gen = torch.Generator(device="cuda").manual_seed(15)
        q = randn((2, 21, 6, dim), dtype, gen)
        k = randn((2, 21, 3, dim), dtype, gen)
        v = randn((2, 21, 3, dim), dtype, gen)
        kc = make_cache(2, 40, 3, dim, [4, 4], dtype, gen)
        vc = make_cache(2, 40, 3, dim, [4, 4], dtype, gen)
        kc_h, vc_h = host(kc), host(vc)
        gpu = nan_like(q)
        gqa.prefill(q, k, v, kc, vc, start_pos=4, out=gpu)
        cpu = gqa.prefill(host(q), host(k), host(v), kc_h, vc_h, start_pos=4)
        assert_cpu_and_cuda_agree(gpu, cpu, kc, kc_h, dtype, prefill_kernel)


@needs_torch
def test_small_cpu_and_cuda_agree_decode(decode_kernel):
    for dtype, dim, hq, hkv, n in (("f16", 128, 8, 2, 300), ("bf16", 64, 9, 3, 77)):
        q, k, v, kc, vc = decode_inputs(2, hq, hkv, dim, 320, [n, n], dtype, seed=23)
        kc_h, vc_h = host(kc), host(vc)
        gpu = nan_like(q)
        gqa.decode(q, k, v, kc, vc, n, out=gpu)
        cpu = gqa.decode(host(q), host(k), host(v), kc_h, vc_h, n)
        assert_cpu_and_cuda_agree(gpu, cpu, kc, kc_h, dtype, decode_kernel)


def assert_prefill_rejected(q, k, error, match):
    """gqa.prefill(q, k, k) raises `error` (its message matching `match`) and writes nothing."""
    out = torch.full(q.shape, float("nan"), dtype=q.dtype, device="cuda")
    with pytest.raises(error, match=match):
        gqa.prefill(q, k, k, out=out)
    torch.cuda.synchronize()
    assert torch.isnan(out.float()).all(), "a rejected call wrote into out"


@needs_torch
def test_small_unknown_prefill_kernel_is_rejected(monkeypatch):
    monkeypatch.setenv("GQA_CUDA_PREFILL", "fastest")
    gen = torch.Generator(device="cuda").manual_seed(21)
    q = randn((1, 5, 2, 64), "f16", gen)
    k = randn((1, 5, 1, 64), "f16", gen)
    assert_prefill_rejected(q, k, gqa.InvalidArgumentError, "GQA_CUDA_PREFILL")


@needs_torch
def test_small_unknown_decode_kernel_is_rejected(monkeypatch):
    monkeypatch.setenv("GQA_CUDA_DECODE", "fastest")
    q, k, v, kc, vc = decode_inputs(1, 8, 2, 64, 16, [5], "f16", seed=22)
    kc_before, vc_before = kc.clone(), vc.clone()
    out = nan_like(q)
    with pytest.raises(gqa.InvalidArgumentError, match="GQA_CUDA_DECODE"):
        gqa.decode(q, k, v, kc, vc, 5, out=out)
    torch.cuda.synchronize()
    assert torch.isnan(out.float()).all(), "a rejected call wrote into out"
    assert same_bits(kc, kc_before) and same_bits(vc, vc_before), "a rejected call wrote a cache"


# The ring depths of the 99 KB-per-block devices (sm_86/89/120), run on this GPU through
# GQA_CUDA_SMEM_LIMIT: a shallower cp.async ring changes when tiles load, not the arithmetic.
@needs_torch
@pytest.mark.parametrize("dim", [128, 256])
def test_small_shallow_rings_give_the_same_bits(dim, decode_kernel, monkeypatch):
    lens = [0, 63, 64, 300, 999]
    q, k, v, kc, vc = decode_inputs(5, 16, 2, dim, 1000, lens, "bf16", seed=31)
    kc_before, vc_before = kc.clone(), vc.clone()
    deep = nan_like(q)
    gqa.decode(q, k, v, kc, vc, lens, out=deep)
    kc.copy_(kc_before)
    vc.copy_(vc_before)
    monkeypatch.setenv("GQA_CUDA_SMEM_LIMIT", str(99 * 1024))
    shallow = nan_like(q)
    gqa.decode(q, k, v, kc, vc, lens, out=shallow)
    torch.cuda.synchronize()
    want_k, want_v = expected_decode_caches(kc_before, vc_before, k, v, lens)
    assert same_bits(kc, want_k) and same_bits(vc, want_v), "shallow ring: cache bytes"
    assert same_bits(shallow, deep), "the 99 KB ring depth gave other bits than the deepest one"
    check_decode(shallow, q, k, v, kc_before, vc_before, lens, "bf16", f"d{dim} 99 KB ring")


@needs_torch
def test_small_rejected_call_writes_nothing():
    gen = torch.Generator(device="cuda").manual_seed(16)
    q = randn((1, 5, 4, 48), "f16", gen)  # head_dim 48: valid on the CPU, no CUDA kernel
    k = randn((1, 5, 2, 48), "f16", gen)
    v = randn((1, 5, 2, 48), "f16", gen)
    kc = make_cache(1, 16, 2, 48, [3], "f16", gen)
    vc = make_cache(1, 16, 2, 48, [3], "f16", gen)
    out = nan_like(q)
    snap = [t.clone() for t in (out, kc, vc)]

    def untouched():
        torch.cuda.synchronize()
        return all(same_bits(a, b) for a, b in zip((out, kc, vc), snap))

    with pytest.raises(gqa.GQAError, match="head_dim"):
        gqa.prefill(q, k, v, kc, vc, start_pos=3, out=out)
    assert untouched()
    q64 = randn((1, 5, 4, 64), "f16", gen)
    k64 = randn((1, 5, 2, 64), "f16", gen)
    kc64 = make_cache(1, 16, 2, 64, [3], "f16", gen)
    vc64 = make_cache(1, 16, 2, 64, [3], "f16", gen)
    out64 = nan_like(q64)
    snap64 = [t.clone() for t in (out64, kc64, vc64)]
    with pytest.raises(gqa.GQAError):  # cache overflow: 12 + 5 > 16
        gqa.prefill(q64, k64, k64, kc64, vc64, start_pos=12, out=out64)
    with pytest.raises((gqa.GQAError, ValueError, TypeError)):  # host cache with device q
        gqa.prefill(q64, k64, k64, kc64.cpu(), vc64, start_pos=3, out=out64)
    torch.cuda.synchronize()
    assert all(same_bits(a, b) for a, b in zip((out64, kc64, vc64), snap64))
    # Explicit splits with a workspace that is too small.
    lens = [10]
    dq, dk, dv, dkc, dvc = decode_inputs(1, 4, 2, 64, 16, lens, "f16", seed=17)
    dsnap = [dkc.clone(), dvc.clone()]
    dout = nan_like(dq)
    with pytest.raises(gqa.InvalidArgumentError, match="workspace"):
        split_decode(dq, dk, dv, dkc, dvc, lens, num_splits=8,
                   workspace=torch.empty(64, dtype=torch.uint8, device="cuda"), out=dout)
    torch.cuda.synchronize()
    assert same_bits(dkc, dsnap[0]) and same_bits(dvc, dsnap[1]) and torch.isnan(dout.float()).all()


@needs_torch
def test_small_non_default_stream():
    gen = torch.Generator(device="cuda").manual_seed(18)
    q = randn((2, 40, 8, 64), "bf16", gen)
    k = randn((2, 40, 4, 64), "bf16", gen)
    v = randn((2, 40, 4, 64), "bf16", gen)
    want = nan_like(q)
    gqa.prefill(q, k, v, out=want)
    got = nan_like(q)
    stream = torch.cuda.Stream()
    stream.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(stream):
        gqa.prefill(q, k, v, out=got)  # on the producer's (current) stream
    stream.synchronize()
    assert same_bits(got, want)
    got2 = nan_like(q)
    torch.cuda.synchronize()
    gqa.prefill(q, k, v, out=got2, stream=stream.cuda_stream)
    stream.synchronize()
    assert same_bits(got2, want)


@needs_torch
def test_decode_captured_in_a_cuda_graph():
    lens = [700, 5]
    q, k, v, kc, vc = decode_inputs(2, 16, 4, 128, 800, lens, "f16", seed=19)
    kc_before, vc_before = kc.clone(), vc.clone()
    size_probe, ws = split_decode(q, k, v, kc.clone(), vc.clone(), lens, num_splits=0)
    out = nan_like(q)
    stream = torch.cuda.Stream()
    stream.wait_stream(torch.cuda.current_stream())
    torch.cuda.synchronize()
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph, stream=stream):
        split_decode(q, k, v, kc, vc, lens, num_splits=0, workspace=ws, out=out,
                   stream=stream.cuda_stream)
    # New inputs in place, then replay: the graph computes with them.
    gen = torch.Generator(device="cuda").manual_seed(20)
    q.copy_(randn(q.shape, "f16", gen))
    k.copy_(randn(k.shape, "f16", gen))
    kc.copy_(kc_before)
    vc.copy_(vc_before)
    graph.replay()
    torch.cuda.synchronize()
    check_decode(out, q, k, v, kc_before, vc_before, lens, "f16", "graph replay")
    want_k, want_v = expected_decode_caches(kc_before, vc_before, k, v, lens)
    assert same_bits(kc, want_k) and same_bits(vc, want_v)


# ---------------------------------------------------------------------------------------------
# CuPy (runs where CuPy is importable): f16 only, against a NumPy float64 reference.
# ---------------------------------------------------------------------------------------------
@pytest.mark.skipif(not HAVE_CUPY, reason="needs CuPy")
def test_small_cupy_prefill_and_decode():
    rng = np.random.default_rng(21)
    b, s, hq, hkv, d, max_seq, start = 2, 11, 6, 2, 64, 32, 5
    q = rng.standard_normal((b, s, hq, d)).astype(np.float16)
    k = rng.standard_normal((b, s, hkv, d)).astype(np.float16)
    v = rng.standard_normal((b, s, hkv, d)).astype(np.float16)
    kc = np.full((b, max_seq, hkv, d), np.nan, np.float16)
    vc = np.full((b, max_seq, hkv, d), np.nan, np.float16)
    kc[:, :start] = rng.standard_normal((b, start, hkv, d))
    vc[:, :start] = rng.standard_normal((b, start, hkv, d))
    dkc, dvc = cupy.asarray(kc), cupy.asarray(vc)
    out = gqa.prefill(cupy.asarray(q), cupy.asarray(k), cupy.asarray(v), dkc, dvc, start_pos=start)
    cupy.cuda.runtime.deviceSynchronize()
    kc[:, start:start + s] = k
    vc[:, start:start + s] = v
    assert np.array_equal(cupy.asnumpy(dkc).view(np.uint16), kc.view(np.uint16))
    g = hq // hkv
    keys = np.repeat(kc[:, : start + s].astype(np.float64), g, axis=2)
    vals = np.repeat(vc[:, : start + s].astype(np.float64), g, axis=2)
    sc = np.einsum("bshd,bthd->bhst", q.astype(np.float64), keys) / math.sqrt(d)
    mask = np.arange(start + s)[None, :] > (start + np.arange(s))[:, None]
    sc[:, :, mask] = -np.inf
    p = np.exp(sc - sc.max(-1, keepdims=True))
    p /= p.sum(-1, keepdims=True)
    ref = np.einsum("bhst,bthd->bshd", p, vals)
    err = np.abs(cupy.asnumpy(out).astype(np.float64) - ref).max()
    assert err <= ABS_TOL["f16"], f"cupy prefill error {err:.3g}"
    # Decode one more token at cache_len start + s.
    n = start + s
    q1 = rng.standard_normal((b, 1, hq, d)).astype(np.float16)
    k1 = rng.standard_normal((b, 1, hkv, d)).astype(np.float16)
    v1 = rng.standard_normal((b, 1, hkv, d)).astype(np.float16)
    out1 = gqa.decode(cupy.asarray(q1), cupy.asarray(k1), cupy.asarray(v1), dkc, dvc, n)
    cupy.cuda.runtime.deviceSynchronize()
    kc[:, n] = k1[:, 0]
    vc[:, n] = v1[:, 0]
    keys = np.repeat(kc[:, : n + 1].astype(np.float64), g, axis=2)
    vals = np.repeat(vc[:, : n + 1].astype(np.float64), g, axis=2)
    sc = np.einsum("bshd,bthd->bhst", q1.astype(np.float64), keys) / math.sqrt(d)
    p = np.exp(sc - sc.max(-1, keepdims=True))
    p /= p.sum(-1, keepdims=True)
    ref = np.einsum("bhst,bthd->bshd", p, vals)
    err = np.abs(cupy.asnumpy(out1).astype(np.float64) - ref).max()
    assert err <= ABS_TOL["f16"], f"cupy decode error {err:.3g}"


# ---------------------------------------------------------------------------------------------
# The variants (issue 15): window, softcap, sinks, lse, huge scales, head_dim 512, strided
# views, merge_states. The reference runs on host copies (gqa.reference, float64).
# ---------------------------------------------------------------------------------------------
LSE_REL_TOL = 1e-4  # fp32 lse of the same rounded inputs, relative to max(1, |lse|)


def _f64(t):
    return host(t).astype(np.float64)


def _sinks(hq, gen):
    s = torch.randn(hq, generator=gen, device="cuda") * 2
    s[min(1, hq - 1)] = float("-inf")  # a head without a sink
    return s


def _max_scale(dim):
    return np.finfo(np.float32).max / (2.0 * dim * 65504.0 ** 2) * (1 - 1e-6)


def _check_variant(out, lse, want, want_lse, dtype, what):
    assert torch.isfinite(out.float()).all(), f"{what}: NaN/inf in out (a key outside the window was read?)"
    err = np.abs(_f64(out) - want).max()
    assert err <= ABS_TOL[dtype], f"{what}: error {err:.3g}"
    got_lse = lse.cpu().numpy().astype(np.float64)
    same_inf = np.isneginf(got_lse) & np.isneginf(want_lse)
    rel = np.where(same_inf, 0.0, np.abs(got_lse - want_lse) / np.maximum(1.0, np.abs(want_lse)))
    assert rel.max() <= LSE_REL_TOL, f"{what}: lse error {rel.max():.3g}"


def _options(opts, hq, dim, gen):
    """(kwargs for gqa/gqa.reference, sinks tensor or None) from a case's options."""
    opts = dict(opts)
    sinks = _sinks(hq, gen) if opts.pop("sinks", False) else None
    if opts.get("scale") == "max":
        opts["scale"] = _max_scale(dim)
    return opts, sinks


VARIANT_PREFILL = [
    dict(window=(0, -1)), dict(window=(1, -1)), dict(window=(5, 3), causal=False), dict(window=(1000, -1)),
    dict(window=(-1, 0), causal=False), dict(softcap=5.0, scale=1.0), dict(sinks=True),
    dict(window=(6, -1), softcap=5.0, sinks=True), dict(scale=1e20, sinks=True), dict(scale="max"),
    dict(scale=1e20, softcap=30.0, window=(9, -1)),
]


@needs_torch
@pytest.mark.parametrize("opts", VARIANT_PREFILL, ids=str)
@pytest.mark.parametrize("dim,dtype", [(64, "f16"), (128, "bf16"), (512, "bf16")])
def test_variants_prefill(opts, dim, dtype, prefill_kernel):
    gen = torch.Generator(device="cuda").manual_seed(31)
    batch, seq, start, kv_heads, group = 2, 77, 30, 2, 3
    q_heads = kv_heads * group
    q = randn((batch, seq, q_heads, dim), dtype, gen)
    k = randn((batch, seq, kv_heads, dim), dtype, gen)
    v = randn((batch, seq, kv_heads, dim), dtype, gen)
    kc = make_cache(batch, start + seq + 5, kv_heads, dim, [start] * batch, dtype, gen)
    vc = make_cache(batch, start + seq + 5, kv_heads, dim, [start] * batch, dtype, gen)
    opts, sinks = _options(opts, q_heads, dim, gen)
    causal = opts.pop("causal", True)
    ref_kc, ref_vc = host(kc).copy(), host(vc).copy()
    left = opts.get("window", (-1, -1))[0]
    if left >= 0:  # keys no query sees: NaN, so a read shows
        kc[:, : max(0, start - left)] = float("nan")
        vc[:, : max(0, start - left)] = float("nan")
    out = nan_like(q)
    _, lse = gqa.prefill(q, k, v, kc, vc, start_pos=start, causal=causal, sinks=sinks, return_lse=True, out=out,
                         **opts)
    torch.cuda.synchronize()
    want, want_lse = gqa.reference.prefill(host(q), host(k), host(v), ref_kc, ref_vc, start_pos=start, causal=causal,
                                           sinks=None if sinks is None else sinks.cpu().numpy(), return_lse=True,
                                           **opts)
    _check_variant(out, lse, want, want_lse, dtype, f"prefill {opts} d{dim} {prefill_kernel}")
    written = host(kc)[:, start:start + seq]
    assert np.array_equal(written.view(np.uint16), ref_kc[:, start:start + seq].view(np.uint16))


VARIANT_DECODE = [
    dict(window=(0, -1)), dict(window=(1, -1)), dict(window=(40, -1), sinks=True), dict(window=(5000, -1)),
    dict(softcap=4.0, scale=1.0), dict(sinks=True), dict(window=(300, -1), softcap=4.0, sinks=True),
    dict(scale=1e20), dict(scale="max", sinks=True),
]


@needs_torch
@pytest.mark.parametrize("num_splits", [1, 0, 7])
@pytest.mark.parametrize("opts", VARIANT_DECODE, ids=str)
@pytest.mark.parametrize("q_heads,kv_heads,dim,dtype", [(8, 2, 128, "f16"), (5, 1, 80, "bf16"), (4, 1, 512, "bf16")])
def test_variants_decode(opts, q_heads, kv_heads, dim, dtype, num_splits, decode_kernel):
    gen = torch.Generator(device="cuda").manual_seed(32)
    lens = [0, 5, 100, 1000]
    q, k, v, kc, vc = decode_inputs(len(lens), q_heads, kv_heads, dim, 1001, lens, dtype, seed=33)
    opts, sinks = _options(opts, q_heads, dim, gen)
    ref_kc, ref_vc = host(kc).copy(), host(vc).copy()
    left = opts.get("window", (-1, -1))[0]
    for b, n in enumerate(lens):  # left of the window: NaN
        if left >= 0:
            kc[b, : max(0, n - left)] = float("nan")
            vc[b, : max(0, n - left)] = float("nan")
    out = nan_like(q)
    ws = None
    if num_splits != 1:
        size = gqa.decode_workspace_size(len(lens), q_heads, kv_heads, dim, 1001, dtype=_DTYPE_NAMES[q.dtype],
                                         num_splits=num_splits)
        ws = torch.empty(size, dtype=torch.uint8, device="cuda") if size else None
    _, lse = gqa.decode(q, k, v, kc, vc, lens, num_splits=num_splits, workspace=ws, sinks=sinks, return_lse=True,
                        out=out, **opts)
    torch.cuda.synchronize()
    want, want_lse = gqa.reference.decode(host(q), host(k), host(v), ref_kc, ref_vc, lens,
                                          sinks=None if sinks is None else sinks.cpu().numpy(), return_lse=True,
                                          **opts)
    _check_variant(out, lse, want, want_lse, dtype, f"decode {opts} d{dim} splits {num_splits} {decode_kernel}")
    for b, n in enumerate(lens):
        assert np.array_equal(host(kc)[b, n].view(np.uint16), ref_kc[b, n].view(np.uint16))


@needs_torch
def test_small_variants_fused_qkv_views_equal_contiguous(prefill_kernel, decode_kernel):
    """q, k, v as views of one fused QKV projection and out as a view of padded rows: no copy,
    the bits of the contiguous call, the pad never written."""
    gen = torch.Generator(device="cuda").manual_seed(34)
    batch, seq, q_heads, kv_heads, dim = 2, 19, 4, 2, 64
    for tokens in (seq, 1):  # prefill, then decode
        fused = randn((batch, tokens, q_heads + 2 * kv_heads, dim), "f16", gen)
        q, k, v = fused[:, :, :q_heads], fused[:, :, q_heads:q_heads + kv_heads], fused[:, :, q_heads + kv_heads:]
        padded = torch.full((batch, tokens, q_heads, dim + 8), float("nan"), device="cuda", dtype=torch.float16)
        out = padded[..., :dim]
        kc = make_cache(batch, 40, kv_heads, dim, [7] * batch, "f16", gen)
        vc = make_cache(batch, 40, kv_heads, dim, [7] * batch, "f16", gen)
        kc2, vc2 = kc.clone(), vc.clone()
        want = nan_like(q.contiguous())
        if tokens > 1:
            _, lse = gqa.prefill(q, k, v, kc, vc, start_pos=7, window=(5, -1), return_lse=True, out=out)
            _, want_lse = gqa.prefill(q.contiguous(), k.contiguous(), v.contiguous(), kc2, vc2, start_pos=7,
                                      window=(5, -1), return_lse=True, out=want)
        else:
            _, lse = gqa.decode(q, k, v, kc, vc, 7, window=(5, -1), return_lse=True, out=out)
            _, want_lse = gqa.decode(q.contiguous(), k.contiguous(), v.contiguous(), kc2, vc2, 7, window=(5, -1),
                                     return_lse=True, out=want)
        torch.cuda.synchronize()
        assert same_bits(out.contiguous(), want) and torch.equal(lse, want_lse)
        assert torch.isnan(padded[..., dim:].float()).all(), "the pad of out was written"
        assert same_bits(kc, kc2) and same_bits(vc, vc2)


@needs_torch
def test_small_strides_off_16_byte_rows_are_rejected():
    gen = torch.Generator(device="cuda").manual_seed(35)
    buf = randn((1, 5, 4, 68), "f16", gen)  # rows of 68 elements: 136 bytes, not a multiple of 16
    q = buf[..., :64]
    k = randn((1, 5, 2, 64), "f16", gen)
    assert_prefill_rejected(q, k, gqa.UnsupportedError, "q_strides")


@needs_torch
def test_small_merge_states_on_cuda(decode_kernel):
    """Two decodes over the halves of a cache (return_lse), merged on CUDA with sinks: the
    one-call decode, and the CPU merge of the same partials within an ulp."""
    gen = torch.Generator(device="cuda").manual_seed(36)
    q_heads, kv_heads, dim, n = 8, 2, 128, 700
    q, k, v, kc, vc = decode_inputs(1, q_heads, kv_heads, dim, n + 1, [n], "bf16", seed=37)
    sinks = _sinks(q_heads, gen)
    whole = nan_like(q)
    gqa.decode(q, k, v, kc.clone(), vc.clone(), n, sinks=sinks, out=whole)
    # Part 1: keys 0 .. 299 (a decode at position 299 of a copy whose row 299 is that key);
    # part 2: keys 300 .. n (the new token included), as the window of the real position.
    cut = 300
    kc1, vc1 = kc.clone(), vc.clone()
    first, lse1 = gqa.decode(q, kc1[:, cut - 1:cut].clone(), vc1[:, cut - 1:cut].clone(), kc1, vc1, cut - 1,
                             return_lse=True)
    second, lse2 = gqa.decode(q, k, v, kc.clone(), vc.clone(), n, window=(n - cut, -1), return_lse=True)
    states, lses = torch.stack([first, second]), torch.stack([lse1, lse2])
    merged, lse = gqa.merge_states(states, lses, sinks=sinks, return_lse=True)
    torch.cuda.synchronize()
    assert merged.device.type == "cuda" and lse.device.type == "cuda"
    diff = (merged.float() - whole.float()).abs().max().item()
    assert diff <= 2 * 2.0 ** -7, f"merged vs whole decode: {diff:.3g}"
    cpu, cpu_lse = gqa.merge_states(host(states), lses.cpu().numpy(), sinks=sinks.cpu().numpy(), return_lse=True)
    assert np.abs(_f64(merged) - cpu.astype(np.float64)).max() <= 2.0 ** -7
    assert np.abs(lse.cpu().numpy() - cpu_lse).max() <= 1e-5
    empty = torch.full_like(lse1, float("-inf"))  # a partial that saw nothing weighs 0, unread
    junk = torch.full_like(first, float("nan"))
    alone, _ = gqa.merge_states(torch.stack([first, junk]), torch.stack([lse1, empty]), return_lse=True)
    torch.cuda.synchronize()
    assert same_bits(alone, gqa.merge_states(first[None], lse1[None]))
