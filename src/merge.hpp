// merge.hpp: gqa_merge_states as the backends see it (validated by merge.cpp first).
#pragma once

#include <cstdint>

#include "gqa.h"
#include "problem.hpp"

namespace gqa {

struct MergeProblem {
    DType dtype = DType::F16;
    int32_t device = GQA_DEVICE_CPU;
    int64_t num_states = 0;
    int64_t batch = 0;
    int64_t seq_len = 0;
    int64_t num_heads = 0;
    int64_t head_dim = 0;
    const float* sinks = nullptr;  // [num_heads] or null

    void* out = nullptr;           // [batch, seq_len, num_heads, head_dim]
    float* lse_out = nullptr;      // [batch, num_heads, seq_len] or null
    const void* states = nullptr;  // [num_states, batch, seq_len, num_heads, head_dim]
    const float* lses = nullptr;   // [num_states, batch, num_heads, seq_len]
    void* stream = nullptr;
};

// gqa_merge_states: validate (throwing gqa::Error before anything is written), then merge.
void merge_states(void* out, float* lse_out, const void* states, const float* lses, const gqa_merge_config* config,
                  void* stream);

// CPU implementation (src/cpu/merge.cpp).
void cpu_merge_states(const MergeProblem& m);
// CUDA (cuda/merge.cu; cuda_unavailable.cpp without CUDA): the device checks (before anything
// is written: DEVICE_UNAVAILABLE, INVALID_ARGUMENT for host pointers), then the merge.
void cuda_check_merge(const MergeProblem& m);
void cuda_merge_states(const MergeProblem& m);

}  // namespace gqa
