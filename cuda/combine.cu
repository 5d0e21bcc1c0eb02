// combine.cu: merges the split-KV partials of either decode kernel (SIMT or tensor-core) into out.
//
// For each (sequence, query head): M = max_s m_s, L = sum_s l_s * 2^(m_s - M),
// out = sum_s o_s * 2^(m_s - M) / L, summed in split order (deterministic, no atomics).
// An empty split has m_s = -inf and l_s = 0 and weighs exactly 0; split 0 always holds key 0,
// so M is finite.
#include <cmath>

#include "common.cuh"
#include "launchers.hpp"
#include "log.hpp"

namespace gqa {
namespace gpu {

// One block per (query head, sequence); one thread per pair of dims.
template <typename T>
__global__ void combine_kernel(const __grid_constant__ AttnParams p) {
    using Pair = typename Storage<T>::Pair;
    const int64_t qh = blockIdx.x;
    const int64_t b = int64_t(p.chunk.first) + blockIdx.y;
    const int64_t first = (b * p.num_q_heads + qh) * p.num_splits;
    const int64_t d = 2 * int64_t(threadIdx.x);
    if (d >= p.head_dim) return;

    float big = -INFINITY;
    for (int s = 0; s < p.num_splits; ++s) big = fmaxf(big, p.partial_ml[first + s].x);
    float sum = 0.0f, o0 = 0.0f, o1 = 0.0f;
    for (int s = 0; s < p.num_splits; ++s) {
        const float2 ml = p.partial_ml[first + s];
        if (ml.y == 0.0f) continue;  // empty split (its m is -inf)
        const float w = exp2f(ml.x - big);
        const float2 o = *reinterpret_cast<const float2*>(p.partial_o + (first + s) * p.head_dim + d);
        sum = fmaf(ml.y, w, sum);
        o0 = fmaf(o.x, w, o0);
        o1 = fmaf(o.y, w, o1);
    }
    const float inv = 1.0f / sum;
    T* out = static_cast<T*>(p.out) + (b * p.num_q_heads + qh) * p.head_dim + d;
    *reinterpret_cast<Pair*>(out) = Storage<T>::from_floats(o0 * inv, o1 * inv);
}

template <typename T>
void launch_combine(const AttnParams& p, cudaStream_t stream) {
    const dim3 grid(unsigned(p.num_q_heads), unsigned(p.chunk.count));
    const dim3 block(unsigned((p.head_dim / 2 + 31) / 32 * 32));
    GQA_LOG(GQA_LOG_DEBUG,
            "cuda combine_kernel: sequences %d..%d grid (%u,%u,1) block %u smem 0 B, splits %d",
            p.chunk.first, p.chunk.first + p.chunk.count - 1, grid.x, grid.y, block.x,
            p.num_splits);
    combine_kernel<T><<<grid, block, 0, stream>>>(p);
}

template void launch_combine<__half>(const AttnParams&, cudaStream_t);
template void launch_combine<__nv_bfloat16>(const AttnParams&, cudaStream_t);

}  // namespace gpu
}  // namespace gqa
