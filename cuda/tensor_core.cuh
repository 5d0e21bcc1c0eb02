// tensor_core.cuh: the sm_80+ warp primitives of the tensor-core kernels (prefill and decode) and
// the cp.async K/V loads, each a thin wrapper around one PTX instruction (mma.sync m16n8k16,
// ldmatrix, cp.async).
//
// Fragment layouts (PTX ISA, "mma.m16n8k16"): lane = 4 * group + t (group 0..7, t 0..3).
//   A 16x16 row-major, 4 regs of 2 elements: a0 (row group, cols 2t..2t+1), a1 (row group+8),
//     a2 (row group, cols 8+2t..), a3 (row group+8, cols 8+2t..).
//   B 16x8 (k x n), 2 regs: b0 (rows 2t..2t+1, col group), b1 (rows 8+2t.., col group).
//   C/D 16x8 fp32, 4 regs: c0,c1 (row group, cols 2t, 2t+1), c2,c3 (row group+8).
// ldmatrix .x4 loads four 8x8 b16 matrices; lanes 8j..8j+7 give the row addresses of matrix j,
// and register j of lane l holds row l/4, elements 2(l%4), 2(l%4)+1 of matrix j (.trans: the
// transposed matrix, i.e. rows 2(l%4), 2(l%4)+1 of column l/4).
//
// Built with GQA_EMULATE (tests/gpu/emulate), the same functions come from emu.hpp, which
// gathers the warp's fragments and computes the same results on the CPU.
#pragma once

#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <cstdint>
#include <cstring>
#include <type_traits>

namespace gqa {
namespace gpu {

// Two floats -> one register of two 16-bit elements (element 0 in the low half).
template <typename T>
__device__ __forceinline__ uint32_t pack2(float lo, float hi) {
    uint32_t r;
    if constexpr (std::is_same<T, __half>::value) {
        const __half2 h = __floats2half2_rn(lo, hi);
        memcpy(&r, &h, 4);
    } else {
        const __nv_bfloat162 h = __floats2bfloat162_rn(lo, hi);
        memcpy(&r, &h, 4);
    }
    return r;
}

#ifndef GQA_EMULATE

// The block's dynamic shared memory (its size is the launch's third parameter).
__device__ __forceinline__ unsigned char* dynamic_smem() {
    extern __shared__ __align__(16) unsigned char smem[];
    return smem;
}

__device__ __forceinline__ uint32_t smem_address(const void* p) {
    return static_cast<uint32_t>(__cvta_generic_to_shared(p));
}

// D += A * B with fp32 accumulation; T is __half or __nv_bfloat16.
template <typename T>
__device__ __forceinline__ void mma_16x8x16(float (&d)[4], const uint32_t (&a)[4], uint32_t b0,
                                            uint32_t b1) {
    if constexpr (std::is_same<T, __half>::value) {
        asm volatile(
            "mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 "
            "{%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, {%0,%1,%2,%3};\n"
            : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
            : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
    } else {
        asm volatile(
            "mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 "
            "{%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, {%0,%1,%2,%3};\n"
            : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
            : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
    }
}

// Four 8x8 matrices from shared memory; `row` is this lane's row address (see above).
__device__ __forceinline__ void ldmatrix_x4(uint32_t (&r)[4], const void* row) {
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0,%1,%2,%3}, [%4];\n"
                 : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
                 : "r"(smem_address(row)));
}
__device__ __forceinline__ void ldmatrix_x4_trans(uint32_t (&r)[4], const void* row) {
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0,%1,%2,%3}, [%4];\n"
                 : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
                 : "r"(smem_address(row)));
}

// 16 bytes global -> shared without passing through registers. When !valid nothing is read
// and the 16 bytes are zero-filled (src-size 0); `src` must still be a valid address.
__device__ __forceinline__ void cp_async_16(void* dst, const void* src, bool valid) {
    const int src_bytes = valid ? 16 : 0;
    asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(smem_address(dst)),
                 "l"(src), "r"(src_bytes));
}
__device__ __forceinline__ void cp_async_commit() { asm volatile("cp.async.commit_group;\n" ::); }
// Waits until at most N of this thread's committed groups are still in flight.
template <int N>
__device__ __forceinline__ void cp_async_wait() {
    asm volatile("cp.async.wait_group %0;\n" ::"n"(N));
}

#endif  // GQA_EMULATE

}  // namespace gpu
}  // namespace gqa
