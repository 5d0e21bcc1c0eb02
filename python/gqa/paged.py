"""gqa.PagedKVCache: the page pool and page tables of a paged KV cache, for gqa.batch_attention.

Pure Python/NumPy bookkeeping, so a caller need not write it: a pool of ``num_pages`` pages of
``page_size`` tokens, sequences that own lists of pages (pages need not be in order), and for
each step the ``q_indptr``, ``kv_lens`` and ``page_table`` arrays the batched op takes.

    cache = gqa.PagedKVCache(num_pages=64, page_size=16, num_kv_heads=2, head_dim=64, num_layers=2)
    a, b = cache.add(), cache.add()
    step = cache.step({a: 7, b: 1})       # a: a 7-token prompt chunk, b: one decode token
    out = gqa.batch_attention(q, k, v, cache.k_caches[0], cache.v_caches[0], **step.arguments())
    cache.free(a)

``step`` reserves the pages the new tokens need and counts them as cached: the batched call of
every layer then writes them. ``fork`` starts a sequence that shares a prefix with another: its
full pages are shared read-only (reference counted), the partly filled last page is copied, so
no call ever writes into a shared page (the batched op rejects that on the CPU).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping

import numpy as np

from ._errors import CacheOverflowError, InvalidArgumentError


@dataclass(frozen=True)
class BatchStep:
    """The metadata of one batched call: the sequences in row order and their arrays (int32)."""

    seq_ids: tuple
    q_indptr: np.ndarray      # [batch + 1]
    kv_lens: np.ndarray       # [batch], tokens cached before this step
    page_table: np.ndarray    # [batch, max_pages_per_seq], -1 past a sequence's pages

    @property
    def total_q(self) -> int:
        return int(self.q_indptr[-1])

    def rows(self, seq_id) -> slice:
        """The rows of q/k/v/out that belong to seq_id."""
        b = self.seq_ids.index(seq_id)
        return slice(int(self.q_indptr[b]), int(self.q_indptr[b + 1]))

    def arguments(self) -> dict:
        """Keyword arguments for gqa.batch_attention (and gqa.reference.batch_attention)."""
        return {"q_indptr": self.q_indptr, "kv_lens": self.kv_lens, "page_table": self.page_table}


class PagedKVCache:
    """A pool of KV pages shared by many sequences (see the module docstring).

    With ``num_layers`` > 0 it also holds the storage: ``k_caches[layer]`` and
    ``v_caches[layer]``, NumPy arrays [num_pages, page_size, num_kv_heads, head_dim] of
    ``dtype``. With num_layers=0 it is bookkeeping only (for caches the caller allocates, e.g.
    torch tensors of shape ``pool_shape``)."""

    def __init__(self, num_pages: int, page_size: int, num_kv_heads: int, head_dim: int, *,
                 dtype=np.float16, num_layers: int = 1, max_pages_per_seq: int | None = None,
                 fill: float = 0.0):
        for name, value in (("num_pages", num_pages), ("page_size", page_size),
                            ("num_kv_heads", num_kv_heads), ("head_dim", head_dim)):
            if int(value) < 1:
                raise InvalidArgumentError(f"{name} ({value}) must be >= 1")
        if num_layers < 0:
            raise InvalidArgumentError(f"num_layers ({num_layers}) must be >= 0")
        self.page_size = int(page_size)
        self.num_pages = int(num_pages)
        self.max_pages_per_seq = int(max_pages_per_seq or num_pages)
        if self.max_pages_per_seq < 1:
            raise InvalidArgumentError(f"max_pages_per_seq ({max_pages_per_seq}) must be >= 1")
        self.pool_shape = (self.num_pages, self.page_size, int(num_kv_heads), int(head_dim))
        self.k_caches = [np.full(self.pool_shape, fill, dtype) for _ in range(num_layers)]
        self.v_caches = [np.full(self.pool_shape, fill, dtype) for _ in range(num_layers)]
        # Lowest ids first out of the free list, so a fresh pool hands pages out in order.
        self._free = list(range(self.num_pages - 1, -1, -1))
        self._refs = [0] * self.num_pages
        self._pages: dict = {}    # seq_id -> [page ids]
        self._lengths: dict = {}  # seq_id -> tokens cached
        self._next_id = 0

    # ---------------------------------------------------------------- sequences
    def add(self, seq_id=None):
        """A new, empty sequence; returns its id (the next integer unless one is given)."""
        if seq_id is None:
            while self._next_id in self._pages:
                self._next_id += 1
            seq_id = self._next_id
        if seq_id in self._pages:
            raise InvalidArgumentError(f"sequence {seq_id!r} already exists")
        self._pages[seq_id], self._lengths[seq_id] = [], 0
        return seq_id

    def extend(self, seq_id, num_tokens: int) -> None:
        """Reserve pages so that num_tokens more tokens fit (the length does not change)."""
        pages = self._pages_of(seq_id)
        if num_tokens < 0:
            raise InvalidArgumentError(f"num_tokens ({num_tokens}) must be >= 0")
        needed = -(-(self._lengths[seq_id] + num_tokens) // self.page_size)
        if needed > self.max_pages_per_seq:
            raise CacheOverflowError(
                f"sequence {seq_id!r} would need {needed} pages for {self._lengths[seq_id] + num_tokens} "
                f"tokens, more than max_pages_per_seq ({self.max_pages_per_seq})")
        if needed - len(pages) > len(self._free):
            raise CacheOverflowError(
                f"sequence {seq_id!r} needs {needed - len(pages)} more pages but only {len(self._free)} "
                f"of {self.num_pages} are free")
        while len(pages) < needed:
            page = self._free.pop()
            self._refs[page] = 1
            pages.append(page)

    def fork(self, parent, seq_id=None):
        """A new sequence with the parent's cached tokens: full pages shared, the partly filled
        last page copied (in every layer of the storage)."""
        pages, length = self._pages_of(parent), self._lengths[parent]
        full = length // self.page_size
        child = self.add(seq_id)
        for page in pages[:full]:
            self._refs[page] += 1
        self._pages[child] = list(pages[:full])
        self._lengths[child] = full * self.page_size
        if length % self.page_size:
            try:
                self.extend(child, length - full * self.page_size)
            except CacheOverflowError:
                self.free(child)
                raise
            src, dst = pages[full], self._pages[child][-1]
            for cache in self.k_caches + self.v_caches:
                cache[dst] = cache[src]
        self._lengths[child] = length
        return child

    def free(self, seq_id) -> None:
        """Forget a sequence; pages no other sequence shares go back to the pool."""
        for page in reversed(self._pages_of(seq_id)):
            self._refs[page] -= 1
            if self._refs[page] == 0:
                self._free.append(page)
        del self._pages[seq_id], self._lengths[seq_id]

    # ---------------------------------------------------------------- steps
    def step(self, q_lens: Mapping) -> BatchStep:
        """Metadata of one batched call in which sequence s (in the mapping's order) adds
        q_lens[s] >= 0 tokens: reserves their pages, then counts them as cached. On
        CacheOverflowError no length changes (pages reserved for earlier sequences stay theirs)."""
        for seq_id, n in q_lens.items():
            self.extend(seq_id, int(n))
        seq_ids = tuple(q_lens)
        counts = np.array([int(q_lens[s]) for s in seq_ids], dtype=np.int64)
        q_indptr = np.concatenate([[0], np.cumsum(counts)]).astype(np.int32)
        kv_lens = np.array([self._lengths[s] for s in seq_ids], dtype=np.int32)
        table = np.full((len(seq_ids), self.max_pages_per_seq), -1, np.int32)
        for b, s in enumerate(seq_ids):
            table[b, :len(self._pages[s])] = self._pages[s]
            self._lengths[s] += int(counts[b])
        return BatchStep(seq_ids, q_indptr, kv_lens, table)

    # ---------------------------------------------------------------- queries
    def length(self, seq_id) -> int:
        self._pages_of(seq_id)
        return self._lengths[seq_id]

    def pages(self, seq_id) -> list:
        return list(self._pages_of(seq_id))

    @property
    def sequences(self) -> tuple:
        return tuple(self._pages)

    @property
    def num_free_pages(self) -> int:
        return len(self._free)

    def _pages_of(self, seq_id) -> list:
        try:
            return self._pages[seq_id]
        except KeyError:
            raise InvalidArgumentError(f"no sequence {seq_id!r} in this cache") from None
