// exports.cpp: every function libgqa.so exports, one for each line of abi/exports.txt and in
// its order. Each is a thin wrapper around an internal function; those that return a status
// run inside the firewall (api_firewall.hpp), so no exception crosses the C ABI.
#include "api_firewall.hpp"
#include "backend.hpp"
#include "config.hpp"
#include "error.hpp"
#include "gqa.h"
#include "log.hpp"
#include "merge.hpp"
#include "operations.hpp"
#include "version.hpp"

extern "C" {

GQA_API uint32_t gqa_abi_version(void) { return gqa::abi_version(); }

GQA_API gqa_status gqa_attention_batch(void* out, const void* q, const void* k, const void* v,
                                       void* k_cache, void* v_cache,
                                       const gqa_batch_config* config, void* stream) {
    GQA_API_BEGIN("gqa_attention_batch")
    gqa::attention_batch(out, q, k, v, k_cache, v_cache, config, stream);
    GQA_API_END()
}

GQA_API gqa_status gqa_attention_decode(void* out, const void* q, const void* k, const void* v,
                                        void* k_cache, void* v_cache,
                                        const gqa_decode_config* config, void* stream) {
    GQA_API_BEGIN("gqa_attention_decode")
    gqa::attention_decode(out, q, k, v, k_cache, v_cache, config, stream);
    GQA_API_END()
}

GQA_API gqa_status gqa_attention_prefill(void* out, const void* q, const void* k, const void* v,
                                         void* k_cache, void* v_cache,
                                         const gqa_prefill_config* config, void* stream) {
    GQA_API_BEGIN("gqa_attention_prefill")
    gqa::attention_prefill(out, q, k, v, k_cache, v_cache, config, stream);
    GQA_API_END()
}

GQA_API gqa_status gqa_batch_config_init_sized(gqa_batch_config* config, uint32_t struct_size) {
    GQA_API_BEGIN("gqa_batch_config_init_sized")
    gqa::init_config_sized(config, struct_size);
    GQA_API_END()
}

GQA_API gqa_status gqa_batch_workspace_size(const gqa_batch_config* config, uint64_t* bytes) {
    GQA_API_BEGIN("gqa_batch_workspace_size")
    gqa::batch_workspace_size(config, bytes);
    GQA_API_END()
}

GQA_API int32_t gqa_built_with_cuda(void) { return gqa::cuda_built() ? 1 : 0; }

GQA_API gqa_status gqa_cuda_available(void) {
    GQA_API_BEGIN("gqa_cuda_available")
    gqa::require_cuda();
    GQA_API_END()
}

GQA_API void gqa_decode_config_init(gqa_decode_config* config) { gqa::init_config(config); }

GQA_API gqa_status gqa_decode_config_init_sized(gqa_decode_config* config, uint32_t struct_size) {
    GQA_API_BEGIN("gqa_decode_config_init_sized")
    gqa::init_config_sized(config, struct_size);
    GQA_API_END()
}

GQA_API gqa_status gqa_decode_workspace_size(const gqa_decode_config* config, uint64_t* bytes) {
    GQA_API_BEGIN("gqa_decode_workspace_size")
    gqa::decode_workspace_size(config, bytes);
    GQA_API_END()
}

GQA_API int32_t gqa_get_log_level(void) { return gqa::log_level(); }

GQA_API int32_t gqa_get_num_threads(void) {
    try {
        return gqa::cpu_num_threads();
    } catch (...) {
        return 1;
    }
}

GQA_API const char* gqa_last_error(void) { return gqa::last_error(); }

GQA_API gqa_status gqa_merge_config_init_sized(gqa_merge_config* config, uint32_t struct_size) {
    GQA_API_BEGIN("gqa_merge_config_init_sized")
    gqa::init_config_sized(config, struct_size);
    GQA_API_END()
}

GQA_API gqa_status gqa_merge_states(void* out, float* lse_out, const void* states, const float* lses,
                                    const gqa_merge_config* config, void* stream) {
    GQA_API_BEGIN("gqa_merge_states")
    gqa::merge_states(out, lse_out, states, lses, config, stream);
    GQA_API_END()
}

GQA_API void gqa_prefill_config_init(gqa_prefill_config* config) { gqa::init_config(config); }

GQA_API gqa_status gqa_prefill_config_init_sized(gqa_prefill_config* config, uint32_t struct_size) {
    GQA_API_BEGIN("gqa_prefill_config_init_sized")
    gqa::init_config_sized(config, struct_size);
    GQA_API_END()
}

GQA_API gqa_status gqa_set_log_callback(gqa_log_callback callback, void* user_data) {
    GQA_API_BEGIN("gqa_set_log_callback")
    gqa::set_log_callback(callback, user_data);
    GQA_API_END()
}

GQA_API gqa_status gqa_set_log_level(int32_t level) {
    GQA_API_BEGIN("gqa_set_log_level")
    gqa::set_log_level(level);
    GQA_API_END()
}

GQA_API gqa_status gqa_set_num_threads(int32_t num_threads) {
    GQA_API_BEGIN("gqa_set_num_threads")
    gqa::set_num_threads(num_threads);
    GQA_API_END()
}

GQA_API const char* gqa_status_string(gqa_status status) { return gqa::status_string(status); }

GQA_API uint32_t gqa_version_number(void) { return gqa::version_number(); }

GQA_API const char* gqa_version_string(void) { return gqa::version_string(); }

}  // extern "C"
