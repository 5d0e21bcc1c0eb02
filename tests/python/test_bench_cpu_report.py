"""The CPU benchmark without timing anything: statistics and noisy rows, ratios to the fastest
peer and targets, the Markdown section, plot labels, output location, the ISA-path query, the
output check, and each peer's wiring on tiny shapes against the float64 reference."""
import math
import sys

import numpy as np
import pytest

import gqa
from gqa.bench import __main__ as cli
from gqa.bench import configs, cpu_plot, cpu_run, report, runners, timing
from gqa.bench.configs import Config
from gqa.bench.timing import Stats


def _stats(median, spread=0.0, n=10):
    half = spread * median / 2
    return Stats(n, 0.9 * median, median - half, median, median + half, 1.2 * median).as_dict()


META = {"copy": {"gbs": 20.0, "numpy_gbs": 20.0, "mib": 256}, "l2_bytes": 4 << 20,
        "matmul": {"f32": {"gflops": 200.0}, "bf16": {"gflops": 800.0}, "f16": {"na": "torch is not installed"}}}
PREFILL = Config("prefill", "Llama-3-8B", 32, 8, 128, "bf16", 1, 2048, 0)
DECODE = Config("decode", "Phi-3-mini", 32, 32, 96, "f32", 1, 1, 8192)


def _row(cfg, gqa_s, peers, spread=0.0):
    """peers: {name: seconds, or a reason string for a peer that did not run}."""
    return {**cfg.__dict__, "label": cfg.label, "flops": cfg.flops(), "kv_bytes": cfg.kv_bytes(), "isa": "avx512",
            "gqa": {"stats": _stats(gqa_s, spread)},
            "peers": {n: ({"stats": _stats(v), "err": 1e-4, "na": None, "note": f"{n} note"} if isinstance(v, float)
                          else {"stats": None, "err": None, "na": v, "note": ""}) for n, v in peers.items()}}


# ---- statistics --------------------------------------------------------------------------------
def test_stats_quartiles_spread_and_round_trip():
    s = Stats.of([1.0, 2.0, 3.0, 4.0, 5.0])
    assert (s.n, s.min, s.p25, s.median, s.p75, s.max) == (5, 1.0, 2.0, 3.0, 4.0, 5.0)
    assert s.spread == pytest.approx(2.0 / 3.0)
    assert Stats.from_dict(s.as_dict()) == s
    with pytest.raises(ValueError):
        Stats.of([])


def test_interleaved_times_every_backend_each_round_with_resets():
    calls = {"a": 0, "b": 0, "reset": 0}
    backends = {"a": timing.Timed(lambda: calls.__setitem__("a", calls["a"] + 1)),
                "b": timing.Timed(lambda: calls.__setitem__("b", calls["b"] + 1),
                                  reset=lambda: calls.__setitem__("reset", calls["reset"] + 1), max_burst=2)}
    stats = timing.interleaved(backends, budget_s=0.0, min_rounds=3, settle_s=0.0)
    assert set(stats) == {"a", "b"}
    assert stats["b"].n == 3 * 2          # 3 rounds, bursts capped at max_burst
    assert stats["a"].n >= 3
    assert calls["reset"] == 1 + 3        # once before estimating, then before every burst


def test_after_idle_reports_each_gap():
    result = timing.after_idle(lambda: None, [0, 1], samples=2)
    assert set(result) == {0, 1}
    assert result[0]["stats"].n == 2 and result[0]["idle_cores"] is None
    assert result[1]["idle_cores"] is not None and result[1]["idle_cores"] >= 0


# ---- ratios, ceilings, targets -------------------------------------------------------------------
def test_prefill_ratio_is_against_the_fastest_peer_that_ran():
    row = report.annotate(_row(PREFILL, 0.10, {"torch": 0.30, "openvino": 0.12, "onnxruntime": "no bf16 kernel"}), META)
    assert row["best_peer"] == "openvino"
    assert row["ratio"] == pytest.approx(1.2)
    assert row["target"] == "missed"      # 1.2x < 1.5x
    assert row["gqa_gflops"] == pytest.approx(PREFILL.flops() / 0.10 / 1e9)
    assert row["ceiling_fraction"] == pytest.approx(row["gqa_gflops"] / 800.0)
    fast = report.annotate(_row(PREFILL, 0.05, {"torch": 0.30, "openvino": 0.12}), META)
    assert fast["target"] == "met"


def test_a_wrong_peer_is_never_the_fastest():
    row = report.annotate(_row(PREFILL, 0.10, {"torch": 0.30, "openvino": "wrong: max |peer - libgqa| = 1"}), META)
    assert row["best_peer"] == "torch"
    alone = report.annotate(_row(PREFILL, 0.10, {"openvino": "wrong: max |peer - libgqa| = 1"}), META)
    assert alone["best_peer"] is None and alone["ratio"] is None and alone["target"] == "n/a"


def test_a_half_dtype_slower_than_f32_at_matmul_is_measured_against_f32():
    meta = {**META, "matmul": {**META["matmul"], "f32": {"gflops": 300.0}, "f16": {"gflops": 1.0}}}
    row = report.annotate(_row(Config("prefill", "Qwen2.5-0.5B", 14, 2, 64, "f16", 1, 128, 0), 1e-3,
                               {"torch": 2e-3}), meta)
    assert row["ceiling_fraction"] == pytest.approx(row["gqa_gflops"] / 300.0)


def test_prefill_without_a_matmul_rate_has_no_fraction():
    row = report.annotate(_row(Config("prefill", "Qwen2.5-0.5B", 14, 2, 64, "f16", 1, 128, 0), 1e-3,
                               {"torch": 2e-3}), META)
    assert row["ceiling_fraction"] is None


def test_decode_target_needs_the_speed_up_and_the_bandwidth_past_l2():
    seconds_at_60 = DECODE.kv_bytes() / (0.6 * 20.0e9)
    slow = report.annotate(_row(DECODE, seconds_at_60 * 1.05, {"onnxruntime": seconds_at_60 * 2}), META)
    assert not slow["fits_l2"] and slow["ratio"] > 1.2 and slow["ceiling_fraction"] < 0.6
    assert slow["target"] == "missed"
    ok = report.annotate(_row(DECODE, seconds_at_60 * 0.95, {"onnxruntime": seconds_at_60 * 2}), META)
    assert ok["target"] == "met"
    small = Config("decode", "Qwen2.5-0.5B", 14, 2, 64, "bf16", 1, 1, 1024)
    fits = report.annotate(_row(small, 1.0, {"torch": 1.3}), META)  # 0.5 MiB: the bandwidth does not count
    assert fits["fits_l2"] and fits["target"] == "met"


def test_rows_with_a_wide_spread_are_flagged_noisy():
    calm = report.annotate(_row(PREFILL, 0.10, {"torch": 0.3}, spread=0.05), META)
    noisy = report.annotate(_row(PREFILL, 0.10, {"torch": 0.3}, spread=0.25), META)
    assert not calm["noisy"] and noisy["noisy"]
    assert not report.annotate(_row(PREFILL, 0.10, {"torch": 0.3}, spread=0.25), META, noisy_spread=0.3)["noisy"]


# ---- the Markdown section ---------------------------------------------------------------------------
def _meta():
    return {**META, "cpu": "Test CPU 9000", "isa_flags": ["avx512f", "amx_bf16"], "cores": 2, "l2_per_core": 2 << 20,
            "threads": 2, "forced_isa": "", "spin_us": "", "date": "2026-01-01 00:00 UTC", "commit": "abc1234", "command": "python -m gqa.bench",
            "loadavg_start": "0.1 0.1 0.1", "loadavg_end": "0.2 0.1 0.1", "noisy_spread": 0.1, "matmul_n": 2048,
            "versions": {"gqa": "0.1.0", "torch": "2.13.0", "openvino": "2026.4.0", "onnxruntime": "1.31.0", "numpy": "2.4"},
            "json": "cpu-bench.json", "png": "cpu-bench.png", "peer_notes": {"torch, prefill": "enable_gqa=True"}}


def test_markdown_has_machine_peers_reasons_and_flags():
    rows = [report.annotate(_row(PREFILL, 0.10, {"torch": 0.30, "onnxruntime": "no bf16 kernel"}, spread=0.3), META),
            report.annotate(_row(DECODE, 0.02, {"torch": 0.021, "onnxruntime": 0.05}), META)]
    wake = {"config": {"label": "decode x"}, "gaps_ms": [0, 10], "samples": 5,
            "backends": {"libgqa": {"gaps": {"0": {"stats": _stats(1e-4), "idle_cores": None},
                                             "10": {"stats": _stats(1.5e-4), "idle_cores": 0.01}}},
                         "openvino": {"na": "openvino is not installed"}}}
    text = report.markdown(_meta(), rows, wake)
    assert text.startswith(report.START) and text.rstrip().endswith(report.END)
    for expected in ("Test CPU 9000", "avx512f amx_bf16", "2 threads for every backend", "prefill avx512",
                     "onnxruntime 1.31.0", "copy bandwidth **20.0 GB/s**", "bf16 800 GFLOP/s", "f16 n/a (torch is not installed)",
                     "- onnxruntime: no bf16 kernel (1 rows: Llama-3-8B bf16)", "~30%", "| 3.00x |",
                     "**1.05x**", "150 (1.50x)", "- openvino: openvino is not installed", "torch, prefill"):
        assert expected in text, expected
    assert report.misses(rows) == [f"{DECODE.label}: 1.05x vs torch, "
                                   f"{100 * rows[1]['ceiling_fraction']:.0f}% of copy"]


def test_section_replaces_only_the_cpu_part(tmp_path):
    path = tmp_path / "RESULTS.md"
    path.write_text(f"# results\n\nintro\n\n{report.START}\nold\n{report.END}\n\n<!-- gpu -->\n")
    report.write_results_md(path, f"{report.START}\nnew\n{report.END}\n")
    text = path.read_text()
    assert "new" in text and "old" not in text and "intro" in text and "<!-- gpu -->" in text


def test_a_second_machine_gets_its_own_section(tmp_path):
    path = tmp_path / "RESULTS.md"
    path.write_text(f"# results\n\n{report.START}\nxeon table\n{report.END}\n")
    rows = [report.annotate(_row(PREFILL, 0.10, {"torch": 0.30}), META)]
    section = report.markdown(_meta(), rows, None, "cpu-zen3")
    assert section.startswith(report.markers("cpu-zen3")[0]) and "## CPU (Test CPU 9000)" in section
    for _ in range(2):  # the second write replaces the first
        report.write_results_md(path, section, *report.markers("cpu-zen3"))
    text = path.read_text()
    assert "xeon table" in text and text.count("## CPU (Test CPU 9000)") == 1


def test_plot_labels_keep_the_whole_model_name():
    rows = [report.annotate(_row(PREFILL, 0.1, {"torch": 0.2}), META)]
    assert cpu_plot.label(rows[0]) == "Llama-3-8B 32:8\nS=2048 bf16"
    assert cpu_plot.label({**DECODE.__dict__}) == "Phi-3-mini 32:32\nB=1 L=8192 f32"


def test_png_is_written_with_matplotlib(tmp_path):
    pytest.importorskip("matplotlib")
    rows = [report.annotate(_row(PREFILL, 0.1, {"torch": 0.2}), META),
            report.annotate(_row(DECODE, 0.02, {"torch": 0.03}), META)]
    assert cpu_plot.write_png(tmp_path / "p.png", _meta(), rows)
    assert (tmp_path / "p.png").stat().st_size > 1000


# ---- command line -----------------------------------------------------------------------------------
def test_outputs_default_to_the_working_directory(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    args = cli.parser().parse_args([])
    assert args.out == tmp_path and args.results_md is None


def test_a_filter_that_matches_nothing_writes_nothing(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert cli.main(["--device", "cpu", "--only", "no such config"]) == 2
    assert list(tmp_path.iterdir()) == []
    assert "no config matches" in capsys.readouterr().err


def test_unknown_peer_is_refused(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert cli.main(["--peers", "tensorflow"]) == 2


def test_grid_and_selection():
    grid = configs.all_configs()
    assert len(grid) == 3 * 3 * (3 + 4)
    assert len({c.label for c in grid}) == len(grid)
    assert set(configs.all_configs(True)) < set(grid)
    assert {c.model for c in configs.select(grid, "Qwen2.5, Phi-3")} == {"Qwen2.5-0.5B", "Phi-3-mini"}


# ---- libgqa's ISA path ------------------------------------------------------------------------------
def test_isa_is_parsed_from_the_debug_message():
    assert runners.parse_isa(["cpu decode: isa=avx512 threads=2 splits=4"]) == "avx512"
    assert runners.parse_isa(["no isa here"]) is None


def test_isa_query_reads_a_real_call_and_restores_the_log_level(monkeypatch):
    import logging
    from gqa._ffi import lib

    before = lib.gqa_get_log_level()
    inputs = runners.Inputs(Config("decode", "t", 4, 2, 16, "f32", 1, 1, 20))
    isa = runners.libgqa_isa(runners.gqa_runner(inputs).call)
    assert isa in {"scalar", "avx2", "avx512"} or (isa or "").startswith(("avx512", "amx"))
    assert lib.gqa_get_log_level() == before
    assert logging.getLogger("gqa").propagate


# ---- the output check and each peer's wiring (tiny shapes, no timing) -----------------------------------
def test_check_accepts_close_and_rejects_far_nan_and_misshapen():
    ref = np.zeros((1, 2, 3, 4))
    assert cpu_run.check(np.full((1, 2, 3, 4), 1e-3, np.float32), ref, "f32") == (True, pytest.approx(1e-3))
    assert not cpu_run.check(np.full((1, 2, 3, 4), 1e-2, np.float32), ref, "f32")[0]
    bad = np.zeros((1, 2, 3, 4), np.float32)
    bad[0, 1, 2, 3] = np.nan
    assert not cpu_run.check(bad, ref, "f32")[0]
    assert cpu_run.check(np.zeros((1, 2, 4, 3), np.float32), ref, "f32") == (False, math.inf)


TINY = [Config("prefill", "tiny", 6, 2, 16, "f32", 1, 37, 0), Config("decode", "tiny", 6, 2, 16, "f32", 2, 1, 41),
        Config("prefill", "tiny", 4, 4, 16, "f16", 1, 19, 0), Config("decode", "tiny", 4, 4, 16, "bf16", 1, 1, 23)]


def _float64_reference(inputs: runners.Inputs) -> np.ndarray:
    cfg = inputs.cfg
    if cfg.op == "prefill":
        return gqa.reference.prefill(inputs.q, inputs.k, inputs.v, causal=True).astype(np.float64)
    kc, vc = inputs.k_cache.copy(), inputs.v_cache.copy()
    return gqa.reference.decode(inputs.q, inputs.k, inputs.v, kc, vc, cfg.cache_len).astype(np.float64)


@pytest.mark.parametrize("peer", list(cpu_run.PEERS))
@pytest.mark.parametrize("cfg", TINY, ids=lambda c: c.label)
def test_each_peer_agrees_with_the_float64_reference(peer, cfg):
    module = {"torch": "torch", "openvino": "openvino", "openvino-mha": "openvino", "onnxruntime": "onnxruntime"}[peer]
    pytest.importorskip(module)
    if module == "onnxruntime":
        pytest.importorskip("onnx")
    inputs = runners.Inputs(cfg, seed=3)
    want = _float64_reference(inputs)
    try:
        runner = cpu_run.PEERS[peer](inputs, 1)
    except runners.Unavailable as e:
        assert (peer == "onnxruntime" and cfg.dtype == "bf16") or (peer == "openvino-mha" and cfg.op == "decode"), e
        return
    if runner.reset:
        runner.reset()
    runner.call()
    ok, err = cpu_run.check(runner.output(), want, cfg.dtype)
    assert ok, f"{peer} on {cfg.label}: max error {err}"


def test_libgqa_runner_appends_and_matches_the_reference():
    inputs = runners.Inputs(TINY[1], seed=5)
    want = _float64_reference(inputs)
    runner = runners.gqa_runner(inputs)
    runner.call()
    assert cpu_run.check(runner.output(), want, "f32")[0]


def test_bench_modules_import_without_the_peers(monkeypatch):
    for name in ("torch", "openvino", "onnxruntime", "onnx"):
        monkeypatch.setitem(sys.modules, name, None)  # import fails
    inputs = runners.Inputs(TINY[0])
    for peer in cpu_run.PEERS:
        with pytest.raises(runners.Unavailable):
            cpu_run.PEERS[peer](inputs, 1)


def test_every_peer_runner_lives_until_its_timing_is_done(monkeypatch):
    # A peer's calls may point at memory only its Runner holds (onnxruntime's output binding):
    # measure() must not drop a runner when it builds the next peer's.
    import gc
    import weakref

    class Held:
        pass

    refs = {}

    def fake_peer(name):
        def build(inputs, threads):
            held = Held()
            refs[name] = weakref.ref(held)

            def call():
                gc.collect()
                assert refs[name]() is not None, f"{name}'s runner was freed before its timed calls"
            return runners.Runner(call, lambda: np.zeros(inputs.q.shape, np.float32), keep=held)
        return build

    for name in ("first", "second"):
        monkeypatch.setitem(cpu_run.PEERS, name, fake_peer(name))
    monkeypatch.setattr(cpu_run, "check", lambda output, reference, dtype: (True, 0.0))
    row = cpu_run.measure(TINY[1], 1, ["first", "second"], budget_s=0.0, min_rounds=1)
    assert row["peers"]["first"]["stats"] is not None and row["peers"]["first"]["na"] is None, row["peers"]
    assert row["peers"]["second"]["stats"] is not None
