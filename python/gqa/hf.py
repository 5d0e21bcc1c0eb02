"""libgqa attention for Hugging Face transformers, over a KV cache that libgqa appends to.

    from gqa.hf import GqaCache, register_hf_attention
    model.set_attn_implementation(register_hf_attention())           # "gqa"
    cache = GqaCache(model.config, max_cache_len=prompt_len + new_tokens)
    model.generate(input_ids, attention_mask=mask, past_key_values=cache, max_new_tokens=...)

``GqaCache`` is a transformers ``Cache`` whose layers own BSHD buffers
``[batch, max_cache_len, kv_heads, head_dim]``. Its ``update`` copies nothing: it hands this
step's keys and values to the attention function, which runs ``gqa.torch.prefill`` /
``gqa.torch.decode`` and so writes them into the buffers in place; no layer ever copies the
cache. Each sequence keeps its own length: a left-padded batch is prefilled per sequence with
its real tokens only, then decoded with per-sequence ``cache_lens``, so batched ``generate``
with padding works and attends to no padding.

The attention function also runs without a cache (a plain forward, ``use_cache=False``). It
refuses what libgqa does not compute rather than computing something else: dropout,
sliding windows, soft-capping, attention sinks, masks that are not causal + padding, right
padding, and caches other than ``GqaCache`` (which would be copied in every layer).

Importing this module needs torch and transformers.
"""
from __future__ import annotations

import torch
from transformers import AttentionInterface
from transformers.cache_utils import Cache, CacheLayerMixin
from transformers.masking_utils import ALL_MASK_ATTENTION_FUNCTIONS, causal_mask_function, prepare_padding_mask

from . import torch as gt
from ._errors import InvalidArgumentError

__all__ = ["GqaCache", "GqaCacheLayer", "register_hf_attention", "attention_forward"]

# Names under which register_hf_attention put libgqa (GqaCache works with these only).
_NAMES: set[str] = set()


class GqaCacheLayer(CacheLayerMixin):
    """One layer's K/V in BSHD buffers, with the length of every sequence (host int32)."""

    is_compileable = False
    is_sliding = False

    def __init__(self, max_cache_len: int):
        super().__init__()
        self.max_cache_len = max_cache_len
        self.seen = 0  # tokens handed to update, padding included: what transformers counts
        self.lens: list[int] = []  # each sequence's real tokens in the buffers
        self.ragged = False  # whether the sequences' lengths differ

    def lazy_initialization(self, key_states: torch.Tensor, value_states: torch.Tensor) -> None:
        batch, kv_heads, _, head_dim = key_states.shape
        shape = (batch, self.max_cache_len, kv_heads, head_dim)
        self.dtype, self.device = key_states.dtype, key_states.device
        self.keys = torch.empty(shape, dtype=key_states.dtype, device=key_states.device)
        self.values = torch.empty_like(self.keys)
        self.lens, self.ragged = [0] * batch, False
        self.is_initialized = True

    def update(self, key_states, value_states, *args, **kwargs):
        """Copies nothing: returns this step's keys/values, which attention_forward writes
        into the buffers through libgqa."""
        if not self.is_initialized:
            self.lazy_initialization(key_states, value_states)
        if self.seen + key_states.shape[2] > self.max_cache_len:
            raise InvalidArgumentError(
                f"GqaCache holds max_cache_len={self.max_cache_len} tokens, but this step brings it to "
                f"{self.seen + key_states.shape[2]}; make a GqaCache with a larger max_cache_len")
        self.seen += key_states.shape[2]
        key_states._gqa_cache_layer = self  # how attention_forward finds its layer
        return key_states, value_states

    def get_mask_sizes(self, query_length: int) -> tuple[int, int]:
        return self.seen + query_length, 0

    def get_seq_length(self) -> int:
        return self.seen

    def get_max_length(self) -> int:
        return self.max_cache_len

    def reset(self) -> None:
        self.seen = 0
        self.lens, self.ragged = [0] * len(self.lens), False

    def reorder_cache(self, beam_idx: torch.LongTensor) -> None:
        if self.is_initialized:
            self.keys = self.keys.index_select(0, beam_idx.to(self.device))
            self.values = self.values.index_select(0, beam_idx.to(self.device))
            self.lens = [self.lens[i] for i in beam_idx.tolist()]
            self.ragged = len(set(self.lens)) > 1

    def attend(self, query, key, value, padding, scaling) -> torch.Tensor:
        """query [B,Hq,S,D], key/value [B,Hkv,S,D] (this step); padding: None or bool [B, seen].
        Writes K/V at each sequence's length and returns the output [B,S,Hq,D]."""
        step = query.shape[2]
        q = query.transpose(1, 2).contiguous()  # this step's tokens only
        k, v = key.transpose(1, 2).contiguous(), value.transpose(1, 2).contiguous()
        real = _real_tokens(padding, step, first=self.seen == step)
        if step == 1 and real is None:
            lens = torch.tensor(self.lens, dtype=torch.int32) if self.ragged else self.lens[0]
            out = gt.decode(q, k, v, self.keys, self.values, lens, scale=scaling)
            self.lens = [n + 1 for n in self.lens]
        else:
            out = _prefill_per_sequence(q, k, v, self.keys, self.values, self.lens, real, scaling)
            self.lens = [n + r for n, r in zip(self.lens, real or [step] * len(self.lens))]
            self.ragged = len(set(self.lens)) > 1
        return out


def _real_tokens(padding, step: int, first: bool):
    """None when all `step` new tokens of every sequence are real, else (first chunk only,
    left padding) the number of real ones per sequence (a list)."""
    if padding is None:
        return None
    new = padding[:, -step:]
    if bool(new.all()):
        return None
    if not first:
        raise NotImplementedError("libgqa attention: padding may only precede a prompt (left padding); "
                                  "these new tokens have padding after cached ones")
    if bool((new[:, 1:] < new[:, :-1]).any()):
        raise NotImplementedError("libgqa attention takes left padding only (use tokenizer.padding_side = "
                                  "'left'); this mask has padding after real tokens")
    return new.sum(-1).tolist()


def _prefill_per_sequence(q, k, v, k_cache, v_cache, lens, real, scaling):
    """One prefill for the batch when every sequence is at one length and all tokens are real;
    else one per sequence over its real (last) tokens, padded rows of the output zero.
    Without caches (both None) lens are all 0."""
    step = q.shape[1]
    if real is None and len(set(lens)) == 1:
        return gt.prefill(q, k, v, k_cache, v_cache, start_pos=lens[0], scale=scaling)
    out = torch.zeros_like(q)
    counts = real if real is not None else [step] * q.shape[0]
    for b, (start, n) in enumerate(zip(lens, counts)):
        if n:
            rows, seq = slice(step - n, step), slice(b, b + 1)
            caches = (k_cache[seq], v_cache[seq]) if k_cache is not None else (None, None)
            gt.prefill(q[seq, rows], k[seq, rows], v[seq, rows], *caches, start_pos=start, scale=scaling,
                       out=out[seq, rows])
    return out


class GqaCache(Cache):
    """A transformers Cache for models whose attention is libgqa (register_hf_attention):
    one GqaCacheLayer per decoder layer, buffers allocated at the first step (batch, heads,
    dtype and device from the keys) for ``max_cache_len`` tokens per sequence."""

    def __init__(self, config, max_cache_len: int):
        self._config = config.get_text_config(decoder=True) if hasattr(config, "get_text_config") else config
        layers = [GqaCacheLayer(max_cache_len) for _ in range(self._config.num_hidden_layers)]
        super().__init__(layers=layers)

    def update(self, key_states, value_states, layer_idx: int, *args, **kwargs):
        implementation = getattr(self._config, "_attn_implementation", None)
        if implementation not in _NAMES:
            raise InvalidArgumentError(
                f"GqaCache works with libgqa attention only, but the model uses {implementation!r}; "
                "call model.set_attn_implementation(gqa.hf.register_hf_attention()) first")
        return super().update(key_states, value_states, layer_idx, *args, **kwargs)


def attention_forward(module, query, key, value, attention_mask, scaling=None, dropout=0.0, **kwargs):
    """An AttentionInterface function: query [B,Hq,S,D], key/value [B,Hkv,S,D] (this step's,
    from GqaCache.update, or the whole sequence without a cache); attention_mask from
    padding_mask below (None, or the bool padding mask [B, kv_length]). Returns ([B,S,Hq,D], None)."""
    if dropout:
        raise NotImplementedError("libgqa attention has no dropout (use model.eval())")
    for unsupported in ("sliding_window", "softcap", "sinks", "s_aux"):
        if kwargs.get(unsupported) is not None:
            raise NotImplementedError(f"libgqa attention does not support {unsupported}")
    if not getattr(module, "is_causal", True):
        raise NotImplementedError("libgqa attention is used for causal decoders only")
    if attention_mask is not None and (not isinstance(attention_mask, torch.Tensor) or attention_mask.dim() != 2):
        raise NotImplementedError("libgqa attention takes its own padding mask (register_hf_attention "
                                  f"installs it); got {type(attention_mask).__name__}")
    layer = getattr(key, "_gqa_cache_layer", None)
    if layer is not None:
        return layer.attend(query, key, value, attention_mask, scaling), None
    if query.shape[2] != key.shape[2]:
        raise NotImplementedError(
            "libgqa attention keeps its KV cache in gqa.hf.GqaCache; pass "
            "past_key_values=GqaCache(model.config, max_cache_len=...) (another cache would be "
            "copied into libgqa's layout in every layer)")
    q = query.transpose(1, 2).contiguous()
    k, v = key.transpose(1, 2).contiguous(), value.transpose(1, 2).contiguous()
    real = _real_tokens(attention_mask, q.shape[1], first=True)
    return _prefill_per_sequence(q, k, v, None, None, [0] * q.shape[0], real, scaling), None


def padding_mask(batch_size, q_length, kv_length, q_offset=0, kv_offset=0,
                 mask_function=causal_mask_function, attention_mask=None, **kwargs):
    """The mask builder for libgqa attention: causal attention is libgqa's own, so the mask is
    only the 2D padding mask [B, kv_length] (None without padding). Other mask functions
    (sliding, chunked, packed sequences, bidirectional) are refused."""
    if mask_function is not causal_mask_function:
        raise NotImplementedError(f"libgqa attention supports causal masks (with padding) only, not "
                                  f"{getattr(mask_function, '__name__', mask_function)}")
    padding = prepare_padding_mask(attention_mask, kv_length, kv_offset)
    if padding is None or bool(padding.all()):
        return None
    return padding[:, kv_offset:kv_offset + kv_length]


def register_hf_attention(name: str = "gqa") -> str:
    """Register libgqa as the attention implementation ``name`` in transformers, with its
    padding-mask builder. Then ``model.set_attn_implementation(name)``."""
    AttentionInterface.register(name, attention_forward)
    ALL_MASK_ATTENTION_FUNCTIONS.register(name, padding_mask)
    _NAMES.add(name)
    return name
