// simd_avx512.hpp: the 16-lane fp32 vector interface `Simd` that kernel_simd.inl and
// prefill_lanes.inl are written over, for the AVX-512 translation units (attention_avx512.cpp,
// attention_avx512_bf16.cpp, attention_amx_bf16.cpp). Include only from files compiled with the
// AVX-512 flags of cmake/GqaCpuIsa.cmake; internal linkage, like everything those files define.
#pragma once
// GCC 12's _mm512_cvtph_ps and _mm512_set*_epi* use a deliberately undefined register: false
// -W(maybe-)uninitialized warnings.
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#pragma GCC diagnostic ignored "-Wuninitialized"

#include <immintrin.h>

#include <cmath>
#include <cstdint>

#include "cpu/isa.hpp"

namespace gqa {
namespace cpu {
namespace {

struct Simd {
    using Reg = __m512;
    static constexpr int64_t kWidth = 16;
    // Decode, G > 1 in bf16/f16: on Intel, stage K in fp32 once per block rather than convert
    // it in each row's loads (its conversions take the shuffle port: benchmarks/NOTES.md
    // section 8); on AMD convert in the loads (Zen 5: 0.69-0.90x the time, section 16).
    static bool stage_half_keys() { return !cpu_is_amd(); }

    static Reg zero() { return _mm512_setzero_ps(); }
    static Reg set1(float x) { return _mm512_set1_ps(x); }
    static Reg load(const float* p) { return _mm512_loadu_ps(p); }
    static void store(float* p, Reg x) { _mm512_storeu_ps(p, x); }
    static Reg load_f16(const uint16_t* p) {
        return _mm512_cvtph_ps(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(p)));
    }
    static Reg load_bf16(const uint16_t* p) {  // bf16 is the top half of an f32: exact
        const __m512i wide = _mm512_cvtepu16_epi32(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(p)));
        return _mm512_castsi512_ps(_mm512_slli_epi32(wide, 16));
    }
    // x rounded to f16 / bf16 (nearest even, NaN stays a quiet NaN, overflow to Inf) at p[0..16).
    static void store_f16(uint16_t* p, Reg x) {
        _mm256_storeu_si256(reinterpret_cast<__m256i*>(p), _mm512_cvtps_ph(x, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC));
    }
    static void store_bf16(uint16_t* p, Reg x) {
        const __m512i u = _mm512_castps_si512(x);
        const __m512i lsb = _mm512_and_si512(_mm512_srli_epi32(u, 16), _mm512_set1_epi32(1));
        const __m512i rounded = _mm512_srli_epi32(_mm512_add_epi32(u, _mm512_add_epi32(lsb, _mm512_set1_epi32(0x7fff))), 16);
        const __mmask16 nan = _mm512_cmpgt_epu32_mask(_mm512_and_si512(u, _mm512_set1_epi32(0x7fffffff)), _mm512_set1_epi32(0x7f800000));
        const __m512i quiet = _mm512_or_si512(_mm512_srli_epi32(u, 16), _mm512_set1_epi32(0x40));
        _mm256_storeu_si256(reinterpret_cast<__m256i*>(p), _mm512_cvtepi32_epi16(_mm512_mask_blend_epi32(nan, rounded, quiet)));
    }
    // x as a value the compiler must have rounded: no FMA contraction of the product that made
    // it with what follows (softmax_block subtracts the max from a rounded logit).
    static Reg rounded(Reg x) {
        __asm__("" : "+v"(x));
        return x;
    }
    static Reg fmadd(Reg a, Reg b, Reg c) { return _mm512_fmadd_ps(a, b, c); }
    static Reg fmsub(Reg a, Reg b, Reg c) { return _mm512_fmsub_ps(a, b, c); }
    static Reg mul(Reg a, Reg b) { return _mm512_mul_ps(a, b); }
    static Reg add(Reg a, Reg b) { return _mm512_add_ps(a, b); }
    static Reg sub(Reg a, Reg b) { return _mm512_sub_ps(a, b); }
    static Reg div(Reg a, Reg b) { return _mm512_div_ps(a, b); }
    static Reg max(Reg a, Reg b) { return _mm512_max_ps(a, b); }  // NaN in b propagates
    static Reg neg_inf_to_zero(Reg x) {
        const __mmask16 is_neg_inf = _mm512_cmp_ps_mask(x, _mm512_set1_ps(-INFINITY), _CMP_EQ_OQ);
        return _mm512_mask_blend_ps(is_neg_inf, x, _mm512_setzero_ps());
    }
    // Lanes with a < b take x, the others (NaN included) y.
    static Reg select_lt(Reg a, Reg b, Reg x, Reg y) {
        return _mm512_mask_blend_ps(_mm512_cmp_ps_mask(a, b, _CMP_LT_OQ), y, x);
    }
    // Lanes with begins[lane] <= j < ends[lane] take a, the others b.
    static Reg select_in(int32_t j, const int32_t* begins, const int32_t* ends, Reg a, Reg b) {
        const __m512i jv = _mm512_set1_epi32(j);
        const __mmask16 in = _mm512_cmplt_epi32_mask(jv, _mm512_loadu_si512(ends)) &
                             _mm512_cmple_epi32_mask(_mm512_loadu_si512(begins), jv);
        return _mm512_mask_blend_ps(in, b, a);
    }
    // All lanes of a equal those of b (NaN never equals).
    static bool all_equal(Reg a, Reg b) { return _mm512_cmp_ps_mask(a, b, _CMP_EQ_OQ) == 0xffff; }
    // dst[c * dst_stride + r] = src[r * src_stride + c] for a 16 x 16 block of 32-bit values.
    static void transpose(const float* src, int64_t src_stride, float* dst, int64_t dst_stride) {
        Reg t[16], u[16];
        for (int i = 0; i < 16; i += 2) {
            const Reg a = load(src + i * src_stride), b = load(src + (i + 1) * src_stride);
            t[i] = _mm512_unpacklo_ps(a, b);      // a0 b0 a1 b1 | a4 b4 a5 b5 | ...
            t[i + 1] = _mm512_unpackhi_ps(a, b);  // a2 b2 a3 b3 | ...
        }
        for (int i = 0; i < 16; i += 4) {  // rows i..i+3, column m + 4 * (128-bit lane) in u[i + m]
            u[i] = _mm512_shuffle_ps(t[i], t[i + 2], _MM_SHUFFLE(1, 0, 1, 0));
            u[i + 1] = _mm512_shuffle_ps(t[i], t[i + 2], _MM_SHUFFLE(3, 2, 3, 2));
            u[i + 2] = _mm512_shuffle_ps(t[i + 1], t[i + 3], _MM_SHUFFLE(1, 0, 1, 0));
            u[i + 3] = _mm512_shuffle_ps(t[i + 1], t[i + 3], _MM_SHUFFLE(3, 2, 3, 2));
        }
        for (int m = 0; m < 4; ++m) {
            const Reg v0 = _mm512_shuffle_f32x4(u[m], u[4 + m], 0x88), w0 = _mm512_shuffle_f32x4(u[m], u[4 + m], 0xdd);
            const Reg v1 = _mm512_shuffle_f32x4(u[8 + m], u[12 + m], 0x88);
            const Reg w1 = _mm512_shuffle_f32x4(u[8 + m], u[12 + m], 0xdd);
            store(dst + m * dst_stride, _mm512_shuffle_f32x4(v0, v1, 0x88));
            store(dst + (m + 4) * dst_stride, _mm512_shuffle_f32x4(w0, w1, 0x88));
            store(dst + (m + 8) * dst_stride, _mm512_shuffle_f32x4(v0, v1, 0xdd));
            store(dst + (m + 12) * dst_stride, _mm512_shuffle_f32x4(w0, w1, 0xdd));
        }
    }
    static float reduce_add(Reg x) { return _mm512_reduce_add_ps(x); }
    static float reduce_max(Reg x) { return _mm512_reduce_max_ps(x); }
    // out[0..3] = the lane sums of a, b, c, d.
    static void reduce_add4(Reg a, Reg b, Reg c, Reg d, float* out) {
        const __m256 a8 = _mm256_add_ps(_mm512_castps512_ps256(a), _mm512_extractf32x8_ps(a, 1));
        const __m256 b8 = _mm256_add_ps(_mm512_castps512_ps256(b), _mm512_extractf32x8_ps(b, 1));
        const __m256 c8 = _mm256_add_ps(_mm512_castps512_ps256(c), _mm512_extractf32x8_ps(c, 1));
        const __m256 d8 = _mm256_add_ps(_mm512_castps512_ps256(d), _mm512_extractf32x8_ps(d, 1));
        const __m256 t = _mm256_hadd_ps(_mm256_hadd_ps(a8, b8), _mm256_hadd_ps(c8, d8));
        _mm_storeu_ps(out, _mm_add_ps(_mm256_castps256_ps128(t), _mm256_extractf128_ps(t, 1)));
    }
    // 2^t = 2^n * 2^f with n = round(t), |f| <= 1/2: 2^f by the polynomial c (highest degree
    // first), 2^n by vscalefps. Exactly 0 below -126 (and for -inf); NaN stays NaN.
    template <int N>
    static Reg exp2_poly(Reg t, const float (&c)[N]) {
        const Reg tc = _mm512_min_ps(_mm512_set1_ps(128.0f), t);  // NaN kept (second operand)
        const Reg n = _mm512_roundscale_ps(tc, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
        const Reg f = _mm512_sub_ps(tc, n);
        Reg p = _mm512_set1_ps(c[0]);
#pragma GCC unroll 8
        for (int i = 1; i < N; ++i) p = _mm512_fmadd_ps(p, f, _mm512_set1_ps(c[i]));
        const __mmask16 live = _mm512_cmp_ps_mask(t, _mm512_set1_ps(-126.0f), _CMP_NLT_UQ);  // NaN included
        return _mm512_maskz_scalef_ps(live, p, n);
    }
    // 2^t to fp32 precision: degree 5, relative error < 2e-7.
    static Reg exp2(Reg t) {
        static constexpr float c[] = {0.0013264722656458616f, 0.009671513922512531f, 0.05550733581185341f,
                                      0.24022242426872253f, 0.6931470036506653f, 1.0f};
        return exp2_poly(t, c);
    }
    // 2^t to about bf16 precision: degree 3, relative error < 8e-5 (50x below a bf16 rounding
    // step), for probabilities that P.V rounds to bf16 anyway.
    static Reg exp2_bf16(Reg t) {
        static constexpr float c[] = {0.05517132207751274f, 0.24261054396629333f, 0.6932609677314758f,
                                      0.9999281167984009f};
        return exp2_poly(t, c);
    }
    static Reg exp(Reg x) { return exp2(_mm512_mul_ps(x, _mm512_set1_ps(1.44269504f))); }
};

}  // namespace
}  // namespace cpu
}  // namespace gqa
