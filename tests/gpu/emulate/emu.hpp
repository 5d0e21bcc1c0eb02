// emu.hpp: runs libgqa's SIMT CUDA kernels on the CPU, for machines without a GPU.
//
// Force-included (g++ -include) before each cuda/*.cu file compiled as C++. A launch runs its
// blocks one after another; each block runs one std::thread per CUDA thread, so the kernels'
// indexing, masking and barrier placement really execute: __syncthreads and __syncwarp are
// std::barrier waits, shuffles go through a per-warp exchange array, __shared__ variables become
// function statics (one block at a time shares them). With -fsanitize=thread a missing barrier
// shows as a data race; with -fsanitize=address an out-of-bounds access as a heap overflow.
// Tensor-core and async primitives (mma.sync, ldmatrix, cp.async: cuda/tensor_core.cuh) are
// warp collectives here too: each lane posts its fragment or row address, then computes its own
// result by the PTX ISA's fragment layouts. cp.async copies are deferred until the
// cp.async.wait_group that covers them, so reading shared memory too early reads stale bytes.
// It does NOT model the GPU memory model, timing, occupancy or bank conflicts.
#pragma once
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <barrier>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <thread>
#include <type_traits>
#include <vector>

#undef __global__
#define __global__
#undef __launch_bounds__
#define __launch_bounds__(...)
#define __grid_constant__
#undef __shared__
#define __shared__ static

namespace emu {
inline thread_local uint3 thread_idx;
inline thread_local uint3 block_idx;
extern dim3 block_dim, grid_dim;
extern std::barrier<>* block_barrier;
extern std::barrier<>* warp_barrier[32];
extern float exchange[32][32];
extern uint32_t fragments[32][32][6];     // per warp, per lane: mma A (4) and B (2) registers
extern const void* row_address[32][32];  // per warp, per lane: ldmatrix row addresses
extern unsigned char* dynamic_smem;       // the running block's dynamic shared memory
extern size_t dynamic_smem_bytes;
[[noreturn]] void die(const char* what);
}  // namespace emu
#define GQA_EMULATE 1

#define threadIdx emu::thread_idx
#define blockIdx emu::block_idx
#define blockDim emu::block_dim
#define gridDim emu::grid_dim

inline void __syncthreads() { emu::block_barrier->arrive_and_wait(); }
inline void __syncwarp(unsigned = 0xffffffffu) { emu::warp_barrier[threadIdx.x / 32]->arrive_and_wait(); }
inline float __shfl_xor_sync(unsigned, float x, int lane_mask) {
    const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
    emu::exchange[warp][lane] = x;
    emu::warp_barrier[warp]->arrive_and_wait();
    const float y = emu::exchange[warp][lane ^ lane_mask];
    emu::warp_barrier[warp]->arrive_and_wait();  // nobody overwrites before everyone has read
    return y;
}
using std::max;
using std::min;

namespace emu {
inline int warp_id() { return int(thread_idx.x / 32); }
inline int lane_id() { return int(thread_idx.x % 32); }
inline void warp_sync() { warp_barrier[warp_id()]->arrive_and_wait(); }
inline void check_smem(const void* p, size_t bytes, const char* what) {
    const auto* c = static_cast<const unsigned char*>(p);
    if (reinterpret_cast<uintptr_t>(p) % 16 != 0) die(what);
    if (c < dynamic_smem || c + bytes > dynamic_smem + dynamic_smem_bytes) die(what);
}
template <typename T>
float to_float(uint16_t bits) {
    if constexpr (std::is_same<T, __half>::value) {
        __half_raw raw;
        raw.x = bits;
        return __half2float(__half(raw));
    } else {
        const uint32_t u = uint32_t(bits) << 16;
        float f;
        std::memcpy(&f, &u, 4);
        return f;
    }
}
inline uint16_t half_of(uint32_t reg, int which) { return uint16_t(which ? reg >> 16 : reg & 0xffffu); }

struct PendingCopy {
    void* dst;
    const void* src;
    bool valid;
    int group;  // commit group the copy belongs to
};
// Inline (one definition in every translation unit), not extern: UBSan's null check misfires on
// GCC's wrapper for an extern thread_local of another translation unit.
inline thread_local std::vector<PendingCopy> pending_copies;
inline thread_local int committed_groups = 0;
}  // namespace emu

namespace gqa {
namespace gpu {
inline unsigned char* dynamic_smem() { return emu::dynamic_smem; }

template <typename T>
void mma_16x8x16(float (&d)[4], const uint32_t (&a)[4], uint32_t b0, uint32_t b1) {
    const int w = emu::warp_id(), lane = emu::lane_id();
    for (int i = 0; i < 4; ++i) emu::fragments[w][lane][i] = a[i];
    emu::fragments[w][lane][4] = b0;
    emu::fragments[w][lane][5] = b1;
    emu::warp_sync();
    const int group = lane / 4, t = lane % 4;
    for (int e = 0; e < 4; ++e) {
        const int row = group + 8 * (e / 2), col = 2 * t + (e & 1);
        double acc = 0.0;
        for (int k = 0; k < 16; ++k) {
            const uint32_t areg = emu::fragments[w][(row % 8) * 4 + (k % 8) / 2][(row / 8) + 2 * (k / 8)];
            const uint32_t breg = emu::fragments[w][col * 4 + (k % 8) / 2][4 + k / 8];
            acc += double(emu::to_float<T>(emu::half_of(areg, k % 2))) *
                   double(emu::to_float<T>(emu::half_of(breg, k % 2)));
        }
        d[e] = float(double(d[e]) + acc);
    }
    emu::warp_sync();  // nobody overwrites the fragments before everyone has read
}

// ldmatrix .x4 (and .trans): see tensor_core.cuh for which lane gets which elements.
inline void ldmatrix_x4_impl(uint32_t (&r)[4], const void* row, bool trans) {
    emu::check_smem(row, 16, "ldmatrix: row address not 16-byte aligned or outside shared memory");
    const int w = emu::warp_id(), lane = emu::lane_id();
    emu::row_address[w][lane] = row;
    emu::warp_sync();
    for (int j = 0; j < 4; ++j) {
        uint16_t e[2];
        for (int h = 0; h < 2; ++h) {
            const int r8 = trans ? 2 * (lane % 4) + h : lane / 4;  // row of matrix j
            const int c8 = trans ? lane / 4 : 2 * (lane % 4) + h;  // column
            std::memcpy(&e[h], static_cast<const uint16_t*>(emu::row_address[w][8 * j + r8]) + c8, 2);
        }
        r[j] = uint32_t(e[0]) | (uint32_t(e[1]) << 16);
    }
    emu::warp_sync();
}
inline void ldmatrix_x4(uint32_t (&r)[4], const void* row) { ldmatrix_x4_impl(r, row, false); }
inline void ldmatrix_x4_trans(uint32_t (&r)[4], const void* row) { ldmatrix_x4_impl(r, row, true); }

inline void cp_async_16(void* dst, const void* src, bool valid) {
    emu::check_smem(dst, 16, "cp.async: destination not 16-byte aligned or outside shared memory");
    if (valid && reinterpret_cast<uintptr_t>(src) % 16 != 0) emu::die("cp.async: source not 16-byte aligned");
    emu::pending_copies.push_back({dst, src, valid, emu::committed_groups});
}
inline void cp_async_commit() { ++emu::committed_groups; }
template <int N>
void cp_async_wait() {
    // Completes every copy of the groups older than the newest N; later ones stay pending.
    auto& q = emu::pending_copies;
    size_t kept = 0;
    for (size_t i = 0; i < q.size(); ++i) {
        if (q[i].group < emu::committed_groups - N) {
            if (q[i].valid) std::memcpy(q[i].dst, q[i].src, 16);
            else std::memset(q[i].dst, 0, 16);
        } else {
            q[kept++] = q[i];
        }
    }
    q.resize(kept);
}
}  // namespace gpu
}  // namespace gqa

// Replaces `kernel<<<grid, block, 0, stream>>>(p)` (emulate.sh rewrites the launch lines).
template <class Kernel, class Params>
void emu_launch(Kernel kernel, dim3 grid, dim3 block, const Params& p, size_t smem_bytes = 0) {
    std::vector<unsigned char> smem(smem_bytes + 1, 0xff);  // NaN in f16 and bf16: stale reads show
    emu::dynamic_smem = smem.data();
    emu::dynamic_smem_bytes = smem_bytes;
    emu::block_dim = block;
    emu::grid_dim = grid;
    const int threads = int(block.x);
    for (unsigned z = 0; z < grid.z; ++z)
        for (unsigned y = 0; y < grid.y; ++y)
            for (unsigned x = 0; x < grid.x; ++x) {
                std::barrier<> block_barrier(threads);
                emu::block_barrier = &block_barrier;
                std::vector<std::barrier<>*> warps;
                for (int w = 0; w * 32 < threads; ++w) {
                    warps.push_back(new std::barrier<>(std::min(32, threads - 32 * w)));
                    emu::warp_barrier[w] = warps.back();
                }
                std::vector<std::thread> pool;
                for (int t = 0; t < threads; ++t)
                    pool.emplace_back([&, t] {
                        emu::thread_idx = make_uint3(unsigned(t), 0, 0);
                        emu::block_idx = make_uint3(x, y, z);
                        kernel(p);
                        if (!emu::pending_copies.empty())
                            emu::die("a thread ended with cp.async copies never waited for");
                        emu::committed_groups = 0;
                    });
                for (auto& th : pool) th.join();
                for (auto* w : warps) delete w;
            }
}
