"""One timed call per backend and config. Inputs are random N(0, 1) values built once per config;
the timed call is only the attention itself (torch gets pre-transposed BHSD tensors)."""
from __future__ import annotations

from typing import Callable

import numpy as np

from .configs import Config


def _numpy_dtype(dtype: str):
    if dtype == "bf16":
        import ml_dtypes
        return ml_dtypes.bfloat16
    return {"f32": np.float32, "f16": np.float16}[dtype]


def _random(rng: np.random.Generator, shape, dtype: str) -> np.ndarray:
    return rng.standard_normal(shape, dtype=np.float32).astype(_numpy_dtype(dtype))


def make_inputs(cfg: Config, seed: int = 0) -> dict:
    """BSHD NumPy arrays for the config (caches hold cache_len + 1 positions for decode)."""
    rng = np.random.default_rng(seed)
    b, s, hq, hkv, d = cfg.batch, cfg.seq_len, cfg.num_q_heads, cfg.num_kv_heads, cfg.head_dim
    arrays = {
        "q": _random(rng, (b, s, hq, d), cfg.dtype),
        "k": _random(rng, (b, s, hkv, d), cfg.dtype),
        "v": _random(rng, (b, s, hkv, d), cfg.dtype),
    }
    if cfg.op == "decode":
        arrays["k_cache"] = _random(rng, (b, cfg.cache_len + 1, hkv, d), cfg.dtype)
        arrays["v_cache"] = _random(rng, (b, cfg.cache_len + 1, hkv, d), cfg.dtype)
    return arrays


def gqa_call(cfg: Config, arrays: dict) -> Callable[[], object]:
    """libgqa through its public Python API (gqa.prefill / gqa.decode), output preallocated."""
    import gqa

    out = np.empty_like(arrays["q"])
    q, k, v = arrays["q"], arrays["k"], arrays["v"]
    if cfg.op == "prefill":
        return lambda: gqa.prefill(q, k, v, causal=True, out=out)
    kc, vc = arrays["k_cache"], arrays["v_cache"]
    # Each call appends the same token at cache_len, then attends over cache_len + 1 positions.
    return lambda: gqa.decode(q, k, v, kc, vc, cfg.cache_len, out=out)


def torch_call(cfg: Config, arrays: dict) -> Callable[[], object]:
    """torch.nn.functional.scaled_dot_product_attention(enable_gqa=True) on BHSD tensors that
    are transposed (and made contiguous) before timing."""
    import torch
    import torch.nn.functional as F

    dtype = {"f32": torch.float32, "bf16": torch.bfloat16}[cfg.dtype]

    def bhsd(a: np.ndarray) -> "torch.Tensor":
        t = torch.from_numpy(np.ascontiguousarray(a.astype(np.float32))).to(dtype)
        return t.transpose(1, 2).contiguous()

    q = bhsd(arrays["q"])
    if cfg.op == "prefill":
        k, v = bhsd(arrays["k"]), bhsd(arrays["v"])
        causal = True
    else:
        # The same positions libgqa attends over: the cache with the new token at cache_len.
        kc, vc = arrays["k_cache"].copy(), arrays["v_cache"].copy()
        kc[:, cfg.cache_len] = arrays["k"][:, 0]
        vc[:, cfg.cache_len] = arrays["v"][:, 0]
        k, v = bhsd(kc), bhsd(vc)
        causal = False  # one query at the last position sees every cached key

    def run():
        with torch.inference_mode():
            return F.scaled_dot_product_attention(q, k, v, is_causal=causal, enable_gqa=True)

    return run
