"""Float64 NumPy reference of libgqa's prefill, decode and merge_states: the oracle of the tests.

Same signatures and semantics as gqa.prefill / gqa.decode / gqa.merge_states, every option
included (window, softcap, sinks, return_lse), and the cache writes (in the caches' own dtype).
Strided inputs need nothing here: NumPy views are read as they are. Returns float64 arrays
unless ``out`` is given (then out is filled, cast); with ``return_lse`` a pair (out, lse),
lse in float64. Memory stays bounded: scores are formed for one (sequence, KV head, block of
queries) at a time.

The semantics, in one place (gqa.h says the same):
  * query at absolute position i sees key j when j < keys, j <= i (causal),
    i - window_left <= j (window_left >= 0) and j <= i + window_right (window_right >= 0);
  * logit s = scale * q.k, then c * tanh(s / c) when softcap c > 0;
  * a sink sigma (one per query head) joins the denominator only:
    out = sum_j e^s_j v_j / (sum_j e^s_j + e^sigma), lse = log(sum_j e^s_j + e^sigma);
  * a row that sees no key: out 0 and lse sigma (with a sink) or -inf (without).
"""

from __future__ import annotations

import numpy as np

_QUERY_BLOCK = 256
UNBOUNDED = (-1, -1)


def _visible(positions, num_keys, causal, window):
    """Boolean [len(positions), num_keys]: which keys each query position sees."""
    left, right = window
    j = np.arange(num_keys)[None, :]
    i = np.asarray(positions)[:, None]
    visible = np.ones((i.shape[0], num_keys), bool)
    if causal:
        visible &= j <= i
    if left >= 0:
        visible &= j >= i - left
    if right >= 0:
        visible &= j <= i + right
    return visible


def _softmax_rows(scores, values, sinks):
    """scores [s, g, t] (masked: -inf), values [t, D], sinks [g] or None.
    Returns (out [s, g, D], lse [s, g])."""
    m = scores.max(axis=-1)
    if sinks is not None:
        m = np.maximum(m, sinks[None, :])
    base = np.where(np.isneginf(m), 0.0, m)  # a row that sees nothing: exp(-inf - 0) = 0, no NaN
    p = np.exp(scores - base[..., None])
    denom = p.sum(axis=-1)
    if sinks is not None:
        denom = denom + np.exp(sinks[None, :] - base)
    with np.errstate(divide="ignore", invalid="ignore"):
        out = np.einsum("sgt,td->sgd", p, values) / denom[..., None]
        lse = base + np.log(denom)
    out = np.where((denom == 0)[..., None], 0.0, out)
    return out, lse


def _attend(q, keys, values, first_pos, causal, scale, window=UNBOUNDED, softcap=0.0, sinks=None):
    """q [S, G, D], keys/values [T, D] (float64); query i sits at absolute position first_pos + i.
    sinks: [G] float64 or None. Returns (out [S, G, D], lse [S, G])."""
    S = q.shape[0]
    T = keys.shape[0]
    out = np.empty(q.shape, np.float64)
    lse = np.empty(q.shape[:2], np.float64)
    for s0 in range(0, S, _QUERY_BLOCK):
        qb = q[s0:s0 + _QUERY_BLOCK]
        scores = np.einsum("sgd,td->sgt", qb, keys) * scale
        if softcap > 0:
            scores = softcap * np.tanh(scores / softcap)
        visible = _visible(first_pos + s0 + np.arange(qb.shape[0]), T, causal, window)  # [s, t]
        scores = np.where(visible[:, None, :], scores, -np.inf)
        out[s0:s0 + _QUERY_BLOCK], lse[s0:s0 + _QUERY_BLOCK] = _softmax_rows(scores, values, sinks)
    return out, lse


def _resolve_scale(scale, head_dim):
    return 1.0 / np.sqrt(head_dim) if scale in (None, 0, 0.0) else float(scale)


def _sinks64(sinks, num_q_heads):
    if sinks is None:
        return None
    s = np.asarray(sinks, dtype=np.float64).reshape(-1)
    assert s.shape == (num_q_heads,), f"sinks has shape {s.shape}, expected ({num_q_heads},)"
    return s


def _finish(result, out, lse=None, return_lse=False):
    if out is not None:
        out[...] = result.astype(out.dtype)
        result = out
    return (result, lse) if return_lse else result


def attention(q, keys, values, first_pos=0, *, causal=True, scale=None, window=UNBOUNDED, softcap=0.0, sinks=None):
    """Attention of q [B, S, Hq, D] over keys/values [B, T, Hkv, D] (positions 0..T-1); query i
    of sequence b sits at absolute position first_pos + i (first_pos: an int or one per
    sequence). Returns float64 (out [B, S, Hq, D], lse [B, Hq, S]). prefill and decode are
    this after their cache writes; tests use it for partial key sets too."""
    q = np.asarray(q)
    B, S, Hq, D = q.shape
    Hkv = keys.shape[2]
    G = Hq // Hkv
    scale = _resolve_scale(scale, D)
    sinks = _sinks64(sinks, Hq)
    first = np.broadcast_to(np.asarray(first_pos, dtype=np.int64), (B,))
    out = np.empty((B, S, Hq, D), np.float64)
    lse = np.empty((B, Hq, S), np.float64)
    q64 = q.astype(np.float64).reshape(B, S, Hkv, G, D)
    for b in range(B):
        for h in range(Hkv):
            group_sinks = None if sinks is None else sinks[h * G:(h + 1) * G]
            rows, row_lse = _attend(q64[b, :, h], np.asarray(keys[b, :, h], np.float64),
                                    np.asarray(values[b, :, h], np.float64), int(first[b]), causal, scale,
                                    tuple(window), float(softcap), group_sinks)
            out[b, :, h * G:(h + 1) * G] = rows
            lse[b, h * G:(h + 1) * G] = row_lse.T
    return out, lse


def prefill(q, k, v, k_cache=None, v_cache=None, *, start_pos=0, causal=True, scale=None,
            window=UNBOUNDED, softcap=0.0, sinks=None, return_lse=False, out=None, stream=None):
    """Reference prefill; see gqa.prefill. Writes k, v into the caches when they are given.
    lse: [B, Hq, S]."""
    S = np.shape(q)[1]
    if k_cache is not None:
        k_cache[:, start_pos:start_pos + S] = k
        v_cache[:, start_pos:start_pos + S] = v
        keys, values, first_pos = k_cache[:, :start_pos + S], v_cache[:, :start_pos + S], start_pos
    else:
        keys, values, first_pos = k, v, 0
    result, lse = attention(q, keys, values, first_pos, causal=causal, scale=scale, window=window, softcap=softcap,
                            sinks=sinks)
    return _finish(result, out, lse, return_lse)


def decode(q, k, v, k_cache, v_cache, cache_len, *, scale=None, window=UNBOUNDED, softcap=0.0, sinks=None,
           return_lse=False, out=None, num_splits=0, stream=None, workspace=None):
    """Reference decode; see gqa.decode. Appends k, v at cache_len (int or one per sequence).
    lse: [B, Hq]."""
    q = np.asarray(q)
    B, _, Hq, D = q.shape
    lens = np.broadcast_to(np.asarray(cache_len, dtype=np.int64), (B,))
    result = np.empty((B, 1, Hq, D), np.float64)
    lse = np.empty((B, Hq), np.float64)
    for b in range(B):
        n = int(lens[b])
        k_cache[b, n] = k[b, 0]
        v_cache[b, n] = v[b, 0]
        rows, row_lse = attention(q[b:b + 1], k_cache[b:b + 1, :n + 1], v_cache[b:b + 1, :n + 1], n, scale=scale,
                                  window=window, softcap=softcap, sinks=sinks)
        result[b] = rows[0]
        lse[b] = row_lse[0, :, 0]
    return _finish(result, out, lse, return_lse)


def merge_states(states, lses, *, sinks=None, out=None, return_lse=False):
    """Reference merge; see gqa.merge_states. states [N, B, S, H, D] with lses [N, B, H, S], or
    decode-shaped states [N, B, 1, H, D] with lses [N, B, H]: N partial attentions of the same
    queries over disjoint key sets, computed without sinks. Returns the attention over their
    union (sinks, [H], added once here), and with return_lse its lse in the layout of lses."""
    states = np.asarray(states, dtype=np.float64)
    lses64 = np.asarray(lses, dtype=np.float64)
    N, B, S, H, D = states.shape
    lse4 = lses64.reshape(N, B, H, S)
    m = lse4.max(axis=0)  # [B, H, S]
    sinks = _sinks64(sinks, H)
    if sinks is not None:
        m = np.maximum(m, sinks[None, :, None])
    base = np.where(np.isneginf(m), 0.0, m)
    weights = np.exp(lse4 - base[None])  # [N, B, H, S]; a partial with lse -inf weighs exactly 0
    denom = weights.sum(axis=0)
    if sinks is not None:
        denom = denom + np.exp(sinks[None, :, None] - base)
    acc = np.einsum("nbhs,nbshd->bshd", weights, np.where(weights.transpose(0, 1, 3, 2)[..., None] > 0, states, 0.0))
    with np.errstate(divide="ignore", invalid="ignore"):
        result = acc / denom.transpose(0, 2, 1)[..., None]
        lse = base + np.log(denom)
    result = np.where((denom == 0).transpose(0, 2, 1)[..., None], 0.0, result)
    return _finish(result, out, lse.reshape(lses64.shape[1:]), return_lse)


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
    lse = np.full((Hq, total_q), -np.inf) if options.get("return_lse") else None
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
