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

#include <cstdint>
#include <cstring>

namespace gqa {
namespace gpu {

constexpr int kVec = 8;  // elements per 16-byte vector

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
// backend.cu fills them for today's contiguous layouts; strided q/k/v/out (issue 15) change
// only what the host writes here, not the kernels.
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
    int64_t cache_token, new_token;  // element strides between positions
    int64_t start;
    __device__ KvRow<T> row(int64_t pos) const {
        if (pos < start) return {k_cache + pos * cache_token, v_cache + pos * cache_token};
        return {k_new + (pos - start) * new_token, v_new + (pos - start) * new_token};
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
    float scale_log2;  // scale * log2(e): the softmax runs in base 2 (exp2f)
    RowStrides q_rows, out_rows;  // [batch][seq_len][num_q_heads][head_dim]
    RowStrides new_kv_rows;       // k and v: [batch][seq_len][num_kv_heads][head_dim]
    RowStrides cache_rows;        // k_cache and v_cache: [batch][max_seq_len][num_kv_heads][head_dim]
    // Decode split-KV: partial results in the caller's workspace when num_splits > 1.
    int32_t num_splits;
    float* partial_o;    // [batch][num_q_heads][num_splits][head_dim], unnormalised
    float2* partial_ml;  // [batch][num_q_heads][num_splits] = (running max, running sum)
    BatchChunk chunk;

    // Element offsets of the head_dim row of (sequence b, new token t, head h).
    __host__ __device__ int64_t q_row(int64_t b, int64_t t, int64_t qh) const { return q_rows.row(b, t, qh); }
    __host__ __device__ int64_t out_row(int64_t b, int64_t t, int64_t qh) const { return out_rows.row(b, t, qh); }
    __host__ __device__ int64_t new_kv_row(int64_t b, int64_t t, int64_t kvh) const {
        return new_kv_rows.row(b, t, kvh);
    }
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
};

template <typename T>
__device__ KvSource<T> AttnParams::kv_source(int64_t b, int64_t kvh, int64_t start) const {
    const int64_t cached = cache_row(b, 0, kvh), fresh = new_kv_row(b, 0, kvh);
    return {static_cast<const T*>(k_cache) + cached, static_cast<const T*>(v_cache) + cached,
            static_cast<const T*>(k) + fresh, static_cast<const T*>(v) + fresh,
            cache_rows.token, new_kv_rows.token, start};
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
