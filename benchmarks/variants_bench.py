"""Issue 15's two speed checks, CPU, interleaved in one process (gqa.bench.timing):

  ab      the default path (no variant set) of two libgqa builds side by side, called the way
          an ABI-1 caller calls them (tests/abi1/gqa.h: the frozen 0.1 header, which every
          newer libgqa accepts), so a build from before the variants can be the baseline:
            GQA_LIBRARY=build/dev/libgqa.so PYTHONPATH=python python benchmarks/variants_bench.py ab \\
                --old /work/baseline-src/build/libgqa.so --new build/dev/libgqa.so
  window  windowed decode over a 32k cache (window_left 4095: 4096 keys) against decode over
          a 4k cache and over the whole 32k cache, through the gqa package:
            GQA_LIBRARY=build/dev/libgqa.so PYTHONPATH=python python benchmarks/variants_bench.py window

Prints one line per config: medians (ms), min, spread, and new/old (ab) or the ratios (window).
Run on a quiet machine (uptime load < 0.3) for figures of record; GQA_NUM_THREADS sets threads.
"""
from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import cffi
import ml_dtypes
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "python"))

from gqa._ffi import cdef_from_header  # noqa: E402  (reads a header; loads no library)
from gqa.bench.timing import Timed, interleaved  # noqa: E402

DTYPES = {"f16": (np.float16, 1), "bf16": (ml_dtypes.bfloat16, 2), "f32": (np.float32, 3)}
# (kind, name, dtype, B, S or cache length, Hq, Hkv, D)
AB_CONFIGS = [
    ("decode", "Llama-3 32:8 d128", "bf16", 1, 4096, 32, 8, 128),
    ("decode", "Qwen2.5 14:2 d64", "f16", 4, 2048, 14, 2, 64),
    ("decode", "Phi-3 32:32 d96", "bf16", 1, 1024, 32, 32, 96),
    ("prefill", "Qwen2.5 14:2 d64", "bf16", 1, 512, 14, 2, 64),
    ("prefill", "Llama-3 32:8 d128", "f16", 1, 1024, 32, 8, 128),
]


def _abi1_library(path: str):
    ffi = cffi.FFI()
    ffi.cdef(cdef_from_header((ROOT / "tests/abi1/gqa.h").read_text()))
    return ffi, ffi.dlopen(path)


def _arrays(rng, kind, dtype, B, L, Hq, Hkv, D):
    t = DTYPES[dtype][0]
    S = 1 if kind == "decode" else L
    M = L + 1 if kind == "decode" else L
    q = rng.standard_normal((B, S, Hq, D)).astype(t)
    k, v = (rng.standard_normal((B, S, Hkv, D)).astype(t) for _ in range(2))
    kc, vc = (rng.standard_normal((B, M, Hkv, D)).astype(t) for _ in range(2))
    return q, k, v, kc, vc, np.empty_like(q)


def _abi1_call(ffi, lib, kind, dtype, B, L, Hq, Hkv, D, arrays):
    q, k, v, kc, vc, out = arrays
    ptr = lambda a: ffi.cast("void*", a.ctypes.data)  # noqa: E731
    if kind == "decode":
        cfg = ffi.new("gqa_decode_config*")
        lib.gqa_decode_config_init(cfg)
        cfg.dtype, cfg.batch_size, cfg.num_q_heads, cfg.num_kv_heads = DTYPES[dtype][1], B, Hq, Hkv
        cfg.head_dim, cfg.max_seq_len, cfg.cache_len = D, L + 1, L
        fn = lib.gqa_attention_decode
    else:
        cfg = ffi.new("gqa_prefill_config*")
        lib.gqa_prefill_config_init(cfg)
        cfg.dtype, cfg.batch_size, cfg.seq_len, cfg.num_q_heads, cfg.num_kv_heads = DTYPES[dtype][1], B, L, Hq, Hkv
        cfg.head_dim, cfg.max_seq_len = D, L
        fn = lib.gqa_attention_prefill
    args = [ptr(out), ptr(q), ptr(k), ptr(v), ptr(kc), ptr(vc), cfg, ffi.NULL]

    def call():
        status = fn(*args)
        assert status == 0, ffi.string(lib.gqa_last_error()).decode()
    return call


def _line(name, stats, extra=""):
    parts = [f"{k} {s.median * 1e3:8.3f} ms (min {s.min * 1e3:.3f}, spread {s.spread:.2f})" for k, s in stats.items()]
    print(f"{name:42s} " + "  ".join(parts) + extra, flush=True)


def run_ab(old: str, new: str, budget: float) -> None:
    libs = {"old": _abi1_library(old), "new": _abi1_library(new)}
    rng = np.random.default_rng(0)
    for kind, name, dtype, B, L, Hq, Hkv, D in AB_CONFIGS:
        arrays = _arrays(rng, kind, dtype, B, L, Hq, Hkv, D)
        outs = {}
        timed = {}
        for label, (ffi, lib) in libs.items():
            timed[label] = Timed(_abi1_call(ffi, lib, kind, dtype, B, L, Hq, Hkv, D, arrays))
            timed[label].call()
            outs[label] = arrays[5].astype(np.float32).copy()
        assert np.abs(outs["old"] - outs["new"]).max() < 0.05, "old and new disagree"
        stats = interleaved(timed, budget_s=budget, min_rounds=8, max_rounds=200)
        ratio = stats["new"].median / stats["old"].median
        _line(f"{kind} {name} {dtype} B={B} L={L}", stats, f"  new/old {ratio:.3f}")


def run_window(budget: float) -> None:
    import gqa

    B, Hq, Hkv, D, big, small, window = 1, 32, 8, 128, 32768, 4096, 4095
    rng = np.random.default_rng(1)
    t = ml_dtypes.bfloat16
    q = rng.standard_normal((B, 1, Hq, D)).astype(t)
    k, v = (rng.standard_normal((B, 1, Hkv, D)).astype(t) for _ in range(2))
    kc, vc = (rng.standard_normal((B, big + 1, Hkv, D)).astype(t) for _ in range(2))
    out = np.empty_like(q)
    timed = {
        "4k cache": Timed(lambda: gqa.decode(q, k, v, kc, vc, small - 1, out=out)),
        "32k cache, window 4096": Timed(lambda: gqa.decode(q, k, v, kc, vc, big - 1, window=(window, -1), out=out)),
        "32k cache": Timed(lambda: gqa.decode(q, k, v, kc, vc, big - 1, out=out)),
    }
    stats = interleaved(timed, budget_s=budget, min_rounds=8, max_rounds=200)
    ratio = stats["32k cache, window 4096"].median / stats["4k cache"].median
    _line(f"decode Llama-3 32:8 d128 bf16 B=1 (threads {gqa.get_num_threads()})", stats,
          f"  window/4k {ratio:.3f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="what", required=True)
    ab = sub.add_parser("ab")
    ab.add_argument("--old", required=True)
    ab.add_argument("--new", required=True)
    window = sub.add_parser("window")
    for p in (ab, window):
        p.add_argument("--budget", type=float, default=4.0, help="seconds of timing per config")
    args = parser.parse_args()
    print(f"load average {os.getloadavg()[0]:.2f}; GQA_NUM_THREADS={os.environ.get('GQA_NUM_THREADS', '(all)')}")
    if args.what == "ab":
        run_ab(args.old, args.new, args.budget)
    else:
        run_window(args.budget)


if __name__ == "__main__":
    main()
