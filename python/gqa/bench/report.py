"""CPU benchmark results as plain data: derived figures (ratios to the fastest peer, fractions of
the machine's ceilings, noisy rows, targets), the Markdown section (printed, and written to a
file or into RESULTS.md between its CPU markers) and JSON. Also the section replacement the
GPU report shares. Rows are the dicts cpu_run.measure() makes; nothing here times anything.
"""
from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Optional

from .configs import DECODE_COPY_TARGET, DECODE_TARGET, PREFILL_TARGET
from .cpu_run import PEER_TITLES, TOLERANCE
from .timing import Stats

def markers(section: str = "cpu") -> tuple[str, str]:
    """RESULTS.md's start and end markers of a CPU section ("cpu" is the default one; another
    name keeps a second machine's table beside it)."""
    return f"<!-- gqa-bench:{section}:start -->", f"<!-- gqa-bench:{section}:end -->"


START, END = markers()
NOISY_SPREAD = 0.10  # a row whose libgqa or fastest-peer IQR exceeds this share of its median


def _fmt(x, digits=1):
    return "—" if x is None else f"{x:.{digits}f}"


def _ms(stats: Optional[dict]) -> Optional[float]:
    return None if stats is None else 1e3 * stats["median"]


def matmul_ceiling(meta: dict, dtype: str) -> Optional[float]:
    """The prefill ceiling of a dtype, GFLOP/s: its own matmul rate, or fp32's where that is faster
    (a CPU without f16 matmul units multiplies f16 data fastest as fp32, as libgqa's f16 path
    does); None when the dtype's own rate was not measured."""
    rates = meta.get("matmul", {})
    own = rates.get(dtype, {}).get("gflops")
    return max(own, rates.get("f32", {}).get("gflops") or 0.0) if own else None


def annotate(row: dict, meta: dict, noisy_spread: float = NOISY_SPREAD) -> dict:
    """The row plus: gqa_ms, best_peer, best_peer_ms, ratio (fastest peer's median / libgqa's),
    the throughput and its fraction of the ceiling (prefill: GFLOP/s of matmul_ceiling's rate;
    decode: GB/s of the copy bandwidth), fits_l2, noisy, target ("met", "missed", or
    "n/a" when no peer ran)."""
    row = dict(row)
    gqa = Stats.from_dict(row["gqa"]["stats"])
    row["gqa_ms"] = 1e3 * gqa.median
    timed = {n: Stats.from_dict(p["stats"]) for n, p in row["peers"].items() if p.get("stats")}
    row["best_peer"] = min(timed, key=lambda n: timed[n].median) if timed else None
    best = timed.get(row["best_peer"])
    row["best_peer_ms"] = 1e3 * best.median if best else None
    row["ratio"] = best.median / gqa.median if best else None
    spreads = [gqa.spread] + ([best.spread] if best else [])
    row["spread"] = max(spreads)
    row["noisy"] = row["spread"] > noisy_spread
    if row["op"] == "prefill":
        row["gqa_gflops"] = row["flops"] / gqa.median / 1e9
        rate = matmul_ceiling(meta, row["dtype"])
        row["ceiling_fraction"] = row["gqa_gflops"] / rate if rate else None
        met = row["ratio"] is not None and row["ratio"] >= PREFILL_TARGET
    else:
        row["gqa_gbs"] = row["kv_bytes"] / gqa.median / 1e9
        row["ceiling_fraction"] = row["gqa_gbs"] / meta["copy"]["gbs"]
        row["fits_l2"] = row["kv_bytes"] <= meta["l2_bytes"]
        bandwidth_ok = row["fits_l2"] or row["ceiling_fraction"] >= DECODE_COPY_TARGET
        met = row["ratio"] is not None and row["ratio"] >= DECODE_TARGET and bandwidth_ok
    row["target"] = "n/a" if row["ratio"] is None else ("met" if met else "missed")
    return row


def _peer_cell(row: dict, name: str) -> str:
    p = row["peers"].get(name)
    if p is None:
        return "—"
    if p.get("stats"):
        return _fmt(_ms(p["stats"]), 3)
    return "wrong" if (p.get("na") or "").startswith("wrong") else "n/a"


def _ratio_cell(row: dict) -> str:
    if row["ratio"] is None:
        return "—"
    cell = f"{row['ratio']:.2f}x"
    return f"**{cell}**" if row["target"] == "missed" else cell


def _noisy(row: dict) -> str:
    return f" ~{100 * row['spread']:.0f}%" if row["noisy"] else ""


def _reasons(rows: list[dict], peers: list[str]) -> list[str]:
    """One line per (peer, reason) pair: why a peer did not run or was not timed, and where."""
    seen: dict[tuple[str, str], list[str]] = {}
    for r in rows:
        for name in peers:
            why = r["peers"].get(name, {}).get("na")
            if why:
                seen.setdefault((name, why), []).append(f"{r['model']} {r['dtype']}")
    lines = []
    for (name, why), where in seen.items():
        places = sorted(set(where))
        lines.append(f"- {name}: {why} ({len(where)} rows: {', '.join(places[:6])}{', …' if len(places) > 6 else ''})")
    return lines


def _peers_in(rows: list[dict]) -> list[str]:
    names: list[str] = []
    for r in rows:
        for name in r["peers"]:
            if name not in names:
                names.append(name)
    return names


def _table(rows: list[dict], shape: list[tuple[str, str, object]], figures: list[tuple[str, object]]) -> list[str]:
    """One row per config: model, the shape columns ((header, alignment, cell of row)), libgqa's
    median (min–max, noisy mark), its figures ((header, cell of row)), each peer's median,
    the fastest peer, the speed-up and the target; then why peers did not run."""
    peers = _peers_in(rows)
    heads = ["model"] + [h for h, _, _ in shape] + ["libgqa ms (min–max)"] + [h for h, _ in figures] \
        + [f"{p} ms" for p in peers] + ["fastest peer", "libgqa speed-up", "target"]
    aligns = ["---"] + [a for _, a, _ in shape] + ["---:"] * (1 + len(figures) + len(peers)) + ["---", "---:", "---"]
    lines = ["| " + " | ".join(heads) + " |", "|" + "|".join(aligns) + "|"]
    for r in rows:
        s = r["gqa"]["stats"]
        cells = [f"{r['model']} {r['num_q_heads']}:{r['num_kv_heads']} d{r['head_dim']}"] + [f(r) for _, _, f in shape]
        cells.append(f"{1e3 * s['median']:.3f} ({1e3 * s['min']:.3f}–{1e3 * s['max']:.3f}){_noisy(r)}")
        cells += [f(r) for _, f in figures] + [_peer_cell(r, p) for p in peers]
        cells += [r["best_peer"] or "—", _ratio_cell(r), r["target"]]
        lines.append("| " + " | ".join(cells) + " |")
    return lines + [""] + _reasons(rows, peers)


def _percent(x: Optional[float]) -> str:
    return "—" if x is None else f"{100 * x:.0f}%"


def prefill_table(rows: list[dict]) -> list[str]:
    return _table(rows, [("S", "---:", lambda r: str(r["seq_len"])), ("dtype", "---", lambda r: r["dtype"])],
                  [("GFLOP/s", lambda r: _fmt(r["gqa_gflops"])), ("% of matmul", lambda r: _percent(r["ceiling_fraction"]))])


def decode_table(rows: list[dict]) -> list[str]:
    return _table(rows, [("B", "---:", lambda r: str(r["batch"])), ("L", "---:", lambda r: str(r["cache_len"])),
                         ("dtype", "---", lambda r: r["dtype"]),
                         ("K+V MiB", "---:", lambda r: f"{r['kv_bytes'] / 2**20:.1f}" + (" (fits L2)" if r["fits_l2"] else ""))],
                  [("GB/s", lambda r: _fmt(r["gqa_gbs"])), ("% of copy", lambda r: _percent(r["ceiling_fraction"]))])


def wake_table(wake: dict) -> list[str]:
    """Per backend: median µs of one call after each idle gap (and its ratio to back-to-back
    calls), and the CPU cores the process kept busy during the gaps."""
    gaps = [str(g) for g in wake["gaps_ms"]]
    idle = [g for g in gaps if float(g) > 0]
    lines = ["| backend | " + " | ".join(f"after {g} ms µs" for g in gaps) + " | "
             + " | ".join(f"idle CPU at {g} ms (cores)" for g in idle) + " |",
             "|---|" + "---:|" * (len(gaps) + len(idle))]
    notes = []
    for name, b in wake["backends"].items():
        if "na" in b:
            notes.append(f"- {name}: {b['na']}")
            continue
        base = b["gaps"][gaps[0]]["stats"]["median"]
        cells = []
        for g in gaps:
            m = b["gaps"][g]["stats"]["median"]
            cells.append(f"{1e6 * m:.0f}" + ("" if g == gaps[0] else f" ({m / base:.2f}x)"))
        lines.append(f"| {name} | " + " | ".join(cells) + " | "
                     + " | ".join(_fmt(b["gaps"][g]["idle_cores"], 3) for g in idle) + " |")
    return lines + [""] + notes


def markdown(meta: dict, rows: list[dict], wake: Optional[dict] = None, section: str = "cpu") -> str:
    """A CPU section of RESULTS.md (between its markers); rows already annotated."""
    start, end = markers(section)
    v = meta["versions"]
    isa = {}
    for r in rows:
        isa.setdefault(r["op"], set()).add(r["isa"] or "unknown")
    copy = meta["copy"]
    matmul = ", ".join(f"{d} {_fmt(m.get('gflops'), 0)} GFLOP/s"
                       + (f" (n={m['n']})" if m.get("n", meta["matmul_n"]) != meta["matmul_n"] else "")
                       if m.get("gflops") else f"{d} n/a ({m['na']})"
                       for d, m in meta["matmul"].items())
    lines = [
        start,
        f"## CPU ({meta['cpu']}): libgqa vs torch SDPA, OpenVINO SDPA and onnxruntime GroupQueryAttention",
        "",
        f"- CPU: {meta['cpu']} ({meta['cores']} cores available); ISA flags: {' '.join(meta['isa_flags']) or 'unknown'}; "
        f"L2 {meta['l2_per_core'] // 2**10} KiB per core",
        f"- {meta['threads']} threads for every backend; libgqa ISA path: "
        + ", ".join(f"{op} {'/'.join(sorted(s))}" for op, s in isa.items())
        + f" (GQA_CPU_ISA={meta['forced_isa'] or 'unset'}, GQA_CPU_SPIN_US={meta.get('spin_us') or 'unset'})",
        f"- Versions: libgqa {v['gqa']}, torch {v['torch']}, OpenVINO {v['openvino']}, onnxruntime {v['onnxruntime']}, "
        f"NumPy {v['numpy']}",
        f"- Date: {meta['date']}; commit `{meta['commit']}`; command: `{meta['command']}`; "
        f"load average {meta['loadavg_start']} at start, {meta.get('loadavg_end', '?')} at end",
        f"- Ceilings, same run: copy bandwidth **{copy['gbs']:.1f} GB/s** (bytes copied per second, {copy['mib']} MiB: "
        f"NumPy 1 thread {copy['numpy_gbs']:.1f}, torch {copy.get('torch_threads', '—')} threads "
        f"{_fmt(copy.get('torch_gbs'))}); matmul (torch.mm n={meta['matmul_n']}): {matmul}; "
        "a prefill's % of matmul is of its dtype's rate, or of f32's where that is faster",
        "- Timing: every backend interleaved in rotating order; per round an untimed warm-up call then a burst "
        "of timed calls; median over all timed calls, min–max beside it; a row marked ~N% had an "
        f"interquartile range over {100 * meta['noisy_spread']:.0f}% of its median (libgqa or the fastest peer): noisy.",
        f"- Peers are checked against libgqa's output before they are timed (max abs difference "
        f"{', '.join(f'{d} {t:g}' for d, t in TOLERANCE.items())}); a peer that fails is not timed.",
        "- Speed-up = the fastest peer's median / libgqa's. Prefill GFLOP/s = 2·B·Hq·D·S·(S+1) / t; "
        "decode GB/s = K+V bytes read (B·(L+1)·Hkv·D·2·elem) / t.",
        "",
    ]
    lines += [f"- {key}: {PEER_TITLES.get(key.split(',')[0], key)}; {note}" for key, note in meta.get("peer_notes", {}).items()]
    pre = [r for r in rows if r["op"] == "prefill"]
    dec = [r for r in rows if r["op"] == "decode"]
    if pre:
        lines += ["", f"### Prefill, causal (target: >= {PREFILL_TARGET}x the fastest peer)", ""] + prefill_table(pre)
    if dec:
        lines += ["", f"### Decode (target: >= {DECODE_TARGET}x the fastest peer, and >= "
                      f"{100 * DECODE_COPY_TARGET:.0f}% of the copy bandwidth when K+V exceed L2)", ""] + decode_table(dec)
    if wake:
        lines += ["", f"### After idle: one call of `{wake['config']['label']}` after each gap "
                      f"({wake['samples']} samples each, gaps interleaved)", ""] + wake_table(wake)
    lines += ["", f"Raw numbers: `{meta['json']}`; plot: `{meta['png']}`.", end]
    return "\n".join(lines) + "\n"


def notes_of(rows: list[dict]) -> dict[str, str]:
    """How each peer ran ("name, op": note), from its first row of that op with a note."""
    notes: dict[str, str] = {}
    for r in rows:
        for name, p in r["peers"].items():
            notes.setdefault(f"{name}, {r['op']}", p["note"]) if p.get("note") else None
    return notes


def misses(rows: list[dict]) -> list[str]:
    return [f"{r['label']}: {_ratio_cell(r).strip('*')} vs {r['best_peer']}"
            + (f", {100 * r['ceiling_fraction']:.0f}% of copy" if r["op"] == "decode" else "")
            + (" (noisy)" if r["noisy"] else "")
            for r in rows if r["target"] == "missed"]


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


def write_json(path: Path, meta: dict, rows: list[dict], wake: Optional[dict] = None) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"meta": meta, "results": rows, "wake": wake}, indent=1))
