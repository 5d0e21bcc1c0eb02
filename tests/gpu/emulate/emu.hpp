// emu.hpp: runs libgqa's CUDA kernels on the CPU, for machines without a GPU.
//
// Force-included (g++ -include) before each cuda/*.cu file compiled as C++. A launch
// (cuda/launch.cu calls emu_launch under GQA_EMULATE) runs its blocks one after another; each
// CUDA thread of a block is a fiber on the launching thread (emu_fibers.cpp), or a std::thread in
// the sanitizer builds (ThreadSanitizer must see threads), so the kernels' indexing, masking and
// barrier placement really execute: __syncthreads and __syncwarp are barrier waits (Barrier),
// shuffles go through a per-warp exchange array. Shared memory is the launch's dynamic shared
// memory only (the kernels use no static __shared__), NaN-poisoned (0xff) before every block.
// mma.sync, ldmatrix and cp.async are warp collectives (emu_tensor_core.hpp); a cp.async poisons
// its destination when issued and copies at the wait_group that covers it, and emu_smem.hpp
// checks that no thread touches a cp.async destination between its issue and a barrier after its
// wait.
// The emulated devices (SM count, shared memory per block) are set by tests (emu_control.h).
// With -fsanitize=thread a missing barrier also shows as a data race; with -fsanitize=address
// an out-of-bounds access as a heap overflow. It does NOT model the GPU memory model, timing,
// occupancy or bank conflicts.
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
#include <functional>
#include <thread>
#include <type_traits>
#include <vector>

#undef __global__
#define __global__
#undef __launch_bounds__
#define __launch_bounds__(...)
#define __grid_constant__
// Static shared memory is not emulated (it could not be poisoned per block): a kernel that
// declares some does not compile here. Use dynamic shared memory (dynamic_smem()).
#undef __shared__
#define __shared__ static_shared_memory_is_not_emulated_use_dynamic_smem

// Fibers, except under a sanitizer: ThreadSanitizer finds a missing barrier only between real
// threads, and AddressSanitizer does not follow stack switches.
#if defined(__SANITIZE_THREAD__) || defined(__SANITIZE_ADDRESS__)
#define EMU_FIBERS 0
#else
#define EMU_FIBERS 1
#endif

namespace emu {
// __syncthreads and __syncwarp: count CUDA threads arrive, then all go on. A fiber that waits
// lets the next fiber run (emu_fibers.cpp); a std::thread waits in a std::barrier.
class Barrier {
  public:
#if EMU_FIBERS
    explicit Barrier(int count) : count_(count) {}
    void arrive_and_wait();

  private:
    int count_, arrived_ = 0;
    unsigned generation_ = 0;
#else
    explicit Barrier(int count) : barrier_(count) {}
    void arrive_and_wait() { barrier_.arrive_and_wait(); }

  private:
    std::barrier<> barrier_;
#endif
};

inline thread_local uint3 thread_idx;
inline thread_local uint3 block_idx;
extern dim3 block_dim, grid_dim;
extern Barrier* block_barrier;
extern Barrier* warp_barrier[32];
extern float exchange[32][32];
extern uint32_t fragments[32][32][6];     // per warp, per lane: mma A (4) and B (2) registers
extern const void* row_address[32][32];  // per warp, per lane: ldmatrix row addresses
extern unsigned char* dynamic_smem;       // the running block's dynamic shared memory
extern size_t dynamic_smem_bytes;
extern const char* running_kernel;        // name of the kernel being emulated, for messages
[[noreturn]] void die(const char* what);
[[noreturn]] void die_in_block(const char* fmt, ...) __attribute__((format(printf, 1, 2)));

// Barrier intervals: the number of __syncthreads this thread has passed in its block.
inline thread_local int epoch = 0;

// emu_runtime.cpp: the launch-time checks a real device makes.
int allowed_dynamic_smem(const void* kernel);  // 48 KB, or what cudaFuncSetAttribute allowed
void set_last_error(cudaError_t e);
bool accept_launch();  // counts the launch; false when a test made it fail (emu_fail_launch)
}  // namespace emu
#define GQA_EMULATE 1

#define threadIdx emu::thread_idx
#define blockIdx emu::block_idx
#define blockDim emu::block_dim
#define gridDim emu::grid_dim

inline void __syncthreads() {
    emu::block_barrier->arrive_and_wait();
    ++emu::epoch;
}
inline void __syncwarp(unsigned = 0xffffffffu) { emu::warp_barrier[threadIdx.x / 32]->arrive_and_wait(); }
inline float __shfl_xor_sync(unsigned, float x, int lane_mask) {
    const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
    emu::exchange[warp][lane] = x;
    emu::warp_barrier[warp]->arrive_and_wait();
    const float y = emu::exchange[warp][lane ^ lane_mask];
    emu::warp_barrier[warp]->arrive_and_wait();  // nobody overwrites before everyone has read
    return y;
}
// A rounded product nvcc never contracts into an FMA. GCC in ISO C++ mode (-std=c++20) contracts
// nothing, so here every product is rounded anyway: the emulation cannot show a contraction
// nvcc would make (only the SASS can; cuda/README.md, "Logits").
inline float __fmul_rn(float a, float b) { return a * b; }
inline int atomicOr(int* address, int value) { return __atomic_fetch_or(address, value, __ATOMIC_RELAXED); }
using std::max;
using std::min;

namespace emu {
inline int warp_id() { return int(thread_idx.x / 32); }
inline int lane_id() { return int(thread_idx.x % 32); }
inline void warp_sync() { warp_barrier[warp_id()]->arrive_and_wait(); }
}  // namespace emu

#include "emu_smem.hpp"
#include "emu_tensor_core.hpp"

#if EMU_FIBERS
namespace emu {
// Runs run_thread(t) for t in [0, threads) as fibers on this thread; returns when all have ended.
void run_as_fibers(int threads, const std::function<void(int)>& run_thread);
}  // namespace emu
#endif

// What cuda/launch.cu does instead of kernel<<<grid, block, smem, stream>>>(p): the checks of a
// real launch (shared memory over the kernel's allowance, block size), then every block.
template <class Params>
void emu_launch(void (*kernel)(Params), dim3 grid, dim3 block, const Params& p, size_t smem_bytes,
                const char* name) {
    if (!emu::accept_launch()) {
        emu::set_last_error(cudaErrorLaunchOutOfResources);
        return;
    }
    if (smem_bytes > size_t(emu::allowed_dynamic_smem(reinterpret_cast<const void*>(kernel))) ||
        block.x < 1 || block.x > 1024 || block.y != 1 || block.z != 1) {
        emu::set_last_error(cudaErrorInvalidValue);
        return;
    }
    std::vector<unsigned char> smem(smem_bytes + 1);
    emu::dynamic_smem = smem.data();
    emu::dynamic_smem_bytes = smem_bytes;
    emu::running_kernel = name;
    emu::block_dim = block;
    emu::grid_dim = grid;
    const int threads = int(block.x);
    for (unsigned z = 0; z < grid.z; ++z)
        for (unsigned y = 0; y < grid.y; ++y)
            for (unsigned x = 0; x < grid.x; ++x) {
                emu::block_idx = make_uint3(x, y, z);  // for messages from this thread
                std::fill(smem.begin(), smem.end(), 0xff);  // NaN in f16 and bf16: stale reads show
                emu::smem_shadow_reset(smem_bytes);
                emu::Barrier block_barrier(threads);
                emu::block_barrier = &block_barrier;
                std::vector<emu::Barrier*> warps;
                for (int w = 0; w * 32 < threads; ++w) {
                    warps.push_back(new emu::Barrier(std::min(32, threads - 32 * w)));
                    emu::warp_barrier[w] = warps.back();
                }
                const std::function<void(int)> run_thread = [&](int t) {
                    emu::thread_idx = make_uint3(unsigned(t), 0, 0);
                    emu::block_idx = make_uint3(x, y, z);
                    emu::epoch = 0;
                    kernel(p);
                    if (!emu::pending_copies.empty())
                        emu::die_in_block("thread %d ended with cp.async copies never waited for", t);
                    emu::committed_groups = 0;
                };
#if EMU_FIBERS
                emu::run_as_fibers(threads, run_thread);
#else
                std::vector<std::thread> pool;
                for (int t = 0; t < threads; ++t) pool.emplace_back(run_thread, t);
                for (auto& th : pool) th.join();
#endif
                for (auto* w : warps) delete w;
            }
}
