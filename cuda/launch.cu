// launch.cu: the one place a kernel is enqueued (launchers.hpp: launch). Built for the CPU
// emulation (tests/gpu/emulate, GQA_EMULATE), the same call runs the kernel there.
#include <cuda_runtime.h>

#include "error.hpp"
#include "gqa.h"  // GQA_LOG_* levels
#include "launchers.hpp"
#include "log.hpp"

namespace gqa {
namespace gpu {

namespace {

template <typename Params>
void enqueue(void (*entry)(Params), const char* name, int head_dim, dim3 grid, dim3 block, size_t smem_bytes,
             const Params& p, cudaStream_t stream) {
#ifdef GQA_EMULATE
    emu_launch(entry, grid, block, p, smem_bytes, name);
#else
    entry<<<grid, block, smem_bytes, stream>>>(p);
#endif
    const cudaError_t e = cudaGetLastError();
    if (e != cudaSuccess)
        fail(GQA_STATUS_CUDA_ERROR, "launching %s (head_dim %d) failed: %s (%s)", name, head_dim,
             cudaGetErrorName(e), cudaGetErrorString(e));
}

}  // namespace

void launch(const Kernel& k, const AttnParams& p, cudaStream_t stream) {
    const dim3 grid = k.grid(p);
    const dim3 block(unsigned(k.threads));
    GQA_LOG(GQA_LOG_DEBUG,
            "cuda %s (head_dim %d, %d-stage ring): sequences %d..%d grid (%u,%u,%u) block %u, "
            "dynamic smem %d B, splits %d",
            k.name, k.head_dim, k.stages, p.chunk.first, p.chunk.first + p.chunk.count - 1, grid.x, grid.y,
            grid.z, block.x, k.smem_bytes, p.num_splits);
    enqueue(k.entry, k.name, k.head_dim, grid, block, size_t(k.smem_bytes), p, stream);
}

void launch(void (*entry)(MergeParams), const char* name, dim3 grid, dim3 block, const MergeParams& p,
            cudaStream_t stream) {
    GQA_LOG(GQA_LOG_DEBUG, "cuda %s: %lld states, %lld rows of head_dim %lld, grid %u block %u", name,
            (long long)p.num_states, (long long)p.rows, (long long)p.head_dim, grid.x, block.x);
    enqueue(entry, name, int(p.head_dim), grid, block, 0, p, stream);
}

}  // namespace gpu
}  // namespace gqa
