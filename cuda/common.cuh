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

#include "gqa.h"  // GQA_BATCH_FLAG_*

namespace gqa {
namespace gpu {

constexpr int kVec = 8;  // elements per 16-byte vector
constexpr float kLog2e = 1.4426950408889634f;  // the softmax runs in base 2
constexpr float kLn2 = 0.6931471805599453f;

// Sequences per launch of prefill and decode. Their per-sequence start positions (decode's
// cache_lens live in HOST memory) travel by value inside the kernel parameters, so a call needs
// neither an allocation nor a host-to-device copy and stays CUDA-graph capturable; larger
// batches take one launch per chunk of kMaxSeqsPerLaunch sequences. 256 int32 keep the parameter
// block near 1.2 KB, far below the 4 KB kernel-parameter limit every supported driver accepts.
// The batched op reads its lengths from device memory instead, so its chunks are as large as
// the grid allows (kMaxBatchSeqsPerLaunch, gridDim.z).
constexpr int kMaxSeqsPerLaunch = 256;
constexpr int kMaxBatchSeqsPerLaunch = 65535;

// Query heads of one KV head that one decode block serves from each K/V tile it loads.
constexpr int kDecodeHeadsPerBlock = 8;

// The batched op runs a sequence with 1 <= q_len <= kDecodeMaxQLen new tokens (decode,
// speculative verification) on the decode kernels, whose blocks share each K/V tile among all
// (token, query head) rows of one KV head; longer ones on the prefill kernels.
constexpr int kDecodeMaxQLen = 8;

// Split-KV: a partition keeps at least this many keys (two key tiles); shorter ones cost more
// than they gain.
constexpr int64_t kMinKeysPerSplit = 64;

struct BatchChunk {
    int32_t first;  // global index of the chunk's first sequence
    int32_t count;  // sequences in this chunk (gridDim.z)
    int32_t start[kMaxSeqsPerLaunch];  // prefill, decode: cache position of each sequence's first new token
};

// Division by a divisor fixed for a call (the page size, the group size) as one 32 x 32 -> 64
// bit multiply and a shift (Granlund & Montgomery 1994, theorem 4.2, with N = 31): exact for
// every dividend in [0, 2^31) and divisor in [1, 2^31). The host computes the constants.
struct FastDiv {
    uint32_t divisor, multiplier, shift;
    static FastDiv of(uint32_t d) {
        uint32_t l = 0;  // ceil(log2(d))
        while ((uint64_t(1) << l) < d) ++l;
        const uint64_t m = ((uint64_t(1) << (31 + l)) + d - 1) / d;  // < 2^32 for d <= 2^31
        return FastDiv{d, uint32_t(m), 31 + l};
    }
    __host__ __device__ uint32_t div(uint32_t n) const { return uint32_t((uint64_t(n) * multiplier) >> shift); }
};

// Element strides of a [batch][token][head][head_dim] tensor whose head_dim is contiguous.
// backend.cu fills them from the call's strides (the contiguous ones by default); each is a
// multiple of kVec, so that every row starts on a 16-byte boundary (cuda_check_supported).
// The batched op's rows are ragged: batch is 0 there and a sequence's rows start at its
// Sequence::first_row. A paged cache's "batch" is the page.
struct RowStrides {
    int64_t batch, token, head;
    __host__ __device__ int64_t row(int64_t b, int64_t t, int64_t h) const {
        return b * batch + t * token + h * head;
    }
};

// One sequence of a call as a block sees it (AttnParams::sequence).
// Every field is an int32 value of the config or the metadata (int32 keeps the kernels' register
// counts down; offsets are widened where they are formed).
struct Sequence {
    int32_t b;          // its index in the call
    int32_t first_row;  // batched op: its first row of q, k, v and out (q_indptr[b]); else 0
    int32_t q_len;      // new tokens (0 when not run)
    int32_t start;      // tokens already cached: the position of new token 0
    const int32_t* pages;  // batched op: its row of the page table; else nullptr (the dense cache)
    bool run;           // false: nothing to do (q_len 0, or metadata out of range: skipped and flagged)
};

// A key/value row of one (sequence, KV head): where its K and V elements start.
template <typename T>
struct KvRow {
    const T* k;
    const T* v;
};

struct AttnParams;

// The key/value rows of one (sequence, KV head), by absolute position `pos`: rows before
// seq.start are the cached prefix (through the page table when there is one); rows from
// seq.start on are this call's new tokens, read from k and v directly. So the attention kernels
// never read a cache row that this call writes, and the cache write can run in any order
// relative to them. Built once per block (the bases are loop invariants).
template <typename T>
struct KvSource {
    const AttnParams& p;
    const Sequence& seq;
    const T* k_cache;  // the cache at KV head kvh: AttnParams::cache_slot offsets are added
    const T* v_cache;
    const T* k_new;    // new token 0 at KV head kvh
    const T* v_new;
    // {nullptr, nullptr} when the position's page id is outside the pool: the row is skipped
    // (it reads as zeros) and the caller reports GQA_BATCH_FLAG_BAD_PAGE.
    __device__ KvRow<T> row(int64_t pos) const;
};

// One attention call as the kernels see it (prefill, decode and the batched op share it).
// Kernels address tensors through the accessors below only, so a new layout (strides, a paged
// cache's page table) is a change in one place.
struct AttnParams {
    void* out;
    const void* q;
    const void* k;
    const void* v;
    void* k_cache;  // nullptr without caches
    void* v_cache;
    int64_t seq_len;  // new tokens per sequence (1 for decode); batched op: max_q_len
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
    float* lse;          // nullptr: none; else the natural log of each row's denominator (lse_entry)
    RowStrides q_rows, out_rows;  // [batch][seq_len][num_q_heads][head_dim] (batched op: [total_q][...])
    RowStrides k_rows, v_rows;    // the new k and v: [batch][seq_len][num_kv_heads][head_dim]
    RowStrides cache_rows;        // dense [batch][max_seq_len][Hkv][D]; paged [num_pages][page_size][Hkv][D]
    // The batched op (gqa_attention_batch): its metadata in device memory, read here only (a
    // CUDA graph replays with whatever the buffers hold). q_indptr is nullptr for prefill and
    // decode, whose sequences come from `chunk`.
    const int32_t* q_indptr;    // [batch + 1]
    const int32_t* kv_lens;     // [batch]
    const int32_t* page_table;  // [batch][max_pages_per_seq]
    int32_t* error_flags;       // optional: GQA_BATCH_FLAG_* are OR-ed in
    int64_t batch, total_q;
    int32_t page_size, num_pages, max_pages_per_seq;  // int32 in gqa_batch_config
    FastDiv page_div;   // position -> page-table column
    FastDiv group_div;  // decode row -> (new token, query head of the group)
    // Sequences with 1 <= q_len <= decode_max_q run on the decode kernel, longer ones on the
    // prefill kernel (and the cache copy). Prefill 0, decode 1, batched op min(max_q_len, 8).
    int32_t decode_max_q;
    // Split-KV: partial results in the caller's workspace when num_splits > 1. With
    // split_by_length a sequence uses only splits_of(seq) <= num_splits partitions (batched op,
    // automatic choice: the lengths are known on the device only).
    int32_t num_splits;
    int32_t split_by_length;
    float* partial_o;    // [batch][decode_max_q][num_q_heads][num_splits][head_dim], unnormalised
    float2* partial_ml;  // [batch][decode_max_q][num_q_heads][num_splits] = (running max, running sum)
    BatchChunk chunk;

    // Sequence `i` of this launch's chunk (blockIdx.z). For the batched op its metadata is read
    // and checked: a sequence whose q_indptr entries, kv_len or capacity are out of range is
    // not run and its GQA_BATCH_FLAG_* reported, so nothing outside q, k, v, out, the page table
    // and the pool is ever touched.
    __device__ Sequence sequence(int64_t i) const;

    // Element offsets of the head_dim row of (sequence s, new token t, head h).
    __host__ __device__ int64_t q_row(const Sequence& s, int64_t t, int64_t qh) const {
        return q_rows.row(s.b, s.first_row + t, qh);
    }
    __host__ __device__ int64_t out_row(const Sequence& s, int64_t t, int64_t qh) const {
        return out_rows.row(s.b, s.first_row + t, qh);
    }
    __host__ __device__ int64_t new_k_row(const Sequence& s, int64_t t, int64_t kvh) const {
        return k_rows.row(s.b, s.first_row + t, kvh);
    }
    __host__ __device__ int64_t new_v_row(const Sequence& s, int64_t t, int64_t kvh) const {
        return v_rows.row(s.b, s.first_row + t, kvh);
    }
    // Cache position pos of sequence s, KV head kvh: the page-table lookup (one per row), or -1
    // when the page id is outside [0, num_pages) (the caller skips the row and reports).
    __device__ int64_t cache_row(const Sequence& s, int64_t pos, int64_t kvh) const {
        if (!s.pages) return cache_rows.row(s.b, pos, kvh);
        // 32-bit arithmetic: pos < 2^31 (sequence() checks), so column * page_size <= pos.
        const uint32_t column = page_div.div(uint32_t(pos));
        const int32_t page = s.pages[column];
        if (uint32_t(page) >= uint32_t(num_pages)) return -1;  // negative ids wrap above num_pages
        const int32_t slot = int32_t(pos) - int32_t(column) * page_size;
        return cache_rows.row(page, slot, kvh);
    }
    __device__ void report(int32_t flag) const {
        if (error_flags) atomicOr(error_flags, flag);
    }

    // Where the key/value rows of sequence s, KV head kvh are read from.
    template <typename T>
    __device__ KvSource<T> kv_source(const Sequence& s, int64_t kvh) const {
        const int64_t cached = cache_rows.head * kvh;
        return {*this, s, static_cast<const T*>(k_cache) + cached, static_cast<const T*>(v_cache) + cached,
                static_cast<const T*>(k) + new_k_row(s, 0, kvh), static_cast<const T*>(v) + new_v_row(s, 0, kvh)};
    }

    // Split-KV partitions of sequence s (1: the decode kernel writes out itself).
    __host__ __device__ int64_t splits_of(const Sequence& s) const {
        if (!split_by_length) return num_splits;
        const int64_t keys = key_end(s.start + s.q_len - 1, s.start + s.q_len) - key_begin(s.start);
        const int64_t by_length = (keys + kMinKeysPerSplit - 1) / kMinKeysPerSplit;
        return by_length < num_splits ? (by_length > 1 ? by_length : 1) : num_splits;
    }
    // Decode split-KV: the partial of (sequence b, new token t, query head qh, split).
    __host__ __device__ int64_t partial_entry(int64_t b, int64_t t, int64_t qh, int64_t split) const {
        return ((b * decode_max_q + t) * num_q_heads + qh) * num_splits + split;
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

    // key_begin(pos) <= key < key_end(pos, kv_len) for a key below kv_len, on int32 positions:
    // the per-key test of kernels that keep one register (the position) per row.
    __device__ bool sees(int32_t pos, int32_t key) const {
        if (key > pos && (causal || (window_right >= 0 && key - pos > window_right))) return false;
        return window_left < 0 || pos - key <= window_left;
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
    // The lse entry of (sequence s, new token t, query head qh): prefill and decode
    // [batch][num_q_heads][seq_len]; the batched op [num_q_heads][total_q].
    __host__ __device__ int64_t lse_entry(const Sequence& s, int64_t t, int64_t qh) const {
        if (q_indptr) return qh * total_q + s.first_row + t;
        return (s.b * num_q_heads + qh) * seq_len + t;
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
__device__ KvRow<T> KvSource<T>::row(int64_t pos) const {
    if (pos >= seq.start) {
        const int64_t t = pos - seq.start;
        return {k_new + t * p.k_rows.token, v_new + t * p.v_rows.token};
    }
    // k_cache already points at KV head kvh: the slot of KV head 0
    const int64_t o = p.cache_row(seq, pos, 0);
    if (o < 0) return {nullptr, nullptr};
    return {k_cache + o, v_cache + o};
}

__device__ inline Sequence AttnParams::sequence(int64_t i) const {
    Sequence s{int32_t(chunk.first + i), 0, int32_t(seq_len), 0, nullptr, true};
    if (!q_indptr) {
        s.start = chunk.start[i];
        return s;
    }
    const int64_t begin = q_indptr[s.b], end = q_indptr[s.b + 1], cached = kv_lens[s.b], q_len = end - begin;
    s.first_row = int32_t(begin);
    s.start = int32_t(cached);
    s.pages = page_table + int64_t(s.b) * max_pages_per_seq;
    // The host checks of validate_batch.cpp, restricted to this sequence.
    const bool rows_ok = begin >= 0 && begin <= end && end <= total_q && q_len <= seq_len &&
                         (s.b > 0 || begin == 0) && (s.b < batch - 1 || end == total_q);
    // Positions stay below 2^31 (FastDiv) and within the sequence's pages.
    const bool length_ok = cached >= 0 && (q_len == 0 || (cached + q_len <= int64_t(max_pages_per_seq) * page_size &&
                                                          cached + q_len <= INT32_MAX));
    if (!rows_ok) report(GQA_BATCH_FLAG_BAD_INDPTR);
    else if (!length_ok) report(GQA_BATCH_FLAG_BAD_KV_LEN);
    s.run = rows_ok && length_ok && q_len > 0;
    s.q_len = s.run ? int32_t(q_len) : 0;
    return s;
}

// Bytes of workspace the split-KV partials of `rows` (sequence, new token) rows need.
inline uint64_t decode_partial_bytes(int64_t rows, int64_t num_q_heads, int64_t head_dim, int64_t splits) {
    const int64_t entries = rows * num_q_heads * splits;
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
