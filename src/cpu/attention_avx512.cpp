// attention_avx512.cpp: the SIMD tile kernel (kernel_simd.inl) on 16 fp32 lanes of AVX-512.
// Compiled with AVX-512 flags (cmake/GqaCpuIsa.cmake); called only after a CPUID check.
// GCC 12's _mm512_cvtph_ps uses a deliberately undefined register: a false -Wmaybe-uninitialized.
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"

#include <immintrin.h>

#include <cmath>
#include <cstdint>

namespace gqa {
namespace cpu {
namespace {

struct Simd {
    using Reg = __m512;
    static constexpr int64_t kWidth = 16;

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
    static Reg fmadd(Reg a, Reg b, Reg c) { return _mm512_fmadd_ps(a, b, c); }
    static Reg mul(Reg a, Reg b) { return _mm512_mul_ps(a, b); }
    static Reg add(Reg a, Reg b) { return _mm512_add_ps(a, b); }
    static Reg sub(Reg a, Reg b) { return _mm512_sub_ps(a, b); }
    static Reg max(Reg a, Reg b) { return _mm512_max_ps(a, b); }  // NaN in b propagates
    static Reg neg_inf_to_zero(Reg x) {
        const __mmask16 is_neg_inf = _mm512_cmp_ps_mask(x, _mm512_set1_ps(-INFINITY), _CMP_EQ_OQ);
        return _mm512_mask_blend_ps(is_neg_inf, x, _mm512_setzero_ps());
    }
    // Lanes with j < ends[lane] take a, the others b.
    static Reg select_lt(int32_t j, const int32_t* ends, Reg a, Reg b) {
        const __mmask16 lt = _mm512_cmplt_epi32_mask(_mm512_set1_epi32(j), _mm512_loadu_si512(ends));
        return _mm512_mask_blend_ps(lt, b, a);
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
    // e^x to about 2 ulp: 2^n * e^r with |r| <= ln2/2 and a degree-7 Taylor polynomial.
    // Exactly 0 below -87 (and for -inf); NaN stays NaN.
    static Reg exp(Reg x) {
        Reg xc = _mm512_max_ps(_mm512_set1_ps(-87.0f), x);  // a NaN x is the second operand: kept
        xc = _mm512_min_ps(_mm512_set1_ps(88.0f), xc);
        const Reg n = _mm512_roundscale_ps(_mm512_mul_ps(xc, _mm512_set1_ps(1.44269504f)),
                                           _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
        Reg r = _mm512_fnmadd_ps(n, _mm512_set1_ps(0.693359375f), xc);
        r = _mm512_fnmadd_ps(n, _mm512_set1_ps(-2.12194440e-4f), r);
        Reg p = _mm512_set1_ps(1.0f / 5040.0f);
        p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f / 720.0f));
        p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f / 120.0f));
        p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f / 24.0f));
        p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f / 6.0f));
        p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(0.5f));
        p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f));
        p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f));
        const __m512i bits = _mm512_slli_epi32(_mm512_add_epi32(_mm512_cvtps_epi32(n), _mm512_set1_epi32(127)), 23);
        const Reg result = _mm512_mul_ps(p, _mm512_castsi512_ps(bits));
        const __mmask16 underflow = _mm512_cmp_ps_mask(x, _mm512_set1_ps(-87.0f), _CMP_LT_OQ);
        return _mm512_mask_blend_ps(underflow, result, _mm512_setzero_ps());
    }
};

}  // namespace
}  // namespace cpu
}  // namespace gqa

#include "cpu/kernel_simd.inl"

namespace gqa {
namespace cpu {
void attend_tile_avx512(const Tile& t, float* scratch) { attend_tile_simd(t, scratch); }
}  // namespace cpu
}  // namespace gqa
