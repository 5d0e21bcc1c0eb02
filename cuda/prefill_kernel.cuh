// prefill_kernel.cuh: flash-style GQA prefill on the SIMT fp32 units: the reference path
// (GQA_CUDA_PREFILL=simt) beside the tensor-core default (prefill_tc_kernel.cuh).
//
// One block = 32 queries of one (sequence, query head). It loops over key tiles, keeps a running
// max and sum per query (online softmax in base 2) and accumulates P·V in fp32 registers.
// Thread layout: 128 threads, 4 per query row (a "quad"); a quad splits the tile's keys for
// Q·Kᵀ and the head dim for P·V, so a row's softmax state never leaves its quad.
//
// Keys are at absolute positions 0 .. kv_len-1 with kv_len = start + q_len (start = 0 without
// caches); query i sits at position start + i and, when causal, sees keys 0 .. start + i, cut to
// its window. The block's sequence, head and key range, and each row's keys, come from
// PrefillBlock (kv_tiles.cuh); the logits from AttnParams::logit (scale, softcap).
#pragma once

#include <cmath>

#include "common.cuh"
#include "kv_tiles.cuh"     // PrefillBlock
#include "launchers.hpp"
#include "tensor_core.cuh"  // dynamic_smem()

namespace gqa {
namespace gpu {

template <int D>
struct PrefillTile {
    static constexpr int kQueries = 32;              // queries per block
    static constexpr int kKeys = D > 128 ? 16 : 32;  // keys per tile (keeps smem < 48 KB)
    static constexpr int kThreads = 128;             // a quad of 4 threads per query row
    static constexpr int kChunks = D / kVec;         // 16-byte chunks per row
    // Row stride in elements: an odd number of 16-byte units, so the 8 rows read by one
    // quarter-warp's 16-byte loads land in distinct bank groups.
    static constexpr int kStride = D + kVec;
    static constexpr int kKeysPerThread = kKeys / 4;
    // Unroll of Q·Kᵀ's chunk loop: 2, but 3 where it divides (d96: with 2, ptxas 13.0 spilled
    // 8 bytes on sm_90; with 3 none, at the same 80 registers).
    static constexpr int kQkUnroll = kChunks % 3 == 0 ? 3 : 2;
    static constexpr int kChunksPerThread = (kChunks + 3) / 4;
    // Dynamic shared memory: Q, K and V tiles (storage type), then P (fp32, padded rows).
    static constexpr size_t kTileBytes = sizeof(uint16_t) * kStride;  // per row of Q, K or V
    static constexpr size_t kSmemBytes =
        (kQueries + 2 * kKeys) * kTileBytes + sizeof(float) * kQueries * (kKeys + 1);
    static_assert(D % kVec == 0, "head_dim must be a multiple of 8");
    static_assert((kStride / kVec) % 2 == 1, "row stride must be an odd number of 16 B units");
};

template <typename T, int D>
__global__ void __launch_bounds__(PrefillTile<D>::kThreads)
    prefill_kernel(const __grid_constant__ AttnParams p) {
    using Tile = PrefillTile<D>;
    constexpr int kQ = Tile::kQueries, kK = Tile::kKeys, kStride = Tile::kStride;
    constexpr int kChunks = Tile::kChunks;

    T* const q_s = reinterpret_cast<T*>(dynamic_smem());  // [kQ][kStride]
    T* const k_s = q_s + kQ * kStride;                     // [kK][kStride]
    T* const v_s = k_s + kK * kStride;                     // [kK][kStride]
    // +1: the 8 rows of a warp hit distinct banks
    float(*const p_s)[kK + 1] = reinterpret_cast<float(*)[kK + 1]>(v_s + kK * kStride);

    const int tid = threadIdx.x;
    const int row = tid >> 2;  // query row of this thread's quad
    const int quad = tid & 3;  // position inside the quad
    const PrefillBlock<kQ, kK, false> blk(p);  // the reference path keeps grid order
    if (!blk.active) return;  // block-uniform, before any barrier
    const Sequence& seq = blk.seq;
    const int64_t q0 = blk.q0, qh = blk.qh, kvh = blk.kvh;
    const int64_t kv_end = blk.hi;  // keys at or past kv_end are masked for every query here
    const int64_t row_begin = blk.row_begin(p, row), row_end = blk.row_end(p, row);  // this row's keys

    const T* q = static_cast<const T*>(p.q);
    const KvSource<T> kv_src = p.kv_source<T>(seq, kvh);

    // Q tile; rows past q_len are zero (computed, never written).
    for (int e = tid; e < kQ * kChunks; e += Tile::kThreads) {
        const int r = e / kChunks, c = e % kChunks;
        uint4 x = make_uint4(0, 0, 0, 0);
        if (blk.has_row(r)) x = load16(q + p.q_row(seq, q0 + r, qh) + c * kVec);
        store16(&q_s[r * kStride + c * kVec], x);
    }

    float o[Tile::kChunksPerThread][kVec];
#pragma unroll
    for (int i = 0; i < Tile::kChunksPerThread; ++i)
#pragma unroll
        for (int e = 0; e < kVec; ++e) o[i][e] = 0.0f;
    // Running max of this row (base-2 logits) and sum of exp2(logit - m), from the sink if any.
    const RowState init = RowState::start(p.sink_log2(qh));
    float m = init.m, l = init.l;

    for (int64_t tile = 0; tile < blk.num_tiles; ++tile) {
        const int64_t k0 = blk.lo + tile * kK;
        // K and V tile; rows at or past kv_end are zero so that P·V never touches NaN (and so
        // are rows whose page id is outside the pool: skipped and reported).
        for (int e = tid; e < kK * kChunks; e += Tile::kThreads) {
            const int r = e / kChunks, c = e % kChunks;
            const int64_t pos = k0 + r;
            uint4 kx = make_uint4(0, 0, 0, 0), vx = make_uint4(0, 0, 0, 0);
            if (pos < kv_end) {
                const KvRow<T> kv = kv_src.row(pos);
                if (kv.k) {
                    kx = load16(kv.k + c * kVec);
                    vx = load16(kv.v + c * kVec);
                } else if (c == 0) {
                    p.report(GQA_BATCH_FLAG_BAD_PAGE);
                }
            }
            store16(&k_s[r * kStride + c * kVec], kx);
            store16(&v_s[r * kStride + c * kVec], vx);
        }
        __syncthreads();

        // Scores of this row against keys quad, quad+4, ...
        float s[Tile::kKeysPerThread];
#pragma unroll
        for (int i = 0; i < Tile::kKeysPerThread; ++i) s[i] = 0.0f;
#pragma unroll(Tile::kQkUnroll)
        for (int c = 0; c < kChunks; ++c) {
            float qf[kVec];
            unpack8<T>(*reinterpret_cast<const uint4*>(&q_s[row * kStride + c * kVec]), qf);
#pragma unroll
            for (int i = 0; i < Tile::kKeysPerThread; ++i) {
                float kf[kVec];
                unpack8<T>(*reinterpret_cast<const uint4*>(&k_s[(quad + 4 * i) * kStride + c * kVec]),
                           kf);
#pragma unroll
                for (int e = 0; e < kVec; ++e) s[i] = fmaf(qf[e], kf[e], s[i]);
            }
        }
        float tile_max = -INFINITY;
#pragma unroll
        for (int i = 0; i < Tile::kKeysPerThread; ++i) {
            const int64_t pos = k0 + quad + 4 * i;
            s[i] = pos >= row_begin && pos < row_end ? p.logit(s[i]) : -INFINITY;
            tile_max = fmaxf(tile_max, s[i]);
        }
        tile_max = fmaxf(tile_max, __shfl_xor_sync(0xffffffffu, tile_max, 1));
        tile_max = fmaxf(tile_max, __shfl_xor_sync(0xffffffffu, tile_max, 2));
        const float m_new = fmaxf(m, tile_max);
        // Guard: while every key seen so far is masked, m_new is -inf and -inf - -inf is NaN.
        const bool any = m_new != -INFINITY;
        const float alpha = any ? exp2f(m - m_new) : 1.0f;  // exp2f(-inf) == 0
        float tile_sum = 0.0f;
#pragma unroll
        for (int i = 0; i < Tile::kKeysPerThread; ++i) {
            const float pr = any ? exp2f(s[i] - m_new) : 0.0f;
            tile_sum += pr;
            p_s[row][quad + 4 * i] = pr;
        }
        tile_sum += __shfl_xor_sync(0xffffffffu, tile_sum, 1);
        tile_sum += __shfl_xor_sync(0xffffffffu, tile_sum, 2);
        l = l * alpha + tile_sum;
        m = m_new;
        __syncwarp();  // p_s row is written and read by the same quad (same warp)

        // P·V for this row's chunks quad, quad+4, ...
#pragma unroll
        for (int i = 0; i < Tile::kChunksPerThread; ++i)
#pragma unroll
            for (int e = 0; e < kVec; ++e) o[i][e] *= alpha;
#pragma unroll 4
        for (int j = 0; j < kK; ++j) {
            const float pj = p_s[row][j];
#pragma unroll
            for (int i = 0; i < Tile::kChunksPerThread; ++i) {
                const int c = quad + 4 * i;
                if (c < kChunks) {
                    float vf[kVec];
                    unpack8<T>(*reinterpret_cast<const uint4*>(&v_s[j * kStride + c * kVec]), vf);
#pragma unroll
                    for (int e = 0; e < kVec; ++e) o[i][e] = fmaf(pj, vf[e], o[i][e]);
                }
            }
        }
        __syncthreads();  // k_s, v_s and p_s are overwritten by the next tile
    }

    if (blk.has_row(row)) {
        const RowState state{m, l};
        const float inv_l = state.inv_sum();
        if (p.lse && quad == 0) p.lse[p.lse_entry(seq, q0 + row, qh)] = state.natural_lse();
        T* out = static_cast<T*>(p.out) + p.out_row(seq, q0 + row, qh);
#pragma unroll
        for (int i = 0; i < Tile::kChunksPerThread; ++i) {
            const int c = quad + 4 * i;
            if (c < kChunks) {
                float r[kVec];
#pragma unroll
                for (int e = 0; e < kVec; ++e) r[e] = o[i][e] * inv_l;
                store16(out + c * kVec, pack8<T>(r));
            }
        }
    }
}

template <typename T, int D>
Kernel select_prefill(int smem_limit) {
    using Tile = PrefillTile<D>;
    return first_fitting(smem_limit, kernel_variant<Tile, &prefill_kernel<T, D>>("prefill_kernel", D, 0,
                                                                                 prefill_grid<Tile::kQueries>));
}

}  // namespace gpu
}  // namespace gqa
