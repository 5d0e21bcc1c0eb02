"""The checks of gqa.torch's operators that name what is wrong: every tensor's type, shape,
dtype, device and layout, from metadata alone, so they also run on meta and fake tensors (whose
sizes may be symbolic) and are the operators' fake kernels. Each raises a gqa.InvalidArgumentError
naming the tensor; the kernels run them whenever their one-expression check of the usual case
fails, so the message is the same whichever check saw the problem first."""

from __future__ import annotations

import torch

from ._arrays import element_strides, torch_dtypes
from ._errors import InvalidArgumentError

DTYPES = torch_dtypes()
_DEVICE_TYPES = ("cpu", "cuda", "meta")  # meta: shapes only (the fake kernels)

# How a tensor's memory may be laid out (the last axis is head_dim where there is one):
READ = "read"  # any strides: a layout libgqa cannot read in place is copied first (inputs only)
STRIDED = "strided"  # written in place through its strides: last axis contiguous, no stride-0 axis
WRITTEN = "written"  # written in place as one contiguous array
ARRAY = "array"  # read in place as one contiguous array (metadata: a CUDA graph replays its buffer)
HOST = "host"  # like ARRAY, but in host (CPU) memory whatever q's device
_WHY_CONTIGUOUS = {WRITTEN: "libgqa writes it in place", ARRAY: "libgqa reads it in place as one array",
                   HOST: "libgqa reads it on the host as one array"}

_GRAD_HINT = ("libgqa computes no gradient; call it under torch.no_grad() or torch.inference_mode(), "
              "or pass detached tensors")


def refuse_grad(named) -> None:
    """With grad mode on, no tensor of the call may require grad: libgqa has no backward, and
    the outputs it writes in place would silently drop out of the graph."""
    if torch.is_grad_enabled():
        for name, t in named:
            if isinstance(t, torch.Tensor) and t.requires_grad:
                raise InvalidArgumentError(f"{name} requires grad, but {_GRAD_HINT}")


def dense(name: str, t) -> None:
    """t is a dense tensor (not sparse, not nested)."""
    if t.layout != torch.strided:
        raise InvalidArgumentError(f"{name} is a {t.layout} tensor; libgqa takes dense (torch.strided) tensors")


def query(name: str, q, layout: str) -> None:
    """q (the tensor whose dtype and device the others follow) is a tensor of layout's rank,
    of a dtype libgqa takes, on a device it runs on."""
    if not isinstance(q, torch.Tensor):
        raise InvalidArgumentError(f"{name} is a {type(q).__name__}, expected a torch.Tensor")
    dense(name, q)
    if q.dim() != layout.count(",") + 1:
        raise InvalidArgumentError(f"{name} has shape {list(q.shape)}, expected {layout}")
    if q.dtype not in DTYPES:
        raise InvalidArgumentError(f"{name} has dtype {q.dtype}; libgqa takes float16, bfloat16 or float32")
    if q.device.type not in _DEVICE_TYPES:
        raise InvalidArgumentError(f"{name} is on {q.device}; libgqa runs on cpu and cuda tensors")


def tensor(name: str, t, shape: tuple, like, layout: str, rule: str, dtype=None, like_name: str = "q") -> None:
    """t is a tensor of `shape` (None: any extent) with like's device and like's dtype (or
    `dtype`), laid out as `rule` allows."""
    if not isinstance(t, torch.Tensor):
        raise InvalidArgumentError(f"{name} is a {type(t).__name__}, expected a torch.Tensor")
    dense(name, t)
    if t.dim() != len(shape) or any(e is not None and s != e for s, e in zip(t.shape, shape)):
        want = ", ".join("?" if e is None else str(e) for e in shape)
        raise InvalidArgumentError(f"{name} has shape {list(t.shape)}, expected [{want}] ({layout})")
    if dtype is None and t.dtype != like.dtype:
        raise InvalidArgumentError(f"{name} has dtype {t.dtype} but {like_name} has {like.dtype}; "
                                   "all tensors of a call must share one dtype")
    if dtype is not None and t.dtype != dtype:
        raise InvalidArgumentError(f"{name} has dtype {t.dtype}; it must be {dtype} ({layout})")
    if rule == HOST:
        if t.device.type not in ("cpu", "meta"):
            raise InvalidArgumentError(f"{name} is on {t.device}; libgqa reads it on the host: pass a CPU tensor")
    elif t.device != like.device:
        raise InvalidArgumentError(f"{name} is on {t.device} but {like_name} is on {like.device}; "
                                   "all tensors of a call must be on one device")
    if rule == STRIDED and not t.is_contiguous() and element_strides(tuple(t.shape), t.stride(), 1) is None:
        raise InvalidArgumentError(f"{name} must have a contiguous last axis (stride 1) and no broadcast axis "
                                   f"(stride 0): libgqa writes it in place (shape {list(t.shape)}, "
                                   f"strides {list(t.stride())})")
    if rule in _WHY_CONTIGUOUS and not t.is_contiguous():
        raise InvalidArgumentError(f"{name} must be contiguous: {_WHY_CONTIGUOUS[rule]} (shape {list(t.shape)}, "
                                   f"strides {list(t.stride())})")


def buffer(name: str, t, like) -> None:
    """Scratch libgqa writes (the CUDA workspace): a contiguous tensor of any dtype on like's device."""
    if t is not None:
        shape = (None,) * t.dim() if isinstance(t, torch.Tensor) else ()
        dtype = t.dtype if isinstance(t, torch.Tensor) else None
        tensor(name, t, shape, like, "scratch on q's device, any dtype", WRITTEN, dtype)


def optional(name: str, t, shape: tuple, like, layout: str, rule: str, dtype=None) -> None:
    if t is not None:
        tensor(name, t, shape, like, layout, rule, dtype)


_F32 = torch.float32
_SINKS = "sinks are float32 [num_q_heads], one logit per query head"
_CACHES = "caches are [batch, max_seq_len, num_kv_heads, head_dim]"


def _caches(k_cache, v_cache, q, B, Hkv, D) -> None:
    tensor("k_cache", k_cache, (B, None, Hkv, D), q, _CACHES, WRITTEN)
    tensor("v_cache", v_cache, (B, k_cache.shape[1], Hkv, D), q, _CACHES, WRITTEN)


def prefill(out, q, k, v, k_cache, v_cache, sinks, lse) -> None:
    """Raise the error that names what is wrong with these gqa::prefill tensors."""
    refuse_grad((("q", q), ("k", k), ("v", v), ("k_cache", k_cache), ("v_cache", v_cache), ("out", out),
                 ("sinks", sinks)))
    query("q", q, "[batch, seq_len, num_q_heads, head_dim]")
    B, S, Hq, D = q.shape
    layout = "k, v are [batch, seq_len, num_kv_heads, head_dim]"
    tensor("k", k, (B, S, None, D), q, layout, READ)
    Hkv = k.shape[2]
    tensor("v", v, (B, S, Hkv, D), q, layout, READ)
    tensor("out", out, (B, S, Hq, D), q, "out is like q", STRIDED)
    if (k_cache is None) != (v_cache is None):
        raise InvalidArgumentError("pass both k_cache and v_cache, or neither")
    if k_cache is not None:
        _caches(k_cache, v_cache, q, B, Hkv, D)
    optional("sinks", sinks, (Hq,), q, _SINKS, READ, _F32)
    optional("lse", lse, (B, Hq, S), q, "lse is float32 [batch, num_q_heads, seq_len]", WRITTEN, _F32)


def decode(out, q, k, v, k_cache, v_cache, cache_lens, workspace, sinks, lse) -> None:
    """Raise the error that names what is wrong with these gqa::decode tensors."""
    refuse_grad((("q", q), ("k", k), ("v", v), ("k_cache", k_cache), ("v_cache", v_cache), ("out", out),
                 ("sinks", sinks)))
    query("q", q, "[batch, 1, num_q_heads, head_dim]")
    B, one, Hq, D = q.shape
    if one != 1:
        raise InvalidArgumentError(f"q has shape {list(q.shape)}, expected [batch, 1, num_q_heads, head_dim]")
    layout = "k, v are [batch, 1, num_kv_heads, head_dim]"
    tensor("k", k, (B, 1, None, D), q, layout, READ)
    Hkv = k.shape[2]
    tensor("v", v, (B, 1, Hkv, D), q, layout, READ)
    tensor("out", out, (B, 1, Hq, D), q, "out is like q", STRIDED)
    _caches(k_cache, v_cache, q, B, Hkv, D)
    optional("cache_lens", cache_lens, (B,), q, "int32 [batch], one length per sequence", HOST, torch.int32)
    buffer("workspace", workspace, q)
    optional("sinks", sinks, (Hq,), q, _SINKS, READ, _F32)
    optional("lse", lse, (B, Hq), q, "lse is float32 [batch, num_q_heads]", WRITTEN, _F32)


def merge(out, states, lses, sinks, lse) -> None:
    """Raise the error that names what is wrong with these gqa::merge_states tensors."""
    refuse_grad((("states", states), ("lses", lses), ("out", out), ("sinks", sinks)))
    query("states", states, "[num_states, batch, seq_len, num_heads, head_dim]")
    N, B, S, H, D = states.shape
    decode_layout = S == 1 and isinstance(lses, torch.Tensor) and lses.dim() == 3
    per_state = (B, H) if decode_layout else (B, H, S)
    tensor("lses", lses, (N, *per_state), states, "lses are float32 [num_states, batch, num_heads, seq_len] "
           "(decode: [num_states, batch, num_heads])", READ, _F32, "states")
    tensor("out", out, (B, S, H, D), states, "out is [batch, seq_len, num_heads, head_dim]", WRITTEN,
           like_name="states")
    if sinks is not None:
        tensor("sinks", sinks, (H,), states, "sinks are float32 [num_heads]", READ, _F32, "states")
    if lse is not None:
        tensor("lse", lse, per_state, states, "lse is float32 like one state of lses", WRITTEN, _F32, "states")


def batch(out, q, k, v, k_cache, v_cache, q_indptr, kv_lens, page_table, sinks, lse, workspace, error_flags) -> None:
    """Raise the error that names what is wrong with these gqa::batch_attention tensors."""
    refuse_grad((("q", q), ("k", k), ("v", v), ("k_cache", k_cache), ("v_cache", v_cache), ("out", out),
                 ("sinks", sinks)))
    query("q", q, "[total_q, num_q_heads, head_dim]")
    total_q, Hq, D = q.shape
    layout = "k, v are [total_q, num_kv_heads, head_dim]"
    tensor("k", k, (total_q, None, D), q, layout, READ)
    Hkv = k.shape[1]
    tensor("v", v, (total_q, Hkv, D), q, layout, READ)
    tensor("out", out, (total_q, Hq, D), q, "out is like q", STRIDED)
    pool = "caches are [num_pages, page_size, num_kv_heads, head_dim]"
    tensor("k_cache", k_cache, (None, None, Hkv, D), q, pool, WRITTEN)
    tensor("v_cache", v_cache, tuple(k_cache.shape), q, pool, WRITTEN)
    metadata = "int32 metadata on the caches' device"
    i32 = torch.int32
    tensor("page_table", page_table, (None, None), q, f"[batch, max_pages_per_seq] {metadata}", ARRAY, i32)
    B = page_table.shape[0]
    tensor("q_indptr", q_indptr, (B + 1,), q, f"[batch + 1] {metadata}", ARRAY, i32)
    tensor("kv_lens", kv_lens, (B,), q, f"[batch] {metadata}", ARRAY, i32)
    optional("sinks", sinks, (Hq,), q, _SINKS, READ, _F32)
    optional("lse", lse, (Hq, total_q), q, "lse is float32 [num_q_heads, total_q]", WRITTEN, _F32)
    buffer("workspace", workspace, q)
    optional("error_flags", error_flags, (1,), q, "one int32 on q's device", WRITTEN, i32)
