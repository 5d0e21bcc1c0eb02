// attention_avx512_bf16.cpp: bf16 prefill with AVX-512 BF16 dot products (vdpbf16ps: two exact
// bf16 products per fp32 lane, accumulated in fp32), for CPUs without AMX (AMD Zen 4+, Intel
// Cooper Lake). P is rounded to bf16 before P.V. Also the bf16 pack both bf16 paths use.
// Compiled with AVX-512 + AVX512-BF16 flags (cmake/GqaCpuIsa.cmake); called only after a CPUID
// check (isa.cpp).
#include "cpu/simd_avx512.hpp"
#include "cpu/prefill_bf16.inl"

namespace gqa {
namespace cpu {
namespace {

inline __m512bh bf16_pairs(const float* p) { return reinterpret_cast<__m512bh>(_mm512_loadu_si512(p)); }
inline __m512bh broadcast_pair(const uint16_t* p) {
    int32_t dword;
    std::memcpy(&dword, p, sizeof dword);
    return reinterpret_cast<__m512bh>(_mm512_set1_epi32(dword));
}

// S^T[jj + u][lanes] = sum over dim pairs c of Q[c][lanes] . K[jj + u][2c, 2c + 1], U keys x NR row vectors.
template <int U, int NR>
inline void scores_block(const uint16_t* kb, int64_t dp, int64_t dim_pairs, const float* qv, int64_t rp, float* st,
                         int64_t jj) {
    Reg acc[U][NR];
#pragma GCC unroll 8
    for (int u = 0; u < U; ++u)
#pragma GCC unroll 4
        for (int r = 0; r < NR; ++r) acc[u][r] = Simd::zero();
    for (int64_t c = 0; c < dim_pairs; ++c) {
        __m512bh q[NR];
#pragma GCC unroll 4
        for (int r = 0; r < NR; ++r) q[r] = bf16_pairs(qv + c * rp + r * 16);
#pragma GCC unroll 8
        for (int u = 0; u < U; ++u) {
            const __m512bh k = broadcast_pair(kb + (jj + u) * dp + 2 * c);
#pragma GCC unroll 4
            for (int r = 0; r < NR; ++r) acc[u][r] = _mm512_dpbf16_ps(acc[u][r], q[r], k);
        }
    }
#pragma GCC unroll 8
    for (int u = 0; u < U; ++u)
#pragma GCC unroll 4
        for (int r = 0; r < NR; ++r) Simd::store(st + (jj + u) * rp + r * 16, acc[u][r]);
}

// O^T[d + e][lanes] += sum over key pairs k of P[k][lanes] . V^T[d + e][2k, 2k + 1].
template <int DB, int NR>
inline void pv_block(const uint16_t* vt, const float* pairs, int64_t rp, int64_t key_pairs, float* ot, int64_t d) {
    Reg acc[DB][NR];
#pragma GCC unroll 8
    for (int e = 0; e < DB; ++e)
#pragma GCC unroll 4
        for (int r = 0; r < NR; ++r) acc[e][r] = Simd::load(ot + (d + e) * rp + r * 16);
    for (int64_t k = 0; k < key_pairs; ++k) {
        __m512bh p[NR];
#pragma GCC unroll 4
        for (int r = 0; r < NR; ++r) p[r] = bf16_pairs(pairs + k * rp + r * 16);
#pragma GCC unroll 8
        for (int e = 0; e < DB; ++e) {
            const __m512bh v = broadcast_pair(vt + (d + e) * kPrefillKeyBlock + 2 * k);
#pragma GCC unroll 4
            for (int r = 0; r < NR; ++r) acc[e][r] = _mm512_dpbf16_ps(acc[e][r], p[r], v);
        }
    }
#pragma GCC unroll 8
    for (int e = 0; e < DB; ++e)
#pragma GCC unroll 4
        for (int r = 0; r < NR; ++r) Simd::store(ot + (d + e) * rp + r * 16, acc[e][r]);
}

template <int NR>
inline void scores_rows(const uint16_t* kb, int64_t dp, int64_t dim_pairs, const float* qv, int64_t rp, int64_t n,
                        float* st) {
    int64_t jj = 0;
    for (; jj + 4 <= n; jj += 4) scores_block<4, NR>(kb, dp, dim_pairs, qv, rp, st, jj);
    for (; jj < n; ++jj) scores_block<1, NR>(kb, dp, dim_pairs, qv, rp, st, jj);
}

template <int NR>
inline void pv_rows(const uint16_t* vt, int64_t d_len, const float* pairs, int64_t rp, int64_t key_pairs, float* ot) {
    int64_t d = 0;
    for (; d + 4 <= d_len; d += 4) pv_block<4, NR>(vt, pairs, rp, key_pairs, ot, d);
    for (; d < d_len; ++d) pv_block<1, NR>(vt, pairs, rp, key_pairs, ot, d);
}

struct Dpbf16Mma : Bf16MmaBase {
    static constexpr int64_t kKeyGranule = 2;
    static void scores(const float* qv, const uint16_t* kb, int64_t d_len, int64_t dp, int64_t rp, int64_t n,
                       float* st) {
        const int64_t dim_pairs = (d_len + 1) / 2;
        int64_t rv = 0;
        for (; rv + 64 <= rp; rv += 64) scores_rows<4>(kb, dp, dim_pairs, qv + rv, rp, n, st + rv);
        for (; rv + 32 <= rp; rv += 32) scores_rows<2>(kb, dp, dim_pairs, qv + rv, rp, n, st + rv);
        for (; rv < rp; rv += 16) scores_rows<1>(kb, dp, dim_pairs, qv + rv, rp, n, st + rv);
    }
    static void pv(const uint16_t* vt, int64_t d_len, int64_t /*dp*/, const void* p, int64_t rp, int64_t n, float* ot) {
        const float* pairs = static_cast<const float*>(p);
        const int64_t key_pairs = (n + 1) / 2;
        int64_t rv = 0;
        for (; rv + 64 <= rp; rv += 64) pv_rows<4>(vt, d_len, pairs + rv, rp, key_pairs, ot + rv);
        for (; rv + 32 <= rp; rv += 32) pv_rows<2>(vt, d_len, pairs + rv, rp, key_pairs, ot + rv);
        for (; rv < rp; rv += 16) pv_rows<1>(vt, d_len, pairs + rv, rp, key_pairs, ot + rv);
    }
    static void begin() {}
    static void end() {}
};

}  // namespace

void pack_kv_bf16(const Tile& t, int64_t first_block, int64_t num_blocks, void* blocks, uint8_t* v_nonfinite) {
    pack_kv<Bf16MmaBase>(t, first_block, num_blocks, blocks, v_nonfinite);
}
void prefill_tile_avx512_bf16(const Tile& t, float* scratch) { prefill_lanes<Dpbf16Mma>(t, scratch); }

}  // namespace cpu
}  // namespace gqa
