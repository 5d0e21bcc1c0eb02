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
#include <numeric>
#include <vector>

#include "backend.hpp"
#include "cpu/convert.hpp"
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
// Decode: aim for at least this many (sequence, split) tasks, and never split below
// kMinKeysPerSplit keys. Constants, so the split never depends on the thread count.
constexpr int64_t kDecodeTargetTasks = 32;
constexpr int64_t kMinKeysPerSplit = 256;
// Decode visits all KV heads of a chunk of cache positions spanning about this many bytes
// before moving on (see run_decode and decode_chunk).
constexpr int64_t kDecodeChunkBytes = 64 * 1024;

std::atomic<int32_t> g_requested_threads{0};  // 0: automatic
std::atomic<int32_t> g_automatic_threads{0};  // 0: not yet computed

int32_t automatic_threads() {
    if (const char* env = std::getenv("GQA_NUM_THREADS")) {
        char* end = nullptr;
        const long n = std::strtol(env, &end, 10);
        if (end != env && *end == '\0' && n >= 1 && n <= 1024) return static_cast<int32_t>(n);
        if (*env) {
            GQA_LOG(GQA_LOG_WARNING, "GQA_NUM_THREADS='%s' is not a thread count (1..1024); ignoring it", env);
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

// Writes the new tokens' K and V at cache positions [start_of(b), start_of(b) + seq_len).
void append_to_caches(const Problem& p) {
    const int64_t es = dtype_bytes(p.dtype);
    const int64_t row = p.num_kv_heads * p.head_dim;  // elements per token
    for (int64_t b = 0; b < p.batch; ++b) {
        const int64_t dst = (b * p.max_seq_len + p.start_of(b)) * row;
        const int64_t src = b * p.seq_len * row;
        const size_t bytes = static_cast<size_t>(p.seq_len * row * es);
        std::memcpy(at(p.k_cache, dst, es), at(p.k, src, es), bytes);
        std::memcpy(at(p.v_cache, dst, es), at(p.v, src, es), bytes);
    }
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
    const int64_t q_offset = ((b * p.seq_len + q0) * p.num_q_heads + h * p.group) * d;
    t.q = at(p.q, q_offset, es);
    t.q_stride = p.num_q_heads * d;
    t.num_queries = nq;
    t.kv_stride = p.num_kv_heads * d;
    if (p.has_cache) {
        const int64_t kv_offset = b * p.max_seq_len * t.kv_stride + h * d;
        t.k = at(p.k_cache, kv_offset, es);
        t.v = at(p.v_cache, kv_offset, es);
    } else {
        const int64_t kv_offset = b * p.seq_len * t.kv_stride + h * d;
        t.k = at(p.k, kv_offset, es);
        t.v = at(p.v, kv_offset, es);
    }
    t.key_begin = k0;
    t.key_end = k1;
    t.causal = p.causal;
    t.first_visible_end = (p.has_cache ? p.start_of(b) : 0) + q0 + 1;
    t.out = at(p.out, q_offset, es);
    t.out_stride = t.q_stride;
    return t;
}

// fp32 scratch owned by the calling OS thread (pool workers and user threads alike) and kept
// between calls: fresh buffers every call cost page faults comparable to a small decode.
float* thread_scratch(int64_t floats) {
    thread_local std::vector<float> buffer;
    if (static_cast<int64_t>(buffer.size()) < floats) buffer.resize(static_cast<size_t>(floats));
    return buffer.data();
}

void run_prefill(const Problem& p, const cpu::IsaChoice& isa, int32_t threads) {
    // Whole vectors of rows where the group allows it (a multiple of 32 rows), at least
    // kRowsPerTile rows.
    int64_t q_tile = 32 / std::gcd<int64_t, int64_t>(p.group, 32);
    while (q_tile * p.group < kRowsPerTile) q_tile *= 2;
    const int64_t tiles_per_head = (p.seq_len + q_tile - 1) / q_tile;
    const int64_t tasks = p.batch * p.num_kv_heads * tiles_per_head;
    GQA_LOG(GQA_LOG_DEBUG, "cpu prefill: isa=%s threads=%d query_tile=%lld (rows %lld) key_block=%lld tasks=%lld",
            isa.name, threads, static_cast<long long>(q_tile), static_cast<long long>(q_tile * p.group),
            static_cast<long long>(cpu::kKeyBlock), static_cast<long long>(tasks));
    cpu::thread_pool().run(tasks, threads, [&](int64_t task, int32_t /*worker*/) {
        // Last query tiles first: under a causal mask they see the most keys.
        const int64_t tile = tiles_per_head - 1 - task % tiles_per_head;
        const int64_t head = (task / tiles_per_head) % p.num_kv_heads;
        const int64_t b = task / (tiles_per_head * p.num_kv_heads);
        const int64_t q0 = tile * q_tile;
        const int64_t nq = std::min(q_tile, p.seq_len - q0);
        const cpu::Tile t = make_tile(p, b, head, q0, nq, 0, p.kv_len_of(b));
        isa.kernel(t, thread_scratch(cpu::tile_scratch_floats(t)));
    });
}

// Cache positions per decode chunk: 32..128, fewer when one position (all heads) is large.
// Measured (1 thread, NOTES.md 3): 32 beats 128 by ~20% for Phi-3/Llama-3 bf16 (2-6 KiB per
// position); 128 beats 32 by ~15% for Qwen (256 B per position).
int64_t decode_chunk(const Problem& p) {
    const int64_t position_bytes = p.num_kv_heads * p.head_dim * dtype_bytes(p.dtype);
    const int64_t fit = kDecodeChunkBytes / position_bytes / 16 * 16;
    return std::max<int64_t>(32, std::min<int64_t>(128, fit));
}

int64_t decode_splits(const Problem& p, int64_t kv_len) {
    int64_t splits;
    if (p.num_splits > 0) {
        splits = p.num_splits;
    } else {
        splits = (kDecodeTargetTasks + p.batch - 1) / p.batch;
        splits = std::min(splits, (kv_len + kMinKeysPerSplit - 1) / kMinKeysPerSplit);
    }
    return std::max<int64_t>(1, std::min(splits, kv_len));
}

// One decode task: a range of cache positions of one sequence, for every KV head. Its softmax
// state for head h is partial block first_block + h.
struct DecodeTask {
    int64_t b, split, splits, key_begin, key_end, first_block;
};

void prefetch_rows(const void* base, int64_t first, int64_t count, int64_t stride_bytes, int64_t row_bytes) {
    const char* row = static_cast<const char*>(base) + first * stride_bytes;
    for (int64_t j = 0; j < count; ++j, row += stride_bytes) {
        for (int64_t b = 0; b < row_bytes; b += 64) __builtin_prefetch(row + b);
    }
}

// Prefetch [offset, offset + bytes) of base toward L2 (locality 1, not into L1: a whole chunk
// would evict the block being computed). One prefetch per 64-byte line.
void prefetch_span_l2(const void* base, int64_t offset, int64_t bytes) {
    const char* p = static_cast<const char*>(base) + offset;
    for (int64_t b = 0; b < bytes; b += 64) __builtin_prefetch(p + b, 0, 1);
}

// Decode walks the cache position-major: for each chunk of decode_chunk() positions it visits
// every KV head before the next chunk. One head's rows are num_kv_heads * head_dim elements
// apart (6 KiB for Phi-3), so walking one head down the whole cache touches a new page per key
// and ran at half the bandwidth (NOTES.md); chunk by chunk, all heads read one contiguous span.
void run_decode(const Problem& p, const cpu::IsaChoice& isa, int32_t threads) {
    std::vector<DecodeTask> tasks;
    int64_t blocks = 0;
    int64_t max_splits = 1;
    for (int64_t b = 0; b < p.batch; ++b) {
        const int64_t kv_len = p.kv_len_of(b);
        const int64_t splits = decode_splits(p, kv_len);
        max_splits = std::max(max_splits, splits);
        for (int64_t s = 0; s < splits; ++s) {
            // Even cut of [0, kv_len); the last split holds the new token.
            tasks.push_back({b, s, splits, kv_len * s / splits, kv_len * (s + 1) / splits, blocks});
            blocks += p.num_kv_heads;
        }
    }
    GQA_LOG(GQA_LOG_DEBUG,
            "cpu decode: isa=%s threads=%d splits=%lld (requested %d) chunk=%lld key_block=%lld tasks=%lld",
            isa.name, threads, static_cast<long long>(max_splits), p.num_splits,
            static_cast<long long>(decode_chunk(p)), static_cast<long long>(cpu::kKeyBlock),
            static_cast<long long>(tasks.size()));

    const int64_t g = p.group;
    const int64_t d = p.head_dim;
    const int64_t es = dtype_bytes(p.dtype);
    const int64_t chunk = decode_chunk(p);
    const int64_t position_bytes = p.num_kv_heads * d * es;
    // Split states (every element is written before it is read), kept by the calling thread.
    thread_local std::vector<float> states;
    const size_t state_floats = static_cast<size_t>(blocks * g * (d + 2));
    if (states.size() < state_floats) states.resize(state_floats);
    float* const acc = states.data();
    float* const maxes = acc + blocks * g * d;
    float* const sums = maxes + blocks * g;
    cpu::thread_pool().run(static_cast<int64_t>(tasks.size()), threads, [&](int64_t index, int32_t /*worker*/) {
        const DecodeTask& task = tasks[static_cast<size_t>(index)];
        for (int64_t c0 = task.key_begin; c0 < task.key_end; c0 += chunk) {
            const int64_t c1 = std::min(task.key_end, c0 + chunk);
            const int64_t next_end = std::min(task.key_end, c1 + chunk);
            const int64_t ahead_bytes = (next_end - c1) * position_bytes;  // the next chunk, all heads
            const int64_t ahead_offset = (task.b * p.max_seq_len + c1) * position_bytes;
            for (int64_t h = 0; h < p.num_kv_heads; ++h) {
                // One head's share of the next chunk's contiguous K and V span, into L2: by the
                // time this task reaches that chunk it is all in cache. Prefetching only the next
                // key block just in time left decode stalled on memory (NOTES.md section 3c).
                const int64_t lo = ahead_bytes * h / p.num_kv_heads, hi = ahead_bytes * (h + 1) / p.num_kv_heads;
                prefetch_span_l2(p.k_cache, ahead_offset + lo, hi - lo);
                prefetch_span_l2(p.v_cache, ahead_offset + lo, hi - lo);
                cpu::Tile t = make_tile(p, task.b, h, 0, 1, c0, c1);
                if (h + 1 < p.num_kv_heads) {  // the next head's first block, while this one computes
                    const cpu::Tile next = make_tile(p, task.b, h + 1, 0, 1, c0, c1);
                    const int64_t n = std::min(cpu::kKeyBlock, c1 - c0);
                    prefetch_rows(next.k, c0, n, next.kv_stride * es, d * es);
                    prefetch_rows(next.v, c0, n, next.kv_stride * es, d * es);
                }
                const int64_t block = task.first_block + h;
                t.out = nullptr;
                t.part_acc = acc + block * g * d;
                t.part_max = maxes + block * g;
                t.part_sum = sums + block * g;
                t.resume = c0 != task.key_begin;
                isa.kernel(t, thread_scratch(cpu::tile_scratch_floats(t)));
            }
        }
    });

    // Merge the splits of each (sequence, head) in split order: fixed, so deterministic.
    const float neg_inf = -std::numeric_limits<float>::infinity();
    std::vector<float> merged(static_cast<size_t>(d));
    for (size_t first = 0; first < tasks.size(); first += static_cast<size_t>(tasks[first].splits)) {
        const int64_t b = tasks[first].b;
        const int64_t splits = tasks[first].splits;
        for (int64_t h = 0; h < p.num_kv_heads; ++h) {
            const cpu::Tile t = make_tile(p, b, h, 0, 1, 0, 0);
            for (int64_t row = 0; row < g; ++row) {
                float global_max = neg_inf;
                for (int64_t s = 0; s < splits; ++s) {
                    const int64_t block = tasks[first + static_cast<size_t>(s)].first_block + h;
                    global_max = std::fmax(global_max, maxes[static_cast<size_t>(block * g + row)]);
                }
                float total = 0.0f;
                std::fill(merged.begin(), merged.end(), 0.0f);
                for (int64_t s = 0; s < splits; ++s) {
                    const int64_t block = tasks[first + static_cast<size_t>(s)].first_block + h;
                    const float m = maxes[static_cast<size_t>(block * g + row)];
                    const float sum = sums[static_cast<size_t>(block * g + row)];
                    // A split whose logits were all -inf has sum 0 and adds nothing; a NaN
                    // anywhere in a split's state must still reach the output.
                    const float weight = m == neg_inf ? 0.0f : std::exp(m - (global_max == neg_inf ? 0.0f : global_max));
                    if (weight == 0.0f && sum == sum) continue;
                    total += sum * weight;
                    const float* a = acc + (block * g + row) * d;
                    for (int64_t e = 0; e < d; ++e) merged[static_cast<size_t>(e)] += a[e] * weight;
                }
                const float inv = total == 0.0f ? 0.0f : 1.0f / total;
                for (int64_t e = 0; e < d; ++e) {
                    cpu::store_f32(t.out, row * d + e, merged[static_cast<size_t>(e)] * inv, p.dtype);
                }
            }
        }
    }
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
    if (p.kind == Kind::Decode) {
        run_decode(p, isa, threads);
    } else {
        run_prefill(p, isa, threads);
    }
}

}  // namespace gqa
