"""What a libgqa call needs that does not change between calls of one shape: a config made once
per shape (a call copies it and fills in the positions), and the entry points with integer
pointer parameters. Shared by the NumPy API and gqa.torch."""

from __future__ import annotations

import threading

from ._ffi import ffi, lib

# The entry points seen with integer pointer parameters, so an address goes in as it is (no
# ffi.cast per tensor). uintptr_t and void* are passed alike by every ABI libgqa builds for.
_POINTERS = ", ".join(["uintptr_t"] * 6)
prefill_c = ffi.cast(f"gqa_status(*)({_POINTERS}, const gqa_prefill_config*, uintptr_t)",
                     lib.gqa_attention_prefill)
decode_c = ffi.cast(f"gqa_status(*)({_POINTERS}, const gqa_decode_config*, uintptr_t)",
                    lib.gqa_attention_decode)
batch_c = ffi.cast(f"gqa_status(*)({_POINTERS}, const gqa_batch_config*, uintptr_t)",
                   lib.gqa_attention_batch)
merge_c = ffi.cast("gqa_status(*)(uintptr_t, uintptr_t, uintptr_t, uintptr_t, const gqa_merge_config*, uintptr_t)",
                   lib.gqa_merge_states)

# operation -> (its config's C name, the size fields a key gives after (dtype, device), in order)
_SHAPES = {
    "prefill": ("gqa_prefill_config", ("batch_size", "seq_len", "num_q_heads", "num_kv_heads", "head_dim",
                                       "max_seq_len")),
    "decode": ("gqa_decode_config", ("batch_size", "num_q_heads", "num_kv_heads", "head_dim", "max_seq_len")),
    "batch": ("gqa_batch_config", ("batch_size", "total_q", "num_q_heads", "num_kv_heads", "head_dim",
                                   "page_size", "num_pages", "max_pages_per_seq")),
    "merge": ("gqa_merge_config", ("num_states", "batch_size", "seq_len", "num_heads", "head_dim")),
}
_TYPES = {op: ffi.typeof(f"{name}*") for op, (name, _) in _SHAPES.items()}

_templates: dict = {}
MAX_TEMPLATES = 4096  # shapes seen; past that the cache starts over (bounded memory for a server)
_lock = threading.Lock()


def new_config(op: str):
    """A config of the newest size this gqa.h declares, filled with the library's defaults."""
    name = _SHAPES[op][0]
    cfg = ffi.new(_TYPES[op])
    status = getattr(lib, f"{name}_init_sized")(cfg, ffi.sizeof(name))
    if status != lib.GQA_STATUS_OK:
        from ._api import _check_status

        _check_status(status)
    return cfg


def _template(key):
    op, dtype, device, *sizes = key
    cfg = new_config(op)
    cfg.dtype, cfg.device = dtype, device
    for field, value in zip(_SHAPES[op][1], sizes):
        setattr(cfg, field, value)
    return cfg


def config(key):
    """A fresh config for key = (operation, dtype code, device code, *sizes in _SHAPES' order):
    a copy of the template made once for that shape, so each call (and thread) has its own."""
    template = _templates.get(key)
    if template is None:
        with _lock:
            template = _templates.get(key)
            if template is None:
                if len(_templates) >= MAX_TEMPLATES:
                    _templates.clear()
                template = _templates[key] = _template(key)
    return ffi.new(_TYPES[key[0]], template[0])


class _PerThread(threading.local):
    def __init__(self):
        self.configs = {}


per_thread = _PerThread()  # .configs: this thread's plain configs (see plain), by their callers' keys


def plain(key, shape_key=None):
    """This thread's own config under key, reused by every plain call with that key: one that
    sets the per-call scalars only (positions, causal, scale, splits), never a variant, stride or
    pointer field. It is a copy of config(shape_key) (of key itself when shape_key is None), so a
    caller may key it by what it reads anyway (gqa.torch: the tensors' shapes). Saves the copy;
    safe because libgqa copies the config before it does anything else, so even a call made from
    a log handler during another cannot disturb it."""
    configs = per_thread.configs
    cfg = configs.get(key)
    if cfg is None:
        if len(configs) >= MAX_TEMPLATES:
            configs.clear()
        cfg = configs[key] = config(key if shape_key is None else shape_key)
    return cfg
