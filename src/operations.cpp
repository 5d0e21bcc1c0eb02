// operations.cpp: the work behind the attention entry points and the thread and device
// queries: validate the call, log it at DEBUG, run it on its backend.
#include "operations.hpp"

#include <string>

#include "backend.hpp"
#include "error.hpp"
#include "log.hpp"
#include "validate.hpp"
#include "validate_batch.hpp"

namespace gqa {

namespace {

void log_call(const char* function, const Problem& p) {
    GQA_LOG(GQA_LOG_DEBUG,
            "%s: backend=%s dtype=%s batch=%lld seq_len=%lld num_q_heads=%lld num_kv_heads=%lld "
            "head_dim=%lld group=%lld cache=%s max_seq_len=%lld start=%s%d causal=%d scale=%g",
            function, p.device == GQA_DEVICE_CUDA ? "cuda" : "cpu", dtype_name(p.dtype),
            static_cast<long long>(p.batch), static_cast<long long>(p.seq_len),
            static_cast<long long>(p.num_q_heads), static_cast<long long>(p.num_kv_heads),
            static_cast<long long>(p.head_dim), static_cast<long long>(p.group),
            p.has_cache ? "yes" : "no", static_cast<long long>(p.max_seq_len),
            p.start_positions ? "per-sequence, first=" : "", static_cast<int>(p.start_of(0)),
            p.causal ? 1 : 0, static_cast<double>(p.scale));
}

void run(const char* function, const Problem& p) {
    log_call(function, p);
    if (p.page_table) {
        GQA_LOG(GQA_LOG_DEBUG, "%s: total_q=%lld page_size=%lld num_pages=%lld max_pages_per_seq=%lld", function,
                static_cast<long long>(p.total_q()), static_cast<long long>(p.page_size),
                static_cast<long long>(p.num_pages), static_cast<long long>(p.max_pages_per_seq));
    }
    if (p.device == GQA_DEVICE_CUDA) {
        cuda_attention(p);
    } else {
        cpu_attention(p);
    }
}

}  // namespace

void attention_prefill(void* out, const void* q, const void* k, const void* v, void* k_cache,
                       void* v_cache, const gqa_prefill_config* config, void* stream) {
    run("gqa_attention_prefill", validate_prefill(out, q, k, v, k_cache, v_cache, config, stream));
}

void attention_decode(void* out, const void* q, const void* k, const void* v, void* k_cache,
                      void* v_cache, const gqa_decode_config* config, void* stream) {
    run("gqa_attention_decode", validate_decode(out, q, k, v, k_cache, v_cache, config, stream));
}

void attention_batch(void* out, const void* q, const void* k, const void* v, void* k_cache,
                     void* v_cache, const gqa_batch_config* config, void* stream) {
    run("gqa_attention_batch", validate_batch(out, q, k, v, k_cache, v_cache, config, stream));
}

void decode_workspace_size(const gqa_decode_config* config, uint64_t* bytes) {
    if (!bytes) fail(GQA_STATUS_INVALID_ARGUMENT, "bytes is NULL");
    const Problem p = validate_decode_shape(config);
    uint64_t needed = 0;
    if (p.device == GQA_DEVICE_CUDA) {
        require_cuda();
        needed = cuda_workspace_bytes(p);
    }
    *bytes = needed;
}

void batch_workspace_size(const gqa_batch_config* config, uint64_t* bytes) {
    if (!bytes) fail(GQA_STATUS_INVALID_ARGUMENT, "bytes is NULL");
    const Problem p = validate_batch_shape(config);
    uint64_t needed = 0;  // the CPU needs no workspace
    if (p.device == GQA_DEVICE_CUDA) {
        require_cuda();
        needed = cuda_workspace_bytes(p);
    }
    *bytes = needed;
}

void set_num_threads(int32_t num_threads) {
    if (num_threads < 0 || num_threads > kMaxThreads) {
        fail(GQA_STATUS_INVALID_ARGUMENT, "num_threads (%d) must be between 0 (automatic) and %d",
             num_threads, kMaxThreads);
    }
    cpu_set_num_threads(num_threads);
}

void require_cuda() {
    std::string why;
    if (!cuda_usable(&why)) fail(GQA_STATUS_DEVICE_UNAVAILABLE, "%s", why.c_str());
}

}  // namespace gqa
