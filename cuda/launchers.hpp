// launchers.hpp: host-side entry points of the CUDA kernels, one explicit instantiation per
// (dtype, head_dim) in cuda/instances/ (see generate.py there).
//
// Each launcher enqueues its kernel on `stream` for the sequences of p.chunk and logs the launch
// parameters at DEBUG. None allocates or synchronises; backend.cu checks cudaGetLastError.
#pragma once

#include <cuda_runtime.h>

#include "common.cuh"
#include "gqa.h"  // GQA_LOG_* levels

namespace gqa {
namespace gpu {

// A kernel must opt in to more than 48 KB of dynamic shared memory (a host-side attribute, no
// synchronisation). On failure the error is left for the caller's cudaGetLastError check.
template <typename Kernel>
inline bool allow_dynamic_smem(Kernel* kernel, int bytes) {
    return cudaFuncSetAttribute(reinterpret_cast<const void*>(kernel),
                                cudaFuncAttributeMaxDynamicSharedMemorySize, bytes) == cudaSuccess;
}

// Flash-style prefill: out for every new token of every sequence of the chunk.
template <typename T, int D>
void launch_prefill(const AttnParams& p, cudaStream_t stream);

// The same on tensor cores (sm_80+): the default; the SIMT kernel above is the reference path.
template <typename T, int D>
void launch_prefill_tc(const AttnParams& p, cudaStream_t stream);

// Decode: appends the new k, v at each sequence's start, attends over start + 1 keys; writes
// out (num_splits == 1) or the split partials (num_splits > 1, then launch_combine).
template <typename T, int D>
void launch_decode(const AttnParams& p, cudaStream_t stream);

// The same on tensor cores (sm_80+): the default from 4 query heads per KV head.
template <typename T, int D>
void launch_decode_tc(const AttnParams& p, cudaStream_t stream);

// Decode split-KV: merges the partials of each (sequence, query head) into out, in a fixed order.
template <typename T>
void launch_combine(const AttnParams& p, cudaStream_t stream);

// Prefill with caches: copies the new k, v rows into the caches at [start, start + seq_len).
void launch_append_kv(const AttnParams& p, cudaStream_t stream);

}  // namespace gpu
}  // namespace gqa
