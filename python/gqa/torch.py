"""libgqa for PyTorch tensors, and as an attention function of Hugging Face transformers.

    import gqa.torch as gt
    out = gt.prefill(q, k, v, k_cache, v_cache, start_pos=0)     # torch tensors, BSHD
    out = gt.decode(q, k, v, k_cache, v_cache, cache_len)

CPU tensors reach libgqa as NumPy views of the same memory (no copy; bfloat16 through
ml_dtypes). CUDA tensors are handed to the gqa API as they are: its torch adapter
(gqa/_arrays.py) takes their data pointer, device and current stream, and runs on the GPU. Caches and `out` are written in place and must
be contiguous; a non-contiguous q/k/v is copied first (inputs only). There is no autograd:
the result never requires grad.

Hugging Face models (Llama, Qwen2 and others whose attention goes through
`AttentionInterface`):

    name = gt.register_hf_attention()          # "gqa"
    model.set_attn_implementation(name)       # or from_pretrained(..., attn_implementation=name)

The HF cache keeps its own K/V ([batch, kv_heads, seq, head_dim]); for each call this module
lays them out as BSHD (one copy) and runs libgqa's prefill (or decode for a single new token)
at the right causal offset. Padding masks, sliding windows, soft-capping and dropout are not
supported and raise rather than silently computing something else.

Importing this module needs torch; `import gqa` alone never imports it.
"""
from __future__ import annotations

import torch

import gqa
from gqa import InvalidArgumentError

__all__ = ["prefill", "decode", "register_hf_attention", "hf_attention_forward"]

_CPU_DTYPES = (torch.float16, torch.bfloat16, torch.float32)


def _array(tensor: torch.Tensor, name: str, *, written: bool):
    """A NumPy view (CPU) of `tensor`, or the tensor itself (CUDA) for the gqa API."""
    if not isinstance(tensor, torch.Tensor):
        raise InvalidArgumentError(f"{name} must be a torch.Tensor, got {type(tensor).__name__}")
    if not tensor.is_contiguous():
        if written:
            raise InvalidArgumentError(f"{name} is written in place and must be contiguous "
                             f"(shape {tuple(tensor.shape)}, strides {tensor.stride()})")
        tensor = tensor.contiguous()  # an input: a documented copy
    tensor = tensor.detach()
    if tensor.device.type == "cuda":
        return tensor
    if tensor.device.type != "cpu":
        raise InvalidArgumentError(f"{name} is on {tensor.device}; libgqa takes CPU or CUDA tensors")
    if tensor.dtype not in _CPU_DTYPES:
        raise InvalidArgumentError(f"{name} has dtype {tensor.dtype}; libgqa takes float16, bfloat16 or float32")
    if tensor.dtype == torch.bfloat16:
        import ml_dtypes  # NumPy has no bfloat16: reinterpret the same bytes

        return tensor.view(torch.int16).numpy().view(ml_dtypes.bfloat16)
    return tensor.numpy()


def _output(q: torch.Tensor, out: torch.Tensor | None) -> torch.Tensor:
    for name, tensor in (("q", q), ("out", out)):
        if tensor is not None and not isinstance(tensor, torch.Tensor):
            raise InvalidArgumentError(f"{name} must be a torch.Tensor, got {type(tensor).__name__}")
    if out is None:
        return torch.empty(q.shape, dtype=q.dtype, device=q.device)
    if out.dtype != q.dtype or out.device != q.device or tuple(out.shape) != tuple(q.shape):
        raise InvalidArgumentError(f"out must match q: got {tuple(out.shape)} {out.dtype} on {out.device}, "
                         f"want {tuple(q.shape)} {q.dtype} on {q.device}")
    return out


def _caches(k_cache, v_cache):
    if k_cache is None and v_cache is None:
        return None, None
    if k_cache is None or v_cache is None:
        raise InvalidArgumentError("give both k_cache and v_cache, or neither")
    return _array(k_cache, "k_cache", written=True), _array(v_cache, "v_cache", written=True)


def prefill(q, k, v, k_cache=None, v_cache=None, *, start_pos=0, causal=True, scale=None, out=None):
    """gqa.prefill for torch tensors: q [B,S,Hq,D], k/v [B,S,Hkv,D], caches [B,max_seq,Hkv,D].
    Returns `out` (new, or the one given, filled in place); the caches are updated in place."""
    result = _output(q, out)
    k_arr, v_arr = _caches(k_cache, v_cache)
    gqa.prefill(_array(q, "q", written=False), _array(k, "k", written=False),
                _array(v, "v", written=False), k_arr, v_arr, start_pos=start_pos, causal=causal,
                scale=scale, out=_array(result, "out", written=True))
    return result


def decode(q, k, v, k_cache, v_cache, cache_len, *, scale=None, out=None):
    """gqa.decode for torch tensors: q [B,1,Hq,D], k/v [B,1,Hkv,D], caches [B,max_seq,Hkv,D];
    cache_len an int or B ints (a list, NumPy array or integer tensor); never floats."""
    result = _output(q, out)
    if isinstance(cache_len, torch.Tensor):
        # gqa.decode checks the values: integers in int32 range, no bool, no float (shown in
        # the error as the caller gave them, not truncated by a conversion here).
        host = cache_len.detach().cpu()
        dtype = host.dtype
        integer = not (dtype.is_floating_point or dtype.is_complex or dtype == torch.bool)
        cache_len = host.numpy() if integer else host.tolist()
    k_arr, v_arr = _caches(k_cache, v_cache)
    gqa.decode(_array(q, "q", written=False), _array(k, "k", written=False),
               _array(v, "v", written=False), k_arr, v_arr, cache_len, scale=scale,
               out=_array(result, "out", written=True))
    return result


# ---- Hugging Face transformers ---------------------------------------------------------------

def _check_causal_mask(mask, q_len: int, kv_len: int) -> None:
    """Accept no mask, or one that is exactly causal attention aligned at the end (query i sees
    keys 0 .. kv_len - q_len + i) for every sequence; anything else (padding) is refused."""
    if mask is None:
        return
    if not isinstance(mask, torch.Tensor) or mask.dim() != 4:
        raise NotImplementedError(f"libgqa attention takes no mask of type {type(mask).__name__}")
    allowed = mask if mask.dtype == torch.bool else mask == 0  # additive float masks: 0 = attend
    keys = torch.arange(kv_len, device=mask.device)
    queries = torch.arange(q_len, device=mask.device) + (kv_len - q_len)
    causal = keys[None, :] <= queries[:, None]
    if allowed.shape[-2:] != causal.shape or not bool((allowed == causal).all()):
        raise NotImplementedError("libgqa attention supports causal attention only; this call "
                                  "has a padding or custom attention mask")


def hf_attention_forward(module, query, key, value, attention_mask, scaling=None, dropout=0.0,
                         **kwargs):
    """An `AttentionInterface` function. query [B,Hq,S,D]; key/value [B,Hkv,T,D], T >= S, the
    HF cache already holding this step's K/V at its end. Returns ([B,S,Hq,D], None)."""
    if dropout:
        raise NotImplementedError("libgqa attention has no dropout (use model.eval())")
    for unsupported in ("sliding_window", "softcap", "sinks", "s_aux"):
        if kwargs.get(unsupported) is not None:
            raise NotImplementedError(f"libgqa attention does not support {unsupported}")
    if not getattr(module, "is_causal", True):
        raise NotImplementedError("libgqa attention is used for causal decoders only")
    q_len, kv_len = query.shape[2], key.shape[2]
    _check_causal_mask(attention_mask, q_len, kv_len)
    start = kv_len - q_len
    q = query.transpose(1, 2).contiguous()  # BSHD
    new_k = key[:, :, start:].transpose(1, 2).contiguous()
    new_v = value[:, :, start:].transpose(1, 2).contiguous()
    if start == 0:  # the whole sequence is new: no cache needed
        out = prefill(q, new_k, new_v, scale=scaling)
    else:
        # The earlier positions become a BSHD cache; libgqa writes this step's K/V at `start`
        # (the same values) and attends with causal alignment at absolute positions.
        k_cache = key.transpose(1, 2).contiguous()
        v_cache = value.transpose(1, 2).contiguous()
        if q_len == 1:
            out = decode(q, new_k, new_v, k_cache, v_cache, start, scale=scaling)
        else:
            out = prefill(q, new_k, new_v, k_cache, v_cache, start_pos=start, scale=scaling)
    return out, None


def register_hf_attention(name: str = "gqa") -> str:
    """Register libgqa as the attention implementation `name` in transformers, with the SDPA
    mask builder (which gives no mask for plain causal attention, so padding can be detected).
    Then `model.set_attn_implementation(name)`. Needs transformers with AttentionInterface."""
    try:
        from transformers import AttentionInterface
    except ImportError as err:  # transformers too old (< 4.48) or absent
        raise ImportError("register_hf_attention needs transformers with AttentionInterface") from err
    AttentionInterface.register(name, hf_attention_forward)
    try:
        from transformers.masking_utils import ALL_MASK_ATTENTION_FUNCTIONS, sdpa_mask
    except ImportError:
        return name  # older transformers build masks themselves; _check_causal_mask still guards
    ALL_MASK_ATTENTION_FUNCTIONS.register(name, sdpa_mask)
    return name
