// emu.hpp: runs libgqa's SIMT CUDA kernels on the CPU, for machines without a GPU.
//
// Force-included (g++ -include) before each cuda/*.cu file compiled as C++. A launch runs its
// blocks one after another; each block runs one std::thread per CUDA thread, so the kernels'
// indexing, masking and barrier placement really execute: __syncthreads and __syncwarp are
// std::barrier waits, shuffles go through a per-warp exchange array, __shared__ variables become
// function statics (one block at a time shares them). With -fsanitize=thread a missing barrier
// shows as a data race; with -fsanitize=address an out-of-bounds access as a heap overflow.
// It does NOT model the GPU memory model, timing, occupancy or anything tensor-core/async.
#pragma once
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <barrier>
#include <cmath>
#include <cstdint>
#include <thread>
#include <vector>

#undef __global__
#define __global__
#undef __launch_bounds__
#define __launch_bounds__(...)
#define __grid_constant__
#undef __shared__
#define __shared__ static

namespace emu {
extern thread_local uint3 thread_idx;
extern thread_local uint3 block_idx;
extern dim3 block_dim, grid_dim;
extern std::barrier<>* block_barrier;
extern std::barrier<>* warp_barrier[32];
extern float exchange[32][32];
}  // namespace emu

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

// Replaces `kernel<<<grid, block, 0, stream>>>(p)` (emulate.sh rewrites the launch lines).
template <class Kernel, class Params>
void emu_launch(Kernel kernel, dim3 grid, dim3 block, const Params& p) {
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
                    });
                for (auto& th : pool) th.join();
                for (auto* w : warps) delete w;
            }
}
