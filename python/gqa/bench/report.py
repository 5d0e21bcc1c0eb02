"""Benchmark outputs: JSON, the CPU section of benchmarks/RESULTS.md, and a PNG."""
from __future__ import annotations

import json
import re
from pathlib import Path

START = "<!-- gqa-bench:cpu:start -->"
END = "<!-- gqa-bench:cpu:end -->"


def _fmt(x, digits=1):
    return "—" if x is None else f"{x:.{digits}f}"


def markdown(meta: dict, rows: list[dict]) -> str:
    lines = [
        START,
        "## CPU: libgqa vs PyTorch SDPA (`python -m gqa.bench --device cpu`)",
        "",
        f"- Device: {meta['device']}; {meta['threads']} threads for both libgqa and torch "
        f"(torch {meta['torch_version']}); libgqa ISA: {meta['isa']}",
        f"- Date: {meta['date']}; commit: `{meta['commit']}`; command: `{meta['command']}`",
        f"- Copy bandwidth (NumPy copy of {meta['copy_mib']} MiB, one thread, bytes copied per second; "
        f"STREAM's read+write count would be {2 * meta['copy_gbs']:.1f}): "
        f"**{meta['copy_gbs']:.1f} GB/s**; L2 counted for the decode target: {meta['l2_bytes'] / 2**20:.0f} MiB",
        f"- Machine load average at start: {meta['loadavg']} (shared machine: timings are noisy when it is busy)",
        "- Median of >= 5 timed calls after 2 warm-up calls. Prefill is causal, B=1, GFLOP/s = "
        "2·B·Hq·D·S·(S+1) / t. Decode GB/s = K+V bytes read (B·(L+1)·Hkv·D·2·elem) / t.",
        "",
        "### Prefill (target: libgqa >= 1.5x torch)",
        "",
        "| model | S | dtype | libgqa ms | libgqa GFLOP/s | torch ms | torch GFLOP/s | libgqa / torch | target |",
        "|---|---:|---|---:|---:|---:|---:|---:|---|",
    ]
    for r in rows:
        if r["op"] != "prefill":
            continue
        ratio = r.get("speedup")
        target = "—" if ratio is None else ("met" if ratio >= 1.5 else "**missed**")
        lines.append(
            f"| {r['model']} {r['num_q_heads']}:{r['num_kv_heads']} d{r['head_dim']} | {r['seq_len']} | {r['dtype']} "
            f"| {_fmt(r['gqa_ms'], 3)} | {_fmt(r['gqa_gflops'])} | {_fmt(r.get('torch_ms'), 3)} "
            f"| {_fmt(r.get('torch_gflops'))} | {_fmt(ratio, 2)}{'x' if ratio else ''} | {target} |")
    lines += [
        "",
        "### Decode (target: libgqa >= 60% of the copy bandwidth when K+V exceed L2)",
        "",
        "| model | B | L | dtype | K+V MiB | libgqa ms | libgqa GB/s | % of copy | torch ms | torch GB/s | libgqa / torch | target |",
        "|---|---:|---:|---|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    for r in rows:
        if r["op"] != "decode":
            continue
        ratio = r.get("speedup")
        if r["kv_bytes"] <= meta["l2_bytes"]:
            target = "n/a (fits L2)"
        else:
            target = "met" if r["copy_fraction"] >= 0.6 else "**missed**"
        lines.append(
            f"| {r['model']} {r['num_q_heads']}:{r['num_kv_heads']} d{r['head_dim']} | {r['batch']} | {r['cache_len']} "
            f"| {r['dtype']} | {r['kv_bytes'] / 2**20:.1f} | {_fmt(r['gqa_ms'], 3)} | {_fmt(r['gqa_gbs'])} "
            f"| {100 * r['copy_fraction']:.0f}% | {_fmt(r.get('torch_ms'), 3)} | {_fmt(r.get('torch_gbs'))} "
            f"| {_fmt(ratio, 2)}{'x' if ratio else ''} | {target} |")
    lines += ["", f"Raw numbers: `{meta['json']}`; plot: `{meta['png']}`.", END]
    return "\n".join(lines) + "\n"


def replace_section(text: str, section: str, start: str = START, end: str = END) -> str:
    """text with the part between the start and end markers replaced by section (which carries
    its own markers), or section appended when the markers are absent; the rest is kept."""
    pattern = re.compile(re.escape(start) + r".*?" + re.escape(end) + r"\n?", re.S)
    if pattern.search(text):
        return pattern.sub(lambda _: section, text)
    return text.rstrip("\n") + "\n\n" + section


def write_results_md(path: Path, section: str, start: str = START, end: str = END) -> None:
    """Replace one section of RESULTS.md (the CPU one by default), keeping everything else."""
    text = path.read_text() if path.exists() else "# libgqa benchmark results\n\n"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(replace_section(text, section, start, end))


def write_json(path: Path, meta: dict, rows: list[dict]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"meta": meta, "results": rows}, indent=1))


def write_png(path: Path, meta: dict, rows: list[dict]) -> bool:
    """Prefill speed-up over torch and decode bandwidth as a share of the copy bandwidth."""
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    fig, (ax1, ax2) = plt.subplots(2, 1, figsize=(13, 9))
    pre = [r for r in rows if r["op"] == "prefill" and r.get("speedup")]  # dtypes torch also ran
    ax1.bar(range(len(pre)), [r["speedup"] for r in pre], color="tab:blue")
    ax1.axhline(1.5, color="red", ls="--", label="target 1.5x")
    ax1.axhline(1.0, color="gray", lw=0.8)
    ax1.set_xticks(range(len(pre)), [f"{r['model'][:6]} S{r['seq_len']} {r['dtype']}" for r in pre],
                   rotation=60, ha="right", fontsize=7)
    ax1.set_ylabel("libgqa / torch (prefill)")
    ax1.legend()
    dec = [r for r in rows if r["op"] == "decode"]
    x = range(len(dec))
    ax2.bar([i - 0.2 for i in x], [r["gqa_gbs"] for r in dec], width=0.4, label="libgqa")
    ax2.bar([i + 0.2 for i in x], [r.get("torch_gbs") or 0 for r in dec], width=0.4, label="torch")
    ax2.axhline(0.6 * meta["copy_gbs"], color="red", ls="--", label="60% of copy bandwidth")
    ax2.set_xticks(list(x), [f"{r['model'][:6]} B{r['batch']} L{r['cache_len']} {r['dtype']}" for r in dec],
                   rotation=60, ha="right", fontsize=7)
    ax2.set_ylabel("decode GB/s (K+V read)")
    ax2.legend()
    fig.suptitle(f"libgqa CPU vs torch SDPA — {meta['device']}, {meta['threads']} threads, {meta['date']}")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True
