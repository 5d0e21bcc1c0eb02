// backend.cu: the CUDA backend behind src/backend.hpp: device checks, support checks, the
// split-KV choice and kernel dispatch.
//
// A call never allocates and never synchronises (it is CUDA-graph capturable): per-sequence
// start positions travel by value in the kernel parameters (common.cuh, BatchChunk), and the
// split-KV partials live in the caller's workspace.
#include <cuda_runtime.h>

#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <string>

#include "backend.hpp"
#include "error.hpp"
#include "kv_tiles.cuh"  // decode_head_groups
#include "launchers.hpp"
#include "log.hpp"
#include "problem.hpp"

namespace gqa {
namespace {

using gpu::AttnParams;

constexpr int kSupportedHeadDims[] = {32, 64, 80, 96, 128, 256};
constexpr int64_t kMinKeysPerSplit = 64;      // two key tiles: shorter splits cost more than they gain
constexpr int64_t kBlocksPerSmTarget = 2;     // auto split: aim for this many blocks per SM
constexpr int64_t kMaxGridY = 65535;

bool head_dim_supported(int64_t d) {
    for (int s : kSupportedHeadDims)
        if (d == s) return true;
    return false;
}

// Counted with the SIMT kernel's (smaller) head groups: an upper bound for either kernel.
int64_t decode_head_groups(const Problem& p) {
    return gpu::decode_head_groups(p.group, gpu::kDecodeHeadsPerBlock);
}

int current_device() {
    int dev = 0;
    const cudaError_t e = cudaGetDevice(&dev);
    if (e != cudaSuccess) {
        cudaGetLastError();
        fail(GQA_STATUS_DEVICE_UNAVAILABLE, "cudaGetDevice failed: %s", cudaGetErrorString(e));
    }
    return dev;
}

int multiprocessor_count() {
    const int dev = current_device();
    int sms = 0;
    const cudaError_t e = cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, dev);
    if (e != cudaSuccess || sms <= 0) {
        cudaGetLastError();
        fail(GQA_STATUS_DEVICE_UNAVAILABLE, "cannot read the multiprocessor count of device %d: %s",
             dev, cudaGetErrorString(e));
    }
    return sms;
}

// Splits that fill the GPU when batch x kv heads alone does not. Independent of the cache
// length, so that gqa_decode_workspace_size() can be asked once per model shape.
int64_t auto_split_limit(const Problem& p, int sms) {
    const int64_t blocks = p.batch * p.num_kv_heads * decode_head_groups(p);
    const int64_t target = kBlocksPerSmTarget * sms;
    if (blocks >= target) return 1;
    return std::min<int64_t>(kMaxSplits, (target + blocks - 1) / blocks);
}

int64_t longest_kv(const Problem& p) {
    int64_t longest = 0;
    for (int64_t b = 0; b < p.batch; ++b) longest = std::max(longest, p.start_of(b) + 1);
    return longest;
}

// Splits the workspace must hold for this call's configuration (1: none).
int64_t workspace_splits(const Problem& p) {
    if (p.num_splits == 1) return 1;
    if (p.num_splits > 1) return std::min<int64_t>(p.num_splits, kMaxSplits);
    return auto_split_limit(p, multiprocessor_count());
}

// The splits this call uses: none without a workspace; an explicit request as given; the
// automatic choice capped so that each split keeps >= kMinKeysPerSplit keys of the longest
// sequence and the partials fit the workspace.
int64_t decode_splits(const Problem& p) {
    if (p.workspace == nullptr || p.num_splits == 1) return 1;
    if (p.num_splits > 1) return std::min<int64_t>(p.num_splits, kMaxSplits);
    int64_t s = auto_split_limit(p, multiprocessor_count());
    s = std::min(s, std::max<int64_t>(1, (longest_kv(p) + kMinKeysPerSplit - 1) / kMinKeysPerSplit));
    const uint64_t per_split = gpu::decode_partial_bytes(p.batch, p.num_q_heads, p.head_dim, 1);
    s = std::min<int64_t>(s, int64_t(p.workspace_bytes / per_split));
    return std::max<int64_t>(s, 1);
}

// A tensor must be device (or managed) memory of the current device and 16-byte aligned.
void check_device_pointer(const void* ptr, const char* name, int dev) {
    cudaPointerAttributes attr{};
    const cudaError_t e = cudaPointerGetAttributes(&attr, ptr);
    if (e != cudaSuccess) cudaGetLastError();  // e.g. a pointer CUDA never saw
    const bool device_memory =
        e == cudaSuccess && (attr.type == cudaMemoryTypeDevice || attr.type == cudaMemoryTypeManaged);
    if (!device_memory)
        fail(GQA_STATUS_INVALID_ARGUMENT,
             "%s (%p) is not CUDA device memory, but device is GQA_DEVICE_CUDA", name, ptr);
    if (attr.type == cudaMemoryTypeDevice && attr.device != dev)
        fail(GQA_STATUS_INVALID_ARGUMENT, "%s (%p) is memory of CUDA device %d, not of the current device %d",
             name, ptr, attr.device, dev);
    if (reinterpret_cast<uintptr_t>(ptr) % 16 != 0)
        fail(GQA_STATUS_UNSUPPORTED, "%s (%p) is not 16-byte aligned, which the CUDA kernels need", name,
             ptr);
}

void check_launch(const char* kernel) {
    const cudaError_t e = cudaGetLastError();
    if (e != cudaSuccess)
        fail(GQA_STATUS_CUDA_ERROR, "launching %s failed: %s (%s)", kernel, cudaGetErrorName(e),
             cudaGetErrorString(e));
}

using Launcher = void (*)(const AttnParams&, cudaStream_t);

// Kernel choice from the environment, read at every call so that a test can switch in-process:
// GQA_CUDA_PREFILL and GQA_CUDA_DECODE = "tensor_core" or "simt" (the SIMT kernels are the
// reference paths, to compare or bisect); unset or "" means the default. Anything else is an
// error before anything is written.
enum class KernelChoice { Default, TensorCore, Simt };

KernelChoice kernel_choice(const char* variable) {
    const char* choice = std::getenv(variable);
    if (choice == nullptr || *choice == '\0') return KernelChoice::Default;
    if (std::strcmp(choice, "tensor_core") == 0) return KernelChoice::TensorCore;
    if (std::strcmp(choice, "simt") == 0) return KernelChoice::Simt;
    fail(GQA_STATUS_INVALID_ARGUMENT, "environment variable %s (\"%s\") must be \"tensor_core\" or "
         "\"simt\"", variable, choice);
}

// Prefill: tensor cores unless asked otherwise.
template <typename T, int D>
Launcher prefill_for() {
    return kernel_choice("GQA_CUDA_PREFILL") == KernelChoice::Simt ? gpu::launch_prefill<T, D>
                                                                   : gpu::launch_prefill_tc<T, D>;
}

// Decode: tensor cores from kDecodeTcMinGroup query heads per KV head, where the SIMT kernel's
// 2 x group FMAs per loaded element would outrun the fp32 units (cuda/README.md); SIMT below.
constexpr int64_t kDecodeTcMinGroup = 4;

template <typename T, int D>
Launcher decode_for(int64_t group) {
    const KernelChoice c = kernel_choice("GQA_CUDA_DECODE");
    const bool tc = c == KernelChoice::TensorCore || (c == KernelChoice::Default && group >= kDecodeTcMinGroup);
    return tc ? gpu::launch_decode_tc<T, D> : gpu::launch_decode<T, D>;
}

// The kernel instantiation for a (dtype, head_dim), looked up before anything is launched.
template <typename T>
Launcher kernel_for(Kind kind, int64_t head_dim, int64_t group) {
    const bool prefill = kind == Kind::Prefill;
    switch (head_dim) {
        case 32: return prefill ? prefill_for<T, 32>() : decode_for<T, 32>(group);
        case 64: return prefill ? prefill_for<T, 64>() : decode_for<T, 64>(group);
        case 80: return prefill ? prefill_for<T, 80>() : decode_for<T, 80>(group);
        case 96: return prefill ? prefill_for<T, 96>() : decode_for<T, 96>(group);
        case 128: return prefill ? prefill_for<T, 128>() : decode_for<T, 128>(group);
        case 256: return prefill ? prefill_for<T, 256>() : decode_for<T, 256>(group);
        default: fail(GQA_STATUS_INTERNAL_ERROR, "no CUDA kernel for head_dim %lld", (long long)head_dim);
    }
}

}  // namespace

bool cuda_built() { return true; }

bool cuda_usable(std::string* why) {
    int count = 0;
    const cudaError_t e = cudaGetDeviceCount(&count);
    if (e != cudaSuccess) {
        cudaGetLastError();  // do not leave the error for a later cudaGetLastError()
        if (why)
            *why = format("no usable CUDA device: cudaGetDeviceCount failed: %s (%s); libgqa needs an "
                          "NVIDIA driver that supports CUDA %d.%d",
                          cudaGetErrorName(e), cudaGetErrorString(e), CUDART_VERSION / 1000,
                          CUDART_VERSION % 1000 / 10);
        return false;
    }
    if (count == 0) {
        if (why) *why = "no CUDA device is present";
        return false;
    }
    int dev = 0, major = 0, minor = 0;
    cudaError_t e2 = cudaGetDevice(&dev);
    if (e2 == cudaSuccess) e2 = cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, dev);
    if (e2 == cudaSuccess) e2 = cudaDeviceGetAttribute(&minor, cudaDevAttrComputeCapabilityMinor, dev);
    if (e2 != cudaSuccess) {
        cudaGetLastError();
        if (why) *why = format("cannot query the current CUDA device: %s", cudaGetErrorString(e2));
        return false;
    }
    if (major < 8) {
        if (why) *why = format("CUDA device %d has compute capability %d.%d; libgqa's kernels need 8.0 or newer",
                               dev, major, minor);
        return false;
    }
    return true;
}

void cuda_check_supported(const Problem& p) {
    std::string why;
    if (!cuda_usable(&why)) fail(GQA_STATUS_DEVICE_UNAVAILABLE, "device is GQA_DEVICE_CUDA but %s", why.c_str());
    if (p.dtype == DType::F32)
        fail(GQA_STATUS_UNSUPPORTED, "dtype (GQA_DTYPE_F32) is supported on the CPU only; use f16 or bf16 on CUDA");
    if (!head_dim_supported(p.head_dim))
        fail(GQA_STATUS_UNSUPPORTED,
             "head_dim (%lld) has no CUDA kernel; supported: 32, 64, 80, 96, 128, 256",
             (long long)p.head_dim);
    if (p.kind == Kind::Prefill && p.num_q_heads > kMaxGridY)
        fail(GQA_STATUS_UNSUPPORTED, "num_q_heads (%lld) exceeds the CUDA prefill limit %lld",
             (long long)p.num_q_heads, (long long)kMaxGridY);
    if (p.kind == Kind::Decode && p.num_kv_heads * decode_head_groups(p) > kMaxGridY)
        fail(GQA_STATUS_UNSUPPORTED, "num_q_heads (%lld) with num_kv_heads (%lld) exceeds the CUDA decode grid limit",
             (long long)p.num_q_heads, (long long)p.num_kv_heads);

    const int dev = current_device();
    check_device_pointer(p.out, "out", dev);
    check_device_pointer(p.q, "q", dev);
    check_device_pointer(p.k, "k", dev);
    check_device_pointer(p.v, "v", dev);
    if (p.has_cache) {
        check_device_pointer(p.k_cache, "k_cache", dev);
        check_device_pointer(p.v_cache, "v_cache", dev);
    }
    if (p.kind == Kind::Decode && p.workspace != nullptr) {
        check_device_pointer(p.workspace, "workspace", dev);
        const uint64_t need = cuda_decode_workspace_bytes(p);
        if (p.workspace_bytes < need)
            fail(GQA_STATUS_INVALID_ARGUMENT,
                 "workspace_bytes (%llu) is smaller than the %llu bytes num_splits (%d) needs; "
                 "see gqa_decode_workspace_size()",
                 (unsigned long long)p.workspace_bytes, (unsigned long long)need, p.num_splits);
    }
}

uint64_t cuda_decode_workspace_bytes(const Problem& p) {
    const int64_t splits = workspace_splits(p);
    if (splits <= 1) return 0;
    return gpu::decode_partial_bytes(p.batch, p.num_q_heads, p.head_dim, splits);
}

void cuda_attention(const Problem& p) {
    cudaStream_t stream = static_cast<cudaStream_t>(p.stream);
    AttnParams a{};
    a.out = p.out;
    a.q = p.q;
    a.k = p.k;
    a.v = p.v;
    a.k_cache = p.has_cache ? p.k_cache : nullptr;
    a.v_cache = p.has_cache ? p.v_cache : nullptr;
    a.seq_len = p.seq_len;
    a.num_q_heads = p.num_q_heads;
    a.num_kv_heads = p.num_kv_heads;
    a.group = p.group;
    a.head_dim = p.head_dim;
    a.max_seq_len = p.has_cache ? p.max_seq_len : 0;
    a.has_cache = p.has_cache ? 1 : 0;
    a.causal = p.causal ? 1 : 0;
    a.scale_log2 = p.scale * 1.4426950408889634f;  // log2(e)
    a.num_splits = 1;
    const bool bf16 = p.dtype == DType::BF16;

    if (p.kind == Kind::Decode) {
        const int64_t splits = decode_splits(p);
        a.num_splits = int32_t(splits);
        if (splits > 1) {
            a.partial_o = static_cast<float*>(p.workspace);
            a.partial_ml = reinterpret_cast<float2*>(
                static_cast<char*>(p.workspace) +
                uint64_t(p.batch * p.num_q_heads * splits) * uint64_t(p.head_dim) * sizeof(float));
        }
        GQA_LOG(GQA_LOG_DEBUG, "cuda decode: %lld split(s) (num_splits %d, workspace %llu B)",
                (long long)splits, p.num_splits, (unsigned long long)p.workspace_bytes);
    }

    const Launcher attention = bf16 ? kernel_for<__nv_bfloat16>(p.kind, p.head_dim, p.group)
                                    : kernel_for<__half>(p.kind, p.head_dim, p.group);
    const Launcher combine = bf16 ? gpu::launch_combine<__nv_bfloat16> : gpu::launch_combine<__half>;

    for (int64_t first = 0; first < p.batch; first += gpu::kMaxSeqsPerLaunch) {
        const int64_t count = std::min<int64_t>(gpu::kMaxSeqsPerLaunch, p.batch - first);
        a.chunk.first = int32_t(first);
        a.chunk.count = int32_t(count);
        for (int64_t i = 0; i < count; ++i)
            a.chunk.start[i] = p.has_cache ? int32_t(p.start_of(first + i)) : 0;

        if (p.kind == Kind::Prefill && p.has_cache) {
            gpu::launch_append_kv(a, stream);
            check_launch("append_kv_kernel");
        }
        attention(a, stream);
        check_launch(p.kind == Kind::Prefill ? "prefill_kernel" : "decode_kernel");
        if (a.num_splits > 1) {
            combine(a, stream);
            check_launch("combine_kernel");
        }
    }
}

}  // namespace gqa
