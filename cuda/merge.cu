// merge.cu: gqa_merge_states on CUDA (validated by src/merge.cpp first). Each output element
// (row, d) is the lse-weighted sum of its partials, summed in partial order in fp32 by one
// thread, with the arithmetic of the CPU's (src/cpu/merge.cpp): base = max(sink, lses), a
// partial with lse -inf is not read and weighs exactly 0, the sink is added once. No atomics,
// no shared memory: deterministic, and each thread reads its row's lses from the L1 cache.
#include <cuda_runtime.h>

#include <algorithm>

#include "device_facts.hpp"
#include "error.hpp"
#include "launchers.hpp"
#include "merge.hpp"

namespace gqa {
namespace gpu {

constexpr int kMergeThreads = 128;
constexpr int64_t kMaxMergeBlocks = 8192;  // grid-stride beyond

template <typename T>
__device__ float load_elem(const void* base, int64_t i);
template <>
__device__ float load_elem<float>(const void* base, int64_t i) { return static_cast<const float*>(base)[i]; }
template <>
__device__ float load_elem<__half>(const void* base, int64_t i) { return __half2float(static_cast<const __half*>(base)[i]); }
template <>
__device__ float load_elem<__nv_bfloat16>(const void* base, int64_t i) {
    return __bfloat162float(static_cast<const __nv_bfloat16*>(base)[i]);
}
__device__ void store_elem(float* base, int64_t i, float x) { base[i] = x; }
__device__ void store_elem(__half* base, int64_t i, float x) { base[i] = __float2half_rn(x); }
__device__ void store_elem(__nv_bfloat16* base, int64_t i, float x) { base[i] = __float2bfloat16_rn(x); }

// Output element e = row * head_dim + d, row = (b * seq_len + s) * num_heads + h; its lse index
// (b * num_heads + h) * seq_len + s.
template <typename T>
__global__ void __launch_bounds__(kMergeThreads) merge_states_kernel(const __grid_constant__ MergeParams p) {
    const int64_t total = p.rows * p.head_dim;
    for (int64_t e = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; e < total; e += int64_t(gridDim.x) * blockDim.x) {
        const int64_t row = e / p.head_dim, d = e % p.head_dim;
        const int64_t h = row % p.num_heads, s = (row / p.num_heads) % p.seq_len, b = row / (p.num_heads * p.seq_len);
        const int64_t lse_index = (b * p.num_heads + h) * p.seq_len + s;
        float top = p.sinks ? p.sinks[h] : -INFINITY;
        for (int64_t n = 0; n < p.num_states; ++n) top = fmaxf(top, p.lses[n * p.rows + lse_index]);
        const float base = top == -INFINITY ? 0.0f : top;  // nothing seen anywhere: no -inf - -inf
        float weights = p.sinks ? expf(p.sinks[h] - base) : 0.0f;  // the sink, added once
        float acc = 0.0f;
        for (int64_t n = 0; n < p.num_states; ++n) {
            const float lse = p.lses[n * p.rows + lse_index];
            if (lse == -INFINITY) continue;  // an empty partial weighs exactly 0; its state is not read
            const float w = expf(lse - base);  // NaN lse: NaN weight, NaN row (not hidden)
            weights += w;
            acc += w * load_elem<T>(p.states, (n * p.rows + row) * p.head_dim + d);
        }
        store_elem(static_cast<T*>(p.out), e, weights == 0.0f ? 0.0f : acc / weights);
        if (p.lse_out && d == 0) p.lse_out[lse_index] = weights == 0.0f ? -INFINITY : base + logf(weights);
    }
}

}  // namespace gpu

void cuda_check_merge(const MergeProblem& m) {
    std::string why;
    const DeviceFacts* dev = current_device_facts(&why);
    if (!dev) fail(GQA_STATUS_DEVICE_UNAVAILABLE, "device is GQA_DEVICE_CUDA but %s", why.c_str());
    const size_t eb = size_t(dtype_bytes(m.dtype));  // element loads: element alignment is enough
    check_device_pointer(m.out, "out", *dev, eb);
    check_device_pointer(m.states, "states", *dev, eb);
    check_device_pointer(m.lses, "lses", *dev, sizeof(float));
    if (m.lse_out) check_device_pointer(m.lse_out, "lse_out", *dev, sizeof(float));
    if (m.sinks) check_device_pointer(m.sinks, "sinks", *dev, sizeof(float));
}

void cuda_merge_states(const MergeProblem& m) {
    gpu::MergeParams p{m.out, m.lse_out, m.states, m.lses, m.sinks, m.num_states,
                       m.batch * m.seq_len * m.num_heads, m.num_heads, m.seq_len, m.head_dim};
    const int64_t blocks = std::min(gpu::kMaxMergeBlocks, (p.rows * p.head_dim + gpu::kMergeThreads - 1) / gpu::kMergeThreads);
    const dim3 grid{unsigned(blocks)}, block{unsigned(gpu::kMergeThreads)};
    cudaStream_t stream = static_cast<cudaStream_t>(m.stream);
    switch (m.dtype) {
        case DType::F16: gpu::launch(&gpu::merge_states_kernel<__half>, "merge_states_kernel", grid, block, p, stream); break;
        case DType::BF16: gpu::launch(&gpu::merge_states_kernel<__nv_bfloat16>, "merge_states_kernel", grid, block, p, stream); break;
        case DType::F32: gpu::launch(&gpu::merge_states_kernel<float>, "merge_states_kernel", grid, block, p, stream); break;
    }
}

}  // namespace gqa
