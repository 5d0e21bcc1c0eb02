"""CUDA-event timing, and the device's own copy bandwidth and matmul rate to compare against.

Decode calls take a few µs on the GPU but tens of µs of Python (shape checks, cffi) to launch.
Timed back to back, the events would measure Python. So each timed call is queued behind a
spin kernel (torch.cuda._sleep) that keeps the GPU busy while Python queues the start event,
the call and the end event: the events then bracket GPU work only.
"""
from __future__ import annotations

import statistics
import time
from dataclasses import dataclass
from typing import Callable

import torch


@dataclass
class TimingPolicy:
    warmup: int = 3
    min_reps: int = 10
    max_reps: int = 200
    budget_s: float = 0.3

    def as_dict(self) -> dict:
        return dict(self.__dict__)


class Timer:
    def __init__(self, policy: TimingPolicy | None = None):
        self.policy = policy or TimingPolicy()
        self.cycles_per_us = self._calibrate_spin()

    @property
    def spin(self) -> bool:
        return self.cycles_per_us is not None

    @staticmethod
    def _calibrate_spin() -> float | None:
        """Clock cycles of torch.cuda._sleep per µs (None when torch lacks it)."""
        if not hasattr(torch.cuda, "_sleep"):
            return None
        cycles, rates = 1_000_000, []
        for _ in range(4):
            s, e = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            s.record()
            torch.cuda._sleep(cycles)
            e.record()
            e.synchronize()
            rates.append(cycles / (s.elapsed_time(e) * 1e3))
        return statistics.median(rates[1:])  # the first one pays for the module load

    def median_us(self, fn: Callable[[int], object], per_call: int = 1) -> dict:
        """Median µs of fn(i) over calls i = 0, 1, ... (fn picks its input copy from i), divided by
        per_call (a graph replay that holds several calls)."""
        p = self.policy
        host = []
        for i in range(max(p.warmup, 1)):
            t0 = time.perf_counter()
            fn(i)
            host.append(time.perf_counter() - t0)
            torch.cuda.synchronize()
        host_s = max(host[1:] or host)  # the first call may pay for one-time set-up
        # Spin for twice the longest host enqueue seen, plus a margin for the event records.
        spin_cycles = int((2e6 * host_s + 30.0) * self.cycles_per_us) if self.spin else 0
        times: list[float] = []
        start = time.perf_counter()
        i = len(host)
        while len(times) < p.min_reps or (len(times) < p.max_reps and time.perf_counter() - start < p.budget_s):
            s, e = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            if spin_cycles:
                torch.cuda._sleep(spin_cycles)
            s.record()
            fn(i)
            e.record()
            e.synchronize()  # one at a time, so the budget counts GPU time too
            times.append(s.elapsed_time(e) * 1e3 / per_call)
            i += 1
        return {"us": statistics.median(times), "min_us": min(times), "reps": len(times)}


def copy_bandwidth(timer: Timer, free_bytes: int) -> dict:
    """torch copy_ between two buffers far larger than L2: bytes read + bytes written per second
    (2 x size / t), the same count as the DRAM traffic of STREAM's Copy."""
    size = int(min(1 << 30, free_bytes // 4)) // 16 * 16
    src = torch.empty(size, dtype=torch.uint8, device="cuda").fill_(1)
    dst = torch.empty_like(src)
    t = timer.median_us(lambda _: dst.copy_(src))["us"]
    return {"bytes": size, "gbs": 2 * size / (t * 1e3), "counted": "read + write", "us": t}


def matmul_rate(timer: Timer, n: int = 8192) -> dict:
    """torch.matmul of two n x n matrices per dtype (2·n³ FLOP), in TFLOP/s."""
    rates = {}
    for name, dtype in (("fp16", torch.float16), ("bf16", torch.bfloat16)):
        a = torch.randn(n, n, device="cuda", dtype=dtype)
        b = torch.randn(n, n, device="cuda", dtype=dtype)
        c = torch.empty(n, n, device="cuda", dtype=dtype)
        t = timer.median_us(lambda _: torch.matmul(a, b, out=c))["us"]
        rates[name] = 2.0 * n**3 / (t * 1e6)
    return {"n": n, "tflops": rates}
