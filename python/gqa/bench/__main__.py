"""python -m gqa.bench --device cpu: libgqa vs torch.nn.functional.scaled_dot_product_attention.

Writes benchmarks/cpu-bench.json, the CPU section of benchmarks/RESULTS.md and
benchmarks/cpu-bench.png (paths are options). Thread count: --threads, else GQA_NUM_THREADS,
else the cores this process may use; torch.set_num_threads gets the same number.

The GPU benchmarks are `python -m gqa.bench {decode,prefill,all} --device cuda` (gpu_main.py;
its own --help).
"""
from __future__ import annotations

import argparse
import datetime
import gc
import os
import platform
import subprocess
import sys
from pathlib import Path

from . import configs, report, runners, timing
from .progress import progress


def _repo_root() -> Path:
    return Path(__file__).resolve().parents[3]


def _commit() -> str:
    try:
        root = _repo_root()
        sha = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=root, capture_output=True,
                             text=True, check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain"], cwd=root, capture_output=True,
                               text=True, check=True).stdout.strip()
        return sha + ("+uncommitted" if dirty else "")
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def _l2_bytes_per_core() -> int:
    try:
        for index in Path("/sys/devices/system/cpu/cpu0/cache").glob("index*"):
            if (index / "level").read_text().strip() == "2":
                size = (index / "size").read_text().strip()
                return int(size[:-1]) * 1024 if size.endswith("K") else int(size)
    except (OSError, ValueError):
        pass
    return 1 << 20


def main(argv=None) -> int:
    from . import gpu_main

    if gpu_main.wants_gpu(list(sys.argv[1:] if argv is None else argv)):
        return gpu_main.main(argv)
    ap = argparse.ArgumentParser(prog="python -m gqa.bench", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="cpu", choices=["cpu", "cuda"],
                    help="cpu: this benchmark; cuda: python -m gqa.bench {decode,prefill,all} --device cuda --help")
    ap.add_argument("--threads", type=int, default=0, help="0: GQA_NUM_THREADS, else available cores")
    ap.add_argument("--quick", action="store_true", help="a smaller grid (no S=2048, no batch 8)")
    ap.add_argument("--no-torch", action="store_true", help="libgqa only")
    ap.add_argument("--only", default="", help="substring filter on the config label, e.g. 'decode'")
    out_dir = _repo_root() / "benchmarks"
    ap.add_argument("--json", type=Path, default=out_dir / "cpu-bench.json")
    ap.add_argument("--results-md", type=Path, default=out_dir / "RESULTS.md")
    ap.add_argument("--png", type=Path, default=out_dir / "cpu-bench.png")
    args = ap.parse_args(argv)

    threads = args.threads or int(os.environ.get("GQA_NUM_THREADS", "0") or 0) or len(os.sched_getaffinity(0))
    os.environ["GQA_NUM_THREADS"] = str(threads)  # read by libgqa when it first runs
    import gqa  # noqa: F401  (after GQA_NUM_THREADS is set)

    have_torch = not args.no_torch
    if have_torch:
        try:
            import torch
            torch.set_num_threads(threads)
            torch_version = torch.__version__
        except ImportError:
            print("torch is not installed: measuring libgqa only", file=sys.stderr)
            have_torch, torch_version = False, "not installed"
    else:
        torch_version = "not measured"

    copy_mib = 256
    copy_gbs = timing.copy_bandwidth_gbs(copy_mib)
    meta = {
        "device": f"{_cpu_name()} ({os.cpu_count()} logical CPUs)",
        "threads": threads,
        "isa": os.environ.get("GQA_CPU_ISA", "auto (best the CPU supports)"),
        "torch_version": torch_version,
        "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "commit": _commit(),
        "command": "python -m gqa.bench " + " ".join(argv if argv is not None else sys.argv[1:]),
        "copy_mib": copy_mib,
        "copy_gbs": copy_gbs,
        "l2_bytes": _l2_bytes_per_core() * threads,
        "loadavg": " ".join(Path("/proc/loadavg").read_text().split()[:3]),
        "json": str(args.json.relative_to(_repo_root()) if args.json.is_relative_to(_repo_root()) else args.json),
        "png": str(args.png.relative_to(_repo_root()) if args.png.is_relative_to(_repo_root()) else args.png),
    }

    grid = [c for c in configs.all_configs(args.quick) if args.only in c.label]
    rows = []
    bar = progress(len(grid), "gqa.bench cpu")
    for cfg in grid:
        bar.set_postfix_str(cfg.label)
        arrays = runners.make_inputs(cfg)
        row = {**cfg.__dict__, "label": cfg.label, "kv_bytes": cfg.kv_bytes()}
        t = timing.median_seconds(runners.gqa_call(cfg, arrays))
        row["gqa_ms"] = 1e3 * t
        if have_torch and cfg.dtype in configs.TORCH_DTYPES:
            tt = timing.median_seconds(runners.torch_call(cfg, arrays))
            row["torch_ms"] = 1e3 * tt
            row["speedup"] = tt / t
        if cfg.op == "prefill":
            row["gqa_gflops"] = cfg.flops() / t / 1e9
            if "torch_ms" in row:
                row["torch_gflops"] = cfg.flops() / (row["torch_ms"] / 1e3) / 1e9
        else:
            row["gqa_gbs"] = cfg.kv_bytes() / t / 1e9
            row["copy_fraction"] = row["gqa_gbs"] / copy_gbs
            if "torch_ms" in row:
                row["torch_gbs"] = cfg.kv_bytes() / (row["torch_ms"] / 1e3) / 1e9
        rows.append(row)
        del arrays
        gc.collect()
        bar.update(1)
    bar.close()

    report.write_json(args.json, meta, rows)
    report.write_results_md(args.results_md, report.markdown(meta, rows))
    wrote_png = report.write_png(args.png, meta, rows)
    print(f"wrote {args.json}, {args.results_md}" + (f", {args.png}" if wrote_png else " (no matplotlib: no PNG)"),
          file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
