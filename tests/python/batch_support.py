"""Builders of batched-op test cases (gqa.batch_attention, gqa.reference.batch_attention).

A case is a ragged batch: sequence b has q_len[b] >= 0 new tokens and kv_len[b] cached ones, in
a page pool whose pages are shuffled. Everything a correct call must not read is NaN: pages that
belong to no sequence, slots past a sequence's last position, and the slots the call is about
to write. The expected result comes from the dense float64 reference run one sequence at a
time on that sequence's own contiguous cache (gqa.reference.prefill), never from the batched
reference, so the batched reference is checked too.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from hypothesis import strategies as st

import gqa
from gqa_testing import poisoned, rand

PAGE_SIZES = [1, 7, 16, 256]


@dataclass
class Case:
    q: np.ndarray
    k: np.ndarray
    v: np.ndarray
    k_cache: np.ndarray           # [num_pages, page_size, Hkv, D], poisoned where not live
    v_cache: np.ndarray
    q_indptr: np.ndarray          # int32 [B + 1]
    kv_lens: np.ndarray           # int32 [B]
    page_table: np.ndarray        # int32 [B, max_pages_per_seq], -1 past each sequence's pages
    dense_k: list = field(default_factory=list)  # per sequence: [kv_len, Hkv, D] cached keys
    dense_v: list = field(default_factory=list)

    @property
    def batch(self):
        return len(self.kv_lens)

    @property
    def page_size(self):
        return self.k_cache.shape[1]

    def q_len(self, b):
        return int(self.q_indptr[b + 1] - self.q_indptr[b])

    def rows(self, b):
        return slice(int(self.q_indptr[b]), int(self.q_indptr[b + 1]))

    def arguments(self):
        return {"q_indptr": self.q_indptr, "kv_lens": self.kv_lens, "page_table": self.page_table}

    def copy_caches(self):
        return self.k_cache.copy(), self.v_cache.copy()

    def slots(self, b, positions):
        """(pages, slots) of sequence b's cache positions."""
        return gqa.reference.page_slots(self.page_table[b], positions, self.page_size)


def make_case(rng, q_lens, kv_lens, num_q_heads, num_kv_heads, head_dim, dtype, page_size, *,
              spare_pages=2, extra_columns=1, shuffle=True) -> Case:
    """A random ragged batch in a shuffled, NaN-poisoned page pool (see the module docstring)."""
    q_lens, kv_lens = list(q_lens), list(kv_lens)
    B = len(q_lens)
    need = [-(-(kv + q) // page_size) for q, kv in zip(q_lens, kv_lens)]
    used = sum(need)
    num_pages = used + spare_pages
    ids = rng.permutation(num_pages) if shuffle else np.arange(num_pages)
    width = max(need + [0]) + extra_columns
    table = np.full((B, max(width, 1)), -1, np.int32)
    taken = 0
    for b in range(B):
        table[b, :need[b]] = ids[taken:taken + need[b]]
        taken += need[b]
    total_q = sum(q_lens)
    case = Case(
        q=rand(rng, (total_q, num_q_heads, head_dim), dtype),
        k=rand(rng, (total_q, num_kv_heads, head_dim), dtype),
        v=rand(rng, (total_q, num_kv_heads, head_dim), dtype),
        k_cache=poisoned((num_pages, page_size, num_kv_heads, head_dim), dtype),
        v_cache=poisoned((num_pages, page_size, num_kv_heads, head_dim), dtype),
        q_indptr=np.concatenate([[0], np.cumsum(q_lens)]).astype(np.int32),
        kv_lens=np.asarray(kv_lens, np.int32), page_table=table)
    for b in range(B):
        keys = rand(rng, (kv_lens[b], num_kv_heads, head_dim), dtype)
        values = rand(rng, (kv_lens[b], num_kv_heads, head_dim), dtype)
        pages, slots = case.slots(b, np.arange(kv_lens[b]))
        case.k_cache[pages, slots], case.v_cache[pages, slots] = keys, values
        case.dense_k.append(keys)
        case.dense_v.append(values)
    return case


def expected(case: Case, *, causal=True, scale=None, **options):
    """(out float64 [total_q, Hq, D], k_cache, v_cache) from the dense reference, one sequence
    at a time on its own contiguous cache; with return_lse also lse [Hq, total_q]."""
    total_q, Hq, D = case.q.shape
    out = np.zeros((total_q, Hq, D))
    lse = np.full((Hq, total_q), -np.inf)
    k_cache, v_cache = case.copy_caches()
    for b in range(case.batch):
        n, start, rows = case.q_len(b), int(case.kv_lens[b]), case.rows(b)
        if n == 0:
            continue
        dense_k = np.concatenate([case.dense_k[b], np.zeros_like(case.k[rows])])[None]
        dense_v = np.concatenate([case.dense_v[b], np.zeros_like(case.v[rows])])[None]
        got = gqa.reference.prefill(case.q[None, rows], case.k[None, rows], case.v[None, rows], dense_k, dense_v,
                                    start_pos=start, causal=causal, scale=scale, **options)
        if options.get("return_lse"):
            got, got_lse = got
            lse[:, rows] = got_lse[0]
        out[rows] = got[0]
        pages, slots = case.slots(b, np.arange(start, start + n))
        k_cache[pages, slots], v_cache[pages, slots] = case.k[rows], case.v[rows]
    return (out, k_cache, v_cache, lse) if options.get("return_lse") else (out, k_cache, v_cache)


def contiguous(case: Case) -> Case:
    """The same batch in the contiguous layout: one page of max_len tokens per sequence,
    page_table[b] = b (the dense [B, max_len, Hkv, D] cache as a special case)."""
    max_len = max([int(case.kv_lens[b]) + case.q_len(b) for b in range(case.batch)] + [1])
    _, _, Hkv, D = case.k_cache.shape
    k_cache = poisoned((case.batch, max_len, Hkv, D), case.k_cache.dtype)
    v_cache = poisoned((case.batch, max_len, Hkv, D), case.v_cache.dtype)
    for b in range(case.batch):
        kv = int(case.kv_lens[b])
        k_cache[b, :kv], v_cache[b, :kv] = case.dense_k[b], case.dense_v[b]
    table = np.arange(case.batch, dtype=np.int32)[:, None]
    return Case(case.q, case.k, case.v, k_cache, v_cache, case.q_indptr, case.kv_lens, table,
                case.dense_k, case.dense_v)


def live_mask(case: Case, k_cache_after=None):
    """Boolean [num_pages, page_size]: the slots holding a sequence's positions after the call."""
    mask = np.zeros(case.k_cache.shape[:2], bool)
    for b in range(case.batch):
        pages, slots = case.slots(b, np.arange(int(case.kv_lens[b]) + case.q_len(b)))
        mask[pages, slots] = True
    return mask


@st.composite
def ragged_batches(draw, max_batch=5, max_q=20, max_kv=40):
    """(q_lens, kv_lens) of a random ragged batch: decode (1), prefill chunks, empty (0) rows."""
    B = draw(st.integers(1, max_batch))
    q_lens = draw(st.lists(st.sampled_from([0, 1, 1, 2, 5]) | st.integers(0, max_q), min_size=B, max_size=B))
    kv_lens = draw(st.lists(st.integers(0, max_kv), min_size=B, max_size=B))
    return q_lens, kv_lens
