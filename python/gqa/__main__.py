"""python -m gqa: the main job.

A Qwen2.5-0.5B-shaped attention layer (14 query heads, 2 KV heads, head_dim 64): one prompt
prefill into a KV cache, then decode steps, on the best device present (CUDA when libgqa has a
usable GPU and PyTorch or CuPy is installed, else the CPU). Every output and the final cache are
checked against gqa.reference (float64); a table of timings and errors goes to stdout.
Exit status 1 if any check fails.
"""

from __future__ import annotations

import argparse
import sys
import time

import numpy as np

import gqa

TOLERANCE = {"float32": 1e-4, "float16": 4e-3, "bfloat16": 3e-2}


def _numpy_dtype(name):
    if name == "bfloat16":
        import ml_dtypes

        return np.dtype(ml_dtypes.bfloat16)
    return np.dtype(name)


class _Cpu:
    name = "cpu"

    def to_device(self, a):
        return a

    def to_host(self, a):
        return a

    def synchronize(self):
        pass


class _Torch:
    name = "cuda (PyTorch tensors)"

    def __init__(self):
        import torch

        self.torch = torch

    def to_device(self, a):
        t = self.torch.from_numpy(a.view(np.uint16) if a.dtype.itemsize == 2 else a).cuda()
        if a.dtype.name == "bfloat16":
            return t.view(self.torch.bfloat16)
        return t.view(self.torch.float16) if a.dtype == np.float16 else t

    def to_host(self, t):
        if t.dtype in (self.torch.float16, self.torch.bfloat16):
            raw = t.contiguous().view(self.torch.int16).cpu().numpy().view(np.uint16)
            return raw.view(_numpy_dtype("bfloat16" if t.dtype == self.torch.bfloat16 else "float16"))
        return t.cpu().numpy()

    def synchronize(self):
        self.torch.cuda.synchronize()


def _pick_device(requested):
    if requested in ("auto", "cuda") and gqa.cuda_available():
        try:
            return _Torch()
        except ImportError:
            if requested == "cuda":
                sys.exit("gqa: --device cuda needs PyTorch for the main job's tensors")
    elif requested == "cuda":
        sys.exit(f"gqa: --device cuda, but {gqa.cuda_unavailable_reason()}")
    return _Cpu()


_BUILD_FLAGS = {
    "--cflags": "compiler flags: -I<folder of gqa.h>",
    "--libs": "linker flags: -L<folder> -lgqa and an rpath to it",
    "--include-dir": "the folder of gqa.h",
    "--library": "the path of libgqa.so",
    "--pkg-config-path": "the folder of gqa.pc, for PKG_CONFIG_PATH (pip installs only)",
}


def _build_value(flag: str) -> str:
    from . import _paths

    if flag == "--pkg-config-path":
        folder = _paths.get_pkg_config_dir()
        if folder is None:
            raise SystemExit("python -m gqa: no gqa.pc here (a source checkout); use --cflags --libs")
        return folder
    return {"--cflags": _paths.cflags, "--libs": _paths.libs, "--include-dir": _paths.get_include,
            "--library": _paths.get_library}[flag]()


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m gqa", description=__doc__.splitlines()[1])
    parser.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto")
    parser.add_argument("--dtype", choices=["float16", "bfloat16", "float32"], default="float16")
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--prompt", type=int, default=512, help="prompt tokens prefilled in one call")
    parser.add_argument("--steps", type=int, default=64, help="decode steps after the prompt")
    parser.add_argument("--seed", type=int, default=0)
    build = parser.add_argument_group("building against this install (print, then exit)")
    for flag, text in _BUILD_FLAGS.items():
        build.add_argument(flag, action="store_true", help=text)
    args = parser.parse_args(argv)
    wanted = [flag for flag in _BUILD_FLAGS if getattr(args, flag[2:].replace("-", "_"))]
    if wanted:
        print(" ".join(_build_value(flag) for flag in wanted))
        return 0

    device = _pick_device(args.device)
    if args.dtype == "float32" and device.name != "cpu":
        sys.exit("gqa: float32 storage runs on the CPU only")
    B, Hq, Hkv, D = args.batch, 14, 2, 64
    S, steps = args.prompt, args.steps
    max_seq_len = S + steps
    dtype = _numpy_dtype(args.dtype)
    rng = np.random.default_rng(args.seed)

    def rand(*shape):
        return rng.standard_normal(shape).astype(dtype)

    q, k, v = rand(B, S, Hq, D), rand(B, S, Hkv, D), rand(B, S, Hkv, D)
    # Garbage in the unused cache slots: libgqa must never read past what each call covers.
    k_cache, v_cache = rand(B, max_seq_len, Hkv, D), rand(B, max_seq_len, Hkv, D)
    ref_k_cache, ref_v_cache = k_cache.copy(), v_cache.copy()
    dk, dv = device.to_device(k_cache), device.to_device(v_cache)

    dq, dkk, dvv = device.to_device(q), device.to_device(k), device.to_device(v)
    device.synchronize()
    t0 = time.perf_counter()
    out = gqa.prefill(dq, dkk, dvv, dk, dv, start_pos=0)
    device.synchronize()
    prefill_s = time.perf_counter() - t0
    ref = gqa.reference.prefill(q, k, v, ref_k_cache, ref_v_cache, start_pos=0)
    prefill_err = float(np.abs(device.to_host(out).astype(np.float64) - ref).max())

    decode_err, decode_times = 0.0, []
    for step in range(steps):
        q1, k1, v1 = rand(B, 1, Hq, D), rand(B, 1, Hkv, D), rand(B, 1, Hkv, D)
        d1 = [device.to_device(a) for a in (q1, k1, v1)]
        device.synchronize()
        t0 = time.perf_counter()
        o1 = gqa.decode(*d1, dk, dv, S + step)
        device.synchronize()
        decode_times.append(time.perf_counter() - t0)
        r1 = gqa.reference.decode(q1, k1, v1, ref_k_cache, ref_v_cache, S + step)
        decode_err = max(decode_err, float(np.abs(device.to_host(o1).astype(np.float64) - r1).max()))
    cache_ok = (device.to_host(dk).tobytes() == ref_k_cache.tobytes()
                and device.to_host(dv).tobytes() == ref_v_cache.tobytes())

    tol = TOLERANCE[args.dtype]
    decode_us = 1e6 * float(np.median(decode_times)) if decode_times else float("nan")
    ok = prefill_err <= tol and decode_err <= tol and cache_ok
    print(f"libgqa {gqa.version()} main job: Qwen2.5-0.5B attention (14:2 GQA, head_dim 64), "
          f"{args.dtype}, batch {B}, device {device.name}"
          + (f", {gqa.get_num_threads()} threads" if device.name == "cpu" else ""))
    print(f"{'step':<28}{'time':>14}{'rate':>22}{'max |err| vs float64':>24}")
    print(f"{f'prefill ({S} tokens)':<28}{prefill_s * 1e3:>11.2f} ms{B * S / prefill_s:>15.0f} tok/s"
          f"{prefill_err:>24.2e}")
    if steps:
        print(f"{f'decode ({steps} steps, median)':<28}{decode_us:>11.1f} us{B * 1e6 / decode_us:>15.0f} tok/s"
              f"{decode_err:>24.2e}")
    print(f"{'KV cache bytes':<28}{'':>14}{'':>22}{'exact' if cache_ok else 'WRONG':>24}")
    print(f"result: {'PASS' if ok else 'FAIL'} (tolerance {tol:g})")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
