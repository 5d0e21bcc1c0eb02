// validate_batch.hpp: turn a gqa_attention_batch call into a Problem, or throw gqa::Error
// before anything is written.
#pragma once

#include "gqa.h"
#include "problem.hpp"

namespace gqa {

Problem validate_batch(void* out, const void* q, const void* k, const void* v, void* k_cache, void* v_cache,
                       const gqa_batch_config* config, void* stream);

// The shape part only (no pointer, no metadata read): gqa_batch_workspace_size.
Problem validate_batch_shape(const gqa_batch_config* config);

}  // namespace gqa
