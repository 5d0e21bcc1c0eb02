// decode.hpp: the unit of decode work the CPU driver (attention.cpp) hands to a decode kernel.
//
// A DecodeWork is one split of one sequence's cache: key positions [key_begin, key_end) of
// head0 (a Tile for KV head 0), for every KV head and all of that sequence's query rows
// (num_queries positions x group heads per KV head). The kernel walks the positions once, in
// blocks, visiting every KV head of a block before the next block (all heads of a position are
// one contiguous row, so the cache is read as a stream), and keeps every row's online softmax
// in its own scratch from the first key to the last: one call per split, no per-block call.
// It writes the final output (head0.out set: the split is the whole sequence) or fp32
// partials that the driver merges in split order.
//
// Like every kernel: the same bits for the same DecodeWork on any thread.
#pragma once

#include <cstdint>

#include "cpu/kernel.hpp"

namespace gqa {
namespace cpu {

struct DecodeWork {
    Tile head0;               // KV head 0 of the sequence; key_begin/key_end: this split's positions
                              // (head0.part_* unused: the partials below)
    int64_t num_kv_heads = 0;
    // Partials when head0.out is nullptr: state row h * rows + r (rows = num_queries * group,
    // r = query * group + head of the group) at part_acc[row * head_dim], part_max[row],
    // part_sum[row].
    float* part_acc = nullptr;
    float* part_max = nullptr;
    float* part_sum = nullptr;
};

using DecodeKernel = void (*)(const DecodeWork& work, float* scratch);

// The Tile of KV head h of a DecodeWork: its queries, key/value rows, sinks, output, lse and
// partials. Key/value rows are cache rows (all heads of a position in one row, head_dim apart)
// unless the DecodeWork has one head.
// static: internal linkage in each translation unit (see key_offset in kernel.hpp).
static inline Tile decode_head_tile(const DecodeWork& w, int64_t h) {
    Tile t = w.head0;
    const int64_t es = t.dtype == DType::F32 ? 4 : 2;
    const int64_t first = h * t.group;  // head h's first query head
    const int64_t rows = t.num_queries * t.group;
    t.q = static_cast<const char*>(t.q) + first * t.q_head_stride * es;
    t.k = static_cast<const char*>(t.k) + h * t.head_dim * es;
    t.v = static_cast<const char*>(t.v) + h * t.head_dim * es;
    if (t.sinks) t.sinks += first;
    if (t.out) {
        t.out = static_cast<char*>(t.out) + first * t.out_head_stride * es;
        if (t.lse) t.lse += first * t.lse_head_stride;
    } else {
        t.part_acc = w.part_acc + h * rows * t.head_dim;
        t.part_max = w.part_max + h * rows;
        t.part_sum = w.part_sum + h * rows;
    }
    return t;
}

// Positions per block of the SIMD kernels: about kDecodeBlockBytes of K rows (all heads), a
// multiple of 16 up to kKeyBlock; 8 when 16 positions are already more than that (many heads:
// Phi-3's 32 x d96 in f32 is 12 KiB a position), since a block and the next, prefetched while it
// is computed, must stay well inside a 512 KiB L2 (Zen 3; benchmarks/NOTES.md section 13).
constexpr int64_t kDecodeBlockBytes = 32 * 1024;
static inline int64_t decode_block(const DecodeWork& w) {
    const Tile& t = w.head0;
    const int64_t position_bytes = w.num_kv_heads * t.head_dim * (t.dtype == DType::F32 ? 4 : 2);
    const int64_t fit = kDecodeBlockBytes / position_bytes / 16 * 16;
    return fit < 16 ? 8 : fit > kKeyBlock ? kKeyBlock : fit;
}

// Floats between the scaled queries and the accumulators in the SIMD kernel's scratch.
constexpr int64_t kAccOffset = 256;

// fp32 scratch a decode kernel may use for one DecodeWork (or for one head's Tile, which a
// group that fills the lanes runs through the tile kernel).
static inline int64_t decode_scratch_floats(const DecodeWork& w) {
    const int64_t rows = w.head0.num_queries * w.head0.group;
    const int64_t dp = (w.head0.head_dim + 15) / 16 * 16;
    const int64_t own = 2 * w.num_kv_heads * rows * dp  // scaled queries and accumulators of every row
                        + 4 * w.num_kv_heads * rows     // running max / sum / correction
                        + w.num_kv_heads * rows * kKeyBlock  // a block's scores (every head's rows)
                        + 2 * kKeyBlock * dp            // one head's K and V block, staged in fp32 when needed
                        + w.num_kv_heads * rows * dp / 2  // the queries in bf16 (decode_avx512_bf16)
                        + rows * kKeyBlock / 2          // one head's probabilities in bf16 (same)
                        + kAccOffset + 64;              // acc's offset, alignment slack
    const int64_t tile = tile_scratch_floats(w.head0);
    return own > tile ? own : tile;
}

// Scalar: every head's Tile through attend_tile_scalar (the oracle). SIMD: decode_simd.inl.
void decode_scalar(const DecodeWork& w, float* scratch);
#if defined(__x86_64__) || defined(_M_X64)
void decode_avx2(const DecodeWork& w, float* scratch);
void decode_avx512(const DecodeWork& w, float* scratch);
void decode_avx512_bf16(const DecodeWork& w, float* scratch);  // bf16 Q.K^T as vdpbf16ps
#endif

}  // namespace cpu
}  // namespace gqa
