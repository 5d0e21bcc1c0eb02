// prefill_tc_kernel.cuh: flash-style GQA prefill on tensor cores (sm_80+: mma.sync m16n8k16,
// ldmatrix, cp.async double buffering). Same semantics and parameters as prefill_kernel.cuh,
// which stays as the SIMT reference path (GQA_CUDA_PREFILL=simt).
//
// One block = kM = 16 x kRowWarps queries of one (sequence, query head); warp w owns query rows
// 16 (w % kRowWarps) .. + 15 of the tile, so each warp's softmax state stays in its registers.
// Above head_dim 256 the output O of 16 rows would not fit one warp's registers: two warps
// (kColSplit) share each 16 rows, both compute the same S and softmax state, and each
// accumulates half of O's columns.
// Per key tile of kN keys:
//   S = Q·Kᵀ      (A = Q from shared memory, B = K rows, both via ldmatrix)
//   online softmax in fp32, base 2; P rounded to the storage type
//   O += P·V      (A = P straight from the S accumulators, B = V via ldmatrix.trans)
// While a tile is computed, the next tile's K and V are already loading (cp.async, 2 stages).
// Key rows past the block's last visible key are zero-filled, so P·V never touches stale data.
// Logits: AttnParams::logit (scale, softcap); masks: each row's window (PrefillBlock::row_begin/end).
// The block's sequence, head and key range come from PrefillBlock (kv_tiles.cuh).
#pragma once

#include <cmath>

#include "common.cuh"
#include "fragment_softmax.cuh"
#include "kv_tiles.cuh"
#include "launchers.hpp"
#include "tensor_core.cuh"

namespace gqa {
namespace gpu {

// Keys per tile of the tensor-core prefill for head_dim D (the deepest variant).
constexpr int prefill_tc_keys(int d) { return d > 128 ? 32 : 64; }

template <int D, int N = prefill_tc_keys(D)>
struct PrefillTcTile {
    static constexpr int kWarps = 4;
    static constexpr int kThreads = 32 * kWarps;
    static constexpr int kColSplit = D > 256 ? 2 : 1;  // warps sharing 16 query rows, one O column range each
    static constexpr int kRowWarps = kWarps / kColSplit;
    static constexpr int kM = 16 * kRowWarps;      // queries per block
    static constexpr int kN = N;                   // keys per tile
    static constexpr int kChunks = D / kVec;       // 16-byte chunks per row
    static constexpr int kCols = D / kColSplit;    // O columns per warp
    // Row stride in elements: an odd number of 16-byte units, so the 8 row addresses of each
    // ldmatrix phase fall in 8 distinct bank groups (no swizzle needed).
    static constexpr int kStride = D + kVec;
    static constexpr int kSTiles = kN / 8;        // 8-key column tiles of S
    static constexpr int kOTiles = kCols / 8;     // 8-wide column tiles of this warp's O
    static constexpr int kStages = 2;
    static constexpr size_t kSmemBytes = sizeof(uint16_t) * (kM + 2 * kStages * kN) * kStride;
    static_assert(D % 16 == 0, "the tensor-core prefill needs head_dim % 16 == 0");
    static_assert((kStride / kVec) % 2 == 1, "row stride must be an odd number of 16 B units");
    static_assert(kOTiles % 2 == 0 && kSTiles % 2 == 0, "ldmatrix.x4 loads two column tiles");
};

template <typename T, int D, int N>
__global__ void __launch_bounds__(PrefillTcTile<D, N>::kThreads)
    prefill_tc_kernel(const __grid_constant__ AttnParams p) {
    using Tile = PrefillTcTile<D, N>;
    constexpr int kM = Tile::kM, kN = Tile::kN, kStride = Tile::kStride, kChunks = Tile::kChunks;

    T* q_s = reinterpret_cast<T*>(dynamic_smem());  // [kM][kStride], later the output tile
    T* k_s = q_s + kM * kStride;                     // [kStages][kN][kStride]
    T* v_s = k_s + Tile::kStages * kN * kStride;     // [kStages][kN][kStride]

    const int tid = threadIdx.x;
    const int lane = tid % 32;
    // This warp's 16 query rows and its first O column (constants without a column split).
    const int warp = Tile::kColSplit == 1 ? tid / 32 : tid / 32 % Tile::kRowWarps;
    const int col0 = Tile::kColSplit == 1 ? 0 : tid / 32 / Tile::kRowWarps * Tile::kCols;
    const int group = lane / 4, t = lane % 4;  // fragment coordinates (tensor_core.cuh)
    const PrefillBlock<kM, kN, true> blk(p);
    if (!blk.active) return;  // block-uniform, before any barrier
    const Sequence& seq = blk.seq;
    const int64_t q0 = blk.q0, qh = blk.qh, kvh = blk.kvh;
    const int64_t num_tiles = blk.num_tiles;

    // Q tile; rows past q_len are zero (computed, never written).
    const T* q = static_cast<const T*>(p.q);
    for (int e = tid; e < kM * kChunks; e += Tile::kThreads) {
        const int r = e / kChunks, c = e % kChunks;
        const bool valid = blk.has_row(r);
        const T* src = valid ? q + p.q_row(seq, q0 + r, qh) + c * kVec : q;
        cp_async_16(&q_s[r * kStride + c * kVec], src, valid);
    }
    auto load_kv = [&](int64_t tile, int stage) {
        load_kv_rows<T, D, kN, kStride, Tile::kThreads>(p, seq, kvh, blk.lo + tile * kN, blk.hi,
                                                        k_s + stage * kN * kStride,
                                                        v_s + stage * kN * kStride, tid);
    };
    load_kv(0, 0);
    cp_async_commit();  // group 0: Q and the first K/V tile

    float o[Tile::kOTiles][4];
#pragma unroll
    for (int i = 0; i < Tile::kOTiles; ++i) o[i][0] = o[i][1] = o[i][2] = o[i][3] = 0.0f;
    // Rows group and group+8: running max (base-2 logits) and this lane's part of the running
    // sums, from RowState::start (the sink's weight sits in lane t == 0 of the quad).
    const RowState init = RowState::start(p.sink_log2(qh));
    float m[2] = {init.m, init.m};
    float l[2] = {t == 0 ? init.l : 0.0f, t == 0 ? init.l : 0.0f};
    // Tiles [full_begin, full_end) lie inside the keys every row of the warp sees (row 15's
    // first key to row 0's end): no mask there. Tile indices, not key positions: fewer
    // registers live across the loop (key bounds cost a 4-byte spill at d80 on sm_80).
    const int warp_row0 = 16 * warp;  // block-relative, as PrefillBlock's row functions take it
    const int full_begin = int((blk.row_begin(p, warp_row0 + 15) - blk.lo + kN - 1) / kN);
    const int full_end = int((blk.row_end(p, warp_row0) - blk.lo) / kN);
    // ldmatrix row addresses: lane l gives row l % 8 of matrix l / 8.
    const int lm_row = lane % 8 + ((lane / 8) % 2) * 8;  // matrices 1, 3 are 8 rows further
    const int lm_col = (lane / 16) * 8;                  // matrices 2, 3 are 8 columns further
    const T* q_warp = q_s + (16 * warp + lm_row) * kStride + lm_col;

    for (int64_t tile = 0; tile < num_tiles; ++tile) {
        const int stage = int(tile % Tile::kStages);
        if (tile + 1 < num_tiles) {
            load_kv(tile + 1, (stage + 1) % Tile::kStages);
            cp_async_commit();
            cp_async_wait<1>();  // everything but the tile just issued has landed
        } else {
            cp_async_wait<0>();
        }
        __syncthreads();
        const T* ks = k_s + stage * kN * kStride;
        const T* vs = v_s + stage * kN * kStride;

        // S = Q·Kᵀ for this warp's 16 rows and the tile's kN keys.
        float s[Tile::kSTiles][4];
#pragma unroll
        for (int i = 0; i < Tile::kSTiles; ++i) s[i][0] = s[i][1] = s[i][2] = s[i][3] = 0.0f;
#pragma unroll
        for (int kk = 0; kk < D / 16; ++kk) {
            uint32_t a[4];
            ldmatrix_x4(a, q_warp + kk * 16);
#pragma unroll
            for (int n2 = 0; n2 < Tile::kSTiles / 2; ++n2) {
                // matrices: keys +0 / +8 (lane / 16), head-dim columns +0 / +8 (lane / 8 % 2)
                uint32_t kb[4];
                ldmatrix_x4(kb, ks + (16 * n2 + lane % 8 + (lane / 16) * 8) * kStride + kk * 16 +
                                    ((lane / 8) % 2) * 8);
                mma_16x8x16<T>(s[2 * n2], a, kb[0], kb[1]);
                mma_16x8x16<T>(s[2 * n2 + 1], a, kb[2], kb[3]);
            }
        }

        // Logits (scale, softcap; base 2), mask, online softmax. Only tiles at the edges of the
        // rows' key ranges (the window's ends, the causal diagonal, the tail) need the mask:
        // there rows group and group+8 (shared by the 4 lanes of a quad) mask the keys of
        // [lo, hi) they do not see.
        p.logits(s);
        if (tile < full_begin || tile >= full_end) {
            const int64_t k0 = blk.lo + tile * kN + 2 * t;
#pragma unroll
            for (int r = 0; r < 2; ++r) {
                const int64_t begin = blk.row_begin(p, warp_row0 + group + 8 * r);
                const int64_t end = blk.row_end(p, warp_row0 + group + 8 * r);
#pragma unroll
                for (int i = 0; i < Tile::kSTiles; ++i)
#pragma unroll
                    for (int c = 0; c < 2; ++c) {
                        const int64_t key = k0 + 8 * i + c;
                        if (key < begin || key >= end) s[i][2 * r + c] = -INFINITY;
                    }
            }
        }
        online_softmax(s, m, l, o);

        // O += P·V: the S accumulators of key tiles 2kk, 2kk+1 are exactly the A fragment of
        // the k-step kk, so P never goes through shared memory.
#pragma unroll
        for (int kk = 0; kk < kN / 16; ++kk) {
            uint32_t a[4];
            p_fragment<T>(s, kk, a);
#pragma unroll
            for (int n2 = 0; n2 < Tile::kOTiles / 2; ++n2) {
                // matrices: keys +0 / +8 (lane / 8 % 2), head-dim columns +0 / +8 (lane / 16)
                uint32_t vb[4];
                ldmatrix_x4_trans(vb, vs + (16 * kk + lm_row) * kStride + col0 + 16 * n2 + lm_col);
                mma_16x8x16<T>(o[2 * n2], a, vb[0], vb[1]);
                mma_16x8x16<T>(o[2 * n2 + 1], a, vb[2], vb[3]);
            }
        }
        __syncthreads();  // this stage is refilled by the next iteration's load
    }

    // Normalise, stage the warp's 16 rows (its columns) in its own part of q_s, store 16-byte
    // vectors. Every warp is done with Q: the last iteration's barrier came after its Q·Kᵀ.
    quad_sum_rows(l);
    const RowState row[2] = {{m[0], l[0]}, {m[1], l[1]}};
    const float inv_l[2] = {row[0].inv_sum(), row[1].inv_sum()};
    if (p.lse && t == 0 && col0 == 0)
#pragma unroll
        for (int r = 0; r < 2; ++r)
            if (blk.has_row(16 * warp + group + 8 * r))
                p.lse[p.lse_entry(seq, q0 + 16 * warp + group + 8 * r, qh)] = row[r].natural_lse();
    T* o_s = q_s + 16 * warp * kStride;
#pragma unroll
    for (int i = 0; i < Tile::kOTiles; ++i)
#pragma unroll
        for (int r = 0; r < 2; ++r) {
            const uint32_t x = pack2<T>(o[i][2 * r] * inv_l[r], o[i][2 * r + 1] * inv_l[r]);
            memcpy(&o_s[(group + 8 * r) * kStride + col0 + 8 * i + 2 * t], &x, 4);
        }
    __syncwarp();
    T* out = static_cast<T*>(p.out);
    constexpr int kWarpChunks = Tile::kCols / kVec;
    for (int e = lane; e < 16 * kWarpChunks; e += 32) {
        const int r = e / kWarpChunks, c = col0 / kVec + e % kWarpChunks;
        if (blk.has_row(16 * warp + r))
            store16(out + p.out_row(seq, q0 + 16 * warp + r, qh) + c * kVec,
                    *reinterpret_cast<const uint4*>(&o_s[r * kStride + c * kVec]));
    }
}

template <typename T, int D, int N>
Kernel prefill_tc_variant() {
    using Tile = PrefillTcTile<D, N>;
    return kernel_variant<Tile, &prefill_tc_kernel<T, D, N>>("prefill_tc_kernel", D, Tile::kStages,
                                                             prefill_grid<Tile::kM>);
}

// Above head_dim 256, 16-key tiles where 32-key tiles do not fit (the 99 KB devices).
template <typename T, int D>
Kernel select_prefill_tc(int smem_limit) {
    constexpr int kDeep = prefill_tc_keys(D), kShallow = D > 256 ? 16 : kDeep;
    return first_fitting(smem_limit, prefill_tc_variant<T, D, kDeep>(), prefill_tc_variant<T, D, kShallow>());
}

}  // namespace gpu
}  // namespace gqa
