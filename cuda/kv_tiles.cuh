// kv_tiles.cuh: what the cp.async kernels share: the K/V tile loader (tensor-core prefill and
// both decode kernels) and a decode block's share of the work and its fused cache append.
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
    const T* k_new = static_cast<const T*>(p.k);
    const T* v_new = static_cast<const T*>(p.v);
    const T* k_cache = static_cast<const T*>(p.k_cache);
    const T* v_cache = static_cast<const T*>(p.v_cache);
    for (int e = tid; e < kRows * kChunks; e += kThreads) {
        const int r = e / kChunks, c = e % kChunks;
        const int64_t pos = k0 + r;
        const bool valid = pos < end;
        const T* ksrc = k_new;
        const T* vsrc = v_new;
        if (valid) {
            bool cached;
            const int64_t off = kv_row_offset<T, D>(p, b, kvh, pos, start, &cached) + c * kVec;
            ksrc = (cached ? k_cache : k_new) + off;
            vsrc = (cached ? v_cache : v_new) + off;
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

// A decode launch's grid: (split, KV head x head group, sequence of the chunk).
inline dim3 decode_grid(const AttnParams& p, int heads) {
    return dim3(unsigned(p.num_splits), unsigned(p.num_kv_heads * decode_head_groups(p.group, heads)),
                unsigned(p.chunk.count));
}

// What one decode block owns. Grid: (split, KV head x head group, sequence of the chunk); the
// block serves query heads h0 .. h0 + nh - 1 (at most kHeads of KV head kvh's group) over the
// keys [lo, hi) of its split (lo >= hi: an empty split). Key `start` is the new token.
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
        const int64_t kv_len = start + 1;
        const int64_t per_split = decode_keys_per_split(kv_len, p.num_splits, kTileKeys);
        lo = split * per_split;
        hi = min(kv_len, lo + per_split);
        num_tiles = hi > lo ? (hi - lo + kTileKeys - 1) / kTileKeys : 0;
    }

    // The new token's K and V into the cache row `start`, by the block of split 0 and head
    // group 0 only. No block of the launch reads that row (key `start` comes from k and v), so
    // the fused append cannot race with the attention.
    template <typename T, int D>
    __device__ void append_new_token(const AttnParams& p, int tid) const {
        if (split != 0 || hg != 0 || tid >= D / kVec) return;
        const int64_t src = (b * p.num_kv_heads + kvh) * D + tid * kVec;
        const int64_t dst = ((b * p.max_seq_len + start) * p.num_kv_heads + kvh) * D + tid * kVec;
        store16(static_cast<T*>(p.k_cache) + dst, load16(static_cast<const T*>(p.k) + src));
        store16(static_cast<T*>(p.v_cache) + dst, load16(static_cast<const T*>(p.v) + src));
    }
};

}  // namespace gpu
}  // namespace gqa
