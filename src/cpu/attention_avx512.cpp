// attention_avx512.cpp: the SIMD tile kernels (kernel_simd.inl, prefill_lanes.inl) on 16 fp32
// lanes of AVX-512. Compiled with AVX-512 flags (cmake/GqaCpuIsa.cmake); called only after a
// CPUID check.
#include "cpu/simd_avx512.hpp"
#include "cpu/kernel_simd.inl"
#include "cpu/decode_simd.inl"

namespace gqa {
namespace cpu {
void attend_tile_avx512(const Tile& t, float* scratch) { attend_tile_simd(t, scratch); }
void pack_kv_avx512_f32(const Tile& t, int64_t first_block, int64_t num_blocks, void* blocks, uint8_t* v_nonfinite) {
    pack_kv<FmaMma>(t, first_block, num_blocks, blocks, v_nonfinite);
}
void prefill_tile_avx512_f32(const Tile& t, float* scratch) { prefill_lanes<FmaMma>(t, scratch); }
void decode_avx512(const DecodeWork& w, float* scratch) { decode_simd(w, scratch); }
}  // namespace cpu
}  // namespace gqa
