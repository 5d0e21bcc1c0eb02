"""Per-call overhead of the Python APIs on a tiny problem: each API's call time minus the time of
the same libgqa call made through cffi directly (config built once, pointers cast once).

Peers, interleaved (a burst of each in turn, many rounds), on the same memory:
  C (cffi)                 lib.gqa_attention_decode / _prefill with a prepared config
  numpy gqa.decode         gqa.decode / gqa.prefill on NumPy arrays, out given
  torch gt.decode out=     gqa.torch.decode / .prefill, out given (the eager route)
  torch gt.decode          the same, out allocated by the call
  torch.ops.gqa.decode     the operator through the dispatcher (what torch.compile calls)
  empty Library op         torch's floor for that row: a no-op operator of gqa::decode's schema
                           defined as gqa's are (Library.define and a CPU kernel), through the
                           dispatcher
  empty custom_op          the same no-op made by torch.library.custom_op (its Python autograd
                           and mutation wrappers run on every call)

    python benchmarks/overhead.py [--rounds 60] [--burst 1000]

Each round times a burst of every peer twice over: wall time (perf_counter) and this thread's
CPU time (thread_time; on a shared machine it leaves out the time other processes held the
core, but not their effect on caches). The overhead of a peer in a round is its time minus the
C call's in the same round; the tables give the median, min and interquartile range (IQR) over
the rounds, and the load average before and after; the last table, each API against its budget
(issue 17: <= 8 us for the NumPy API, <= 5 us for gqa.torch's eager calls).
"""
from __future__ import annotations

import argparse
import os
import platform
import statistics
import time

import numpy as np
import torch

import gqa
import gqa.torch as gt
from gqa._ffi import ffi, last_error, lib

B, HQ, HKV, D, MAX, CACHE_LEN, SEQ = 1, 4, 2, 16, 16, 7, 3  # tiny: the C call is ~1-2 us
CLOCKS = {"wall": time.perf_counter_ns, "cpu": time.thread_time_ns}


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
    """The config the APIs send: this gqa.h's size, the library's defaults."""
    cfg = ffi.new(f"gqa_{kind}_config*")
    if getattr(lib, f"gqa_{kind}_config_init_sized")(cfg, ffi.sizeof(f"gqa_{kind}_config")) != lib.GQA_STATUS_OK:
        raise SystemExit(f"gqa_{kind}_config_init_sized failed: {last_error()}")
    cfg.dtype, cfg.device = lib.GQA_DTYPE_F32, lib.GQA_DEVICE_CPU
    cfg.batch_size, cfg.num_q_heads, cfg.num_kv_heads, cfg.head_dim, cfg.max_seq_len = B, HQ, HKV, D, MAX
    return cfg


_EMPTY = torch.library.Library("gqa_overhead", "FRAGMENT")  # kept: the no-op operators live as long as it


def empty_ops(kind):
    """The two no-op operators with gqa::<kind>'s schema (see the docstring), as callables."""
    schema = getattr(torch.ops.gqa, kind).default._schema
    signature = str(schema)[str(schema).index("("):]  # "(Tensor(a!) out, ...) -> ()"
    _EMPTY.define(f"{kind}_noop{signature}")
    _EMPTY.impl(f"{kind}_noop", lambda *args: None, "CPU")
    written = [a.name for a in schema.arguments if a.alias_info is not None and a.alias_info.is_write]
    torch.library.custom_op(f"gqa_overhead::{kind}_custom_noop", lambda *args: None, mutates_args=written,
                            schema=signature)
    return getattr(torch.ops.gqa_overhead, f"{kind}_noop").default, \
        getattr(torch.ops.gqa_overhead, f"{kind}_custom_noop").default


def decode_peers(rng):
    p, cfg = Problem(rng, 1), config("decode")
    cfg.cache_len = CACHE_LEN
    c_call, null, op = lib.gqa_attention_decode, ffi.NULL, torch.ops.gqa.decode.default
    tout, tq, tk, tv, tkc, tvc = p.tensors
    noop, custom_noop = empty_ops("decode")
    return {
        "C (cffi)": lambda: c_call(*p.pointers, cfg, null),
        "numpy gqa.decode": lambda: gqa.decode(p.q, p.k, p.v, p.kc, p.vc, CACHE_LEN, out=p.out),
        "torch gt.decode out=": lambda: gt.decode(tq, tk, tv, tkc, tvc, CACHE_LEN, out=tout),
        "torch gt.decode": lambda: gt.decode(tq, tk, tv, tkc, tvc, CACHE_LEN),
        "torch.ops.gqa.decode": lambda: op(tout, tq, tk, tv, tkc, tvc, CACHE_LEN, None, 0.0, 0, None),
        "empty Library op": lambda: noop(tout, tq, tk, tv, tkc, tvc, CACHE_LEN, None, 0.0, 0, None),
        "empty custom_op": lambda: custom_noop(tout, tq, tk, tv, tkc, tvc, CACHE_LEN, None, 0.0, 0, None),
    }


def prefill_peers(rng):
    p, cfg = Problem(rng, SEQ), config("prefill")
    cfg.seq_len, cfg.start_pos = SEQ, CACHE_LEN
    c_call, null, op = lib.gqa_attention_prefill, ffi.NULL, torch.ops.gqa.prefill.default
    tout, tq, tk, tv, tkc, tvc = p.tensors
    noop, custom_noop = empty_ops("prefill")
    return {
        "C (cffi)": lambda: c_call(*p.pointers, cfg, null),
        "numpy gqa.prefill": lambda: gqa.prefill(p.q, p.k, p.v, p.kc, p.vc, start_pos=CACHE_LEN, out=p.out),
        "torch gt.prefill out=": lambda: gt.prefill(tq, tk, tv, tkc, tvc, start_pos=CACHE_LEN, out=tout),
        "torch gt.prefill": lambda: gt.prefill(tq, tk, tv, tkc, tvc, start_pos=CACHE_LEN),
        "torch.ops.gqa.prefill": lambda: op(tout, tq, tk, tv, tkc, tvc, CACHE_LEN, True, 0.0),
        "empty Library op": lambda: noop(tout, tq, tk, tv, tkc, tvc, CACHE_LEN, True, 0.0),
        "empty custom_op": lambda: custom_noop(tout, tq, tk, tv, tkc, tvc, CACHE_LEN, True, 0.0),
    }


def measure(peers, rounds, burst):
    """{clock: {peer: [us per call, one per round]}}, the peers interleaved within each round."""
    times = {clock: {name: [] for name in peers} for clock in CLOCKS}
    wall, cpu = CLOCKS["wall"], CLOCKS["cpu"]
    for call in peers.values():  # warm up (first-call caches, branch predictors)
        for _ in range(burst):
            call()
    for _ in range(rounds):
        for name, call in peers.items():
            w0, c0 = wall(), cpu()
            for _ in range(burst):
                call()
            c1, w1 = cpu(), wall()
            times["wall"][name].append((w1 - w0) / burst / 1e3)
            times["cpu"][name].append((c1 - c0) / burst / 1e3)
    return times


def spread(values):
    """median, min, IQR."""
    q1, median, q3 = statistics.quantiles(values, n=4, method="inclusive")
    return median, min(values), q3 - q1


# Issue 17 item 2: the per-call overhead budgets (us over the C call), by API.
TARGETS = (("NumPy API", "numpy gqa.", 8.0), ("torch, out given", "torch gt.{} out=", 5.0),
           ("torch, out allocated", "torch gt.{}", 5.0))


def overhead(times, clock, peer):
    """median, min of a peer's overhead over the C call in each round."""
    c = times[clock]["C (cffi)"]
    values = [a - b for a, b in zip(times[clock][peer], c)]
    return statistics.median(values), min(values)


def targets(results):
    """The budgets against the medians of both operations, on both clocks: met when the wall
    clock's median is within it (the thread CPU clock, less disturbed by other processes on a
    shared machine, is shown beside it)."""
    print("\n### targets (issue 17 item 2): overhead over the C call, us, median (min)\n")
    print("| API | budget | op | wall | cpu | met (wall median) |")
    print("|---|---:|---|---:|---:|---|")
    for label, pattern, budget in TARGETS:
        for op, times in results.items():
            peer = pattern + op if pattern.endswith(".") else pattern.format(op)
            wall, cpu = overhead(times, "wall", peer), overhead(times, "cpu", peer)
            met = "yes" if wall[0] <= budget else "no"
            print(f"| {label} ({peer}) | <= {budget:g} | {op} | {wall[0]:.2f} ({wall[1]:.2f}) | "
                  f"{cpu[0]:.2f} ({cpu[1]:.2f}) | {met} |")


def report(title, times):
    print(f"\n### {title}\n")
    print("| call | clock | us per call: median (min) IQR | overhead over C: median (min) IQR |")
    print("|---|---|---:|---:|")
    for clock, by_peer in times.items():
        c = by_peer["C (cffi)"]
        for name, t in by_peer.items():
            median, low, iqr = spread(t)
            if name == "C (cffi)":
                over = "—"
            else:
                d_median, d_low, d_iqr = spread([a - b for a, b in zip(t, c)])
                over = f"{d_median:.2f} ({d_low:.2f}) {d_iqr:.2f}"
            print(f"| {name} | {clock} | {median:.2f} ({low:.2f}) {iqr:.2f} | {over} |")


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=60)
    parser.add_argument("--burst", type=int, default=1000)
    args = parser.parse_args(argv)
    gqa.set_num_threads(1)
    torch.set_num_threads(1)
    rng = np.random.default_rng(0)
    print(f"# per-call overhead, tiny f32 problem (B={B}, {HQ}:{HKV} heads, d{D}, cache {MAX}), 1 thread, grad mode "
          f"on; libgqa {gqa.version()}, torch {torch.__version__}, numpy {np.__version__}, Python "
          f"{platform.python_version()}")
    print(f"# {cpu_model()}, {os.cpu_count()} CPUs; {args.rounds} rounds x {args.burst} calls per peer")
    print(f"# load average before: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    results = {"decode": measure(decode_peers(rng), args.rounds, args.burst)}
    report(f"decode (cache_len {CACHE_LEN})", results["decode"])
    results["prefill"] = measure(prefill_peers(rng), args.rounds, args.burst)
    report(f"prefill ({SEQ} tokens at start_pos {CACHE_LEN})", results["prefill"])
    targets(results)
    print(f"\n# load average after: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")


if __name__ == "__main__":
    main()
