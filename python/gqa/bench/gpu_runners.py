"""The timed calls of one config: libgqa and the torch SDPA backends on the same inputs, plain
and captured in a CUDA graph, each checked against gpu_check.reference before it is timed.

Inputs live in `copies` identical sets (rotation past L2); call i uses set i % copies. Layout is
libgqa's BSHD; the SDPA peers get BHSD views of the same memory (transpose(1, 2)), or contiguous
copies made here, before timing, when a backend refuses the strided view.
"""
from __future__ import annotations

import warnings
from typing import Callable

import torch
import torch.nn.functional as F

import gqa

try:  # torch >= 2.3; with an older torch every peer is reported n/a
    from torch.nn.attention import SDPBackend, sdpa_kernel
except ImportError:  # pragma: no cover
    SDPBackend = sdpa_kernel = None

from . import gpu_check
from .gpu_configs import GpuConfig, within_tolerance
from .gpu_report import short_reason

TORCH_DTYPES = {"fp16": torch.float16, "bf16": torch.bfloat16}
GQA_DTYPE_NAMES = {"fp16": "float16", "bf16": "bfloat16"}
SDPA_BACKENDS = {"flash": "FLASH_ATTENTION", "cudnn": "CUDNN_ATTENTION", "efficient": "EFFICIENT_ATTENTION"}


def _sync(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


class Case:
    """Device inputs of one config and the calls on them."""

    def __init__(self, cfg: GpuConfig, copies: int, device: str = "cuda", seed: int = 0):
        self.cfg, self.copies, self.device = cfg, copies, device
        dtype = TORCH_DTYPES[cfg.dtype]
        gen = torch.Generator(device=device).manual_seed(seed)
        b, s, hq, hkv, d = cfg.batch, cfg.seq_len, cfg.num_q_heads, cfg.num_kv_heads, cfg.head_dim

        def randn(*shape):
            return torch.randn(*shape, generator=gen, dtype=dtype, device=device)

        first = {"q": randn(b, s, hq, d), "k": randn(b, s, hkv, d), "v": randn(b, s, hkv, d)}
        if cfg.op != "prefill":
            first["k_cache"], first["v_cache"] = randn(b, cfg.kv_len, hkv, d), randn(b, cfg.kv_len, hkv, d)
            # The rows libgqa writes (at past .. past+S-1) already hold the new K/V, so the peers,
            # which do not append, attend over exactly what libgqa attends over.
            first["k_cache"][:, cfg.past:] = first["k"]
            first["v_cache"][:, cfg.past:] = first["v"]
        # The reference comes from the untouched inputs, before any call can write to them.
        self.refs = {bi: gpu_check.reference(first["q"][bi], self._keys(first, "k", bi), self._keys(first, "v", bi),
                                             q_start=cfg.past)
                     for bi in gpu_check.checked_sequences(b)}
        self.inputs = [first] + [{n: t.clone() for n, t in first.items()} for _ in range(copies - 1)]
        self.out = torch.empty_like(first["q"])
        self.workspace = None
        if cfg.op == "decode":
            size = gqa.decode_workspace_size(b, hq, hkv, d, cfg.kv_len, dtype=GQA_DTYPE_NAMES[cfg.dtype], device=device)
            if size:  # once per config, outside timing
                self.workspace = torch.empty(size, dtype=torch.uint8, device=device)

    def _keys(self, x: dict, name: str, b: int) -> torch.Tensor:
        if self.cfg.op == "prefill":
            return x[name][b]
        return torch.cat([x[name + "_cache"][b, : self.cfg.past], x[name][b]])

    def error(self, out_bshd: torch.Tensor) -> float:
        return gpu_check.max_abs_error(out_bshd, self.refs)

    # ---- libgqa ----
    def gqa_fn(self) -> Callable[[int], object]:
        cfg, xs, out, ws = self.cfg, self.inputs, self.out, self.workspace

        def call(i):
            x = xs[i % len(xs)]
            if cfg.op == "decode":
                return gqa.decode(x["q"], x["k"], x["v"], x["k_cache"], x["v_cache"], cfg.past, out=out, workspace=ws)
            if cfg.op == "prefill":
                return gqa.prefill(x["q"], x["k"], x["v"], causal=True, out=out)
            return gqa.prefill(x["q"], x["k"], x["v"], x["k_cache"], x["v_cache"], start_pos=cfg.past, causal=True,
                               out=out)

        return call

    # ---- torch SDPA ----
    def bhsd_bytes(self) -> int:
        """Bytes of contiguous BHSD copies of every input set (for the fits check)."""
        x = self.inputs[0]
        names = ("q", "k_cache", "v_cache") if self.cfg.op == "decode" else ("q", "k", "v")
        return len(self.inputs) * sum(x[n].numel() * x[n].element_size() for n in names)

    def sdpa_fn(self, backend, contiguous: bool) -> Callable[[int], torch.Tensor]:
        decode = self.cfg.op == "decode"
        names = ("q", "k_cache", "v_cache") if decode else ("q", "k", "v")
        views = []
        for x in self.inputs:
            ts = [x[n].transpose(1, 2) for n in names]
            views.append([t.contiguous() for t in ts] if contiguous else ts)

        def call(i):
            q, k, v = views[i % len(views)]
            with sdpa_kernel([backend]):
                return F.scaled_dot_product_attention(q, k, v, is_causal=not decode, enable_gqa=True)

        return call


def probe(fn: Callable[[int], object], device: str) -> tuple[object, str | None]:
    """One call: (output, None), or (None, why) when it raises (torch explains a refused backend
    in warnings before its "No available kernel" error; both go into the reason)."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            out = fn(0)
            _sync(device)
            return out, None
        except (RuntimeError, TypeError, ValueError, NotImplementedError, gqa.GQAError) as e:
            return None, short_reason([str(w.message) for w in caught] + [f"{type(e).__name__}: {e}"])


def graph_of(fn: Callable[[int], object], calls: int) -> Callable[[int], object]:
    """fn(0) .. fn(calls - 1) captured in one CUDA graph; returns a replay function."""
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):  # warm-up on a side stream, as torch asks before capture
        fn(0)
    torch.cuda.current_stream().wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        for i in range(calls):
            fn(i)
    return lambda _: graph.replay()


def _graph_entry(timer, fn, calls: int) -> dict:
    try:
        return {"graph_us": timer.median_us(graph_of(fn, calls), per_call=calls)["us"]}
    except Exception as e:  # noqa: BLE001 - capture failures are reported, not fatal
        return {"graph_na": short_reason([f"{type(e).__name__}: {e}"])}


def run_gqa(case: Case, timer, graphs: bool) -> dict:
    """{"status", "reason"?, "err", "us", "graph_us" or "graph_na"}; a wrong output is not timed."""
    fn = case.gqa_fn()
    out, why = probe(fn, case.device)
    if why:
        return {"status": "error", "reason": why}
    err = case.error(case.out)
    if not within_tolerance(err, case.cfg.dtype):
        return {"status": "wrong", "reason": f"max abs err {err:.3g}", "err": err}
    entry = {"status": "ok", "err": err, **timer.median_us(fn)}
    if graphs:
        entry.update(_graph_entry(timer, fn, case.copies))
    return entry


def run_peer(case: Case, name: str, timer, graphs: bool, free_bytes: Callable[[], int]) -> dict:
    """One SDPA backend: timed entry, or {"na": reason}. The strided view first; contiguous
    copies only when the view is refused and they fit in free_bytes()."""
    backend = getattr(SDPBackend, SDPA_BACKENDS[name], None) if SDPBackend else None
    if backend is None:
        return {"na": f"torch {torch.__version__} has no SDPBackend.{SDPA_BACKENDS[name]}"}
    why = None
    for contiguous in (False, True):
        if contiguous and case.bhsd_bytes() > free_bytes():
            return {"na": f"{why} (contiguous copies would need {case.bhsd_bytes() / 1e9:.1f} GB)"}
        fn = case.sdpa_fn(backend, contiguous)
        out, why = probe(fn, case.device)
        if why:
            continue
        err = case.error(out.transpose(1, 2))
        if not within_tolerance(err, case.cfg.dtype):
            return {"na": f"wrong output (max abs err {err:.3g})", "err": err}
        entry = {"err": err, "contiguous": contiguous, **timer.median_us(fn)}
        if graphs:
            entry.update(_graph_entry(timer, fn, case.copies))
        return entry
    return {"na": why}
