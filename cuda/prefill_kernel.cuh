// prefill_kernel.cuh: flash-style GQA prefill, SIMT and fp32 math (tensor cores: prefill_tc_kernel.cuh).
//
// One block = 32 queries of one (sequence, query head). It loops over key tiles, keeps a running
// max and sum per query (online softmax in base 2) and accumulates P·V in fp32 registers.
// Thread layout: 128 threads, 4 per query row (a "quad"); a quad splits the tile's keys for
// Q·Kᵀ and the head dim for P·V, so a row's softmax state never leaves its quad.
//
// Keys are at absolute positions 0 .. kv_len-1 with kv_len = start + seq_len (start = 0 without
// caches); query i sits at position start + i and, when causal, sees keys 0 .. start + i.
#pragma once

#include <cmath>

#include "common.cuh"
#include "launchers.hpp"
#include "log.hpp"

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
    static constexpr int kChunksPerThread = (kChunks + 3) / 4;
    static_assert(D % kVec == 0, "head_dim must be a multiple of 8");
    static_assert((kStride / kVec) % 2 == 1, "row stride must be an odd number of 16 B units");
};

template <typename T, int D>
__global__ void __launch_bounds__(PrefillTile<D>::kThreads)
    prefill_kernel(const __grid_constant__ AttnParams p) {
    using Tile = PrefillTile<D>;
    constexpr int kQ = Tile::kQueries, kK = Tile::kKeys, kStride = Tile::kStride;
    constexpr int kChunks = Tile::kChunks;

    __shared__ __align__(16) T q_s[kQ * kStride];
    __shared__ __align__(16) T k_s[kK * kStride];
    __shared__ __align__(16) T v_s[kK * kStride];
    __shared__ float p_s[kQ][kK + 1];  // +1: the 8 rows of a warp hit distinct banks

    const int tid = threadIdx.x;
    const int row = tid >> 2;  // query row of this thread's quad
    const int quad = tid & 3;  // position inside the quad
    const int64_t q0 = int64_t(blockIdx.x) * kQ;
    const int64_t qh = blockIdx.y;
    const int bl = blockIdx.z;
    const int64_t b = int64_t(p.chunk.first) + bl;
    const int64_t kvh = qh / p.group;
    const int64_t start = p.has_cache ? int64_t(p.chunk.start[bl]) : 0;
    const int64_t kv_len = start + p.seq_len;
    // Keys past kv_end are masked for every query of this block.
    const int64_t kv_end = p.causal ? min(kv_len, start + q0 + kQ) : kv_len;

    const T* q = static_cast<const T*>(p.q);
    const T* k_new = static_cast<const T*>(p.k);
    const T* v_new = static_cast<const T*>(p.v);
    const T* k_cache = static_cast<const T*>(p.k_cache);
    const T* v_cache = static_cast<const T*>(p.v_cache);

    // Q tile; rows past seq_len are zero (computed, never written).
    for (int e = tid; e < kQ * kChunks; e += Tile::kThreads) {
        const int r = e / kChunks, c = e % kChunks;
        uint4 x = make_uint4(0, 0, 0, 0);
        if (q0 + r < p.seq_len)
            x = load16(q + ((b * p.seq_len + q0 + r) * p.num_q_heads + qh) * D + c * kVec);
        store16(&q_s[r * kStride + c * kVec], x);
    }

    float o[Tile::kChunksPerThread][kVec];
#pragma unroll
    for (int i = 0; i < Tile::kChunksPerThread; ++i)
#pragma unroll
        for (int e = 0; e < kVec; ++e) o[i][e] = 0.0f;
    float m = -INFINITY;  // running max of this row (base-2 logits)
    float l = 0.0f;       // running sum of exp2(logit - m)
    const int64_t qpos = start + q0 + row;  // absolute position of this thread's query

    for (int64_t k0 = 0; k0 < kv_end; k0 += kK) {
        // K and V tile; rows at or past kv_end are zero so that P·V never touches NaN.
        for (int e = tid; e < kK * kChunks; e += Tile::kThreads) {
            const int r = e / kChunks, c = e % kChunks;
            const int64_t pos = k0 + r;
            uint4 kx = make_uint4(0, 0, 0, 0), vx = make_uint4(0, 0, 0, 0);
            if (pos < kv_end) {
                bool cached;
                const int64_t off = kv_row_offset<T, D>(p, b, kvh, pos, start, &cached) + c * kVec;
                kx = load16((cached ? k_cache : k_new) + off);
                vx = load16((cached ? v_cache : v_new) + off);
            }
            store16(&k_s[r * kStride + c * kVec], kx);
            store16(&v_s[r * kStride + c * kVec], vx);
        }
        __syncthreads();

        // Scores of this row against keys quad, quad+4, ...
        float s[Tile::kKeysPerThread];
#pragma unroll
        for (int i = 0; i < Tile::kKeysPerThread; ++i) s[i] = 0.0f;
#pragma unroll 2
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
            const bool visible = pos < kv_end && (!p.causal || pos <= qpos);
            s[i] = visible ? s[i] * p.scale_log2 : -INFINITY;
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

    if (q0 + row < p.seq_len) {
        // Key 0 is visible to every query, so l >= 1 here.
        const float inv_l = 1.0f / l;
        T* out = static_cast<T*>(p.out) + ((b * p.seq_len + q0 + row) * p.num_q_heads + qh) * D;
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
void launch_prefill(const AttnParams& p, cudaStream_t stream) {
    using Tile = PrefillTile<D>;
    const dim3 grid(unsigned((p.seq_len + Tile::kQueries - 1) / Tile::kQueries),
                    unsigned(p.num_q_heads), unsigned(p.chunk.count));
    const dim3 block(Tile::kThreads);
    GQA_LOG(GQA_LOG_DEBUG,
            "cuda prefill_kernel<hd%d>: sequences %d..%d grid (%u,%u,%u) block %u "
            "static smem %d B, tile %d queries x %d keys",
            D, p.chunk.first, p.chunk.first + p.chunk.count - 1, grid.x, grid.y, grid.z, block.x,
            int(sizeof(T) * (Tile::kQueries + 2 * Tile::kKeys) * Tile::kStride +
                sizeof(float) * Tile::kQueries * (Tile::kKeys + 1)),
            Tile::kQueries, Tile::kKeys);
    prefill_kernel<T, D><<<grid, block, 0, stream>>>(p);
}

}  // namespace gpu
}  // namespace gqa
