"""gqa.batch_attention: the batched op (ragged rows, paged KV cache) as one libgqa call.

Shapes are checked here only to name the argument in Python's words; the C library validates
everything again (on the CPU every length and page id) and writes nothing on a rejected call."""

from __future__ import annotations

from typing import Any

import numpy as np

from . import _args, _configs, _logging, _variants
from ._api import _check_status, _on_device, _require_shape, _scale, _stream_for
from ._arrays import CPU, DEVICE_CODES, DTYPE_CODES, as_buffer, as_tensor, common_device_and_dtype, empty_like
from ._errors import InvalidArgumentError
from ._ffi import ffi, lib

# What the CUDA kernels OR into error_flags when device metadata is out of range (the sequence or
# page is skipped; nothing outside the page pool is read or written).
BATCH_FLAG_BAD_INDPTR = lib.GQA_BATCH_FLAG_BAD_INDPTR
BATCH_FLAG_BAD_KV_LEN = lib.GQA_BATCH_FLAG_BAD_KV_LEN
BATCH_FLAG_BAD_PAGE = lib.GQA_BATCH_FLAG_BAD_PAGE


def _metadata(name: str, obj: Any, shape: tuple, device: int):
    """(keepalive, address) of an int32 metadata array: host memory for a CPU call, device
    memory (a torch or CuPy int32 CUDA array, read by the kernels) for a CUDA call."""
    if device == CPU:
        if np.shape(obj) != shape:
            raise InvalidArgumentError(f"{name} has shape {np.shape(obj)}, expected {list(shape)}")
        array = _args.int32_array(name, np.reshape(obj, -1), int(np.prod(shape)))  # integers only
        return array, array.ctypes.data
    if type(obj).__module__.split(".")[0] == "torch":
        import torch

        if obj.dtype != torch.int32 or obj.device.type != "cuda" or not obj.is_contiguous():
            raise InvalidArgumentError(f"{name} must be a contiguous int32 CUDA tensor for a CUDA call")
        found, address = tuple(obj.shape), obj.data_ptr()
    elif hasattr(obj, "__cuda_array_interface__"):
        cai = obj.__cuda_array_interface__
        if cai["typestr"] != "<i4" or cai.get("strides") is not None:
            raise InvalidArgumentError(f"{name} must be a contiguous int32 CUDA array for a CUDA call")
        found, address = tuple(cai["shape"]), int(cai["data"][0])
    else:
        raise InvalidArgumentError(f"{name} must be in device memory (an int32 CUDA tensor) for a CUDA call")
    if found != shape:
        raise InvalidArgumentError(f"{name} has shape {found}, expected {list(shape)}")
    return obj, address


def batch_attention(q, k, v, k_cache, v_cache, *, q_indptr, kv_lens, page_table, causal: bool = True,
                    scale: float | None = None, window=(-1, -1), softcap: float = 0.0, sinks=None,
                    return_lse: bool = False, out=None, num_splits: int = 0, workspace=None, error_flags=None,
                    stream=None, max_q_len: int = 0):
    """Sequence b owns rows q_indptr[b] .. q_indptr[b+1]-1 of q/k/v/out and has kv_lens[b]
    tokens cached in pages page_table[b] of the paged caches; its new K/V are written at
    positions kv_lens[b] .. and its queries attend causally (bottom-right aligned) to
    positions 0 .. kv_lens[b] + j. q_len 0 sequences are untouched.

    q [total_q, Hq, D], k/v [total_q, Hkv, D], caches [num_pages, page_size, Hkv, D],
    q_indptr [B + 1], kv_lens [B], page_table [B, max_pages_per_seq] (int32; host arrays on the
    CPU, device arrays on CUDA). Returns out [total_q, Hq, D], or (out, lse [Hq, total_q])
    with return_lse. gqa.PagedKVCache builds the metadata.

    CUDA: the metadata is read by the kernels only (capture the call in a CUDA graph once, then
    rewrite the buffers between replays). max_q_len (0: total_q) bounds every q_len and sizes the
    grids: give it for decode-heavy batches. error_flags, an int32 CUDA tensor of one element
    that the caller zeroes, receives the BATCH_FLAG_* of out-of-range metadata (skipped);
    GQA_VALIDATE_METADATA=1 checks the metadata on the host first (synchronising) instead.
    """
    causal, c_scale, num_splits = _args.flag("causal", causal), _scale(scale), _args.int32("num_splits", num_splits)
    max_q_len = _args.int32("max_q_len", max_q_len)
    return_lse = _args.flag("return_lse", return_lse)
    tq, tk, tv = (as_tensor(name, t, strided=True) for name, t in (("q", q), ("k", k), ("v", v)))
    _require_shape(tq, [None, None, None], "q is [total_q, num_q_heads, head_dim]")
    total_q, Hq, D = tq.shape
    _require_shape(tk, [total_q, None, D], "k is [total_q, num_kv_heads, head_dim]")
    Hkv = tk.shape[1]
    _require_shape(tv, [total_q, Hkv, D], "v is like k")
    tkc, tvc = as_tensor("k_cache", k_cache, writable=True), as_tensor("v_cache", v_cache, writable=True)
    _require_shape(tkc, [None, None, Hkv, D], "k_cache is [num_pages, page_size, num_kv_heads, head_dim]")
    num_pages, page_size = tkc.shape[:2]
    _require_shape(tvc, [num_pages, page_size, Hkv, D], "v_cache is like k_cache")
    if out is None:
        out = empty_like(tq)
    tout = as_tensor("out", out, writable=True, strided=True)
    _require_shape(tout, [total_q, Hq, D], "out is like q")
    tensors = [tq, tk, tv, tkc, tvc, tout]
    device, dtype = common_device_and_dtype(tensors)

    table_shape = tuple(np.shape(page_table)) if device == CPU else tuple(page_table.shape)
    if len(table_shape) != 2:
        raise InvalidArgumentError(f"page_table has shape {table_shape}, expected [batch, max_pages_per_seq]")
    B, max_pages = table_shape
    keep = [_metadata("q_indptr", q_indptr, (B + 1,), device), _metadata("kv_lens", kv_lens, (B,), device),
            _metadata("page_table", page_table, (B, max_pages), device)]

    cfg = _configs.config(("batch", dtype, device, B, total_q, Hq, Hkv, D, page_size, num_pages, max_pages))
    cfg.max_q_len = max_q_len
    cfg.causal, cfg.scale, cfg.num_splits = int(causal), c_scale, num_splits
    cfg.q_indptr, cfg.kv_lens, cfg.page_table = (ffi.cast("const int32_t*", address) for _, address in keep)
    lse = _variants.apply(cfg, tq, window=window, softcap=softcap, sinks=sinks, return_lse=return_lse,
                          num_q_heads=Hq, lse_shape=(Hq, total_q), keepalive=keep)
    for name, t in (("q", tq), ("k", tk), ("v", tv), ("out", tout)):  # strided [total_q, H, D] views
        if t.strides is not None:
            field = getattr(cfg, f"{name}_strides")
            field.token, field.head = t.strides[0], t.strides[1]
    if workspace is not None:  # kept alive by `keep` until the call returns
        ws = as_buffer("workspace", workspace)
        keep.append(ws)
        cfg.workspace, cfg.workspace_bytes = ffi.cast("void*", ws.address), ws.nbytes
    if error_flags is not None and device != CPU:  # the CPU validates instead: no flags to report
        flags, address = _metadata("error_flags", error_flags, (1,), device)
        keep.append(flags)
        cfg.error_flags = ffi.cast("int32_t*", address)
    _logging.sync_level()
    with _on_device(tq):
        status = lib.gqa_attention_batch(*(ffi.cast("void*", t.address) for t in (tout, tq, tk, tv, tkc, tvc)), cfg,
                                         ffi.cast("void*", _stream_for(tensors, stream)))
    del keep
    _check_status(status)
    return (out, lse) if return_lse else out


def batch_workspace_size(batch_size: int, total_q: int, num_q_heads: int, num_kv_heads: int, head_dim: int,
                         page_size: int, num_pages: int, max_pages_per_seq: int, dtype: str = "float16",
                         device: str = "cuda", max_q_len: int = 0, num_splits: int = 0) -> int:
    """Bytes of CUDA workspace a batched call of this shape (and num_splits: 0 automatic) may use
    for split-KV (0 on the CPU). It depends on these shape fields only, not on the lengths."""
    cfg = _configs.new_config("batch")
    cfg.dtype = _args.choice("dtype", dtype, DTYPE_CODES)
    cfg.device = _args.choice("device", device, DEVICE_CODES)
    cfg.batch_size, cfg.total_q, cfg.max_q_len = batch_size, total_q, max_q_len
    cfg.num_q_heads, cfg.num_kv_heads, cfg.head_dim = num_q_heads, num_kv_heads, head_dim
    cfg.page_size, cfg.num_pages, cfg.max_pages_per_seq = page_size, num_pages, max_pages_per_seq
    cfg.num_splits = _args.int32("num_splits", num_splits)
    size = ffi.new("uint64_t*")
    _check_status(lib.gqa_batch_workspace_size(cfg, size))
    return int(size[0])
