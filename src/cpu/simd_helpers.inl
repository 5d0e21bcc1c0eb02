// simd_helpers.inl: small helpers shared by the SIMD kernels (kernel_simd.inl: decode,
// prefill_lanes.inl: prefill), written over the vector interface `Simd` of the including ISA
// file. Internal linkage, like everything those files define (see convert.hpp for why).
#pragma once

#include <immintrin.h>

#include <cmath>
#include <cstdint>

#include "cpu/convert.hpp"
#include "cpu/kernel.hpp"

namespace gqa {
namespace cpu {
namespace {

using Reg = Simd::Reg;
constexpr int64_t W = Simd::kWidth;

// Asks for the 64-byte line at p in L1 (prefetch_l1) or L2 (prefetch_l2). Not _mm_prefetch: GCC
// 12 at -O2 and -O3 deleted every loop of libgqa whose body was only _mm_prefetch calls (with
// -fno-finite-loops or -fno-tree-dce they stayed), so none of its prefetches was in the library
// until 2026-12-03 (benchmarks/NOTES.md section 20). A volatile asm statement is never deleted.
inline void prefetch_l1(const void* p) { __asm__ volatile("prefetcht0 %0" : : "m"(*static_cast<const char*>(p))); }
inline void prefetch_l2(const void* p) { __asm__ volatile("prefetcht1 %0" : : "m"(*static_cast<const char*>(p))); }

// Local copies of Tile::visible_end/begin and dtype_bytes: this file is compiled with ISA
// flags, and calling an inline function with external linkage from here could let the linker
// keep this file's (AVX) copy for the whole library. The same reason for __builtin_fmaxf over
// std::fmax.
inline int64_t visible_end(const Tile& t, int64_t i) {
    if (!t.causal) return t.key_end;
    const int64_t end = t.first_visible_end + i;
    return end < t.key_end ? end : t.key_end;
}
inline int64_t visible_begin(const Tile& t, int64_t i) {
    if (!t.windowed) return t.key_begin;
    const int64_t begin = t.first_visible_begin + i;
    return begin > t.key_begin ? begin : t.key_begin;
}
inline int64_t elem_bytes(DType t) { return t == DType::F32 ? 4 : 2; }
inline int64_t min64(int64_t a, int64_t b) { return a < b ? a : b; }
inline int64_t round_up(int64_t x, int64_t m) { return (x + m - 1) / m * m; }
inline float* align64(float* p) {
    return reinterpret_cast<float*>((reinterpret_cast<uintptr_t>(p) + 63) & ~static_cast<uintptr_t>(63));
}
const float kNegInf = -INFINITY;

// n storage elements at src[offset..] to fp32 dst[0..n), then zeros up to `padded`. src may
// sit at any byte address (gqa.h): unaligned vector loads, and load_f32 (memcpy) for the tail.
inline void load_row(const void* src, int64_t offset, DType t, int64_t n, int64_t padded, float* dst) {
    int64_t d = 0;
    if (t == DType::F32) {
        const float* s = static_cast<const float*>(src) + offset;
        for (; d + W <= n; d += W) Simd::store(dst + d, Simd::load(s + d));
    } else if (t == DType::F16) {
        const uint16_t* s = static_cast<const uint16_t*>(src) + offset;
        for (; d + W <= n; d += W) Simd::store(dst + d, Simd::load_f16(s + d));
    } else {
        const uint16_t* s = static_cast<const uint16_t*>(src) + offset;
        for (; d + W <= n; d += W) Simd::store(dst + d, Simd::load_bf16(s + d));
    }
    for (; d < n; ++d) dst[d] = load_f32(src, offset + d, t);
    for (; d < padded; ++d) dst[d] = 0.0f;
}

// Asks for the K and V rows of keys [j0, j0 + n) to be brought into cache. The rows of one KV
// head are num_kv_heads * head_dim elements apart (often more than a page), which the hardware
// prefetchers do not follow; without this, decode waits on memory latency instead of bandwidth.
inline void prefetch_block(const Tile& t, int64_t j0, int64_t n) {
    const int64_t es = elem_bytes(t.dtype);
    const int64_t row_bytes = t.head_dim * es;
    const int64_t k_stride_bytes = t.kv_stride * es, v_stride_bytes = value_step(t) * es;
    for (int64_t j = j0, run; j < j0 + n; j += run) {  // one run of consecutive rows per page
        run = key_run(t, j, j0 + n - j);
        const char* k = static_cast<const char*>(t.k) + key_offset(t, j) * es;
        const char* v = static_cast<const char*>(t.v) + value_offset(t, j) * es;
        for (int64_t jj = 0; jj < run; ++jj, k += k_stride_bytes, v += v_stride_bytes) {
            for (int64_t b = 0; b < row_bytes; b += 64) {
                prefetch_l1(k + b);
                prefetch_l1(v + b);
            }
        }
    }
}

// The logits s[0..count) (count a multiple of W) from raw scores: softcap c gives
// c * tanh(raw * scale / c). tanh(x) = 1 - 2 / (e^{2x} + 1) loses its low bits to cancellation
// near 0 (an absolute error ~6e-8 that the factor c turns into c * 6e-8 on the logit: 2e-3 at
// c = 30000), so below |x| < 0.3 the odd Taylor series to x^9 runs instead (relative error
// < 6e-8 there). +-1 at the ends, since Simd::exp saturates; NaN stays NaN. The one softcap of
// the SIMD paths (scalar: std::tanh).
inline void softcap_scores(float* s, int64_t count, float scale, float softcap) {
    const Reg c = Simd::set1(softcap), scale_over_c = Simd::set1(scale / softcap);
    const Reg one = Simd::set1(1.0f), two = Simd::set1(2.0f), small = Simd::set1(0.09f);  // 0.3^2
    const Reg t9 = Simd::set1(62.0f / 2835.0f), t7 = Simd::set1(-17.0f / 315.0f);
    const Reg t5 = Simd::set1(2.0f / 15.0f), t3 = Simd::set1(-1.0f / 3.0f);
    for (int64_t i = 0; i < count; i += W) {
        const Reg x = Simd::mul(Simd::load(s + i), scale_over_c), x2 = Simd::mul(x, x);
        const Reg e = Simd::exp(Simd::add(x, x));
        const Reg by_exp = Simd::sub(one, Simd::div(two, Simd::add(e, one)));
        const Reg series = Simd::fmadd(Simd::mul(x, x2), Simd::fmadd(Simd::fmadd(Simd::fmadd(t9, x2, t7), x2, t5), x2, t3), x);
        Simd::store(s + i, Simd::mul(c, Simd::select_lt(x2, small, series, by_exp)));
    }
}

// The row-state init of row r (query r / group, head r % group): the partial it resumes, an
// empty softmax, or one that starts from the head's sink (e^sink in the denominator).
inline void init_row_state(const Tile& t, int64_t r, float* row_max, float* row_sum) {
    if (t.resume) {
        *row_max = t.part_max[r];
        *row_sum = t.part_sum[r];
    } else if (t.sinks && t.sinks[r % t.group] != kNegInf) {
        *row_max = t.sinks[r % t.group];
        *row_sum = 1.0f;
    } else {
        *row_max = kNegInf;
        *row_sum = 0.0f;
    }
}

// Row r's output (acc / sum, and its lse; or the partial) from a contiguous fp32 accumulator row.
inline void finish_row(const Tile& t, int64_t r, const float* acc, float running_max, float running_sum) {
    const int64_t d_len = t.head_dim;
    if (t.out) {
        const float inv = running_sum == 0.0f ? 0.0f : 1.0f / running_sum;  // no finite logit: 0
        const int64_t i = r / t.group, g = r % t.group;
        const int64_t o = i * t.out_stride + g * t.out_head_stride;
        if (t.lse) {
            t.lse[g * t.lse_head_stride + i] = running_sum == 0.0f ? kNegInf : running_max + __builtin_logf(running_sum);
        }
        const Reg scale = Simd::set1(inv);
        int64_t d = 0;
        if (t.dtype == DType::F32) {
            for (; d + W <= d_len; d += W) Simd::store(static_cast<float*>(t.out) + o + d, Simd::mul(Simd::load(acc + d), scale));
        } else if (t.dtype == DType::F16) {
            for (; d + W <= d_len; d += W) Simd::store_f16(static_cast<uint16_t*>(t.out) + o + d, Simd::mul(Simd::load(acc + d), scale));
        } else {
            for (; d + W <= d_len; d += W) Simd::store_bf16(static_cast<uint16_t*>(t.out) + o + d, Simd::mul(Simd::load(acc + d), scale));
        }
        for (; d < d_len; ++d) store_f32(t.out, o + d, acc[d] * inv, t.dtype);
    } else {
        t.part_max[r] = running_max;
        t.part_sum[r] = running_sum;
        for (int64_t d = 0; d < d_len; ++d) t.part_acc[r * d_len + d] = acc[d];
    }
}

}  // namespace
}  // namespace cpu
}  // namespace gqa
