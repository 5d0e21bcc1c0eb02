// append_kv.cu: prefill's cache write. Copies the seq_len new k and v rows of each sequence
// into the caches at [start, start + seq_len), 16 bytes per thread.
//
// It is a plain byte copy (any 2-byte dtype). The prefill kernels read the new tokens from k
// and v, never from these cache rows, so the two kernels do not depend on each other's order.
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
    const int64_t vecs_per_row = p.head_dim / kVec;  // 16-byte vectors per (token, kv head)
    const int64_t vecs_per_seq = p.seq_len * p.num_kv_heads * vecs_per_row;
    const int bl = blockIdx.y;
    const int64_t b = int64_t(p.chunk.first) + bl;
    const int64_t start = p.chunk.start[bl];
    const Elem* k = static_cast<const Elem*>(p.k);
    const Elem* v = static_cast<const Elem*>(p.v);
    Elem* k_cache = static_cast<Elem*>(p.k_cache);
    Elem* v_cache = static_cast<Elem*>(p.v_cache);
    for (int64_t e = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; e < vecs_per_seq;
         e += int64_t(gridDim.x) * blockDim.x) {
        const int64_t c = e % vecs_per_row, row = e / vecs_per_row;
        const int64_t kvh = row % p.num_kv_heads, t = row / p.num_kv_heads;
        const int64_t dst = p.cache_row(b, start + t, kvh) + c * kVec;
        store16(k_cache + dst, load16(k + p.new_k_row(b, t, kvh) + c * kVec));
        store16(v_cache + dst, load16(v + p.new_v_row(b, t, kvh) + c * kVec));
    }
}

// Enough blocks per sequence to cover it, one thread per 16 bytes of a sequence's rows.
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
