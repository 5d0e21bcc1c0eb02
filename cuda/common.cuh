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

// One attention call as the kernels see it (prefill and decode share it).
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
    // Decode split-KV: partial results in the caller's workspace when num_splits > 1.
    int32_t num_splits;
    float* partial_o;    // [batch][num_q_heads][num_splits][head_dim], unnormalised
    float2* partial_ml;  // [batch][num_q_heads][num_splits] = (running max, running sum)
    BatchChunk chunk;
};

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

// Where key/value row `pos` of sequence b (kv head kvh) lives. Rows before `start` are the
// cached prefix; rows from `start` on are this call's new tokens, read from k and v directly.
// So the attention kernels never read a cache row that this call writes, and the cache write
// can run in any order relative to them.
template <typename T, int D>
__device__ __forceinline__ int64_t kv_row_offset(const AttnParams& p, int64_t b, int64_t kvh,
                                                 int64_t pos, int64_t start, bool* from_cache) {
    *from_cache = pos < start;
    if (pos < start) return ((b * p.max_seq_len + pos) * p.num_kv_heads + kvh) * int64_t(D);
    return ((b * p.seq_len + (pos - start)) * p.num_kv_heads + kvh) * int64_t(D);
}

}  // namespace gpu
}  // namespace gqa
