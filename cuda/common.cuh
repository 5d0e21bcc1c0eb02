// common.cuh: storage types, 16-byte vector packing and the launch parameters shared by the
// CUDA kernels of libgqa.
//
// Every K, V, Q and prefill-output access moves 16 bytes (8 two-byte elements); supported head
// dims are multiples of 8 and every tensor is 16-byte aligned (checked in backend.cu), so each
// row starts on a 16-byte boundary. All offsets are int64 (widened before multiplying).
#pragma once

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <cmath>
#include <cstdint>
#include <cstring>

namespace gqa {
namespace gpu {

constexpr int kVec = 8;  // elements per 16-byte vector
constexpr float kLog2e = 1.4426950408889634f;  // the softmax runs in base 2
constexpr float kLn2 = 0.6931471805599453f;

// Sequences per launch. The per-sequence start positions (decode's cache_lens live in HOST
// memory) travel by value inside the kernel parameters, so a call needs neither an allocation
// nor a host-to-device copy and stays CUDA-graph capturable; larger batches take one launch per
// chunk of kMaxSeqsPerLaunch sequences. 256 int32 keep the parameter block near 1.1 KB, far
// below the 4 KB kernel-parameter limit every supported driver accepts.
constexpr int kMaxSeqsPerLaunch = 256;

// Query heads of one KV head that one decode block serves from each K/V tile it loads.
constexpr int kDecodeHeadsPerBlock = 8;

struct BatchChunk {
    int32_t first;  // global index of the chunk's first sequence
    int32_t count;  // sequences in this chunk (gridDim.z)
    int32_t start[kMaxSeqsPerLaunch];  // cache position of each sequence's first new token
};

// Element strides of a [batch][token][head][head_dim] tensor whose head_dim is contiguous.
// backend.cu fills them from the call's strides (the contiguous ones by default); each is a
// multiple of kVec, so that every row starts on a 16-byte boundary (cuda_check_supported).
struct RowStrides {
    int64_t batch, token, head;
    __host__ __device__ int64_t row(int64_t b, int64_t t, int64_t h) const {
        return b * batch + t * token + h * head;
    }
};

// A key/value row of one (sequence, KV head): where its K and V elements start.
template <typename T>
struct KvRow {
    const T* k;
    const T* v;
};

// The key/value rows of one (sequence, KV head), by absolute position `pos`: rows before `start`
// are the cached prefix; rows from `start` on are this call's new tokens, read from k and v
// directly. So the attention kernels never read a cache row that this call writes, and the
// cache write can run in any order relative to them. Built once per block (the bases are loop
// invariants); a paged cache's page-table lookup goes into row().
template <typename T>
struct KvSource {
    const T* k_cache;  // position 0 of this sequence and KV head
    const T* v_cache;
    const T* k_new;    // new token 0
    const T* v_new;
    int64_t cache_token, k_token, v_token;  // element strides between positions
    int64_t start;
    __device__ KvRow<T> row(int64_t pos) const {
        if (pos < start) return {k_cache + pos * cache_token, v_cache + pos * cache_token};
        return {k_new + (pos - start) * k_token, v_new + (pos - start) * v_token};
    }
};

// One attention call as the kernels see it (prefill and decode share it). Kernels address
// tensors through the accessors below only, so a new layout (strides, a paged cache's page
// table) is a change in one place.
struct AttnParams {
    void* out;
    const void* q;
    const void* k;
    const void* v;
    void* k_cache;  // nullptr without caches
    void* v_cache;
    int64_t seq_len;  // new tokens per sequence (1 for decode)
    int64_t num_q_heads;
    int64_t num_kv_heads;
    int64_t group;  // num_q_heads / num_kv_heads
    int64_t head_dim;
    int64_t max_seq_len;
    int32_t has_cache;
    int32_t causal;
    // The logits (logit()): the softmax runs in base 2 (exp2f), so every logit is scaled by log2(e).
    float scale_log2;      // scale * log2(e)
    float softcap;         // > 0: s = scale * q.k becomes softcap * tanh(s / softcap); 0: off
    float scale_over_cap;  // scale / softcap
    // Sliding window (gqa.h): the query at absolute position i sees keys i - window_left ..
    // i + window_right; -1 = unbounded on that side (key_begin, key_end).
    int32_t window_left, window_right;
    const float* sinks;  // [num_q_heads] natural-log logits joining the denominator only; nullptr: none
    float* lse;          // [batch][num_q_heads][seq_len] natural log of each row's denominator; nullptr: none
    RowStrides q_rows, out_rows;  // [batch][seq_len][num_q_heads][head_dim]
    RowStrides k_rows, v_rows;    // the new k and v: [batch][seq_len][num_kv_heads][head_dim]
    RowStrides cache_rows;        // k_cache and v_cache: [batch][max_seq_len][num_kv_heads][head_dim]
    // Decode split-KV: partial results in the caller's workspace when num_splits > 1.
    int32_t num_splits;
    float* partial_o;    // [batch][num_q_heads][num_splits][head_dim], unnormalised
    float2* partial_ml;  // [batch][num_q_heads][num_splits] = (running max, running sum)
    BatchChunk chunk;

    // Element offsets of the head_dim row of (sequence b, new token t, head h).
    __host__ __device__ int64_t q_row(int64_t b, int64_t t, int64_t qh) const { return q_rows.row(b, t, qh); }
    __host__ __device__ int64_t out_row(int64_t b, int64_t t, int64_t qh) const { return out_rows.row(b, t, qh); }
    __host__ __device__ int64_t new_k_row(int64_t b, int64_t t, int64_t kvh) const { return k_rows.row(b, t, kvh); }
    __host__ __device__ int64_t new_v_row(int64_t b, int64_t t, int64_t kvh) const { return v_rows.row(b, t, kvh); }
    // Cache position pos of sequence b (a paged cache's page-table lookup goes here).
    __host__ __device__ int64_t cache_row(int64_t b, int64_t pos, int64_t kvh) const {
        return cache_rows.row(b, pos, kvh);
    }

    // Where the key/value rows of sequence b, KV head kvh are read from (below).
    template <typename T>
    __device__ KvSource<T> kv_source(int64_t b, int64_t kvh, int64_t start) const;

    // Decode split-KV: the partial of (sequence b, query head qh, split s).
    __host__ __device__ int64_t partial_entry(int64_t b, int64_t qh, int64_t split) const {
        return (b * num_q_heads + qh) * num_splits + split;
    }

    // The keys the query at absolute position pos sees among kv_len: [key_begin, key_end), the
    // window capped by causality and by what exists (Problem::first_key / end_key on the host).
    // Both grow with pos, so a block of consecutive queries sees [key_begin(first), key_end(last)).
    __host__ __device__ int64_t key_begin(int64_t pos) const {
        return window_left < 0 || pos <= window_left ? 0 : pos - window_left;
    }
    __host__ __device__ int64_t key_end(int64_t pos, int64_t kv_len) const {
        int64_t end = kv_len;
        if (causal && pos + 1 < end) end = pos + 1;
        if (window_right >= 0 && pos + window_right + 1 < end) end = pos + window_right + 1;
        return end;
    }

    // A raw score q.k as the base-2 logit of the softmax: scale, then softcap. The products are
    // rounded (__fmul_rn, never contracted into an FMA with the softmax's "- max"): then the
    // largest logit minus the row max is exactly 0 at any magnitude; an FMA would keep the
    // product's unrounded residual, ~ulp(logit), and exp2 of that is 0 or inf once logits pass
    // ~1e9 (scales up to the validated bound reach FLT_MAX / 2).
    __device__ float logit(float raw) const {
        if (softcap == 0.0f) return __fmul_rn(raw, scale_log2);
        return __fmul_rn(__fmul_rn(softcap, tanhf(raw * scale_over_cap)), kLog2e);
    }
    // logit() of every element of an mma accumulator fragment, softcap tested once: the two
    // loops keep the tanhf temporaries out of the plain path's registers.
    template <int N>
    __device__ void logits(float (&s)[N][4]) const {
        if (softcap == 0.0f) {
#pragma unroll
            for (int i = 0; i < N; ++i)
#pragma unroll
                for (int e = 0; e < 4; ++e) s[i][e] = __fmul_rn(s[i][e], scale_log2);
        } else {
#pragma unroll
            for (int i = 0; i < N; ++i)
#pragma unroll
                for (int e = 0; e < 4; ++e) s[i][e] = __fmul_rn(__fmul_rn(softcap, tanhf(s[i][e] * scale_over_cap)), kLog2e);
        }
    }

    // Query head qh's sink as a base-2 logit (-inf: none). A row's softmax state starts at it
    // (RowState::start) wherever the row's result is final: the attention kernel without
    // split-KV, else combine_kernel; so it joins the denominator exactly once.
    __device__ float sink_log2(int64_t qh) const { return sinks ? __fmul_rn(sinks[qh], kLog2e) : -INFINITY; }
    // The lse entry of (sequence b, new token t, query head qh).
    __host__ __device__ int64_t lse_entry(int64_t b, int64_t t, int64_t qh) const {
        return (b * num_q_heads + qh) * seq_len + t;
    }
};

// The online softmax state of one row in base 2: running max m and sum l of exp2(logit - m).
// The row's finish: out = acc * inv_sum(), lse = natural_lse().
struct RowState {
    float m, l;
    // Before any key: empty, or the sink (base 2; -inf means none) with weight 1.
    static __device__ RowState start(float sink2) { return sink2 == -INFINITY ? RowState{-INFINITY, 0.0f} : RowState{sink2, 1.0f}; }
    // A row that saw nothing and has no sink (l = 0) gives out 0 and lse -inf.
    __device__ float inv_sum() const { return l > 0.0f ? 1.0f / l : 0.0f; }
    __device__ float natural_lse() const { return l > 0.0f ? (m + log2f(l)) * kLn2 : -INFINITY; }
};

template <typename T>
__device__ KvSource<T> AttnParams::kv_source(int64_t b, int64_t kvh, int64_t start) const {
    const int64_t cached = cache_row(b, 0, kvh);
    return {static_cast<const T*>(k_cache) + cached, static_cast<const T*>(v_cache) + cached,
            static_cast<const T*>(k) + new_k_row(b, 0, kvh), static_cast<const T*>(v) + new_v_row(b, 0, kvh),
            cache_rows.token, k_rows.token, v_rows.token, start};
}

// Bytes of workspace a decode with `splits` partitions needs.
inline uint64_t decode_partial_bytes(int64_t batch, int64_t num_q_heads, int64_t head_dim,
                                     int64_t splits) {
    const int64_t entries = batch * num_q_heads * splits;
    return uint64_t(entries) * uint64_t(head_dim) * sizeof(float) +
           uint64_t(entries) * sizeof(float2);
}

template <typename T>
struct Storage;

template <>
struct Storage<__half> {
    using Pair = __half2;
    static __device__ __forceinline__ float2 to_float2(Pair x) { return __half22float2(x); }
    static __device__ __forceinline__ Pair from_floats(float a, float b) {
        return __floats2half2_rn(a, b);
    }
};

template <>
struct Storage<__nv_bfloat16> {
    using Pair = __nv_bfloat162;
    static __device__ __forceinline__ float2 to_float2(Pair x) { return __bfloat1622float2(x); }
    static __device__ __forceinline__ Pair from_floats(float a, float b) {
        return __floats2bfloat162_rn(a, b);
    }
};

// 16 bytes of storage -> 8 floats.
// (memcpy, not a pointer cast, moves the bits: well-defined C++, and free after optimisation.)
template <typename T>
__device__ __forceinline__ void unpack8(const uint4& raw, float (&f)[kVec]) {
    using Pair = typename Storage<T>::Pair;
    Pair pairs[kVec / 2];
    memcpy(pairs, &raw, sizeof(pairs));
#pragma unroll
    for (int i = 0; i < kVec / 2; ++i) {
        const float2 x = Storage<T>::to_float2(pairs[i]);
        f[2 * i] = x.x;
        f[2 * i + 1] = x.y;
    }
}

// 8 floats -> 16 bytes of storage (round to nearest even).
template <typename T>
__device__ __forceinline__ uint4 pack8(const float (&f)[kVec]) {
    using Pair = typename Storage<T>::Pair;
    Pair pairs[kVec / 2];
#pragma unroll
    for (int i = 0; i < kVec / 2; ++i) pairs[i] = Storage<T>::from_floats(f[2 * i], f[2 * i + 1]);
    uint4 raw;
    memcpy(&raw, pairs, sizeof(raw));
    return raw;
}

__device__ __forceinline__ uint4 load16(const void* p) { return *reinterpret_cast<const uint4*>(p); }
__device__ __forceinline__ void store16(void* p, const uint4& x) { *reinterpret_cast<uint4*>(p) = x; }

__device__ __forceinline__ float warp_max(float x) {
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) x = fmaxf(x, __shfl_xor_sync(0xffffffffu, x, o));
    return x;
}
__device__ __forceinline__ float warp_sum(float x) {
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) x += __shfl_xor_sync(0xffffffffu, x, o);
    return x;
}

}  // namespace gpu
}  // namespace gqa
