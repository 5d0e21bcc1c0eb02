// decode_tc_kernel.cuh: GQA decode on tensor cores (sm_80+: mma.sync m16n8k16, ldmatrix,
// cp.async ring). Same semantics, parameters and split-KV partials as decode_kernel.cuh, which
// stays as the SIMT path (GQA_CUDA_DECODE=simt) and the default for groups of 1-3 query heads.
//
// Why: a decode step reads each K/V element once and, with G query heads per KV head, does 2G
// multiply-adds with it. At G = 8 and bf16 that is 8 FMAs per byte: at H100/H200 bandwidth more
// fp32 FMAs than the SIMT units have. On tensor cores the G heads are the rows of the mma
// (FlashInfer does the same for large groups), so the math is nearly free and the kernel can
// stay memory-bound.
//
// One block = (split, kv head x group of up to 16 rows, sequence): the rows are (new token,
// query head) pairs as in decode_kernel.cuh (DecodeBlock), each masking the keys outside its
// own window and causal range; "heads" below are these rows. 4 warps; a key tile of 16 x
// kKeySlices keys gives each warp its own 16 keys, over which it keeps its own online softmax:
//   S[16 heads x 16 keys] = Q·Kᵀ   (A = Q via ldmatrix, B = K rows via ldmatrix)
//   O[16 heads x D]      += P·V    (A = P from the S accumulators, B = V via ldmatrix.trans)
// At the end the key slices' (m, l, O) are merged through shared memory in a fixed order.
// Above head_dim 256 O would not fit one warp's registers: two warps (kColSplit) share each 16
// keys, both compute the same S and softmax state, and each accumulates half of O's columns.
// Head rows past the block's rows are zero and never written. The new tokens are read from k,
// v and copied into the cache as in decode_kernel.cuh (no block of the launch reads those rows).
// Where the deepest ring does not fit a device's shared memory (99 KB per block on sm_86,
// sm_89, sm_120: d128 needs 108,800 B with 3 stages), one stage less is used.
#pragma once

#include <cmath>

#include "common.cuh"
#include "fragment_softmax.cuh"
#include "kv_tiles.cuh"
#include "launchers.hpp"
#include "tensor_core.cuh"

namespace gqa {
namespace gpu {

// The deepest K/V ring of the tensor-core decode for head_dim D.
constexpr int decode_tc_stages(int d) { return d > 128 ? 2 : 3; }

template <int D, int Stages>
struct DecodeTcTile {
    static constexpr int kWarps = 4;
    static constexpr int kThreads = 32 * kWarps;
    static constexpr int kHeads = 16;             // query heads per block: the mma's M
    static constexpr int kColSplit = D > 256 ? 2 : 1;  // warps sharing 16 keys, one O column range each
    static constexpr int kKeySlices = kWarps / kColSplit;
    static constexpr int kKeys = 16 * kKeySlices; // keys per tile: 16 per key slice
    static constexpr int kChunks = D / kVec;      // 16-byte chunks per row
    static constexpr int kStride = D + kVec;      // odd number of 16 B units: no ldmatrix conflicts
    static constexpr int kCols = D / kColSplit;   // O columns per warp
    static constexpr int kOTiles = kCols / 8;     // 8-wide column tiles of this warp's O
    static constexpr int kStages = Stages;
    static constexpr size_t kStageElems = size_t(2) * kKeys * kStride;  // K then V
    static constexpr size_t kRingBytes = sizeof(uint16_t) * kStages * kStageElems;
    static constexpr size_t kQBytes = sizeof(uint16_t) * kHeads * kStride;
    // The merge reuses the ring: per key slice O [kHeads][kMergeStride] floats, then (m, l) pairs.
    static constexpr int kMergeStride = D + 4;  // +4 floats: the 8 rows of a column in 8 banks
    static constexpr size_t kMergeBytes = sizeof(float) * kKeySlices * kHeads * (kMergeStride + 2);
    static constexpr size_t kSmemBytes = kQBytes + kRingBytes;
    static_assert(D % 16 == 0, "the tensor-core decode needs head_dim % 16 == 0");
    static_assert((kStride / kVec) % 2 == 1, "row stride must be an odd number of 16 B units");
    static_assert(kOTiles % 2 == 0, "ldmatrix.x4 loads two column tiles");
    static_assert(kMergeBytes <= kRingBytes, "the merge buffer must fit in the ring");
};

template <typename T, int D, int Stages>
__global__ void __launch_bounds__(DecodeTcTile<D, Stages>::kThreads, kDecodeMinBlocksPerSm)
    decode_tc_kernel(const __grid_constant__ AttnParams p) {
    using Tile = DecodeTcTile<D, Stages>;
    constexpr int kK = Tile::kKeys, kH = Tile::kHeads, kStride = Tile::kStride;
    constexpr int kChunks = Tile::kChunks, kStages = Tile::kStages;
    using Pair = typename Storage<T>::Pair;

    T* const q_s = reinterpret_cast<T*>(dynamic_smem());  // [kH][kStride]
    T* const ring = q_s + kH * kStride;                    // [kStages][K, V][kK][kStride]

    const int tid = threadIdx.x;
    const int lane = tid % 32;
    // This warp's 16 keys of each tile and its first O column (constants without a column
    // split: a run-time 0 there cost d256 40 registers).
    const int warp = Tile::kColSplit == 1 ? tid / 32 : tid / 32 % Tile::kKeySlices;
    const int col0 = Tile::kColSplit == 1 ? 0 : tid / 32 / Tile::kKeySlices * Tile::kCols;
    const int group = lane / 4, t = lane % 4;  // fragment coordinates (tensor_core.cuh)
    const DecodeBlock<kH, kK> blk(p);
    if (!blk.active) return;  // block-uniform, before any barrier
    const int64_t kvh = blk.kvh, lo = blk.lo, hi = blk.hi;
    const int nh = blk.nr;
    blk.template append_new_tokens<T, D, Tile::kThreads>(p, tid);

    // The block's query heads; rows past nh are zero (computed, never written).
    const T* q = static_cast<const T*>(p.q);
    for (int e = tid; e < kH * kChunks; e += Tile::kThreads) {
        const int h = e / kChunks, c = e % kChunks;
        const bool valid = h < nh;
        const T* src = valid ? q + blk.q_row(p, h) + c * kVec : q;
        cp_async_16(&q_s[h * kStride + c * kVec], src, valid);
    }

    // Tile `tile` of this split into ring slot `slot` (rows at or past hi zero-filled).
    auto load_tile = [&](int tile, int slot) {
        T* ks = ring + slot * Tile::kStageElems;
        load_kv_rows<T, D, kK, kStride, Tile::kThreads>(p, blk.seq, kvh, lo + tile * kK, hi, ks,
                                                        ks + kK * kStride, tid);
    };
    const int num_tiles = int(blk.num_tiles);  // < 2^31 / kK: positions are int32
    // Prologue: Q and the first kStages - 1 tiles. Every step commits one group (maybe empty),
    // so "at most kStages - 1 groups pending" always means "this tile (and Q) has landed".
#pragma unroll
    for (int s = 0; s < kStages - 1; ++s) {
        if (s < num_tiles) load_tile(s, s);
        cp_async_commit();
    }

    float o[Tile::kOTiles][4];
#pragma unroll
    for (int i = 0; i < Tile::kOTiles; ++i) o[i][0] = o[i][1] = o[i][2] = o[i][3] = 0.0f;
    float m[2] = {-INFINITY, -INFINITY};  // running max of head rows group, group+8 (base 2)
    float l[2] = {0.0f, 0.0f};            // this lane's part of the running sums
    // ldmatrix row addresses: lane l gives row l % 8 of matrix l / 8.
    const int lm_row = lane % 8 + ((lane / 8) % 2) * 8;  // matrices 1, 3 are 8 rows further
    const int lm_col = (lane / 16) * 8;                  // matrices 2, 3 are 8 columns further
    const T* q_frag = q_s + lm_row * kStride + lm_col;
    // Head rows group, group + 8 see the keys [begin[r], end[r]) of [lo, hi) (positions are
    // below 2^31: AttnParams::sequence).
    const int32_t begin[2] = {int32_t(blk.row_begin(p, group)), int32_t(blk.row_begin(p, group + 8))};
    const int32_t end[2] = {int32_t(blk.row_end(p, group)), int32_t(blk.row_end(p, group + 8))};

    for (int tile = 0; tile < num_tiles; ++tile) {
        const int ahead = tile + kStages - 1;  // refills the slot freed last iteration
        if (ahead < num_tiles) load_tile(ahead, ahead % kStages);
        cp_async_commit();
        cp_async_wait<kStages - 1>();
        __syncthreads();
        const T* ks = ring + (tile % kStages) * Tile::kStageElems + 16 * warp * kStride;
        const T* vs = ks + kK * kStride;  // this warp's 16 V rows

        // S = Q·Kᵀ: 16 head rows x the warp's 16 keys (two 8-key column tiles).
        float s[2][4] = {{0.0f, 0.0f, 0.0f, 0.0f}, {0.0f, 0.0f, 0.0f, 0.0f}};
#pragma unroll
        for (int kk = 0; kk < D / 16; ++kk) {
            uint32_t a[4], kb[4];
            ldmatrix_x4(a, q_frag + kk * 16);
            // matrices: keys +0 / +8 (lane / 16), head-dim columns +0 / +8 (lane / 8 % 2)
            ldmatrix_x4(kb, ks + (lane % 8 + (lane / 16) * 8) * kStride + kk * 16 + ((lane / 8) % 2) * 8);
            mma_16x8x16<T>(s[0], a, kb[0], kb[1]);
            mma_16x8x16<T>(s[1], a, kb[2], kb[3]);
        }

        // Logits (scale, softcap; base 2), mask the keys outside each row's range (the split's
        // ends; a row's later tokens, its window), online softmax.
        const int64_t k0 = lo + tile * kK + 16 * warp;
        const bool needs_mask = k0 < max(begin[0], begin[1]) || k0 + 16 > min(end[0], end[1]);
        p.logits(s);
        if (needs_mask)
#pragma unroll
            for (int i = 0; i < 2; ++i)
#pragma unroll
                for (int e = 0; e < 4; ++e) {
                    const int64_t key = k0 + 8 * i + 2 * t + (e & 1);
                    if (key < begin[e / 2] || key >= end[e / 2]) s[i][e] = -INFINITY;
                }
        online_softmax(s, m, l, o);

        // O += P·V: the two S column tiles are exactly the A fragment of one k-step.
        uint32_t a[4];
        p_fragment<T>(s, 0, a);
#pragma unroll
        for (int n2 = 0; n2 < Tile::kOTiles / 2; ++n2) {
            // matrices: keys +0 / +8 (lane / 8 % 2), head-dim columns +0 / +8 (lane / 16)
            uint32_t vb[4];
            ldmatrix_x4_trans(vb, vs + lm_row * kStride + col0 + 16 * n2 + lm_col);
            mma_16x8x16<T>(o[2 * n2], a, vb[0], vb[1]);
            mma_16x8x16<T>(o[2 * n2 + 1], a, vb[2], vb[3]);
        }
        __syncthreads();  // this slot is refilled by a later iteration's load
    }
    cp_async_wait<0>();  // only empty groups can remain; nothing may be left in flight
    // The ring becomes the merge buffer. No barrier is needed for that: the last iteration's
    // one already saw every warp done with the ring (and an empty split never touched it).
    // barrier_check.sh shows each remaining barrier is needed.

    // Each key slice's unnormalised O (each warp its columns), m and l into shared memory.
    constexpr int kMS = Tile::kMergeStride, kSlices = Tile::kKeySlices;
    float* const o_m = reinterpret_cast<float*>(ring);  // [kSlices][kH][kMS]
    float* const ml_m = o_m + kSlices * kH * kMS;       // [kSlices][kH][2]
    quad_sum_rows(l);
#pragma unroll
    for (int i = 0; i < Tile::kOTiles; ++i)
#pragma unroll
        for (int r = 0; r < 2; ++r)
            *reinterpret_cast<float2*>(&o_m[(warp * kH + group + 8 * r) * kMS + col0 + 8 * i + 2 * t]) =
                make_float2(o[i][2 * r], o[i][2 * r + 1]);
    if (t == 0 && col0 == 0)
#pragma unroll
        for (int r = 0; r < 2; ++r)
            *reinterpret_cast<float2*>(&ml_m[(warp * kH + group + 8 * r) * 2]) = make_float2(m[r], l[r]);
    __syncthreads();

    // Merge the key slices in a fixed order (deterministic) and write 4 dims per thread.
    for (int e = tid; e < nh * (D / 4); e += Tile::kThreads) {
        const int h = e / (D / 4), c = e % (D / 4);
        // The merged state starts at the sink (RowState::start) when the result is final;
        // a split's partial starts empty (combine_kernel adds the sink).
        const RowState init = RowState::start(blk.splits == 1 ? p.sink_log2(blk.head(p, h)) : -INFINITY);
        float mw[kSlices];
        float big = init.m;
#pragma unroll
        for (int w = 0; w < kSlices; ++w) {
            mw[w] = ml_m[(w * kH + h) * 2];
            big = fmaxf(big, mw[w]);
        }
        float sum = init.l == 0.0f ? 0.0f : exp2f(init.m - big);
        float4 acc = make_float4(0.0f, 0.0f, 0.0f, 0.0f);
#pragma unroll
        for (int w = 0; w < kSlices; ++w) {
            // A key slice that saw only masked keys has m = -inf and contributes nothing (no NaN).
            const float f = mw[w] == -INFINITY ? 0.0f : exp2f(mw[w] - big);
            const float4 ow = *reinterpret_cast<const float4*>(&o_m[(w * kH + h) * kMS + 4 * c]);
            sum += f * ml_m[(w * kH + h) * 2 + 1];
            acc.x += f * ow.x;
            acc.y += f * ow.y;
            acc.z += f * ow.z;
            acc.w += f * ow.w;
        }
        if (blk.splits == 1) {
            const RowState state{big, sum};
            const float inv_l = state.inv_sum();
            Pair* out = reinterpret_cast<Pair*>(static_cast<T*>(p.out) + blk.out_row(p, h) + 4 * c);
            out[0] = Storage<T>::from_floats(acc.x * inv_l, acc.y * inv_l);
            out[1] = Storage<T>::from_floats(acc.z * inv_l, acc.w * inv_l);
            if (p.lse && c == 0) p.lse[blk.lse_entry(p, h)] = state.natural_lse();
        } else {
            // An empty split writes m = -inf, l = 0, O = 0, which combine_kernel skips.
            const int64_t entry = blk.partial_entry(p, h);
            *reinterpret_cast<float4*>(p.partial_o + entry * D + 4 * c) = acc;
            if (c == 0) p.partial_ml[entry] = make_float2(big, sum);
        }
    }
}

template <typename T, int D, int Stages>
Kernel decode_tc_variant() {
    using Tile = DecodeTcTile<D, Stages>;
    return kernel_variant<Tile, &decode_tc_kernel<T, D, Stages>>("decode_tc_kernel", D, Stages,
                                                                 decode_grid<Tile::kHeads>);
}

template <typename T, int D>
Kernel select_decode_tc(int smem_limit) {
    constexpr int kDeep = decode_tc_stages(D);
    return first_fitting(smem_limit, decode_tc_variant<T, D, kDeep>(), decode_tc_variant<T, D, kDeep - 1>());
}

}  // namespace gpu
}  // namespace gqa
