// operations.hpp: what the entry points of exports.cpp do, as internal functions that report
// failure by throwing gqa::Error (the firewall in exports.cpp turns it into a status).
#pragma once

#include <cstdint>

#include "gqa.h"

namespace gqa {

// Validate, log at DEBUG, run on the config's backend.
void attention_prefill(void* out, const void* q, const void* k, const void* v, void* k_cache,
                       void* v_cache, const gqa_prefill_config* config, void* stream);
void attention_decode(void* out, const void* q, const void* k, const void* v, void* k_cache,
                      void* v_cache, const gqa_decode_config* config, void* stream);
void attention_batch(void* out, const void* q, const void* k, const void* v, void* k_cache,
                     void* v_cache, const gqa_batch_config* config, void* stream);
// *bytes is written only on success, like every output of libgqa.
void decode_workspace_size(const gqa_decode_config* config, uint64_t* bytes);
void batch_workspace_size(const gqa_batch_config* config, uint64_t* bytes);

void set_num_threads(int32_t num_threads);
// DEVICE_UNAVAILABLE, saying why, unless a CUDA device is usable.
void require_cuda();

}  // namespace gqa
