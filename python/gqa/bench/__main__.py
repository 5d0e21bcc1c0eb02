"""python -m gqa.bench --device cpu: libgqa against torch SDPA, OpenVINO SDPA and onnxruntime
GroupQueryAttention on this CPU, with the machine's own ceilings measured in the same run.

Prints the table and writes cpu-bench.json, cpu-bench.md and cpu-bench.png into --out (default:
the current directory); --results-md FILE also replaces the CPU section of FILE (e.g.
benchmarks/RESULTS.md). Every backend gets the same thread count: --threads, else
GQA_NUM_THREADS, else the cores this process may use. A peer that is not installed or cannot run
a config is skipped with the reason. The whole grid takes 10-14 minutes on 2 cores; --quick ~2.

The GPU benchmarks are `python -m gqa.bench {decode,prefill,all} --device cuda` (gpu_main.py;
its own --help).
"""
from __future__ import annotations

import argparse
import datetime
import os
import sys
from pathlib import Path

from . import configs, cpu_run, machine, report
from .progress import progress


def parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="python -m gqa.bench", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="cpu", choices=["cpu", "cuda"],
                    help="cpu: this benchmark; cuda: python -m gqa.bench {decode,prefill,all} --device cuda --help")
    ap.add_argument("--threads", type=int, default=0, help="0: GQA_NUM_THREADS, else the available cores")
    ap.add_argument("--quick", action="store_true", help="a small grid (S <= 512, batch 1) and shorter timing")
    ap.add_argument("--only", default="", help="comma-separated substrings of config labels, any of them, "
                                               "e.g. 'decode' or 'Phi-3-mini S=2048,L=8192'")
    ap.add_argument("--peers", default=",".join(cpu_run.PEERS),
                    help=f"comma-separated peers to run (default all: {','.join(cpu_run.PEERS)}); '' for libgqa only")
    ap.add_argument("--budget", type=float, default=0, help="seconds of timing per config (default 1.0; --quick 0.4)")
    ap.add_argument("--no-wake", action="store_true", help="skip the idle-gap measurement")
    ap.add_argument("--noisy", type=float, default=report.NOISY_SPREAD,
                    help="flag rows whose IQR exceeds this share of the median (default %(default)s)")
    ap.add_argument("--out", type=Path, default=Path.cwd(), help="folder for cpu-bench.{json,md,png} (default: .)")
    ap.add_argument("--results-md", type=Path, help="also replace the CPU section of this Markdown file")
    ap.add_argument("--section", default="cpu", help="which CPU section of --results-md (its markers "
                    "<!-- gqa-bench:NAME:start/end -->; default cpu): another name keeps a second machine's table")
    return ap


def _run_meta(args, threads: int, argv: list[str]) -> dict:
    gqa_root = Path(__file__).resolve().parents[3]
    return {
        "cpu": machine.cpu_model(),
        "isa_flags": machine.isa_flags(),
        "cores": machine.available_cores(),
        "l2_per_core": machine.l2_bytes_per_core(),
        "l2_bytes": machine.l2_bytes_per_core() * threads,
        "threads": threads,
        "forced_isa": os.environ.get("GQA_CPU_ISA", ""),
        "spin_us": os.environ.get("GQA_CPU_SPIN_US", ""),
        "versions": machine.versions(),
        "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "commit": machine.commit(gqa_root if (gqa_root / "include" / "gqa.h").is_file() else Path.cwd()),
        "command": "python -m gqa.bench " + " ".join(argv),
        "loadavg_start": machine.load_average(),
        "noisy_spread": args.noisy,
        "matmul_n": machine.MATMUL_N,
        "json": "cpu-bench.json",
        "png": "cpu-bench.png",
    }


def main(argv=None) -> int:
    from . import gpu_main

    argv = list(sys.argv[1:] if argv is None else argv)
    if gpu_main.wants_gpu(argv):
        return gpu_main.main(argv)
    args = parser().parse_args(argv)
    threads = args.threads or int(os.environ.get("GQA_NUM_THREADS", "0") or 0) or machine.available_cores()
    os.environ["GQA_NUM_THREADS"] = str(threads)  # read by libgqa when it first runs
    import gqa

    gqa.set_num_threads(threads)
    try:
        import torch
        torch.set_num_threads(threads)
    except ImportError:
        pass
    peers = [p.strip() for p in args.peers.split(",") if p.strip()]
    unknown = [p for p in peers if p not in cpu_run.PEERS]
    if unknown:
        print(f"unknown peer(s) {unknown}; choose from {list(cpu_run.PEERS)}", file=sys.stderr)
        return 2
    grid = configs.select(configs.all_configs(args.quick), args.only)
    if not grid:
        print(f"no config matches --only {args.only!r}", file=sys.stderr)
        return 2
    budget = args.budget or (0.4 if args.quick else 1.0)

    meta = _run_meta(args, threads, argv)
    meta["copy"] = machine.copy_bandwidth(threads)
    meta["matmul"] = machine.matmul_rates(configs.DTYPES)
    rows = []
    bar = progress(len(grid), "gqa.bench cpu")
    for cfg in grid:
        bar.set_postfix_str(cfg.label)
        rows.append(cpu_run.measure(cfg, threads, peers, budget, min_rounds=3 if args.quick else 5))
        bar.update(1)
    bar.close()
    wake = None
    if not args.no_wake:
        wake = cpu_run.measure_wake(configs.wake_config(), threads, peers, configs.WAKE_GAPS_MS,
                                    samples=10 if args.quick else 25)
    meta["loadavg_end"] = machine.load_average()
    meta["peer_notes"] = report.notes_of(rows)

    rows = [report.annotate(r, meta, args.noisy) for r in rows]
    section = report.markdown(meta, rows, wake, args.section)
    out = args.out
    out.mkdir(parents=True, exist_ok=True)
    report.write_json(out / "cpu-bench.json", meta, rows, wake)
    (out / "cpu-bench.md").write_text(section)
    from . import cpu_plot

    wrote_png = cpu_plot.write_png(out / "cpu-bench.png", meta, rows)
    if args.results_md:
        report.write_results_md(args.results_md, section, *report.markers(args.section))
    print("".join(line for line in section.splitlines(keepends=True) if not line.startswith("<!-- gqa-bench:")))
    missed = report.misses(rows)
    if missed:
        print("targets missed:\n  " + "\n  ".join(missed))
    written = [out / "cpu-bench.json", out / "cpu-bench.md"] + ([out / "cpu-bench.png"] if wrote_png else [])
    print("wrote " + ", ".join(map(str, written)) + (f", {args.results_md}" if args.results_md else "")
          + ("" if wrote_png else " (no matplotlib: no PNG; pip install '.[bench]')"), file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
