"""libgqa as PyTorch operators, for CPU and CUDA tensors.

    import gqa.torch as gt
    out = gt.prefill(q, k, v, k_cache, v_cache, start_pos=0)     # torch tensors, BSHD
    out = gt.decode(q, k, v, k_cache, v_cache, cache_len)        # an int, or one per sequence

Each libgqa operation is a ``torch.library`` operator (``torch.ops.gqa.prefill``,
``torch.ops.gqa.decode``) whose schema declares what it writes (``out``, ``k_cache``,
``v_cache``: ``Tensor(a!)``), with a fake kernel (shapes only) so that ``torch.compile``
(``fullgraph=True``), ``torch.export`` and meta tensors trace it, and one kernel for CPU and
CUDA tensors that hands their ``data_ptr()`` to libgqa through cffi: no NumPy, no copy, on the
current CUDA stream. Caches and ``out`` are written in place and must be contiguous; a
non-contiguous q/k/v is copied first (inputs only). libgqa computes no gradient: inputs that
require grad (with grad mode on) are refused.

The operators are defined with ``torch.library.Library.define`` (a schema with ``(a!)``
annotations is what ``custom_op``'s ``mutates_args`` produces) rather than
``torch.library.custom_op`` itself, whose Python autograd and in-place wrappers cost 47 us per
call in eager mode against 4 us for the plain definition (torch 2.13, a no-op kernel, this
project's 2-core machine under load).

The Hugging Face transformers integration (a KV cache that libgqa appends to in place) is in
``gqa.hf``; ``register_hf_attention`` is re-exported here.

Importing this module needs torch; ``import gqa`` alone never imports it.
"""
from __future__ import annotations

import numpy as np
import torch

from . import _args, _configs
from ._errors import InvalidArgumentError, error_for_status
from ._ffi import ffi, last_error, lib

__all__ = ["prefill", "decode", "register_hf_attention"]

# Meta tensors (shapes only) run the fake kernel; the C library sees CPU and CUDA tensors.
_DEVICE_TYPES = ("cpu", "cuda", "meta")
DTYPES = {torch.float16: lib.GQA_DTYPE_F16, torch.bfloat16: lib.GQA_DTYPE_BF16,
          torch.float32: lib.GQA_DTYPE_F32}

_LIB = torch.library.Library("gqa", "DEF")


def _operator(name: str, schema: str, check, run, explain) -> None:
    """Define torch.ops.gqa.<name>. ``check(*args)`` validates the arguments from their
    metadata alone (it also runs under fake tensors, where sizes may be symbolic) and returns
    what ``run`` needs; ``run(checked, *args)`` calls libgqa on real tensors. Every output is
    an argument the schema marks as written, so the fake kernel returns nothing."""
    _LIB.define(name + schema)

    def kernel(*args):
        run(check(*args), *args)

    def fake(*args):  # also meta tensors, which the fast predicate cannot tell from CPU ones
        explain(*args[:6])
        check(*args)

    for key in ("CPU", "CUDA"):
        _LIB.impl(name, kernel, key)
    torch.library.register_fake(f"gqa::{name}", fake, lib=_LIB)


# ---- argument checks (metadata only) ---------------------------------------------------------

def _refuse_grad(tensors: tuple) -> None:
    if torch.is_grad_enabled():
        for name, t in tensors:
            if t is not None and t.requires_grad:
                raise InvalidArgumentError(
                    f"{name} requires grad, but libgqa computes no gradient; call it under "
                    "torch.no_grad() or torch.inference_mode(), or pass detached tensors")


def _expect(name: str, t, shape, dtype, device: int, layout: str) -> None:
    """t is a contiguous tensor of this shape, dtype and device."""
    if not isinstance(t, torch.Tensor):
        raise InvalidArgumentError(f"{name} is a {type(t).__name__}, expected a torch.Tensor")
    if t.shape != shape:
        raise InvalidArgumentError(f"{name} has shape {list(t.shape)}, expected {list(shape)} ({layout})")
    if t.dtype != dtype:
        raise InvalidArgumentError(f"{name} has dtype {t.dtype} but q has {dtype}; "
                                   "all tensors of a call must share one dtype")
    if t.device != device:
        raise InvalidArgumentError(f"{name} is on {t.device} but q is on {device}; "
                                   "all tensors of a call must be on one device")
    if not t.is_contiguous():
        raise InvalidArgumentError(f"{name} must be contiguous: libgqa writes it in place "
                                   f"(shape {list(t.shape)}, strides {list(t.stride())})")


def _device_code(q) -> int:
    return lib.GQA_DEVICE_CUDA if q.is_cuda else lib.GQA_DEVICE_CPU


def _query(q, rank_name: str) -> torch.device:
    """q.device, or the error that says what is wrong with q."""
    if not isinstance(q, torch.Tensor):
        raise InvalidArgumentError(f"q is a {type(q).__name__}, expected a torch.Tensor")
    if q.dim() != 4:
        raise InvalidArgumentError(f"q has shape {list(q.shape)}, expected {rank_name}")
    if q.dtype not in DTYPES:
        raise InvalidArgumentError(f"q has dtype {q.dtype}; libgqa takes float16, bfloat16 or float32")
    where = q.device
    if where.type not in _DEVICE_TYPES:
        raise InvalidArgumentError(f"q is on {q.device}; libgqa runs on cpu and cuda tensors")
    return where


def _inputs(q, k, v, kv_shape, where, layout):
    """k and v are like kv_shape; inputs may be non-contiguous (they are copied)."""
    for name, t in (("k", k), ("v", v)):
        if not isinstance(t, torch.Tensor):
            raise InvalidArgumentError(f"{name} is a {type(t).__name__}, expected a torch.Tensor")
        if t.shape != kv_shape:
            raise InvalidArgumentError(f"{name} has shape {list(t.shape)}, expected {list(kv_shape)} ({layout})")
        if t.dtype != q.dtype or t.device != where:
            raise InvalidArgumentError(f"{name} is {t.dtype} on {t.device} but q is {q.dtype} on {q.device}; "
                                       "all tensors of a call must share one dtype and device")


def _matches(q, out, k, v, k_cache, v_cache, kv_shape, cache_shape) -> bool:
    """The common case in one expression: every tensor as expected, no grad to refuse. When it
    is False the detailed checks run and raise the error that says what is wrong."""
    dtype, device = q.dtype, q.get_device()  # an int: -1 for the CPU (and meta: the fake kernel re-checks)
    return (dtype in DTYPES and (device < 0 or q.is_cuda)
            and out.shape == q.shape and k.shape == kv_shape and v.shape == kv_shape
            and out.dtype == k.dtype == v.dtype == dtype
            and out.get_device() == k.get_device() == v.get_device() == device and out.is_contiguous()
            and ((k_cache is None and v_cache is None)
                 or (k_cache.shape == cache_shape and v_cache.shape == cache_shape
                     and k_cache.dtype == v_cache.dtype == dtype
                     and k_cache.get_device() == v_cache.get_device() == device
                     and k_cache.is_contiguous() and v_cache.is_contiguous()))
            and not (torch.is_grad_enabled() and (
                q.requires_grad or k.requires_grad or v.requires_grad
                or (k_cache is not None and (k_cache.requires_grad or v_cache.requires_grad)))))


def _kv_heads(q, k, seq_len_name: str) -> int:
    if not isinstance(k, torch.Tensor) or k.dim() != 4:
        shape = list(k.shape) if isinstance(k, torch.Tensor) else type(k).__name__
        raise InvalidArgumentError(f"k is {shape}, expected [batch, {seq_len_name}, num_kv_heads, head_dim]")
    return k.shape[2]


def _int32(name: str, value):
    """_args.int32, except for a traced (symbolic) int, whose value C checks."""
    if type(value) is int and _args.INT32_MIN <= value <= _args.INT32_MAX:
        return value
    return value if isinstance(value, torch.SymInt) else _args.int32(name, value)


def _flag(name: str, value) -> bool:
    return value if value is True or value is False else _args.flag(name, value)


def _scale(scale) -> float:
    """_args.float32 (0 for None); plain floats skip the NumPy-based check, so that
    torch.compile traces the common case without a graph break."""
    if scale is None:
        return 0.0
    if type(scale) is float and -_args.FLOAT32_MAX <= scale <= _args.FLOAT32_MAX:
        return scale
    return _args.float32("scale", scale)


# ---- the call ----------------------------------------------------------------------------------

def _call(c_function, where: int, *args) -> None:
    """Run a libgqa entry point on q's device (CUDA: its current stream and device)."""
    if where < 0:
        status = c_function(*args, 0)
    elif where == torch.cuda.current_device():
        status = c_function(*args, torch._C._cuda_getCurrentRawStream(where))
    else:
        with torch.cuda.device(where):
            status = c_function(*args, torch._C._cuda_getCurrentRawStream(where))
    if status != lib.GQA_STATUS_OK:
        raise error_for_status(int(status), last_error())


def _like(q):
    """A new contiguous output like q."""
    if not isinstance(q, torch.Tensor):
        raise InvalidArgumentError(f"q is a {type(q).__name__}, expected a torch.Tensor")
    return torch.empty_like(q, memory_format=torch.contiguous_format)


# ---- gqa::prefill ------------------------------------------------------------------------------

def _check_prefill(out, q, k, v, k_cache, v_cache, start_pos, causal, scale):
    try:
        B, S, Hq, D = q.shape
        Hkv = k.shape[2]
        max_seq_len = k_cache.shape[1] if k_cache is not None else 0
        fast = _matches(q, out, k, v, k_cache, v_cache, (B, S, Hkv, D), (B, max_seq_len, Hkv, D))
    except (AttributeError, ValueError, IndexError, TypeError):
        fast = False
    if not fast:
        _explain_prefill(out, q, k, v, k_cache, v_cache)
    _int32("start_pos", start_pos)  # the operator called directly: C's int32 range
    return ("prefill", DTYPES[q.dtype], _device_code(q), B, S, Hq, Hkv, D, max_seq_len)


def _explain_prefill(out, q, k, v, k_cache, v_cache):
    """Raise the error that names what is wrong with these prefill arguments."""
    _refuse_grad((("q", q), ("k", k), ("v", v), ("k_cache", k_cache), ("v_cache", v_cache)))
    where = _query(q, "[batch, seq_len, num_q_heads, head_dim]")
    B, S, Hq, D = q.shape
    Hkv = _kv_heads(q, k, "seq_len")
    _inputs(q, k, v, (B, S, Hkv, D), where, "k, v are [batch, seq_len, num_kv_heads, head_dim]")
    _expect("out", out, q.shape, q.dtype, where, "out is like q")
    if (k_cache is None) != (v_cache is None):
        raise InvalidArgumentError("pass both k_cache and v_cache, or neither")
    if k_cache is not None:
        max_seq_len = k_cache.shape[1] if isinstance(k_cache, torch.Tensor) and k_cache.dim() == 4 else -1
        layout = "caches are [batch, max_seq_len, num_kv_heads, head_dim]"
        _expect("k_cache", k_cache, (B, max_seq_len, Hkv, D), q.dtype, where, layout)
        _expect("v_cache", v_cache, (B, max_seq_len, Hkv, D), q.dtype, where, layout)


def _run_prefill(key, out, q, k, v, k_cache, v_cache, start_pos, causal, scale):
    cfg = _configs.config(key)
    cfg.start_pos, cfg.causal, cfg.scale = start_pos, causal, scale
    q, k, v = q.contiguous(), k.contiguous(), v.contiguous()
    caches = (k_cache.data_ptr(), v_cache.data_ptr()) if k_cache is not None else (0, 0)
    _call(_configs.prefill_c, q.get_device(), out.data_ptr(), q.data_ptr(), k.data_ptr(), v.data_ptr(), *caches, cfg)


_operator("prefill", "(Tensor(a!) out, Tensor q, Tensor k, Tensor v, Tensor(b!)? k_cache, "
          "Tensor(c!)? v_cache, int start_pos, bool causal, float scale) -> ()", _check_prefill, _run_prefill,
          _explain_prefill)


def prefill(q, k, v, k_cache=None, v_cache=None, *, start_pos: int = 0, causal: bool = True,
            scale: float | None = None, out=None):
    """Causal (or not) attention of seq_len new tokens per sequence, writing their K/V into the
    caches at [start_pos, start_pos + seq_len) when caches are given (see gqa.prefill).

    q [B,S,Hq,D], k/v [B,S,Hkv,D], caches [B,max_seq_len,Hkv,D]. Returns ``out`` (new, or the
    one given, filled in place)."""
    if out is None:
        out = _like(q)
    torch.ops.gqa.prefill.default(out, q, k, v, k_cache, v_cache, _int32("start_pos", start_pos),
                                  _flag("causal", causal), _scale(scale))
    return out


# ---- gqa::decode -------------------------------------------------------------------------------

def _check_decode(out, q, k, v, k_cache, v_cache, cache_len, cache_lens, scale, num_splits, workspace):
    try:
        B, one, Hq, D = q.shape
        Hkv, max_seq_len = k.shape[2], k_cache.shape[1]
        fast = one == 1 and _matches(q, out, k, v, k_cache, v_cache, (B, 1, Hkv, D), (B, max_seq_len, Hkv, D))
    except (AttributeError, ValueError, IndexError, TypeError):
        fast = False
    if not fast:
        _explain_decode(out, q, k, v, k_cache, v_cache)
    _int32("cache_len", cache_len), _int32("num_splits", num_splits)  # the operator called directly
    if cache_lens is not None and (cache_lens.shape != (B,) or cache_lens.dtype != torch.int32
                                   or cache_lens.device.type != "cpu" or not cache_lens.is_contiguous()):
        raise InvalidArgumentError(
            f"cache_lens is {cache_lens.dtype} {list(cache_lens.shape)} on {cache_lens.device}; libgqa "
            f"reads it on the host: a contiguous CPU int32 tensor of {B} lengths (one per sequence)")
    if workspace is not None and (workspace.device != q.device or not workspace.is_contiguous()):
        raise InvalidArgumentError(f"workspace is on {workspace.device}; it must be a contiguous buffer on q's device")
    return ("decode", DTYPES[q.dtype], _device_code(q), B, Hq, Hkv, D, max_seq_len)


def _explain_decode(out, q, k, v, k_cache, v_cache):
    """Raise the error that names what is wrong with these decode arguments."""
    _refuse_grad((("q", q), ("k", k), ("v", v), ("k_cache", k_cache), ("v_cache", v_cache)))
    where = _query(q, "[batch, 1, num_q_heads, head_dim]")
    B, one, Hq, D = q.shape
    if one != 1:
        raise InvalidArgumentError(f"q has shape {list(q.shape)}, expected [batch, 1, num_q_heads, head_dim]")
    Hkv = _kv_heads(q, k, "1")
    _inputs(q, k, v, (B, 1, Hkv, D), where, "k, v are [batch, 1, num_kv_heads, head_dim]")
    _expect("out", out, q.shape, q.dtype, where, "out is like q")
    max_seq_len = k_cache.shape[1] if isinstance(k_cache, torch.Tensor) and k_cache.dim() == 4 else -1
    layout = "caches are [batch, max_seq_len, num_kv_heads, head_dim]"
    _expect("k_cache", k_cache, (B, max_seq_len, Hkv, D), q.dtype, where, layout)
    _expect("v_cache", v_cache, (B, max_seq_len, Hkv, D), q.dtype, where, layout)


def _run_decode(key, out, q, k, v, k_cache, v_cache, cache_len, cache_lens, scale, num_splits, workspace):
    cfg = _configs.config(key)
    cfg.scale, cfg.num_splits = scale, num_splits
    if cache_lens is None:
        cfg.cache_len = cache_len
    else:
        cfg.cache_lens = ffi.cast("const int32_t*", cache_lens.data_ptr())
    if workspace is not None:
        cfg.workspace = ffi.cast("void*", workspace.data_ptr())
        cfg.workspace_bytes = workspace.numel() * workspace.element_size()
    q, k, v = q.contiguous(), k.contiguous(), v.contiguous()
    _call(_configs.decode_c, q.get_device(), out.data_ptr(), q.data_ptr(), k.data_ptr(), v.data_ptr(),
          k_cache.data_ptr(), v_cache.data_ptr(), cfg)


_operator("decode", "(Tensor(a!) out, Tensor q, Tensor k, Tensor v, Tensor(b!) k_cache, Tensor(c!) v_cache, "
          "int cache_len, Tensor? cache_lens, float scale, int num_splits, Tensor(d!)? workspace) -> ()",
          _check_decode, _run_decode, _explain_decode)


def _cache_lens(cache_len, q):
    """(cache_len, None) for one length, else (0, a CPU int32 tensor of per-sequence lengths),
    checked as gqa.decode checks them (integers in int32 range; no bool, no float)."""
    if type(cache_len) is int and _args.INT32_MIN <= cache_len <= _args.INT32_MAX:
        return cache_len, None
    if isinstance(cache_len, torch.SymInt):  # traced: the schema's int; C checks the value
        return cache_len, None
    if isinstance(cache_len, torch.Tensor):
        host = cache_len.detach().cpu()
        if host.dtype == torch.int32 and host.dim() == 1 and host.is_contiguous():
            return 0, host
        integer = not (host.dtype.is_floating_point or host.dtype.is_complex or host.dtype == torch.bool)
        cache_len = host.numpy() if integer else host.tolist()  # shown as given if refused
    if np.ndim(cache_len) == 0:
        return _args.int32("cache_len", cache_len), None
    batch = q.shape[0] if isinstance(q, torch.Tensor) and q.dim() == 4 else -1
    return 0, torch.from_numpy(_args.int32_array("cache_len", cache_len, batch))


def decode(q, k, v, k_cache, v_cache, cache_len, *, scale: float | None = None, out=None,
           num_splits: int = 0, workspace=None):
    """One new token per sequence: append k/v at cache_len and attend over cache positions
    0..cache_len (see gqa.decode). cache_len: an int, or B lengths (a list, NumPy array or
    tensor; libgqa reads them on the host).

    q [B,1,Hq,D], k/v [B,1,Hkv,D], caches [B,max_seq_len,Hkv,D]. ``workspace`` (CUDA) is a
    buffer of ``gqa.decode_workspace_size(...)`` bytes that lets libgqa split long caches."""
    if out is None:
        out = _like(q)
    length, lens = _cache_lens(cache_len, q)
    torch.ops.gqa.decode.default(out, q, k, v, k_cache, v_cache, length, lens, _scale(scale),
                                 _int32("num_splits", num_splits), workspace)
    return out


def register_hf_attention(name: str = "gqa") -> str:
    """See gqa.hf.register_hf_attention."""
    from . import hf

    return hf.register_hf_attention(name)
