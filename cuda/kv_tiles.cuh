// kv_tiles.cuh: what the attention kernels share: the K/V tile loader (cp.async: tensor-core
// prefill and both decode kernels), and what one prefill block (PrefillBlock) or one decode block
// (DecodeBlock, with its fused cache append) owns: its sequence, heads and key range.
#pragma once

#include "common.cuh"
#include "tensor_core.cuh"  // cp_async_16

namespace gqa {
namespace gpu {

// Key/value rows k0 .. k0 + kRows - 1 of sequence seq (KV head kvh) into ks and vs (row stride
// kStride elements), by threads tid, tid + kThreads, ... with cp.async: one page-table lookup
// per (thread, row). Rows at or past `end` are zero-filled, so P·V never meets stale shared
// memory or a NaN-poisoned cache slot; so are rows whose page id is outside the pool (skipped
// and reported). The caller commits the group.
template <typename T, int D, int kRows, int kStride, int kThreads>
__device__ __forceinline__ void load_kv_rows(const AttnParams& p, const Sequence& seq, int64_t kvh, int64_t k0,
                                             int64_t end, T* ks, T* vs, int tid) {
    constexpr int kChunks = D / kVec;
    const KvSource<T> src = p.kv_source<T>(seq, kvh);
    for (int e = tid; e < kRows * kChunks; e += kThreads) {
        const int r = e / kChunks, c = e % kChunks;
        const int64_t pos = k0 + r;
        bool valid = pos < end;
        // An invalid row reads nothing, but cp.async still wants a valid address: k and v.
        const T* ksrc = static_cast<const T*>(p.k);
        const T* vsrc = static_cast<const T*>(p.v);
        if (valid) {
            const KvRow<T> row = src.row(pos);
            if (row.k) {
                ksrc = row.k + c * kVec;
                vsrc = row.v + c * kVec;
            } else {
                valid = false;
                if (c == 0) p.report(GQA_BATCH_FLAG_BAD_PAGE);
            }
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

// __launch_bounds__' minimum blocks per SM of both decode kernels. 1 lets ptxas give a kernel
// the registers its code needs: without it ptxas picks an occupancy tier (64, 80, 96, 128,
// 168 registers ...) and spilled 4-28 bytes in kernels that sat just above one (the batched
// op's rows, pages and masks added a few registers). Shared memory, not registers, bounds
// the blocks per SM of the deeper rings; at d32-d96 the SIMT decode may run fewer blocks per
// SM than it could (GPU-NOTES 6; unmeasured).
constexpr int kDecodeMinBlocksPerSm = 1;

// Blocks per KV head: its rows (decode: query heads x new tokens) in groups of at most `rows`.
__host__ __device__ inline int64_t decode_head_groups(int64_t group_rows, int64_t rows) {
    return (group_rows + rows - 1) / rows;
}

// What one prefill block owns. Grid: (query tile, query head, sequence of the chunk). With
// kHeaviestFirst, causal blocks run heaviest first (the sequence's last query tile has the most
// keys), so that the long blocks do not all end up in the final wave. The block's queries q0 ..
// q0 + kQueries - 1 (rows past q_len are computed, never written) see keys [lo, hi): from the
// first key its first query sees to the last its last real query sees (the window and
// causality cut both ends), in num_tiles tiles of kTileKeys. No key outside is loaded; each
// row masks the keys of [lo, hi) it does not see (row_begin, row_end). An inactive block (its
// sequence not run, run by the decode kernel, or shorter than its tile) returns at once.
template <int kQueries, int kTileKeys, bool kHeaviestFirst>
struct PrefillBlock {
    Sequence seq;
    int64_t q0, qh, kvh, kv_len, lo, hi;
    int64_t num_tiles;
    bool active;

    __device__ explicit PrefillBlock(const AttnParams& p) : seq(p.sequence(blockIdx.z)) {
        const int64_t q_tiles = (seq.q_len + kQueries - 1) / kQueries;  // gridDim.x for prefill
        active = seq.run && seq.q_len > p.decode_max_q && int64_t(blockIdx.x) < q_tiles;
        const int64_t q_tile = kHeaviestFirst && p.causal ? q_tiles - 1 - blockIdx.x : int64_t(blockIdx.x);
        q0 = q_tile * kQueries;
        qh = blockIdx.y;
        kvh = qh / p.group;
        kv_len = seq.start + seq.q_len;
        const int64_t last = min(q0 + int64_t(kQueries), int64_t(seq.q_len)) - 1;  // the last real query
        lo = p.key_begin(seq.start + q0);
        hi = p.key_end(seq.start + last, kv_len);
        num_tiles = hi > lo ? (hi - lo + kTileKeys - 1) / kTileKeys : 0;
    }
    // Query row r of the block is new token q0 + r; its absolute position is start + q0 + r.
    __device__ bool has_row(int64_t r) const { return q0 + r < seq.q_len; }
    // The keys row r sees, within [lo, hi) (rows past q_len: whatever of [lo, hi) they would see).
    __device__ int64_t row_begin(const AttnParams& p, int64_t r) const { return max(lo, p.key_begin(seq.start + q0 + r)); }
    __device__ int64_t row_end(const AttnParams& p, int64_t r) const {
        return min(hi, p.key_end(seq.start + q0 + r, kv_len));
    }
};

// Launch grids, one chunk of sequences at a time.
template <int kQueries>
inline dim3 prefill_grid(const AttnParams& p) {
    return dim3(unsigned((p.seq_len + kQueries - 1) / kQueries), unsigned(p.num_q_heads),
                unsigned(p.chunk.count));
}
template <int kRows>
inline dim3 decode_grid(const AttnParams& p) {
    return dim3(unsigned(p.num_splits),
                unsigned(p.num_kv_heads * decode_head_groups(p.group * p.decode_max_q, kRows)),
                unsigned(p.chunk.count));
}

// What one decode block owns. Grid: (split, KV head x row group, sequence of the chunk). The
// rows of a KV head are its (new token, query head) pairs, token-major: row R is new token
// R / group, query head kvh * group + R % group (decode: one token, the rows are the heads).
// The block serves rows hg * kRows .. + nr - 1 over the keys [lo, hi) of its split (lo >= hi:
// an empty split). The splits cut the keys the sequence's queries see (from the first token's
// window start to the last token's end), not the whole cache, so no key outside is loaded;
// row r masks the keys of [lo, hi) outside [row_begin(r), row_end(r)) (its own window and
// causality: decode's single token sees all of them). Keys from seq.start on are the new
// tokens. An inactive block (its sequence not run, run by the prefill kernel, past the
// sequence's rows or splits) returns at once.
template <int kRows, int kTileKeys>
struct DecodeBlock {
    Sequence seq;
    int64_t kvh, hg, split, splits, kv_len, lo, hi;
    int64_t num_tiles;  // key tiles of kTileKeys in [lo, hi)
    int nr;
    bool active;

    __device__ explicit DecodeBlock(const AttnParams& p) : seq(p.sequence(blockIdx.z)) {
        const int64_t row_groups = decode_head_groups(p.group * p.decode_max_q, kRows);
        kvh = blockIdx.y / row_groups;
        hg = blockIdx.y % row_groups;
        split = blockIdx.x;
        const int64_t rows = p.group * seq.q_len - hg * kRows;
        nr = int(rows < kRows ? (rows > 0 ? rows : 0) : kRows);
        splits = p.splits_of(seq);
        active = seq.run && seq.q_len <= p.decode_max_q && nr > 0 && split < splits;
        kv_len = seq.start + seq.q_len;
        const int64_t first = p.key_begin(seq.start), end = p.key_end(seq.start + seq.q_len - 1, kv_len);
        const int64_t per_split = decode_keys_per_split(end - first, splits, kTileKeys);
        lo = first + split * per_split;
        hi = min(end, lo + per_split);
        num_tiles = hi > lo ? (hi - lo + kTileKeys - 1) / kTileKeys : 0;
    }

    // Row r of the block: new token token(r), query head head(r).
    __device__ int64_t token(const AttnParams& p, int r) const { return p.group_div.div(uint32_t(hg * kRows + r)); }
    __device__ int64_t head(const AttnParams& p, int r) const {
        const int64_t row = hg * kRows + r;
        return kvh * p.group + row - token(p, r) * p.group;
    }
    // The absolute position of row r's token, and the keys of [lo, hi) the row sees:
    // [row_begin(r), row_end(r)) (possibly empty in a split).
    __device__ int64_t row_pos(const AttnParams& p, int r) const { return seq.start + token(p, r); }
    __device__ int64_t row_begin(const AttnParams& p, int r) const { return max(lo, p.key_begin(seq.start + token(p, r))); }
    __device__ int64_t row_end(const AttnParams& p, int r) const {
        return min(hi, p.key_end(seq.start + token(p, r), kv_len));
    }

    // The new tokens' K and V into the cache rows seq.start .., by the block of split 0 and row
    // group 0 only. No block of the launch reads those rows (keys from seq.start on come from k
    // and v), so the fused append cannot race with the attention. A row whose page id is
    // outside the pool is skipped and reported.
    template <typename T, int D, int kThreads>
    __device__ void append_new_tokens(const AttnParams& p, int tid) const {
        if (split != 0 || hg != 0) return;
        constexpr int kChunks = D / kVec;
        const int count = int(seq.q_len) * kChunks;  // q_len <= decode_max_q <= kDecodeMaxQLen
        for (int e = tid; e < count; e += kThreads) {
            const int t = e / kChunks, c = e % kChunks;
            const int64_t dst = p.cache_row(seq, seq.start + t, kvh);
            if (dst < 0) {
                if (c == 0) p.report(GQA_BATCH_FLAG_BAD_PAGE);
                continue;
            }
            store16(static_cast<T*>(p.k_cache) + dst + c * kVec,
                    load16(static_cast<const T*>(p.k) + p.new_k_row(seq, t, kvh) + c * kVec));
            store16(static_cast<T*>(p.v_cache) + dst + c * kVec,
                    load16(static_cast<const T*>(p.v) + p.new_v_row(seq, t, kvh) + c * kVec));
        }
    }

    // The output row of block row r, or with splits its partial's entry; its query row; its lse.
    __device__ int64_t out_row(const AttnParams& p, int r) const { return p.out_row(seq, token(p, r), head(p, r)); }
    __device__ int64_t partial_entry(const AttnParams& p, int r) const {
        return p.partial_entry(seq.b, token(p, r), head(p, r), split);
    }
    __device__ int64_t q_row(const AttnParams& p, int r) const { return p.q_row(seq, token(p, r), head(p, r)); }
    __device__ int64_t lse_entry(const AttnParams& p, int r) const { return p.lse_entry(seq, token(p, r), head(p, r)); }
};

}  // namespace gpu
}  // namespace gqa
