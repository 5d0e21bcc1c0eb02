"""gqa.prefill and gqa.decode: shape checks with helpful messages, then one libgqa call.

The C library is the authority on validity (it checks everything again and writes nothing on
a rejected call); Python checks shapes first only to name the argument in its own words."""

from __future__ import annotations

import contextlib
import threading
from typing import Any, Sequence

import numpy as np

from . import _args, _configs, _logging, _variants
from ._arrays import (CUDA, DEVICE_CODES, DTYPE_CODES, NUMPY_DTYPES, Tensor, as_buffer, as_tensor, common_device_and_dtype,
                      empty_float32, empty_like)
from ._errors import InvalidArgumentError, error_for_status
from ._ffi import ffi, last_error, lib


_OK = lib.GQA_STATUS_OK


def _check_status(status: int) -> None:
    """After a C call: an interrupt raised by a log handler during it, else the call's error."""
    _logging.raise_pending()
    if status != _OK:
        raise error_for_status(int(status), last_error())


def _require_shape(t: Tensor, expected: Sequence[Any], layout: str) -> None:
    """expected: ints, or None for a free extent."""
    ok = len(t.shape) == len(expected) and all(e is None or s == e for s, e in zip(t.shape, expected))
    if not ok:
        want = ", ".join("?" if e is None else str(e) for e in expected)
        raise InvalidArgumentError(f"{t.name} has shape {t.shape}, expected [{want}] ({layout})")


def _stream_for(tensors: list[Tensor], stream: Any) -> int:
    if stream is not None:
        for attr in ("cuda_stream", "ptr"):  # torch.cuda.Stream, cupy.cuda.Stream
            if hasattr(stream, attr):
                return _args.address(f"stream.{attr}", getattr(stream, attr))
        return _args.address("stream", stream)
    for t in tensors:  # the producer's current stream
        if t.stream is not None:
            return int(t.stream)
    return 0


@contextlib.contextmanager
def _on_device(t: Tensor):
    """Make the tensors' device current for the call (libgqa uses the current device)."""
    if t.device == CUDA and type(t.obj).__module__.split(".")[0] == "torch":
        import torch

        with torch.cuda.device(t.device_id):
            yield
    else:
        yield


def _scale(scale: float | None) -> float:
    return 0.0 if scale is None else _args.float32("scale", scale)


def _usual_scale(scale) -> bool:
    """None or a float that _scale returns as it is."""
    return scale is None or (type(scale) is float and -_args.FLOAT32_MAX <= scale <= _args.FLOAT32_MAX)


# ---- the plain NumPy call: no variants, no stream, contiguous arrays of one dtype --------------
# It needs none of the adapters: the shapes and dtype are checked to fit together once per
# shape (a _Plain), then one expression checks each call's types, dtypes and shapes, and
# ffi.from_buffer checks that each array is C-contiguous (and writable where libgqa writes) as
# it takes its address. When any of that fails, the general path below runs and names what is
# wrong. The C library checks the values as always.
_ND = np.ndarray
_NO_WINDOW = (-1, -1)
_NO_SOFTCAP = 0.0
_CPU = lib.GQA_DEVICE_CPU
_INT32_MIN, _INT32_MAX, _FLOAT32_MAX = _args.INT32_MIN, _args.INT32_MAX, _args.FLOAT32_MAX
_buffer = ffi.from_buffer
_NULL = ffi.NULL
_UNSET = object()


class _Plain:
    """Shapes and a dtype of plain calls found to fit together (q's shape, k's, k_cache's or
    None; q's dtype), the config made for them, and the two scalars of a call last written into
    it (prefill: causal, scale; decode: scale, num_splits), compared by identity: a call with
    the same objects writes neither (~0.25 us). Each has its own config, so that record holds."""
    __slots__ = ("shape", "kv", "cache", "dtype", "cfg", "names", "first", "second")

    def __init__(self, op, shape, kv, cache, dtype, cfg):
        self.shape, self.kv, self.cache, self.dtype, self.cfg = shape, kv, cache, dtype, cfg
        self.names = ("causal", "scale") if op == "prefill" else ("scale", "num_splits")
        self.first = self.second = _UNSET


class _Seen(threading.local):
    """This thread's _Plain of its last plain prefill and decode, and all it made, by shapes."""
    prefill = decode = None

    def __init__(self):
        self.by_shapes = {}


_seen = _Seen()


def _plain_shapes(op, shape, kv, cache, dtype):
    """The _Plain of these shapes and dtype for a plain call of op ("prefill", "decode"): the one
    this thread made on their first call, or None when they do not fit together as a plain
    call's do (a wrong rank raises ValueError or TypeError)."""
    key = (op, shape, kv, cache, dtype)
    seen = _seen.by_shapes.get(key)
    if seen is None or seen.dtype is not dtype:  # an equal dtype is another object: made anew
        B, S, Hq, D = shape
        Hkv = kv[2]
        T = 0 if cache is None else cache[1]
        if not (dtype in NUMPY_DTYPES and kv == (B, S, Hkv, D) and (cache is None or cache == (B, T, Hkv, D))
                and (op == "prefill" or (S == 1 and cache is not None))):
            return None
        sizes = (B, S, Hq, Hkv, D, T) if op == "prefill" else (B, Hq, Hkv, D, T)
        if len(_seen.by_shapes) >= _configs.MAX_TEMPLATES:
            _seen.by_shapes.clear()
        cfg = _configs.config((op, NUMPY_DTYPES[dtype], _CPU, *sizes))
        seen = _seen.by_shapes[key] = _Plain(op, shape, kv, cache, dtype, cfg)
    return seen


def _plain_checked(op, q, k, v, k_cache, v_cache, out):
    """The _Plain of a plain call of op on these arrays (q a NumPy array; k_cache None: no
    caches; out None: one to be made), or None when it is not one: the shapes and dtype fit
    together (this thread's last such call's, compared as tuples: the usual case; else
    _plain_shapes), then each call's types, dtypes and shapes. Contiguity and writability are
    from_buffer's to check."""
    shape, kv, dtype = q.shape, k.shape, q.dtype
    cache = None if k_cache is None else k_cache.shape
    seen = _seen.decode if op == "decode" else _seen.prefill
    if seen is None or not (seen.shape == shape and seen.kv == kv and seen.cache == cache and seen.dtype is dtype):
        seen = _plain_shapes(op, shape, kv, cache, dtype)
        if seen is None:
            return None
        setattr(_seen, op, seen)
    if (type(k) is _ND and type(v) is _ND and k.dtype is dtype and v.dtype is dtype and v.shape == kv
            and (out is None or (type(out) is _ND and out.dtype is dtype and out.shape == shape))
            and ((cache is None and v_cache is None)
                 or (type(k_cache) is _ND and type(v_cache) is _ND and k_cache.dtype is dtype
                     and v_cache.dtype is dtype and v_cache.shape == cache))):
        return seen
    return None


def _no_variants(window, softcap, sinks, return_lse) -> bool:
    """No variant option asked for (the defaults, or the same values given explicitly)."""
    return ((window is _NO_WINDOW or (type(window) is tuple and window == _NO_WINDOW))
            and (softcap is _NO_SOFTCAP or (type(softcap) is float and softcap == 0.0))
            and sinks is None and return_lse is False)


def _run(c_function, arrays, seen, first, second):
    """The plain call into libgqa with seen's config, its two scalars (see _Plain) set to first
    and second (_check_status only when there is something to raise)."""
    cfg = seen.cfg
    if first is not seen.first or second is not seen.second:
        setattr(cfg, seen.names[0], first)
        setattr(cfg, seen.names[1], second)
        seen.first, seen.second = first, second
    _logging.sync_level()
    status = c_function(*arrays, cfg, _NULL)
    if status != _OK or _logging.pending.exc is not None:
        _check_status(status)


def _plain_prefill(q, k, v, k_cache, v_cache, start_pos, causal, scale, out):
    """prefill on plain NumPy arrays, or None when this is not such a call."""
    try:
        seen = _plain_checked("prefill", q, k, v, k_cache, v_cache, out)
        if seen is None:
            return None
        if out is None:  # made once the shapes are known to fit
            out = np.empty(seen.shape, seen.dtype)
        if k_cache is None:
            caches = (_NULL, _NULL)
        else:
            caches = (_buffer(k_cache, require_writable=True), _buffer(v_cache, require_writable=True))
        arrays = (_buffer(out, require_writable=True), _buffer(q), _buffer(k), _buffer(v), *caches)
    except (AttributeError, ValueError, IndexError, TypeError):
        return None
    seen.cfg.start_pos = start_pos
    _run(lib.gqa_attention_prefill, arrays, seen, causal, scale)
    return out


def _plain_decode(q, k, v, k_cache, v_cache, cache_len, scale, num_splits, out):
    """decode on plain NumPy arrays with one cache_len (an int), or None when this is not such a call."""
    try:
        seen = _plain_checked("decode", q, k, v, k_cache, v_cache, out)
        if seen is None:
            return None
        if out is None:  # made once the shapes are known to fit
            out = np.empty(seen.shape, seen.dtype)
        arrays = (_buffer(out, require_writable=True), _buffer(q), _buffer(k), _buffer(v),
                  _buffer(k_cache, require_writable=True), _buffer(v_cache, require_writable=True))
    except (AttributeError, ValueError, IndexError, TypeError):
        return None
    seen.cfg.cache_len = cache_len
    _run(lib.gqa_attention_decode, arrays, seen, scale, num_splits)
    return out


def prefill(q, k, v, k_cache=None, v_cache=None, *, start_pos: int = 0, causal: bool = True,
            scale: float | None = None, window=_NO_WINDOW, softcap: float = _NO_SOFTCAP, sinks=None,
            return_lse: bool = False, out=None, stream=None):
    """Causal (or not) attention of seq_len new tokens per sequence, writing their K/V into the
    caches at [start_pos, start_pos + seq_len) when caches are given.

    q [B, S, Hq, D], k/v [B, S, Hkv, D], caches [B, max_seq_len, Hkv, D]; returns out [B, S, Hq, D]
    (with return_lse: (out, lse [B, Hq, S])).
    Variants (gqa.h): ``window=(left, right)`` keys i-left..i+right (-1: unbounded); ``softcap``
    c > 0: logits become c*tanh(s/c); ``sinks`` float32 [Hq] logits in the denominator only;
    ``return_lse`` also returns each row's log-sum-exp (float32, sinks included). Views of q, k,
    v, out whose head_dim axis is contiguous (fused QKV, BHSD) are used in place.
    ``start_pos`` is an int (or NumPy integer), never a float, not even 2.0; ``causal`` a bool.
    """
    # The usual call first: default options, scalars that the checks below would return as they are.
    usual = (type(q) is _ND and stream is None and window is _NO_WINDOW and softcap is _NO_SOFTCAP
             and sinks is None and return_lse is False and type(start_pos) is int
             and _INT32_MIN <= start_pos <= _INT32_MAX and (causal is True or causal is False) and _usual_scale(scale))
    if usual:
        done = _plain_prefill(q, k, v, k_cache, v_cache, start_pos, causal, 0.0 if scale is None else scale, out)
        if done is not None:
            return done
    start_pos, causal, c_scale = _args.int32("start_pos", start_pos), _args.flag("causal", causal), _scale(scale)
    if not usual and type(q) is _ND and stream is None and _no_variants(window, softcap, sinks, return_lse):
        done = _plain_prefill(q, k, v, k_cache, v_cache, start_pos, causal, c_scale, out)
        if done is not None:
            return done
    return_lse = _args.flag("return_lse", return_lse)
    tq, tk, tv = (as_tensor(name, x, strided=True) for name, x in (("q", q), ("k", k), ("v", v)))
    _require_shape(tq, [None, None, None, None], "q is [batch, seq_len, num_q_heads, head_dim]")
    B, S, Hq, D = tq.shape
    _require_shape(tk, [B, S, None, D], "k is [batch, seq_len, num_kv_heads, head_dim]")
    Hkv = tk.shape[2]
    _require_shape(tv, [B, S, Hkv, D], "v is like k")
    if (k_cache is None) != (v_cache is None):
        raise InvalidArgumentError("pass both k_cache and v_cache, or neither")
    tensors = [tq, tk, tv]
    max_seq_len = 0
    if k_cache is not None:
        tkc, tvc = as_tensor("k_cache", k_cache, writable=True), as_tensor("v_cache", v_cache, writable=True)
        _require_shape(tkc, [B, None, Hkv, D], "k_cache is [batch, max_seq_len, num_kv_heads, head_dim]")
        max_seq_len = tkc.shape[1]
        _require_shape(tvc, [B, max_seq_len, Hkv, D], "v_cache is like k_cache")
        tensors += [tkc, tvc]
    if out is None:
        out = empty_like(tq)
    tout = as_tensor("out", out, writable=True, strided=True)
    _require_shape(tout, [B, S, Hq, D], "out is like q")
    tensors.append(tout)
    device, dtype = common_device_and_dtype(tensors)

    cfg = _configs.config(("prefill", dtype, device, B, S, Hq, Hkv, D, max_seq_len))
    cfg.start_pos, cfg.causal, cfg.scale = start_pos, causal, c_scale
    keepalive: list = []
    lse = _variants.apply(cfg, tq, window=window, softcap=softcap, sinks=sinks, return_lse=return_lse,
                          num_q_heads=Hq, lse_shape=(B, Hq, S), keepalive=keepalive)
    _variants.set_strides(cfg, {"q": tq, "k": tk, "v": tv, "out": tout}, decode=False)
    kc = ffi.cast("void*", tensors[3].address) if k_cache is not None else ffi.NULL
    vc = ffi.cast("void*", tensors[4].address) if k_cache is not None else ffi.NULL
    _logging.sync_level()
    with _on_device(tq):
        status = lib.gqa_attention_prefill(
            ffi.cast("void*", tout.address), ffi.cast("void*", tq.address), ffi.cast("void*", tk.address),
            ffi.cast("void*", tv.address), kc, vc, cfg, ffi.cast("void*", _stream_for(tensors, stream)))
    del keepalive
    _check_status(status)
    return (out, lse) if return_lse else out


def decode(q, k, v, k_cache, v_cache, cache_len, *, scale: float | None = None, window=_NO_WINDOW,
           softcap: float = _NO_SOFTCAP, sinks=None, return_lse: bool = False, out=None, num_splits: int = 0,
           stream=None, workspace=None):
    """One new token per sequence: append k/v at cache_len (an int, or one per sequence) and
    attend over cache positions 0..cache_len.

    q [B, 1, Hq, D], k/v [B, 1, Hkv, D], caches [B, max_seq_len, Hkv, D]; returns out [B, 1, Hq, D]
    (with return_lse: (out, lse [B, Hq])).
    ``workspace`` (CUDA only) enables split-KV: a device buffer of at least
    ``decode_workspace_size(...)`` bytes, given as the buffer itself (any dtype, e.g. a uint8
    torch or CuPy array) or as an (address, nbytes) pair. ``cache_len`` and ``num_splits`` are ints (or NumPy
    integers; a sequence or array of them for per-sequence lengths), never floats, not even 3.0.
    """
    usual = (type(q) is _ND and stream is None and workspace is None and window is _NO_WINDOW  # as in prefill
             and softcap is _NO_SOFTCAP and sinks is None and return_lse is False and type(cache_len) is int
             and _INT32_MIN <= cache_len <= _INT32_MAX and type(num_splits) is int
             and _INT32_MIN <= num_splits <= _INT32_MAX and _usual_scale(scale))
    if usual:
        done = _plain_decode(q, k, v, k_cache, v_cache, cache_len, 0.0 if scale is None else scale, num_splits, out)
        if done is not None:
            return done
    c_scale, num_splits = _scale(scale), _args.int32("num_splits", num_splits)
    if (not usual and type(q) is _ND and type(cache_len) is int and stream is None and workspace is None
            and _no_variants(window, softcap, sinks, return_lse)):
        done = _plain_decode(q, k, v, k_cache, v_cache, _args.int32("cache_len", cache_len), c_scale, num_splits, out)
        if done is not None:
            return done
    return_lse = _args.flag("return_lse", return_lse)
    tq, tk, tv = (as_tensor(name, x, strided=True) for name, x in (("q", q), ("k", k), ("v", v)))
    _require_shape(tq, [None, 1, None, None], "q is [batch, 1, num_q_heads, head_dim]")
    B, _, Hq, D = tq.shape
    _require_shape(tk, [B, 1, None, D], "k is [batch, 1, num_kv_heads, head_dim]")
    Hkv = tk.shape[2]
    _require_shape(tv, [B, 1, Hkv, D], "v is like k")
    tkc, tvc = as_tensor("k_cache", k_cache, writable=True), as_tensor("v_cache", v_cache, writable=True)
    _require_shape(tkc, [B, None, Hkv, D], "k_cache is [batch, max_seq_len, num_kv_heads, head_dim]")
    max_seq_len = tkc.shape[1]
    _require_shape(tvc, [B, max_seq_len, Hkv, D], "v_cache is like k_cache")
    if out is None:
        out = empty_like(tq)
    tout = as_tensor("out", out, writable=True, strided=True)
    _require_shape(tout, [B, 1, Hq, D], "out is like q")
    tensors = [tq, tk, tv, tkc, tvc, tout]
    device, dtype = common_device_and_dtype(tensors)

    cfg = _configs.config(("decode", dtype, device, B, Hq, Hkv, D, max_seq_len))
    cfg.scale, cfg.num_splits = c_scale, num_splits
    keepalive: list = []
    lse = _variants.apply(cfg, tq, window=window, softcap=softcap, sinks=sinks, return_lse=return_lse,
                          num_q_heads=Hq, lse_shape=(B, Hq), keepalive=keepalive)
    _variants.set_strides(cfg, {"q": tq, "k": tk, "v": tv, "out": tout}, decode=True)
    lens_keepalive = None
    if np.ndim(cache_len) == 0:
        cfg.cache_len = _args.int32("cache_len", cache_len)
    else:
        lens = _args.int32_array("cache_len", cache_len, B)  # host memory, always
        lens_keepalive = lens
        cfg.cache_lens = ffi.cast("const int32_t*", lens.ctypes.data)
    ws = as_buffer("workspace", workspace) if workspace is not None else None  # alive until the call returns
    if ws is not None:
        cfg.workspace, cfg.workspace_bytes = ffi.cast("void*", ws.address), ws.nbytes
    _logging.sync_level()
    with _on_device(tq):
        status = lib.gqa_attention_decode(
            ffi.cast("void*", tout.address), ffi.cast("void*", tq.address), ffi.cast("void*", tk.address),
            ffi.cast("void*", tv.address), ffi.cast("void*", tkc.address), ffi.cast("void*", tvc.address),
            cfg, ffi.cast("void*", _stream_for(tensors, stream)))
    del lens_keepalive, keepalive
    _check_status(status)
    return (out, lse) if return_lse else out


def merge_states(states, lses, *, sinks=None, out=None, return_lse: bool = False):
    """Merge N partial attentions of the same queries over disjoint key sets (each computed with
    return_lse=True, without sinks) into the attention over the union of the key sets.

    states [N, B, S, H, D] with lses float32 [N, B, H, S] (prefill results), or decode results
    [N, B, 1, H, D] with lses [N, B, H]; sinks float32 [H] are added here once. Returns out
    [B, S, H, D] (with return_lse: (out, lse) in the layout of one of lses). A partial whose lse
    is -inf (it saw no key) weighs exactly 0; the sum runs in partial order (deterministic).
    """
    ts, tl = as_tensor("states", states), as_tensor("lses", lses)
    _require_shape(ts, [None, None, None, None, None], "states is [num_states, batch, seq_len, num_heads, head_dim]")
    N, B, S, H, D = ts.shape
    lse_shape = (B, H) if len(tl.shape) == 3 and S == 1 else (B, H, S)
    _require_shape(tl, [N, *lse_shape], "lses is [num_states, batch, num_heads, seq_len] (decode: no seq_len)")
    if tl.dtype != lib.GQA_DTYPE_F32:
        raise InvalidArgumentError("lses must be float32")
    if out is None:
        out = _empty_shaped(ts, (B, S, H, D))
    tout = as_tensor("out", out, writable=True)
    _require_shape(tout, [B, S, H, D], "out is [batch, seq_len, num_heads, head_dim]")
    device, dtype = common_device_and_dtype([ts, tout])
    if tl.device != device:
        raise InvalidArgumentError("lses must be on the device of states")
    cfg = _configs.config(("merge", dtype, device, N, B, S, H, D))
    keepalive: list = []
    if sinks is not None:
        t = _variants.float32_input("sinks", sinks, (H,), ts)
        keepalive.append(t)
        cfg.sinks = ffi.cast("const float*", t.address)
    lse = empty_float32(ts, lse_shape) if return_lse else None
    tlse = as_tensor("lse", lse, writable=True) if return_lse else None
    _logging.sync_level()
    with _on_device(ts):
        status = lib.gqa_merge_states(ffi.cast("void*", tout.address),
                                      ffi.cast("float*", tlse.address) if tlse else ffi.NULL,
                                      ffi.cast("void*", ts.address), ffi.cast("const float*", tl.address), cfg,
                                      ffi.cast("void*", _stream_for([ts, tl, tout], None)))
    del keepalive
    _check_status(status)
    return (out, lse) if return_lse else out


def _empty_shaped(t: Tensor, shape: tuple):
    """A new array of t's library, device and dtype with another shape."""
    obj = t.obj
    if isinstance(obj, np.ndarray):
        return np.empty(shape, obj.dtype)
    import torch

    return torch.empty(shape, dtype=obj.dtype, device=obj.device)


def decode_workspace_size(batch_size: int, num_q_heads: int, num_kv_heads: int, head_dim: int,
                          max_seq_len: int, dtype: str = "float16", device: str = "cuda", *,
                          num_splits: int = 0) -> int:
    """Bytes of CUDA workspace that lets decode split long caches (0 on the CPU), for the
    num_splits decode will be given (0: the automatic choice)."""
    cfg = _configs.new_config("decode")
    cfg.dtype = _args.choice("dtype", dtype, DTYPE_CODES)
    cfg.device = _args.choice("device", device, DEVICE_CODES)
    sizes = dict(batch_size=batch_size, num_q_heads=num_q_heads, num_kv_heads=num_kv_heads, head_dim=head_dim,
                 max_seq_len=max_seq_len, num_splits=num_splits)
    for name, value in sizes.items():
        setattr(cfg, name, _args.int32(name, value))
    size = ffi.new("uint64_t*")
    _check_status(lib.gqa_decode_workspace_size(cfg, size))
    return int(size[0])


def version() -> str:
    return ffi.string(lib.gqa_version_string()).decode()


def cuda_available() -> bool:
    """True when this libgqa has its CUDA backend and a usable device."""
    available = lib.gqa_cuda_available() == lib.GQA_STATUS_OK
    _logging.raise_pending()
    return available


def cuda_unavailable_reason() -> str:
    return "" if cuda_available() else last_error()


def built_with_cuda() -> bool:
    return bool(lib.gqa_built_with_cuda())


def set_num_threads(n: int) -> None:
    """CPU threads (0: GQA_NUM_THREADS, else the usable cores); an int, not a float."""
    _check_status(lib.gqa_set_num_threads(_args.int32("num_threads", n)))


def get_num_threads() -> int:
    return int(lib.gqa_get_num_threads())


# The names GQA_LOG_LEVEL accepts too (src/log.cpp).
_LEVELS = {"debug": lib.GQA_LOG_DEBUG, "info": lib.GQA_LOG_INFO, "warning": lib.GQA_LOG_WARNING,
           "warn": lib.GQA_LOG_WARNING, "error": lib.GQA_LOG_ERROR, "off": lib.GQA_LOG_OFF, "none": lib.GQA_LOG_OFF}


def set_log_level(level) -> None:
    """The level of logging.getLogger("gqa"), which C's messages reach and whose level C
    follows: a name (DEBUG, INFO, WARNING, ERROR, OFF; any case) or an int 0..100."""
    value = _args.choice("level", level, _LEVELS) if isinstance(level, str) else _args.int32("level", level)
    if not 0 <= value <= lib.GQA_LOG_OFF:
        raise InvalidArgumentError(f"level ({value}) must be between 0 and {lib.GQA_LOG_OFF} (OFF)")
    _logging.set_logger_level(value)
