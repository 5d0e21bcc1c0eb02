// attention_scalar.cpp: the portable kernel and the test oracle (GQA_CPU_ISA=scalar).
//
// One query row (query position, head) at a time, online softmax over blocks of kKeyBlock keys,
// fp32 throughout. Simple on purpose: the SIMD kernels are checked against it.
#include <cmath>
#include <cstdint>
#include <limits>

#include "cpu/convert.hpp"
#include "cpu/decode.hpp"
#include "cpu/kernel.hpp"

namespace gqa {
namespace cpu {

void attend_tile_scalar(const Tile& t, float* /*scratch*/) {
    const int64_t d_len = t.head_dim;
    const float neg_inf = -std::numeric_limits<float>::infinity();
    float q[kMaxHeadDim];
    float acc[kMaxHeadDim];
    float score[kKeyBlock];

    for (int64_t i = 0; i < t.num_queries; ++i) {
        const int64_t begin = t.visible_begin(i), end = t.visible_end(i);
        for (int64_t g = 0; g < t.group; ++g) {
            const int64_t q_offset = i * t.q_stride + g * t.q_head_stride;
            const int64_t row = i * t.group + g;
            for (int64_t d = 0; d < d_len; ++d) {
                q[d] = load_f32(t.q, q_offset + d, t.dtype);
                acc[d] = t.resume ? t.part_acc[row * d_len + d] : 0.0f;
            }
            float running_max = t.resume ? t.part_max[row] : neg_inf;
            float running_sum = t.resume ? t.part_sum[row] : 0.0f;
            if (!t.resume && t.sinks && t.sinks[g] != neg_inf) {  // the sink: e^sink in the denominator
                running_max = t.sinks[g];
                running_sum = 1.0f;
            }
            for (int64_t j0 = begin; j0 < end; j0 += kKeyBlock) {
                const int64_t n = end - j0 < kKeyBlock ? end - j0 : kKeyBlock;
                float block_max = neg_inf;
                for (int64_t jj = 0; jj < n; ++jj) {
                    const int64_t k_offset = key_offset(t, j0 + jj);
                    float dot = 0.0f;
                    for (int64_t d = 0; d < d_len; ++d) dot += q[d] * load_f32(t.k, k_offset + d, t.dtype);
                    score[jj] = dot * t.scale;
                    if (t.softcap > 0.0f) score[jj] = t.softcap * std::tanh(score[jj] / t.softcap);
                    block_max = std::fmax(block_max, score[jj]);  // skips NaN; exp(NaN) poisons below
                }
                const float new_max = std::fmax(running_max, block_max);
                // While every logit so far is -inf, subtract 0 instead: exp(-inf - -inf) would be
                // NaN, exp(-inf - 0) is the right 0. A NaN score still gives a NaN probability.
                const float base = new_max == neg_inf ? 0.0f : new_max;
                const float correction = std::exp(running_max - base);  // 0 when running_max = -inf
                running_sum *= correction;
                for (int64_t d = 0; d < d_len; ++d) acc[d] *= correction;
                for (int64_t jj = 0; jj < n; ++jj) {
                    const float prob = std::exp(score[jj] - base);
                    running_sum += prob;
                    const int64_t v_offset = value_offset(t, j0 + jj);
                    for (int64_t d = 0; d < d_len; ++d) acc[d] += prob * load_f32(t.v, v_offset + d, t.dtype);
                }
                running_max = new_max;
            }

            if (t.out) {
                // No visible key with a finite logit: the row is 0 (not NaN). A NaN sum stays NaN.
                const float inv = running_sum == 0.0f ? 0.0f : 1.0f / running_sum;
                const int64_t o_offset = i * t.out_stride + g * t.out_head_stride;
                for (int64_t d = 0; d < d_len; ++d) store_f32(t.out, o_offset + d, acc[d] * inv, t.dtype);
                if (t.lse) {
                    t.lse[g * t.lse_head_stride + i] = running_sum == 0.0f ? neg_inf : running_max + std::log(running_sum);
                }
            } else {
                t.part_max[row] = running_max;
                t.part_sum[row] = running_sum;
                for (int64_t d = 0; d < d_len; ++d) t.part_acc[row * d_len + d] = acc[d];
            }
        }
    }
}

void decode_scalar(const DecodeWork& w, float* scratch) {
    for (int64_t h = 0; h < w.num_kv_heads; ++h) attend_tile_scalar(decode_head_tile(w, h), scratch);
}

}  // namespace cpu
}  // namespace gqa
