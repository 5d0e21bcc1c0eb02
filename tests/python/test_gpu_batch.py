"""gqa.batch_attention on a real GPU (pytest marker `gpu`), with torch CUDA tensors and device
int32 metadata.

Skipped without a usable CUDA device or without PyTorch with CUDA; fails when a device is
present and anything is wrong. Every case is a batch_support case (shuffled pages, NaN wherever
a correct call must not read) copied to the device, checked against the float64 reference one
sequence at a time, the caches bit for bit. What it checks:
  * mixed batches (decode, chunks after a prefix, q_len 0, a prompt, a long chunk, a
    speculative verification) at page sizes 1, 7, 16, 256, f16 and bf16, causal and not, each
    decode and prefill kernel forced;
  * the variant options (window, softcap, sinks, lse) with and without split-KV;
  * shuffled pages bitwise equal to the contiguous layout; speculative verification k = 1..8;
    split-KV (automatic with a workspace, explicit, none) and CPU/CUDA agreement;
  * a CUDA graph captured once and replayed with new metadata (other lengths, pages, q_len
    split) written into the same device buffers;
  * metadata out of range: skipped, GQA_BATCH_FLAG_* in error_flags, nothing written outside
    the pool (guard pages on both sides); GQA_VALIDATE_METADATA=1 rejecting the same calls with
    nothing written.
Tests named test_small_* are the subset tests/gpu/run.sh runs under compute-sanitizer.
"""
import numpy as np
import pytest

gqa = pytest.importorskip("gqa")
torch = pytest.importorskip("torch")

from batch_support import PAGE_SIZES, contiguous, expected, make_case  # noqa: E402
from gqa_testing import BF16, TOL, max_err  # noqa: E402

pytestmark = pytest.mark.gpu


def _cuda_ok():
    try:
        return bool(gqa.cuda_available()) and torch.cuda.is_available()
    except Exception:  # noqa: BLE001 - any failure means "no usable device"
        return False


if not _cuda_ok():
    pytest.skip("no usable CUDA device for libgqa, or PyTorch without CUDA", allow_module_level=True)

DTYPES = [np.dtype(np.float16), BF16]
# decode steps, a chunk after a prefix, an empty row, a prompt, a long chunk, a 5-token verification, a decode step
MIXED = ([1, 9, 0, 13, 70, 5, 1], [30, 17, 5, 0, 3, 300, 0])
MIXED_ROWS = [(int(a), int(b)) for a, b in zip(np.cumsum([0] + MIXED[0][:-1]), np.cumsum(MIXED[0]))]


def cuda(a):
    """A NumPy array (bfloat16 via ml_dtypes) as a CUDA tensor with the same bits."""
    if a.dtype == BF16:
        return torch.from_numpy(a.view(np.int16).copy()).cuda().view(torch.bfloat16)
    return torch.from_numpy(np.ascontiguousarray(a)).cuda()


def host(t, dtype):
    if t.dtype == torch.bfloat16:
        return t.view(torch.int16).cpu().numpy().view(dtype)
    return t.cpu().numpy()


class Device:
    """A case's tensors and metadata on the device; the pool has one NaN guard page on each side
    (the caches passed are the views between them)."""

    def __init__(self, case, rows=None):
        self.dtype = case.q.dtype
        self.q, self.k, self.v = cuda(case.q), cuda(case.k), cuda(case.v)
        self.pools = []
        for cache in (case.k_cache, case.v_cache):
            guard = np.full((1,) + cache.shape[1:], np.nan, cache.dtype)
            self.pools.append(cuda(np.concatenate([guard, cache, guard])))
        self.k_cache, self.v_cache = self.pools[0][1:-1], self.pools[1][1:-1]
        self.q_indptr = cuda(case.q_indptr.astype(np.int32))
        self.kv_lens = cuda(case.kv_lens.astype(np.int32))
        self.page_table = cuda(case.page_table.astype(np.int32))
        self.flags = torch.zeros(1, dtype=torch.int32, device="cuda")
        self.out = torch.full_like(self.q, float("nan"))

    def run(self, **options):
        gqa.batch_attention(self.q, self.k, self.v, self.k_cache, self.v_cache, q_indptr=self.q_indptr,
                            kv_lens=self.kv_lens, page_table=self.page_table, out=self.out,
                            error_flags=self.flags, **options)
        torch.cuda.synchronize()
        return host(self.out, self.dtype)

    def caches(self):
        return host(self.k_cache, self.dtype), host(self.v_cache, self.dtype)

    def guards_intact(self):
        return all(torch.isnan(p[[0, -1]].float()).all().item() for p in self.pools)


def workspace_for(case, num_splits=0):
    total_q, Hq, D = case.q.shape
    size = gqa.batch_workspace_size(case.batch, total_q, Hq, case.k.shape[1], D, case.page_size,
                                    case.k_cache.shape[0], case.page_table.shape[1],
                                    dtype="bfloat16" if case.q.dtype == BF16 else "float16", device="cuda",
                                    num_splits=num_splits)
    return torch.empty(max(size, 1), dtype=torch.uint8, device="cuda")


def check(case, dev, out, **options):
    want, want_k, want_v = expected(case, **{k: v for k, v in options.items() if k == "causal"})
    assert not np.isnan(out).any(), "a row was not written"
    assert max_err(out, want) <= TOL[case.q.dtype]
    k_cache, v_cache = dev.caches()
    assert k_cache.tobytes() == want_k.tobytes() and v_cache.tobytes() == want_v.tobytes()
    assert dev.flags.item() == 0 and dev.guards_intact()


@pytest.fixture(params=["tensor_core", "simt"])
def kernels(request, monkeypatch):
    monkeypatch.setenv("GQA_CUDA_DECODE", request.param)
    monkeypatch.setenv("GQA_CUDA_PREFILL", request.param)
    return request.param


@pytest.mark.parametrize("page_size", PAGE_SIZES)
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("causal", [True, False])
def test_mixed_batch_matches_reference(page_size, dtype, causal, kernels):
    case = make_case(np.random.default_rng(page_size), *MIXED, 14, 2, 64, dtype, page_size)
    dev = Device(case)
    check(case, dev, dev.run(causal=causal, workspace=workspace_for(case)), causal=causal)


@pytest.mark.parametrize("shape", [(4, 4, 32), (6, 2, 80), (16, 1, 128), (8, 2, 256), (12, 3, 96)], ids=str)
def test_every_head_dim_and_group(shape):
    Hq, Hkv, D = shape
    case = make_case(np.random.default_rng(D), *MIXED, Hq, Hkv, D, np.dtype(np.float16), 16)
    dev = Device(case)
    check(case, dev, dev.run(workspace=workspace_for(case)))


def test_small_batch_mixed():
    case = make_case(np.random.default_rng(1), *MIXED, 14, 2, 64, np.dtype(np.float16), 7)
    dev = Device(case)
    check(case, dev, dev.run(workspace=workspace_for(case)))


@pytest.mark.parametrize("page_size", PAGE_SIZES)
def test_shuffled_pages_give_the_contiguous_bits(page_size):
    case = make_case(np.random.default_rng(7), [1, 1, 20, 3, 0, 100], [600, 33, 40, 250, 9, 70], 9, 3, 64,
                     np.dtype(np.float16), page_size)
    paged, dense = Device(case), Device(contiguous(case))
    assert paged.run().tobytes() == dense.run().tobytes()


@pytest.mark.parametrize("k", range(1, 9))
def test_spec_decode_verification(k):
    """k tokens verified in one call: the reference, and the cache bits of k one-token calls."""
    case = make_case(np.random.default_rng(k), [k, k, k], [11, 400, 0], 14, 2, 64, np.dtype(np.float16), 16)
    dev = Device(case)
    check(case, dev, dev.run())
    step = Device(case)
    for j in range(k):
        rows = torch.tensor([case.rows(b).start + j for b in range(case.batch)], device="cuda")
        out = torch.full_like(step.q[rows], float("nan"))
        gqa.batch_attention(step.q[rows], step.k[rows], step.v[rows], step.k_cache, step.v_cache,
                            q_indptr=torch.arange(4, dtype=torch.int32, device="cuda"),
                            kv_lens=step.kv_lens + j, page_table=step.page_table, out=out)
    torch.cuda.synchronize()
    assert all(torch.equal(a.view(torch.int16), b.view(torch.int16)) for a, b in
               ((step.k_cache, dev.k_cache), (step.v_cache, dev.v_cache)))


@pytest.mark.parametrize("num_splits", [0, 1, 2, 7])
def test_split_kv_long_keys_few_sequences(num_splits):
    case = make_case(np.random.default_rng(3), [1, 3, 8], [3000, 777, 64], 8, 2, 128, BF16, 16)
    dev = Device(case)
    out = dev.run(num_splits=num_splits, workspace=workspace_for(case, num_splits))
    check(case, dev, out)
    again = Device(case)
    assert again.run(num_splits=num_splits, workspace=workspace_for(case, num_splits)).tobytes() == out.tobytes()


@pytest.mark.parametrize("page_size", [7, 16])
@pytest.mark.parametrize("causal", [True, False])
@pytest.mark.parametrize("num_splits", [0, 1, 3])
def test_variant_options_match_reference(page_size, causal, num_splits, kernels):
    """Window, softcap, sinks (head 1: -inf) and the lse [Hq, total_q] on a mixed batch, with and
    without split-KV (the sink then joins in the combine), against the reference per sequence."""
    case = make_case(np.random.default_rng(9), *MIXED, 14, 2, 64, np.dtype(np.float16), page_size)
    sinks = np.linspace(-2.0, 2.0, 14).astype(np.float32)
    sinks[1] = -np.inf
    options = dict(causal=causal, window=(20, 3), softcap=30.0)
    want, want_k, want_v, want_lse = expected(case, sinks=sinks, return_lse=True, **options)
    dev = Device(case)
    out, lse = gqa.batch_attention(dev.q, dev.k, dev.v, dev.k_cache, dev.v_cache, q_indptr=dev.q_indptr,
                                   kv_lens=dev.kv_lens, page_table=dev.page_table, out=dev.out,
                                   sinks=torch.from_numpy(sinks).cuda(), return_lse=True, num_splits=num_splits,
                                   workspace=workspace_for(case, num_splits), error_flags=dev.flags, **options)
    torch.cuda.synchronize()
    assert max_err(host(out, case.q.dtype), want) <= TOL[case.q.dtype]
    np.testing.assert_allclose(lse.cpu().numpy(), want_lse, rtol=2e-5, atol=2e-5)
    k_cache, v_cache = dev.caches()
    assert k_cache.tobytes() == want_k.tobytes() and v_cache.tobytes() == want_v.tobytes()
    assert dev.flags.item() == 0 and dev.guards_intact()


def test_cpu_and_cuda_agree():
    case = make_case(np.random.default_rng(4), *MIXED, 14, 2, 64, np.dtype(np.float16), 16)
    k_cache, v_cache = case.copy_caches()
    cpu = gqa.batch_attention(case.q, case.k, case.v, k_cache, v_cache, **case.arguments())
    dev = Device(case)
    assert max_err(dev.run(), cpu) <= TOL[case.q.dtype]
    assert dev.caches()[0].tobytes() == k_cache.tobytes()


def test_graph_captured_once_replays_new_metadata():
    """One captured call; between replays the metadata buffers (and q, k, v) are rewritten with
    other steps of the same shape fields (batch, total_q, max_q_len): each replay computes them."""
    rng = np.random.default_rng(5)
    steps = [([1, 9, 0, 13, 5, 1], [30, 17, 5, 0, 300, 2]), ([5, 1, 13, 1, 0, 9], [3, 100, 40, 7, 9, 0]),
             ([0, 0, 27, 1, 1, 0], [12, 6, 64, 500, 1, 3])]
    cases = [make_case(rng, q, kv, 8, 2, 64, np.dtype(np.float16), 16, spare_pages=20) for q, kv in steps]
    num_pages = max(c.k_cache.shape[0] for c in cases)
    width = max(c.page_table.shape[1] for c in cases)
    for c in cases:  # one pool and table shape for all steps
        pad = ((0, num_pages - c.k_cache.shape[0]),) + ((0, 0),) * 3
        c.k_cache, c.v_cache = np.pad(c.k_cache, pad, constant_values=np.nan), np.pad(c.v_cache, pad, constant_values=np.nan)
        c.page_table = np.pad(c.page_table, ((0, 0), (0, width - c.page_table.shape[1])), constant_values=-1)
    dev = Device(cases[0])
    ws = workspace_for(cases[0])
    Device(cases[0]).run(workspace=ws, max_q_len=27)  # warm-up outside the capture: kernels prepared
    stream = torch.cuda.Stream()
    stream.wait_stream(torch.cuda.current_stream())
    torch.cuda.synchronize()
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph, stream=stream):
        gqa.batch_attention(dev.q, dev.k, dev.v, dev.k_cache, dev.v_cache, q_indptr=dev.q_indptr,
                            kv_lens=dev.kv_lens, page_table=dev.page_table, out=dev.out, workspace=ws,
                            error_flags=dev.flags, max_q_len=27, stream=stream)
    for case in cases:
        new = Device(case)
        for name in ("q", "k", "v", "q_indptr", "kv_lens", "page_table", "out", "flags"):
            getattr(dev, name).copy_(getattr(new, name))
        dev.k_cache.copy_(new.k_cache)
        dev.v_cache.copy_(new.v_cache)
        graph.replay()
        torch.cuda.synchronize()
        check(case, dev, host(dev.out, case.q.dtype))


# Spoiled metadata of the mixed case at page size 7 (sequence 5: 5 tokens after 300 cached;
# sequence 4: 70 after 3): the spoil, the flag, the sequences skipped (rows and pages untouched),
# those run over a bad page (only finite), the (sequence, positions) whose writes are skipped.
SPOILS = {
    "page -1 read": (lambda c: c.page_table.__setitem__((5, 3), -1), gqa.BATCH_FLAG_BAD_PAGE, [], [5], []),
    "page past the pool written": (lambda c: c.page_table.__setitem__((4, 1), c.k_cache.shape[0]),
                                   gqa.BATCH_FLAG_BAD_PAGE, [], [], [(4, range(7, 14))]),
    "kv_len negative": (lambda c: c.kv_lens.__setitem__(1, -5), gqa.BATCH_FLAG_BAD_KV_LEN, [1], [], []),
    "kv_len past the pages": (lambda c: c.kv_lens.__setitem__(5, 100000), gqa.BATCH_FLAG_BAD_KV_LEN, [5], [], []),
    "q_indptr negative": (lambda c: c.q_indptr.__setitem__(2, -7), gqa.BATCH_FLAG_BAD_INDPTR, [1, 2], [], []),
    "q_indptr past total_q": (lambda c: c.q_indptr.__setitem__(6, 1 << 30), gqa.BATCH_FLAG_BAD_INDPTR, [5, 6], [], []),
}


def spoiled_case(name):
    case = make_case(np.random.default_rng(6), *MIXED, 14, 2, 64, np.dtype(np.float16), 7)
    want, want_k, want_v = expected(case)
    spoil, flag, skipped, unchecked, unwritten = SPOILS[name]
    unwritten = unwritten + [(b, range(case.kv_lens[b], case.kv_lens[b] + case.q_len(b))) for b in skipped]
    for b, positions in unwritten:  # their slots keep the pool's NaN
        pages, slots = case.slots(b, np.asarray(positions))
        want_k[pages, slots], want_v[pages, slots] = case.k_cache[pages, slots], case.v_cache[pages, slots]
    spoil(case)
    return case, want, want_k, want_v, flag, skipped, unchecked


@pytest.mark.parametrize("name", SPOILS)
def test_small_out_of_pool_metadata_is_skipped_and_flagged(name):
    case, want, want_k, want_v, flag, skipped, unchecked = spoiled_case(name)
    dev = Device(case)
    out = dev.run()
    assert dev.flags.item() == flag
    assert dev.guards_intact(), "a guard page outside the pool was written"
    k_cache, v_cache = dev.caches()
    assert k_cache.tobytes() == want_k.tobytes() and v_cache.tobytes() == want_v.tobytes()
    for b in range(case.batch):
        rows = slice(*MIXED_ROWS[b])
        if b in skipped:
            assert np.isnan(out[rows]).all(), f"skipped sequence {b} was written"
        elif b in unchecked:
            assert np.isfinite(out[rows]).all(), f"sequence {b}"
        else:
            assert max_err(out[rows], want[rows]) <= TOL[case.q.dtype], f"sequence {b}"


@pytest.mark.parametrize("name", SPOILS)
def test_validation_mode_rejects_with_nothing_written(name, monkeypatch):
    case = spoiled_case(name)[0]
    dev = Device(case)
    k_before = dev.caches()[0].tobytes()
    monkeypatch.setenv("GQA_VALIDATE_METADATA", "1")
    with pytest.raises(gqa.GQAError):
        dev.run()
    assert np.isnan(host(dev.out, case.q.dtype)).all()
    assert dev.caches()[0].tobytes() == k_before and dev.flags.item() == 0 and dev.guards_intact()


def test_validation_mode_runs_a_good_call(monkeypatch):
    monkeypatch.setenv("GQA_VALIDATE_METADATA", "1")
    case = make_case(np.random.default_rng(8), *MIXED, 14, 2, 64, np.dtype(np.float16), 16)
    dev = Device(case)
    check(case, dev, dev.run())
