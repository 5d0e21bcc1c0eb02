// isa.cpp: run-time choice of the CPU kernels. See isa.hpp.
#include "cpu/isa.hpp"

#include <cerrno>
#include <cstdlib>
#include <cstring>
#if defined(__x86_64__) || defined(_M_X64)
#include <cpuid.h>
#endif
#if defined(__linux__)
#include <sys/syscall.h>
#include <unistd.h>
#endif

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

// CPUID leaf 7 sub-leaf `sub`, register `reg` (0 eax .. 3 edx), bit `bit`.
bool cpuid7_bit(unsigned sub, int reg, int bit) {
    unsigned r[4];
    if (!__get_cpuid_count(7, sub, &r[0], &r[1], &r[2], &r[3])) return false;
    return (r[reg] >> bit) & 1u;
}
bool has_avx512_bf16() { return cpuid7_bit(1, 0, 5); }                         // leaf 7.1 EAX[5]
bool has_amx_bf16() { return cpuid7_bit(0, 3, 22) && cpuid7_bit(0, 3, 24); }  // 7.0 EDX: AMX-BF16, AMX-TILE

// Linux hands out AMX tile state only on request (arch_prctl ARCH_REQ_XCOMP_PERM, kernel 5.16+):
// asked once per process. Refused (old kernel, a signal stack too small for the larger signal
// frame, seccomp...) means no AMX: never execute a tile instruction then (it would be SIGILL).
bool amx_permitted() {
    static const bool permitted = [] {
#if defined(__linux__)
        constexpr long kReqXcompPerm = 0x1023, kGetXcompPerm = 0x1022, kXtileData = 18;
        if (syscall(SYS_arch_prctl, kReqXcompPerm, kXtileData) != 0) {
            GQA_LOG(GQA_LOG_INFO, "the CPU has AMX but Linux refused AMX tile state (arch_prctl: %s); not using AMX",
                    std::strerror(errno));
            return false;
        }
        unsigned long features = 0;
        return syscall(SYS_arch_prctl, kGetXcompPerm, &features) == 0 && ((features >> kXtileData) & 1u);
#else
        return false;
#endif
    }();
    return permitted;
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
        case Isa::Avx512Bf16: return supported(Isa::Avx512) && has_avx512_bf16();
        case Isa::AmxBf16: return supported(Isa::Avx512Bf16) && has_amx_bf16() && amx_permitted();
    }
    return false;
#else
    return isa == Isa::Scalar;
#endif
}

// name, pack, tile kernel, packed element bytes, dim_align, min_rows (kernel.hpp: PrefillPath).
IsaChoice make(Isa isa) {
    switch (isa) {
#if defined(__x86_64__) || defined(_M_X64)
        case Isa::AmxBf16:
        case Isa::Avx512Bf16:
        case Isa::Avx512: {
            const PrefillPath fp32{"avx512_fp32", &pack_kv_avx512_f32, &prefill_tile_avx512_f32, 4, 16, 16};
            const char* name = isa == Isa::Avx512 ? "avx512" : isa == Isa::Avx512Bf16 ? "avx512_bf16" : "amx_bf16";
            PrefillPath bf16 = fp32;
            if (isa == Isa::Avx512Bf16) bf16 = {"avx512_bf16", &pack_kv_bf16, &prefill_tile_avx512_bf16, 2, 32, 16};
            if (isa == Isa::AmxBf16) bf16 = {"amx_bf16", &pack_kv_bf16, &prefill_tile_amx_bf16, 2, 32, 16};
            return {isa, name, &attend_tile_avx512, fp32, bf16, fp32};
        }
        case Isa::Avx2: {
            const PrefillPath fp32{"avx2_fp32", &pack_kv_avx2_f32, &prefill_tile_avx2_f32, 4, 8, 8};
            return {Isa::Avx2, "avx2", &attend_tile_avx2, fp32, fp32, fp32};
        }
#endif
        default: {
            const PrefillPath rows{"scalar", nullptr, &attend_tile_scalar, 4, 1, 1};
            return {Isa::Scalar, "scalar", &attend_tile_scalar, rows, rows, rows};
        }
    }
}

constexpr struct {
    const char* name;
    Isa isa;
} kNames[] = {  // ascending: best last
    {"scalar", Isa::Scalar}, {"avx2", Isa::Avx2}, {"avx512", Isa::Avx512},
    {"avx512_bf16", Isa::Avx512Bf16}, {"amx_bf16", Isa::AmxBf16}};

// Whether the automatic choice may take `isa`: avx512_bf16 only on AMD. Its vdpbf16ps products
// should double the MAC rate of fp32 FMAs where a zmm FMA issues once a cycle (Zen 4; not
// measured here), but an Intel core with two 512-bit FMA ports runs the fp32 FMA path faster
// (Sapphire Rapids: avx512_bf16 takes 1.19-1.55x the time; benchmarks/NOTES.md section 10), as
// it would where Linux refuses AMX state. Forcing it with GQA_CPU_ISA works wherever it runs.
bool automatic(Isa isa) {
#if defined(__x86_64__) || defined(_M_X64)
    return isa != Isa::Avx512Bf16 || cpu_is_amd();
#else
    (void)isa;
    return true;
#endif
}

// The best supported ISA the automatic choice may take. Checked best first, so that AMX state is
// requested from the OS only when AMX is what will run.
IsaChoice best() {
    for (int i = static_cast<int>(sizeof kNames / sizeof kNames[0]) - 1; i > 0; --i) {
        if (automatic(kNames[i].isa) && supported(kNames[i].isa)) return make(kNames[i].isa);
    }
    return make(Isa::Scalar);
}

IsaChoice choose() {
    const char* forced = std::getenv("GQA_CPU_ISA");
    if (!forced || !*forced) return best();
    for (const auto& n : kNames) {
        if (std::strcmp(forced, n.name) != 0) continue;
        if (supported(n.isa)) return make(n.isa);
        const IsaChoice fallback = best();
        GQA_LOG(GQA_LOG_WARNING, "GQA_CPU_ISA='%s' is not supported by this CPU (or, for AMX, the OS); using %s",
                forced, fallback.name);
        return fallback;
    }
    const IsaChoice fallback = best();
    // tests/reliability/test_misaligned.c reads the names from this message ("is not one of a,
    // b, c;") to run every kernel: keep it listing every name of kNames, in this form.
    GQA_LOG(GQA_LOG_WARNING,
            "GQA_CPU_ISA='%s' is not one of scalar, avx2, avx512, avx512_bf16, amx_bf16; using %s", forced,
            fallback.name);
    return fallback;
}

}  // namespace

bool cpu_is_amd() {
#if defined(__x86_64__) || defined(_M_X64)
    static const bool amd = [] {  // CPUID leaf 0 vendor "AuthenticAMD" (EBX, EDX, ECX); a CPUID traps in a VM
        unsigned a, b, c, d;
        return __get_cpuid(0, &a, &b, &c, &d) && b == 0x68747541u && d == 0x69746e65u && c == 0x444d4163u;
    }();
    return amd;
#else
    return false;
#endif
}

const IsaChoice& selected_isa() {
    static const IsaChoice choice = choose();
    return choice;
}

}  // namespace cpu
}  // namespace gqa
