"""python -m gqa.bench overhead --device cuda: host time per libgqa call.

A decode step of a small model takes a few µs on the GPU, so what the host spends per call
(argument checks, device queries, kernel launches) adds to every step that is not captured in
a CUDA graph. This measures it: N calls enqueued back to back while a spin kernel keeps the GPU
busy (so the launch queue never makes the host wait), wall time / N; the median and the
minimum of R such rounds. Rows:
  - libgqa through the raw C ABI (cffi, config built once): decode (one launch), decode with
    split-KV (attention + combine), prefill with caches (cache copy + attention), and
    gqa_decode_workspace_size (no launch);
  - the same decode through gqa.decode (the Python argument handling on top);
  - peers on the same decode: torch SDPA (flash backend), and a bare torch kernel launch
    (x.add_(1) on a small tensor) as the floor of any launch from Python.
Writes benchmarks/gpu-overhead-bench.json and the overhead section of benchmarks/RESULTS.md.
"""
from __future__ import annotations

import statistics
import time
from dataclasses import dataclass
from typing import Callable

MARKERS = ("<!-- gqa-bench:gpu-overhead:start -->", "<!-- gqa-bench:gpu-overhead:end -->")

# (label, what it measures) in table order.
ROWS = [
    ("c_decode", "libgqa C ABI: decode, 1 launch"),
    ("c_decode_split", "libgqa C ABI: decode with split-KV, 2 launches"),
    ("c_decode_batch", "libgqa C ABI: decode of 256 sequences (cache_lens), 1 launch"),
    ("c_prefill_cache", "libgqa C ABI: prefill with caches, 2 launches"),
    ("c_workspace_size", "libgqa C ABI: gqa_decode_workspace_size, no launch"),
    ("py_decode", "gqa.decode (Python API), 1 launch"),
    ("torch_sdpa", "torch SDPA (flash) on the same decode"),
    ("torch_launch", "torch x.add_(1): one bare kernel launch"),
]


@dataclass(frozen=True)
class Shape:
    """A small decode: the GPU work is tiny, so the host cost is what shows."""
    batch: int = 1
    num_q_heads: int = 32
    num_kv_heads: int = 8
    head_dim: int = 128
    cache_len: int = 512
    max_seq_len: int = 1024
    prefill_len: int = 16
    # The many-sequence row: per-sequence cache_lens (host work per sequence), tiny GPU work.
    batch_many: int = 256
    heads_many: tuple = (8, 1, 64)  # num_q_heads, num_kv_heads, head_dim
    max_seq_many: int = 32


def per_call_us(fn: Callable[[], object], calls: int, rounds: int, spin: Callable[[float], None],
                sync: Callable[[], None]) -> dict:
    """Host µs per call of fn: `rounds` rounds of `calls` calls each, each round behind a spin
    kernel (spin(seconds)) long enough to cover it, then synchronised. Median and min."""
    fn()
    sync()
    t0 = time.perf_counter()
    for _ in range(calls):
        fn()
    rough = time.perf_counter() - t0  # with a possibly blocking queue: an upper bound
    sync()
    times = []
    for _ in range(rounds):
        spin(2.0 * rough + 1e-3)
        t0 = time.perf_counter()
        for _ in range(calls):
            fn()
        times.append((time.perf_counter() - t0) / calls * 1e6)
        sync()
    return {"us": statistics.median(times), "min_us": min(times), "rounds": rounds, "calls": calls}


def markdown(meta: dict, rows: dict) -> str:
    """The RESULTS.md section from the measured rows ({label: entry or {"na": why}})."""
    start, end = MARKERS
    s = meta["shape"]
    dev = meta["device"]
    lines = [start, f"## GPU host overhead per call (`{meta['command']}`)", "",
             f"- Device: {dev['name']} (sm_{dev['capability']}, {dev['sm_count']} SMs); torch {meta['torch_version']}; "
             f"libgqa {meta['gqa_version']}; CPU: {meta['cpu']}",
             f"- Date: {meta['date']}; commit: `{meta['commit']}`",
             f"- Shape: decode B={s['batch']} {s['num_q_heads']}:{s['num_kv_heads']} d{s['head_dim']} fp16, cache "
             f"{s['cache_len']} of {s['max_seq_len']}; prefill S={s['prefill_len']} at the same cache position; "
             f"the {s['batch_many']}-sequence decode: {s['heads_many'][0]}:{s['heads_many'][1]} d{s['heads_many'][2]}, "
             f"cache_lens below {s['max_seq_many']}.",
             f"- Method: {meta['calls']} calls back to back behind a spin kernel (the GPU never makes the host "
             f"wait), wall time / calls; median and min of {meta['rounds']} rounds.",
             "", "| call | median µs | min µs |", "| --- | ---: | ---: |"]
    for label, title in ROWS:
        entry = rows.get(label)
        if entry is None:
            continue
        if "na" in entry:
            lines.append(f"| {title} | n/a: {entry['na']} | |")
        else:
            lines.append(f"| {title} | {entry['us']:.2f} | {entry['min_us']:.2f} |")
    lines += ["", f"Raw numbers: `{meta['json']}`.", end]
    return "\n".join(lines)


def measure(shape: Shape, calls: int, rounds: int) -> dict:
    """Every row, on the current CUDA device (needs torch with CUDA and a CUDA libgqa)."""
    import torch
    import torch.nn.functional as F

    import gqa
    from gqa._ffi import ffi, lib

    dev = torch.device("cuda")
    dt = torch.float16
    b, hq, hkv, d, past = shape.batch, shape.num_q_heads, shape.num_kv_heads, shape.head_dim, shape.cache_len
    q, k, v = (torch.randn(b, 1, h, d, device=dev, dtype=dt) for h in (hq, hkv, hkv))
    kc, vc = (torch.randn(b, shape.max_seq_len, hkv, d, device=dev, dtype=dt) for _ in range(2))
    out = torch.empty_like(q)
    s = shape.prefill_len
    pq, pk, pv = (torch.randn(b, s, h, d, device=dev, dtype=dt) for h in (hq, hkv, hkv))
    pout = torch.empty_like(pq)
    stream = ffi.cast("void*", torch.cuda.current_stream().cuda_stream)

    def ptr(t):
        return ffi.cast("void*", t.data_ptr())

    def decode_config(splits: int):
        cfg = ffi.new("gqa_decode_config*")
        lib.gqa_decode_config_init(cfg)
        cfg.dtype, cfg.device = lib.GQA_DTYPE_F16, lib.GQA_DEVICE_CUDA
        cfg.batch_size, cfg.num_q_heads, cfg.num_kv_heads, cfg.head_dim = b, hq, hkv, d
        cfg.max_seq_len, cfg.cache_len, cfg.num_splits = shape.max_seq_len, past, splits
        return cfg

    plain = decode_config(1)
    bm, (hqm, hkvm, dm), sm = shape.batch_many, shape.heads_many, shape.max_seq_many
    many = ffi.new("gqa_decode_config*")
    lib.gqa_decode_config_init(many)
    many.dtype, many.device = lib.GQA_DTYPE_F16, lib.GQA_DEVICE_CUDA
    many.batch_size, many.num_q_heads, many.num_kv_heads, many.head_dim = bm, hqm, hkvm, dm
    lens = ffi.new("int32_t[]", [b_ % (sm - 1) for b_ in range(bm)])
    many.max_seq_len, many.cache_lens, many.num_splits = sm, lens, 1
    mq, mk, mv = (torch.randn(bm, 1, h, dm, device=dev, dtype=dt) for h in (hqm, hkvm, hkvm))
    mkc, mvc = (torch.randn(bm, sm, hkvm, dm, device=dev, dtype=dt) for _ in range(2))
    mout = torch.empty_like(mq)
    split = decode_config(4)
    size = ffi.new("uint64_t*")
    if lib.gqa_decode_workspace_size(split, size) != lib.GQA_STATUS_OK:
        raise RuntimeError(f"gqa_decode_workspace_size: {ffi.string(lib.gqa_last_error()).decode()}")
    workspace = torch.empty(max(int(size[0]), 16), dtype=torch.uint8, device=dev)
    split.workspace, split.workspace_bytes = ptr(workspace), workspace.numel()
    pre = ffi.new("gqa_prefill_config*")
    lib.gqa_prefill_config_init(pre)
    pre.dtype, pre.device = lib.GQA_DTYPE_F16, lib.GQA_DEVICE_CUDA
    pre.batch_size, pre.seq_len, pre.num_q_heads, pre.num_kv_heads, pre.head_dim = b, s, hq, hkv, d
    pre.max_seq_len, pre.start_pos, pre.causal = shape.max_seq_len, past, 1

    def checked(status):
        if status != lib.GQA_STATUS_OK:
            raise RuntimeError(ffi.string(lib.gqa_last_error()).decode())

    # Pointers cast once: the C rows measure libgqa and cffi's call, not Python conversions.
    dec = [ptr(t) for t in (out, q, k, v, kc, vc)]
    pre_args = [ptr(t) for t in (pout, pq, pk, pv, kc, vc)]
    many_args = [ptr(t) for t in (mout, mq, mk, mv, mkc, mvc)]
    calls_of = {
        "c_decode": lambda: checked(lib.gqa_attention_decode(*dec, plain, stream)),
        "c_decode_split": lambda: checked(lib.gqa_attention_decode(*dec, split, stream)),
        "c_decode_batch": lambda: checked(lib.gqa_attention_decode(*many_args, many, stream)),
        "c_prefill_cache": lambda: checked(lib.gqa_attention_prefill(*pre_args, pre, stream)),
        "c_workspace_size": lambda: checked(lib.gqa_decode_workspace_size(split, size)),
        "py_decode": lambda: gqa.decode(q, k, v, kc, vc, past, out=out),
    }
    qt, kt, vt = q.transpose(1, 2), kc[:, : past + 1].transpose(1, 2), vc[:, : past + 1].transpose(1, 2)
    try:
        from torch.nn.attention import SDPBackend, sdpa_kernel

        def sdpa():
            with sdpa_kernel([SDPBackend.FLASH_ATTENTION]):
                return F.scaled_dot_product_attention(qt, kt, vt, enable_gqa=True)
        calls_of["torch_sdpa"] = sdpa
    except ImportError:
        pass
    small = torch.zeros(16, device=dev)
    calls_of["torch_launch"] = lambda: small.add_(1)

    from .gpu_timing import Timer

    cycles_per_us = Timer().cycles_per_us  # None without torch.cuda._sleep: no spin

    def spin(seconds):
        if cycles_per_us:
            torch.cuda._sleep(int(seconds * 1e6 * cycles_per_us))

    rows = {}
    for label, _ in ROWS:
        fn = calls_of.get(label)
        if fn is None:
            rows[label] = {"na": "not available in this torch"}
            continue
        try:
            rows[label] = per_call_us(fn, calls, rounds, spin, torch.cuda.synchronize)
        except Exception as e:  # noqa: BLE001 - one failing row must not lose the others
            rows[label] = {"na": f"{type(e).__name__}: {str(e).splitlines()[0][:160] if str(e) else ''}"}
    return rows
