// problem.hpp: one validated attention call, as the backends see it.
//
// Prefill, decode and the batched op are one operation: sequence b has q_len(b) new tokens
// (rows q_begin(b) .. of q, k, v, out) and start_of(b) tokens already cached; decode is one
// new token per sequence, prefill the same q_len for all. The cache is paged: position t of
// sequence b is in page pages_of(b)[t / page_size], slot t % page_size (the CPU kernels address
// rows with cpu::key_offset). The dense [batch, max_seq_len] cache of prefill and decode is one
// page of max_seq_len tokens per sequence (page_table nullptr: page b). validate.cpp (and,
// for the batched op, validate_batch.cpp) returns a Problem only after it accepted every
// field (page ids included), so backends trust it.
#pragma once

#include <cstdint>

#include "gqa.h"

namespace gqa {

// The limits of the API, in one place: validate.cpp and gqa_set_num_threads() check them, and
// the backends size their buffers and grids by them.
constexpr int32_t kMaxHeadDim = 512;  // the CPU takes every head_dim 1..512; CUDA: its kernels' list
constexpr int32_t kMaxSplits = 256;   // gqa_decode_config.num_splits
constexpr int32_t kMaxThreads = 1024; // gqa_set_num_threads() and GQA_NUM_THREADS

enum class DType : int32_t { F16 = GQA_DTYPE_F16, BF16 = GQA_DTYPE_BF16, F32 = GQA_DTYPE_F32 };
enum class Kind { Prefill, Decode, Batch };

inline int64_t dtype_bytes(DType t) { return t == DType::F32 ? 4 : 2; }
inline const char* dtype_name(DType t) {
    return t == DType::F16 ? "f16" : t == DType::BF16 ? "bf16" : "f32";
}

// Element strides of one BSHD tensor, resolved (never 0: validate.cpp fills the contiguous
// values in). head_dim is contiguous.
struct Strides {
    int64_t batch = 0;
    int64_t token = 0;
    int64_t head = 0;
    int64_t of(int64_t b, int64_t t, int64_t h) const { return b * batch + t * token + h * head; }
};

struct Problem {
    Kind kind = Kind::Prefill;
    DType dtype = DType::F16;
    int32_t device = GQA_DEVICE_CPU;

    int64_t batch = 0;
    int64_t seq_len = 0;       // new tokens per sequence (1 for decode); batched op: max q_len
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

    // Batched op: sequence b's new tokens are rows q_indptr[b] .. q_indptr[b + 1] - 1 of q, k,
    // v and out (host memory). nullptr: rows b * seq_len .. (prefill, decode).
    const int32_t* q_indptr = nullptr;
    // Paged cache: page_table[b * max_pages_per_seq + t / page_size] holds position t of
    // sequence b (host memory). nullptr: page b (the dense cache, page_size = max_seq_len).
    const int32_t* page_table = nullptr;
    int64_t page_size = 0;
    int64_t num_pages = 0;
    int64_t max_pages_per_seq = 0;

    // The batched op on CUDA: its metadata is device memory, read by the kernels only (a CUDA
    // graph replays with whatever the buffers hold). The host-memory fields above (q_indptr,
    // start_positions, page_table) stay nullptr then, so no host code can read it by mistake.
    struct DeviceBatch {
        const int32_t* q_indptr = nullptr;
        const int32_t* kv_lens = nullptr;
        const int32_t* page_table = nullptr;
        int32_t* error_flags = nullptr;  // optional
        int64_t total_q = 0;
    } device_batch;

    // Decode split-KV request and CUDA workspace (see gqa_decode_config).
    int32_t num_splits = 0;
    void* workspace = nullptr;
    uint64_t workspace_bytes = 0;

    // The variants (gqa.h); the defaults are the 0.1 behaviour. window_*: -1 = unbounded.
    int32_t window_left = -1;
    int32_t window_right = -1;
    float softcap = 0.0f;          // 0: off
    const float* sinks = nullptr;  // [num_q_heads], call's device
    float* lse = nullptr;          // prefill [batch, num_q_heads, seq_len]; decode [batch, num_q_heads]
    Strides q_strides, k_strides, v_strides, out_strides;

    void* out = nullptr;
    const void* q = nullptr;
    const void* k = nullptr;
    const void* v = nullptr;
    void* k_cache = nullptr;
    void* v_cache = nullptr;
    void* stream = nullptr;

    int64_t start_of(int64_t b) const { return start_positions ? start_positions[b] : start_pos; }
    int64_t q_begin(int64_t b) const { return q_indptr ? q_indptr[b] : b * seq_len; }
    int64_t q_len(int64_t b) const { return q_indptr ? q_indptr[b + 1] - q_indptr[b] : seq_len; }
    int64_t total_q() const { return q_begin(batch); }
    // Keys visible to sequence b: the cached prefix plus its new tokens.
    int64_t kv_len_of(int64_t b) const { return (has_cache ? start_of(b) : 0) + q_len(b); }
    // Sequence b's page ids, one per page_size positions (nullptr: the dense cache).
    const int32_t* pages_of(int64_t b) const { return page_table ? page_table + b * max_pages_per_seq : nullptr; }
    // Element offset of head `head` of new-token row i of sequence b in q, k, v or out (its
    // strides s): the batched op's rows are global (q_begin(b) + i), the others per sequence.
    int64_t row_offset(const Strides& s, int64_t b, int64_t i, int64_t head) const {
        return q_indptr ? (q_begin(b) + i) * s.token + head * s.head : b * s.batch + i * s.token + head * s.head;
    }
    // lse index of that row and query head: [batch, num_q_heads, seq_len] (decode: seq_len 1),
    // batched op [num_q_heads, total_q].
    int64_t lse_offset(int64_t b, int64_t i, int64_t head) const {
        return q_indptr ? head * total_q() + q_begin(b) + i : (b * num_q_heads + head) * seq_len + i;
    }
    int64_t lse_head_stride() const { return q_indptr ? total_q() : seq_len; }
    // Absolute position of new-token row i of sequence b.
    int64_t position_of(int64_t b, int64_t i) const { return (has_cache ? start_of(b) : 0) + i; }
    // Keys the query at absolute position `pos` of sequence b sees: [first_key, end_key).
    int64_t first_key(int64_t pos) const { return window_left < 0 ? 0 : (pos > window_left ? pos - window_left : 0); }
    int64_t end_key(int64_t b, int64_t pos) const {
        int64_t end = kv_len_of(b);
        if (causal && pos + 1 < end) end = pos + 1;
        if (window_right >= 0 && pos + window_right + 1 < end) end = pos + window_right + 1;
        return end;
    }
};

}  // namespace gqa
