// attention.cpp: the CPU backend's driver. Copies the new K/V into the caches, cuts the call
// into Tiles, runs them on the thread pool with the selected ISA kernel and, for split decode,
// merges the partial results in a fixed order.
//
// Determinism: the cut (query tile size, split count, key ranges) depends only on the Problem,
// never on the thread count, and each Tile is computed by one thread in a fixed order, so the
// output bits are the same for any number of threads.
#include <sched.h>

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <limits>
#include <memory>
#include <numeric>
#include <utility>
#include <vector>

#include "backend.hpp"
#include "cpu/convert.hpp"
#include "cpu/decode.hpp"
#include "cpu/isa.hpp"
#include "cpu/kernel.hpp"
#include "cpu/thread_pool.hpp"
#include "gqa.h"
#include "log.hpp"

namespace gqa {

namespace {

// Query rows (query positions x heads of a group) per prefill tile: enough rows to reuse each
// packed key block many times, few enough that the tile's Q^T and O^T stay close to L1
// (128 rows measured slower than 64: benchmarks/NOTES.md section 5).
constexpr int64_t kRowsPerTile = 64;
// Decode, unless the caller sets num_splits: aim for at least this many (sequence, split) tasks,
// with at most ceil(keys / kMinKeysPerSplit) splits (so a cache cut in two or more keeps more
// than kMinKeysPerSplit / 2 keys a split). Constants, so the split never depends on the thread
// count.
constexpr int64_t kDecodeTargetTasks = 32;
constexpr int64_t kMinKeysPerSplit = 256;
// Batched op: a sequence with at most this many new tokens (a decode step, a speculative
// verification) runs the decode way, split over its cache; longer ones are tiled as prefill.
constexpr int64_t kDecodeMaxQueries = 8;

std::atomic<int32_t> g_requested_threads{0};  // 0: automatic
std::atomic<int32_t> g_automatic_threads{0};  // 0: not yet computed

int32_t automatic_threads() {
    if (const char* env = std::getenv("GQA_NUM_THREADS")) {
        char* end = nullptr;
        const long n = std::strtol(env, &end, 10);
        if (end != env && *end == '\0' && n >= 1 && n <= kMaxThreads) return static_cast<int32_t>(n);
        if (*env) {
            GQA_LOG(GQA_LOG_WARNING, "GQA_NUM_THREADS='%s' is not a thread count (1..%d); ignoring it", env, kMaxThreads);
        }
    }
    cpu_set_t set;
    CPU_ZERO(&set);
    if (sched_getaffinity(0, sizeof set, &set) == 0) {
        const int n = CPU_COUNT(&set);
        if (n >= 1) return n;
    }
    return 1;
}

const void* at(const void* base, int64_t elements, int64_t elem_bytes) {
    return static_cast<const char*>(base) + elements * elem_bytes;
}
void* at(void* base, int64_t elements, int64_t elem_bytes) {
    return static_cast<char*>(base) + elements * elem_bytes;
}

// The Tile for query positions [q0, q0 + nq) of (sequence b, KV head h), keys [k0, k1).
cpu::Tile make_tile(const Problem& p, int64_t b, int64_t h, int64_t q0, int64_t nq, int64_t k0, int64_t k1) {
    const int64_t es = dtype_bytes(p.dtype);
    const int64_t d = p.head_dim;
    cpu::Tile t;
    t.dtype = p.dtype;
    t.head_dim = d;
    t.group = p.group;
    t.scale = p.scale;
    t.softcap = p.softcap;
    t.q = at(p.q, p.row_offset(p.q_strides, b, q0, h * p.group), es);
    t.q_stride = p.q_strides.token;
    t.q_head_stride = p.q_strides.head;
    t.num_queries = nq;
    t.kv_stride = p.num_kv_heads * d;
    t.v_stride = t.kv_stride;
    if (p.page_table) {  // rows of the pool through sequence b's pages
        t.k = at(p.k_cache, h * d, es);
        t.v = at(p.v_cache, h * d, es);
        t.pages = p.pages_of(b);
        t.page_size = p.page_size;
    } else if (p.has_cache) {  // the dense cache: sequence b's positions are consecutive rows
        const int64_t kv_offset = b * p.max_seq_len * t.kv_stride + h * d;
        t.k = at(p.k_cache, kv_offset, es);
        t.v = at(p.v_cache, kv_offset, es);
    } else {  // no cache: the new tokens' own (possibly strided) k and v
        t.k = at(p.k, p.row_offset(p.k_strides, b, 0, h), es);
        t.v = at(p.v, p.row_offset(p.v_strides, b, 0, h), es);
        t.kv_stride = p.k_strides.token;
        t.v_stride = p.v_strides.token;
    }
    t.key_begin = k0;
    t.key_end = k1;
    // Rows are bounded by the causal mask and the window: query i at position pos0 + i sees
    // [pos0 + i - window_left, min(pos0 + i + 1 (causal), pos0 + i + window_right + 1)).
    const int64_t pos0 = p.position_of(b, q0);
    t.causal = p.causal || p.window_right >= 0;
    t.first_visible_end = p.causal ? pos0 + 1 : pos0 + p.window_right + 1;
    if (p.causal && p.window_right >= 0) t.first_visible_end = std::min(pos0 + 1, pos0 + p.window_right + 1);
    t.windowed = p.window_left >= 0;
    t.first_visible_begin = pos0 - p.window_left;
    t.sinks = p.sinks ? p.sinks + h * p.group : nullptr;
    t.out = at(p.out, p.row_offset(p.out_strides, b, q0, h * p.group), es);
    t.out_stride = p.out_strides.token;
    t.out_head_stride = p.out_strides.head;
    t.lse = p.lse ? p.lse + p.lse_offset(b, q0, h * p.group) : nullptr;
    t.lse_head_stride = p.lse_head_stride();
    return t;
}

// The keys the query rows [q0, q0 + nq) of sequence b see together: the driver hands a tile
// only these, so the cost follows the window, not the cache.
std::pair<int64_t, int64_t> key_range(const Problem& p, int64_t b, int64_t q0, int64_t nq) {
    return {p.first_key(p.position_of(b, q0)), p.end_key(b, p.position_of(b, q0 + nq - 1))};
}

// Copies `tokens` new tokens (all KV heads) from a possibly strided k or v to consecutive
// cache rows at dst: one memcpy for the whole run when the source is contiguous too.
void copy_tokens(void* dst, const void* src, const Strides& s, int64_t tokens, const Problem& p) {
    const int64_t es = dtype_bytes(p.dtype);
    const int64_t row = p.num_kv_heads * p.head_dim;  // elements per token in the cache
    if (s.head == p.head_dim && s.token == row) {
        std::memcpy(dst, src, static_cast<size_t>(tokens * row * es));
        return;
    }
    for (int64_t t = 0; t < tokens; ++t) {
        for (int64_t h = 0; h < p.num_kv_heads; ++h) {
            std::memcpy(at(dst, t * row + h * p.head_dim, es), at(src, t * s.token + h * s.head, es),
                        static_cast<size_t>(p.head_dim * es));
        }
    }
}

// Writes the new tokens' K and V at cache positions [start_of(b), start_of(b) + q_len(b)),
// one copy per run of consecutive rows (a page, or the whole range of a dense cache).
void append_to_caches(const Problem& p) {
    const int64_t es = dtype_bytes(p.dtype);
    for (int64_t b = 0; b < p.batch; ++b) {
        const cpu::Tile rows = make_tile(p, b, 0, 0, 0, 0, 0);  // addresses positions, all heads
        const int64_t start = p.start_of(b), end = start + p.q_len(b);
        for (int64_t pos = start, run; pos < end; pos += run) {
            run = cpu::key_run(rows, pos, end - pos);
            const int64_t dst = cpu::key_offset(rows, pos);
            // rows.k / rows.v address p.k_cache / p.v_cache, which this call writes.
            copy_tokens(at(const_cast<void*>(rows.k), dst, es), at(p.k, p.row_offset(p.k_strides, b, pos - start, 0), es),
                        p.k_strides, run, p);
            copy_tokens(at(const_cast<void*>(rows.v), dst, es), at(p.v, p.row_offset(p.v_strides, b, pos - start, 0), es),
                        p.v_strides, run, p);
        }
    }
}

// fp32 scratch owned by the calling OS thread (pool workers and user threads alike) and kept
// between calls: fresh buffers every call cost page faults comparable to a small decode.
float* thread_scratch(int64_t floats) {
    thread_local std::vector<float> buffer;
    if (static_cast<int64_t>(buffer.size()) < floats) buffer.resize(static_cast<size_t>(floats));
    return buffer.data();
}

// Packed K/V kept at a time: the (sequence, KV head) pairs of a call are packed and computed in
// slabs of about this many bytes per thread (at least one pair), which bounds the memory of long
// batches and keeps a slab in the threads' L2 from its pack to its tiles.
constexpr int64_t kPackSlabBytesPerThread = int64_t{3} << 19;
// Key blocks per pack task; slabs of fewer blocks are packed by the calling thread alone.
constexpr int64_t kPackTaskBlocks = 8;
// The most query rows (positions x group) a sequence may have for its f32 K to be read in place
// instead of packed (Tile::keys_in_place): with few tiles per block the pack does not pay for
// itself; rows kv_stride apart (often a multiple of 4 KiB) conflict in L1 when many tiles reread
// them. Two Zen 4 cores, f32: Phi-3 S=128 0.89-0.93x the time, S=1024 0.96x, S=2048 1.01x;
// Llama-3 S=256 (1024 rows) 0.96x, S=2048 (8192 rows) 1.04x (benchmarks/NOTES.md section 18).
constexpr int64_t kKeysInPlaceMaxRows = 1024;

struct alignas(64) CacheLine {
    unsigned char bytes[64];
};

// Prefill-style tiling of the given sequences: tiles of query positions of one (sequence,
// KV head), each against all the keys it sees. Each pair's K/V is packed once for all its
// tiles (PrefillPath::pack), unless its sequence has too few query rows to fill the lanes (the
// decode-shaped kernel then reads the rows itself) or the path reads rows (scalar).
void run_prefill(const Problem& p, const std::vector<int64_t>& sequences, const cpu::IsaChoice& isa,
                 int32_t threads) {
    // Whole vectors of rows where the group allows it (a multiple of 32 rows), at least
    // kRowsPerTile rows.
    int64_t q_tile = 32 / std::gcd<int64_t, int64_t>(p.group, 32);
    while (q_tile * p.group < kRowsPerTile) q_tile *= 2;
    const cpu::PrefillPath& path = isa.prefill(p.dtype);
    const int64_t block_bytes = path.pack ? cpu::packed_block_bytes(path, p.head_dim) : 0;
    struct Pair {
        int64_t b, head, blocks;  // blocks: packed key blocks, 0 when not packed
        int64_t first_key;        // of the first block: the first key any row sees
    };
    std::vector<Pair> pairs;
    int64_t num_tiles = 0;
    for (int64_t b : sequences) {
        const bool packed = path.pack && p.q_len(b) * p.group >= path.min_rows;
        const auto [lo, hi] = key_range(p, b, 0, p.q_len(b));
        const int64_t blocks = packed ? (hi - lo + cpu::kPrefillKeyBlock - 1) / cpu::kPrefillKeyBlock : 0;
        for (int64_t head = 0; head < p.num_kv_heads; ++head) pairs.push_back({b, head, blocks, lo});
        num_tiles += p.num_kv_heads * ((p.q_len(b) + q_tile - 1) / q_tile);
    }
    GQA_LOG(GQA_LOG_DEBUG,
            "cpu prefill: isa=%s path=%s dtype=%s threads=%d query_tile=%lld (rows %lld) key_block=%lld tasks=%lld",
            isa.name, path.name, dtype_name(p.dtype), threads, static_cast<long long>(q_tile),
            static_cast<long long>(q_tile * p.group), static_cast<long long>(cpu::kPrefillKeyBlock),
            static_cast<long long>(num_tiles));

    // Kept by the calling thread between calls. A lambda names a thread_local of the thread
    // that runs it, so the workers get these through the pointers below.
    thread_local std::vector<CacheLine> arena;    // packed blocks of the slab
    thread_local std::vector<uint8_t> nonfinite;  // per block: a V value was Inf/NaN
    std::vector<int64_t> first_block;             // of each pair of the slab
    struct PrefillTask {
        int64_t pair, q0;
    };
    std::vector<PrefillTask> tasks;
    for (size_t slab_begin = 0, slab_end; slab_begin < pairs.size(); slab_begin = slab_end) {
        int64_t blocks = 0;
        first_block.clear();
        for (slab_end = slab_begin; slab_end < pairs.size(); ++slab_end) {
            const int64_t more = pairs[slab_end].blocks;
            if (slab_end > slab_begin && (blocks + more) * block_bytes > kPackSlabBytesPerThread * threads) break;
            first_block.push_back(blocks);
            blocks += more;
        }
        const size_t lines = static_cast<size_t>((blocks * block_bytes + 63) / 64);
        if (arena.size() < lines) arena.resize(lines);
        if (nonfinite.size() < static_cast<size_t>(blocks)) nonfinite.resize(static_cast<size_t>(blocks));
        unsigned char* const arena_bytes = arena.empty() ? nullptr : arena.data()->bytes;
        uint8_t* const nonfinite_flags = nonfinite.data();
        // A tile gets the keys its rows see (key_range), from the start of the packed block that
        // holds its first one: blocks are cut from the first key any row of the call sees, so
        // nothing before the call's windows is read. The pack task's tile (nq 0) spans them all.
        auto tile_of = [&](int64_t pair, int64_t q0, int64_t nq) {
            const Pair& pr = pairs[static_cast<size_t>(pair)];
            const auto [k0, k1] = key_range(p, pr.b, q0, nq ? nq : p.q_len(pr.b));
            const int64_t begin = pr.first_key + (k0 - pr.first_key) / cpu::kPrefillKeyBlock * cpu::kPrefillKeyBlock;
            cpu::Tile t = make_tile(p, pr.b, pr.head, q0, nq, begin, k1);
            if (pr.blocks) {
                const int64_t first = first_block[static_cast<size_t>(pair) - slab_begin];
                t.packed = arena_bytes + first * block_bytes;
                t.packed_v_nonfinite = nonfinite_flags + first;
                t.packed_first_key = pr.first_key;
                t.keys_in_place = p.q_len(pr.b) * p.group <= kKeysInPlaceMaxRows;
            }
            return t;
        };
        // Packing is pure data movement (the same bytes whoever packs), so who packs may
        // depend on the thread count. A pack task is some key blocks of one sequence for all of
        // its heads in the slab, block by block: the heads of a position are adjacent in memory,
        // so the rows one head's pack reads bring in (and map) what the next head's needs.
        struct PackTask {
            size_t first_pair, end_pair;
            int64_t first_block;
        };
        std::vector<PackTask> pack_tasks;
        for (size_t pair = slab_begin, end; pair < slab_end; pair = end) {
            for (end = pair; end < slab_end && pairs[end].b == pairs[pair].b; ++end) {
            }
            for (int64_t b0 = 0; b0 < pairs[pair].blocks; b0 += kPackTaskBlocks) pack_tasks.push_back({pair, end, b0});
        }
        // Few tasks (short sequences): split their heads, so that every thread gets some.
        const size_t wanted = threads > 1 ? 2 * static_cast<size_t>(threads) : 1;
        if (pack_tasks.size() < wanted) {
            std::vector<PackTask> split;
            const size_t parts = (wanted + pack_tasks.size() - 1) / std::max<size_t>(1, pack_tasks.size());
            for (const PackTask& task : pack_tasks) {
                const size_t heads = task.end_pair - task.first_pair, step = std::max<size_t>(1, (heads + parts - 1) / parts);
                for (size_t p0 = task.first_pair; p0 < task.end_pair; p0 += step) {
                    split.push_back({p0, std::min(p0 + step, task.end_pair), task.first_block});
                }
            }
            pack_tasks.swap(split);
        }
        auto pack = [&](int64_t index, int32_t /*worker*/) {
            const PackTask& task = pack_tasks[static_cast<size_t>(index)];
            const int64_t end_block = std::min(task.first_block + kPackTaskBlocks, pairs[task.first_pair].blocks);
            for (int64_t block = task.first_block; block < end_block; ++block) {
                for (size_t pair = task.first_pair; pair < task.end_pair; ++pair) {
                    const int64_t first = first_block[pair - slab_begin];
                    path.pack(tile_of(static_cast<int64_t>(pair), 0, 0), block, 1, arena_bytes + first * block_bytes,
                              nonfinite_flags + first);
                }
            }
        };
        const auto packs = static_cast<int64_t>(pack_tasks.size());
        if (threads == 1 || blocks <= kPackTaskBlocks) {
            for (int64_t i = 0; i < packs; ++i) pack(i, 0);
        } else if (packs > 0) {
            cpu::thread_pool().run(packs, threads, pack);
        }

        tasks.clear();
        for (size_t pair = slab_begin; pair < slab_end; ++pair) {
            const int64_t tiles = (p.q_len(pairs[pair].b) + q_tile - 1) / q_tile;
            // Last query tiles first: under a causal mask they see the most keys.
            for (int64_t tile = tiles - 1; tile >= 0; --tile) tasks.push_back({static_cast<int64_t>(pair), tile * q_tile});
        }
        cpu::thread_pool().run(static_cast<int64_t>(tasks.size()), threads, [&](int64_t index, int32_t /*worker*/) {
            const PrefillTask& task = tasks[static_cast<size_t>(index)];
            const Pair& pr = pairs[static_cast<size_t>(task.pair)];
            const cpu::Tile t = tile_of(task.pair, task.q0, std::min(q_tile, p.q_len(pr.b) - task.q0));
            const cpu::TileKernel kernel = pr.blocks || !path.pack ? path.tile : isa.kernel;
            kernel(t, thread_scratch(cpu::tile_scratch_floats(t)));
        });
    }
}

int64_t decode_splits(const Problem& p, int64_t sequences, int64_t kv_len) {
    int64_t splits;
    if (p.num_splits > 0) {
        splits = p.num_splits;
    } else {
        splits = (kDecodeTargetTasks + sequences - 1) / sequences;
        splits = std::min(splits, (kv_len + kMinKeysPerSplit - 1) / kMinKeysPerSplit);
    }
    return std::max<int64_t>(1, std::min(splits, kv_len));
}

// One decode task: a range of cache positions of one sequence, for every KV head. With more
// than one split, its softmax state for head h is the rows first_row + h * rows .. of the
// partial states (rows = the sequence's q_len * group); first_task is the sequence's split 0.
struct DecodeTask {
    int64_t b, split, splits, key_begin, key_end, first_row, rows, first_task;
};

// The decode kernel of an ISA: the SIMD ones stream the cache (decode_simd.inl); the bf16/AMX
// prefill paths run on CPUs with AVX-512 BF16, so they decode with AVX-512 and its bf16 dot
// products (decode_avx512_bf16.cpp).
struct DecodePath {
    cpu::DecodeKernel kernel;
    const char* name;
};
DecodePath decode_path(const cpu::IsaChoice& isa) {
#if defined(__x86_64__) || defined(_M_X64)
    switch (isa.isa) {
        case cpu::Isa::Scalar: return {&cpu::decode_scalar, "scalar"};
        case cpu::Isa::Avx2: return {&cpu::decode_avx2, "avx2"};
        case cpu::Isa::Avx512: return {&cpu::decode_avx512, "avx512"};
        default: return {&cpu::decode_avx512_bf16, "avx512_bf16"};
    }
#else
    (void)isa;
    return {&cpu::decode_scalar, "scalar"};
#endif
}

// Merges the splits of one sequence (tasks first .. first + splits - 1) into its output, in
// split order: fixed, so the bits do not depend on which thread merges.
void merge_splits(const Problem& p, const std::vector<DecodeTask>& tasks, size_t first, const float* acc,
                  const float* maxes, const float* sums, float* merged) {
    const float neg_inf = -std::numeric_limits<float>::infinity();
    const int64_t d = p.head_dim;
    const int64_t b = tasks[first].b;
    const int64_t splits = tasks[first].splits;
    const int64_t rows = tasks[first].rows;
    for (int64_t h = 0; h < p.num_kv_heads; ++h) {
        const cpu::Tile t = make_tile(p, b, h, 0, p.q_len(b), 0, 0);
        for (int64_t r = 0; r < rows; ++r) {
            auto state_row = [&](int64_t s) { return tasks[first + static_cast<size_t>(s)].first_row + h * rows + r; };
            // The sink joins here, once for all splits: one more partial, max = sink, sum = 1.
            const float sink = t.sinks ? t.sinks[r % p.group] : neg_inf;
            float global_max = sink;
            for (int64_t s = 0; s < splits; ++s) global_max = std::fmax(global_max, maxes[state_row(s)]);
            const float base = global_max == neg_inf ? 0.0f : global_max;
            float total = sink == neg_inf ? 0.0f : std::exp(sink - base);
            std::fill(merged, merged + d, 0.0f);
            for (int64_t s = 0; s < splits; ++s) {
                const float m = maxes[state_row(s)];
                const float sum = sums[state_row(s)];
                // A split whose logits were all -inf has sum 0 and adds nothing; a NaN
                // anywhere in a split's state must still reach the output.
                const float weight = m == neg_inf ? 0.0f : std::exp(m - base);
                if (weight == 0.0f && sum == sum) continue;
                total += sum * weight;
                const float* a = acc + state_row(s) * d;
                for (int64_t e = 0; e < d; ++e) merged[e] += a[e] * weight;
            }
            const float inv = total == 0.0f ? 0.0f : 1.0f / total;
            // Row r is query r / group, head r % group of this KV head.
            const int64_t o = r / p.group * t.out_stride + r % p.group * t.out_head_stride;
            cpu::store_row_f32(t.out, o, merged, d, inv, p.dtype);
            if (t.lse) t.lse[r % p.group * t.lse_head_stride + r / p.group] = total == 0.0f ? neg_inf : base + std::log(total);
        }
    }
}

// Decode of the given sequences (q_len >= 1 each, usually 1): their caches are cut into splits
// (split-KV); each split is one kernel call that streams its positions for every KV head
// (decode.hpp). A sequence of one split writes its output directly; otherwise the task that
// finishes its sequence's last split merges them, so no merge runs serially after the join.
void run_decode(const Problem& p, const std::vector<int64_t>& sequences, const cpu::IsaChoice& isa,
                int32_t threads) {
    std::vector<DecodeTask> tasks;
    int64_t state_rows = 0;
    int64_t max_splits = 1;
    const int64_t count = static_cast<int64_t>(sequences.size());
    for (int64_t b : sequences) {
        // The keys its rows see together (the window's, not the whole cache) are what is split.
        const auto [lo, hi] = key_range(p, b, 0, p.q_len(b));
        const int64_t splits = decode_splits(p, count, hi - lo);
        const int64_t rows = p.q_len(b) * p.group;
        const int64_t first_task = static_cast<int64_t>(tasks.size());
        max_splits = std::max(max_splits, splits);
        for (int64_t s = 0; s < splits; ++s) {
            // Even cut of [lo, hi); the last split holds the new tokens.
            tasks.push_back({b, s, splits, lo + (hi - lo) * s / splits, lo + (hi - lo) * (s + 1) / splits, state_rows,
                             rows, first_task});
            if (splits > 1) state_rows += p.num_kv_heads * rows;
        }
    }
    const DecodePath path = decode_path(isa);
    cpu::DecodeWork example;
    example.head0 = make_tile(p, sequences.front(), 0, 0, p.q_len(sequences.front()), 0, 0);
    example.num_kv_heads = p.num_kv_heads;
    GQA_LOG(GQA_LOG_DEBUG, "cpu decode: isa=%s threads=%d splits=%lld (requested %d) block=%lld tasks=%lld",
            path.name, threads, static_cast<long long>(max_splits), p.num_splits,
            static_cast<long long>(cpu::decode_block(example)), static_cast<long long>(tasks.size()));

    const int64_t d = p.head_dim;
    // Split states (every element is written before it is read) and the count of splits each
    // sequence has left, kept by the calling thread.
    thread_local std::vector<float> states;
    const size_t state_floats = static_cast<size_t>(state_rows * (d + 2));
    if (states.size() < state_floats) states.resize(state_floats);
    float* const acc = states.data();
    float* const maxes = acc + state_rows * d;
    float* const sums = maxes + state_rows;
    const std::unique_ptr<std::atomic<int32_t>[]> pending(new std::atomic<int32_t>[tasks.size()]);
    for (const DecodeTask& task : tasks) pending[task.first_task].store(static_cast<int32_t>(task.splits));
    cpu::thread_pool().run(static_cast<int64_t>(tasks.size()), threads, [&](int64_t index, int32_t /*worker*/) {
        const DecodeTask& task = tasks[static_cast<size_t>(index)];
        cpu::DecodeWork w;
        w.head0 = make_tile(p, task.b, 0, 0, p.q_len(task.b), task.key_begin, task.key_end);
        w.num_kv_heads = p.num_kv_heads;
        if (task.splits > 1) {  // partials: the merge adds the sink once and writes lse
            w.head0.out = nullptr;
            w.head0.sinks = nullptr;
            w.head0.lse = nullptr;
            w.part_acc = acc + task.first_row * d;
            w.part_max = maxes + task.first_row;
            w.part_sum = sums + task.first_row;
        }
        float* scratch = thread_scratch(cpu::decode_scratch_floats(w));
        path.kernel(w, scratch);
        // The last split of a sequence merges it; acq_rel orders every split's partials
        // before the merge that reads them.
        if (task.splits > 1 && pending[task.first_task].fetch_sub(1, std::memory_order_acq_rel) == 1) {
            merge_splits(p, tasks, static_cast<size_t>(task.first_task), acc, maxes, sums, scratch);
        }
    });
}

}  // namespace

int32_t cpu_num_threads() {
    const int32_t requested = g_requested_threads.load(std::memory_order_relaxed);
    if (requested > 0) return requested;
    int32_t automatic = g_automatic_threads.load(std::memory_order_relaxed);
    if (automatic == 0) {
        automatic = automatic_threads();
        g_automatic_threads.store(automatic, std::memory_order_relaxed);
    }
    return automatic;
}

void cpu_set_num_threads(int32_t n) {
    g_requested_threads.store(n > 0 ? n : 0, std::memory_order_relaxed);
    if (n <= 0) g_automatic_threads.store(0, std::memory_order_relaxed);  // re-read env / affinity
}

void cpu_attention(const Problem& p) {
    const cpu::IsaChoice& isa = cpu::selected_isa();
    // Every ISA, the scalar oracle included, uses the same decomposition and the same pool.
    const int32_t threads = cpu_num_threads();
    if (p.has_cache) append_to_caches(p);
    // Prefill tiles every sequence, decode splits every cache; the batched op sends each
    // sequence the way its q_len suits (q_len 0: nowhere, it is untouched).
    std::vector<int64_t> tiled, split;
    for (int64_t b = 0; b < p.batch; ++b) {
        const int64_t n = p.q_len(b);
        if (n == 0) continue;
        const bool decode_like = p.kind == Kind::Decode || (p.kind == Kind::Batch && n <= kDecodeMaxQueries);
        (decode_like ? split : tiled).push_back(b);
    }
    if (!tiled.empty()) run_prefill(p, tiled, isa, threads);
    if (!split.empty()) run_decode(p, split, isa, threads);
}

}  // namespace gqa
