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

// Two exact bf16 products per fp32 lane: a broadcast pair (x[0], x[1]) times a vector of 16
// lanes of pairs.
struct Dpbf16Op {
    using Scalar = uint16_t;
    using Vec = __m512bh;
    static __m512bh vec(const float* p) { return reinterpret_cast<__m512bh>(_mm512_loadu_si512(p)); }
    static __m512bh bcast(const uint16_t* p) {
        int32_t pair;
        std::memcpy(&pair, p, sizeof pair);
        return reinterpret_cast<__m512bh>(_mm512_set1_epi32(pair));
    }
    static Reg madd(Reg acc, __m512bh v, __m512bh x) { return _mm512_dpbf16_ps(acc, v, x); }
};

struct Dpbf16Mma : Bf16MmaBase {
    static constexpr int64_t kKeyGranule = 2;
    // S^T[key][lanes] = sum over dim pairs c of K[key][2c, 2c + 1] . Q[c][lanes].
    static void scores(const float* qv, const uint16_t* kb, int64_t d_len, int64_t dp, int64_t rp,
                       const int32_t* vec_keys, float* st) {
        outer_product<Dpbf16Op, KeysAre::Count>(kb, dp, 2, 0, qv, rp, (d_len + 1) / 2, st, /*accumulate=*/false, vec_keys);
    }
    // O^T[d][lanes] += sum over key pairs k of V^T[d][2k, 2k + 1] . P[k][lanes].
    static void pv(const uint16_t* vt, int64_t d_len, int64_t /*dp*/, const void* p, int64_t rp, const int32_t* vec_keys,
                   float* ot) {
        outer_product<Dpbf16Op, KeysAre::Steps>(vt, kPrefillKeyBlock, 2, d_len, static_cast<const float*>(p), rp, 0, ot,
                                                /*accumulate=*/true, vec_keys, 2);
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
