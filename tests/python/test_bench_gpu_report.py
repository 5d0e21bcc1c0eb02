"""The GPU benchmark harness without a GPU: its grid, byte and FLOP counts, rotation, metrics,
target misses, tables, RESULTS.md sections and CLI dispatch (python/gqa/bench/gpu_*.py).
Also its float32 reference and its libgqa/SDPA wiring, run on CPU tensors (no timing)."""
import json
import os
import subprocess
import sys

import numpy as np
import pytest

from gqa.bench import gpu_configs as gc
from gqa.bench import gpu_main, gpu_report, report
from gqa.bench.gpu_configs import GpuConfig

LLAMA_DECODE = GpuConfig("decode", "Llama-3-8B", 32, 8, 128, "fp16", 16, 1, 8192)
QWEN_PREFILL = GpuConfig("prefill", "Qwen2.5-0.5B", 14, 2, 64, "bf16", 8, 2048, 0)


# ---- grid -------------------------------------------------------------------------------------
def test_decode_grid_is_models_by_batches_by_lengths_by_dtypes():
    grid = gc.decode_configs()
    assert len(grid) == 3 * 3 * 3 * 2
    assert {c.batch for c in grid} == {1, 16, 64}
    assert {c.past for c in grid} == {1024, 8192, 32768}
    assert {c.dtype for c in grid} == {"fp16", "bf16"}
    assert {(c.num_q_heads, c.num_kv_heads, c.head_dim) for c in grid} == {(14, 2, 64), (32, 32, 96), (32, 8, 128)}
    assert all(c.seq_len == 1 and c.op == "decode" for c in grid)
    assert len({c.label for c in grid}) == len(grid)


def test_prefill_grid_keeps_tokens_constant_and_adds_chunked_rows():
    grid = gc.prefill_configs()
    plain = [c for c in grid if c.op == "prefill"]
    assert len(plain) == 3 * 3 * 2
    assert {(c.seq_len, c.batch) for c in plain} == {(512, 32), (2048, 8), (8192, 2)}
    chunked = [c for c in grid if c.op == "prefill-chunked"]
    assert chunked and all(c.past > 0 for c in chunked)
    assert len({c.label for c in grid}) == len(grid)


def test_quick_grids_are_small_subsets():
    assert set(gc.decode_configs(True)) < set(gc.decode_configs())
    assert set(gc.prefill_configs(True)) < set(gc.prefill_configs())
    assert len(gc.decode_configs(True)) <= 12 and len(gc.prefill_configs(True)) <= 8


def test_only_filter_takes_any_of_comma_separated_substrings():
    grid = gc.decode_configs()
    assert gc.select(grid, "") == grid
    llama16 = gc.select(grid, "Llama-3-8B B=16 ")
    assert llama16 and all(c.model == "Llama-3-8B" and c.batch == 16 for c in llama16)
    both = gc.select(grid, "Qwen, Phi-3")
    assert {c.model for c in both} == {"Qwen2.5-0.5B", "Phi-3-mini"}
    assert gc.select(grid, "nothing") == []


# ---- counting ---------------------------------------------------------------------------------
def test_decode_kv_bytes_count_cache_len_plus_one_rows():
    assert LLAMA_DECODE.kv_bytes() == 2 * 16 * 8193 * 8 * 128 * 2
    assert LLAMA_DECODE.copy_bytes() == LLAMA_DECODE.kv_bytes() + 16 * 32 * 128 * 2 + 2 * 16 * 8 * 128 * 2


def test_prefill_flops_follow_flashattention_causal_convention():
    assert QWEN_PREFILL.flops() == 4 * 8 * 2048**2 * 14 * 64 / 2
    chunk = GpuConfig("prefill-chunked", "Llama-3-8B", 32, 8, 128, "fp16", 4, 2048, 6144)
    assert chunk.flops() == 4 * 4 * 32 * 128 * (2048 * 6144 + 2048**2 / 2)
    assert chunk.kv_len == 8192
    assert QWEN_PREFILL.copy_bytes() == 8 * 2048 * (14 + 2 * 2) * 64 * 2  # no caches


def test_rotation_copies():
    l2 = 50 * 2**20
    assert gc.rotation_copies(1 << 30, l2, 80 << 30) == 1  # one copy is already far past L2
    assert gc.rotation_copies(10 * 2**20, l2, 80 << 30) == 20  # 4 x L2 in 10 MiB copies
    assert gc.rotation_copies(1024, l2, 80 << 30) == 256  # capped
    assert gc.rotation_copies(10 * 2**20, l2, 55 * 2**20) == 5  # capped by memory
    assert gc.rotation_copies(30 << 30, l2, 20 << 30) == 0  # does not fit at all
    assert gc.rotation_copies(1 << 20, l2, -5) == 0


def test_tolerance():
    assert gc.within_tolerance(0.019, "fp16") and not gc.within_tolerance(0.021, "fp16")
    assert gc.within_tolerance(0.049, "bf16") and not gc.within_tolerance(0.051, "bf16")
    assert not gc.within_tolerance(float("nan"), "bf16")


# ---- metrics and misses -------------------------------------------------------------------------
def _row(cfg, gqa_us, peers, status="ok", graph_us=None):
    row = {**cfg.as_dict(), "kv_bytes": cfg.kv_bytes(), "flops": cfg.flops(), "status": status, "copies": 1,
           "gqa": {"us": gqa_us, "graph_us": graph_us, "err": 1e-3}, "peers": {}}
    for name, us in peers.items():
        row["peers"][name] = {"na": us} if isinstance(us, str) else {"us": us, "graph_us": None, "err": 1e-3}
    return row


def test_decode_metrics_best_peer_ratio_and_bandwidth():
    kv = LLAMA_DECODE.kv_bytes()  # 537 MB
    us_at_90 = kv / (0.9 * 3000e9) * 1e6
    row = gpu_report.annotate_decode(_row(LLAMA_DECODE, us_at_90 * 0.99, {"flash": us_at_90 * 1.2,
                                                                          "cudnn": "refused", "efficient": us_at_90 * 1.1}),
                                     3000.0)
    assert row["best_peer"] == "efficient"
    assert row["ratio"] == pytest.approx(0.99 / 1.1)
    assert row["gqa_gbs"] == pytest.approx(kv / (us_at_90 * 0.99 * 1e3))
    assert row["copy_fraction"] == pytest.approx(0.9 / 0.99)
    assert row["peers"]["flash"]["gbs"] == pytest.approx(kv / (us_at_90 * 1.2 * 1e3))
    assert row["misses"] == [] and row["evaluated"] == 2


def test_decode_misses_bandwidth_only_past_64_mb_and_latency_always():
    slow = gpu_report.annotate_decode(_row(LLAMA_DECODE, 400.0, {"flash": 300.0}), 3000.0)
    assert len(slow["misses"]) == 2 and slow["misses"][0].startswith("bw ") and "flash" in slow["misses"][1]
    small = GpuConfig("decode", "Qwen2.5-0.5B", 14, 2, 64, "fp16", 1, 1, 1024)  # 0.5 MB: latency only
    row = gpu_report.annotate_decode(_row(small, 5.0, {"flash": 6.0}), 3000.0)
    assert row["misses"] == [] and row["evaluated"] == 1
    row = gpu_report.annotate_decode(_row(small, 7.0, {"flash": 6.0}), 3000.0)
    assert row["misses"] == ["time 1.17x flash"]
    none = gpu_report.annotate_decode(_row(small, 7.0, {"flash": "refused"}), 3000.0)
    assert none["misses"] == [] and none["evaluated"] == 0 and none["best_peer"] is None


def test_wrong_peers_and_wrong_libgqa_are_not_compared():
    row = _row(LLAMA_DECODE, 100.0, {"flash": 50.0})
    row["peers"]["flash"]["na"] = "wrong output (max abs err 0.5)"
    assert gpu_report.annotate_decode(row, 3000.0)["best_peer"] is None
    wrong = gpu_report.annotate_decode({**_row(LLAMA_DECODE, None, {"flash": 50.0}, status="wrong"),
                                        "reason": "max abs err 0.3"}, 3000.0)
    assert wrong["misses"] == [] and wrong["gqa_gbs"] is None and wrong["ratio"] is None


def test_prefill_metrics_and_misses_against_cudnn_and_flash():
    flops = QWEN_PREFILL.flops()
    row = gpu_report.annotate_prefill(_row(QWEN_PREFILL, 100.0, {"flash": 120.0, "cudnn": 90.0, "efficient": 200.0}),
                                      {"fp16": 700.0, "bf16": 650.0})
    assert row["gqa_tflops"] == pytest.approx(flops / 100e6)
    assert row["matmul_fraction"] == pytest.approx(flops / 100e6 / 650.0)
    assert row["best_peer"] == "cudnn" and row["misses"] == ["time 1.11x cudnn"] and row["evaluated"] == 2
    fast = gpu_report.annotate_prefill(_row(QWEN_PREFILL, 80.0, {"flash": 120.0, "cudnn": "refused"}), {})
    assert fast["misses"] == [] and fast["evaluated"] == 1 and fast["matmul_fraction"] is None
    chunk = GpuConfig("prefill-chunked", "Llama-3-8B", 32, 8, 128, "fp16", 4, 2048, 6144)
    assert gpu_report.annotate_prefill(_row(chunk, 100.0, {}), {"fp16": 700.0})["evaluated"] == 0


def test_short_reason_keeps_torch_explanations_on_one_line():
    messages = ["Flash attention kernel not used because:",
                "Flash attention requires q,k,v to have the same last dimension. Got 64 and 96 "
                "(Triggered internally at /pytorch/aten/src/ATen/native/transformers/cuda/sdp_utils.cpp:123.)",
                "Flash attention requires q,k,v to have the same last dimension. Got 64 and 96",
                "RuntimeError: No available kernel. Aborting execution."]
    assert gpu_report.short_reason(messages) == ("Flash attention requires q,k,v to have the same last dimension. "
                                                 "Got 64 and 96")
    assert gpu_report.short_reason(["RuntimeError: No available kernel.\n Aborting."]) == \
        "RuntimeError: No available kernel. Aborting."
    assert gpu_report.short_reason([]) == "refused (no reason given)"
    assert len(gpu_report.short_reason(["x" * 1000])) == 240


# ---- markdown ---------------------------------------------------------------------------------
def _meta():
    return {"device": {"name": "NVIDIA H100 80GB HBM3", "capability": "90", "sm_count": 132,
                       "l2_bytes": 50 * 2**20, "memory_bytes": 80 * 2**30},
            "date": "2026-11-24 10:00 UTC", "commit": "abc1234", "command": "python -m gqa.bench decode --device cuda",
            "mode_command": "python -m gqa.bench decode --device cuda", "torch_version": "2.9.0", "cuda_version": "12.8",
            "cudnn_version": 91000, "gqa_version": "0.1.0",
            "timing": {"warmup": 3, "min_reps": 10, "max_reps": 200, "budget_s": 0.3, "spin": True,
                       "rotation_factor": 4.0, "max_copies": 256},
            "copy": {"bytes": 1 << 30, "gbs": 3000.0, "counted": "read + write"},
            "matmul": {"n": 8192, "tflops": {"fp16": 700.0, "bf16": 690.0}},
            "json": "benchmarks/gpu-decode-bench.json", "png": "benchmarks/gpu-decode-bench.png"}


def _decode_rows():
    small = GpuConfig("decode", "Qwen2.5-0.5B", 14, 2, 64, "fp16", 1, 1, 1024)
    huge = GpuConfig("decode", "Phi-3-mini", 32, 32, 96, "bf16", 64, 1, 32768)
    rows = [_row(LLAMA_DECODE, 400.0, {"flash": 300.0, "cudnn": "cuDNN refuses | this", "efficient": 350.0},
                 graph_us=390.0),
            _row(small, 5.0, {"flash": 6.0, "cudnn": "cuDNN refuses | this", "efficient": 7.0}),
            {**_row(small, None, {}, status="wrong"), "reason": "max abs err 0.31"},
            {**small.as_dict(), "kv_bytes": huge.kv_bytes(), "flops": 0.0, "status": "skipped",
             "reason": "needs 25.8 GB, 20.0 GB usable", "peers": {}}]
    rows[0]["peers"]["flash"]["contiguous"] = True
    rows[0]["peers"]["efficient"]["graph_us"] = 340.0
    return [gpu_report.annotate_decode(r, 3000.0) for r in rows]


def test_decode_markdown_table():
    text = gpu_report.decode_markdown(_meta(), _decode_rows())
    start, end = gpu_report.DECODE_MARKERS
    assert text.startswith(start + "\n") and text.endswith(end + "\n")
    for needle in ("NVIDIA H100 80GB HBM3", "abc1234", "torch 2.9.0", "**3000 GB/s**", "read + write",
                   "| config | K+V MB | libgqa µs | SDPA flash (FA2) µs | SDPA cuDNN µs | SDPA mem-efficient µs |"):
        assert needle in text
    lines = [line for line in text.splitlines() if line.startswith("| Llama-3-8B")]
    assert len(lines) == 1
    cells = [c.strip() for c in lines[0].strip("|").split("|")]
    assert cells[0] == "Llama-3-8B 32:8 d128 B=16 L=8192 fp16"
    assert cells[2] == "400.0 / 390.0" and cells[3] == "300.0 †" and cells[4] == "n/a" and cells[5] == "350.0 / 340.0"
    assert cells[6] == "flash" and cells[7] == "1.33"
    assert cells[-1].startswith("**miss**:") and "flash" in cells[-1]
    assert "| 5.0 |" in text and "| met |" in text
    assert "**WRONG** (max abs err 0.31)" in text and "skipped (needs 25.8 GB" in text
    # Reasons are listed once under the table, with a count; a '|' in them cannot break a row.
    assert "- SDPA cuDNN: cuDNN refuses | this (2 configs)" in text
    header = next(line for line in text.splitlines() if line.startswith("| config"))
    for line in text.splitlines():
        if line.startswith("| ") and "config" not in line:
            assert line.replace("\\|", "").count("|") == header.count("|")


def test_prefill_markdown_table_and_chunked_rows():
    chunk = GpuConfig("prefill-chunked", "Llama-3-8B", 32, 8, 128, "fp16", 4, 2048, 6144)
    rows = [gpu_report.annotate_prefill(r, {"fp16": 700.0, "bf16": 690.0})
            for r in (_row(QWEN_PREFILL, 100.0, {"flash": 120.0, "cudnn": 90.0, "efficient": 200.0}),
                      _row(chunk, 1000.0, {}))]
    meta = {**_meta(), "mode_command": "python -m gqa.bench prefill --device cuda"}
    text = gpu_report.prefill_markdown(meta, rows)
    start, end = gpu_report.PREFILL_MARKERS
    assert text.startswith(start) and text.rstrip().endswith(end)
    assert "4·B·S²·Hq·D / 2" in text and "fp16 **700 TFLOP/s**" in text
    assert "| Qwen2.5-0.5B 14:2 d64 B=8 S=2048 bf16 |" in text and "**miss**: time 1.11x cudnn" in text
    assert "**libgqa only**" in text and "| Llama-3-8B 32:8 d128 B=4 S=2048 fp16 | 6144 |" in text


def test_results_md_sections_replace_only_their_own(tmp_path):
    path = tmp_path / "RESULTS.md"
    cpu = f"{report.START}\n## CPU\nold cpu\n{report.END}\n"
    path.write_text("# libgqa benchmark results\n\n" + cpu + "\ntrailing notes\n")
    decode = gpu_report.decode_markdown(_meta(), _decode_rows())
    gpu_report.write_section(path, decode, gpu_report.DECODE_MARKERS)
    first = path.read_text()
    assert cpu in first and "trailing notes" in first and first.endswith(decode)
    # Again with new content: replaced in place, not appended; the CPU section is untouched.
    gpu_report.write_section(path, decode.replace("abc1234", "def5678"), gpu_report.DECODE_MARKERS)
    second = path.read_text()
    assert second.count(gpu_report.DECODE_MARKERS[0]) == 1 and "def5678" in second and "abc1234" not in second
    assert cpu in second
    # The CPU writer still replaces only the CPU section.
    report.write_results_md(path, f"{report.START}\nnew cpu\n{report.END}\n")
    third = path.read_text()
    assert "new cpu" in third and "old cpu" not in third and "def5678" in third


def test_replace_section_appends_when_missing():
    text = report.replace_section("# title\n", "<!-- a -->\nx\n<!-- b -->\n", "<!-- a -->", "<!-- b -->")
    assert text == "# title\n\n<!-- a -->\nx\n<!-- b -->\n"


def test_json_and_summary(tmp_path):
    rows = _decode_rows()
    gpu_report.write_json(tmp_path / "d.json", _meta(), rows)
    data = json.loads((tmp_path / "d.json").read_text())
    assert data["meta"]["copy"]["gbs"] == 3000.0 and len(data["results"]) == len(rows)
    lines = gpu_report.summary_lines(rows)
    assert any("WRONG" in line for line in lines)
    assert lines[-1] == "4 configs, 1 missing a target, 1 skipped, 1 failed"


def test_png_from_plain_rows(tmp_path):
    pytest.importorskip("matplotlib")
    from gqa.bench import gpu_plot

    assert gpu_plot.write_png(tmp_path / "d.png", _meta(), _decode_rows(), "decode")
    rows = [gpu_report.annotate_prefill(_row(QWEN_PREFILL, 100.0, {"flash": 120.0}), {"bf16": 690.0})]
    assert gpu_plot.write_png(tmp_path / "p.png", _meta(), rows, "prefill")
    assert (tmp_path / "d.png").stat().st_size > 1000 and (tmp_path / "p.png").stat().st_size > 1000


# ---- CLI --------------------------------------------------------------------------------------
@pytest.mark.parametrize("argv,gpu", [
    ([], False), (["--device", "cpu"], False), (["--device=cpu", "--quick"], False),
    (["--only", "decode"], False), (["--device", "cpu", "--only", "prefill"], False),
    (["decode", "--device", "cuda"], True), (["prefill"], True), (["all", "--quick"], True),
    (["--device", "cuda"], True), (["--quick", "--device=cuda", "prefill"], True),
])
def test_dispatch_between_cpu_and_gpu_benchmarks(argv, gpu):
    assert gpu_main.wants_gpu(argv) is gpu


def _cuda_visible():
    try:
        import torch
        return torch.cuda.is_available()
    except Exception:  # noqa: BLE001
        return False


@pytest.mark.skipif(_cuda_visible(), reason="a CUDA device is visible: this would run the benchmark")
@pytest.mark.parametrize("mode", ["decode", "prefill"])
def test_without_a_gpu_the_cli_says_so_in_one_line(mode, tmp_path):
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in sys.path if p)}
    res = subprocess.run([sys.executable, "-m", "gqa.bench", mode, "--device", "cuda", "--out-dir", str(tmp_path),
                          "--results-md", str(tmp_path / "RESULTS.md")], capture_output=True, text=True, env=env,
                         timeout=120)
    assert res.returncode == 2
    assert res.stdout == ""
    assert res.stderr.count("\n") == 1 and res.stderr.startswith("gqa.bench: no CUDA device")
    assert "Traceback" not in res.stderr and list(tmp_path.iterdir()) == []


# ---- the reference and the call wiring, on CPU tensors -------------------------------------------
def test_reference_matches_gqa_reference_for_a_chunk_after_a_cached_prefix():
    torch = pytest.importorskip("torch")
    import gqa
    from gqa.bench import gpu_check

    rng = np.random.default_rng(0)
    past, s, hq, hkv, d = 11, 7, 6, 2, 32
    q = rng.standard_normal((1, s, hq, d))
    k = rng.standard_normal((1, s, hkv, d))
    v = rng.standard_normal((1, s, hkv, d))
    kc = rng.standard_normal((1, past + s, hkv, d))
    vc = rng.standard_normal((1, past + s, hkv, d))
    want = gqa.reference.prefill(q, k, v, kc.copy(), vc.copy(), start_pos=past)
    keys = torch.cat([torch.from_numpy(kc[0, :past]), torch.from_numpy(k[0])])
    values = torch.cat([torch.from_numpy(vc[0, :past]), torch.from_numpy(v[0])])
    got = gpu_check.reference(torch.from_numpy(q[0]), keys, values, q_start=past, budget_bytes=4 * 2 * s * (past + s))
    assert np.max(np.abs(got.numpy() - want[0])) < 1e-5  # float32 vs float64, and head chunks of one


@pytest.mark.parametrize("cfg", [
    GpuConfig("decode", "tiny", 8, 2, 64, "fp16", 3, 1, 37),
    GpuConfig("prefill", "tiny", 6, 3, 32, "bf16", 2, 19, 0),
    GpuConfig("prefill-chunked", "tiny", 4, 1, 64, "fp16", 2, 9, 13),
], ids=lambda c: c.op)
def test_runner_wiring_on_cpu_tensors(cfg):
    """The same Case, libgqa call, SDPA views and error check as on a GPU, on the CPU backend with
    a stand-in timer: libgqa passes the check, and every peer either ran right or is n/a."""
    pytest.importorskip("torch")
    from gqa.bench import gpu_runners

    class CallTwice:
        def median_us(self, fn, per_call=1):
            fn(0), fn(1)
            return {"us": 1.0, "min_us": 1.0, "reps": 2}

    case = gpu_runners.Case(cfg, copies=2, device="cpu")
    entry = gpu_runners.run_gqa(case, CallTwice(), graphs=False)
    assert entry["status"] == "ok" and entry["err"] < gc.TOLERANCE[cfg.dtype] / 4
    if cfg.op != "prefill-chunked":
        for name in gc.PEERS:
            peer = gpu_runners.run_peer(case, name, CallTwice(), False, lambda: 1 << 40)
            assert ("na" in peer and peer["na"]) or (peer["us"] == 1.0 and peer["err"] < gc.TOLERANCE[cfg.dtype])
    # A wrong kernel is reported as wrong and not timed.
    case.refs = {b: r + 1.0 for b, r in case.refs.items()}
    wrong = gpu_runners.run_gqa(case, CallTwice(), graphs=False)
    assert wrong["status"] == "wrong" and "us" not in wrong


def test_from_json_rerenders_section_and_png_without_a_gpu(tmp_path, capsys):
    meta = {**_meta(), "op": "decode", "partial": "4 of 54 configs"}  # as a run cut short leaves it
    gpu_report.write_json(tmp_path / "gpu-decode-bench.json", meta, _decode_rows())
    md = tmp_path / "RESULTS.md"
    md.write_text(f"# results\n\n{report.START}\ncpu\n{report.END}\n")
    status = gpu_main.main(["decode", "--device", "cuda", "--from-json", str(tmp_path / "gpu-decode-bench.json"),
                            "--results-md", str(md)])
    assert status == 1  # one row is WRONG
    text = md.read_text()
    assert "cpu" in text and gpu_report.DECODE_MARKERS[0] in text and "**WRONG**" in text
    assert "**Partial run**: 4 of 54 configs" in text
    err = capsys.readouterr().err
    assert "1 failed" in err and ((tmp_path / "gpu-decode-bench.png").exists() or "no PNG" in err)
    assert gpu_main.main(["--device", "cuda", "--from-json", str(tmp_path / "missing.json")]) == 2


def test_no_device_reasons(monkeypatch):
    torch = pytest.importorskip("torch")
    import gqa

    if torch.cuda.is_available() and gqa.cuda_available():
        assert gpu_main.no_device_reason() is None
        return
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(gqa, "cuda_available", lambda: False)
    monkeypatch.setattr(gqa, "cuda_unavailable_reason", lambda: "libgqa was built without CUDA")
    assert gpu_main.no_device_reason() == "libgqa cannot use it: libgqa was built without CUDA"
    monkeypatch.setitem(sys.modules, "torch", None)  # import torch fails
    assert gpu_main.no_device_reason().startswith("PyTorch cannot be imported")
    assert gpu_main.main(["decode", "--device", "cuda"]) == 2
