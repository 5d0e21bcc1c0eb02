// decode_kernel.cuh: GQA decode: one new token per sequence, or (batched op) a few, as in
// speculative verification.
//
// One block = (split, kv head x row group, sequence). The rows of a KV head are its (new token,
// query head) pairs (DecodeBlock); up to kHeads of them share every K/V tile the block loads
// (16-byte loads into shared memory), so the cache is read once per KV head rather than once
// per query head (more rows take ceil(rows / kHeads) blocks). Each row masks the keys past its
// own position. With splits > 1 each split covers a slice of the keys and writes unnormalised
// partials for combine_kernel; otherwise the block writes out directly.
//
// The new tokens (key positions from start on) are read from k and v, never from the cache,
// and the block of split 0 / row group 0 copies them into the cache: no block of this launch
// reads those cache rows, so the fused append cannot race with the attention.
//
// K/V tiles stream through a Stages-deep cp.async ring in dynamic shared memory: while one tile
// is computed, the next Stages - 1 are in flight, which a memory-bound kernel needs to keep
// enough bytes outstanding per SM. Where the deepest ring does not fit a device's shared memory
// (d256 on the 99 KB devices: sm_86, sm_89, sm_120), one stage less is used.
#pragma once

#include <cmath>

#include "common.cuh"
#include "kv_tiles.cuh"     // DecodeBlock, load_kv_rows
#include "launchers.hpp"
#include "tensor_core.cuh"  // cp.async wrappers, dynamic_smem()

namespace gqa {
namespace gpu {

// The deepest K/V ring of the SIMT decode for head_dim D.
constexpr int decode_stages(int d) { return d > 256 ? 2 : d > 128 ? 3 : 4; }

template <int D, int Stages>
struct DecodeTile {
    static constexpr int kKeys = 32;     // keys per tile: one per lane in Q·Kᵀ
    static constexpr int kThreads = 128;
    static constexpr int kWarps = kThreads / 32;
    static constexpr int kHeads = kDecodeHeadsPerBlock;
    static constexpr int kHeadsPerWarp = kHeads / kWarps;
    static constexpr int kChunks = D / kVec;
    static constexpr int kStride = D + kVec;  // odd number of 16-byte units: no bank conflicts
    static constexpr int kPairs = D / 2;      // P·V works on pairs of dims (4-byte smem reads)
    static constexpr int kItemsPerThread = (kHeads * kPairs + kThreads - 1) / kThreads;
    static constexpr int kStages = Stages;  // K/V tiles in the cp.async ring
    static constexpr size_t kStageElems = size_t(2) * kKeys * kStride;  // K then V
    static constexpr size_t kRingBytes = sizeof(uint16_t) * kStages * kStageElems;
    // After the ring (fp32): Q [kHeads][D], P [kHeads][kKeys + 1], then alpha, m, l [kHeads].
    static constexpr size_t kQOffset = kRingBytes;
    static constexpr size_t kPOffset = kQOffset + sizeof(float) * kHeads * D;
    static constexpr size_t kStatsOffset = kPOffset + sizeof(float) * kHeads * (kKeys + 1);
    static constexpr size_t kSmemBytes = kStatsOffset + sizeof(float) * 3 * kHeads;
    static_assert(D % kVec == 0, "head_dim must be a multiple of 8");
    static_assert((kStride / kVec) % 2 == 1, "row stride must be an odd number of 16 B units");
    static_assert(kHeads % kWarps == 0, "heads are dealt to warps evenly");
};

template <typename T, int D, int Stages>
__global__ void __launch_bounds__(DecodeTile<D, Stages>::kThreads, kDecodeMinBlocksPerSm)
    decode_kernel(const __grid_constant__ AttnParams p) {
    using Tile = DecodeTile<D, Stages>;
    constexpr int kK = Tile::kKeys, kStride = Tile::kStride, kChunks = Tile::kChunks;
    constexpr int kH = Tile::kHeads, kPairs = Tile::kPairs;
    using Pair = typename Storage<T>::Pair;

    unsigned char* const smem = dynamic_smem();
    T* const ring = reinterpret_cast<T*>(smem);  // [kStages][K, V][kK][kStride]
    float(*const q_s)[D] = reinterpret_cast<float(*)[D]>(smem + Tile::kQOffset);
    // +1: two heads read by one warp use distinct banks
    float(*const p_s)[kK + 1] = reinterpret_cast<float(*)[kK + 1]>(smem + Tile::kPOffset);
    float* const alpha_s = reinterpret_cast<float*>(smem + Tile::kStatsOffset);
    float* const m_s = alpha_s + kH;
    float* const l_s = m_s + kH;

    const int tid = threadIdx.x;
    const int lane = tid & 31;
    const int warp = tid >> 5;
    const DecodeBlock<kH, kK> blk(p);
    if (!blk.active) return;  // block-uniform, before any barrier
    const int64_t kvh = blk.kvh, lo = blk.lo, hi = blk.hi;
    const int nh = blk.nr;  // the block's rows ("heads" below: (token, query head) pairs)
    blk.template append_new_tokens<T, D, Tile::kThreads>(p, tid);

    // The block's query rows, in fp32; rows past nh are zero.
    const T* q = static_cast<const T*>(p.q);
    for (int e = tid; e < kH * kChunks; e += Tile::kThreads) {
        const int h = e / kChunks, c = e % kChunks;
        float f[kVec];
        if (h < nh) {
            unpack8<T>(load16(q + blk.q_row(p, h) + c * kVec), f);
        } else {
#pragma unroll
            for (int i = 0; i < kVec; ++i) f[i] = 0.0f;
        }
#pragma unroll
        for (int i = 0; i < kVec; ++i) q_s[h][c * kVec + i] = f[i];
    }

    // Softmax state of the rows warp, warp + kWarps, ... (identical in every lane); a split's
    // partial starts empty (combine_kernel adds the sink).
    float m[Tile::kHeadsPerWarp], l[Tile::kHeadsPerWarp];
#pragma unroll
    for (int i = 0; i < Tile::kHeadsPerWarp; ++i) {
        const int h = warp + i * Tile::kWarps;
        const RowState init = RowState::start(blk.splits == 1 && h < nh ? p.sink_log2(blk.head(p, h)) : -INFINITY);
        m[i] = init.m;
        l[i] = init.l;
    }
    // P·V accumulators: item e = tid + i * kThreads is (head e / kPairs, dims 2*(e % kPairs)+0,1).
    float acc[Tile::kItemsPerThread][2];
#pragma unroll
    for (int i = 0; i < Tile::kItemsPerThread; ++i) acc[i][0] = acc[i][1] = 0.0f;

    // Tile `tile` of this split into ring slot `slot` (rows at or past hi zero-filled).
    auto load_tile = [&](int tile, int slot) {
        T* ks = ring + slot * Tile::kStageElems;
        load_kv_rows<T, D, kK, kStride, Tile::kThreads>(p, blk.seq, kvh, lo + tile * kK, hi, ks,
                                                        ks + kK * kStride, tid);
    };
    // Positions, and so tiles, are below 2^31 (AttnParams::sequence): int32 in the loop.
    const int num_tiles = int(blk.num_tiles);
    const int first_key = int(lo), end_key = int(hi);
    // Prologue: the first kStages - 1 tiles. Every step commits one group (maybe empty), so
    // "wait until at most kStages - 1 groups are pending" always means "this tile has landed".
#pragma unroll
    for (int s = 0; s < Tile::kStages - 1; ++s) {
        if (s < num_tiles) load_tile(s, s);
        cp_async_commit();
    }

    for (int tile = 0; tile < num_tiles; ++tile) {
        const int k0 = first_key + tile * kK;
        const int ahead = tile + Tile::kStages - 1;  // refills the slot freed last iteration
        if (ahead < num_tiles) load_tile(ahead, ahead % Tile::kStages);
        cp_async_commit();
        cp_async_wait<Tile::kStages - 1>();
        const T* k_s = ring + (tile % Tile::kStages) * Tile::kStageElems;
        const T* v_s = k_s + kK * kStride;
        __syncthreads();

        // Q·Kᵀ: lane = key, warp = heads warp, warp + kWarps, ...
        float s[Tile::kHeadsPerWarp];
#pragma unroll
        for (int i = 0; i < Tile::kHeadsPerWarp; ++i) s[i] = 0.0f;
#pragma unroll 2
        for (int c = 0; c < kChunks; ++c) {
            float kf[kVec];
            unpack8<T>(*reinterpret_cast<const uint4*>(&k_s[lane * kStride + c * kVec]), kf);
#pragma unroll
            for (int i = 0; i < Tile::kHeadsPerWarp; ++i) {
                const float4 qa = *reinterpret_cast<const float4*>(&q_s[warp + i * Tile::kWarps][c * kVec]);
                const float4 qb = *reinterpret_cast<const float4*>(&q_s[warp + i * Tile::kWarps][c * kVec + 4]);
                s[i] = fmaf(qa.x, kf[0], s[i]);
                s[i] = fmaf(qa.y, kf[1], s[i]);
                s[i] = fmaf(qa.z, kf[2], s[i]);
                s[i] = fmaf(qa.w, kf[3], s[i]);
                s[i] = fmaf(qb.x, kf[4], s[i]);
                s[i] = fmaf(qb.y, kf[5], s[i]);
                s[i] = fmaf(qb.z, kf[6], s[i]);
                s[i] = fmaf(qb.w, kf[7], s[i]);
            }
        }
#pragma unroll
        for (int i = 0; i < Tile::kHeadsPerWarp; ++i) {
            const int h = warp + i * Tile::kWarps;
            if (h < nh) {  // warp-uniform: the shuffles below see the whole warp
                const int key = k0 + lane;
                // The row's keys: its position (recomputed per tile: holding one per row in
                // registers made ptxas spill at d128) and AttnParams::sees; positions are
                // below 2^31 (AttnParams::sequence).
                const bool seen = key < end_key && p.sees(int32_t(blk.row_pos(p, h)), key);
                const float si = seen ? p.logit(s[i]) : -INFINITY;
                const float m_new = fmaxf(m[i], warp_max(si));
                // Guard: a row that has seen only masked keys (a later token's keys, in a split
                // past its position) has m_new = -inf, and -inf - -inf is NaN.
                const bool any = m_new != -INFINITY;
                const float alpha = any ? exp2f(m[i] - m_new) : 1.0f;  // exp2f(-inf) == 0 on the first tile
                const float pr = any ? exp2f(si - m_new) : 0.0f;
                l[i] = l[i] * alpha + warp_sum(pr);
                m[i] = m_new;
                p_s[h][lane] = pr;
                if (lane == 0) alpha_s[h] = alpha;
            }
        }
        __syncthreads();

        // P·V on pairs of dims.
#pragma unroll
        for (int i = 0; i < Tile::kItemsPerThread; ++i) {
            const int e = tid + i * Tile::kThreads;
            const int h = e / kPairs, c = e % kPairs;
            if (h < nh) {
                const float alpha = alpha_s[h];
                float a0 = acc[i][0] * alpha, a1 = acc[i][1] * alpha;
#pragma unroll 8
                for (int j = 0; j < kK; ++j) {
                    const float pj = p_s[h][j];
                    const float2 vv = Storage<T>::to_float2(
                        *reinterpret_cast<const Pair*>(&v_s[j * kStride + 2 * c]));
                    a0 = fmaf(pj, vv.x, a0);
                    a1 = fmaf(pj, vv.y, a1);
                }
                acc[i][0] = a0;
                acc[i][1] = a1;
            }
        }
        __syncthreads();  // this slot, p_s and alpha_s are overwritten by later tiles
    }
    cp_async_wait<0>();  // only empty groups can remain; nothing may be left in flight

#pragma unroll
    for (int i = 0; i < Tile::kHeadsPerWarp; ++i) {
        const int h = warp + i * Tile::kWarps;
        if (h < nh && lane == 0) {
            m_s[h] = m[i];
            l_s[h] = l[i];
        }
    }
    __syncthreads();

#pragma unroll
    for (int i = 0; i < Tile::kItemsPerThread; ++i) {
        const int e = tid + i * Tile::kThreads;
        const int h = e / kPairs, c = e % kPairs;
        if (h >= nh) continue;
        if (blk.splits == 1) {
            const RowState state{m_s[h], l_s[h]};
            const float inv_l = state.inv_sum();
            T* out = static_cast<T*>(p.out) + blk.out_row(p, h) + 2 * c;
            *reinterpret_cast<Pair*>(out) = Storage<T>::from_floats(acc[i][0] * inv_l, acc[i][1] * inv_l);
            if (p.lse && c == 0) p.lse[blk.lse_entry(p, h)] = state.natural_lse();
        } else {
            const int64_t entry = blk.partial_entry(p, h);
            *reinterpret_cast<float2*>(p.partial_o + entry * D + 2 * c) = make_float2(acc[i][0], acc[i][1]);
            if (c == 0) p.partial_ml[entry] = make_float2(m_s[h], l_s[h]);
        }
    }
}

template <typename T, int D, int Stages>
Kernel decode_variant() {
    using Tile = DecodeTile<D, Stages>;
    return kernel_variant<Tile, &decode_kernel<T, D, Stages>>("decode_kernel", D, Stages,
                                                              decode_grid<Tile::kHeads>);
}

template <typename T, int D>
Kernel select_decode(int smem_limit) {
    constexpr int kDeep = decode_stages(D);
    return first_fitting(smem_limit, decode_variant<T, D, kDeep>(), decode_variant<T, D, kDeep - 1>());
}

}  // namespace gpu
}  // namespace gqa
