// problem.hpp: one validated attention call, as the backends see it.
//
// Prefill and decode are the same operation: decode is a causal prefill of one token per
// sequence whose start position is that sequence's cache_len. The API layer (api.cpp) fills a
// Problem only after validate.cpp has accepted every field, so backends trust it.
#pragma once

#include <cstdint>

#include "gqa.h"

namespace gqa {

enum class DType : int32_t { F16 = GQA_DTYPE_F16, BF16 = GQA_DTYPE_BF16, F32 = GQA_DTYPE_F32 };
enum class Kind { Prefill, Decode };

inline int64_t dtype_bytes(DType t) { return t == DType::F32 ? 4 : 2; }
inline const char* dtype_name(DType t) {
    return t == DType::F16 ? "f16" : t == DType::BF16 ? "bf16" : "f32";
}

struct Problem {
    Kind kind = Kind::Prefill;
    DType dtype = DType::F16;
    int32_t device = GQA_DEVICE_CPU;

    int64_t batch = 0;
    int64_t seq_len = 0;       // new tokens per sequence (1 for decode)
    int64_t num_q_heads = 0;
    int64_t num_kv_heads = 0;
    int64_t head_dim = 0;
    int64_t group = 0;         // num_q_heads / num_kv_heads
    int64_t max_seq_len = 0;   // cache capacity; 0 when has_cache is false
    bool has_cache = false;
    bool causal = true;
    float scale = 0.0f;        // resolved: never 0

    // Cache position of sequence b's first new token: start_positions[b] when given (host
    // memory, decode's cache_lens), else start_pos. 0 when there is no cache.
    int32_t start_pos = 0;
    const int32_t* start_positions = nullptr;

    // Decode split-KV request and CUDA workspace (see gqa_decode_config).
    int32_t num_splits = 0;
    void* workspace = nullptr;
    uint64_t workspace_bytes = 0;

    void* out = nullptr;
    const void* q = nullptr;
    const void* k = nullptr;
    const void* v = nullptr;
    void* k_cache = nullptr;
    void* v_cache = nullptr;
    void* stream = nullptr;

    int64_t start_of(int64_t b) const { return start_positions ? start_positions[b] : start_pos; }
    // Keys visible to sequence b: the cached prefix plus its new tokens.
    int64_t kv_len_of(int64_t b) const { return (has_cache ? start_of(b) : 0) + seq_len; }
};

}  // namespace gqa
