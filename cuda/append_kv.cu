// append_kv.cu: the cache write of prefill and of the batched op's longer sequences (the
// decode kernels append their own). Copies the q_len new k and v rows of each sequence into the
// caches at positions [start, start + q_len), through the page table when there is one, 16
// bytes per thread; a row whose page id is outside the pool is skipped and reported.
//
// It is a plain byte copy (any 2-byte dtype). The attention kernels read the new tokens from k
// and v, never from these cache rows, so the kernels do not depend on each other's order.
#include "common.cuh"
#include "launchers.hpp"

namespace gqa {
namespace gpu {

struct AppendKvShape {
    static constexpr int kThreads = 256;
    static constexpr size_t kSmemBytes = 0;
    static constexpr int kMaxBlocksPerSeq = 1024;  // grid-stride beyond
};

__global__ void __launch_bounds__(AppendKvShape::kThreads) append_kv_kernel(const __grid_constant__ AttnParams p) {
    using Elem = uint16_t;  // any 2-byte dtype: bits are copied
    const Sequence seq = p.sequence(blockIdx.y);
    if (!seq.run || seq.q_len <= p.decode_max_q) return;  // nothing to do, or the decode kernel's
    const int64_t vecs_per_row = p.head_dim / kVec;  // 16-byte vectors per (token, kv head)
    const int64_t vecs_per_seq = seq.q_len * p.num_kv_heads * vecs_per_row;
    const Elem* k = static_cast<const Elem*>(p.k);
    const Elem* v = static_cast<const Elem*>(p.v);
    Elem* k_cache = static_cast<Elem*>(p.k_cache);
    Elem* v_cache = static_cast<Elem*>(p.v_cache);
    for (int64_t e = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; e < vecs_per_seq;
         e += int64_t(gridDim.x) * blockDim.x) {
        const int64_t c = e % vecs_per_row, row = e / vecs_per_row;
        const int64_t kvh = row % p.num_kv_heads, t = row / p.num_kv_heads;
        const int64_t dst = p.cache_row(seq, seq.start + t, kvh);
        if (dst < 0) {
            if (c == 0) p.report(GQA_BATCH_FLAG_BAD_PAGE);
            continue;
        }
        store16(k_cache + dst + c * kVec, load16(k + p.new_k_row(seq, t, kvh) + c * kVec));
        store16(v_cache + dst + c * kVec, load16(v + p.new_v_row(seq, t, kvh) + c * kVec));
    }
}

// Enough blocks per sequence to cover its longest possible q_len (seq_len), one thread per 16
// bytes of its rows.
dim3 append_kv_grid(const AttnParams& p) {
    const int64_t vecs_per_seq = p.seq_len * p.num_kv_heads * (p.head_dim / kVec);
    const int64_t blocks = (vecs_per_seq + AppendKvShape::kThreads - 1) / AppendKvShape::kThreads;
    return dim3(unsigned(blocks < AppendKvShape::kMaxBlocksPerSeq ? blocks : AppendKvShape::kMaxBlocksPerSeq),
                unsigned(p.chunk.count));
}

Kernel select_append_kv() {
    return kernel_variant<AppendKvShape, &append_kv_kernel>("append_kv_kernel", 0, 0, append_kv_grid);
}

}  // namespace gpu
}  // namespace gqa
