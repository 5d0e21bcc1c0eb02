"""The CPU benchmark's PNG: libgqa's speed-up over the fastest peer per config (prefill and
decode), and decode bandwidth against the copy bandwidth. Needs matplotlib (the [bench] extra)."""
from __future__ import annotations

from pathlib import Path

from .configs import DECODE_COPY_TARGET, DECODE_TARGET, PREFILL_TARGET

DTYPE_COLORS = {"f32": "tab:blue", "bf16": "tab:orange", "f16": "tab:green"}


def label(row: dict) -> str:
    """A bar's label on two lines, the model's name whole: 'Llama-3-8B 32:8\\nS=2048 bf16'."""
    shape = f"S={row['seq_len']}" if row["op"] == "prefill" else f"B={row['batch']} L={row['cache_len']}"
    return f"{row['model']} {row['num_q_heads']}:{row['num_kv_heads']}\n{shape} {row['dtype']}"


def write_png(path: Path, meta: dict, rows: list[dict]) -> bool:
    """False (and nothing written) when matplotlib is not installed."""
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    ratio_panels = [(op, target, [r for r in rows if r["op"] == op and r["ratio"]])
                    for op, target in (("prefill", PREFILL_TARGET), ("decode", DECODE_TARGET))]
    ratio_panels = [p for p in ratio_panels if p[2]]
    dec = [r for r in rows if r["op"] == "decode"]
    count = len(ratio_panels) + bool(dec)
    if not count:
        return False
    width = max(10.0, 0.42 * max(len(r) for r in [dec] + [p[2] for p in ratio_panels]))
    fig, axes = plt.subplots(count, 1, figsize=(width, 4.6 * count), squeeze=False)
    axes = [a[0] for a in axes]
    for ax, (op, target, ops) in zip(axes, ratio_panels):
        ax.bar(range(len(ops)), [r["ratio"] for r in ops], color=[DTYPE_COLORS.get(r["dtype"], "gray") for r in ops])
        for x, r in enumerate(ops):  # which peer was the fastest, above its bar
            ax.annotate(r["best_peer"], (x, r["ratio"]), ha="center", va="bottom", fontsize=6, rotation=90,
                        xytext=(0, 2), textcoords="offset points")
        ax.axhline(target, color="red", ls="--")
        ax.axhline(1.0, color="gray", lw=0.8)
        ax.set_xticks(range(len(ops)), [label(r) for r in ops], rotation=90, fontsize=7)
        ax.set_ylabel(f"{op}: fastest peer time / libgqa time")
        ax.legend([plt.Rectangle((0, 0), 1, 1, color=c) for c in DTYPE_COLORS.values()]
                  + [plt.Line2D([], [], color="red", ls="--")], list(DTYPE_COLORS) + [f"target {target}x"], fontsize=8)
    if dec:
        ax = axes[-1]
        x = range(len(dec))
        ax.bar([j - 0.2 for j in x], [r["gqa_gbs"] for r in dec], width=0.4, label="libgqa")
        ax.bar([j + 0.2 for j in x], [r["kv_bytes"] / (r["best_peer_ms"] / 1e3) / 1e9 if r["best_peer_ms"] else 0
                                      for r in dec], width=0.4, label="fastest peer")
        ax.axhline(meta["copy"]["gbs"], color="black", lw=0.8, label="copy bandwidth")
        ax.axhline(DECODE_COPY_TARGET * meta["copy"]["gbs"], color="red", ls="--",
                   label=f"{100 * DECODE_COPY_TARGET:.0f}% of copy")
        ax.set_xticks(list(x), [label(r) for r in dec], rotation=90, fontsize=7)
        ax.set_ylabel("decode GB/s (K+V read)")
        ax.legend(fontsize=8)
    fig.suptitle(f"libgqa CPU — {meta['cpu']}, {meta['threads']} threads, {meta['date']}", fontsize=10)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True
