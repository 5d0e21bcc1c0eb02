// api.cpp: the exported entry points. Each one runs inside GQA_API_BEGIN / GQA_API_END, the
// firewall that turns any exception into a status + gqa_last_error(): nothing crosses the ABI.
#include <cstring>
#include <new>
#include <string>

#include "backend.hpp"
#include "config.hpp"
#include "error.hpp"
#include "gqa.h"
#include "log.hpp"
#include "validate.hpp"
#include "api_firewall.hpp"

namespace {


void log_call(const char* function, const gqa::Problem& p) {
    GQA_LOG(GQA_LOG_DEBUG,
            "%s: backend=%s dtype=%s batch=%lld seq_len=%lld num_q_heads=%lld num_kv_heads=%lld "
            "head_dim=%lld group=%lld cache=%s max_seq_len=%lld start=%s%d causal=%d scale=%g",
            function, p.device == GQA_DEVICE_CUDA ? "cuda" : "cpu", gqa::dtype_name(p.dtype),
            static_cast<long long>(p.batch), static_cast<long long>(p.seq_len),
            static_cast<long long>(p.num_q_heads), static_cast<long long>(p.num_kv_heads),
            static_cast<long long>(p.head_dim), static_cast<long long>(p.group),
            p.has_cache ? "yes" : "no", static_cast<long long>(p.max_seq_len),
            p.start_positions ? "per-sequence, first=" : "", static_cast<int>(p.start_of(0)),
            p.causal ? 1 : 0, static_cast<double>(p.scale));
}

void run(const char* function, const gqa::Problem& p) {
    log_call(function, p);
    if (p.device == GQA_DEVICE_CUDA) {
        gqa::cuda_attention(p);
    } else {
        gqa::cpu_attention(p);
    }
}

}  // namespace


extern "C" {

GQA_API void gqa_prefill_config_init(gqa_prefill_config* config) { gqa::init_config(config); }

GQA_API void gqa_decode_config_init(gqa_decode_config* config) { gqa::init_config(config); }

GQA_API gqa_status gqa_attention_prefill(void* out, const void* q, const void* k, const void* v,
                                         void* k_cache, void* v_cache,
                                         const gqa_prefill_config* config, void* stream) {
    GQA_API_BEGIN("gqa_attention_prefill")
    gqa::Problem p = gqa::validate_prefill(out, q, k, v, k_cache, v_cache, config, stream);
    run(gqa_function_, p);
    GQA_API_END()
}

GQA_API gqa_status gqa_attention_decode(void* out, const void* q, const void* k, const void* v,
                                        void* k_cache, void* v_cache,
                                        const gqa_decode_config* config, void* stream) {
    GQA_API_BEGIN("gqa_attention_decode")
    gqa::Problem p = gqa::validate_decode(out, q, k, v, k_cache, v_cache, config, stream);
    run(gqa_function_, p);
    GQA_API_END()
}

GQA_API gqa_status gqa_decode_workspace_size(const gqa_decode_config* config, uint64_t* bytes) {
    GQA_API_BEGIN("gqa_decode_workspace_size")
    if (!bytes) gqa::fail(GQA_STATUS_INVALID_ARGUMENT, "bytes is NULL");
    gqa::Problem p = gqa::validate_decode_shape(config);
    uint64_t needed = 0;
    if (p.device == GQA_DEVICE_CUDA) {
        std::string why;
        if (!gqa::cuda_usable(&why)) gqa::fail(GQA_STATUS_DEVICE_UNAVAILABLE, "%s", why.c_str());
        needed = gqa::cuda_decode_workspace_bytes(p);
    }
    *bytes = needed;  // written only on success, like every output of libgqa
    GQA_API_END()
}

GQA_API gqa_status gqa_set_num_threads(int32_t num_threads) {
    GQA_API_BEGIN("gqa_set_num_threads")
    if (num_threads < 0 || num_threads > 1024) {
        gqa::fail(GQA_STATUS_INVALID_ARGUMENT, "num_threads (%d) must be between 0 (automatic) and 1024",
                  num_threads);
    }
    gqa::cpu_set_num_threads(num_threads);
    GQA_API_END()
}

GQA_API int32_t gqa_get_num_threads(void) {
    try {
        return gqa::cpu_num_threads();
    } catch (...) {
        return 1;
    }
}

GQA_API gqa_status gqa_cuda_available(void) {
    GQA_API_BEGIN("gqa_cuda_available")
    std::string why;
    if (!gqa::cuda_usable(&why)) gqa::fail(GQA_STATUS_DEVICE_UNAVAILABLE, "%s", why.c_str());
    GQA_API_END()
}

GQA_API int32_t gqa_built_with_cuda(void) { return gqa::cuda_built() ? 1 : 0; }

}  // extern "C"
