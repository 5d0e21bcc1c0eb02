// convert.hpp: exact scalar conversions between the storage dtypes and fp32.
//
// f32 -> f16/bf16 round to nearest, ties to even, keep NaN a (quiet) NaN, saturate to Inf on
// overflow and produce subnormals where the value needs them. Everything here has internal
// linkage (anonymous namespace) on purpose: the per-ISA translation units include this header
// with -mavx2/-mavx512 flags, and an inline function with external linkage could then be
// merged by the linker into an AVX-512 copy that baseline code would call.
#pragma once

#include <cstdint>
#include <cstring>

#include "problem.hpp"

namespace gqa {
namespace cpu {
namespace {

inline uint32_t float_bits(float f) {
    uint32_t u;
    std::memcpy(&u, &f, sizeof u);
    return u;
}
inline float bits_float(uint32_t u) {
    float f;
    std::memcpy(&f, &u, sizeof f);
    return f;
}

inline float f16_to_f32(uint16_t h) {
    const uint32_t sign = static_cast<uint32_t>(h & 0x8000u) << 16;
    const uint32_t exponent = (h >> 10) & 0x1fu;
    const uint32_t mantissa = h & 0x3ffu;
    if (exponent == 0) {  // zero or subnormal: mantissa * 2^-24, exact in f32
        const float magnitude = static_cast<float>(mantissa) * (1.0f / 16777216.0f);
        return bits_float(float_bits(magnitude) | sign);
    }
    if (exponent == 31) return bits_float(sign | 0x7f800000u | (mantissa << 13));  // Inf / NaN
    return bits_float(sign | ((exponent + 112u) << 23) | (mantissa << 13));
}

inline uint16_t f32_to_f16(float f) {
    uint32_t x = float_bits(f);
    const uint16_t sign = static_cast<uint16_t>((x >> 16) & 0x8000u);
    x &= 0x7fffffffu;
    if (x > 0x7f800000u) return sign | 0x7e00u | static_cast<uint16_t>((x >> 13) & 0x3ffu);  // NaN
    if (x >= 0x477ff000u) return sign | 0x7c00u;  // >= 65520 rounds to Inf (also Inf itself)
    if (x < 0x38800000u) {
        // Below the smallest normal (2^-14): the f16 result is a multiple of 2^-24. Adding 0.5
        // puts that unit in the last mantissa bit of an f32, so the FPU rounds (ties to even).
        const float shifted = bits_float(x) + 0.5f;
        return sign | static_cast<uint16_t>(float_bits(shifted) - 0x3f000000u);
    }
    // Normal: rebias the exponent, round the 13 dropped bits to nearest even (a carry into the
    // exponent is the right answer, up to Inf).
    const uint32_t rounded = x + 0xfffu + ((x >> 13) & 1u);
    return sign | static_cast<uint16_t>((rounded - 0x38000000u) >> 13);
}

inline float bf16_to_f32(uint16_t h) { return bits_float(static_cast<uint32_t>(h) << 16); }

inline uint16_t f32_to_bf16(float f) {
    const uint32_t x = float_bits(f);
    if ((x & 0x7fffffffu) > 0x7f800000u) return static_cast<uint16_t>((x >> 16) | 0x40u);  // quiet NaN
    return static_cast<uint16_t>((x + 0x7fffu + ((x >> 16) & 1u)) >> 16);  // RNE; overflow -> Inf
}

// Element i of a storage array as f32. Storage arrays may sit at any byte address (a NumPy
// array at an odd offset is legal), so every access goes through memcpy: alignment-safe by
// definition, and the same single load or store instruction on x86.
inline float load_f32(const void* base, int64_t i, DType t) {
    if (t == DType::F32) {
        float f;
        std::memcpy(&f, static_cast<const char*>(base) + 4 * i, sizeof f);
        return f;
    }
    uint16_t h;
    std::memcpy(&h, static_cast<const char*>(base) + 2 * i, sizeof h);
    return t == DType::F16 ? f16_to_f32(h) : bf16_to_f32(h);
}

inline void store_f32(void* base, int64_t i, float value, DType t) {
    if (t == DType::F32) {
        std::memcpy(static_cast<char*>(base) + 4 * i, &value, sizeof value);
    } else {
        const uint16_t h = t == DType::F16 ? f32_to_f16(value) : f32_to_bf16(value);
        std::memcpy(static_cast<char*>(base) + 2 * i, &h, sizeof h);
    }
}

// n values times `factor` to storage elements base[offset .. offset + n). The output does not
// overlap `values` (__restrict): without that promise a char store could alias anything and
// the compiler would not vectorise the loop.
inline void store_row_f32(void* base, int64_t offset, const float* __restrict values, int64_t n, float factor,
                          DType t) {
    if (t == DType::F32) {
        char* __restrict dst = static_cast<char*>(base) + offset * 4;
        for (int64_t i = 0; i < n; ++i) {
            const float x = values[i] * factor;
            std::memcpy(dst + 4 * i, &x, sizeof x);
        }
    } else {
        char* __restrict dst = static_cast<char*>(base) + offset * 2;
        for (int64_t i = 0; i < n; ++i) {
            const float x = values[i] * factor;
            const uint16_t h = t == DType::F16 ? f32_to_f16(x) : f32_to_bf16(x);
            std::memcpy(dst + 2 * i, &h, sizeof h);
        }
    }
}
}  // namespace
}  // namespace cpu
}  // namespace gqa
