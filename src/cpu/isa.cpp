// isa.cpp: run-time choice of the CPU kernel. See isa.hpp.
#include "cpu/isa.hpp"

#include <cstdlib>
#if defined(__x86_64__) || defined(_M_X64)
#include <cpuid.h>
#endif
#include <cstring>

#include "gqa.h"
#include "log.hpp"

namespace gqa {
namespace cpu {

namespace {

#if defined(__x86_64__) || defined(_M_X64)
// CPUID.1:ECX.F16C[bit 29]; clang 14's __builtin_cpu_supports does not know "f16c".
bool has_f16c() {
    unsigned a, b, c, d;
    return __get_cpuid(1, &a, &b, &c, &d) && (c & bit_F16C);
}
#endif

bool supported(Isa isa) {
#if defined(__x86_64__) || defined(_M_X64)
    __builtin_cpu_init();
    switch (isa) {
        case Isa::Scalar: return true;
        case Isa::Avx2:
            return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") &&
                   has_f16c();
        case Isa::Avx512:
            // F/BW/VL/DQ plus FMA and F16C: the set the kernel is compiled for (GqaCpuIsa.cmake).
            return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
                   __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512dq") &&
                   __builtin_cpu_supports("fma") && has_f16c();
    }
    return false;
#else
    return isa == Isa::Scalar;
#endif
}

IsaChoice make(Isa isa) {
    switch (isa) {
#if defined(__x86_64__) || defined(_M_X64)
        case Isa::Avx512: return {Isa::Avx512, "avx512", &attend_tile_avx512};
        case Isa::Avx2: return {Isa::Avx2, "avx2", &attend_tile_avx2};
#endif
        default: return {Isa::Scalar, "scalar", &attend_tile_scalar};
    }
}

IsaChoice choose() {
    const Isa best = supported(Isa::Avx512) ? Isa::Avx512 : supported(Isa::Avx2) ? Isa::Avx2 : Isa::Scalar;
    const char* forced = std::getenv("GQA_CPU_ISA");
    if (!forced || !*forced) return make(best);
    Isa wanted;
    if (std::strcmp(forced, "scalar") == 0) {
        wanted = Isa::Scalar;
    } else if (std::strcmp(forced, "avx2") == 0) {
        wanted = Isa::Avx2;
    } else if (std::strcmp(forced, "avx512") == 0) {
        wanted = Isa::Avx512;
    } else {
        GQA_LOG(GQA_LOG_WARNING, "GQA_CPU_ISA='%s' is not one of scalar, avx2, avx512; using %s",
                forced, make(best).name);
        return make(best);
    }
    if (!supported(wanted)) {
        GQA_LOG(GQA_LOG_WARNING, "GQA_CPU_ISA='%s' is not supported by this CPU; using %s", forced,
                make(best).name);
        return make(best);
    }
    return make(wanted);
}

}  // namespace

const IsaChoice& selected_isa() {
    static const IsaChoice choice = choose();
    return choice;
}

}  // namespace cpu
}  // namespace gqa
