"""Float64 NumPy reference of libgqa's prefill and decode: the oracle of the tests.

Same signatures and semantics as gqa.prefill / gqa.decode, including the cache writes (in the
caches' own dtype). Returns float64 arrays unless ``out`` is given (then out is filled, cast).
Memory stays bounded: scores are formed for one (sequence, KV head, block of queries) at a time.
"""

from __future__ import annotations

import numpy as np

_QUERY_BLOCK = 256


def _attend(q, keys, values, first_pos, causal, scale):
    """q [S, G, D], keys/values [T, D] (float64); query i sits at absolute position first_pos + i
    and, when causal, sees keys 0..first_pos + i. Returns [S, G, D]."""
    S = q.shape[0]
    T = keys.shape[0]
    out = np.empty(q.shape, np.float64)
    for s0 in range(0, S, _QUERY_BLOCK):
        qb = q[s0:s0 + _QUERY_BLOCK]
        scores = np.einsum("sgd,td->sgt", qb, keys) * scale
        if causal:
            positions = first_pos + s0 + np.arange(qb.shape[0])
            visible = np.arange(T)[None, :] <= positions[:, None]  # [s, t]
            scores = np.where(visible[:, None, :], scores, -np.inf)
        m = scores.max(axis=-1, keepdims=True)
        p = np.exp(scores - m)
        out[s0:s0 + _QUERY_BLOCK] = np.einsum("sgt,td->sgd", p, values) / p.sum(axis=-1, keepdims=True)
    return out


def _resolve_scale(scale, head_dim):
    return 1.0 / np.sqrt(head_dim) if scale in (None, 0, 0.0) else float(scale)


def _finish(result, out):
    if out is None:
        return result
    out[...] = result.astype(out.dtype)
    return out


def prefill(q, k, v, k_cache=None, v_cache=None, *, start_pos=0, causal=True, scale=None, out=None, stream=None):
    """Reference prefill; see gqa.prefill. Writes k, v into the caches when they are given."""
    q = np.asarray(q)
    B, S, Hq, D = q.shape
    Hkv = k.shape[2]
    G = Hq // Hkv
    scale = _resolve_scale(scale, D)
    if k_cache is not None:
        k_cache[:, start_pos:start_pos + S] = k
        v_cache[:, start_pos:start_pos + S] = v
        keys_all, values_all, first_pos, T = k_cache, v_cache, start_pos, start_pos + S
    else:
        keys_all, values_all, first_pos, T = np.asarray(k), np.asarray(v), 0, S
    result = np.empty((B, S, Hq, D), np.float64)
    q64 = q.astype(np.float64).reshape(B, S, Hkv, G, D)
    for b in range(B):
        for h in range(Hkv):
            keys = np.asarray(keys_all[b, :T, h], dtype=np.float64)
            values = np.asarray(values_all[b, :T, h], dtype=np.float64)
            rows = _attend(q64[b, :, h], keys, values, first_pos, causal, scale)
            result[b, :, h * G:(h + 1) * G] = rows
    return _finish(result, out)


def decode(q, k, v, k_cache, v_cache, cache_len, *, scale=None, out=None, num_splits=0, stream=None, workspace=None):
    """Reference decode; see gqa.decode. Appends k, v at cache_len (int or one per sequence)."""
    q = np.asarray(q)
    B, _, Hq, D = q.shape
    Hkv = k.shape[2]
    G = Hq // Hkv
    scale = _resolve_scale(scale, D)
    lens = np.broadcast_to(np.asarray(cache_len, dtype=np.int64), (B,))
    result = np.empty((B, 1, Hq, D), np.float64)
    for b in range(B):
        n = int(lens[b])
        k_cache[b, n] = k[b, 0]
        v_cache[b, n] = v[b, 0]
        qb = q[b, 0].astype(np.float64).reshape(Hkv, G, D)
        for h in range(Hkv):
            keys = np.asarray(k_cache[b, :n + 1, h], dtype=np.float64)
            values = np.asarray(v_cache[b, :n + 1, h], dtype=np.float64)
            result[b, 0, h * G:(h + 1) * G] = _attend(qb[h][None], keys, values, n, True, scale)[0]
    return _finish(result, out)


# ---------------------------------------------------------------- the batched op (issue 16)
# Kept apart from the dense functions above on purpose: the batched reference is the dense
# prefill reference run one sequence at a time on keys gathered through the page table, so
# every option the dense reference learns (window, softcap, sinks, return_lse) holds here too.


def page_slots(page_row, positions, page_size):
    """(page ids, slots) of a sequence's cache positions: position t lives in page
    page_row[t // page_size], slot t % page_size."""
    positions = np.asarray(positions, dtype=np.int64)
    return np.asarray(page_row, dtype=np.int64)[positions // page_size], positions % page_size


def gather_pages(cache, page_row, length):
    """The first `length` positions of one sequence as a dense [length, Hkv, D] copy."""
    pages, slots = page_slots(page_row, np.arange(length), cache.shape[1])
    return cache[pages, slots]


def batch_attention(q, k, v, k_cache, v_cache, *, q_indptr, kv_lens, page_table, causal=True, scale=None,
                    out=None, stream=None, **options):
    """Reference of gqa.batch_attention: sequence b owns rows q_indptr[b]..q_indptr[b+1]-1 of q,
    k, v, out ([total_q, H, D]) and has kv_lens[b] tokens cached in the paged caches
    [num_pages, page_size, Hkv, D] through page_table[b]. Writes the new K/V through the page
    table (in the caches' dtype) and returns out, or (out, lse [Hq, total_q]) with
    return_lse=True. ``options`` (window, softcap, sinks, return_lse...) mean what they mean to
    prefill(). Rows of q_len-0 sequences do not exist; nothing of theirs is read or written."""
    q = np.asarray(q)
    total_q, Hq, D = q.shape
    indptr = np.asarray(q_indptr, dtype=np.int64)
    lens = np.asarray(kv_lens, dtype=np.int64)
    table = np.asarray(page_table, dtype=np.int64).reshape(len(lens), -1)
    result = np.zeros((total_q, Hq, D), np.float64)
    lse = np.full((Hq, total_q), -np.inf, np.float32) if options.get("return_lse") else None
    for b in range(len(lens)):
        r0, r1, start = int(indptr[b]), int(indptr[b + 1]), int(lens[b])
        if r1 == r0:
            continue
        end = start + (r1 - r0)
        # Dense [1, end, Hkv, D] caches of this sequence; prefill writes the new rows into them.
        dense_k = gather_pages(k_cache, table[b], end)[None]
        dense_v = gather_pages(v_cache, table[b], end)[None]
        got = prefill(q[None, r0:r1], np.asarray(k)[None, r0:r1], np.asarray(v)[None, r0:r1], dense_k, dense_v,
                      start_pos=start, causal=causal, scale=scale, **options)
        if lse is not None:
            got, got_lse = got
            lse[:, r0:r1] = got_lse[0]
        result[r0:r1] = got[0]
        pages, slots = page_slots(table[b], np.arange(start, end), k_cache.shape[1])
        k_cache[pages, slots] = dense_k[0, start:end]
        v_cache[pages, slots] = dense_v[0, start:end]
    result = _finish(result, out)
    return (result, lse) if lse is not None else result
