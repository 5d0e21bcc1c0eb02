"""Measuring one config, and the idle-gap experiment: libgqa and every peer built, each peer's
output checked against libgqa's, then all timed interleaved (timing.interleaved).

A row (plain data, what report.py and the JSON read):
  the config's fields, label, flops, kv_bytes,
  isa    the ISA path libgqa's CPU backend reported for this call
  gqa    {"stats": Stats dict}
  peers  {name: {"stats": Stats dict | None, "err": max |peer - libgqa| | None,
                 "na": why it did not run or was not timed | None, "note": how it ran}}
"""
from __future__ import annotations

import gc
from typing import Callable

import numpy as np

from . import peer_onnxruntime, peer_openvino, runners, timing
from .configs import Config
from .runners import Inputs, Runner, Unavailable

PEERS: dict[str, Callable[[Inputs, int], Runner]] = {
    "torch": lambda inputs, threads: runners.torch_runner(inputs),
    "openvino": peer_openvino.stateful_runner,
    "openvino-mha": peer_openvino.mha_runner,
    "onnxruntime": peer_onnxruntime.runner,
}
# The after-idle experiment runs every peer as it runs by default: onnxruntime's pool spinning
# between runs is what that experiment shows (each backend is measured on its own there).
WAKE_PEERS = {**PEERS, "onnxruntime": lambda inputs, threads: peer_onnxruntime.runner(inputs, threads, spin_between_runs=True)}
PREFILL_ONLY = {"openvino-mha"}
PEER_TITLES = {
    "torch": "torch SDPA",
    "openvino": "OpenVINO SDPA, stateful KV",
    "openvino-mha": "OpenVINO SDPA, MHA snippet (prefill)",
    "onnxruntime": "onnxruntime GroupQueryAttention",
}
# Max |peer - libgqa| accepted, for outputs of N(0, 1) inputs (|out| < ~3): a few units of the
# storage dtype's rounding, plus what a peer that rounds P to bf16/f16 before P.V adds.
TOLERANCE = {"f32": 2e-3, "f16": 1e-2, "bf16": 6e-2}


def check(output: np.ndarray, reference: np.ndarray, dtype: str) -> tuple[bool, float]:
    """Whether a peer's float32 output agrees with libgqa's, and the max abs difference."""
    if output.shape != reference.shape:
        return False, float("inf")
    err = float(np.max(np.abs(output.astype(np.float64) - reference)))
    return bool(err <= TOLERANCE[dtype]), err  # NaN compares False: wrong


def _build(name: str, inputs: Inputs, threads: int, peers: dict = PEERS):
    try:
        return peers[name](inputs, threads), None
    except Unavailable as e:
        return None, str(e)
    except Exception as e:  # a peer that crashes on a config is reported, not fatal
        return None, f"failed: {type(e).__name__}: {str(e).splitlines()[0][:160] if str(e) else ''}"


def _time_spinning_onnxruntime(inputs: Inputs, threads: int, reference: np.ndarray, budget_s: float, min_rounds: int,
                               stats: dict, entry: dict) -> None:
    """onnxruntime as it runs by default, spinning between runs (peer_onnxruntime.py): timed on its
    own after the interleaved rounds, its session closed before anything else runs; its time
    replaces the interleaved one when faster. entry["note"] says which was kept."""
    spinning = peer_onnxruntime.runner(inputs, threads, spin_between_runs=True)
    spinning.call()
    ok, _ = check(spinning.output(), reference, inputs.cfg.dtype)
    alone = timing.interleaved({"onnxruntime": timing.Timed(spinning.call, spinning.reset, spinning.max_burst)},
                               budget_s=budget_s, min_rounds=min_rounds)["onnxruntime"] if ok else None
    del spinning
    gc.collect()  # closes the session: its workers stop spinning
    if alone is not None and alone.median < stats["onnxruntime"].median:
        stats["onnxruntime"] = alone
        entry["note"] += "; spinning between runs (default), timed alone"
    else:
        entry["note"] += "; spinning stopped between runs"


def measure(cfg: Config, threads: int, peers: list[str], budget_s: float, min_rounds: int) -> dict:
    inputs = Inputs(cfg)
    gqa = runners.gqa_runner(inputs)
    row = {**cfg.__dict__, "label": cfg.label, "flops": cfg.flops(), "kv_bytes": cfg.kv_bytes(),
           "isa": runners.libgqa_isa(gqa.call), "peers": {}}
    reference = gqa.output().astype(np.float64)
    timed = {"libgqa": timing.Timed(gqa.call)}
    # Every built runner stays alive until its timing is done: a peer's calls can point at memory
    # only its Runner holds (onnxruntime's binding writes into its output array), so a runner
    # dropped when the loop moved on had its calls timed on freed memory (--threads 1 with
    # onnxruntime before torch: glibc aborted on the heap it corrupted).
    built: list[Runner] = []
    for name in peers:
        if cfg.op == "decode" and name in PREFILL_ONLY:
            continue
        runner, why = _build(name, inputs, threads)
        entry = {"stats": None, "err": None, "na": why, "note": runner.note if runner else ""}
        if runner:
            built.append(runner)
            try:
                if runner.reset:
                    runner.reset()
                runner.call()
                ok, entry["err"] = check(runner.output(), reference, cfg.dtype)
                if ok:
                    timed[name] = timing.Timed(runner.call, runner.reset, runner.max_burst)
                else:
                    entry["na"] = f"wrong: max |peer - libgqa| = {entry['err']:.3g} > {TOLERANCE[cfg.dtype]:g}"
            except Exception as e:
                entry["na"] = f"failed: {type(e).__name__}: {str(e).splitlines()[0][:160] if str(e) else ''}"
        row["peers"][name] = entry
    stats = timing.interleaved(timed, budget_s=budget_s, min_rounds=min_rounds)
    if "onnxruntime" in stats:
        _time_spinning_onnxruntime(inputs, threads, reference, budget_s, min_rounds, stats, row["peers"]["onnxruntime"])
    row["gqa"] = {"stats": stats.pop("libgqa").as_dict()}
    for name, s in stats.items():
        row["peers"][name]["stats"] = s.as_dict()
    del timed, built, inputs
    gc.collect()
    return row


def measure_wake(cfg: Config, threads: int, peers: list[str], gaps_ms: list[float], samples: int) -> dict:
    """Each backend on its own (after 0.2 s of quiet, so no other backend's workers still spin):
    one call after each idle gap, and the CPU time the process burned during the gaps. The
    gaps are interleaved, so OpenVINO's KV state, which grows by one position per call (by
    < 10% over the run), weighs on every gap alike."""
    import time

    inputs = Inputs(cfg)
    gqa = runners.gqa_runner(inputs)
    gqa.call()
    reference = gqa.output().astype(np.float64)
    backends = {"libgqa": gqa}
    result = {"config": {**cfg.__dict__, "label": cfg.label}, "gaps_ms": gaps_ms, "samples": samples,
              "backends": {}}
    for name in [p for p in peers if p not in PREFILL_ONLY]:
        runner, why = _build(name, inputs, threads, WAKE_PEERS)
        if runner:
            if runner.reset:
                runner.reset()
            runner.call()
            ok, err = check(runner.output(), reference, cfg.dtype)
            if ok:
                backends[name] = runner
                continue
            why = f"wrong: max |peer - libgqa| = {err:.3g}"
        result["backends"][name] = {"na": why}
    for name, runner in backends.items():
        time.sleep(0.2)
        gaps = timing.after_idle(runner.call, gaps_ms, samples)
        result["backends"][name] = {"gaps": {str(g): {"stats": r["stats"].as_dict(), "idle_cores": r["idle_cores"]}
                                             for g, r in gaps.items()}}
    return result
