"""GPU benchmark results as plain data: derived metrics, target misses, the RESULTS.md sections
and JSON. Rows are dicts (no torch), so all of this is tested on machines without a GPU.

A row: the config's fields (GpuConfig.as_dict()) plus
  status   "ok", "skipped" (did not fit), "wrong" (libgqa failed the check) or "error"
  reason   why, for any status but "ok"
  copies   input copies rotated through
  gqa      {"us", "graph_us", "err"}: libgqa's median plain and CUDA-graph times, max abs error
  peers    {name: {"us", "graph_us", "err", "contiguous", "na"}}; "na" is the reason a backend
           did not run (then "us" is None)
"""
from __future__ import annotations

import json
import re
from collections import OrderedDict
from pathlib import Path

from . import report
from .gpu_configs import DECODE_BW_MIN_BYTES, DECODE_BW_TARGET, PEER_TITLES, PEERS, TOLERANCE

DECODE_MARKERS = ("<!-- gqa-bench:gpu-decode:start -->", "<!-- gqa-bench:gpu-decode:end -->")
PREFILL_MARKERS = ("<!-- gqa-bench:gpu-prefill:start -->", "<!-- gqa-bench:gpu-prefill:end -->")


def short_reason(messages: list[str], limit: int = 240) -> str:
    """One line from torch's explanations of a refused call: whitespace collapsed, headers such
    as "Flash attention kernel not used because:" and "(Triggered internally at ...)" dropped,
    duplicates removed; the generic "No available kernel" only when nothing else was said."""
    parts: list[str] = []
    generic: list[str] = []
    for message in messages:
        text = " ".join(re.sub(r"\(Triggered internally at [^)]*\)\.?", "", message).split())
        if not text or text.endswith("not used because:") or text in parts:
            continue
        (generic if "No available kernel" in text else parts).append(text)
    text = "; ".join(parts or generic) or "refused (no reason given)"
    return text if len(text) <= limit else text[: limit - 1] + "…"


# ---- metrics ---------------------------------------------------------------------------------
def _ok_peers(row: dict) -> dict:
    """Peers that ran and were right (a peer that fails the check is no benchmark either)."""
    return {name: p for name, p in row.get("peers", {}).items() if p.get("us") and not p.get("na")}


def best_peer(row: dict) -> tuple[str | None, float | None]:
    peers = _ok_peers(row)
    if not peers:
        return None, None
    name = min(peers, key=lambda n: peers[n]["us"])
    return name, peers[name]["us"]


def annotate_decode(row: dict, copy_gbs: float) -> dict:
    """Adds gqa_gbs, copy_fraction, best_peer(_us), ratio, each peer's gbs, and misses."""
    row = {**row, "peers": {n: dict(p) for n, p in row.get("peers", {}).items()}}
    us = row.get("gqa", {}).get("us") if row.get("status") == "ok" else None
    row["best_peer"], row["best_peer_us"] = best_peer(row)
    for p in row["peers"].values():
        p["gbs"] = row["kv_bytes"] / (p["us"] * 1e3) if p.get("us") else None
    row["gqa_gbs"] = row["kv_bytes"] / (us * 1e3) if us else None
    row["copy_fraction"] = row["gqa_gbs"] / copy_gbs if us and copy_gbs else None
    row["ratio"] = us / row["best_peer_us"] if us and row["best_peer_us"] else None
    row["misses"], row["evaluated"] = decode_misses(row)
    return row


def decode_misses(row: dict) -> tuple[list[str], int]:
    """(reasons the row misses its targets, how many targets applied). Bandwidth applies when
    K+V exceed 64 MB; latency when some peer ran."""
    if row.get("status") != "ok" or not row.get("gqa", {}).get("us"):
        return [], 0
    misses, evaluated = [], 0
    if row["kv_bytes"] > DECODE_BW_MIN_BYTES and row.get("copy_fraction") is not None:
        evaluated += 1
        if row["copy_fraction"] < DECODE_BW_TARGET:
            misses.append(f"bw {100 * row['copy_fraction']:.0f}% < {100 * DECODE_BW_TARGET:.0f}%")
    if row.get("ratio") is not None:
        evaluated += 1
        if row["ratio"] > 1.0:
            misses.append(f"time {row['ratio']:.2f}x {row['best_peer']}")
    return misses, evaluated


def annotate_prefill(row: dict, matmul_tflops: dict) -> dict:
    """Adds gqa_tflops, matmul_fraction (of the same dtype's matmul), best_peer(_us), ratio,
    each peer's tflops, and misses."""
    row = {**row, "peers": {n: dict(p) for n, p in row.get("peers", {}).items()}}
    us = row.get("gqa", {}).get("us") if row.get("status") == "ok" else None
    row["best_peer"], row["best_peer_us"] = best_peer(row)
    for p in row["peers"].values():
        p["tflops"] = row["flops"] / (p["us"] * 1e6) if p.get("us") else None
    row["gqa_tflops"] = row["flops"] / (us * 1e6) if us else None
    rate = matmul_tflops.get(row["dtype"])
    row["matmul_fraction"] = row["gqa_tflops"] / rate if us and rate else None
    row["ratio"] = us / row["best_peer_us"] if us and row["best_peer_us"] else None
    row["misses"], row["evaluated"] = prefill_misses(row)
    return row


def prefill_misses(row: dict) -> tuple[list[str], int]:
    """Targets: at least cuDNN's and FA2's speed (each applies when that peer ran)."""
    if row.get("status") != "ok" or not row.get("gqa", {}).get("us") or row["op"] != "prefill":
        return [], 0
    misses, evaluated = [], 0
    ok = _ok_peers(row)
    for name in ("cudnn", "flash"):
        if name in ok:
            evaluated += 1
            ratio = row["gqa"]["us"] / ok[name]["us"]
            if ratio > 1.0:
                misses.append(f"time {ratio:.2f}x {name}")
    return misses, evaluated


# ---- markdown --------------------------------------------------------------------------------
def _num(x, digits: int = 1) -> str:
    if x is None:
        return "—"
    return f"{x:,.0f}" if abs(x) >= 1000 else f"{x:.{digits}f}"


def _time_cell(entry: dict | None) -> str:
    """'plain / graph' µs, 'n/a', or '—'; † marks a peer that needed contiguous K/V copies."""
    if not entry:
        return "—"
    if entry.get("na"):
        return "n/a"
    if not entry.get("us"):
        return "—"
    text = _num(entry["us"])
    if entry.get("graph_us"):
        text += f" / {_num(entry['graph_us'])}"
    elif entry.get("graph_na"):
        text += " / graph n/a"
    return text + (" †" if entry.get("contiguous") else "")


def _cell_text(text: str, limit: int = 120) -> str:
    text = " ".join(str(text).split()).replace("|", "\\|")
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _gqa_cell(row: dict) -> str:
    status, reason = row.get("status"), _cell_text(row.get("reason", ""))
    if status == "wrong":
        return f"**WRONG** ({reason})"
    if status == "error":
        return f"**error** ({reason})"
    if status == "skipped":
        return f"skipped ({reason})"
    return _time_cell(row.get("gqa"))


def _target_cell(row: dict) -> str:
    if row.get("status") != "ok":
        return "—"
    if row.get("misses"):
        return "**miss**: " + ", ".join(row["misses"])
    return "met" if row.get("evaluated") else "—"


def _config_cell(row: dict) -> str:
    shape = f"B={row['batch']} L={row['past']}" if row["op"] == "decode" else f"B={row['batch']} S={row['seq_len']}"
    return f"{row['model']} {row['num_q_heads']}:{row['num_kv_heads']} d{row['head_dim']} {shape} {row['dtype']}"


def na_reasons(rows: list[dict]) -> list[str]:
    """One line per (peer, reason) with the number of configs, instead of a reason per cell."""
    counts: OrderedDict = OrderedDict()

    def count(key):
        counts[key] = counts.get(key, 0) + 1

    for r in rows:
        if r.get("gqa", {}).get("graph_na"):
            count(("libgqa CUDA graph", r["gqa"]["graph_na"]))
        for name, p in r.get("peers", {}).items():
            if p.get("na"):
                count((PEER_TITLES.get(name, name), p["na"]))
            elif p.get("graph_na"):
                count((PEER_TITLES.get(name, name) + " CUDA graph", p["graph_na"]))
    return [f"- {who}: {reason} ({c} config{'s' if c > 1 else ''})" for (who, reason), c in counts.items()]


def _header(meta: dict, title: str, command: str) -> list[str]:
    dev = meta["device"]
    return [
        f"## {title} (`{command}`)",
        "",
        f"- Device: {dev['name']} (sm_{dev['capability']}, {dev['sm_count']} SMs, L2 {dev['l2_bytes'] / 2**20:.0f} MiB, "
        f"{dev['memory_bytes'] / 2**30:.1f} GiB); torch {meta['torch_version']} (CUDA {meta['cuda_version']}, "
        f"cuDNN {meta['cudnn_version']}); libgqa {meta['gqa_version']}",
        f"- Date: {meta['date']}; commit: `{meta['commit']}`; command: `{meta['command']}`",
    ] + ([f"- **Partial run**: {meta['partial']} measured before it stopped."] if meta.get("partial") else [])


def _timing_note(meta: dict) -> str:
    t = meta["timing"]
    spin = ("a spin kernel queued before each timed call keeps Python's launch overhead out of it "
            "(GPU time)" if t["spin"] else "no spin kernel (torch.cuda._sleep missing): times include launch overhead")
    return (f"- Timing: median of CUDA-event times of single calls after {t['warmup']} warm-up calls "
            f"({t['min_reps']}-{t['max_reps']} calls, about {t['budget_s']} s per measurement); {spin}. "
            f"Inputs rotate over copies until {t['rotation_factor']:g} x L2 are touched between reuses "
            f"(at most {t['max_copies']} copies, within free memory).")


def _tolerance_note() -> str:
    tol = ", ".join(f"{v:g} {k}" for k, v in TOLERANCE.items())
    return (f"- Checked: libgqa (and each peer) against a float32 reference on the first and last "
            f"sequence of every config; max abs error must be <= {tol}. A wrong libgqa is not timed "
            f"(**WRONG**) and the run exits non-zero; a wrong peer counts as n/a.")


def _footer(meta: dict, rows: list[dict], end: str) -> list[str]:
    lines = []
    reasons = na_reasons(rows)
    if reasons:
        lines += ["", "n/a (what refused or failed, the reason as torch or libgqa gave it, and how often):", *reasons]
    lines += ["", f"Raw numbers: `{meta['json']}`; plot: `{meta['png']}`.", end]
    return lines


def decode_markdown(meta: dict, rows: list[dict]) -> str:
    """The decode section of RESULTS.md; rows already passed through annotate_decode."""
    start, end = DECODE_MARKERS
    copy = meta["copy"]
    peers_head = " | ".join(f"{PEER_TITLES[p]} µs" for p in PEERS)
    lines = [start, *_header(meta, "GPU decode: libgqa vs PyTorch SDPA", meta["mode_command"]),
             f"- Copy bandwidth (torch `copy_` of {copy['bytes'] / 2**30:.1f} GiB, counted read + write = "
             f"2 x size / t): **{copy['gbs']:.0f} GB/s**. Decode GB/s = K+V bytes read "
             "(2·B·(L+1)·Hkv·D·2) / t, compared with that figure.",
             _timing_note(meta),
             "- Each cell: plain µs / CUDA-graph µs (graph: one call per input copy captured in one "
             "graph, replayed; time per call). libgqa gets a split-KV workspace allocated once "
             "(num_splits=0, libgqa chooses) and also appends the new K/V row at L; the peers "
             "(`enable_gqa=True`) attend over the same L+1 cache rows through BSHD→BHSD views "
             "(† = needed contiguous copies, made before timing).",
             _tolerance_note(),
             f"- Targets: >= {100 * DECODE_BW_TARGET:.0f}% of the copy bandwidth when K+V > "
             f"{DECODE_BW_MIN_BYTES / 1e6:.0f} MB, and plain latency <= the best peer's "
             "(libgqa / best = libgqa µs / best peer µs; below 1 is faster).",
             "",
             f"| config | K+V MB | libgqa µs | {peers_head} | best peer | libgqa / best | libgqa GB/s | % of copy | target |",
             "|---|---:|---:|" + "---:|" * len(PEERS) + "---|---:|---:|---:|---|"]
    for r in rows:
        peers = " | ".join(_time_cell(r.get("peers", {}).get(p)) for p in PEERS)
        frac = r.get("copy_fraction")
        lines.append(
            f"| {_config_cell(r)} | {r['kv_bytes'] / 1e6:,.1f} | {_gqa_cell(r)} | {peers} | {r.get('best_peer') or '—'} "
            f"| {_num(r.get('ratio'), 2)} | {_num(r.get('gqa_gbs'))} | {'—' if frac is None else f'{100 * frac:.0f}%'} "
            f"| {_target_cell(r)} |")
    return "\n".join(lines + _footer(meta, rows, end)) + "\n"


def prefill_markdown(meta: dict, rows: list[dict]) -> str:
    """The prefill section of RESULTS.md; rows already passed through annotate_prefill."""
    start, end = PREFILL_MARKERS
    mm = meta["matmul"]
    rates = ", ".join(f"{dt} **{v:.0f} TFLOP/s**" for dt, v in mm["tflops"].items())
    peers_head = " | ".join(f"{PEER_TITLES[p]} µs" for p in PEERS)
    lines = [start, *_header(meta, "GPU prefill: libgqa vs PyTorch SDPA", meta["mode_command"]),
             f"- Matmul rate (torch.matmul {mm['n']}x{mm['n']}x{mm['n']}, 2·n³ / t): {rates}.",
             "- TFLOP/s uses FlashAttention's convention: 4·B·S²·Hq·D / 2 for causal (Q·Kᵀ and P·V, "
             "half the pairs; the diagonal is ignored); chunked rows add the prefix: 4·B·Hq·D·(S·P + S²/2).",
             _timing_note(meta),
             "- Causal, no KV cache, batch = 16384 // S. The peers (`is_causal=True, enable_gqa=True`) "
             "get the same BSHD tensors as BHSD views († = needed contiguous copies, made before timing).",
             _tolerance_note(),
             "- Targets: libgqa at least as fast as SDPA cuDNN and SDPA flash (FA2).",
             "",
             f"| config | GFLOP | libgqa µs | {peers_head} | best peer | libgqa / best | libgqa TFLOP/s | % of matmul | target |",
             "|---|---:|---:|" + "---:|" * len(PEERS) + "---|---:|---:|---:|---|"]
    for r in (r for r in rows if r["op"] == "prefill"):
        peers = " | ".join(_time_cell(r.get("peers", {}).get(p)) for p in PEERS)
        frac = r.get("matmul_fraction")
        lines.append(
            f"| {_config_cell(r)} | {r['flops'] / 1e9:,.1f} | {_gqa_cell(r)} | {peers} | {r.get('best_peer') or '—'} "
            f"| {_num(r.get('ratio'), 2)} | {_num(r.get('gqa_tflops'))} | {'—' if frac is None else f'{100 * frac:.0f}%'} "
            f"| {_target_cell(r)} |")
    chunked = [r for r in rows if r["op"] == "prefill-chunked"]
    if chunked:
        lines += ["", "Chunked prefill, **libgqa only** (SDPA's is_causal has no offset for a cached prefix): the chunk of S "
                  "new tokens at start_pos P attends causally to itself and to the P cached positions, "
                  "and is written into the cache.",
                  "", "| config | P (cached) | GFLOP | libgqa µs | libgqa TFLOP/s | % of matmul |",
                  "|---|---:|---:|---:|---:|---:|"]
        for r in chunked:
            frac = r.get("matmul_fraction")
            lines.append(f"| {_config_cell(r)} | {r['past']} | {r['flops'] / 1e9:,.1f} | {_gqa_cell(r)} "
                         f"| {_num(r.get('gqa_tflops'))} | {'—' if frac is None else f'{100 * frac:.0f}%'} |")
    return "\n".join(lines + _footer(meta, rows, end)) + "\n"


def summary_lines(rows: list[dict]) -> list[str]:
    """One line per failure and a count of misses, for the terminal."""
    lines = [f"{r['label']}: {r['status'].upper()}: {r.get('reason', '')}" for r in rows
             if r.get("status") in ("wrong", "error")]
    missed = sum(1 for r in rows if r.get("misses"))
    lines.append(f"{len(rows)} configs, {missed} missing a target, "
                 f"{sum(r.get('status') == 'skipped' for r in rows)} skipped, "
                 f"{sum(r.get('status') in ('wrong', 'error') for r in rows)} failed")
    return lines


# ---- files -----------------------------------------------------------------------------------
def write_section(path: Path, section: str, markers: tuple[str, str]) -> None:
    report.write_results_md(path, section, *markers)


def write_json(path: Path, meta: dict, rows: list[dict]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"meta": meta, "results": rows}, indent=1, default=str))
