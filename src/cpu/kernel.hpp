// kernel.hpp: the unit of work the CPU driver (attention.cpp) hands to an ISA kernel.
//
// A Tile is: some consecutive query positions of one (sequence, KV head), all G query heads of
// that KV head, against one contiguous key range [key_begin, key_end). Query i of the tile
// (0-based inside the tile) sees keys < min(key_end, visible_end(i)). The kernel keeps an
// online softmax over key blocks in fp32 and writes either the final, normalised output in the
// storage dtype, or (split decode) an unnormalised fp32 partial that combine_partials() merges.
//
// Every kernel must give the same bits for the same Tile no matter which thread runs it: the
// driver's decomposition depends only on the problem, so results do not depend on threads.
#pragma once

#include <cstdint>

#include "problem.hpp"

namespace gqa {
namespace cpu {

// Keys per inner block of every kernel (scores of one block live in registers / L1).
constexpr int64_t kKeyBlock = 64;

struct Tile {
    DType dtype = DType::F32;
    int64_t head_dim = 0;
    int64_t group = 0;         // query heads per KV head; contiguous in q/out (stride head_dim)
    float scale = 1.0f;

    const void* q = nullptr;   // first query position, first head of the group
    int64_t q_stride = 0;      // elements between consecutive query positions
    int64_t num_queries = 0;

    // Key rows: position j of this (sequence, KV head) starts at element key_offset(*this, j)
    // of k and v (below): k, v point at this KV head's first element of row 0 of the pool;
    // with pages, position j is pool row pages[j / page_size] * page_size + j % page_size,
    // without (pages == nullptr) it is row j.
    const void* k = nullptr;
    const void* v = nullptr;
    int64_t kv_stride = 0;     // elements between consecutive rows (positions in a page)
    const int32_t* pages = nullptr;
    int64_t page_size = 0;
    int64_t key_begin = 0;
    int64_t key_end = 0;

    bool causal = false;
    int64_t first_visible_end = 0;  // causal: query 0 sees keys < this; query i < this + i

    // Final output (storage dtype) when out != nullptr ...
    void* out = nullptr;
    int64_t out_stride = 0;    // elements between consecutive query positions
    // ... else fp32 partials, row r = query * group + head: acc[r * head_dim + d], max[r], sum[r].
    float* part_acc = nullptr;
    float* part_max = nullptr;
    float* part_sum = nullptr;
    // With partials: start from the state already in them (continue an earlier key range)
    // instead of from an empty softmax. Lets decode walk the cache position-major (below).
    bool resume = false;

    int64_t visible_end(int64_t i) const {
        if (!causal) return key_end;
        const int64_t end = first_visible_end + i;
        return end < key_end ? end : key_end;
    }
};

// The row addressing of every kernel and of the driver: the element offset of key position
// j in t.k / t.v, and how many positions from j on (at most `limit`) are consecutive rows, so
// callers stream whole runs inside a page at full speed. static: internal linkage in each
// translation unit, so an ISA-flagged copy can never be shared with baseline code.
static inline int64_t key_offset(const Tile& t, int64_t j) {
    if (!t.pages) return j * t.kv_stride;
    return (static_cast<int64_t>(t.pages[j / t.page_size]) * t.page_size + j % t.page_size) * t.kv_stride;
}
static inline int64_t key_run(const Tile& t, int64_t j, int64_t limit) {
    if (!t.pages) return limit;
    const int64_t in_page = t.page_size - j % t.page_size;
    return in_page < limit ? in_page : limit;
}

using TileKernel = void (*)(const Tile& tile, float* scratch);

// fp32 scratch a kernel may use for one tile (the driver gives each worker this much).
inline int64_t tile_scratch_floats(const Tile& t) {
    const int64_t rows = t.num_queries * t.group;
    const int64_t dp = (t.head_dim + 15) / 16 * 16;
    return 2 * kKeyBlock * dp          // one key block of K and V in fp32
           + (rows + 16) * dp          // queries, fp32
           + (rows + 16) * dp          // accumulators
           + 4 * (rows + 16) * kKeyBlock  // scores / probabilities
           + 4 * (rows + 16) + 64;     // running max / sum, alignment slack
}

void attend_tile_scalar(const Tile& t, float* scratch);
#if defined(__x86_64__) || defined(_M_X64)
void attend_tile_avx2(const Tile& t, float* scratch);
void attend_tile_avx512(const Tile& t, float* scratch);
#endif

}  // namespace cpu
}  // namespace gqa
