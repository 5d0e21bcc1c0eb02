// backend.hpp: what each backend provides to the API layer.
//
// Backends are called only with a Problem that validate.cpp accepted. They report failure by
// throwing gqa::Error; the CPU backend cannot fail except for host memory exhaustion.
#pragma once

#include <cstdint>
#include <string>

#include "error.hpp"
#include "problem.hpp"

namespace gqa {

// CPU backend (src/cpu/). Any head_dim 1..256, f16/bf16/f32.
void cpu_attention(const Problem& p);
int32_t cpu_num_threads();
void cpu_set_num_threads(int32_t n);  // 0: back to GQA_NUM_THREADS / available cores

// CUDA backend (cuda/, or cuda_unavailable.cpp in a CPU-only build).
bool cuda_built();
// True when a device is usable; otherwise *why says what is missing.
bool cuda_usable(std::string* why);
// UNSUPPORTED (with a message) for a valid Problem the kernels cannot run, e.g. a head_dim
// without an instantiation; called before anything is written.
void cuda_check_supported(const Problem& p);
uint64_t cuda_decode_workspace_bytes(const Problem& p);
void cuda_attention(const Problem& p);

}  // namespace gqa
