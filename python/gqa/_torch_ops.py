"""The torch.library operators behind gqa.torch: gqa::prefill, gqa::decode, gqa::merge_states
and gqa::batch_attention.

Each schema marks every tensor the operator writes as ``Tensor(a!)`` (outputs are arguments,
so the operators return nothing), which is what ``torch.library.custom_op(mutates_args=...)``
generates; each has a fake kernel (the checks of ``_torch_checks``, shapes only) for meta and
fake tensors, ``torch.compile`` and ``torch.export``; and one kernel for CPU and CUDA tensors
that hands their ``data_ptr()`` to libgqa through cffi (no NumPy, no copy), on the current
CUDA stream of the tensors' device. The kernels bump the version counter of what they write,
as torch's own in-place operators do, so autograd notices a cache it saved being overwritten.

``Library.define`` rather than ``torch.library.custom_op``: custom_op's Python autograd and
in-place wrappers cost 47 us per call in eager mode against 4 us for the plain definition
(torch 2.13, no-op kernel, this project's 2-core machine); the schema is the same.
"""

from __future__ import annotations

import threading

import torch

from . import _args, _configs, _logging
from . import _torch_checks as checks
from ._api import _check_status
from ._arrays import element_strides, torch_dtypes
from ._ffi import ffi, lib

DTYPES = torch_dtypes()
_CPU, _CUDA = lib.GQA_DEVICE_CPU, lib.GQA_DEVICE_CUDA
_Tensor = torch.Tensor
_grad_enabled = torch.is_grad_enabled
_empty_like = torch.empty_like
_bump_versions = torch._C._increment_version  # takes a tuple of tensors
_INT32_MIN, _INT32_MAX, _FLOAT32_MAX = _args.INT32_MIN, _args.INT32_MAX, _args.FLOAT32_MAX
_OK, _sync_level, _pending = lib.GQA_STATUS_OK, _logging.sync_level, _logging.pending

_LIB = torch.library.Library("gqa", "DEF")


def _define(name: str, schema: str, kernel, fake) -> None:
    _LIB.define(name + schema)
    for key in ("CPU", "CUDA"):
        _LIB.impl(name, kernel, key)
    torch.library.register_fake(f"gqa::{name}", fake, lib=_LIB)


# ---- what every kernel shares -----------------------------------------------------------------

def _on_one_cuda_device(q, tensors) -> bool:
    index = q.get_device()
    return q.is_cuda and all(t is None or (t.is_cuda and t.get_device() == index) for t in tensors)


def _device(t) -> int:
    return _CPU if t.is_cpu else _CUDA  # the checks saw that t is on the CPU or a CUDA device


def _call(c_function, on, args: tuple) -> None:
    """Run a libgqa entry point (args: all but the stream) on the device of tensor `on` (CUDA:
    its current stream, under that device), then raise the call's error, if any."""
    _logging.sync_level()
    if on.is_cpu:
        status = c_function(*args, 0)
    else:
        index = on.get_device()
        stream = torch._C._cuda_getCurrentRawStream(index)
        if index == torch.cuda.current_device():
            status = c_function(*args, stream)
        else:
            with torch.cuda.device(index):
                status = c_function(*args, stream)
    _check_status(status)


def _variants(cfg, window_left, window_right, softcap, sinks, lse):
    """Set the variant fields (window, softcap, sinks, lse); returns what cfg points into."""
    cfg.window_left, cfg.window_right = _args.int32("window_left", window_left), _args.int32("window_right", window_right)
    cfg.softcap = _args.float32("softcap", softcap)
    if sinks is not None:
        sinks = sinks.contiguous()
        cfg.sinks = ffi.cast("const float*", sinks.data_ptr())
    if lse is not None:
        cfg.lse = ffi.cast("float*", lse.data_ptr())
    return sinks


_STRIDE_FIELDS = ("batch", "token", "head")


def _strided(cfg, q, k, v, out):
    """q, k, v as libgqa reads them: a view it reads (or, for out, writes) in place gets its
    element strides in cfg; an input view it cannot read in place (a strided last axis, a
    broadcast axis) is replaced by a contiguous copy (the checks refused such an out)."""
    inputs = []
    for name, t in (("q", q), ("k", k), ("v", v), ("out", out)):
        if not t.is_contiguous():
            strides = element_strides(tuple(t.shape), t.stride(), 1)
            if strides is None:
                t = t.contiguous()
            else:
                field = getattr(cfg, f"{name}_strides")
                for axis, stride in zip(_STRIDE_FIELDS[-(t.dim() - 1):], strides):
                    setattr(field, axis, stride)
        inputs.append(t)
    return inputs[:3]


def _int32(name: str, value):
    """A schema int in C's int32 range (a symbolic one, under tracing, is C's to check)."""
    return value if isinstance(value, torch.SymInt) else _args.int32(name, value)


def _float32(name: str, value):
    return value if isinstance(value, torch.SymFloat) else _args.float32(name, value)


def _scalars(**named) -> None:
    """The fake kernels' check of the scalars the real kernels check."""
    for name, value in named.items():
        (_float32 if isinstance(value, (float, torch.SymFloat)) else _int32)(name, value)


# ---- the plain calls: contiguous CPU or CUDA tensors, no variant option -----------------------------
# gqa.torch's eager route calls these first, and so do the operators' kernels. Each checks what a
# call needs in as few Python steps as it can (the per-call overhead budget, issue 17): what does
# not change between calls of one shape once per key (this thread's config for the key, made by
# _plain_config, stands for the shapes' relations and the scalars it holds), then per call each
# tensor's shape, dtype, device, contiguity and requires_grad, in one expression. It returns
# False, having written nothing, when the call is not plain: then the general kernel below runs,
# and its checks name what is wrong or handle what is not plain (strides, variants).
# The callers have seen that the scalars are ints, bools and floats (the schema's types, or
# gqa.torch's own checks); their ranges are checked here.

_configs_here = _configs.per_thread
_prefill_c, _decode_c = _configs.prefill_c, _configs.decode_c  # .configs: this thread's plain configs, by the keys below
_PREFILL, _DECODE = "prefill", "decode"


def _plain_config(key):
    """This thread's config for a plain call of key = (op, q's shape, k's, k_cache's or None,
    dtype, on the CPU, then the two scalars a config holds for its key: prefill (causal, scale),
    decode (scale, num_splits)), made on the key's first call. None when the shapes do not fit
    together or a scalar is out of range (the general path then says why)."""
    op, shape, kv, cache, dtype, on_cpu, first, second = key
    if dtype not in DTYPES or len(shape) != 4 or len(kv) != 4:
        return None
    B, S, Hq, D = shape
    Hkv = kv[2]
    T = 0 if cache is None else cache[1]
    scale = second if op is _PREFILL else first
    if (kv != (B, S, Hkv, D) or (cache is not None and cache != (B, T, Hkv, D))
            or not -_FLOAT32_MAX <= scale <= _FLOAT32_MAX
            or (op is _DECODE and (S != 1 or not _INT32_MIN <= second <= _INT32_MAX))):
        return None
    sizes = (B, S, Hq, Hkv, D, T) if op is _PREFILL else (B, Hq, Hkv, D, T)
    cfg = _configs.plain(key, (op, DTYPES[dtype], _CPU if on_cpu else _CUDA, *sizes))
    if op is _PREFILL:
        cfg.causal, cfg.scale = first, scale
    else:
        cfg.scale, cfg.num_splits = scale, second
    return cfg


# ---- repeat calls ---------------------------------------------------------------------------------
# A plain call like this thread's previous one of the same operation on the same route (same
# config: shapes, dtype, device, scalars; tensors of the same type, dispatch keys, dtype, device,
# sizes, strides, requires_grad all False, no tensor twice) needs none of the per-tensor checks:
# torch's C++ tensor guard (the check a compiled graph runs on its inputs) tests all that in one
# call, ~0.9 us for six tensors against ~3.5 us to read the same metadata tensor by tensor
# (2-core EPYC, torch 2.13). The TLS dispatch keys are part of it, so a call under
# inference_mode or autocast misses it and is checked in full (tracers and modes never reach a
# kernel with real tensors; gqa.torch sends their calls to the dispatcher). A guard costs ~15 us
# to make: one is made on the second call in a row with one config that no guard passed, so
# calls of ever-changing shapes never pay for one. The two routes, gqa.torch's eager one
# (eager=True) and the operators' kernels (run by the dispatcher, or by gqa.torch when the eager
# plain call does not take its arguments), remember their calls apart: a kernel runs under other
# TLS dispatch keys than its caller, so one guard would miss every call of the other route.

try:
    from torch._C._dynamo.guards import TensorGuards as _TensorGuards, _empty_strided_cpu
except ImportError:  # another torch: every call is checked in full
    _TensorGuards = _empty_strided_cpu = None


def _guard(tensors):
    return _TensorGuards(*tensors, dynamic_dims_sizes=None, dynamic_dims_strides=None)  # None: every size static


def _guards_work() -> bool:
    """This torch's guard passes tensors like its own and no other (its signature is private)."""
    try:
        a = torch.zeros(2, 3)
        guard = _guard((a,))
        return (guard.check(torch.ones(2, 3)) and not guard.check(torch.zeros(3, 2))
                and not guard.check(a.t().contiguous().t()) and not guard.check(a.double()))
    except Exception:  # noqa: BLE001 - any failure: no guards
        return False


if _TensorGuards is not None and not _guards_work():
    _TensorGuards = None


class _Repeat:
    """A config a route has run, with its scalars (the rest of its key) and, once made,
    its guards: of the inputs (q, k, v[, caches]) for a call that allocates out, and of out and
    the inputs for one that gives it (out like q); empty: the arguments that allocate out on the
    CPU. A guard also refuses a tensor passed twice (out=q, k is v: checked in full)."""
    __slots__ = ("cfg", "first", "second", "guard", "guard_out", "missed", "on_cpu", "empty")

    def __init__(self, cfg, first, second, on_cpu):
        self.cfg, self.first, self.second, self.on_cpu = cfg, first, second, on_cpu
        self.guard = self.guard_out = self.empty = None
        self.missed = True


class _Last(threading.local):
    prefill = prefill_without_caches = decode = None  # this thread's _Repeat of each call on one route


_last, _last_kernel = _Last(), _Last()  # gqa.torch's eager route, the kernels


def _remember(last, cfg, first, second, on_cpu, inputs):
    """After a plain call with config cfg (inputs: q, k, v[, caches]) that no guard of last (the
    route's) passed: what the route remembers now (last, with guards made on its second such call)."""
    if last is None or last.cfg is not cfg:
        return _Repeat(cfg, first, second, on_cpu)
    q = inputs[0]
    if last.missed and _TensorGuards is not None and not any(t.requires_grad for t in inputs):
        last.guard, last.guard_out = _guard(inputs), _guard((q, *inputs))
        last.missed = False
        if on_cpu and _empty_strided_cpu is not None:
            last.empty = (tuple(q.shape), q.stride(), q.dtype)
    else:
        last.missed = True
    return last


def plain_prefill(out, q, k, v, k_cache, v_cache, start_pos: int, causal: bool, scale: float, eager: bool = False):
    """The plain prefill; returns out (a new one when out is None), or None if it is not plain."""
    route = _last if eager else _last_kernel
    last = route.prefill if k_cache is not None else route.prefill_without_caches
    if (last is not None and last.guard is not None and last.first == causal and last.second == scale
            and (v_cache is None and (last.guard.check(q, k, v) if out is None else last.guard_out.check(out, q, k, v))
                 if k_cache is None else last.guard.check(q, k, v, k_cache, v_cache) if out is None
                 else last.guard_out.check(out, q, k, v, k_cache, v_cache))
            and _INT32_MIN <= start_pos <= _INT32_MAX):
        cfg, on_cpu, repeat = last.cfg, last.on_cpu, last
        last.missed = False
    else:
        if eager and not (type(q) is _Tensor and type(k) is _Tensor and type(v) is _Tensor
                          and (k_cache is None or type(k_cache) is _Tensor)
                          and (v_cache is None or type(v_cache) is _Tensor) and (out is None or type(out) is _Tensor)):
            return None  # not plain tensors (the guard refuses them too)
        shape, kv, dtype, on_cpu, grad = q.shape, k.shape, q.dtype, q.is_cpu, _grad_enabled()
        cache = None if k_cache is None else k_cache.shape
        key = (_PREFILL, shape, kv, cache, dtype, on_cpu, causal, scale)
        cfg = _configs_here.configs.get(key) or ((on_cpu or q.is_cuda) and _plain_config(key) or None)
        if not (cfg is not None and v.shape == kv and k.dtype is dtype and v.dtype is dtype
                and q.is_contiguous() and k.is_contiguous() and v.is_contiguous()
                and (on_cpu and k.is_cpu and v.is_cpu or _on_one_cuda_device(q, (out, k, v, k_cache, v_cache)))
                and (out is None or out.shape == shape and out.dtype is dtype and out.is_contiguous()
                     and (not on_cpu or out.is_cpu) and not (grad and out.requires_grad))
                and not (grad and (q.requires_grad or k.requires_grad or v.requires_grad))
                and (v_cache is None if cache is None else
                     v_cache is not None and v_cache.shape == cache and k_cache.dtype is dtype and v_cache.dtype is dtype
                     and k_cache.is_contiguous() and v_cache.is_contiguous()
                     and (not on_cpu or k_cache.is_cpu and v_cache.is_cpu)
                     and not (grad and (k_cache.requires_grad or v_cache.requires_grad)))
                and _INT32_MIN <= start_pos <= _INT32_MAX):
            return None
        repeat = None
        if cache is None:
            route.prefill_without_caches = _remember(last, cfg, causal, scale, on_cpu, (q, k, v))
        else:
            route.prefill = _remember(last, cfg, causal, scale, on_cpu, (q, k, v, k_cache, v_cache))
    # A new out (like the contiguous q: so contiguous too) comes from the CPU allocator directly on
    # a repeat call (~0.7 us against ~1.7 for torch.empty_like, which goes through the dispatcher
    # twice). It has no version anyone holds: not bumped, as torch's own ops leave theirs at 0.
    if out is None:
        out = _empty_like(q) if repeat is None or repeat.empty is None else _empty_strided_cpu(*repeat.empty)
        written = () if k_cache is None else (k_cache, v_cache)
    else:
        written = (out,) if k_cache is None else (out, k_cache, v_cache)
    cfg.start_pos = start_pos
    args = (out.data_ptr(), q.data_ptr(), k.data_ptr(), v.data_ptr(),
            *((0, 0) if k_cache is None else (k_cache.data_ptr(), v_cache.data_ptr())), cfg)
    if on_cpu:  # _call's CPU case, inline (the overhead budget)
        _sync_level()
        status = _prefill_c(*args, 0)
        if status != _OK or _pending.exc is not None:
            _check_status(status)
    else:
        _call(_prefill_c, q, args)
    if written:
        _bump_versions(written)
    return out


def plain_decode(out, q, k, v, k_cache, v_cache, cache_len: int, scale: float, num_splits: int, eager: bool = False):
    """The plain decode; returns out (a new one when out is None), or None if it is not plain."""
    route = _last if eager else _last_kernel
    last = route.decode
    if (last is not None and last.guard is not None and last.first == scale and last.second == num_splits
            and (last.guard.check(q, k, v, k_cache, v_cache) if out is None
                 else last.guard_out.check(out, q, k, v, k_cache, v_cache))
            and _INT32_MIN <= cache_len <= _INT32_MAX):
        cfg, on_cpu, repeat = last.cfg, last.on_cpu, last
        last.missed = False
    else:
        if eager and not (type(q) is _Tensor and type(k) is _Tensor and type(v) is _Tensor and type(k_cache) is _Tensor
                          and type(v_cache) is _Tensor and (out is None or type(out) is _Tensor)):
            return None  # not plain tensors (the guard refuses them too)
        shape, kv, cache, dtype, on_cpu, grad = q.shape, k.shape, k_cache.shape, q.dtype, q.is_cpu, _grad_enabled()
        key = (_DECODE, shape, kv, cache, dtype, on_cpu, scale, num_splits)
        cfg = _configs_here.configs.get(key) or ((on_cpu or q.is_cuda) and _plain_config(key) or None)
        if not (cfg is not None and v.shape == kv and v_cache.shape == cache
                and k.dtype is dtype and v.dtype is dtype and k_cache.dtype is dtype and v_cache.dtype is dtype
                and q.is_contiguous() and k.is_contiguous() and v.is_contiguous()
                and k_cache.is_contiguous() and v_cache.is_contiguous()
                and (on_cpu and k.is_cpu and v.is_cpu and k_cache.is_cpu and v_cache.is_cpu
                     or _on_one_cuda_device(q, (out, k, v, k_cache, v_cache)))
                and (out is None or out.shape == shape and out.dtype is dtype and out.is_contiguous()
                     and (not on_cpu or out.is_cpu) and not (grad and out.requires_grad))
                and not (grad and (q.requires_grad or k.requires_grad or v.requires_grad
                                   or k_cache.requires_grad or v_cache.requires_grad))
                and _INT32_MIN <= cache_len <= _INT32_MAX):
            return None
        repeat = None
        route.decode = _remember(last, cfg, scale, num_splits, on_cpu, (q, k, v, k_cache, v_cache))
    if out is None:  # as in plain_prefill
        out = _empty_like(q) if repeat is None or repeat.empty is None else _empty_strided_cpu(*repeat.empty)
        written = (k_cache, v_cache)
    else:
        written = (out, k_cache, v_cache)
    cfg.cache_len = cache_len
    args = (out.data_ptr(), q.data_ptr(), k.data_ptr(), v.data_ptr(), k_cache.data_ptr(), v_cache.data_ptr(), cfg)
    if on_cpu:  # as in plain_prefill
        _sync_level()
        status = _decode_c(*args, 0)
        if status != _OK or _pending.exc is not None:
            _check_status(status)
    else:
        _call(_decode_c, q, args)
    _bump_versions(written)
    return out


# ---- gqa::prefill ------------------------------------------------------------------------------

def prefill(out, q, k, v, k_cache, v_cache, start_pos, causal, scale, window_left=-1, window_right=-1,
            softcap=0.0, sinks=None, lse=None):
    """gqa::prefill on CPU / CUDA tensors."""
    if (window_left == -1 and window_right == -1 and softcap == 0.0 and sinks is None and lse is None
            and plain_prefill(out, q, k, v, k_cache, v_cache, start_pos, causal, scale) is not None):
        return
    checks.prefill(out, q, k, v, k_cache, v_cache, sinks, lse)
    B, S, Hq, D = q.shape
    Hkv = k.shape[2]
    T = 0 if k_cache is None else k_cache.shape[1]
    cfg = _configs.config(("prefill", DTYPES[q.dtype], _device(q), B, S, Hq, Hkv, D, T))
    cfg.start_pos, cfg.causal, cfg.scale = _args.int32("start_pos", start_pos), causal, _args.float32("scale", scale)
    keep = _variants(cfg, window_left, window_right, softcap, sinks, lse)
    q, k, v = _strided(cfg, q, k, v, out)
    caches = (0, 0) if k_cache is None else (k_cache.data_ptr(), v_cache.data_ptr())
    _call(_configs.prefill_c, q, (out.data_ptr(), q.data_ptr(), k.data_ptr(), v.data_ptr(), *caches, cfg))
    del keep
    _bump_versions(tuple(t for t in (out, k_cache, v_cache, lse) if t is not None))


def _fake_prefill(out, q, k, v, k_cache, v_cache, start_pos, causal, scale, window_left=-1, window_right=-1,
                  softcap=0.0, sinks=None, lse=None):
    checks.prefill(out, q, k, v, k_cache, v_cache, sinks, lse)
    _scalars(start_pos=start_pos, scale=scale, window_left=window_left, window_right=window_right, softcap=softcap)


_define("prefill", "(Tensor(a!) out, Tensor q, Tensor k, Tensor v, Tensor(b!)? k_cache, Tensor(c!)? v_cache, "
        "int start_pos, bool causal, float scale, int window_left=-1, int window_right=-1, float softcap=0., "
        "Tensor? sinks=None, Tensor(d!)? lse=None) -> ()", prefill, _fake_prefill)


# ---- gqa::decode -------------------------------------------------------------------------------

def decode(out, q, k, v, k_cache, v_cache, cache_len, cache_lens, scale, num_splits, workspace,
           window_left=-1, window_right=-1, softcap=0.0, sinks=None, lse=None):
    """gqa::decode on CPU / CUDA tensors."""
    if (cache_lens is None and workspace is None and window_left == -1 and window_right == -1 and softcap == 0.0
            and sinks is None and lse is None
            and plain_decode(out, q, k, v, k_cache, v_cache, cache_len, scale, num_splits) is not None):
        return
    checks.decode(out, q, k, v, k_cache, v_cache, cache_lens, workspace, sinks, lse)
    B, _, Hq, D = q.shape
    Hkv, T = k.shape[2], k_cache.shape[1]
    cfg = _configs.config(("decode", DTYPES[q.dtype], _device(q), B, Hq, Hkv, D, T))
    cfg.cache_len, cfg.scale = _args.int32("cache_len", cache_len), _args.float32("scale", scale)
    cfg.num_splits = _args.int32("num_splits", num_splits)
    if cache_lens is not None:
        cfg.cache_lens = ffi.cast("const int32_t*", cache_lens.data_ptr())
    if workspace is not None:
        cfg.workspace = ffi.cast("void*", workspace.data_ptr())
        cfg.workspace_bytes = workspace.numel() * workspace.element_size()
    keep = _variants(cfg, window_left, window_right, softcap, sinks, lse)
    q, k, v = _strided(cfg, q, k, v, out)
    _call(_configs.decode_c, q, (out.data_ptr(), q.data_ptr(), k.data_ptr(), v.data_ptr(), k_cache.data_ptr(),
                                 v_cache.data_ptr(), cfg))
    del keep
    _bump_versions(tuple(t for t in (out, k_cache, v_cache, workspace, lse) if t is not None))


def _fake_decode(out, q, k, v, k_cache, v_cache, cache_len, cache_lens, scale, num_splits, workspace,
                 window_left=-1, window_right=-1, softcap=0.0, sinks=None, lse=None):
    checks.decode(out, q, k, v, k_cache, v_cache, cache_lens, workspace, sinks, lse)
    _scalars(cache_len=cache_len, scale=scale, num_splits=num_splits, window_left=window_left,
             window_right=window_right, softcap=softcap)


_define("decode", "(Tensor(a!) out, Tensor q, Tensor k, Tensor v, Tensor(b!) k_cache, Tensor(c!) v_cache, "
        "int cache_len, Tensor? cache_lens, float scale, int num_splits, Tensor(d!)? workspace, "
        "int window_left=-1, int window_right=-1, float softcap=0., Tensor? sinks=None, Tensor(e!)? lse=None) -> ()",
        decode, _fake_decode)


# ---- gqa::merge_states -------------------------------------------------------------------------

def merge_states(out, states, lses, sinks=None, lse=None):
    """gqa::merge_states on CPU / CUDA tensors."""
    checks.merge(out, states, lses, sinks, lse)
    cfg = _configs.config(("merge", DTYPES[states.dtype], _device(states), *states.shape))
    states, lses = states.contiguous(), lses.contiguous()  # inputs: copies only of strided views
    if sinks is not None:
        sinks = sinks.contiguous()
        cfg.sinks = ffi.cast("const float*", sinks.data_ptr())
    _call(_configs.merge_c, states, (out.data_ptr(), 0 if lse is None else lse.data_ptr(), states.data_ptr(),
                                     lses.data_ptr(), cfg))
    _bump_versions((out,) if lse is None else (out, lse))


def _fake_merge_states(out, states, lses, sinks=None, lse=None):
    checks.merge(out, states, lses, sinks, lse)


_define("merge_states", "(Tensor(a!) out, Tensor states, Tensor lses, Tensor? sinks=None, Tensor(b!)? lse=None) -> ()",
        merge_states, _fake_merge_states)


# ---- gqa::batch_attention ----------------------------------------------------------------------

def batch_attention(out, q, k, v, k_cache, v_cache, q_indptr, kv_lens, page_table, causal=True, scale=0.0,
                    window_left=-1, window_right=-1, softcap=0.0, sinks=None, lse=None, num_splits=0,
                    workspace=None, error_flags=None):
    """gqa::batch_attention on CPU / CUDA tensors; the metadata lives on q's (the caches') device."""
    checks.batch(out, q, k, v, k_cache, v_cache, q_indptr, kv_lens, page_table, sinks, lse, workspace, error_flags)
    total_q, Hq, D = q.shape
    num_pages, page_size, Hkv, _ = k_cache.shape
    B, max_pages = page_table.shape
    cfg = _configs.config(("batch", DTYPES[q.dtype], _device(q), B, total_q, Hq, Hkv, D, page_size, num_pages,
                           max_pages))
    cfg.causal, cfg.scale, cfg.num_splits = causal, _args.float32("scale", scale), _args.int32("num_splits", num_splits)
    cfg.q_indptr = ffi.cast("const int32_t*", q_indptr.data_ptr())
    cfg.kv_lens = ffi.cast("const int32_t*", kv_lens.data_ptr())
    cfg.page_table = ffi.cast("const int32_t*", page_table.data_ptr())
    keep = _variants(cfg, window_left, window_right, softcap, sinks, lse)
    if workspace is not None:
        cfg.workspace = ffi.cast("void*", workspace.data_ptr())
        cfg.workspace_bytes = workspace.numel() * workspace.element_size()
    if error_flags is not None and not q.is_cpu:  # the CPU validates everything first: no flags to report
        cfg.error_flags = ffi.cast("int32_t*", error_flags.data_ptr())
    q, k, v = _strided(cfg, q, k, v, out)
    _call(_configs.batch_c, q, (out.data_ptr(), q.data_ptr(), k.data_ptr(), v.data_ptr(), k_cache.data_ptr(),
                                v_cache.data_ptr(), cfg))
    del keep
    _bump_versions(tuple(t for t in (out, k_cache, v_cache, lse, workspace, error_flags) if t is not None))


def _fake_batch_attention(out, q, k, v, k_cache, v_cache, q_indptr, kv_lens, page_table, causal=True, scale=0.0,
                          window_left=-1, window_right=-1, softcap=0.0, sinks=None, lse=None, num_splits=0,
                          workspace=None, error_flags=None):
    checks.batch(out, q, k, v, k_cache, v_cache, q_indptr, kv_lens, page_table, sinks, lse, workspace, error_flags)
    _scalars(scale=scale, window_left=window_left, window_right=window_right, softcap=softcap, num_splits=num_splits)


_define("batch_attention", "(Tensor(a!) out, Tensor q, Tensor k, Tensor v, Tensor(b!) k_cache, Tensor(c!) v_cache, "
        "Tensor q_indptr, Tensor kv_lens, Tensor page_table, bool causal=True, float scale=0., "
        "int window_left=-1, int window_right=-1, float softcap=0., Tensor? sinks=None, Tensor(d!)? lse=None, "
        "int num_splits=0, Tensor(e!)? workspace=None, Tensor(f!)? error_flags=None) -> ()",
        batch_attention, _fake_batch_attention)
