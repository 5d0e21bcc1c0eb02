"""The inputs of one config and the backends that run it: libgqa (its public Python API) and
torch SDPA here; OpenVINO (peer_openvino.py) and onnxruntime (peer_onnxruntime.py) beside.

Every backend is a Runner: a timed call, the last call's output as float32 BSHD (for the check
against libgqa), and an optional untimed reset before each burst. A backend that cannot run a
config raises Unavailable with the reason, which the report shows.
"""
from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from typing import Callable, Optional

import numpy as np

from .configs import Config


class Unavailable(Exception):
    """This backend cannot run this config (not installed, no kernel for the dtype...)."""


@dataclass
class Runner:
    call: Callable[[], object]
    output: Callable[[], np.ndarray]         # float32 [B, S, Hq, D] of the last call
    reset: Optional[Callable[[], object]] = None
    max_burst: int = 16
    note: str = ""                           # how it was run, for the report
    keep: object = None                      # what the calls need alive (arrays behind a peer's tensors)


def numpy_dtype(dtype: str):
    if dtype == "bf16":
        import ml_dtypes
        return ml_dtypes.bfloat16
    return {"f32": np.float32, "f16": np.float16}[dtype]


def _random(rng: np.random.Generator, shape, dtype: str) -> np.ndarray:
    return rng.standard_normal(shape, dtype=np.float32).astype(numpy_dtype(dtype))


class Inputs:
    """Random N(0, 1) tensors of one config, built once. libgqa reads the BSHD arrays; the
    peers read BHSD copies (made on first use, shared by all peers), whose decode K/V already
    hold the new token at position cache_len: the same cache_len + 1 keys libgqa attends to."""

    def __init__(self, cfg: Config, seed: int = 0):
        rng = np.random.default_rng(seed)
        self.cfg = cfg
        b, s, hq, hkv, d = cfg.batch, cfg.seq_len, cfg.num_q_heads, cfg.num_kv_heads, cfg.head_dim
        self.q = _random(rng, (b, s, hq, d), cfg.dtype)
        self.k = _random(rng, (b, s, hkv, d), cfg.dtype)
        self.v = _random(rng, (b, s, hkv, d), cfg.dtype)
        self.k_cache = self.v_cache = None
        if cfg.op == "decode":
            self.k_cache = _random(rng, (b, cfg.cache_len + 1, hkv, d), cfg.dtype)
            self.v_cache = _random(rng, (b, cfg.cache_len + 1, hkv, d), cfg.dtype)
        self._bhsd = None

    def bhsd(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(q, k, v) as contiguous [B, H, S, D] arrays in the storage dtype; for decode k and v
        are the whole caches including the new token."""
        if self._bhsd is None:
            if self.cfg.op == "decode":
                self.k_cache[:, self.cfg.cache_len] = self.k[:, 0]  # what libgqa's append writes
                self.v_cache[:, self.cfg.cache_len] = self.v[:, 0]
                k, v = self.k_cache, self.v_cache
            else:
                k, v = self.k, self.v
            self._bhsd = tuple(np.ascontiguousarray(a.transpose(0, 2, 1, 3)) for a in (self.q, k, v))
        return self._bhsd


def gqa_runner(inputs: Inputs) -> Runner:
    """libgqa through gqa.prefill / gqa.decode, output preallocated. Decode appends the same
    token at cache_len every call and attends over cache_len + 1 positions."""
    import gqa

    cfg = inputs.cfg
    out = np.empty_like(inputs.q)
    q, k, v = inputs.q, inputs.k, inputs.v
    if cfg.op == "prefill":
        call = lambda: gqa.prefill(q, k, v, causal=True, out=out)  # noqa: E731
    else:
        kc, vc = inputs.k_cache, inputs.v_cache
        call = lambda: gqa.decode(q, k, v, kc, vc, cfg.cache_len, out=out)  # noqa: E731
    return Runner(call, lambda: out.astype(np.float32))


_ISA = re.compile(r"\bisa=(\S+)")


def parse_isa(messages: list[str]) -> Optional[str]:
    """The ISA path named in libgqa's DEBUG messages ("cpu decode: isa=avx512 threads=2 ...")."""
    for message in messages:
        found = _ISA.search(message)
        if found:
            return found.group(1)
    return None


def libgqa_isa(call: Callable[[], object]) -> Optional[str]:
    """Runs call once with libgqa's log at DEBUG and returns the ISA path its CPU backend
    reported (libgqa logs isa=... for every call at DEBUG). Levels are restored afterwards."""
    from gqa._ffi import lib

    logger = logging.getLogger("gqa")
    messages: list[str] = []

    class Collect(logging.Handler):
        def emit(self, record):
            messages.append(record.getMessage())

    handler = Collect(logging.DEBUG)
    old_level, old_propagate, old_c_level = logger.level, logger.propagate, lib.gqa_get_log_level()
    logger.addHandler(handler)
    logger.setLevel(logging.DEBUG)
    logger.propagate = False
    try:
        call()
    finally:
        logger.removeHandler(handler)
        logger.setLevel(old_level)
        logger.propagate = old_propagate
        lib.gqa_set_log_level(old_c_level)
    return parse_isa(messages)


def torch_tensor(a: np.ndarray):
    """A torch tensor sharing a NumPy array's memory (bf16 through its bit pattern)."""
    import torch

    if a.dtype == numpy_dtype("bf16"):
        return torch.from_numpy(a.view(np.uint16)).view(torch.bfloat16)
    return torch.from_numpy(a)


def torch_runner(inputs: Inputs) -> Runner:
    """torch.nn.functional.scaled_dot_product_attention(enable_gqa=True) on the BHSD copies."""
    try:
        import torch
        import torch.nn.functional as F
    except ImportError:
        raise Unavailable("torch is not installed")
    cfg = inputs.cfg
    q, k, v = (torch_tensor(a) for a in inputs.bhsd())
    causal = cfg.op == "prefill"  # decode: one query at the last position sees every key
    last = []

    def call():
        with torch.inference_mode():
            last[:] = [F.scaled_dot_product_attention(q, k, v, is_causal=causal, enable_gqa=True)]

    def output():
        return last[0].float().transpose(1, 2).numpy()

    return Runner(call, output, note="enable_gqa=True, BHSD inputs")
