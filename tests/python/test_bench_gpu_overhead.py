"""The GPU host-overhead benchmark (python/gqa/bench/gpu_overhead.py) without a GPU: its timing
loop on a fake clock-free callable, its RESULTS.md section, and its CLI mode and JSON replay."""
import json

from gqa.bench import gpu_main, gpu_overhead


def test_per_call_us_times_rounds_behind_a_spin_and_syncs_each():
    calls, spins, syncs = [], [], []
    entry = gpu_overhead.per_call_us(lambda: calls.append(1), calls=10, rounds=4, spin=spins.append,
                                     sync=lambda: syncs.append(1))
    assert len(calls) == 1 + 10 + 4 * 10  # warm-up, rough pass, rounds
    assert len(spins) == 4 and all(s > 0 for s in spins)
    assert len(syncs) == 2 + 4
    assert entry["rounds"] == 4 and entry["calls"] == 10
    assert 0 <= entry["min_us"] <= entry["us"]


def _meta():
    return {"command": "python -m gqa.bench overhead --device cuda", "torch_version": "2.13.0", "gqa_version": "1.0",
            "cpu": "Test CPU", "date": "2026-12-01 00:00 UTC", "commit": "abc1234", "calls": 200, "rounds": 15,
            "json": "benchmarks/gpu-overhead-bench.json",
            "device": {"name": "NVIDIA H200", "capability": "90", "sm_count": 132},
            "shape": {"batch": 1, "num_q_heads": 32, "num_kv_heads": 8, "head_dim": 128, "cache_len": 512,
                      "max_seq_len": 1024, "prefill_len": 16, "batch_many": 256, "heads_many": [8, 1, 64],
                      "max_seq_many": 32}}


def test_markdown_lists_every_row_in_order_with_na_reasons():
    rows = {label: {"us": 1.5 + i, "min_us": 1.0 + i} for i, (label, _) in enumerate(gpu_overhead.ROWS)}
    rows["torch_sdpa"] = {"na": "not available in this torch"}
    text = gpu_overhead.markdown(_meta(), rows)
    start, end = gpu_overhead.MARKERS
    assert text.startswith(start) and text.endswith(end)
    titles = [title for _, title in gpu_overhead.ROWS]
    positions = [text.index(t) for t in titles]
    assert positions == sorted(positions)
    assert "| libgqa C ABI: decode, 1 launch | 1.50 | 1.00 |" in text
    assert "n/a: not available in this torch" in text
    assert "NVIDIA H200" in text and "Test CPU" in text and "`abc1234`" in text


def test_overhead_is_a_gpu_mode_and_replays_from_json(tmp_path):
    assert "overhead" in gpu_main.MODES
    assert gpu_main.wants_gpu(["overhead"])
    data = {"meta": {**_meta(), "op": "overhead"},
            "results": {"c_decode": {"us": 3.0, "min_us": 2.5, "rounds": 15, "calls": 200}}}
    src = tmp_path / "gpu-overhead-bench.json"
    src.write_text(json.dumps(data))
    results = tmp_path / "RESULTS.md"
    results.write_text("# Results\n")
    assert gpu_main.main(["overhead", "--from-json", str(src), "--results-md", str(results)]) == 0
    text = results.read_text()
    assert gpu_overhead.MARKERS[0] in text and "| libgqa C ABI: decode, 1 launch | 3.00 | 2.50 |" in text
