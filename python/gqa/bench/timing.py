"""Median wall-clock timing after warm-up, and the machine's own copy bandwidth."""
from __future__ import annotations

import statistics
import time
from typing import Callable

import numpy as np


def median_seconds(fn: Callable[[], object], *, warmup: int = 2, min_reps: int = 5,
                   max_reps: int = 50, budget_s: float = 1.0) -> float:
    """Median of at least min_reps timed calls (more while under budget_s, at most max_reps)."""
    for _ in range(warmup):
        fn()
    times: list[float] = []
    start = time.perf_counter()
    while len(times) < min_reps or (len(times) < max_reps and time.perf_counter() - start < budget_s):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def copy_bandwidth_gbs(megabytes: int = 256) -> float:
    """NumPy copy of a float32 buffer much larger than the L3 cache (single thread): bytes
    copied per second (each byte is read once and written once; STREAM's "Copy" figure counts
    both and is twice this). Issue 6 quotes this machine's copy as ~22 GB/s on this scale."""
    n = megabytes * (1 << 20) // 4
    src = np.ones(n, dtype=np.float32)
    dst = np.empty_like(src)
    seconds = median_seconds(lambda: np.copyto(dst, src), warmup=2, min_reps=7, budget_s=2.0)
    return src.nbytes / seconds / 1e9
