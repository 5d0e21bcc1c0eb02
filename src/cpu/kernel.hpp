// kernel.hpp: the unit of work the CPU driver (attention.cpp) hands to an ISA kernel.
//
// A Tile is: some consecutive query positions of one (sequence, KV head), all G query heads of
// that KV head, against one contiguous key range [key_begin, key_end). Query i of the tile
// (0-based inside the tile) sees keys [visible_begin(i), visible_end(i)) of that range (the
// causal mask and the window). The kernel keeps an online softmax over key blocks in fp32 and
// writes either the final, normalised output in the storage dtype (and the row's lse), or
// (split decode) an unnormalised fp32 partial that the driver's split merge combines.
//
// The variants live in three places shared by every path: the logits (softcap, in
// softmax_block / rows_in_registers through softcap_scores; the mask in mask_score), the row
// state init (init_row_state: a sink starts a row at max = sink, sum = 1) and the row finish
// (finish_row: lse = max + log(sum)).
//
// Prefill packs K and V once per call (PrefillPath::pack, per sequence and KV head, into the
// path's compute layout) and hands every query tile of that head the packed blocks; decode and
// tiny prefills read the storage rows directly.
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
// Keys per packed block of prefill (PackKernel) and per step of the rows-in-lanes kernel: long
// enough that the AMX P.V runs 4 tile steps per accumulator load/store (NOTES.md).
constexpr int64_t kPrefillKeyBlock = 128;

struct Tile {
    DType dtype = DType::F32;
    int64_t head_dim = 0;
    int64_t group = 0;         // query heads per KV head
    float scale = 1.0f;
    float softcap = 0.0f;      // > 0: logits s (after scale) become softcap * tanh(s / softcap)

    const void* q = nullptr;   // first query position, first head of the group
    int64_t q_stride = 0;      // elements between consecutive query positions
    int64_t q_head_stride = 0; // elements between the group's heads
    int64_t num_queries = 0;

    // Key rows: position j of this (sequence, KV head) starts at element key_offset(*this, j)
    // of k and v (below): k, v point at this KV head's first element of row 0 of the pool;
    // with pages, position j is pool row pages[j / page_size] * page_size + j % page_size,
    // without (pages == nullptr) it is row j.
    const void* k = nullptr;
    const void* v = nullptr;
    int64_t kv_stride = 0;     // elements between consecutive rows (positions in a page) of k
    int64_t v_stride = 0;      // ... of v (differs only for separate strided k and v inputs)
    const int32_t* pages = nullptr;
    int64_t page_size = 0;
    int64_t key_begin = 0;
    int64_t key_end = 0;

    // Row ends bounded (a causal mask, or window_right): query 0 sees keys < first_visible_end,
    // query i < first_visible_end + i. Row begins bounded (window_left): query i sees keys
    // >= first_visible_begin + i.
    bool causal = false;
    int64_t first_visible_end = 0;
    bool windowed = false;
    int64_t first_visible_begin = 0;

    // Sinks of the group's heads (sinks[g]), or nullptr. Only with out: the split merge adds
    // the sink of a split decode once.
    const float* sinks = nullptr;

    // Final output (storage dtype) when out != nullptr ...
    void* out = nullptr;
    int64_t out_stride = 0;    // elements between consecutive query positions
    int64_t out_head_stride = 0;
    // ... and, when lse != nullptr, lse[g * lse_head_stride + i] of query i, head g.
    float* lse = nullptr;
    int64_t lse_head_stride = 0;
    // ... else fp32 partials, row r = query * group + head: acc[r * head_dim + d], max[r], sum[r].
    float* part_acc = nullptr;
    float* part_max = nullptr;
    float* part_sum = nullptr;
    // With partials: start from the state already in them (continue an earlier key range)
    // instead of from an empty softmax. Lets decode walk the cache position-major (below).
    bool resume = false;

    // Prefill: K/V of this (sequence, KV head) packed by the path's pack(), block b holding keys
    // [packed_first_key + b * kPrefillKeyBlock, ...) (key_begin - packed_first_key is then a
    // multiple of kPrefillKeyBlock; packed_first_key is the first key any row of the call sees,
    // 0 without a window); nullptr: the kernel reads k/v itself. packed_v_nonfinite[b]: block b
    // has a non-finite V value, stored as 0 in the pack (see PackKernel).
    const void* packed = nullptr;
    const uint8_t* packed_v_nonfinite = nullptr;
    int64_t packed_first_key = 0;
    // Set by the driver for both the pack and the tiles of a pair: f32 K rows are read in place
    // rather than packed where f32_keys_in_place (prefill_lanes.inl) allows it.
    bool keys_in_place = false;

    int64_t visible_end(int64_t i) const {
        if (!causal) return key_end;
        const int64_t end = first_visible_end + i;
        return end < key_end ? end : key_end;
    }
    int64_t visible_begin(int64_t i) const {
        if (!windowed) return key_begin;
        const int64_t begin = first_visible_begin + i;
        return begin > key_begin ? begin : key_begin;
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
// The same for v: cache rows (paged or not) are laid out alike for k and v; separate strided k
// and v inputs may differ in their row stride.
static inline int64_t value_offset(const Tile& t, int64_t j) {
    if (!t.pages) return j * t.v_stride;
    return key_offset(t, j);
}
static inline int64_t value_step(const Tile& t) { return t.pages ? t.kv_stride : t.v_stride; }
static inline int64_t key_run(const Tile& t, int64_t j, int64_t limit) {
    if (!t.pages) return limit;
    const int64_t in_page = t.page_size - j % t.page_size;
    return in_page < limit ? in_page : limit;
}

using TileKernel = void (*)(const Tile& tile, float* scratch);

// Packs the K/V blocks [first_block, first_block + num_blocks) of a Tile's (sequence, KV head)
// (block b: keys from tile.packed_first_key + b * kPrefillKeyBlock, up to tile.key_end)
// into `blocks` (block b at b * packed_block_bytes) and sets v_nonfinite[b]. Layout of one block, in the path's element type, head_dim padded with zeros
// to the path's dim_align (dp): K as [kPrefillKeyBlock][dp] (left unwritten where the tile
// reads K in place: Tile::keys_in_place), then V transposed as [dp][kPrefillKeyBlock];
// keys past key_end are zeros. A non-finite V value is stored as 0 and its block flagged: the
// kernel adds that key's product back from the storage row for the rows that see it, so that
// 0 * NaN from a key a row must not see never reaches the row.
using PackKernel = void (*)(const Tile& tile, int64_t first_block, int64_t num_blocks, void* blocks,
                            uint8_t* v_nonfinite);

// How one ISA computes prefill for one dtype (isa.cpp picks them).
struct PrefillPath {
    const char* name;   // for logs: "avx512_fp32", "amx_bf16", ...
    PackKernel pack;    // nullptr: the tile kernel reads the storage rows (scalar oracle)
    TileKernel tile;    // runs a Tile with `packed` set (or unset when pack is nullptr)
    int64_t elem_bytes; // packed element: 4 (fp32) or 2 (bf16)
    int64_t dim_align;  // head_dim padded to a multiple of this in the pack
    int64_t min_rows;   // a call with fewer query rows per head than this skips the pack and
                        // runs IsaChoice::kernel (rows_in_registers) instead
};

inline int64_t packed_dim(const PrefillPath& p, int64_t head_dim) {
    return (head_dim + p.dim_align - 1) / p.dim_align * p.dim_align;
}
inline int64_t packed_block_bytes(const PrefillPath& p, int64_t head_dim) {
    return 2 * kPrefillKeyBlock * packed_dim(p, head_dim) * p.elem_bytes;
}

// Query rows a rows-in-lanes kernel (prefill_lanes.inl) holds at once. A tile with more rows
// (a group of hundreds of heads) runs in chunks of whole queries or, when one query's group
// alone is larger, of that query's heads, so that the scratch of a tile stays bounded whatever
// the group (a fuzzed 192767:1 group once asked for 1.6 GB per thread). The largest tile of a
// group of at most 8 heads (224 rows at group 7) is one chunk.
constexpr int64_t kMaxLaneRows = 256;

// Queries [q0, q0 + nq), heads [g0, g0 + ng) of tile t as a tile of their own (nq == 1 when
// ng < t.group, so that the sub-tile's partial rows stay consecutive). static: see key_offset.
static inline Tile sub_tile(const Tile& t, int64_t q0, int64_t nq, int64_t g0, int64_t ng) {
    const int64_t es = t.dtype == DType::F32 ? 4 : 2;
    Tile s = t;
    s.q = static_cast<const char*>(t.q) + (q0 * t.q_stride + g0 * t.q_head_stride) * es;
    s.num_queries = nq;
    s.group = ng;
    s.first_visible_end += q0;
    s.first_visible_begin += q0;
    if (t.sinks) s.sinks += g0;
    if (t.out) s.out = static_cast<char*>(t.out) + (q0 * t.out_stride + g0 * t.out_head_stride) * es;
    if (t.lse) s.lse += g0 * t.lse_head_stride + q0;
    const int64_t row = q0 * t.group + g0;  // partial rows are query * group + head
    if (t.part_acc) s.part_acc += row * t.head_dim;
    if (t.part_max) s.part_max += row;
    if (t.part_sum) s.part_sum += row;
    return s;
}

// Rows of one chunk of a rows-in-lanes tile (see kMaxLaneRows). static: see key_offset.
static inline int64_t lane_chunk_rows(const Tile& t) {
    const int64_t rows = t.num_queries * t.group;
    if (rows <= kMaxLaneRows) return rows;
    return t.group <= kMaxLaneRows ? kMaxLaneRows / t.group * t.group : kMaxLaneRows;
}

// fp32 scratch a kernel may use for one tile (the driver gives each worker this much).
inline int64_t tile_scratch_floats(const Tile& t) {
    const int64_t rows = lane_chunk_rows(t);
    const int64_t rp = (rows + 15) / 16 * 16;
    const int64_t dp = (t.head_dim + 31) / 32 * 32;  // the largest dim_align
    const int64_t keys = kPrefillKeyBlock > kKeyBlock ? kPrefillKeyBlock : kKeyBlock;
    return 2 * keys * dp               // one packed key block of K and V (at most fp32)
           + (rp + 16) * dp            // queries
           + (rp + 16) * dp            // accumulators
           + 4 * (rp + 16) * keys      // scores / probabilities
           + 16 * dp                   // rows staged for a transpose
           + 5 * (rp + 16) + 64;       // running max / sum, visible begins / ends, keys per
                                       // vector, alignment slack
}

void attend_tile_scalar(const Tile& t, float* scratch);
#if defined(__x86_64__) || defined(_M_X64)
void attend_tile_avx2(const Tile& t, float* scratch);
void attend_tile_avx512(const Tile& t, float* scratch);
// Prefill over packed K/V (prefill_lanes.inl): fp32 products on AVX2 / AVX-512 ...
void pack_kv_avx2_f32(const Tile& t, int64_t first_block, int64_t num_blocks, void* blocks, uint8_t* v_nonfinite);
void prefill_tile_avx2_f32(const Tile& t, float* scratch);
void pack_kv_avx512_f32(const Tile& t, int64_t first_block, int64_t num_blocks, void* blocks, uint8_t* v_nonfinite);
void prefill_tile_avx512_f32(const Tile& t, float* scratch);
// ... and bf16 products (exact) with P rounded to bf16: AVX-512 BF16 dot products or AMX tiles.
void pack_kv_bf16(const Tile& t, int64_t first_block, int64_t num_blocks, void* blocks, uint8_t* v_nonfinite);
void prefill_tile_avx512_bf16(const Tile& t, float* scratch);
void prefill_tile_amx_bf16(const Tile& t, float* scratch);
#endif

}  // namespace cpu
}  // namespace gqa
