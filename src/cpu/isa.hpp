// isa.hpp: which CPU kernels run (run-time dispatch from CPUID, GQA_CPU_ISA to force one).
#pragma once

#include "cpu/kernel.hpp"

namespace gqa {
namespace cpu {

// Best first: amx_bf16 > avx512_bf16 > avx512 > avx2 > scalar (avx512_bf16 chosen automatically
// on AMD only, see isa.cpp). The two bf16 ISAs differ from avx512 only in their bf16 prefill
// path; decode and the f16/f32 paths are avx512's.
enum class Isa { Scalar, Avx2, Avx512, Avx512Bf16, AmxBf16 };

struct IsaChoice {
    Isa isa;
    const char* name;
    TileKernel kernel;  // decode, and prefills with fewer rows than the path's min_rows
    PrefillPath f16, bf16, f32;

    const PrefillPath& prefill(DType t) const { return t == DType::F16 ? f16 : t == DType::BF16 ? bf16 : f32; }
};

// Decided once per process: the best ISA this CPU (and, for AMX, the OS) supports, or
// GQA_CPU_ISA (scalar, avx2, avx512, avx512_bf16, amx_bf16) when set and supported; an unknown
// or unsupported value logs a WARNING and falls back to the best available.
const IsaChoice& selected_isa();

// CPUID's vendor is AMD (checked once); kernels whose best form differs by vendor ask it.
bool cpu_is_amd();

}  // namespace cpu
}  // namespace gqa
