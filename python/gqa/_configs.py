"""What a libgqa call needs that does not change between calls of one shape: a config made once
per shape (a call copies it and fills in the positions), and the entry points with integer
pointer parameters. Shared by the NumPy API (its plain contiguous NumPy calls) and gqa.torch."""

from __future__ import annotations

import threading

from ._ffi import ffi, lib
from ._variants import new_config

# The entry points seen with integer pointer parameters, so an address goes in as it is (no
# ffi.cast per tensor). uintptr_t and void* are passed alike by every ABI libgqa builds for.
_POINTERS = ", ".join(["uintptr_t"] * 6)
prefill_c = ffi.cast(f"gqa_status(*)({_POINTERS}, const gqa_prefill_config*, uintptr_t)",
                     lib.gqa_attention_prefill)
decode_c = ffi.cast(f"gqa_status(*)({_POINTERS}, const gqa_decode_config*, uintptr_t)",
                    lib.gqa_attention_decode)
PREFILL_CONFIG = ffi.typeof("gqa_prefill_config*")
DECODE_CONFIG = ffi.typeof("gqa_decode_config*")

_templates: dict = {}
_lock = threading.Lock()


def _prefill_template(dtype, device, B, S, Hq, Hkv, D, max_seq_len):
    cfg = new_config("prefill")
    cfg.dtype, cfg.device = dtype, device
    cfg.batch_size, cfg.seq_len, cfg.num_q_heads, cfg.num_kv_heads, cfg.head_dim = B, S, Hq, Hkv, D
    cfg.max_seq_len = max_seq_len
    return cfg


def _decode_template(dtype, device, B, Hq, Hkv, D, max_seq_len):
    cfg = new_config("decode")
    cfg.dtype, cfg.device = dtype, device
    cfg.batch_size, cfg.num_q_heads, cfg.num_kv_heads, cfg.head_dim = B, Hq, Hkv, D
    cfg.max_seq_len = max_seq_len
    return cfg


_MAKERS = {"prefill": (PREFILL_CONFIG, _prefill_template), "decode": (DECODE_CONFIG, _decode_template)}


def config(key):
    """A fresh config for key = (operation, dtype code, device code, *sizes): a copy of the
    template made once for that shape, so each call (and thread) has its own."""
    template = _templates.get(key)
    if template is None:
        with _lock:
            template = _templates.get(key)
            if template is None:
                template = _templates[key] = _MAKERS[key[0]][1](*key[1:])
    return ffi.new(_MAKERS[key[0]][0], template[0])
