// isa.hpp: which CPU kernel runs (run-time dispatch from CPUID, GQA_CPU_ISA to force one).
#pragma once

#include "cpu/kernel.hpp"

namespace gqa {
namespace cpu {

enum class Isa { Scalar, Avx2, Avx512 };

struct IsaChoice {
    Isa isa;
    const char* name;
    TileKernel kernel;
};

// Decided once per process: the best ISA this CPU supports, or GQA_CPU_ISA (scalar, avx2,
// avx512) when set and supported; an unknown or unsupported value logs a WARNING and falls
// back to the best available.
const IsaChoice& selected_isa();

}  // namespace cpu
}  // namespace gqa
