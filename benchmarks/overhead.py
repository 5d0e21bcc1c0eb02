"""Per-call overhead of the Python APIs on a tiny problem: each API's call time minus the time of
the same libgqa call made through cffi directly (config built once, pointers cast once).

Peers, interleaved (a burst of each in turn, many rounds), on the same tensors:
  C (cffi)              lib.gqa_attention_decode / _prefill with a prepared config
  numpy gqa.decode      gqa.decode / gqa.prefill on NumPy arrays, out given
  torch op              torch.ops.gqa.decode.default / .prefill.default, out given
  torch gt.decode       gqa.torch.decode / .prefill, out allocated by the call

    python benchmarks/overhead.py [--rounds 30] [--burst 2000]

Prints per-call medians and min-max, and the overhead (median of the per-round differences to
the C call, and its min).
"""
from __future__ import annotations

import argparse
import os
import statistics
import time

import numpy as np
import torch

import gqa
import gqa.torch as gt
from gqa._ffi import ffi, lib

B, HQ, HKV, D, MAX, CACHE_LEN, SEQ = 1, 4, 2, 16, 16, 7, 3  # tiny: the C call is ~1-2 us


class Problem:
    """q/k/v/caches/out as NumPy arrays, the same memory as torch tensors, and void* casts."""

    def __init__(self, rng, seq):
        shapes = [(B, seq, HQ, D), (B, seq, HKV, D), (B, seq, HKV, D), (B, MAX, HKV, D), (B, MAX, HKV, D)]
        self.q, self.k, self.v, self.kc, self.vc = (rng.standard_normal(s).astype(np.float32) for s in shapes)
        self.out = np.empty_like(self.q)
        arrays = (self.out, self.q, self.k, self.v, self.kc, self.vc)
        self.pointers = [ffi.cast("void*", a.ctypes.data) for a in arrays]
        self.tensors = [torch.from_numpy(a) for a in arrays]  # out, q, k, v, k_cache, v_cache


def config(kind):
    cfg = ffi.new(f"gqa_{kind}_config*")
    getattr(lib, f"gqa_{kind}_config_init")(cfg)
    cfg.dtype, cfg.device = lib.GQA_DTYPE_F32, lib.GQA_DEVICE_CPU
    cfg.batch_size, cfg.num_q_heads, cfg.num_kv_heads, cfg.head_dim, cfg.max_seq_len = B, HQ, HKV, D, MAX
    return cfg


def decode_peers(rng):
    p, cfg = Problem(rng, 1), config("decode")
    cfg.cache_len = CACHE_LEN
    c_call, null, op = lib.gqa_attention_decode, ffi.NULL, torch.ops.gqa.decode.default
    tout, tq, tk, tv, tkc, tvc = p.tensors
    return {
        "C (cffi)": lambda: c_call(*p.pointers, cfg, null),
        "numpy gqa.decode": lambda: gqa.decode(p.q, p.k, p.v, p.kc, p.vc, CACHE_LEN, out=p.out),
        "torch op": lambda: op(tout, tq, tk, tv, tkc, tvc, CACHE_LEN, None, 0.0, 0, None),
        "torch gt.decode": lambda: gt.decode(tq, tk, tv, tkc, tvc, CACHE_LEN),
    }


def prefill_peers(rng):
    p, cfg = Problem(rng, SEQ), config("prefill")
    cfg.seq_len, cfg.start_pos = SEQ, CACHE_LEN
    c_call, null, op = lib.gqa_attention_prefill, ffi.NULL, torch.ops.gqa.prefill.default
    tout, tq, tk, tv, tkc, tvc = p.tensors
    return {
        "C (cffi)": lambda: c_call(*p.pointers, cfg, null),
        "numpy gqa.prefill": lambda: gqa.prefill(p.q, p.k, p.v, p.kc, p.vc, start_pos=CACHE_LEN, out=p.out),
        "torch op": lambda: op(tout, tq, tk, tv, tkc, tvc, CACHE_LEN, True, 0.0),
        "torch gt.prefill": lambda: gt.prefill(tq, tk, tv, tkc, tvc, start_pos=CACHE_LEN),
    }


def measure(peers, rounds, burst):
    times = {name: [] for name in peers}
    for call in peers.values():
        for _ in range(burst):
            call()
    for _ in range(rounds):
        for name, call in peers.items():
            start = time.perf_counter_ns()
            for _ in range(burst):
                call()
            times[name].append((time.perf_counter_ns() - start) / burst / 1e3)
    return times


def report(title, times):
    c = times["C (cffi)"]
    print(f"\n### {title}\n")
    print("| call | us per call: median (min-max) | overhead over C: median (min) |")
    print("|---|---:|---:|")
    for name, t in times.items():
        diff = [a - b for a, b in zip(t, c)]
        over = "—" if name == "C (cffi)" else f"{statistics.median(diff):.2f} ({min(diff):.2f})"
        print(f"| {name} | {statistics.median(t):.2f} ({min(t):.2f}-{max(t):.2f}) | {over} |")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=30)
    parser.add_argument("--burst", type=int, default=2000)
    args = parser.parse_args(argv)
    gqa.set_num_threads(1)
    torch.set_num_threads(1)
    rng = np.random.default_rng(0)
    print(f"# per-call overhead, tiny f32 problem (B={B}, {HQ}:{HKV} heads, d{D}, cache {MAX}), 1 thread; "
          f"libgqa {gqa.version()}, torch {torch.__version__}, numpy {np.__version__}")
    print(f"# load average {os.getloadavg()[0]:.2f}; {args.rounds} rounds x {args.burst} calls per peer")
    report(f"decode (cache_len {CACHE_LEN})", measure(decode_peers(rng), args.rounds, args.burst))
    report(f"prefill ({SEQ} tokens at start_pos {CACHE_LEN})", measure(prefill_peers(rng), args.rounds, args.burst))


if __name__ == "__main__":
    main()
