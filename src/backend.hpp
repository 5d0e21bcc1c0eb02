// backend.hpp: what each backend provides to the API layer.
//
// Backends are called only with a Problem that validate.cpp accepted (the generic checks) and
// that the backend's own check accepted (the CPU backend takes every valid Problem). They
// report failure by throwing gqa::Error; the CPU backend cannot fail except for host memory
// exhaustion.
#pragma once

#include <cstdint>
#include <string>

#include "error.hpp"
#include "problem.hpp"

namespace gqa {

// CPU backend (src/cpu/). Any head_dim 1..kMaxHeadDim, f16/bf16/f32.
void cpu_attention(const Problem& p);
int32_t cpu_num_threads();
void cpu_set_num_threads(int32_t n);  // 0: back to GQA_NUM_THREADS / available cores

// CUDA backend (cuda/, or cuda_unavailable.cpp in a CPU-only build).
bool cuda_built();
// True when a device is usable; otherwise *why says what is missing.
bool cuda_usable(std::string* why);
// Every CUDA-specific check of a valid Problem, before anything is written (the one home of
// these checks; validate.cpp calls it for device CUDA): DEVICE_UNAVAILABLE without a usable
// device; UNSUPPORTED for what the kernels cannot run (f32, a head_dim without an
// instantiation, grid limits); INVALID_ARGUMENT for host pointers or a too-small workspace.
void cuda_check_supported(const Problem& p);
// Split-KV workspace bytes of a decode or batched call, from its shape fields only.
uint64_t cuda_workspace_bytes(const Problem& p);
void cuda_attention(const Problem& p);
// The batched op's GQA_VALIDATE_METADATA mode: `bytes` of device memory into host memory,
// ordered after the work already on `stream`, which it waits for (synchronising: not during a
// CUDA graph capture). CUDA_ERROR naming `what` on failure.
void cuda_copy_to_host(void* host, const void* device, uint64_t bytes, void* stream, const char* what);

}  // namespace gqa
