"""PNG plots of the GPU benchmarks (matplotlib, optional): per config, libgqa next to each SDPA
peer, decode in GB/s against the copy bandwidth, prefill in TFLOP/s against the matmul rate.
Takes the annotated rows of gpu_report, so it needs no GPU either."""
from __future__ import annotations

from pathlib import Path

from .gpu_configs import DECODE_BW_TARGET, PEER_TITLES, PEERS

SHORT_NAMES = {"Qwen2.5-0.5B": "Qwen0.5B", "Phi-3-mini": "Phi3", "Llama-3-8B": "Llama8B"}


def _short(row: dict) -> str:
    shape = f"B{row['batch']} L{row['past']}" if row["op"] == "decode" else f"B{row['batch']} S{row['seq_len']}"
    if row["op"] == "prefill-chunked":
        shape += f" P{row['past']}"
    return f"{SHORT_NAMES.get(row['model'], row['model'][:8])} {shape} {row['dtype']}"


def _bars(ax, rows: list[dict], gqa_key: str, peer_key: str) -> None:
    series = [("libgqa", [r.get(gqa_key) or 0 for r in rows])]
    series += [(PEER_TITLES[p], [(r.get("peers", {}).get(p) or {}).get(peer_key) or 0 for r in rows]) for p in PEERS]
    width = 0.8 / len(series)
    for j, (name, values) in enumerate(series):
        ax.bar([i + (j - (len(series) - 1) / 2) * width for i in range(len(rows))], values, width=width, label=name)
    ax.set_xticks(range(len(rows)), [_short(r) for r in rows], rotation=70, ha="right", fontsize=6)


def _save(fig, path: Path) -> None:
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)


def write_png(path: Path, meta: dict, rows: list[dict], op: str) -> bool:
    """op "decode" or "prefill"; False (and no file) when matplotlib is missing."""
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    fig, ax = plt.subplots(figsize=(max(12.0, 0.32 * len(rows)), 6))
    if op == "decode":
        _bars(ax, rows, "gqa_gbs", "gbs")
        copy = meta["copy"]["gbs"]
        ax.axhline(copy, color="black", lw=0.8, label=f"copy {copy:.0f} GB/s (read + write)")
        ax.axhline(DECODE_BW_TARGET * copy, color="red", ls="--", label=f"{100 * DECODE_BW_TARGET:.0f}% of copy")
        ax.set_ylabel("decode GB/s (K+V bytes read / t)")
    else:
        _bars(ax, rows, "gqa_tflops", "tflops")
        for dtype, rate in meta["matmul"]["tflops"].items():
            ax.axhline(rate, ls="--", lw=0.8, color="gray" if dtype == "fp16" else "brown",
                       label=f"matmul {dtype} {rate:.0f} TFLOP/s")
        ax.set_ylabel("prefill TFLOP/s (4·B·S²·Hq·D / 2 causal)")
    ax.legend(fontsize=7)
    fig.suptitle(f"libgqa {op} vs torch SDPA — {meta['device']['name']}, {meta['date']}, {meta['commit']}")
    _save(fig, path)
    plt.close(fig)
    return True
