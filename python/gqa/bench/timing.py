"""Wall-clock timing for the CPU benchmark: interleaved bursts across backends, summary
statistics with spread, and calls after an idle gap.

Why a perf_counter_ns loop and not torch.utils.benchmark: the benchmark must interleave five
libraries in one process (so a load change on a shared machine hits all of them alike), run an
untimed reset before a burst (OpenVINO's KV state), let one backend's spinning workers settle
before the next one runs, and keep every call's time so the spread can be reported.
torch.utils.benchmark.Timer times one statement at a time and sets torch's thread count
itself. The loop below keeps the garbage collector off while timing, and perf_counter_ns costs
~0.1 us against calls of >= 20 us.
"""
from __future__ import annotations

import gc
import statistics
import time
from dataclasses import dataclass
from typing import Callable, Optional

import numpy as np


@dataclass
class Stats:
    """Seconds per call over all timed calls."""
    n: int
    min: float
    p25: float
    median: float
    p75: float
    max: float

    @classmethod
    def of(cls, seconds: list[float]) -> "Stats":
        if not seconds:
            raise ValueError("no samples")
        q = np.percentile(np.asarray(seconds, dtype=np.float64), [0, 25, 50, 75, 100])
        return cls(len(seconds), *(float(x) for x in q))

    @property
    def spread(self) -> float:
        """Interquartile range over the median: 0.1 means the middle half of the calls lie
        within 10% of the median's size."""
        return (self.p75 - self.p25) / self.median if self.median > 0 else 0.0

    def as_dict(self) -> dict:
        return {"n": self.n, "min": self.min, "p25": self.p25, "median": self.median, "p75": self.p75,
                "max": self.max}

    @classmethod
    def from_dict(cls, d: dict) -> "Stats":
        return cls(d["n"], d["min"], d["p25"], d["median"], d["p75"], d["max"])


@dataclass
class Timed:
    """What interleaved() times: one call, and an optional untimed reset before each burst."""
    call: Callable[[], object]
    reset: Optional[Callable[[], object]] = None
    max_burst: int = 16


def _once(fn: Callable[[], object]) -> float:
    t0 = time.perf_counter_ns()
    fn()
    return (time.perf_counter_ns() - t0) * 1e-9


def interleaved(backends: dict[str, Timed], *, budget_s: float = 1.0, min_rounds: int = 5,
                max_rounds: int = 40, burst_s: float = 0.01, settle_s: float = 0.025) -> dict[str, Stats]:
    """Rounds over the backends in a rotating order; in each round a backend gets an untimed
    reset and warm-up call, then a burst of timed calls (enough for ~burst_s, at most its
    max_burst). Rounds go on until min_rounds are done and budget_s has passed (or max_rounds).
    settle_s of sleep before each burst lets the previous backend's polling workers go to sleep
    (libgqa polls for 20 ms after a call, GQA_CPU_SPIN_US; OpenMP, onnxruntime and TBB poll
    too), so no backend is timed while another one's workers still hold a core."""
    names = list(backends)
    burst = {}
    for name, b in backends.items():
        if b.reset:
            b.reset()
        b.call()
        estimate = _once(b.call)
        burst[name] = max(1, min(b.max_burst, round(burst_s / max(estimate, 1e-9))))
    samples: dict[str, list[float]] = {name: [] for name in names}
    start = time.perf_counter()
    rounds = 0
    gc_was_enabled = gc.isenabled()
    gc.disable()
    try:
        while rounds < min_rounds or (rounds < max_rounds and time.perf_counter() - start < budget_s):
            shift = rounds % len(names)
            for name in names[shift:] + names[:shift]:
                b = backends[name]
                time.sleep(settle_s)
                if b.reset:
                    b.reset()
                b.call()
                for _ in range(burst[name]):
                    samples[name].append(_once(b.call))
            rounds += 1
            gc.collect()
    finally:
        if gc_was_enabled:
            gc.enable()
    return {name: Stats.of(s) for name, s in samples.items()}


def after_idle(call: Callable[[], object], gaps_ms: list[float], samples: int = 20) -> dict[float, dict]:
    """Time one call after each idle gap (0 = back to back), the gaps interleaved, and the
    process's CPU time spent during the gaps (all threads: a pool that spins while idle shows
    here). Returns {gap: {"stats": Stats, "idle_cores": CPU seconds per idle second}}."""
    times: dict[float, list[float]] = {g: [] for g in gaps_ms}
    idle_cpu = {g: 0.0 for g in gaps_ms}
    idle_wall = {g: 0.0 for g in gaps_ms}
    call()
    call()
    gc_was_enabled = gc.isenabled()
    gc.disable()
    try:
        for _ in range(samples):
            for gap in gaps_ms:
                if gap > 0:
                    cpu0, wall0 = time.process_time(), time.perf_counter()
                    time.sleep(gap / 1e3)
                    idle_cpu[gap] += time.process_time() - cpu0
                    idle_wall[gap] += time.perf_counter() - wall0
                else:
                    call()  # back to back: the previous call ends right before this one
                times[gap].append(_once(call))
    finally:
        if gc_was_enabled:
            gc.enable()
    return {g: {"stats": Stats.of(times[g]), "idle_cores": idle_cpu[g] / idle_wall[g] if idle_wall[g] else None}
            for g in gaps_ms}


def median_seconds(fn: Callable[[], object], *, reps: int = 7) -> float:
    """Median of reps calls after one warm-up call (for the machine's ceilings)."""
    fn()
    return statistics.median(_once(fn) for _ in range(reps))
