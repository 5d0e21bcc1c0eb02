"""python -m gqa.bench {decode,prefill,overhead,all} --device cuda: libgqa vs torch SDPA on one GPU.

decode: Qwen2.5-0.5B 14:2 d64, Phi-3-mini 32:32 d96, Llama-3-8B 32:8 d128 x batch
1, 16, 64 x cache 1k, 8k, 32k x fp16, bf16, against SDPA flash, cuDNN and mem-efficient, plain
and in CUDA graphs; GB/s against the device's own copy bandwidth.
prefill: the same models x S 512, 2048, 8192 (batch 16384 // S), causal, plus chunked
rows (libgqa only); TFLOP/s against the device's own matmul rate.
overhead: host µs per call (libgqa's C ABI and Python API, torch SDPA, a bare torch launch);
see gpu_overhead.py.
Writes benchmarks/gpu-{decode,prefill,overhead}-bench.json, the decode and prefill PNGs and its
own sections of benchmarks/RESULTS.md. Exit status: 0; 1 when libgqa failed or was wrong on some config;
2 when there is no CUDA device (one line on stderr, nothing written).
"""
from __future__ import annotations

import argparse
import datetime
import gc
import json
import subprocess
import sys
import warnings
from pathlib import Path

from . import gpu_configs, gpu_report
from .progress import progress

MODES = ("decode", "prefill", "overhead", "all")
ROTATION_FACTOR, MAX_COPIES = 4.0, 256


def wants_gpu(argv: list[str]) -> bool:
    """Dispatch of `python -m gqa.bench`: the GPU harness for --device cuda, or for a leading mode
    (decode, prefill, all) without --device; everything else is the CPU benchmark as before."""
    device = None
    for i, arg in enumerate(argv):
        if arg == "--device" and i + 1 < len(argv):
            device = argv[i + 1]
        elif arg.startswith("--device="):
            device = arg.split("=", 1)[1]
    if device is not None:
        return device == "cuda"
    return bool(argv) and argv[0] in MODES


def _repo_root() -> Path:
    """The checkout: next to this file when run from it, else the working directory (the
    package installed elsewhere, run from the checkout as tests/gpu/run.sh does)."""
    here = Path(__file__).resolve().parents[3]
    return here if (here / "include" / "gqa.h").is_file() else Path.cwd()


def _commit(root: Path) -> str:
    try:
        git = ["git", "-C", str(root)]
        sha = subprocess.run(git + ["rev-parse", "--short", "HEAD"], capture_output=True, text=True, check=True).stdout.strip()
        dirty = subprocess.run(git + ["status", "--porcelain", "--untracked-files=no"], capture_output=True,
                               text=True, check=True).stdout.strip()
        return sha + ("+uncommitted" if dirty else "")
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def parser() -> argparse.ArgumentParser:
    out_dir = _repo_root() / "benchmarks"
    ap = argparse.ArgumentParser(prog="python -m gqa.bench", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("mode", nargs="?", default="all", choices=MODES, help="what to measure (default: all)")
    ap.add_argument("--device", default="cuda", choices=["cuda"], help="cuda (the CPU benchmark: --device cpu)")
    ap.add_argument("--quick", action="store_true", help="small grid: batch 1 and 16, cache 1k and 8k, S <= 2048, fp16 only")
    ap.add_argument("--only", default="", help="substrings of config labels, comma-separated, any of them: e.g. 'Llama-3-8B B=16' or 'L=8192,S=2048'")
    ap.add_argument("--no-graph", action="store_true", help="no CUDA-graph timings")
    ap.add_argument("--no-peers", action="store_true", help="libgqa only (no torch SDPA backends)")
    ap.add_argument("--budget", type=float, default=0.3, help="seconds per measurement (default 0.3)")
    ap.add_argument("--out-dir", type=Path, default=out_dir, help="where the JSON and PNG go (default benchmarks/)")
    ap.add_argument("--results-md", type=Path, default=out_dir / "RESULTS.md", help="file whose GPU sections are replaced")
    ap.add_argument("--from-json", type=Path, metavar="JSON",
                    help="measure nothing: rewrite the RESULTS.md section and the PNG from a JSON this harness "
                         "wrote (e.g. one copied back from a GPU machine); needs no GPU")
    return ap


def no_device_reason() -> str | None:
    """Why the GPU benchmark cannot run here, or None."""
    try:
        import torch
    except Exception as e:  # noqa: BLE001 - ImportError, or a broken CUDA runtime (OSError)
        return f"PyTorch cannot be imported ({type(e).__name__}: {e})"
    try:
        with warnings.catch_warnings(record=True) as caught:  # e.g. "found no NVIDIA driver": one line only
            warnings.simplefilter("always")
            available = torch.cuda.is_available()
        if not available:
            said = f": {' '.join(str(caught[0].message).split())}" if caught else ""
            return f"torch {torch.__version__} sees none (torch.cuda.is_available() is False{said})"
        import gqa
        if not gqa.cuda_available():
            return f"libgqa cannot use it: {gqa.cuda_unavailable_reason() or 'built without CUDA'}"
    except Exception as e:  # noqa: BLE001
        return f"{type(e).__name__}: {e}"
    return None


def _device_meta(torch) -> dict:
    props = torch.cuda.get_device_properties(torch.cuda.current_device())
    l2 = getattr(props, "L2_cache_size", 0) or 50 * 2**20  # torch < 2.1: assume an H100's 50 MiB
    return {"name": props.name, "capability": f"{props.major}{props.minor}", "sm_count": props.multi_processor_count,
            "l2_bytes": l2, "memory_bytes": props.total_memory}


def _usable_bytes(torch) -> int:
    """Free device memory minus room for outputs, workspaces, the reference and SDPA's scratch."""
    free, total = torch.cuda.mem_get_info()
    return int(free - (2 << 30) - 0.05 * total)


def run_config(cfg, timer, l2_bytes: int, graphs: bool, peers: bool) -> dict:
    """One row of the table (see gpu_report's docstring for its fields)."""
    import torch

    from . import gpu_runners

    row = {**cfg.as_dict(), "kv_bytes": cfg.kv_bytes(), "flops": cfg.flops(), "peers": {}}
    copies = gpu_configs.rotation_copies(cfg.copy_bytes(), l2_bytes, _usable_bytes(torch),
                                         factor=ROTATION_FACTOR, max_copies=MAX_COPIES)
    if copies == 0:
        return {**row, "status": "skipped",
                "reason": f"needs {cfg.copy_bytes() / 1e9:.1f} GB, {max(_usable_bytes(torch), 0) / 1e9:.1f} GB usable"}
    row["copies"] = copies
    try:
        case = gpu_runners.Case(cfg, copies)
    except torch.cuda.OutOfMemoryError:
        return {**row, "status": "skipped", "reason": "out of memory allocating the inputs"}
    graphs = graphs and cfg.op == "decode"  # prefill calls are long: launch gaps do not matter
    try:
        gqa_entry = gpu_runners.run_gqa(case, timer, graphs)
    except torch.cuda.OutOfMemoryError:
        gqa_entry = {"status": "skipped", "reason": "out of memory in libgqa's timing"}
        peers = False
    row["status"] = gqa_entry.pop("status")
    if "reason" in gqa_entry:
        row["reason"] = gqa_entry.pop("reason")
    row["gqa"] = gqa_entry
    if peers and cfg.op != "prefill-chunked":  # SDPA has no mask for a cached prefix plus a causal chunk
        for name in gpu_configs.PEERS:
            try:
                row["peers"][name] = gpu_runners.run_peer(case, name, timer, graphs, lambda: _usable_bytes(torch))
            except Exception as e:  # noqa: BLE001 - a peer's failure is its own n/a, not libgqa's
                row["peers"][name] = {"na": f"{type(e).__name__}: {_first_line(e)}"}
            gc.collect()
            torch.cuda.empty_cache()
    del case
    return row


def _first_line(e: Exception) -> str:
    text = str(e).strip()
    return text.splitlines()[0][:160] if text else ""


def _shown(path: Path, root: Path) -> str:
    """path relative to the checkout when inside it (for the report)."""
    path = path.resolve()
    return str(path.relative_to(root)) if path.is_relative_to(root) else str(path)


def _run_mode(op: str, args, timer, meta_base: dict, root: Path) -> int:
    import torch

    from . import gpu_timing

    grid = gpu_configs.decode_configs(args.quick) if op == "decode" else gpu_configs.prefill_configs(args.quick)
    grid = gpu_configs.select(grid, args.only)
    if not grid:
        print(f"gqa.bench: no {op} config matches --only {args.only!r}", file=sys.stderr)
        return 0
    json_path = args.out_dir / f"gpu-{op}-bench.json"
    png_path = args.out_dir / f"gpu-{op}-bench.png"

    meta = {**meta_base, "op": op, "mode_command": f"python -m gqa.bench {op} --device cuda",
            "json": _shown(json_path, root), "png": _shown(png_path, root)}
    if op == "decode":
        meta["copy"] = gpu_timing.copy_bandwidth(timer, torch.cuda.mem_get_info()[0])
    else:
        meta["matmul"] = gpu_timing.matmul_rate(timer)
    gc.collect()
    torch.cuda.empty_cache()

    def annotated(rows: list[dict]) -> list[dict]:
        if op == "decode":
            return [gpu_report.annotate_decode(r, meta["copy"]["gbs"]) for r in rows]
        return [gpu_report.annotate_prefill(r, meta["matmul"]["tflops"]) for r in rows]

    rows = []
    bar = progress(len(grid), f"gqa.bench cuda {op}")
    for cfg in grid:
        bar.set_postfix_str(cfg.label)
        try:
            rows.append(run_config(cfg, timer, meta["device"]["l2_bytes"], not args.no_graph, not args.no_peers))
        except Exception as e:  # noqa: BLE001 - one broken config must not lose the others' numbers
            rows.append({**cfg.as_dict(), "kv_bytes": cfg.kv_bytes(), "flops": cfg.flops(), "peers": {},
                         "status": "error", "reason": f"{type(e).__name__}: {_first_line(e)}"})
        # Written after every config: a run cut short (a device time limit) still leaves its
        # numbers, which --from-json can turn into the report.
        gpu_report.write_json(json_path, {**meta, "partial": f"{len(rows)} of {len(grid)} configs"}, annotated(rows))
        gc.collect()
        torch.cuda.empty_cache()
        bar.update(1)
    bar.close()

    rows = annotated(rows)
    gpu_report.write_json(json_path, meta, rows)
    print(f"wrote {json_path}", file=sys.stderr)
    return publish(meta, rows, args.results_md, png_path)


def publish(meta: dict, rows: list[dict], results_md: Path, png_path: Path) -> int:
    """RESULTS.md section, PNG and terminal summary of annotated rows; the exit status."""
    from . import gpu_plot

    op = meta["op"]
    if op == "decode":
        section, markers = gpu_report.decode_markdown(meta, rows), gpu_report.DECODE_MARKERS
    else:
        section, markers = gpu_report.prefill_markdown(meta, rows), gpu_report.PREFILL_MARKERS
    gpu_report.write_section(results_md, section, markers)
    wrote_png = gpu_plot.write_png(png_path, meta, rows, op)
    for line in gpu_report.summary_lines(rows):
        print(f"gqa.bench {op}: {line}", file=sys.stderr)
    print(f"wrote {results_md}" + (f", {png_path}" if wrote_png else " (no matplotlib: no PNG)"), file=sys.stderr)
    failed = any(r.get("status") in ("wrong", "error") or r.get("gqa", {}).get("graph_na") for r in rows)
    return 1 if failed else 0


def _run_overhead(args, meta_base: dict, root: Path) -> int:
    """The host-overhead table (gpu_overhead.py): JSON and its RESULTS.md section."""
    import dataclasses

    from . import gpu_overhead
    from .__main__ import _cpu_name  # the CPU benchmark's one reader of the CPU model

    calls, rounds = (100, 5) if args.quick else (200, 15)
    shape = gpu_overhead.Shape()
    json_path = args.out_dir / "gpu-overhead-bench.json"
    rows = gpu_overhead.measure(shape, calls, rounds)
    meta = {**meta_base, "op": "overhead", "shape": dataclasses.asdict(shape), "calls": calls, "rounds": rounds,
            "cpu": _cpu_name(), "json": _shown(json_path, root)}
    args.out_dir.mkdir(parents=True, exist_ok=True)
    json_path.write_text(json.dumps({"meta": meta, "results": rows}, indent=1, default=str))
    gpu_report.write_section(args.results_md, gpu_overhead.markdown(meta, rows), gpu_overhead.MARKERS)
    for label, title in gpu_overhead.ROWS:
        entry = rows.get(label, {})
        shown = f"n/a ({entry['na']})" if "na" in entry else f"{entry.get('us', float('nan')):.2f} µs"
        print(f"gqa.bench overhead: {title}: {shown}", file=sys.stderr)
    print(f"wrote {json_path}, {args.results_md}", file=sys.stderr)
    return 1 if any("na" in rows.get(label, {}) for label in ("c_decode", "c_decode_split", "c_prefill_cache")) else 0


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parser().parse_args(argv)
    if args.from_json:
        try:
            data = json.loads(args.from_json.read_text())
            meta, rows = data["meta"], data["results"]
            meta["op"]
        except (OSError, ValueError, KeyError, TypeError) as e:
            print(f"gqa.bench: {args.from_json} is not a GPU benchmark JSON ({type(e).__name__}: {e})", file=sys.stderr)
            return 2
        if meta["op"] == "overhead":
            from . import gpu_overhead

            gpu_report.write_section(args.results_md, gpu_overhead.markdown(meta, rows), gpu_overhead.MARKERS)
            return 0
        return publish(meta, rows, args.results_md, args.from_json.with_suffix(".png"))
    why = no_device_reason()
    if why:
        print(f"gqa.bench: no CUDA device: {why}", file=sys.stderr)
        return 2

    import torch

    import gqa

    from . import gpu_timing

    root = _repo_root()
    timer = gpu_timing.Timer(gpu_timing.TimingPolicy(budget_s=args.budget))
    meta_base = {
        "device": _device_meta(torch),
        "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "commit": _commit(root),
        "command": "python -m gqa.bench " + " ".join(argv),
        "torch_version": torch.__version__,
        "cuda_version": torch.version.cuda,
        "cudnn_version": torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else "none",
        "gqa_version": gqa.version(),
        "timing": {**timer.policy.as_dict(), "spin": timer.spin, "rotation_factor": ROTATION_FACTOR,
                   "max_copies": MAX_COPIES},
        "graphs": not args.no_graph,
        "peers": not args.no_peers,
    }
    status = 0
    for op in ("decode", "prefill", "overhead") if args.mode == "all" else (args.mode,):
        run = _run_overhead(args, meta_base, root) if op == "overhead" else _run_mode(op, args, timer, meta_base, root)
        status = max(status, run)
    return status
