// attention_avx2.cpp: the SIMD tile kernel (kernel_simd.inl) on 8 fp32 lanes of AVX2 + FMA +
// F16C. Compiled with those flags (cmake/GqaCpuIsa.cmake); called only after a CPUID check.
#include <immintrin.h>

#include <cmath>
#include <cstdint>

namespace gqa {
namespace cpu {
namespace {

struct Simd {
    using Reg = __m256;
    static constexpr int64_t kWidth = 8;

    static Reg zero() { return _mm256_setzero_ps(); }
    static Reg set1(float x) { return _mm256_set1_ps(x); }
    static Reg load(const float* p) { return _mm256_loadu_ps(p); }
    static void store(float* p, Reg x) { _mm256_storeu_ps(p, x); }
    static Reg load_f16(const uint16_t* p) {
        return _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p)));
    }
    static Reg load_bf16(const uint16_t* p) {  // bf16 is the top half of an f32: exact
        const __m256i wide = _mm256_cvtepu16_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p)));
        return _mm256_castsi256_ps(_mm256_slli_epi32(wide, 16));
    }
    static Reg fmadd(Reg a, Reg b, Reg c) { return _mm256_fmadd_ps(a, b, c); }
    static Reg mul(Reg a, Reg b) { return _mm256_mul_ps(a, b); }
    static Reg add(Reg a, Reg b) { return _mm256_add_ps(a, b); }
    static Reg sub(Reg a, Reg b) { return _mm256_sub_ps(a, b); }
    static Reg max(Reg a, Reg b) { return _mm256_max_ps(a, b); }  // NaN in b propagates
    static Reg neg_inf_to_zero(Reg x) {
        const Reg is_neg_inf = _mm256_cmp_ps(x, _mm256_set1_ps(-INFINITY), _CMP_EQ_OQ);
        return _mm256_blendv_ps(x, _mm256_setzero_ps(), is_neg_inf);
    }
    // Lanes with j < ends[lane] take a, the others b.
    static Reg select_lt(int32_t j, const int32_t* ends, Reg a, Reg b) {
        const __m256i e = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(ends));
        const __m256i lt = _mm256_cmpgt_epi32(e, _mm256_set1_epi32(j));
        return _mm256_blendv_ps(b, a, _mm256_castsi256_ps(lt));
    }
    static float reduce_add(Reg x) {
        __m128 s = _mm_add_ps(_mm256_castps256_ps128(x), _mm256_extractf128_ps(x, 1));
        s = _mm_add_ps(s, _mm_movehl_ps(s, s));
        s = _mm_add_ss(s, _mm_movehdup_ps(s));
        return _mm_cvtss_f32(s);
    }
    static float reduce_max(Reg x) {
        __m128 s = _mm_max_ps(_mm256_castps256_ps128(x), _mm256_extractf128_ps(x, 1));
        s = _mm_max_ps(s, _mm_movehl_ps(s, s));
        s = _mm_max_ss(s, _mm_movehdup_ps(s));
        return _mm_cvtss_f32(s);
    }
    // out[0..3] = the lane sums of a, b, c, d.
    static void reduce_add4(Reg a, Reg b, Reg c, Reg d, float* out) {
        const __m256 t = _mm256_hadd_ps(_mm256_hadd_ps(a, b), _mm256_hadd_ps(c, d));
        _mm_storeu_ps(out, _mm_add_ps(_mm256_castps256_ps128(t), _mm256_extractf128_ps(t, 1)));
    }
    // e^x to about 2 ulp: 2^n * e^r with |r| <= ln2/2 and a degree-7 Taylor polynomial.
    // Exactly 0 below -87 (and for -inf); NaN stays NaN.
    static Reg exp(Reg x) {
        Reg xc = _mm256_max_ps(_mm256_set1_ps(-87.0f), x);  // a NaN x is the second operand: kept
        xc = _mm256_min_ps(_mm256_set1_ps(88.0f), xc);
        const Reg n = _mm256_round_ps(_mm256_mul_ps(xc, _mm256_set1_ps(1.44269504f)),
                                      _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
        Reg r = _mm256_fnmadd_ps(n, _mm256_set1_ps(0.693359375f), xc);
        r = _mm256_fnmadd_ps(n, _mm256_set1_ps(-2.12194440e-4f), r);
        Reg p = _mm256_set1_ps(1.0f / 5040.0f);
        p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.0f / 720.0f));
        p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.0f / 120.0f));
        p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.0f / 24.0f));
        p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.0f / 6.0f));
        p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(0.5f));
        p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.0f));
        p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.0f));
        const __m256i bits = _mm256_slli_epi32(_mm256_add_epi32(_mm256_cvtps_epi32(n), _mm256_set1_epi32(127)), 23);
        const Reg result = _mm256_mul_ps(p, _mm256_castsi256_ps(bits));
        const Reg underflow = _mm256_cmp_ps(x, _mm256_set1_ps(-87.0f), _CMP_LT_OQ);
        return _mm256_blendv_ps(result, _mm256_setzero_ps(), underflow);
    }
};

}  // namespace
}  // namespace cpu
}  // namespace gqa

#include "cpu/kernel_simd.inl"

namespace gqa {
namespace cpu {
void attend_tile_avx2(const Tile& t, float* scratch) { attend_tile_simd(t, scratch); }
}  // namespace cpu
}  // namespace gqa
