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
    // Decode, G > 1 in bf16/f16: convert K in each row's loads rather than stage it in fp32 once
    // per block (faster on Zen 3: benchmarks/NOTES.md section 13).
    static constexpr bool stage_half_keys() { return false; }

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
    // x rounded to f16 / bf16 (nearest even, NaN stays a quiet NaN, overflow to Inf) at p[0..8).
    static void store_f16(uint16_t* p, Reg x) {
        _mm_storeu_si128(reinterpret_cast<__m128i*>(p), _mm256_cvtps_ph(x, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC));
    }
    static void store_bf16(uint16_t* p, Reg x) {
        const __m256i u = _mm256_castps_si256(x);
        const __m256i lsb = _mm256_and_si256(_mm256_srli_epi32(u, 16), _mm256_set1_epi32(1));
        const __m256i rounded = _mm256_srli_epi32(_mm256_add_epi32(u, _mm256_add_epi32(lsb, _mm256_set1_epi32(0x7fff))), 16);
        // NaN: |u| > 0x7f800000 (signed compare is fine: both sides are non-negative)
        const __m256i nan = _mm256_cmpgt_epi32(_mm256_and_si256(u, _mm256_set1_epi32(0x7fffffff)), _mm256_set1_epi32(0x7f800000));
        const __m256i quiet = _mm256_or_si256(_mm256_srli_epi32(u, 16), _mm256_set1_epi32(0x40));
        const __m256i r = _mm256_blendv_epi8(rounded, quiet, nan);
        _mm_storeu_si128(reinterpret_cast<__m128i*>(p), _mm_packus_epi32(_mm256_castsi256_si128(r), _mm256_extracti128_si256(r, 1)));
    }
    // x as a value the compiler must have rounded: no FMA contraction of the product that made
    // it with what follows (softmax_block subtracts the max from a rounded logit).
    static Reg rounded(Reg x) {
        __asm__("" : "+x"(x));
        return x;
    }
    static Reg fmadd(Reg a, Reg b, Reg c) { return _mm256_fmadd_ps(a, b, c); }
    static Reg fmsub(Reg a, Reg b, Reg c) { return _mm256_fmsub_ps(a, b, c); }
    static Reg mul(Reg a, Reg b) { return _mm256_mul_ps(a, b); }
    static Reg add(Reg a, Reg b) { return _mm256_add_ps(a, b); }
    static Reg sub(Reg a, Reg b) { return _mm256_sub_ps(a, b); }
    static Reg div(Reg a, Reg b) { return _mm256_div_ps(a, b); }
    static Reg max(Reg a, Reg b) { return _mm256_max_ps(a, b); }  // NaN in b propagates
    static Reg neg_inf_to_zero(Reg x) {
        const Reg is_neg_inf = _mm256_cmp_ps(x, _mm256_set1_ps(-INFINITY), _CMP_EQ_OQ);
        return _mm256_blendv_ps(x, _mm256_setzero_ps(), is_neg_inf);
    }
    // Lanes with a < b take x, the others (NaN included) y.
    static Reg select_lt(Reg a, Reg b, Reg x, Reg y) { return _mm256_blendv_ps(y, x, _mm256_cmp_ps(a, b, _CMP_LT_OQ)); }
    // Lanes with begins[lane] <= j < ends[lane] take a, the others b.
    static Reg select_in(int32_t j, const int32_t* begins, const int32_t* ends, Reg a, Reg b) {
        const __m256i jv = _mm256_set1_epi32(j);
        const __m256i below_end = _mm256_cmpgt_epi32(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(ends)), jv);
        const __m256i before_begin = _mm256_cmpgt_epi32(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(begins)), jv);
        return _mm256_blendv_ps(b, a, _mm256_castsi256_ps(_mm256_andnot_si256(before_begin, below_end)));
    }
    // All lanes of a equal those of b (NaN never equals).
    static bool all_equal(Reg a, Reg b) { return _mm256_movemask_ps(_mm256_cmp_ps(a, b, _CMP_EQ_OQ)) == 0xff; }
    // dst[c * dst_stride + r] = src[r * src_stride + c] for an 8 x 8 block of 32-bit values.
    static void transpose(const float* src, int64_t src_stride, float* dst, int64_t dst_stride) {
        Reg t[8], u[8];
        for (int i = 0; i < 8; i += 2) {
            const Reg a = load(src + i * src_stride), b = load(src + (i + 1) * src_stride);
            t[i] = _mm256_unpacklo_ps(a, b);      // a0 b0 a1 b1 | a4 b4 a5 b5
            t[i + 1] = _mm256_unpackhi_ps(a, b);  // a2 b2 a3 b3 | a6 b6 a7 b7
        }
        for (int i = 0; i < 8; i += 4) {  // rows i..i+3, column m + 4 * (128-bit lane) in u[i + m]
            u[i] = _mm256_shuffle_ps(t[i], t[i + 2], _MM_SHUFFLE(1, 0, 1, 0));
            u[i + 1] = _mm256_shuffle_ps(t[i], t[i + 2], _MM_SHUFFLE(3, 2, 3, 2));
            u[i + 2] = _mm256_shuffle_ps(t[i + 1], t[i + 3], _MM_SHUFFLE(1, 0, 1, 0));
            u[i + 3] = _mm256_shuffle_ps(t[i + 1], t[i + 3], _MM_SHUFFLE(3, 2, 3, 2));
        }
        for (int m = 0; m < 4; ++m) {
            store(dst + m * dst_stride, _mm256_permute2f128_ps(u[m], u[4 + m], 0x20));
            store(dst + (m + 4) * dst_stride, _mm256_permute2f128_ps(u[m], u[4 + m], 0x31));
        }
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
    // 2^t = 2^n * 2^f with n = round(t), |f| <= 1/2: 2^f by a degree-5 polynomial (relative
    // error < 2e-7). Exactly 0 below -126 (and for -inf); NaN stays NaN.
    static Reg exp2(Reg t) {
        const Reg tc = _mm256_min_ps(_mm256_set1_ps(127.0f), _mm256_max_ps(_mm256_set1_ps(-126.0f), t));  // NaN kept
        const Reg n = _mm256_round_ps(tc, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
        const Reg f = _mm256_sub_ps(tc, n);
        Reg p = _mm256_set1_ps(0.0013264722656458616f);
        p = _mm256_fmadd_ps(p, f, _mm256_set1_ps(0.009671513922512531f));
        p = _mm256_fmadd_ps(p, f, _mm256_set1_ps(0.05550733581185341f));
        p = _mm256_fmadd_ps(p, f, _mm256_set1_ps(0.24022242426872253f));
        p = _mm256_fmadd_ps(p, f, _mm256_set1_ps(0.6931470036506653f));
        p = _mm256_fmadd_ps(p, f, _mm256_set1_ps(1.0f));
        const __m256i bits = _mm256_slli_epi32(_mm256_add_epi32(_mm256_cvtps_epi32(n), _mm256_set1_epi32(127)), 23);
        const Reg result = _mm256_mul_ps(p, _mm256_castsi256_ps(bits));
        const Reg underflow = _mm256_cmp_ps(t, _mm256_set1_ps(-126.0f), _CMP_LT_OQ);
        return _mm256_blendv_ps(result, _mm256_setzero_ps(), underflow);
    }
    static Reg exp(Reg x) { return exp2(_mm256_mul_ps(x, _mm256_set1_ps(1.44269504f))); }
};

}  // namespace
}  // namespace cpu
}  // namespace gqa

#include "cpu/kernel_simd.inl"
#include "cpu/decode_simd.inl"

namespace gqa {
namespace cpu {
void attend_tile_avx2(const Tile& t, float* scratch) { attend_tile_simd(t, scratch); }
void pack_kv_avx2_f32(const Tile& t, int64_t first_block, int64_t num_blocks, void* blocks, uint8_t* v_nonfinite) {
    pack_kv<FmaMma>(t, first_block, num_blocks, blocks, v_nonfinite);
}
void prefill_tile_avx2_f32(const Tile& t, float* scratch) { prefill_lanes<FmaMma>(t, scratch); }
void decode_avx2(const DecodeWork& w, float* scratch) { decode_simd(w, scratch); }
}  // namespace cpu
}  // namespace gqa
