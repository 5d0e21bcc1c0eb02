"""The machine the CPU benchmark ran on: CPU model and ISA flags, caches, load, versions, and
its own ceilings measured in the same run (copy bandwidth, matrix-multiply rate per dtype)."""
from __future__ import annotations

import os
import platform
import subprocess
from pathlib import Path

import numpy as np

from .timing import median_seconds

# The flags that decide which kernels can run (x86 names as /proc/cpuinfo spells them).
ISA_FLAGS = ["avx2", "fma", "f16c", "avx512f", "avx512bw", "avx512vl", "avx512dq", "avx512_vnni",
             "avx512_bf16", "avx512_fp16", "avx_vnni", "amx_tile", "amx_bf16", "amx_int8", "amx_fp16"]
MATMUL_N = 2048
MATMUL_PROBE_N = 256
MATMUL_CALL_S = 1.0


def cpu_model() -> str:
    """lscpu's model name (as /proc/cpuinfo has it), else what platform knows."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def isa_flags() -> list[str]:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("flags"):
                have = set(line.split(":", 1)[1].split())
                return [f for f in ISA_FLAGS if f in have]
    except OSError:
        pass
    return []


def l2_bytes_per_core() -> int:
    try:
        for index in Path("/sys/devices/system/cpu/cpu0/cache").glob("index*"):
            if (index / "level").read_text().strip() == "2":
                size = (index / "size").read_text().strip()
                return int(size[:-1]) * 1024 if size.endswith("K") else int(size)
    except (OSError, ValueError):
        pass
    return 1 << 20


def available_cores() -> int:
    return len(os.sched_getaffinity(0))


def load_average() -> str:
    try:
        return " ".join(Path("/proc/loadavg").read_text().split()[:3])
    except OSError:
        return "unknown"


def commit(root: Path) -> str:
    """The checkout's short commit (+uncommitted when tracked files changed), or 'unknown'."""
    try:
        git = ["git", "-C", str(root)]
        sha = subprocess.run(git + ["rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                             check=True).stdout.strip()
        dirty = subprocess.run(git + ["status", "--porcelain", "--untracked-files=no"], capture_output=True,
                               text=True, check=True).stdout.strip()
        return sha + ("+uncommitted" if dirty else "")
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def versions() -> dict[str, str]:
    """Each library's version, or why it is absent."""
    out = {}
    for name in ("gqa", "numpy", "torch", "openvino", "onnxruntime"):
        try:
            module = __import__(name)
            out[name] = str(getattr(module, "__version__", "unknown"))
        except ImportError:
            out[name] = "not installed"
        except Exception as e:  # a broken install: say so, measure the rest
            out[name] = f"fails to import: {type(e).__name__}"
    return out


def copy_bandwidth(threads: int, mib: int = 256) -> dict:
    """Bytes copied per second (each byte read once and written once; STREAM's "Copy" counts
    both and is twice this) of a buffer far larger than the caches: NumPy (one thread) and
    torch's copy_ (its threads, when torch is there). "gbs" is the better of the two."""
    n = mib * (1 << 20) // 4
    src = np.ones(n, dtype=np.float32)
    dst = np.empty_like(src)
    result = {"mib": mib, "numpy_gbs": src.nbytes / median_seconds(lambda: np.copyto(dst, src)) / 1e9}
    try:
        import torch
        ts, td = torch.from_numpy(src), torch.from_numpy(dst)
        result["torch_gbs"] = src.nbytes / median_seconds(lambda: td.copy_(ts)) / 1e9
        result["torch_threads"] = torch.get_num_threads()
    except ImportError:
        pass
    result["gbs"] = max(result["numpy_gbs"], result.get("torch_gbs", 0.0))
    return result


def matmul_rates(dtypes: list[str]) -> dict[str, dict]:
    """torch.mm of two n x n matrices per dtype (fp32: MKL sgemm; bf16/f16: oneDNN, AMX tiles
    where the CPU has them), GFLOP/s = 2 n^3 / t; or why it was not measured. n doubles from
    MATMUL_PROBE_N up to MATMUL_N while the next size's call would take under MATMUL_CALL_S (a
    CPU with no bf16/f16 matmul units runs them near 1 GFLOP/s: one 2048^3 call would take
    half a minute)."""
    try:
        import torch
    except ImportError:
        return {d: {"na": "torch is not installed"} for d in dtypes}
    torch_dtype = {"f32": torch.float32, "bf16": torch.bfloat16, "f16": torch.float16}
    rates = {}
    for d in dtypes:
        n = MATMUL_PROBE_N
        while True:
            a, b = (torch.randn(n, n).to(torch_dtype[d]) for _ in range(2))
            if n >= MATMUL_N or 8 * median_seconds(lambda: torch.mm(a, b), reps=1) > MATMUL_CALL_S:
                break
            n *= 2
        seconds = median_seconds(lambda: torch.mm(a, b), reps=5)
        rates[d] = {"gflops": 2.0 * n ** 3 / seconds / 1e9, "n": n}
    return rates
