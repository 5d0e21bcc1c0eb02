// launch.cu: the one place a kernel is enqueued (launchers.hpp: launch). Built for the CPU
// emulation (tests/gpu/emulate, GQA_EMULATE), the same call runs the kernel there.
#include <cuda_runtime.h>

#include "error.hpp"
#include "gqa.h"  // GQA_LOG_* levels
#include "launchers.hpp"
#include "log.hpp"

namespace gqa {
namespace gpu {

void launch(const Kernel& k, const AttnParams& p, cudaStream_t stream) {
    const dim3 grid = k.grid(p);
    const dim3 block(unsigned(k.threads));
    GQA_LOG(GQA_LOG_DEBUG,
            "cuda %s (head_dim %d, %d-stage ring): sequences %d..%d grid (%u,%u,%u) block %u, "
            "dynamic smem %d B, splits %d",
            k.name, k.head_dim, k.stages, p.chunk.first, p.chunk.first + p.chunk.count - 1, grid.x, grid.y,
            grid.z, block.x, k.smem_bytes, p.num_splits);
#ifdef GQA_EMULATE
    emu_launch(k.entry, grid, block, p, size_t(k.smem_bytes), k.name);
#else
    k.entry<<<grid, block, size_t(k.smem_bytes), stream>>>(p);
#endif
    const cudaError_t e = cudaGetLastError();
    if (e != cudaSuccess)
        fail(GQA_STATUS_CUDA_ERROR, "launching %s (head_dim %d) failed: %s (%s)", k.name, k.head_dim,
             cudaGetErrorName(e), cudaGetErrorString(e));
}

}  // namespace gpu
}  // namespace gqa
