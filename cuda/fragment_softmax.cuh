// fragment_softmax.cuh: the online softmax of the tensor-core kernels, done on mma.sync
// accumulator fragments in registers. Layout (tensor_core.cuh): in each 16 x 8 tile a lane holds
// rows group and group + 8 (group = lane / 4), columns 2t and 2t + 1 (t = lane % 4); element e of
// a tile is row group + 8 * (e / 2), column 2t + (e & 1). A row is spread over the 4 lanes of a
// quad, so row maxima take two shuffles.
#pragma once

#include <cmath>

#include "tensor_core.cuh"

namespace gqa {
namespace gpu {

// s: one tile of base-2 logits (masked ones -inf), kSTiles 8-column tiles. On return s holds
// P = exp2(s - m), the running maxima m and this lane's part of the running sums l are updated,
// and the output accumulators o are rescaled to the new maxima.
template <int kSTiles, int kOTiles>
__device__ __forceinline__ void online_softmax(float (&s)[kSTiles][4], float (&m)[2], float (&l)[2],
                                               float (&o)[kOTiles][4]) {
#pragma unroll
    for (int r = 0; r < 2; ++r) {
        float mx = -INFINITY;
#pragma unroll
        for (int i = 0; i < kSTiles; ++i) mx = fmaxf(mx, fmaxf(s[i][2 * r], s[i][2 * r + 1]));
        mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, 1));
        mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, 2));
        const float m_new = fmaxf(m[r], mx);
        // Guard: while every key the row has seen is masked, m_new is -inf (-inf - -inf = NaN).
        const bool any = m_new != -INFINITY;
        const float alpha = any ? exp2f(m[r] - m_new) : 1.0f;
        float sum = 0.0f;
#pragma unroll
        for (int i = 0; i < kSTiles; ++i)
#pragma unroll
            for (int e = 2 * r; e < 2 * r + 2; ++e) {
                const float pr = any ? exp2f(s[i][e] - m_new) : 0.0f;
                s[i][e] = pr;
                sum += pr;
            }
        l[r] = l[r] * alpha + sum;  // the quad's partial sums are added by quad_sum_rows
        m[r] = m_new;
#pragma unroll
        for (int i = 0; i < kOTiles; ++i) {
            o[i][2 * r] *= alpha;
            o[i][2 * r + 1] *= alpha;
        }
    }
}

// P of column tiles 2kk and 2kk + 1, rounded to T: exactly the A fragment of P·V's k-step kk,
// so P never goes through shared memory.
template <typename T, int kSTiles>
__device__ __forceinline__ void p_fragment(const float (&s)[kSTiles][4], int kk, uint32_t (&a)[4]) {
    a[0] = pack2<T>(s[2 * kk][0], s[2 * kk][1]);
    a[1] = pack2<T>(s[2 * kk][2], s[2 * kk][3]);
    a[2] = pack2<T>(s[2 * kk + 1][0], s[2 * kk + 1][1]);
    a[3] = pack2<T>(s[2 * kk + 1][2], s[2 * kk + 1][3]);
}

// The 4 lanes' partial row sums into the whole rows' sums.
__device__ __forceinline__ void quad_sum_rows(float (&l)[2]) {
#pragma unroll
    for (int r = 0; r < 2; ++r) {
        l[r] += __shfl_xor_sync(0xffffffffu, l[r], 1);
        l[r] += __shfl_xor_sync(0xffffffffu, l[r], 2);
    }
}

}  // namespace gpu
}  // namespace gqa
