// combine.cu: merges the split-KV partials of either decode kernel (SIMT or tensor-core) into out
// (and lse).
//
// For each (sequence, query head), starting from the sink σ (base 2; RowState::start: the one
// place a split decode adds it): M = max(σ, max_s m_s), L = 2^(σ - M) + sum_s l_s * 2^(m_s - M),
// out = sum_s o_s * 2^(m_s - M) / L, summed in split order (deterministic, no atomics).
// An empty split has m_s = -inf and l_s = 0 and weighs exactly 0; every row sees at least its
// own position, so some split of it is not empty and M is finite.
#include <cmath>

#include "common.cuh"
#include "launchers.hpp"

namespace gqa {
namespace gpu {

struct CombineShape {
    static constexpr int kThreads = 128;  // each thread merges pairs of dims 2t, 2t + 256, ...
    static constexpr size_t kSmemBytes = 0;
};

// One block per (query head, sequence); it merges the partials of each of the sequence's new
// tokens. Sequences the decode kernel did not split (splits_of 1: it wrote out itself) or did
// not run are skipped.
template <typename T>
__global__ void __launch_bounds__(CombineShape::kThreads) combine_kernel(const __grid_constant__ AttnParams p) {
    using Pair = typename Storage<T>::Pair;
    const int64_t qh = blockIdx.x;
    const Sequence seq = p.sequence(blockIdx.y);
    if (!seq.run || seq.q_len > p.decode_max_q) return;
    const int64_t splits = p.splits_of(seq);
    if (splits == 1) return;

    const RowState init = RowState::start(p.sink_log2(qh));
    for (int64_t t = 0; t < seq.q_len; ++t) {
        const int64_t first = p.partial_entry(seq.b, t, qh, 0);
        float big = init.m;
        for (int64_t s = 0; s < splits; ++s) big = fmaxf(big, p.partial_ml[first + s].x);
        const float sink_weight = init.l == 0.0f ? 0.0f : exp2f(init.m - big);
        for (int64_t d = 2 * int64_t(threadIdx.x); d < p.head_dim; d += 2 * CombineShape::kThreads) {
            float sum = sink_weight, o0 = 0.0f, o1 = 0.0f;
            for (int64_t s = 0; s < splits; ++s) {
                const float2 ml = p.partial_ml[first + s];
                if (ml.y == 0.0f) continue;  // empty split (its m is -inf)
                const float w = exp2f(ml.x - big);
                const float2 o = *reinterpret_cast<const float2*>(p.partial_o + (first + s) * p.head_dim + d);
                sum = fmaf(ml.y, w, sum);
                o0 = fmaf(o.x, w, o0);
                o1 = fmaf(o.y, w, o1);
            }
            const RowState state{big, sum};
            const float inv = state.inv_sum();
            T* out = static_cast<T*>(p.out) + p.out_row(seq, t, qh) + d;
            *reinterpret_cast<Pair*>(out) = Storage<T>::from_floats(o0 * inv, o1 * inv);
            if (p.lse && d == 0) p.lse[p.lse_entry(seq, t, qh)] = state.natural_lse();
        }
    }
}

dim3 combine_grid(const AttnParams& p) { return dim3(unsigned(p.num_q_heads), unsigned(p.chunk.count)); }

template <typename T>
Kernel select_combine() {
    return kernel_variant<CombineShape, &combine_kernel<T>>("combine_kernel", 0, 0, combine_grid);
}

template Kernel select_combine<__half>();
template Kernel select_combine<__nv_bfloat16>();

}  // namespace gpu
}  // namespace gqa
