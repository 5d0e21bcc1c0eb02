// decode_avx512_bf16.cpp: the SIMD decode kernel (decode_simd.inl) on AVX-512, compiled with
// AVX-512 BF16 so that bf16 scores in the head-by-head walk are vdpbf16ps dot products
// (row_scores); everything else is decode_avx512's code. For CPUs with AVX-512 BF16 (AMD Zen 4+,
// Intel Cooper Lake+), called only after a CPUID check (isa.cpp, attention.cpp's decode_path).
#include "cpu/simd_avx512.hpp"
#include "cpu/kernel_simd.inl"
#include "cpu/decode_simd.inl"

namespace gqa {
namespace cpu {
void decode_avx512_bf16(const DecodeWork& w, float* scratch) { decode_simd(w, scratch); }
}  // namespace cpu
}  // namespace gqa
