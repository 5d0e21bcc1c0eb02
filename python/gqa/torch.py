"""libgqa as PyTorch operators, for CPU and CUDA tensors.

    import gqa.torch as gt
    out = gt.prefill(q, k, v, k_cache, v_cache, start_pos=0)     # torch tensors, BSHD
    out = gt.decode(q, k, v, k_cache, v_cache, cache_len)        # an int, or one per sequence
    out, lse = gt.decode(..., window=(4095, -1), softcap=50.0, sinks=sinks, return_lse=True)
    out = gt.merge_states(states, lses)                          # partials over disjoint keys
    out = gt.batch_attention(q, k, v, k_pages, v_pages, q_indptr=..., kv_lens=..., page_table=...)

The same calls, arguments and results as ``gqa.prefill`` / ``decode`` / ``merge_states`` /
``batch_attention`` (see there and gqa.h), on torch tensors. Each is a ``torch.library``
operator, ``torch.ops.gqa.<name>``, whose schema declares what it writes (out, the caches, lse),
with a fake kernel, so ``torch.compile(fullgraph=True)``, ``torch.export`` and meta tensors
trace it; the kernel hands ``data_ptr()`` to libgqa (no NumPy, no copy) on the current CUDA
stream. Views of q, k, v and out whose last axis is contiguous (BHSD tensors transposed, slices
of one fused QKV projection) go in as they are; another non-contiguous input is copied, another
non-contiguous output refused. Caches, lse and the batched op's metadata (int32, on the caches'
device) are contiguous. libgqa computes no gradient: with grad mode on, a tensor that requires
grad is refused.

Eager calls skip the dispatcher: when nothing would see the call through it (no torch.compile,
torch.export or jit tracing, no dispatch, torch-function or functorch mode, no profiler, and
plain ``torch.Tensor`` arguments, no subclass), these functions call the operator's kernel
directly, which is what the dispatcher would run, saving its ~4 us per call. Otherwise they
call ``torch.ops.gqa.*``, so every tracer, mode and subclass sees the operator.

The Hugging Face transformers integration (a KV cache that libgqa appends to in place) is in
``gqa.hf``; ``register_hf_attention`` is re-exported here.

Importing this module needs torch; ``import gqa`` alone never imports it.
"""
from __future__ import annotations

import numpy as np
import torch

from . import _args
from . import _torch_checks as _checks
from . import _torch_ops as _kernels
from ._errors import InvalidArgumentError
from ._torch_ops import DTYPES  # noqa: F401 - torch dtype -> GQA_DTYPE_*, kept for callers

__all__ = ["prefill", "decode", "merge_states", "batch_attention", "register_hf_attention"]

_Tensor = torch.Tensor
_NO_WINDOW = (-1, -1)
_NO_SOFTCAP = 0.0

# What would see a call through the dispatcher (each a C call of ~40 ns, checked in this order).
_is_compiling = torch.compiler.is_compiling  # torch.compile / torch.export tracing
_dispatch_modes = torch._C._len_torch_dispatch_stack  # FakeTensorMode, make_fx, FlopCounterMode...
_function_modes = torch._C._is_torch_function_mode_enabled
_functorch = torch._C._are_functorch_transforms_active  # vmap, grad, functionalize
_jit_tracing = torch._C._get_tracing_state
_profiling = torch._C._autograd._profiler_enabled  # so the profiler shows gqa::<op>


def _watched() -> bool:
    """True when something would see a call through the dispatcher: a tracer, a mode, the
    profiler. The eager route also requires plain torch.Tensor arguments (no subclass: no
    FakeTensor, Parameter, DTensor) on the CPU or a CUDA device (the kernels check that)."""
    return (_is_compiling() or _dispatch_modes() or _function_modes() or _functorch()
            or _jit_tracing() is not None or _profiling())


def _quiet(q) -> bool:
    """Nothing watches, and q is on a device the kernel runs on (not meta)."""
    return not _watched() and (q.is_cpu or q.is_cuda)


def _require_tensors(named) -> None:
    """Before the dispatcher (which would raise its own TypeError): each is a tensor or None."""
    for name, t in named:
        if t is not None and not isinstance(t, _Tensor):
            raise InvalidArgumentError(f"{name} is a {type(t).__name__}, expected a torch.Tensor")


# ---- scalar and optional arguments, checked as gqa's NumPy API checks them --------------------

_INT32_MIN, _INT32_MAX, _FLOAT32_MAX = _args.INT32_MIN, _args.INT32_MAX, _args.FLOAT32_MAX


def _int32(name: str, value):
    """_args.int32, except for a traced (symbolic) int, whose value C checks."""
    if type(value) is int and _INT32_MIN <= value <= _INT32_MAX:
        return value
    return value if isinstance(value, torch.SymInt) else _args.int32(name, value)


def _flag(name: str, value) -> bool:
    return value if value is True or value is False else _args.flag(name, value)


def _real(name: str, value) -> float:
    """_args.float32; plain floats skip the NumPy-based check (torch.compile traces them)."""
    if type(value) is float and -_FLOAT32_MAX <= value <= _FLOAT32_MAX:
        return value
    return value if isinstance(value, torch.SymFloat) else _args.float32(name, value)


def _scale(scale) -> float:
    return 0.0 if scale is None else _real("scale", scale)


def _like(q):
    """A new contiguous output like q."""
    if not isinstance(q, _Tensor):
        raise InvalidArgumentError(f"q is a {type(q).__name__}, expected a torch.Tensor")
    _checks.dense("q", q)
    return torch.empty_like(q) if q.is_contiguous() else torch.empty_like(q, memory_format=torch.contiguous_format)


def _lse(like, axes, rank):
    """A new float32 lse output on like's device, of like's sizes at `axes` (None when like is
    not a tensor of `rank` dimensions: the operator's checks then say what is wrong with it)."""
    if not isinstance(like, _Tensor) or like.dim() != rank:
        return None
    return torch.empty(tuple(like.shape[a] for a in axes), dtype=torch.float32, device=like.device)


def _variants(q, lse_axes, rank, window, softcap, sinks, return_lse):
    """The operator's (window_left, window_right, softcap, sinks as float32, lse) from the
    keyword arguments, the lse a new float32 tensor of q's sizes at lse_axes when asked for."""
    try:
        left, right = window
    except (TypeError, ValueError):
        raise InvalidArgumentError(f"window {window!r} must be a pair (left, right) of ints; -1 is unbounded") from None
    if sinks is not None:
        if not isinstance(sinks, _Tensor):
            raise InvalidArgumentError(f"sinks is a {type(sinks).__name__}, expected a torch.Tensor of float logits")
        if not sinks.dtype.is_floating_point:
            raise InvalidArgumentError(f"sinks has dtype {sinks.dtype}; pass float logits (libgqa reads float32)")
        sinks = sinks.to(torch.float32)
    lse = _lse(q, lse_axes, rank) if _flag("return_lse", return_lse) else None
    return _int32("window_left", left), _int32("window_right", right), _real("softcap", softcap), sinks, lse


_NO_VARIANTS = (-1, -1, 0.0, None, None)


def _result(out, variants):
    """out, or (out, lse) when the call asked for the lse."""
    return out if variants is None or variants[4] is None else (out, variants[4])


# ---- the operations ----------------------------------------------------------------------------

def prefill(q, k, v, k_cache=None, v_cache=None, *, start_pos: int = 0, causal: bool = True,
            scale: float | None = None, window=_NO_WINDOW, softcap: float = _NO_SOFTCAP, sinks=None,
            return_lse: bool = False, out=None):
    """Causal (or not) attention of seq_len new tokens per sequence, writing their K/V into the
    caches at [start_pos, start_pos + seq_len) when caches are given (see gqa.prefill).

    q [B,S,Hq,D], k/v [B,S,Hkv,D], caches [B,max_seq_len,Hkv,D]. Returns ``out`` (new, or the
    one given, filled in place), or (out, lse [B,Hq,S] float32) with return_lse."""
    # The eager plain call first (the overhead budget): default options, scalars of the usual
    # types, nothing watching; plain_prefill checks the tensors (plain torch.Tensor ones) or
    # returns None.
    if (window is _NO_WINDOW and softcap is _NO_SOFTCAP and sinks is None and return_lse is False
            and type(start_pos) is int and (causal is True or causal is False) and (scale is None or type(scale) is float)
            and not _watched()):
        result = _kernels.plain_prefill(out, q, k, v, k_cache, v_cache, start_pos, causal,
                                        0.0 if scale is None else scale, eager=True)
        if result is not None:
            return result
    if out is None:
        out = _like(q)
    variants = None if (window is _NO_WINDOW and softcap is _NO_SOFTCAP and sinks is None and return_lse is False) \
        else _variants(q, (0, 2, 1), 4, window, softcap, sinks, return_lse)
    start_pos, causal, scale = _int32("start_pos", start_pos), _flag("causal", causal), _scale(scale)
    if (type(q) is _Tensor and type(k) is _Tensor and type(v) is _Tensor and type(out) is _Tensor
            and (k_cache is None or type(k_cache) is _Tensor) and (v_cache is None or type(v_cache) is _Tensor)
            and (variants is None or variants[3] is None or type(variants[3]) is _Tensor) and _quiet(q)):
        _kernels.prefill(out, q, k, v, k_cache, v_cache, start_pos, causal, scale, *(variants or _NO_VARIANTS))
    else:
        _require_tensors((("q", q), ("k", k), ("v", v), ("k_cache", k_cache), ("v_cache", v_cache), ("out", out)))
        torch.ops.gqa.prefill.default(out, q, k, v, k_cache, v_cache, start_pos, causal, scale,
                                      *(variants or _NO_VARIANTS))
    return _result(out, variants)


def _cache_lens(cache_len, q):
    """(cache_len, None) for one length, else (0, a CPU int32 tensor of per-sequence lengths),
    checked as gqa.decode checks them (integers in int32 range; no bool, no float)."""
    if type(cache_len) is int and _INT32_MIN <= cache_len <= _INT32_MAX:
        return cache_len, None
    if isinstance(cache_len, torch.SymInt):  # traced: the schema's int; C checks the value
        return cache_len, None
    if isinstance(cache_len, _Tensor):
        host = cache_len.detach().cpu()
        if host.dtype == torch.int32 and host.dim() == 1 and host.is_contiguous():
            return 0, host
        integer = not (host.dtype.is_floating_point or host.dtype.is_complex or host.dtype == torch.bool)
        cache_len = host.numpy() if integer else host.tolist()  # shown as given if refused
    if np.ndim(cache_len) == 0:
        return _args.int32("cache_len", cache_len), None
    batch = q.shape[0] if isinstance(q, _Tensor) and q.dim() == 4 else -1
    return 0, torch.from_numpy(_args.int32_array("cache_len", cache_len, batch))


def decode(q, k, v, k_cache, v_cache, cache_len, *, scale: float | None = None, window=_NO_WINDOW,
           softcap: float = _NO_SOFTCAP, sinks=None, return_lse: bool = False, out=None, num_splits: int = 0,
           workspace=None):
    """One new token per sequence: append k/v at cache_len and attend over cache positions
    0..cache_len (see gqa.decode). cache_len: an int, or B lengths (a list, NumPy array or
    tensor; libgqa reads them on the host).

    q [B,1,Hq,D], k/v [B,1,Hkv,D], caches [B,max_seq_len,Hkv,D]. Returns ``out``, or
    (out, lse [B,Hq] float32) with return_lse. ``workspace`` (CUDA) is a buffer of
    ``gqa.decode_workspace_size(...)`` bytes that lets libgqa split long caches."""
    # The eager plain call first, as in prefill.
    if (window is _NO_WINDOW and softcap is _NO_SOFTCAP and sinks is None and return_lse is False
            and workspace is None and type(cache_len) is int and type(num_splits) is int
            and (scale is None or type(scale) is float) and not _watched()):
        result = _kernels.plain_decode(out, q, k, v, k_cache, v_cache, cache_len, 0.0 if scale is None else scale,
                                       num_splits, eager=True)
        if result is not None:
            return result
    if out is None:
        out = _like(q)
    length, lens = _cache_lens(cache_len, q)
    variants = None if (window is _NO_WINDOW and softcap is _NO_SOFTCAP and sinks is None and return_lse is False) \
        else _variants(q, (0, 2), 4, window, softcap, sinks, return_lse)
    scale, num_splits = _scale(scale), _int32("num_splits", num_splits)
    if (type(q) is _Tensor and type(k) is _Tensor and type(v) is _Tensor and type(out) is _Tensor
            and type(k_cache) is _Tensor and type(v_cache) is _Tensor and (lens is None or type(lens) is _Tensor)
            and (workspace is None or type(workspace) is _Tensor)
            and (variants is None or variants[3] is None or type(variants[3]) is _Tensor) and _quiet(q)):
        _kernels.decode(out, q, k, v, k_cache, v_cache, length, lens, scale, num_splits, workspace,
                        *(variants or _NO_VARIANTS))
    else:
        _require_tensors((("q", q), ("k", k), ("v", v), ("k_cache", k_cache), ("v_cache", v_cache), ("out", out),
                          ("workspace", workspace)))
        torch.ops.gqa.decode.default(out, q, k, v, k_cache, v_cache, length, lens, scale, num_splits, workspace,
                                     *(variants or _NO_VARIANTS))
    return _result(out, variants)


def merge_states(states, lses, *, sinks=None, out=None, return_lse: bool = False):
    """Merge N partial attentions of the same queries over disjoint key sets (each computed with
    return_lse=True, without sinks) into the attention over their union (see gqa.merge_states).

    states [N,B,S,H,D] with lses float32 [N,B,H,S] (prefill results), or [N,B,1,H,D] with
    [N,B,H] (decode results); sinks float32 [H] are added here once. Returns out [B,S,H,D], or
    (out, lse) with lse in the layout of one state of lses."""
    _require_tensors((("states", states), ("lses", lses), ("out", out)))
    if out is None:
        if states.dim() != 5:
            raise InvalidArgumentError(f"states has shape {list(states.shape)}, expected "
                                       "[num_states, batch, seq_len, num_heads, head_dim]")
        out = torch.empty(states.shape[1:], dtype=states.dtype, device=states.device)
    sinks, lse = _variants(lses, range(1, lses.dim()), lses.dim(), _NO_WINDOW, _NO_SOFTCAP, sinks, return_lse)[3:]
    if (type(states) is _Tensor and type(lses) is _Tensor and type(out) is _Tensor
            and (sinks is None or type(sinks) is _Tensor) and _quiet(states)):
        _kernels.merge_states(out, states, lses, sinks, lse)
    else:
        torch.ops.gqa.merge_states.default(out, states, lses, sinks, lse)
    return out if lse is None else (out, lse)


def _metadata(name: str, obj, device):
    """An int32 metadata tensor on `device`: an int32 tensor there is used as it is (CUDA graphs
    replay its buffer); other integer tensors, NumPy arrays and sequences are converted, checked
    as integers in int32 range."""
    if isinstance(obj, _Tensor):
        if obj.dtype == torch.int32 and obj.device == device:
            return obj
        if obj.dtype.is_floating_point or obj.dtype.is_complex or obj.dtype == torch.bool:
            raise InvalidArgumentError(f"{name} has dtype {obj.dtype}; it must hold integers (int32)")
        obj = obj.detach().cpu().numpy()
    shape = np.shape(obj)
    values = _args.int32_array(name, np.reshape(obj, -1), int(np.prod(shape)))  # integers only
    return torch.from_numpy(values.reshape(shape)).to(device)


def batch_attention(q, k, v, k_cache, v_cache, *, q_indptr, kv_lens, page_table, causal: bool = True,
                    scale: float | None = None, window=_NO_WINDOW, softcap: float = _NO_SOFTCAP, sinks=None,
                    return_lse: bool = False, out=None, num_splits: int = 0, workspace=None, error_flags=None):
    """The batched op (see gqa.batch_attention): sequence b owns rows q_indptr[b] ..
    q_indptr[b+1]-1 of q/k/v/out and has kv_lens[b] tokens cached in pages page_table[b] of the
    paged caches; its new K/V are written at positions kv_lens[b] .., its queries attend
    causally (bottom-right aligned). q [total_q,Hq,D], k/v [total_q,Hkv,D], caches
    [num_pages,page_size,Hkv,D]; q_indptr [B+1], kv_lens [B], page_table [B,max_pages] int32 on
    the caches' device (other integer arrays are converted). Returns out, or (out, lse
    [Hq,total_q] float32) with return_lse."""
    _require_tensors((("q", q), ("k", k), ("v", v), ("k_cache", k_cache), ("v_cache", v_cache), ("out", out)))
    if out is None:
        out = _like(q)
    device = k_cache.device
    indptr, lens, table = (_metadata(name, value, device) for name, value in
                           (("q_indptr", q_indptr), ("kv_lens", kv_lens), ("page_table", page_table)))
    variants = _variants(q, (1, 0), 3, window, softcap, sinks, return_lse)
    left, right, cap, sinks, lse = variants
    args = (out, q, k, v, k_cache, v_cache, indptr, lens, table, _flag("causal", causal), _scale(scale), left, right,
            cap, sinks, lse, _int32("num_splits", num_splits), workspace, error_flags)
    if (all(type(t) is _Tensor for t in (q, k, v, k_cache, v_cache, out, indptr, lens, table))
            and all(t is None or type(t) is _Tensor for t in (sinks, workspace, error_flags)) and _quiet(q)):
        _kernels.batch_attention(*args)
    else:
        _require_tensors((("workspace", workspace), ("error_flags", error_flags)))
        torch.ops.gqa.batch_attention.default(*args)
    return _result(out, variants)


def register_hf_attention(name: str = "gqa") -> str:
    """See gqa.hf.register_hf_attention."""
    from . import hf

    return hf.register_hf_attention(name)
