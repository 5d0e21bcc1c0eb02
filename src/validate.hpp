// validate.hpp: turn a C call into a Problem, or throw gqa::Error before anything is written.
#pragma once

#include "gqa.h"
#include "problem.hpp"

namespace gqa {

Problem validate_prefill(void* out, const void* q, const void* k, const void* v, void* k_cache,
                         void* v_cache, const gqa_prefill_config* config, void* stream);
Problem validate_decode(void* out, const void* q, const void* k, const void* v, void* k_cache,
                        void* v_cache, const gqa_decode_config* config, void* stream);

// The pointer-free part of validate_decode (config header, dtype, device, shapes).
Problem validate_decode_shape(const gqa_decode_config* config);

// Checks shared with gqa_merge_states (merge.cpp) and gqa_attention_batch (validate_batch.cpp).
DType require_dtype(int32_t dtype);
void require_device(int32_t device);
void require_positive(const char* name, int32_t value);
// num_q_heads, num_kv_heads, head_dim: positive, the group divides, head_dim within the limit.
void require_heads(int32_t num_q_heads, int32_t num_kv_heads, int32_t head_dim);
// The scale to use: `scale`, or 1/sqrt(head_dim) for 0; rejects non-finite and negative values.
float resolve_scale(float scale, int32_t head_dim);
void require_pointer(const char* name, const void* ptr);
// Bytes of a tensor [d0, d1, d2, d3] of elem_bytes each; fails if the size overflows int64.
int64_t tensor_bytes(const char* name, int64_t d0, int64_t d1, int64_t d2, int64_t d3, int64_t elem_bytes);
// -1 (unbounded) or a key count >= 0.
void require_window(const char* name, int32_t value);
// Sink logits read on the CPU (host memory): NaN and +inf are INVALID_ARGUMENT, -inf is no sink.
void require_sink_values(const float* sinks, int64_t count, int32_t device);

// Checks the device-specific limits of a Problem whose fields are already valid.
void validate_backend(const Problem& p);

}  // namespace gqa
