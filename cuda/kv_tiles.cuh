// kv_tiles.cuh: what the attention kernels share: the K/V tile loader (cp.async: tensor-core
// prefill and both decode kernels), and what one prefill block (PrefillBlock) or one decode block
// (DecodeBlock, with its fused cache append) owns: its sequence, heads and key range.
#pragma once

#include "common.cuh"
#include "tensor_core.cuh"  // cp_async_16

namespace gqa {
namespace gpu {

// Key/value rows k0 .. k0 + kRows - 1 of sequence b (KV head kvh) into ks and vs (row stride
// kStride elements), by threads tid, tid + kThreads, ... with cp.async. Rows at or past `end`
// are zero-filled, so P·V never meets stale shared memory or a NaN-poisoned cache slot. The
// caller commits the group.
template <typename T, int D, int kRows, int kStride, int kThreads>
__device__ __forceinline__ void load_kv_rows(const AttnParams& p, int64_t b, int64_t kvh, int64_t start,
                                             int64_t k0, int64_t end, T* ks, T* vs, int tid) {
    constexpr int kChunks = D / kVec;
    const KvSource<T> src = p.kv_source<T>(b, kvh, start);
    for (int e = tid; e < kRows * kChunks; e += kThreads) {
        const int r = e / kChunks, c = e % kChunks;
        const int64_t pos = k0 + r;
        const bool valid = pos < end;
        // An invalid row reads nothing, but cp.async still wants a valid address: k and v.
        const T* ksrc = static_cast<const T*>(p.k);
        const T* vsrc = static_cast<const T*>(p.v);
        if (valid) {
            const KvRow<T> row = src.row(pos);
            ksrc = row.k + c * kVec;
            vsrc = row.v + c * kVec;
        }
        cp_async_16(&ks[r * kStride + c * kVec], ksrc, valid);
        cp_async_16(&vs[r * kStride + c * kVec], vsrc, valid);
    }
}

// Keys of split `split` for a sequence with kv_len keys: whole tiles, the last split shorter.
__host__ __device__ inline int64_t decode_keys_per_split(int64_t kv_len, int64_t splits,
                                                         int64_t tile) {
    const int64_t per = (kv_len + splits - 1) / splits;
    return (per + tile - 1) / tile * tile;
}

// Blocks per KV head: its group of query heads in groups of at most `heads`.
__host__ __device__ inline int64_t decode_head_groups(int64_t group, int64_t heads) {
    return (group + heads - 1) / heads;
}

// What one prefill block owns. Grid: (query tile, query head, sequence of the chunk). With
// kHeaviestFirst, causal blocks run heaviest first (the last query tile has the most keys), so
// that the long blocks do not all end up in the final wave. The block's queries q0 .. q0 +
// kQueries - 1 (rows past seq_len are computed, never written) see keys [lo, hi): from the
// first key its first query sees to the last its last real query sees (the window and
// causality cut both ends), in num_tiles tiles of kTileKeys. No key outside is loaded; each
// row masks the keys of [lo, hi) it does not see (row_begin / row_end).
template <int kQueries, int kTileKeys, bool kHeaviestFirst>
struct PrefillBlock {
    int64_t q0, qh, kvh, b, start, kv_len, lo, hi;
    int64_t num_tiles;
    int chunk_index;  // b's index in p.chunk

    __device__ explicit PrefillBlock(const AttnParams& p) {
        const int64_t q_tile =
            kHeaviestFirst && p.causal ? int64_t(gridDim.x) - 1 - blockIdx.x : int64_t(blockIdx.x);
        q0 = q_tile * kQueries;
        qh = blockIdx.y;
        kvh = qh / p.group;
        chunk_index = int(blockIdx.z);
        b = int64_t(p.chunk.first) + chunk_index;
        start = p.chunk.start[chunk_index];
        kv_len = start + p.seq_len;
        const int64_t last = min(q0 + int64_t(kQueries), p.seq_len) - 1;  // the last real query
        lo = p.key_begin(start + q0);
        hi = p.key_end(start + last, kv_len);
        num_tiles = hi > lo ? (hi - lo + kTileKeys - 1) / kTileKeys : 0;
    }
    // Query row r of the block is new token q0 + r; its absolute position is start + q0 + r.
    __device__ bool has_row(const AttnParams& p, int64_t r) const { return q0 + r < p.seq_len; }
    // The keys row r sees, within [lo, hi) (rows past seq_len: whatever of [lo, hi) they would see).
    __device__ int64_t row_begin(const AttnParams& p, int64_t r) const { return max(lo, p.key_begin(start + q0 + r)); }
    __device__ int64_t row_end(const AttnParams& p, int64_t r) const { return min(hi, p.key_end(start + q0 + r, kv_len)); }
};

// Launch grids, one chunk of sequences at a time.
template <int kQueries>
inline dim3 prefill_grid(const AttnParams& p) {
    return dim3(unsigned((p.seq_len + kQueries - 1) / kQueries), unsigned(p.num_q_heads),
                unsigned(p.chunk.count));
}
template <int kHeads>
inline dim3 decode_grid(const AttnParams& p) {
    return dim3(unsigned(p.num_splits), unsigned(p.num_kv_heads * decode_head_groups(p.group, kHeads)),
                unsigned(p.chunk.count));
}

// What one decode block owns. Grid: (split, KV head x head group, sequence of the chunk); the
// block serves query heads h0 .. h0 + nh - 1 (at most kHeads of KV head kvh's group) over the
// keys [lo, hi) of its split (lo >= hi: an empty split). Key `start` is the new token. The
// splits cut the keys the query sees (its window), not the whole cache, so every key of
// [lo, hi) is visible and no key outside is loaded.
template <int kHeads, int kTileKeys>
struct DecodeBlock {
    int64_t kvh, hg, h0, b, start, split, lo, hi;
    int64_t num_tiles;  // key tiles of kTileKeys in [lo, hi)
    int nh;

    __device__ explicit DecodeBlock(const AttnParams& p) {
        const int64_t head_groups = decode_head_groups(p.group, kHeads);
        kvh = blockIdx.y / head_groups;
        hg = blockIdx.y % head_groups;
        h0 = kvh * p.group + hg * kHeads;
        nh = int(min(int64_t(kHeads), p.group - hg * kHeads));
        b = int64_t(p.chunk.first) + blockIdx.z;
        start = p.chunk.start[blockIdx.z];
        split = blockIdx.x;
        const int64_t first = p.key_begin(start), end = start + 1;  // no key lies right of the query
        const int64_t per_split = decode_keys_per_split(end - first, p.num_splits, kTileKeys);
        lo = first + split * per_split;
        hi = min(end, lo + per_split);
        num_tiles = hi > lo ? (hi - lo + kTileKeys - 1) / kTileKeys : 0;
    }

    // The new token's K and V into the cache row `start`, by the block of split 0 and head
    // group 0 only. No block of the launch reads that row (key `start` comes from k and v), so
    // the fused append cannot race with the attention.
    template <typename T, int D>
    __device__ void append_new_token(const AttnParams& p, int tid) const {
        if (split != 0 || hg != 0 || tid >= D / kVec) return;
        const int64_t dst = p.cache_row(b, start, kvh) + tid * kVec;
        store16(static_cast<T*>(p.k_cache) + dst, load16(static_cast<const T*>(p.k) + p.new_k_row(b, 0, kvh) + tid * kVec));
        store16(static_cast<T*>(p.v_cache) + dst, load16(static_cast<const T*>(p.v) + p.new_v_row(b, 0, kvh) + tid * kVec));
    }

    // The output row of query head h (0 .. nh - 1), or with splits its partial's entry.
    __device__ int64_t out_row(const AttnParams& p, int h) const { return p.out_row(b, 0, h0 + h); }
    __device__ int64_t partial_entry(const AttnParams& p, int h) const { return p.partial_entry(b, h0 + h, split); }
    __device__ int64_t q_row(const AttnParams& p, int h) const { return p.q_row(b, 0, h0 + h); }
};

}  // namespace gpu
}  // namespace gqa
