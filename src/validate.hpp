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

// Checks shared with gqa_merge_states (merge.cpp).
DType require_dtype(int32_t dtype);
void require_device(int32_t device);
// Sink logits read on the CPU (host memory): NaN and +inf are INVALID_ARGUMENT, -inf is no sink.
void require_sink_values(const float* sinks, int64_t count, int32_t device);

// Checks the device-specific limits of a Problem whose fields are already valid.
void validate_backend(const Problem& p);

}  // namespace gqa
