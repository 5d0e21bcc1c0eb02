"""Prefill on a loaded machine: process CPU time per call, backends interleaved in one process.

The CPU benchmark of record (`python -m gqa.bench --device cpu`) times wall clock, which means
nothing while other processes share the cores. This tool times what a call costs the process
(time.process_time: every thread of the process, so a peer's spinning workers count too),
1 thread by default, rounds over the backends in a rotating order, and reports medians, minima
and the ratio of each peer to libgqa. It reuses the benchmark's configs, inputs and peers
(gqa.bench), each peer checked against libgqa before it is timed.

    GQA_LIBRARY=build/dev/libgqa.so PYTHONPATH=python python benchmarks/prefill_cputime.py \\
        peers --only 'prefill Llama-3-8B S=2048 bf16' [--peers torch,openvino,...] [--budget 6]
    ... ab --lib old=/path/a.so --lib new=/path/b.so[:avx512] --only ...   libgqa builds (or ISA paths,
                                                                 one library copy each) against each other
    ... paged --page-size 16 --only ...                          gqa.batch_attention paged vs one page
"""
from __future__ import annotations

import argparse
import gc
import os
import shutil
import statistics
import sys
import tempfile
import time

os.environ.setdefault("GQA_NUM_THREADS", "1")

import numpy as np  # noqa: E402


def _cpu_once(fn) -> float:
    t0 = time.process_time()
    fn()
    return time.process_time() - t0


def interleaved_cpu(backends: dict, budget_s: float, min_rounds: int = 3, target_s: float = 0.05) -> dict:
    """{name: [CPU seconds per call]}: rounds over the backends (rotating order), each a warm-up
    call and then calls worth ~target_s, until min_rounds and budget_s of CPU time are done."""
    names = list(backends)
    reps = {}
    for name, fn in backends.items():
        fn()
        reps[name] = max(1, min(50, round(target_s / max(_cpu_once(fn), 1e-6))))
    samples = {name: [] for name in names}
    start, rounds = time.process_time(), 0
    gc.disable()
    try:
        while rounds < min_rounds or time.process_time() - start < budget_s:
            shift = rounds % len(names)
            for name in names[shift:] + names[:shift]:
                backends[name]()
                samples[name] += [_cpu_once(backends[name]) for _ in range(reps[name])]
            rounds += 1
    finally:
        gc.enable()
    return samples


def _summary(seconds: list) -> tuple:
    return statistics.median(seconds), min(seconds)


def _configs(only: str):
    from gqa.bench import configs

    return [c for c in configs.select(configs.all_configs(), only) if c.op == "prefill"]


def _gqa_call(cfg, inputs, lib=None):
    """libgqa's prefill on the benchmark's inputs, through the Python API (as the benchmark calls
    it); with lib, through that cffi library object instead of the package's own."""
    from gqa import _api
    from gqa.bench import runners

    runner = runners.gqa_runner(inputs)
    if lib is None:
        return runner
    own = _api.lib

    def call():
        _api.lib = lib
        try:
            runner.call()
        finally:
            _api.lib = own

    return runners.Runner(call, runner.output)


def _row(cfg, samples: dict, first: str) -> str:
    med = {n: _summary(s) for n, s in samples.items()}
    base = med[first][0]
    gflops = cfg.flops() / base / 1e9
    cells = [f"{cfg.label}", f"{base * 1e3:.2f}", f"{med[first][1] * 1e3:.2f}", f"{gflops:.0f}"]
    for name in samples:
        if name != first:
            cells.append(f"{med[name][0] / base:.2f}")
    return "| " + " | ".join(cells) + " |"


def cmd_peers(args) -> None:
    from gqa.bench import cpu_run, runners

    import gqa
    import torch

    gqa.set_num_threads(args.threads)
    torch.set_num_threads(args.threads)
    peers = [p for p in args.peers.split(",") if p]
    print(f"CPU time per call, {args.threads} thread(s); ratio = peer / libgqa (medians); load {os.getloadavg()[0]:.1f}")
    print("| config | libgqa ms | min ms | GFLOP/s | " + " | ".join(f"x {p}" for p in peers) + " | x fastest |")
    print("|---|---:|---:|---:|" + "---:|" * (len(peers) + 1))
    for cfg in _configs(args.only):
        inputs = runners.Inputs(cfg)
        gqa = _gqa_call(cfg, inputs)
        gqa.call()
        reference = gqa.output().astype(np.float64)
        backends, skipped = {"libgqa": gqa.call}, {}
        for name in peers:
            runner, why = cpu_run._build(name, inputs, args.threads)
            if runner is None:
                skipped[name] = why
                continue
            runner.call()
            ok, err = cpu_run.check(runner.output(), reference, cfg.dtype)
            if not ok:
                skipped[name] = f"wrong ({err:.3g})"
                continue
            backends[name] = runner.call
        samples = interleaved_cpu(backends, args.budget)
        base = statistics.median(samples["libgqa"])
        ratios = {n: statistics.median(samples[n]) / base for n in samples if n != "libgqa"}
        cells = [f"{r:.2f}" if (r := ratios.get(p)) else "n/a" for p in peers]
        fastest = min(ratios.values()) if ratios else float("nan")
        print(f"| {cfg.label} | {base * 1e3:.2f} | {min(samples['libgqa']) * 1e3:.2f} | "
              f"{cfg.flops() / base / 1e9:.0f} | " + " | ".join(cells) + f" | {fastest:.2f} |", flush=True)
        for name, why in skipped.items():
            print(f"  ({cfg.label}: {name} not timed: {why})", file=sys.stderr)
        del backends, inputs
        gc.collect()


def cmd_ab(args) -> None:
    from gqa._ffi import ffi
    from gqa.bench import runners

    libs, isas, seen = {}, {}, set()
    copies = tempfile.mkdtemp(prefix="gqa-ab-")
    for spec in args.lib:
        name, path = spec.split("=", 1)
        path, _, isas[name] = path.partition(":")
        if os.path.realpath(path) in seen:  # dlopen would hand back the loaded one, ISA and all
            path = shutil.copy(path, os.path.join(copies, f"{name}.so"))
        seen.add(os.path.realpath(path))
        libs[name] = ffi.dlopen(path)
    names = list(libs)
    print(f"CPU time per call, {os.environ['GQA_NUM_THREADS']} thread(s); ratio = build / {names[0]} (medians); "
          f"load {os.getloadavg()[0]:.1f}")
    print(f"| config | {names[0]} ms | min ms | GFLOP/s | " + " | ".join(f"x {n}" for n in names[1:]) + " |")
    print("|---|---:|---:|---:|" + "---:|" * (len(names) - 1))
    for cfg in _configs(args.only):
        inputs = runners.Inputs(cfg)
        calls = {n: _gqa_call(cfg, inputs, lib) for n, lib in libs.items()}
        outs = {}
        for n, r in calls.items():
            # A library picks its ISA at its first call (GQA_CPU_ISA as it is then).
            os.environ["GQA_CPU_ISA"] = isas[n]
            r.call()
            outs[n] = r.output()
        for n in names[1:]:
            diff = float(np.max(np.abs(outs[n].astype(np.float64) - outs[names[0]])))
            if diff > 0:
                print(f"  ({cfg.label}: {n} differs from {names[0]} by up to {diff:.3g})", file=sys.stderr)
        print(_row(cfg, interleaved_cpu({n: r.call for n, r in calls.items()}, args.budget), names[0]), flush=True)


def cmd_paged(args) -> None:
    from gqa.bench.batch import Batch, Shape
    from gqa.bench.runners import numpy_dtype

    print(f"CPU time per call, {os.environ['GQA_NUM_THREADS']} thread(s): gqa.batch_attention, one prefill of S new "
          f"tokens, pages of {args.page_size} in shuffled order vs one page; load {os.getloadavg()[0]:.1f}")
    print("| config | one page ms | min ms | GFLOP/s | x paged |")
    print("|---|---:|---:|---:|---:|")
    rng = np.random.default_rng(0)
    for cfg in _configs(args.only):
        shape = Shape(cfg.model, cfg.num_q_heads, cfg.num_kv_heads, cfg.head_dim)
        batch = Batch(rng, shape, np.dtype(numpy_dtype(cfg.dtype)), [cfg.seq_len], [0], args.page_size)
        batch.contiguous()
        one = batch.out.copy()
        batch.paged()
        if not np.array_equal(one.view(np.uint8), batch.out.view(np.uint8)):
            print(f"  ({cfg.label}: paged output differs from one page)", file=sys.stderr)
        samples = interleaved_cpu({"contiguous": batch.contiguous, "paged": batch.paged}, args.budget)
        print(_row(cfg, samples, "contiguous"), flush=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    for name in ("peers", "ab", "paged"):
        p = sub.add_parser(name)
        p.add_argument("--only", default="prefill", help="comma-separated substrings of gqa.bench config labels")
        p.add_argument("--budget", type=float, default=4.0, help="CPU seconds of timing per config")
        if name == "peers":
            p.add_argument("--peers", default="torch,openvino,openvino-mha,onnxruntime")
            p.add_argument("--threads", type=int, default=int(os.environ["GQA_NUM_THREADS"]))
        if name == "ab":
            p.add_argument("--lib", action="append", required=True, help="name=path/to/libgqa.so[:GQA_CPU_ISA] (first: baseline)")
        if name == "paged":
            p.add_argument("--page-size", type=int, default=16)
    args = ap.parse_args()
    {"peers": cmd_peers, "ab": cmd_ab, "paged": cmd_paged}[args.cmd](args)


if __name__ == "__main__":
    main()
