"""python -m gqa.bench.batch: the batched op (gqa.batch_attention) on this CPU.

Two questions, each answered by backends timed interleaved in one process (timing.interleaved:
rotating bursts, min / median / spread), every backend checked against the others first:

1. Paged against contiguous: the same decode batch and the same prefill chunk, with the cache
   in 16-token pages in shuffled order, against one page per sequence (the contiguous layout)
   and against gqa.decode / gqa.prefill on the dense [B, max_seq_len] cache. Target (issue 16):
   paged at page_size 16 within 10% of contiguous.
2. A ragged decode batch (lengths 128 .. 32k, one token each): one batched call against the same
   work as one padded gqa.decode call ([B, max_len] cache, per-sequence cache_lens), one gqa.decode
   per sequence, and torch SDPA per sequence (enable_gqa; skipped without torch).

Bytes are the K/V bytes each call must read (the floor of decode's cost); GB/s = bytes / median.
Results go to stdout (Markdown) and --json FILE.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
from dataclasses import dataclass

import numpy as np

from . import machine
from .timing import Timed, interleaved

DTYPES = {"bf16": None, "f16": np.float16}  # bf16 filled in lazily (ml_dtypes)


def _dtype(name):
    if name == "bf16":
        import ml_dtypes

        return np.dtype(ml_dtypes.bfloat16)
    return np.dtype(DTYPES[name])


@dataclass
class Shape:
    label: str
    num_q_heads: int
    num_kv_heads: int
    head_dim: int


SHAPES = [Shape("Qwen2.5-0.5B 14:2 d64", 14, 2, 64), Shape("Llama-3-8B 32:8 d128", 32, 8, 128)]
RAGGED_LENGTHS = [128, 512, 1024, 2048, 4096, 8192, 16384, 32768]


class Batch:
    """One batch (q_lens, kv_lens) in three layouts of the same cache contents: shuffled pages
    of page_size, one page per sequence, and the dense [B, max_len] cache of gqa.decode."""

    def __init__(self, rng, shape: Shape, dtype, q_lens, kv_lens, page_size):
        import gqa

        self.shape, self.q_lens, self.kv_lens = shape, list(q_lens), list(kv_lens)
        B, Hq, Hkv, D = len(q_lens), shape.num_q_heads, shape.num_kv_heads, shape.head_dim
        total_q = sum(q_lens)
        self.max_len = max(kv + q for kv, q in zip(kv_lens, q_lens))
        self.q = rng.standard_normal((total_q, Hq, D)).astype(dtype)
        self.k = rng.standard_normal((total_q, Hkv, D)).astype(dtype)
        self.v = rng.standard_normal((total_q, Hkv, D)).astype(dtype)
        self.indptr = np.concatenate([[0], np.cumsum(q_lens)]).astype(np.int32)
        self.lens = np.asarray(kv_lens, np.int32)
        self.dense_k = rng.standard_normal((B, self.max_len, Hkv, D)).astype(dtype)
        self.dense_v = rng.standard_normal((B, self.max_len, Hkv, D)).astype(dtype)
        cols = -(-self.max_len // page_size)
        pool = gqa.PagedKVCache(num_pages=B * cols, page_size=page_size, num_kv_heads=Hkv, head_dim=D, num_layers=0,
                                max_pages_per_seq=cols)
        ids = rng.permutation(B * cols).astype(np.int32)  # shuffled pages
        self.table = ids.reshape(B, cols)
        self.paged_k = np.empty(pool.pool_shape, dtype)
        self.paged_v = np.empty(pool.pool_shape, dtype)
        for b in range(B):
            for c in range(cols):
                span = slice(c * page_size, min((c + 1) * page_size, self.max_len))
                n = span.stop - span.start
                self.paged_k[self.table[b, c], :n] = self.dense_k[b, span]
                self.paged_v[self.table[b, c], :n] = self.dense_v[b, span]
        self.out = np.empty_like(self.q)

    @property
    def kv_bytes(self) -> int:
        """K and V bytes the call must read: every visible position of every sequence."""
        per_position = 2 * self.shape.num_kv_heads * self.shape.head_dim * self.q.itemsize
        return sum(kv + q for kv, q in zip(self.kv_lens, self.q_lens)) * per_position

    def paged(self):
        import gqa

        return gqa.batch_attention(self.q, self.k, self.v, self.paged_k, self.paged_v, q_indptr=self.indptr,
                                   kv_lens=self.lens, page_table=self.table, out=self.out)

    def contiguous(self):
        import gqa

        return gqa.batch_attention(self.q, self.k, self.v, self.dense_k, self.dense_v, q_indptr=self.indptr,
                                   kv_lens=self.lens, page_table=np.arange(len(self.lens), dtype=np.int32)[:, None],
                                   out=self.out)


def _padded_decode(batch: Batch):
    """gqa.decode on the padded [B, max_len] cache with per-sequence cache_lens (one token each)."""
    import gqa

    B = len(batch.lens)
    q = batch.q.reshape(B, 1, *batch.q.shape[1:])
    k = batch.k.reshape(B, 1, *batch.k.shape[1:])
    v = batch.v.reshape(B, 1, *batch.v.shape[1:])
    out = np.empty_like(q)
    return lambda: gqa.decode(q, k, v, batch.dense_k, batch.dense_v, batch.lens, out=out)


def _decode_per_sequence(batch: Batch):
    """One gqa.decode call per sequence, each on its own [1, len] slice of the dense cache."""
    import gqa

    calls = []
    for b, n in enumerate(batch.kv_lens):
        q, k, v = (x[b:b + 1][None] for x in (batch.q, batch.k, batch.v))
        kc, vc = batch.dense_k[b:b + 1, :n + 1], batch.dense_v[b:b + 1, :n + 1]
        calls.append((q, k, v, np.ascontiguousarray(kc), np.ascontiguousarray(vc), n, np.empty_like(q)))
    return lambda: [gqa.decode(q, k, v, kc, vc, n, out=o) for q, k, v, kc, vc, n, o in calls]


def _torch_sdpa_per_sequence(batch: Batch):
    """torch SDPA (enable_gqa) per sequence over its cached K/V plus the new token; None without
    torch or without bf16/f16 support."""
    try:
        import torch
    except ImportError:
        return None
    tdtype = torch.bfloat16 if batch.q.dtype.name == "bfloat16" else torch.float16
    to_torch = lambda a: torch.from_numpy(np.asarray(a, np.float32)).to(tdtype)  # noqa: E731
    calls = []
    for b, n in enumerate(batch.kv_lens):
        q = to_torch(batch.q[b:b + 1]).transpose(0, 1)[None]                    # [1, Hq, 1, D]
        keys = np.concatenate([batch.dense_k[b, :n], batch.k[b:b + 1]])
        values = np.concatenate([batch.dense_v[b, :n], batch.v[b:b + 1]])
        k = to_torch(keys).transpose(0, 1)[None]                                # [1, Hkv, n + 1, D]
        v = to_torch(values).transpose(0, 1)[None]
        calls.append((q.contiguous(), k.contiguous(), v.contiguous()))
    sdpa = torch.nn.functional.scaled_dot_product_attention
    return lambda: [sdpa(q, k, v, enable_gqa=True) for q, k, v in calls]


def _row(name: str, stats, bytes_read: int, base=None) -> dict:
    row = {"backend": name, "median_us": stats.median * 1e6, "min_us": stats.min * 1e6, "spread": stats.spread,
           "gb_s": bytes_read / stats.median / 1e9}
    if base is not None:
        row["vs_first"] = stats.median / base.median
    return row


def _table(title: str, rows: list[dict]) -> str:
    lines = [f"### {title}", "", "| backend | median us | min us | IQR/median | GB/s (K+V) | median / first |",
             "| --- | ---: | ---: | ---: | ---: | ---: |"]
    for r in rows:
        ratio = f"{r['vs_first']:.3f}" if "vs_first" in r else "1"
        lines.append(f"| {r['backend']} | {r['median_us']:.1f} | {r['min_us']:.1f} | {r['spread']:.2f} | "
                     f"{r['gb_s']:.1f} | {ratio} |")
    return "\n".join(lines) + "\n"


def _compare(name: str, got, want, tolerance: float) -> None:
    err = float(np.max(np.abs(np.asarray(got, np.float64) - np.asarray(want, np.float64))))
    if not err <= tolerance:
        raise SystemExit(f"{name} disagrees with libgqa's contiguous call by {err} (> {tolerance}); not timing it")


def paged_vs_contiguous(rng, dtype, budget: float, quick: bool) -> list[tuple[str, list[dict]]]:
    out = []
    for shape in SHAPES[: 1 if quick else None]:
        for kind, q_lens, kv_lens in (("decode B=8 L=4096", [1] * 8, [4096] * 8),
                                      ("prefill chunk 256 after 1024 cached, B=2", [256, 256], [1024, 1024])):
            batch = Batch(rng, shape, dtype, q_lens, kv_lens, page_size=16)
            want = batch.contiguous().copy()
            if batch.paged().tobytes() != want.tobytes():
                raise SystemExit("paged and contiguous layouts give different bits: not timing them")
            backends = {"batch_attention contiguous (1 page/seq)": Timed(batch.contiguous),
                        "batch_attention paged (16, shuffled)": Timed(batch.paged)}
            if kind.startswith("decode"):
                backends["gqa.decode dense"] = Timed(_padded_decode(batch))
            stats = interleaved(backends, budget_s=budget)
            first = next(iter(stats.values()))
            rows = [_row(name, s, batch.kv_bytes, first) for name, s in stats.items()]
            out.append((f"{shape.label}, {kind}, {dtype.name}", rows))
    return out


def ragged_decode(rng, dtype, budget: float, quick: bool) -> list[tuple[str, list[dict]]]:
    lengths = RAGGED_LENGTHS[:5] if quick else RAGGED_LENGTHS
    out = []
    for shape in SHAPES[: 1 if quick else None]:
        batch = Batch(rng, shape, dtype, [1] * len(lengths), lengths, page_size=16)
        want = batch.paged().copy()
        backends = {"batch_attention paged (one call)": Timed(batch.paged),
                    "gqa.decode padded [B, max_len] + cache_lens": Timed(_padded_decode(batch)),
                    "gqa.decode per sequence": Timed(_decode_per_sequence(batch))}
        tolerance = 3e-2 if dtype.name == "bfloat16" else 4e-3
        padded = _padded_decode(batch)()
        _compare("gqa.decode padded", padded.reshape(want.shape), want, tolerance)
        sdpa = _torch_sdpa_per_sequence(batch)
        if sdpa is not None:
            got = np.concatenate([o[0].transpose(0, 1).float().numpy() for o in sdpa()])
            _compare("torch SDPA", got, want, tolerance)
            backends["torch SDPA per sequence"] = Timed(sdpa)
        stats = interleaved(backends, budget_s=budget)
        first = next(iter(stats.values()))
        rows = [_row(name, s, batch.kv_bytes, first) for name, s in stats.items()]
        out.append((f"{shape.label}, ragged decode lengths {lengths[0]}..{lengths[-1]}, {dtype.name}", rows))
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m gqa.bench.batch", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--threads", type=int, default=0, help="0: GQA_NUM_THREADS, else the available cores")
    ap.add_argument("--dtype", default="bf16", choices=list(DTYPES))
    ap.add_argument("--budget", type=float, default=2.0, help="seconds of timing per table (default %(default)s)")
    ap.add_argument("--quick", action="store_true", help="one shape, lengths up to 4096")
    ap.add_argument("--json", help="also write the tables as JSON here")
    args = ap.parse_args(argv)
    threads = args.threads or int(os.environ.get("GQA_NUM_THREADS", "0") or 0) or machine.available_cores()
    os.environ["GQA_NUM_THREADS"] = str(threads)
    import gqa

    gqa.set_num_threads(threads)
    try:
        import torch

        torch.set_num_threads(threads)
    except ImportError:
        pass
    rng = np.random.default_rng(0)
    dtype = _dtype(args.dtype)
    meta = {"cpu": machine.cpu_model(), "threads": threads, "load_start": machine.load_average(),
            "forced_isa": os.environ.get("GQA_CPU_ISA", ""), "command": "python -m gqa.bench.batch " + " ".join(argv or sys.argv[1:])}
    tables = paged_vs_contiguous(rng, dtype, args.budget, args.quick) + ragged_decode(rng, dtype, args.budget, args.quick)
    meta["load_end"] = machine.load_average()
    print(f"CPU: {meta['cpu']}, threads {threads}, load {meta['load_start']} -> {meta['load_end']}"
          + (f", GQA_CPU_ISA={meta['forced_isa']}" if meta["forced_isa"] else "") + "\n")
    for title, rows in tables:
        print(_table(title, rows))
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"meta": meta, "tables": [{"title": t, "rows": r} for t, r in tables]}, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
