// append_kv.cu: prefill's cache write. Copies the seq_len new k and v rows of each sequence
// into the caches at [start, start + seq_len), 16 bytes per thread.
//
// It is a plain byte copy (any 2-byte dtype). The prefill kernel reads the new tokens from k
// and v, never from these cache rows, so the two kernels do not depend on each other's order.
#include "common.cuh"
#include "launchers.hpp"
#include "log.hpp"

namespace gqa {
namespace gpu {

__global__ void append_kv_kernel(const __grid_constant__ AttnParams p) {
    const int64_t vecs_per_row = p.head_dim / kVec;  // 16-byte vectors per (token, kv head)
    const int64_t vecs_per_seq = p.seq_len * p.num_kv_heads * vecs_per_row;
    const int bl = blockIdx.y;
    const int64_t b = int64_t(p.chunk.first) + bl;
    const int64_t start = p.chunk.start[bl];
    const uint4* k = static_cast<const uint4*>(p.k);
    const uint4* v = static_cast<const uint4*>(p.v);
    uint4* k_cache = static_cast<uint4*>(p.k_cache);
    uint4* v_cache = static_cast<uint4*>(p.v_cache);
    for (int64_t e = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; e < vecs_per_seq;
         e += int64_t(gridDim.x) * blockDim.x) {
        // Within a sequence, k is [seq_len][num_kv_heads][head_dim] and so is the cache slice
        // starting at row `start`: the same element offset e on both sides.
        const int64_t src = b * vecs_per_seq + e;
        const int64_t dst = (b * p.max_seq_len + start) * p.num_kv_heads * vecs_per_row + e;
        k_cache[dst] = k[src];
        v_cache[dst] = v[src];
    }
}

void launch_append_kv(const AttnParams& p, cudaStream_t stream) {
    const int64_t vecs_per_seq = p.seq_len * p.num_kv_heads * (p.head_dim / kVec);
    const int threads = 256;
    // Enough blocks per sequence to cover it (grid-stride beyond 1024 blocks).
    const int64_t blocks = (vecs_per_seq + threads - 1) / threads;
    const dim3 grid(unsigned(blocks < 1024 ? blocks : 1024), unsigned(p.chunk.count));
    GQA_LOG(GQA_LOG_DEBUG,
            "cuda append_kv_kernel: sequences %d..%d grid (%u,%u,1) block %d smem 0 B", p.chunk.first,
            p.chunk.first + p.chunk.count - 1, grid.x, grid.y, threads);
    append_kv_kernel<<<grid, threads, 0, stream>>>(p);
}

}  // namespace gpu
}  // namespace gqa
