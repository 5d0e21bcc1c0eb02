// prefill_bf16.inl: what the two bf16 prefill paths share (attention_avx512_bf16.cpp: AVX-512
// BF16 dot products, attention_amx_bf16.cpp: AMX tiles). Both multiply bf16 pairs exactly and
// accumulate in fp32, so they want the same layouts, all "pairs in 32 bits":
//   K block    [kPrefillKeyBlock][dp] bf16, as stored (a key's (d, d + 1) pair is one dword)
//   V^T block  [dp][kPrefillKeyBlock] bf16 (a dim's (key, key + 1) pair is one dword)
//   Q          [dp / 2][rp] dwords: (q[r][2c], q[r][2c + 1]) for lane r
//   P          [kPrefillKeyBlock / 2][rp] dwords: (p[2k][r], p[2k + 1][r]), p rounded to bf16 (RNE)
// (the VNNI layout of AMX's B operand). bf16 inputs are copied, never rounded; these paths run
// only for bf16 calls. dp is head_dim rounded up to 32 (one AMX row of 64 bytes).
//
// Include after simd_avx512.hpp, in a file compiled with AVX-512 BF16.
#pragma once

#include <cstring>

#include "cpu/prefill_lanes.inl"

namespace gqa {
namespace cpu {
namespace {

constexpr int64_t kBf16DimAlign = 32;

// 16 bf16 at p[0..n) (n <= 16), zeros past n: a masked load never touches the rest.
inline __m256i load_bf16x16(const uint16_t* p, int64_t n) {
    return _mm256_maskz_loadu_epi16(static_cast<__mmask16>((1u << n) - 1u), p);
}

// Keys [j0, j0 + n) of K and V into one packed bf16 block (layout above; keys past n are
// zeros). Non-finite V values (exponent all ones) are stored as 0; returns whether there were any.
inline bool pack_block_bf16(const Tile& t, int64_t j0, int64_t n, int64_t dp, uint16_t* block, float* stage) {
    const int64_t d_len = t.head_dim;
    uint16_t* kb = block;
    const uint16_t* k_rows = static_cast<const uint16_t*>(t.k);
    const uint16_t* v_rows = static_cast<const uint16_t*>(t.v);
    const BlockRows at(t, j0, n);
    for (int64_t jj = 0; jj < kPrefetchAhead; ++jj) at.prefetch(t, jj);
    for (int64_t jj = 0; jj < kPrefillKeyBlock; ++jj) {
        if (jj < n) at.prefetch(t, jj + kPrefetchAhead);
        uint16_t* dst = kb + jj * dp;
        const uint16_t* src = jj < n ? k_rows + at.k[jj] : nullptr;
        for (int64_t d = 0; d < dp; d += 16) {
            const __m256i x = src && d < d_len ? load_bf16x16(src + d, min64(16, d_len - d)) : _mm256_setzero_si256();
            _mm256_storeu_si256(reinterpret_cast<__m256i*>(dst + d), x);
        }
    }
    // V: per 32 keys, 16 key pairs as dword rows [pair][dp] in `stage`, transposed 16 x 16 into
    // V^T, whose dword (d, pair) is (v[2 pair][d], v[2 pair + 1][d]).
    uint32_t* vt = reinterpret_cast<uint32_t*>(block + kPrefillKeyBlock * dp);  // [dp][kPrefillKeyBlock / 2]
    const __m256i exponent = _mm256_set1_epi16(0x7f80);
    bool nonfinite = false;
    for (int64_t k0 = 0; k0 < kPrefillKeyBlock; k0 += 32) {
        for (int64_t pair = 0; pair < 16; ++pair) {
            const int64_t j = k0 + 2 * pair;
            const uint16_t* lo = j < n ? v_rows + at.v[j] : nullptr;
            const uint16_t* hi = j + 1 < n ? v_rows + at.v[j + 1] : nullptr;
            for (int64_t d = 0; d < dp; d += 16) {
                const int64_t m = d < d_len ? min64(16, d_len - d) : 0;
                __m256i a = lo && m ? load_bf16x16(lo + d, m) : _mm256_setzero_si256();
                __m256i b = hi && m ? load_bf16x16(hi + d, m) : _mm256_setzero_si256();
                const __mmask16 bad_a = _mm256_cmpeq_epi16_mask(_mm256_and_si256(a, exponent), exponent);
                const __mmask16 bad_b = _mm256_cmpeq_epi16_mask(_mm256_and_si256(b, exponent), exponent);
                if (bad_a | bad_b) {
                    nonfinite = true;
                    a = _mm256_maskz_mov_epi16(static_cast<__mmask16>(~bad_a), a);
                    b = _mm256_maskz_mov_epi16(static_cast<__mmask16>(~bad_b), b);
                }
                const __m512i dwords = _mm512_or_si512(_mm512_cvtepu16_epi32(a), _mm512_slli_epi32(_mm512_cvtepu16_epi32(b), 16));
                _mm512_storeu_si512(stage + pair * dp + d, dwords);
            }
        }
        for (int64_t d0 = 0; d0 < dp; d0 += 16) {
            Simd::transpose(stage + d0, dp, reinterpret_cast<float*>(vt + d0 * (kPrefillKeyBlock / 2) + k0 / 2), kPrefillKeyBlock / 2);
        }
    }
    return nonfinite;
}

// Q of the tile as [dp / 2][rp] dwords (unscaled: softmax_block scales the fp32 scores).
inline void pack_queries_bf16(const Tile& t, int64_t rows, int64_t dp, int64_t rp, float* qv, float* stage) {
    const int64_t half = dp / 2;  // dwords per row, a multiple of 16
    for (int64_t r = 0; r < kPrefetchAhead; ++r) prefetch_query(t, r, rows);
    for (int64_t r0 = 0; r0 < rp; r0 += 16) {
        for (int64_t w = 0; w < 16; ++w) {
            const int64_t r = r0 + w;
            uint16_t* dst = reinterpret_cast<uint16_t*>(stage + w * half);
            prefetch_query(t, r + kPrefetchAhead, rows);
            const uint16_t* src = r < rows ? static_cast<const uint16_t*>(t.q) + query_offset(t, r) : nullptr;
            for (int64_t d = 0; d < dp; d += 16) {
                const __m256i x = src && d < t.head_dim ? load_bf16x16(src + d, min64(16, t.head_dim - d))
                                                        : _mm256_setzero_si256();
                _mm256_storeu_si256(reinterpret_cast<__m256i*>(dst + d), x);
            }
        }
        for (int64_t c0 = 0; c0 < half; c0 += 16) Simd::transpose(stage + c0, half, qv + c0 * rp + r0, rp);
    }
}

// P of keys (2 pair, 2 pair + 1) for the 16 lanes at rv, rounded to bf16, as dwords.
inline void store_p_pair(void* pairs, int64_t rp, int64_t pair, int64_t rv, Reg p0, Reg p1) {
    // cvtne2ps: bf16(p0) in elements 0..15, bf16(p1) in 16..31; interleave them.
    const __m512i both = reinterpret_cast<__m512i>(_mm512_cvtne2ps_pbh(p1, p0));
    const __m512i order = _mm512_set_epi16(31, 15, 30, 14, 29, 13, 28, 12, 27, 11, 26, 10, 25, 9, 24, 8, 23, 7, 22,
                                           6, 21, 5, 20, 4, 19, 3, 18, 2, 17, 1, 16, 0);
    _mm512_storeu_si512(static_cast<uint32_t*>(pairs) + pair * rp + rv, _mm512_permutexvar_epi16(order, both));
}

inline float p_of_pair(const void* pairs, int64_t rp, int64_t jj, int64_t r) {
    uint32_t dword;
    std::memcpy(&dword, static_cast<const uint32_t*>(pairs) + (jj / 2) * rp + r, sizeof dword);
    return bf16_to_f32(static_cast<uint16_t>(jj % 2 ? dword >> 16 : dword & 0xffffu));
}

// The parts of an Mma policy both bf16 paths share.
struct Bf16MmaBase {
    using Elem = uint16_t;
    static constexpr int64_t kDimAlign = kBf16DimAlign;
    static constexpr bool kPairedP = true;
    static void pack_queries(const Tile& t, int64_t rows, int64_t dp, int64_t rp, float* qv, float* stage) {
        pack_queries_bf16(t, rows, dp, rp, qv, stage);
    }
    static bool pack_block(const Tile& t, int64_t j0, int64_t n, int64_t dp, uint16_t* block, float* stage) {
        return pack_block_bf16(t, j0, n, dp, block, stage);
    }
    // bf16 K is always packed: scores reads it in its pair layout.
    static const uint16_t* keys_in_place(const Tile& /*t*/, int64_t /*j0*/) { return nullptr; }
    static void store_pair(void* pairs, int64_t rp, int64_t pair, int64_t rv, Reg p0, Reg p1) {
        store_p_pair(pairs, rp, pair, rv, p0, p1);
    }
    static float probability(const void* pairs, int64_t rp, int64_t jj, int64_t r) { return p_of_pair(pairs, rp, jj, r); }
    static Reg exp2(Reg t) { return Simd::exp2_bf16(t); }  // P is rounded to bf16
};

}  // namespace
}  // namespace cpu
}  // namespace gqa
