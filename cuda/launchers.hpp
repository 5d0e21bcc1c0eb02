// launchers.hpp: how backend.cu gets and launches the CUDA kernels.
//
// Each kernel header offers select_<kernel><T, D>(smem_limit): the variant of that kernel for
// (dtype, head_dim) that fits `smem_limit` bytes of shared memory per block (the deepest cp.async
// ring that fits), as a Kernel: entry point, launch shape, shared memory. The instantiations
// are in cuda/instances/ (written by generate.py). backend.cu picks every Kernel of a call and
// prepares it (device_facts.hpp: attributes, occupancy) before the first launch, then enqueues
// them with launch(), the one place a kernel is launched.
#pragma once

#include <cuda_runtime.h>

#include <atomic>

#include "common.cuh"

namespace gqa {
namespace gpu {

// Every kernel takes the call's parameters by value (__grid_constant__) and nothing else.
using KernelEntry = void (*)(AttnParams);
using GridFn = dim3 (*)(const AttnParams&);

// Devices whose per-kernel preparation is remembered (device_facts.cu); more are prepared again
// on every call.
constexpr int kMaxRememberedDevices = 64;

// Per kernel variant: on which devices its attributes are set and its occupancy was checked.
struct KernelPrepared {
    std::atomic<bool> on_device[kMaxRememberedDevices];
};

struct Kernel {
    KernelEntry entry;   // nullptr: no variant fits the limit (smem_bytes: the least one needs)
    const char* name;    // the kernel's name, for messages and logs
    int head_dim;        // 0 for kernels of any head_dim
    int stages;          // depth of its cp.async ring (0: none)
    int threads;         // per block
    int smem_bytes;      // dynamic shared memory per block (the kernels use no static shared memory)
    GridFn grid;         // the grid of one chunk of sequences
    KernelPrepared* prepared;
};

// The variant of `Kernel`'s template with its shape (Tile: kThreads, kSmemBytes): one static
// KernelPrepared per variant.
template <typename Tile, KernelEntry kEntry>
inline Kernel kernel_variant(const char* name, int head_dim, int stages, GridFn grid) {
    static KernelPrepared prepared{};
    return Kernel{kEntry, name, head_dim, stages, Tile::kThreads, int(Tile::kSmemBytes), grid, &prepared};
}

// The first of the candidates (deepest ring first) whose shared memory fits `limit`; if none
// does, a Kernel without entry that carries the smallest need, for the caller's message.
inline Kernel first_fitting(int limit, const Kernel& preferred, const Kernel& fallback) {
    if (preferred.smem_bytes <= limit) return preferred;
    Kernel k = fallback;
    if (k.smem_bytes > limit) k.entry = nullptr;
    return k;
}
inline Kernel first_fitting(int limit, const Kernel& only) { return first_fitting(limit, only, only); }

// Flash-style prefill on SIMT fp32 units: the reference path (GQA_CUDA_PREFILL=simt).
template <typename T, int D>
Kernel select_prefill(int smem_limit);
// Prefill on tensor cores (sm_80+): the default.
template <typename T, int D>
Kernel select_prefill_tc(int smem_limit);
// Decode: appends the new k, v at each sequence's start, attends over start + 1 keys; writes
// out (num_splits == 1) or the split partials (num_splits > 1, then combine).
template <typename T, int D>
Kernel select_decode(int smem_limit);
// The same on tensor cores (sm_80+): the default from 4 query heads per KV head.
template <typename T, int D>
Kernel select_decode_tc(int smem_limit);
// Decode split-KV: merges the partials of each (sequence, query head) into out, in a fixed order.
template <typename T>
Kernel select_combine();
// Prefill with caches: copies the new k, v rows into the caches at [start, start + seq_len).
Kernel select_append_kv();

// Enqueues k on `stream` for the sequences of p.chunk (logged at DEBUG). Never allocates or
// synchronises. A rejected launch throws CUDA_ERROR naming k. Built for the CPU emulation
// (tests/gpu/emulate), the launch runs the kernel there instead.
void launch(const Kernel& k, const AttnParams& p, cudaStream_t stream);

// gqa_merge_states (merge.cu) as its kernel sees it: rows = batch * seq_len * num_heads output
// rows of head_dim elements; states [num_states][rows][head_dim], lses [num_states][batch]
// [num_heads][seq_len].
struct MergeParams {
    void* out;
    float* lse_out;  // nullptr: not written
    const void* states;
    const float* lses;
    const float* sinks;  // nullptr: none
    int64_t num_states, rows, num_heads, seq_len, head_dim;
};
// The same for the merge kernel (no shared memory).
void launch(void (*entry)(MergeParams), const char* name, dim3 grid, dim3 block, const MergeParams& p,
            cudaStream_t stream);

}  // namespace gpu
}  // namespace gqa
