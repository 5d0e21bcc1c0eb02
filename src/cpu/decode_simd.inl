// decode_simd.inl: the SIMD decode kernel (decode.hpp), written once over `Simd` and compiled
// per ISA (attention_avx2.cpp, attention_avx512.cpp, decode_avx512_bf16.cpp: the last also takes
// bf16 rows read in place with vdpbf16ps, row_scores and pv_bf16). Include after kernel_simd.inl, whose
// helpers (visible_end, load_row, finish_row, round_up, ...) it uses.
//
// One call per DecodeWork (a split of one sequence, every KV head). A group with at least as
// many query rows as lanes (G >= 16 on AVX-512) goes to the rows-in-lanes kernel instead
// (prefill_lanes.inl), one head at a time over the whole split: no horizontal sums there.
// Positions are walked in blocks of decode_block() positions; each block visits every KV head
// before the next block, so the K and V rows of a block (all heads of a position are one
// contiguous row) are read as one stream, the next block prefetched while this one is computed
// (a share of it before each row's scores); a single query
// with G <= kByPositionMaxGroup walks each block position by position instead
// (block_by_position_mha / _group: the cache in address order). Every query row's online
// softmax state (scaled q, accumulator, max, sum) lives in scratch for the whole split.
//
// head_dim is the vector axis: a dot product per (row, key), then P.V with all G rows of a KV
// head sharing every V load. Rows are read straight from the cache and converted in registers
// (no copy): V always, K when one row reads it (G = 1) or when it is f32. K in bf16/f16 read by
// G > 1 rows is converted once per block into fp32 scratch instead of once per row where that
// is faster (Simd::stage_half_keys(): by ISA and CPU vendor). A head_dim that is not a whole
// number of vectors stages both (zero padded), so no load crosses a row.
//
// Keys a row does not see (causal mask, window) are never read for that row: its visible range
// bounds the loops, so a NaN/Inf there cannot reach it. Softcap applies to the scaled logits
// (softcap_scores), sinks start the row state (init_row_state) and the lse is written with the
// output (finish_row): the same helpers as the prefill kernel.
#include <type_traits>

#include "cpu/decode.hpp"
#include "cpu/isa.hpp"  // cpu_is_amd

namespace gqa {
namespace cpu {
namespace {

// W consecutive elements of a row in dtype T, as fp32.
template <DType T>
inline Reg load_elems(const char* p) {
    if (T == DType::F32) return Simd::load(reinterpret_cast<const float*>(p));
    if (T == DType::BF16) return Simd::load_bf16(reinterpret_cast<const uint16_t*>(p));
    return Simd::load_f16(reinterpret_cast<const uint16_t*>(p));
}

// n rows of one head: row jj's vector c (elements c*W .. c*W + W - 1) at base + jj * stride
// bytes, in dtype T: the cache itself, or fp32 rows staged in scratch.
template <DType T>
struct Rows {
    const char* base;
    int64_t stride;
    const char* row(int64_t jj) const { return base + jj * stride; }
    Reg load(int64_t jj, int64_t c) const { return load_elems<T>(row(jj) + c * W * (T == DType::F32 ? 4 : 2)); }
};
// Rows at base + offsets[jj] bytes: a block that spans pages, read in place (the same loads
// as Rows, so the same bits).
template <DType T>
struct GatherRows {
    const char* base;
    const int64_t* offsets;
    const char* row(int64_t jj) const { return base + offsets[jj]; }
    Reg load(int64_t jj, int64_t c) const { return load_elems<T>(row(jj) + c * W * (T == DType::F32 ? 4 : 2)); }
};

// s[jj] = q . row jj for jj < n, C vectors of q held in registers, 4 rows per reduction.
template <int C, typename R>
inline void dots_fixed(const float* q, const R& k, int64_t n, float* s) {
    Reg qv[C];
#pragma GCC unroll 16
    for (int c = 0; c < C; ++c) qv[c] = Simd::load(q + c * W);
    int64_t jj = 0;
    for (; jj + 4 <= n; jj += 4) {
        Reg a0 = Simd::mul(qv[0], k.load(jj, 0)), a1 = Simd::mul(qv[0], k.load(jj + 1, 0));
        Reg a2 = Simd::mul(qv[0], k.load(jj + 2, 0)), a3 = Simd::mul(qv[0], k.load(jj + 3, 0));
#pragma GCC unroll 16
        for (int c = 1; c < C; ++c) {
            a0 = Simd::fmadd(qv[c], k.load(jj, c), a0);
            a1 = Simd::fmadd(qv[c], k.load(jj + 1, c), a1);
            a2 = Simd::fmadd(qv[c], k.load(jj + 2, c), a2);
            a3 = Simd::fmadd(qv[c], k.load(jj + 3, c), a3);
        }
        Simd::reduce_add4(a0, a1, a2, a3, s + jj);
    }
    for (; jj < n; ++jj) {
        Reg a = Simd::mul(qv[0], k.load(jj, 0));
#pragma GCC unroll 16
        for (int c = 1; c < C; ++c) a = Simd::fmadd(qv[c], k.load(jj, c), a);
        s[jj] = Simd::reduce_add(a);
    }
}

// The same for any number of vectors, 8 keys per pass: q is re-read from L1 for each vector (one
// q load serves 8 keys), so the 8 independent FMA chains cover the FMA latency on both ports
// and no register holds q (AVX2 has 16: a head_dim of 96 or 128 leaves no room for it). Each
// key's sum is formed in the same order as in dots_fixed (4-key reductions, 1-key tail), so
// both give the same bits.
template <typename R>
inline void dots_streamed(const float* q, int64_t vectors, const R& k, int64_t n, float* s) {
    int64_t jj = 0;
    for (; jj + 8 <= n; jj += 8) {
        Reg a[8];
        const Reg q0 = Simd::load(q);
#pragma GCC unroll 8
        for (int r = 0; r < 8; ++r) a[r] = Simd::mul(q0, k.load(jj + r, 0));
        for (int64_t c = 1; c < vectors; ++c) {
            const Reg qc = Simd::load(q + c * W);
#pragma GCC unroll 8
            for (int r = 0; r < 8; ++r) a[r] = Simd::fmadd(qc, k.load(jj + r, c), a[r]);
        }
        Simd::reduce_add4(a[0], a[1], a[2], a[3], s + jj);
        Simd::reduce_add4(a[4], a[5], a[6], a[7], s + jj + 4);
    }
    for (; jj + 4 <= n; jj += 4) {
        Reg a[4];
        const Reg q0 = Simd::load(q);
#pragma GCC unroll 4
        for (int r = 0; r < 4; ++r) a[r] = Simd::mul(q0, k.load(jj + r, 0));
        for (int64_t c = 1; c < vectors; ++c) {
            const Reg qc = Simd::load(q + c * W);
#pragma GCC unroll 4
            for (int r = 0; r < 4; ++r) a[r] = Simd::fmadd(qc, k.load(jj + r, c), a[r]);
        }
        Simd::reduce_add4(a[0], a[1], a[2], a[3], s + jj);
    }
    for (; jj < n; ++jj) {
        Reg a = Simd::mul(Simd::load(q), k.load(jj, 0));
        for (int64_t c = 1; c < vectors; ++c) a = Simd::fmadd(Simd::load(q + c * W), k.load(jj, c), a);
        s[jj] = Simd::reduce_add(a);
    }
}

// q held in registers where it fits beside the 4 accumulators (up to 8 vectors: AVX2 has 16
// registers); wider rows (d96 and d128 on AVX2) are streamed.
template <typename R>
inline void dots(const float* q, int64_t vectors, const R& k, int64_t n, float* s) {
    switch (vectors) {
        case 4: dots_fixed<4>(q, k, n, s); break;
        case 6: dots_fixed<6>(q, k, n, s); break;
        case 8: dots_fixed<8>(q, k, n, s); break;
        default: dots_streamed(q, vectors, k, n, s); break;
    }
}

#if defined(__AVX512BF16__)
constexpr bool kBf16Dots = true;
#else
constexpr bool kBf16Dots = false;
#endif

#if defined(__AVX512BF16__)
// s[jj] = scale * (q . row jj) for bf16 rows and the bf16 query q (the input itself, exact),
// with vdpbf16ps: two exact bf16 products per fp32 lane, so no conversion and half the
// multiply-adds of dots; C pairs-vectors (32 bf16 each) of q held in registers, 4 rows per
// reduction. Compiled where the including file has AVX-512 BF16 (decode_avx512_bf16.cpp).
template <int C, typename R>
inline void dots_bf16_fixed(const uint16_t* q, const R& k, int64_t n, float scale, float* s) {
    auto pairs = [](const void* p) { return reinterpret_cast<__m512bh>(_mm512_loadu_si512(p)); };
    __m512bh qv[C];
#pragma GCC unroll 8
    for (int c = 0; c < C; ++c) qv[c] = pairs(q + c * 32);
    int64_t jj = 0;
    for (; jj + 4 <= n; jj += 4) {
        Reg a[4];
#pragma GCC unroll 4
        for (int i = 0; i < 4; ++i) a[i] = _mm512_dpbf16_ps(Simd::zero(), qv[0], pairs(k.row(jj + i)));
#pragma GCC unroll 8
        for (int c = 1; c < C; ++c) {
#pragma GCC unroll 4
            for (int i = 0; i < 4; ++i) a[i] = _mm512_dpbf16_ps(a[i], qv[c], pairs(k.row(jj + i) + c * 64));
        }
        float s4[4];
        Simd::reduce_add4(a[0], a[1], a[2], a[3], s4);
        for (int i = 0; i < 4; ++i) s[jj + i] = s4[i] * scale;
    }
    for (; jj < n; ++jj) {
        Reg a = _mm512_dpbf16_ps(Simd::zero(), qv[0], pairs(k.row(jj)));
#pragma GCC unroll 8
        for (int c = 1; c < C; ++c) a = _mm512_dpbf16_ps(a, qv[c], pairs(k.row(jj) + c * 64));
        s[jj] = Simd::reduce_add(a) * scale;
    }
}
#endif

// The scores of one query row over n keys of a block: q_bf16 (the row's bf16 query, or null)
// takes the bf16 dot products where they are compiled in and head_dim is 64, 96 or 128 (whole
// 64-byte rows); otherwise dots on the scaled fp32 query q.
template <DType T, typename R>
inline void row_scores(const float* q, const uint16_t* q_bf16, int64_t vectors, const R& k, int64_t n, float scale,
                       float* s) {
#if defined(__AVX512BF16__)
    if (T == DType::BF16 && q_bf16) {
        switch (vectors * W) {
            case 64: return dots_bf16_fixed<2>(q_bf16, k, n, scale, s);
            case 96: return dots_bf16_fixed<3>(q_bf16, k, n, scale, s);
            case 128: return dots_bf16_fixed<4>(q_bf16, k, n, scale, s);
            default: break;
        }
    }
#endif
    (void)q_bf16;
    (void)scale;
    dots(q, vectors, k, n, s);
}

// acc[r][c .. c + CB) = acc[r][..] * correction[r] + sum_jj p[r][jj] * V[jj][..] for NR rows
// sharing every V load, CB vectors at a time.
template <int NR, int CB, typename R>
inline void pv_vectors(const R& v, int64_t c, int64_t n, const float* p, int64_t p_stride, float* acc,
                       int64_t acc_stride, const float* correction) {
    Reg a[NR][CB];
#pragma GCC unroll 8
    for (int r = 0; r < NR; ++r) {
#pragma GCC unroll 8
        for (int b = 0; b < CB; ++b) a[r][b] = Simd::mul(Simd::load(acc + r * acc_stride + (c + b) * W), Simd::set1(correction[r]));
    }
    for (int64_t jj = 0; jj < n; ++jj) {
        Reg x[CB];
#pragma GCC unroll 8
        for (int b = 0; b < CB; ++b) x[b] = v.load(jj, c + b);
#pragma GCC unroll 8
        for (int r = 0; r < NR; ++r) {
            const Reg pr = Simd::set1(p[r * p_stride + jj]);
#pragma GCC unroll 8
            for (int b = 0; b < CB; ++b) a[r][b] = Simd::fmadd(pr, x[b], a[r][b]);
        }
    }
#pragma GCC unroll 8
    for (int r = 0; r < NR; ++r) {
#pragma GCC unroll 8
        for (int b = 0; b < CB; ++b) Simd::store(acc + r * acc_stride + (c + b) * W, a[r][b]);
    }
}

// All vectors of NR rows: about 8 accumulators at a time (NR rows x CB vectors), the independent
// FMA chains that cover the FMA latency; a single row (G = 1) would otherwise wait on one chain.
// Each accumulator sums over jj in the same order whatever CB, so CB changes no bits.
template <int NR, typename R>
inline void pv_rows(const R& v, int64_t vectors, int64_t n, const float* p, int64_t p_stride, float* acc,
                    int64_t acc_stride, const float* correction) {
    constexpr int kCb = NR == 1 ? 8 : NR == 2 ? 4 : NR <= 4 ? 2 : 1;
    int64_t c = 0;
    if constexpr (kCb >= 8) {
        for (; c + 8 <= vectors; c += 8) pv_vectors<NR, 8>(v, c, n, p, p_stride, acc, acc_stride, correction);
    }
    if constexpr (kCb >= 4) {
        for (; c + 4 <= vectors; c += 4) pv_vectors<NR, 4>(v, c, n, p, p_stride, acc, acc_stride, correction);
    }
    if constexpr (kCb >= 2) {
        for (; c + 2 <= vectors; c += 2) pv_vectors<NR, 2>(v, c, n, p, p_stride, acc, acc_stride, correction);
    }
    for (; c < vectors; ++c) pv_vectors<NR, 1>(v, c, n, p, p_stride, acc, acc_stride, correction);
}

// f(std::integral_constant<int, NR>{}, r) for groups of rows [r, r + NR) that cover `rows`:
// 8 at a time, then the rest in one group (the kernels' row count is a compile-time constant).
template <typename F>
inline void for_row_groups(int64_t rows, F&& f) {
    int64_t r = 0;
    for (; r + 8 <= rows; r += 8) f(std::integral_constant<int, 8>{}, r);
    switch (rows - r) {
        case 7: f(std::integral_constant<int, 7>{}, r); break;
        case 6: f(std::integral_constant<int, 6>{}, r); break;
        case 5: f(std::integral_constant<int, 5>{}, r); break;
        case 4: f(std::integral_constant<int, 4>{}, r); break;
        case 3: f(std::integral_constant<int, 3>{}, r); break;
        case 2: f(std::integral_constant<int, 2>{}, r); break;
        case 1: f(std::integral_constant<int, 1>{}, r); break;
        default: break;
    }
}

template <typename R>
inline void pv(int64_t rows, const R& v, int64_t vectors, int64_t n, const float* p, int64_t p_stride, float* acc,
               int64_t acc_stride, const float* correction) {
    for_row_groups(rows, [&](auto nr, int64_t r) {
        pv_rows<decltype(nr)::value>(v, vectors, n, p + r * p_stride, p_stride, acc + r * acc_stride, acc_stride,
                                     correction + r);
    });
}

#if defined(__AVX512BF16__)
// One row's probabilities p[0..n) rounded to bf16 (nearest even) at out, for pv_bf16.
inline void probs_to_bf16(const float* p, int64_t n, uint16_t* out) {
    for (int64_t jj = 0; jj < n; jj += W) {
        _mm256_storeu_si256(reinterpret_cast<__m256i*>(out + jj), reinterpret_cast<__m256i>(_mm512_cvtneps_pbh(Simd::load(p + jj))));
    }
}

// pv_vectors with vdpbf16ps for NR rows and 32 dimensions [c32 * 32, + 32) of bf16 V rows: two
// positions per step, the rows' bf16 probabilities pb as (p[jj], p[jj + 1]) pairs against V's
// two rows interleaved element by element (unpacklo/hi_epi16), so each fp32 lane adds two exact
// bf16 products. Interleaving within 128-bit lanes puts dimensions {0-3, 8-11, 16-19, 24-27} in
// the "lo" accumulator and {4-7, 12-15, 20-23, 28-31} in "hi": acc is permuted into that order
// on load and back on store. An odd last position pairs with 0 (its partner is never read).
template <int NR, typename R>
inline void pv_bf16_chunk(const R& v, int64_t c32, int64_t n, const uint16_t* pb, int64_t pb_stride, float* acc,
                          int64_t acc_stride, const float* correction) {
    const __m512i to_lo = _mm512_setr_epi32(0, 1, 2, 3, 8, 9, 10, 11, 16, 17, 18, 19, 24, 25, 26, 27);
    const __m512i to_hi = _mm512_setr_epi32(4, 5, 6, 7, 12, 13, 14, 15, 20, 21, 22, 23, 28, 29, 30, 31);
    const __m512i back0 = _mm512_setr_epi32(0, 1, 2, 3, 16, 17, 18, 19, 4, 5, 6, 7, 20, 21, 22, 23);
    const __m512i back1 = _mm512_setr_epi32(8, 9, 10, 11, 24, 25, 26, 27, 12, 13, 14, 15, 28, 29, 30, 31);
    auto pairs = [](__m512i x) { return reinterpret_cast<__m512bh>(x); };
    Reg lo[NR], hi[NR];
#pragma GCC unroll 8
    for (int r = 0; r < NR; ++r) {
        const float* a = acc + r * acc_stride + c32 * 32;
        const Reg a0 = Simd::load(a), a1 = Simd::load(a + W), cr = Simd::set1(correction[r]);
        lo[r] = Simd::mul(_mm512_permutex2var_ps(a0, to_lo, a1), cr);
        hi[r] = Simd::mul(_mm512_permutex2var_ps(a0, to_hi, a1), cr);
    }
    int64_t jj = 0;
    for (; jj + 2 <= n; jj += 2) {
        const __m512i x0 = _mm512_loadu_si512(v.row(jj) + c32 * 64), x1 = _mm512_loadu_si512(v.row(jj + 1) + c32 * 64);
        const __m512bh vlo = pairs(_mm512_unpacklo_epi16(x0, x1)), vhi = pairs(_mm512_unpackhi_epi16(x0, x1));
#pragma GCC unroll 8
        for (int r = 0; r < NR; ++r) {
            int32_t pair;
            __builtin_memcpy(&pair, pb + r * pb_stride + jj, sizeof pair);
            const __m512bh pp = pairs(_mm512_set1_epi32(pair));
            lo[r] = _mm512_dpbf16_ps(lo[r], pp, vlo);
            hi[r] = _mm512_dpbf16_ps(hi[r], pp, vhi);
        }
    }
    if (jj < n) {
        const __m512i x0 = _mm512_loadu_si512(v.row(jj) + c32 * 64), x1 = _mm512_setzero_si512();
        const __m512bh vlo = pairs(_mm512_unpacklo_epi16(x0, x1)), vhi = pairs(_mm512_unpackhi_epi16(x0, x1));
#pragma GCC unroll 8
        for (int r = 0; r < NR; ++r) {
            const __m512bh pp = pairs(_mm512_set1_epi32(pb[r * pb_stride + jj]));
            lo[r] = _mm512_dpbf16_ps(lo[r], pp, vlo);
            hi[r] = _mm512_dpbf16_ps(hi[r], pp, vhi);
        }
    }
#pragma GCC unroll 8
    for (int r = 0; r < NR; ++r) {
        float* a = acc + r * acc_stride + c32 * 32;
        Simd::store(a, _mm512_permutex2var_ps(lo[r], back0, hi[r]));
        Simd::store(a + W, _mm512_permutex2var_ps(lo[r], back1, hi[r]));
    }
}

// pv for bf16 V and a head_dim of whole 32-element chunks, with the probabilities rounded to
// bf16 (pb): up to 8 rows at a time (16 accumulators).
template <typename R>
inline void pv_bf16(int64_t rows, const R& v, int64_t vectors, int64_t n, const uint16_t* pb, int64_t pb_stride,
                    float* acc, int64_t acc_stride, const float* correction) {
    for_row_groups(rows, [&](auto nr, int64_t r) {
        for (int64_t c32 = 0; c32 < vectors / 2; ++c32) {
            pv_bf16_chunk<decltype(nr)::value>(v, c32, n, pb + r * pb_stride, pb_stride, acc + r * acc_stride,
                                               acc_stride, correction + r);
        }
    });
}
#endif

// One row's online-softmax step over its `visible` scores s[0..visible) of a block: s becomes
// the probabilities relative to the new running max; returns the factor the row's earlier
// accumulator and sum must be multiplied by. A NaN score stays NaN (and poisons the row); while
// every logit so far is -inf the base is 0, so exp(-inf - -inf) never makes a NaN.
inline float softmax_step(float* s, int64_t visible, float& running_max, float& running_sum) {
    int64_t jj;
    for (jj = visible; jj < round_up(visible, W); ++jj) s[jj] = kNegInf;  // whole vectors
    Reg block_max = Simd::set1(kNegInf);
    for (jj = 0; jj < visible; jj += W) block_max = Simd::max(block_max, Simd::load(s + jj));
    const float new_max = __builtin_fmaxf(running_max, Simd::reduce_max(block_max));
    const float base = new_max == kNegInf ? 0.0f : new_max;
    const float correction = __builtin_expf(running_max - base);
    Reg sum = Simd::zero();
    const Reg base_v = Simd::set1(base);
    for (jj = 0; jj < visible; jj += W) {
        const Reg p = Simd::exp(Simd::sub(Simd::load(s + jj), base_v));
        Simd::store(s + jj, p);
        sum = Simd::add(sum, p);
    }
    running_sum = running_sum * correction + Simd::reduce_add(sum);
    running_max = new_max;
    return correction;
}

// Prefetch toward L2 (prefetch_l2) the K and V rows (all heads: each row spans kv_stride elements) of
// positions [j0, j0 + n), part `part` of `parts` of each run of consecutive rows, one prefetch
// per 64-byte line.
inline void prefetch_positions(const Tile& t, int64_t j0, int64_t n, int64_t part, int64_t parts) {
    const int64_t es = elem_bytes(t.dtype);
    for (int64_t j = j0, run; j < j0 + n; j += run) {
        run = key_run(t, j, j0 + n - j);
        const int64_t k_bytes = run * t.kv_stride * es, v_bytes = run * value_step(t) * es;
        const char* k = static_cast<const char*>(t.k) + key_offset(t, j) * es;
        const char* v = static_cast<const char*>(t.v) + value_offset(t, j) * es;
        for (int64_t b = k_bytes * part / parts; b < k_bytes * (part + 1) / parts; b += 64) prefetch_l2(k + b);
        for (int64_t b = v_bytes * part / parts; b < v_bytes * (part + 1) / parts; b += 64) prefetch_l2(v + b);
    }
}

// The largest group a single-token decode walks position by position (decode_heads).
constexpr int64_t kByPositionMaxGroup = 4;

// The softmax step of a block's rows (block_by_position_*): each row's n scores (rows sp apart)
// become probabilities, and its accumulator (rows dp apart) is rescaled to the new max.
inline void softmax_rows(int64_t rows, int64_t n, float softcap, float* sc, int64_t sp, float* run_max, float* run_sum,
                         float* acc, int64_t dp) {
    for (int64_t r = 0; r < rows; ++r) {
        float* s = sc + r * sp;
        if (softcap > 0.0f) softcap_scores(s, round_up(n, W), 1.0f, softcap);  // q is pre-scaled
        const Reg correction = Simd::set1(softmax_step(s, n, run_max[r], run_sum[r]));
        for (int64_t c = 0; c < dp; c += W) Simd::store(acc + r * dp + c, Simd::mul(Simd::load(acc + r * dp + c), correction));
    }
}

// M rows of one head, one position (block_by_position_group): s[i * sp] = q_i . K, q_i at q + i * dp,
// one K row for all M (each K vector loaded and converted once).
template <DType T, int M>
inline void shared_key_scores(const float* q, int64_t dp, const char* k, int64_t vectors, float* s, int64_t sp) {
    const int64_t step = W * elem_bytes(T);
    Reg a[4] = {Simd::zero(), Simd::zero(), Simd::zero(), Simd::zero()};
    for (int64_t c = 0; c < vectors; ++c) {
        const Reg kv = load_elems<T>(k + c * step);
#pragma GCC unroll 4
        for (int i = 0; i < M; ++i) a[i] = Simd::fmadd(Simd::load(q + i * dp + c * W), kv, a[i]);
    }
    float s4[4];
    Simd::reduce_add4(a[0], a[1], a[2], a[3], s4);
#pragma GCC unroll 4
    for (int i = 0; i < M; ++i) s[i * sp] = s4[i];
}

// P.V of block_by_position_mha for P consecutive positions (v_pos[0 .. P), their probabilities
// at sc[r * sp + i]): each accumulator vector is loaded and stored once per pass, and the FMAs
// run in position order, so any P gives the same bits.
template <DType T, int FixedVectors, int P>
inline void mha_pv_pass(const char* const* v_pos, int64_t rows, int64_t head_bytes, int64_t runtime_vectors,
                        const float* sc, int64_t sp, float* acc) {
    const int64_t vectors = FixedVectors > 0 ? FixedVectors : runtime_vectors;
    const int64_t dp = vectors * W, step = W * elem_bytes(T);
    for (int64_t r = 0; r < rows; ++r) {
        Reg p[P];
        const char* v[P];
#pragma GCC unroll 4
        for (int i = 0; i < P; ++i) {
            p[i] = Simd::set1(sc[r * sp + i]);
            v[i] = v_pos[i] + r * head_bytes;
        }
        float* a = acc + r * dp;
#pragma GCC unroll 16
        for (int64_t c = 0; c < vectors; ++c) {
            Reg x = Simd::load(a + c * W);
#pragma GCC unroll 4
            for (int i = 0; i < P; ++i) x = Simd::fmadd(p[i], load_elems<T>(v[i] + c * step), x);
            Simd::store(a + c * W, x);
        }
    }
}

// Position rows (every KV head) of at least this many bytes get the MHA walk's P.V four
// positions per pass, the rest one: on one Zen 4 core, rows of 8-20 KiB (Phi-3's 12 KiB, 32:32
// d64/d128, 40:40 d128) took 0.71-0.97x the time, rows of 3-6 KiB 1.05-1.26x (benchmarks/NOTES.md
// section 19; why the short rows lose is not known).
constexpr int64_t kMhaFourPositionRowBytes = 8192;

// The group walk (2 <= G <= 4) runs its P.V four positions per pass when a block's accumulators
// and scores, rows * (dp + sp) fp32, take at least this many bytes: on one Zen 4 core Llama-3
// 32:8 took 0.64-0.95x the time (f32, bf16, f16), 32:16 d128 0.90-0.95x; SmolLM2 9:3 (5 KiB)
// 1.09-1.22x with four per pass, so it keeps one (NOTES.md section 19; an L1 guess, no counters).
constexpr int64_t kGroupFourPositionBytes = 16 * 1024;

// One block of a single-token decode with one query row per KV head (G = 1, MHA) and rows read
// in place, walked position by position: every head's score for position jj (all heads of a
// position are one contiguous run of the cache), then each head's softmax step, then P.V
// position by position (mha_pv_pass). So the block is read as one stream: a C loop reading Phi-3's f32 cache
// head by head, 8 positions at a time (the other order) got 20-24 GB/s on one Zen 5 core,
// position by position 37-40 (benchmarks/NOTES.md section 16). k_pos[jj] / v_pos[jj]: position
// jj's row of head 0; head h at + h * head_bytes; head h's state at h. FixedVectors > 0 is
// `vectors` known at compile time (mha_walk_for), 0 reads it at run time.
template <DType T, int FixedVectors>
void block_by_position_mha(const char* const* k_pos, const char* const* v_pos, int64_t n, int64_t head_bytes,
                           int64_t heads, int64_t runtime_vectors, const float* qf, float* acc, float* sc,
                           int64_t sp, float* run_max, float* run_sum, float softcap) {
    const int64_t rows = heads;
    const int64_t vectors = FixedVectors > 0 ? FixedVectors : runtime_vectors;
    const int64_t dp = vectors * W, step = W * elem_bytes(T);
    for (int64_t jj = 0; jj < n; ++jj) {
        int64_t r = 0;
        for (; r + 4 <= rows; r += 4) {  // 4 rows per reduction: 4 independent FMA chains
            // Written head after head, so the loads go out in address order: with the four
            // heads' loads interleaved (each 384 bytes from the next), one Zen 4 core read an
            // L3-resident cache at less than half the rate (benchmarks/NOTES.md section 19).
            Reg a[4];
#pragma GCC unroll 4
            for (int i = 0; i < 4; ++i) {
                const char* k = k_pos[jj] + (r + i) * head_bytes;
                a[i] = Simd::mul(Simd::load(qf + (r + i) * dp), load_elems<T>(k));
#pragma GCC unroll 16
                for (int64_t c = 1; c < vectors; ++c) a[i] = Simd::fmadd(Simd::load(qf + (r + i) * dp + c * W), load_elems<T>(k + c * step), a[i]);
            }
            float s4[4];
            Simd::reduce_add4(a[0], a[1], a[2], a[3], s4);
            for (int i = 0; i < 4; ++i) sc[(r + i) * sp + jj] = s4[i];
        }
        for (; r < rows; ++r) {
            const char* k = k_pos[jj] + r * head_bytes;
            Reg a = Simd::mul(Simd::load(qf + r * dp), load_elems<T>(k));
#pragma GCC unroll 16
            for (int64_t c = 1; c < vectors; ++c) a = Simd::fmadd(Simd::load(qf + r * dp + c * W), load_elems<T>(k + c * step), a);
            sc[r * sp + jj] = Simd::reduce_add(a);
        }
    }
    softmax_rows(rows, n, softcap, sc, sp, run_max, run_sum, acc, dp);
    int64_t jj = 0;
    if (rows * head_bytes >= kMhaFourPositionRowBytes) {
        for (; jj + 4 <= n; jj += 4) mha_pv_pass<T, FixedVectors, 4>(v_pos + jj, rows, head_bytes, vectors, sc + jj, sp, acc);
    }
    for (; jj < n; ++jj) mha_pv_pass<T, FixedVectors, 1>(v_pos + jj, rows, head_bytes, vectors, sc + jj, sp, acc);
}

// block_by_position_mha for `vectors` = head_dim / W: compiled for the head dims 64, 96 and 128
// on this width, so each row's loads and FMAs are straight-line code. On one Zen 4 core Phi-3's
// f32 decode (d = 96) took 0.86-0.92x the time of the run-time count (benchmarks/NOTES.md
// section 17); the arithmetic order, and so every bit, is the same.
template <DType T>
auto mha_walk_for(int64_t vectors) {
    switch (vectors * W) {
        case 64: return block_by_position_mha<T, 64 / W>;
        case 96: return block_by_position_mha<T, 96 / W>;
        case 128: return block_by_position_mha<T, 128 / W>;
        default: return block_by_position_mha<T, 0>;
    }
}

// P.V of block_by_position_group for P consecutive positions (v_pos[0 .. P), row r's
// probabilities at sc[r * sp + i]): each V vector is loaded (and converted) once for the G rows
// of its KV head, each accumulator vector loaded and stored once per pass, and the FMAs run in
// position order, so any P gives the same bits.
template <DType T, int P>
inline void group_pv_pass(const char* const* v_pos, int64_t heads, int64_t g_len, int64_t head_bytes,
                          int64_t vectors, const float* sc, int64_t sp, float* acc) {
    const int64_t dp = vectors * W, step = W * elem_bytes(T);
    for (int64_t h = 0; h < heads; ++h) {
        const char* v[P];
#pragma GCC unroll 4
        for (int i = 0; i < P; ++i) v[i] = v_pos[i] + h * head_bytes;
        Reg p[kByPositionMaxGroup][P];
        for (int64_t r = 0; r < g_len; ++r) {
#pragma GCC unroll 4
            for (int i = 0; i < P; ++i) p[r][i] = Simd::set1(sc[(h * g_len + r) * sp + i]);
        }
        float* a = acc + h * g_len * dp;
        for (int64_t c = 0; c < vectors; ++c) {
            Reg x[P];
#pragma GCC unroll 4
            for (int i = 0; i < P; ++i) x[i] = load_elems<T>(v[i] + c * step);
            for (int64_t r = 0; r < g_len; ++r) {
                Reg y = Simd::load(a + r * dp + c * W);
#pragma GCC unroll 4
                for (int i = 0; i < P; ++i) y = Simd::fmadd(p[r][i], x[i], y);
                Simd::store(a + r * dp + c * W, y);
            }
        }
    }
}

// The same walk for 2 <= G <= kByPositionMaxGroup (block_by_position_mha's comment): up to four rows of a head
// share each K load (and its conversion) for the scores, and each V load for P.V. Row
// h * g_len + r (query head r of KV head h) keeps its state there.
template <DType T>
void block_by_position_group(const char* const* k_pos, const char* const* v_pos, int64_t n, int64_t head_bytes,
                             int64_t heads, int64_t g_len, int64_t vectors, const float* qf, float* acc, float* sc,
                             int64_t sp, float* run_max, float* run_sum, float softcap) {
    const int64_t rows = heads * g_len;
    const int64_t dp = vectors * W;
    for (int64_t jj = 0; jj < n; ++jj) {
        for (int64_t h = 0; h < heads; ++h) {
            const char* k = k_pos[jj] + h * head_bytes;
            for (int64_t r = h * g_len; r < (h + 1) * g_len; r += 4) {
                const float* q = qf + r * dp;
                float* s = sc + r * sp + jj;
                switch (min64(4, (h + 1) * g_len - r)) {
                    case 4: shared_key_scores<T, 4>(q, dp, k, vectors, s, sp); break;
                    case 3: shared_key_scores<T, 3>(q, dp, k, vectors, s, sp); break;
                    case 2: shared_key_scores<T, 2>(q, dp, k, vectors, s, sp); break;
                    default: shared_key_scores<T, 1>(q, dp, k, vectors, s, sp); break;
                }
            }
        }
    }
    softmax_rows(rows, n, softcap, sc, sp, run_max, run_sum, acc, dp);
    // P.V four positions per pass where the block's state is large (kGroupFourPositionBytes).
    int64_t jj = 0;
    if (rows * (dp + sp) * static_cast<int64_t>(sizeof(float)) >= kGroupFourPositionBytes) {
        for (; jj + 4 <= n; jj += 4) group_pv_pass<T, 4>(v_pos + jj, heads, g_len, head_bytes, vectors, sc + jj, sp, acc);
    }
    for (; jj < n; ++jj) group_pv_pass<T, 1>(v_pos + jj, heads, g_len, head_bytes, vectors, sc + jj, sp, acc);
}

template <DType T>
void decode_heads(const DecodeWork& w, float* scratch) {
    static_assert(kAccOffset % 16 == 0, "acc stays 64-byte aligned");
    const Tile& t0 = w.head0;
    const int64_t d = t0.head_dim, dp = round_up(d, W), vectors = dp / W;
    const int64_t g_len = t0.group, nq = t0.num_queries, rows = nq * g_len, heads = w.num_kv_heads;
    const int64_t es = elem_bytes(T), k_stride = t0.kv_stride * es, v_stride = value_step(t0) * es;
    const bool direct_v = d % W == 0;
    const bool direct_k = direct_v && (T == DType::F32 || g_len == 1 || !Simd::stage_half_keys());
    const int64_t sp = kKeyBlock;           // score row stride
    float* qf = align64(scratch);           // [heads * rows][dp] scaled queries
    // [heads * rows][dp], 1 KiB past the queries: for G = 1 f32 on Zen 5, 0.94-0.96x the time of
    // acc right after them (NOTES.md section 16; 4K aliasing of its stores with the V loads is a
    // guess, unconfirmed without counters).
    float* acc = qf + heads * rows * dp + kAccOffset;
    float* run_max = acc + heads * rows * dp;
    float* run_sum = run_max + heads * rows;
    float* correction = run_sum + heads * rows;  // [rows] of the head being computed
    float* sc = correction + rows;               // [heads * rows][sp] scores, then probabilities
    float* kb = sc + heads * rows * sp;          // [kKeyBlock][dp] staged K
    float* vb = kb + kKeyBlock * dp;             // [kKeyBlock][dp] staged V
    // [heads * rows][dp] the queries as bf16 (their input values: exact), for row_scores' bf16
    // dot products; null where those are not compiled in or the input is not bf16.
    uint16_t* q_bf16 = kBf16Dots && T == DType::BF16 ? reinterpret_cast<uint16_t*>(vb + kKeyBlock * dp) : nullptr;
    // [rows][sp] one head's probabilities in bf16, for pv_bf16: head_dim 64 on AMD only (Qwen2.5
    // 14:2 0.88-0.91x the time on Zen 4; 28:4 d128 took 1.05x, d96 unmeasured: NOTES.md section
    // 17); Intel's zmm vdpbf16ps issues at half its two FMA ports' rate (section 7), unmeasured.
    const bool bf16_pv = q_bf16 && d == 64 && direct_v && cpu_is_amd();
    uint16_t* p_bf16 = q_bf16 ? q_bf16 + heads * rows * dp : nullptr;
    (void)bf16_pv;
    (void)p_bf16;

    for (int64_t h = 0; h < heads; ++h) {  // the row state: scaled queries, an empty softmax (or the sink)
        const Tile th = decode_head_tile(w, h);
        for (int64_t r = 0; r < rows; ++r) {
            float* q = qf + (h * rows + r) * dp;
            load_row(th.q, r / g_len * th.q_stride + r % g_len * th.q_head_stride, T, d, dp, q);
            if (q_bf16) {
                for (int64_t c = 0; c < dp; c += W) Simd::store_bf16(q_bf16 + (h * rows + r) * dp + c, Simd::load(q + c));
            }
            for (int64_t c = 0; c < dp; c += W) {
                Simd::store(q + c, Simd::mul(Simd::load(q + c), Simd::set1(th.scale)));
                Simd::store(acc + (h * rows + r) * dp + c, Simd::zero());
            }
            init_row_state(th, r, run_max + h * rows + r, run_sum + h * rows + r);
        }
    }

    // One query, G <= kByPositionMaxGroup, rows read in place: blocks walked position by
    // position (block_by_position_*); otherwise head by head, blocks sized for the L2
    // (decode_block), which keeps a larger group's accumulators in registers over a block (by
    // position, G = 7 and 8 took 1.3-1.5x the time on Zen 5, G = 2 to 4 0.69-0.89x; NOTES.md
    // section 16).
    const bool by_position = nq == 1 && direct_k && g_len <= kByPositionMaxGroup;
    const int64_t block = by_position ? kKeyBlock : decode_block(w);
    const int64_t last_end = visible_end(t0, nq - 1);
    for (int64_t j0 = visible_begin(t0, 0), n; j0 < last_end; j0 += n) {
        // Blocks never depend on the page layout (a paged cache gives the dense cache's bits):
        // a block that spans pages is read through its rows' offsets, or staged where the
        // direct loads are not used, which converts exactly as they do.
        n = min64(block, last_end - j0);
        const bool one_run = key_run(t0, j0, n) == n;
        const bool k_direct = direct_k && one_run, v_direct = direct_v && one_run;
        const int64_t next = min64(block, last_end - j0 - n);
        const char* k0 = static_cast<const char*>(t0.k) + key_offset(t0, j0) * es;
        const char* v0 = static_cast<const char*>(t0.v) + value_offset(t0, j0) * es;
        // A block that spans pages: its rows' byte offsets from t0.k / t0.v, found once per
        // block by walking its runs (one page-table lookup per run), so the rows the direct
        // paths read are read in place (GatherRows) rather than staged.
        int64_t k_off[kKeyBlock], v_off[kKeyBlock];
        if (!one_run) {
            for (int64_t jj = 0, run; jj < n; jj += run) {
                run = key_run(t0, j0 + jj, n - jj);
                int64_t ko = key_offset(t0, j0 + jj) * es, vo = value_offset(t0, j0 + jj) * es;
                for (int64_t r = jj; r < jj + run; ++r, ko += k_stride, vo += v_stride) {
                    k_off[r] = ko;
                    v_off[r] = vo;
                }
            }
        }
        if (by_position) {
            const int64_t lo = visible_begin(t0, 0) > j0 ? visible_begin(t0, 0) - j0 : 0;
            const int64_t visible = min64(n, visible_end(t0, 0) - j0) - lo;
            if (visible <= 0) continue;
            const char* k_pos[kKeyBlock];
            const char* v_pos[kKeyBlock];
            for (int64_t jj = 0; jj < visible; ++jj) {
                k_pos[jj] = one_run ? k0 + (lo + jj) * k_stride : static_cast<const char*>(t0.k) + k_off[lo + jj];
                v_pos[jj] = one_run ? v0 + (lo + jj) * v_stride : static_cast<const char*>(t0.v) + v_off[lo + jj];
            }
            if (g_len == 1) {
                const auto walk = mha_walk_for<T>(vectors);
                walk(k_pos, v_pos, visible, d * es, heads, vectors, qf, acc, sc, sp, run_max, run_sum, t0.softcap);
            } else {
                block_by_position_group<T>(k_pos, v_pos, visible, d * es, heads, g_len, vectors, qf, acc, sc, sp, run_max,
                                           run_sum, t0.softcap);
            }
            continue;
        }
        for (int64_t h = 0; h < heads; ++h) {
            const Rows<T> k_rows{k0 + h * d * es, k_stride}, v_rows{v0 + h * d * es, v_stride};
            const char* k_head = static_cast<const char*>(t0.k) + h * d * es;
            const char* v_head = static_cast<const char*>(t0.v) + h * d * es;
            if (!direct_k) {
                for (int64_t jj = 0; jj < n; ++jj) load_row(t0.k, key_offset(t0, j0 + jj) + h * d, T, d, dp, kb + jj * dp);
            }
            if (!direct_v) {
                for (int64_t jj = 0; jj < n; ++jj) load_row(t0.v, value_offset(t0, j0 + jj) + h * d, T, d, dp, vb + jj * dp);
            }
            for (int64_t i = 0; i < nq; ++i) {
                // Keys [j0 + lo, j0 + lo + visible) of this block are the ones query i sees.
                const int64_t lo = visible_begin(t0, i) > j0 ? visible_begin(t0, i) - j0 : 0;
                const int64_t visible = min64(n, visible_end(t0, i) - j0) - lo;
                if (visible <= 0) continue;
                const Rows<T> k_seen{k_rows.base + lo * k_stride, k_stride}, v_seen{v_rows.base + lo * v_stride, v_stride};
                const Rows<DType::F32> k_staged{reinterpret_cast<const char*>(kb + lo * dp), dp * 4};
                const Rows<DType::F32> v_staged{reinterpret_cast<const char*>(vb + lo * dp), dp * 4};
                const int64_t r0 = i * g_len, state = h * rows + r0;
                for (int64_t r = 0; r < g_len; ++r) {
                    // Row r's share of the next block: the whole next block is asked for by the
                    // time this one is done, a few lines at a time (a burst per head instead took
                    // 0.96-1.03x the time of no prefetch on Zen 4, this 0.6-0.76x: NOTES.md section 20).
                    prefetch_positions(t0, j0 + n, next, (h * nq + i) * g_len + r, heads * rows);
                    float* s = sc + (r0 + r) * sp;
                    const float* q = qf + (state + r) * dp;
                    const uint16_t* qb = q_bf16 ? q_bf16 + (state + r) * dp : nullptr;
                    if (k_direct) {
                        row_scores<T>(q, qb, vectors, k_seen, visible, t0.scale, s);
                    } else if (direct_k) {
                        row_scores<T>(q, qb, vectors, GatherRows<T>{k_head, k_off + lo}, visible, t0.scale, s);
                    } else {
                        dots(q, vectors, k_staged, visible, s);
                    }
                    if (t0.softcap > 0.0f) softcap_scores(s, round_up(visible, W), 1.0f, t0.softcap);  // s is scaled
                    correction[r0 + r] = softmax_step(s, visible, run_max[state + r], run_sum[state + r]);
#if defined(__AVX512BF16__)
                    if (bf16_pv) probs_to_bf16(s, visible, p_bf16 + (r0 + r) * sp);
#endif
                }
#if defined(__AVX512BF16__)
                if (bf16_pv) {
                    if (v_direct) {
                        pv_bf16(g_len, v_seen, vectors, visible, p_bf16 + r0 * sp, sp, acc + state * dp, dp, correction + r0);
                    } else {
                        pv_bf16(g_len, GatherRows<T>{v_head, v_off + lo}, vectors, visible, p_bf16 + r0 * sp, sp,
                                acc + state * dp, dp, correction + r0);
                    }
                    continue;
                }
#endif
                if (v_direct) {
                    pv(g_len, v_seen, vectors, visible, sc + r0 * sp, sp, acc + state * dp, dp, correction + r0);
                } else if (direct_v) {
                    pv(g_len, GatherRows<T>{v_head, v_off + lo}, vectors, visible, sc + r0 * sp, sp, acc + state * dp, dp, correction + r0);
                } else {
                    pv(g_len, v_staged, vectors, visible, sc + r0 * sp, sp, acc + state * dp, dp, correction + r0);
                }
            }
        }
    }

    for (int64_t h = 0; h < heads; ++h) {
        const Tile th = decode_head_tile(w, h);
        for (int64_t r = 0; r < rows; ++r) {
            finish_row(th, r, acc + (h * rows + r) * dp, run_max[h * rows + r], run_sum[h * rows + r]);
        }
    }
}

void decode_simd(const DecodeWork& w, float* scratch) {
    if (w.head0.num_queries * w.head0.group >= W) {  // a group that fills the lanes: rows in lanes
        for (int64_t h = 0; h < w.num_kv_heads; ++h) prefill_lanes<FmaMma>(decode_head_tile(w, h), scratch);
        return;
    }
    switch (w.head0.dtype) {
        case DType::F32: decode_heads<DType::F32>(w, scratch); break;
        case DType::BF16: decode_heads<DType::BF16>(w, scratch); break;
        case DType::F16: decode_heads<DType::F16>(w, scratch); break;
    }
}

}  // namespace
}  // namespace cpu
}  // namespace gqa
