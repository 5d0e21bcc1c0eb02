"""The attention variants of gqa.h (window, softcap, sinks, lse) as keyword arguments: one place
that fills them into a prefill or decode config, for both calls."""

from __future__ import annotations

from typing import Any, Sequence

from . import _args
from ._arrays import Tensor, as_float32, as_tensor, empty_float32
from ._errors import InvalidArgumentError
from ._ffi import ffi, lib


def window_pair(window: Sequence[int]) -> tuple[int, int]:
    try:
        left, right = window
    except (TypeError, ValueError):
        raise InvalidArgumentError(f"window {window!r} must be a pair (left, right) of ints; -1 is unbounded") from None
    return _args.int32("window_left", left), _args.int32("window_right", right)


def float32_input(name: str, obj: Any, shape: tuple, like: Tensor) -> Tensor:
    """A float32 input (sinks) of the given shape on like's device."""
    t = as_tensor(name, as_float32(name, obj, like))
    if t.dtype != lib.GQA_DTYPE_F32 or tuple(t.shape) != shape:
        raise InvalidArgumentError(f"{name} must be float32 of shape {shape}, got shape {t.shape}")
    if t.device != like.device or t.device_id != like.device_id:
        raise InvalidArgumentError(f"{name} must be on the device of {like.name}")
    return t


def apply(cfg, like: Tensor, *, window, softcap, sinks, return_lse: bool, num_q_heads: int, lse_shape: tuple,
          keepalive: list):
    """Set the variant fields of cfg; returns the lse array (return_lse) or None. Arrays whose
    addresses cfg holds are appended to keepalive."""
    cfg.window_left, cfg.window_right = window_pair(window)
    cfg.softcap = _args.float32("softcap", softcap)
    if sinks is not None:
        t = float32_input("sinks", sinks, (num_q_heads,), like)
        keepalive.append(t)
        cfg.sinks = ffi.cast("const float*", t.address)
    if not return_lse:
        return None
    lse = empty_float32(like, lse_shape)
    t = as_tensor("lse", lse, writable=True)
    keepalive.append(t)
    cfg.lse = ffi.cast("float*", t.address)
    return lse


def set_strides(cfg, tensors: dict, *, decode: bool) -> None:
    """cfg.{name}_strides from each strided [B, S, H, D] view (contiguous ones keep all 0)."""
    for name, t in tensors.items():
        if t.strides is None:
            continue
        field = getattr(cfg, f"{name}_strides")
        field.batch, field.token, field.head = t.strides[0], 0 if decode else t.strides[1], t.strides[2]
