// backend.cu: the CUDA backend behind src/backend.hpp: the support checks (all of them, once,
// in cuda_check_supported), the split-KV choice, the kernels of a call and their launches.
//
// A call never allocates and never synchronises (it is CUDA-graph capturable): per-sequence
// start positions travel by value in the kernel parameters (common.cuh, BatchChunk), and the
// split-KV partials live in the caller's workspace. Everything that can fail (device facts,
// kernel choice and shared-memory fit, attributes, occupancy) is done before the first launch,
// so a rejected call writes nothing.
#include <cuda_runtime.h>

#include <algorithm>
#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <string>

#include "backend.hpp"
#include "device_facts.hpp"
#include "error.hpp"
#include "instances/head_dims.h"  // GQA_CUDA_HEAD_DIMS, written by instances/generate.py
#include "kv_tiles.cuh"           // decode_head_groups
#include "launchers.hpp"
#include "log.hpp"
#include "problem.hpp"

namespace gqa {
namespace {

using gpu::AttnParams;
using gpu::Kernel;

// Split-KV: a decode's keys cut into partitions, one block each, merged by combine_kernel.
constexpr int64_t kBlocksPerSmTarget = 2;       // automatic partitions: aim for this many blocks per SM
constexpr int64_t kMaxGridY = 65535;

constexpr int kHeadDims[] = {
#define GQA_HEAD_DIM_ITEM(d) d,
    GQA_CUDA_HEAD_DIMS(GQA_HEAD_DIM_ITEM)
#undef GQA_HEAD_DIM_ITEM
};

bool head_dim_supported(int64_t d) {
    for (int s : kHeadDims)
        if (d == s) return true;
    return false;
}

// Which kernels a call runs (host shape fields only: the batched op's lengths are on the device).
// The batched op runs every sequence of 1..kDecodeMaxQLen new tokens on the decode kernel and
// longer ones on the prefill kernel (each block skips the other kind), so a batch whose
// max_q_len is at most kDecodeMaxQLen launches the decode kernel alone.
bool runs_prefill_kernel(const Problem& p) {
    return p.kind == Kind::Prefill || (p.kind == Kind::Batch && p.seq_len > gpu::kDecodeMaxQLen);
}
bool runs_decode_kernel(const Problem& p) {
    return p.kind == Kind::Decode || (p.kind == Kind::Batch && p.seq_len > 0);
}
// The most new tokens of a sequence the decode kernel serves (AttnParams::decode_max_q).
int64_t decode_max_q(const Problem& p) {
    if (p.kind == Kind::Prefill) return 0;
    if (p.kind == Kind::Decode) return 1;
    return std::min<int64_t>(p.seq_len, gpu::kDecodeMaxQLen);
}
// Rows of one KV head in the decode kernel: its (new token, query head) pairs.
int64_t decode_rows(const Problem& p) { return p.group * decode_max_q(p); }

// Blocks per KV head, counted with the SIMT kernel's (smaller) row groups: an upper bound for
// either decode kernel.
int64_t max_decode_head_groups(const Problem& p) {
    return gpu::decode_head_groups(decode_rows(p), gpu::kDecodeHeadsPerBlock);
}

// Partitions that fill the GPU when batch x kv heads alone does not. Independent of the cache
// length, so that the workspace size can be asked once per model shape.
int64_t auto_kv_partition_limit(const Problem& p, const DeviceFacts& dev) {
    const int64_t blocks = p.batch * p.num_kv_heads * max_decode_head_groups(p);
    const int64_t target = kBlocksPerSmTarget * dev.sm_count;
    if (blocks >= target) return 1;
    return std::min<int64_t>(kMaxSplits, (target + blocks - 1) / blocks);  // kMaxSplits: problem.hpp
}

// Partitions the workspace must hold for this call's configuration (1: none).
int64_t workspace_kv_partitions(const Problem& p, const DeviceFacts& dev) {
    if (!runs_decode_kernel(p) || p.num_splits == 1) return 1;
    if (p.num_splits > 1) return std::min<int64_t>(p.num_splits, kMaxSplits);
    return auto_kv_partition_limit(p, dev);
}

// The most keys a decode query of the call sees (its window of its sequence's keys).
int64_t longest_kv(const Problem& p) {
    int64_t longest = 0;
    for (int64_t b = 0; b < p.batch; ++b) {
        const int64_t pos = p.start_of(b);
        longest = std::max(longest, pos + 1 - p.first_key(pos));
    }
    return longest;
}

// The partitions this call uses: none without a workspace; an explicit request as given; the
// automatic choice capped so that each keeps >= kMinKeysPerSplit keys of the longest sequence
// (decode: the host knows the lengths; the batched op: each sequence is capped on the device,
// AttnParams::splits_of). (cuda_check_supported has checked that the workspace holds them.)
int64_t kv_partitions(const Problem& p, const DeviceFacts& dev) {
    if (!runs_decode_kernel(p) || p.workspace == nullptr || p.num_splits == 1) return 1;
    if (p.num_splits > 1) return std::min<int64_t>(p.num_splits, kMaxSplits);
    if (p.kind == Kind::Batch) return auto_kv_partition_limit(p, dev);
    const int64_t by_length = (longest_kv(p) + gpu::kMinKeysPerSplit - 1) / gpu::kMinKeysPerSplit;
    return std::max<int64_t>(1, std::min(auto_kv_partition_limit(p, dev), by_length));
}

// Kernel choice from the environment, read once per call so that a test can switch in-process:
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

// GQA_CUDA_SMEM_LIMIT=<bytes>: choose kernels as if a block could have at most this much
// shared memory (never more than the device allows), so that a large GPU runs the variants
// of a smaller one, e.g. 101376 for a 99 KB device. Unset or "": the device's limit. Read once
// per call, like the kernel choice; anything but a positive decimal integer is an error
// before anything is written.
int smem_limit(const DeviceFacts& dev) {
    const char* text = std::getenv("GQA_CUDA_SMEM_LIMIT");
    if (text == nullptr || *text == '\0') return dev.smem_per_block;
    char* end = nullptr;
    errno = 0;
    const long long bytes = std::strtoll(text, &end, 10);
    if (*text < '0' || *text > '9' || *end != '\0' || errno != 0 || bytes <= 0)
        fail(GQA_STATUS_INVALID_ARGUMENT,
             "environment variable GQA_CUDA_SMEM_LIMIT (\"%s\") must be a positive number of bytes", text);
    return int(std::min<long long>(bytes, dev.smem_per_block));
}

// Decode runs on tensor cores from kDecodeTcMinRows rows per KV head (query heads x new
// tokens), where the SIMT kernel's 2 x rows FMAs per loaded element would outrun the fp32 units
// (cuda/README.md).
constexpr int64_t kDecodeTcMinRows = 4;

// The variant of an attention kernel for (dtype, head_dim) that fits `limit` bytes per block.
template <typename T>
Kernel attention_kernel(bool prefill, bool tensor_cores, int64_t head_dim, int limit) {
    switch (head_dim) {
#define GQA_HEAD_DIM_CASE(D)                                                                       \
    case D:                                                                                        \
        if (prefill) return tensor_cores ? gpu::select_prefill_tc<T, D>(limit) : gpu::select_prefill<T, D>(limit); \
        return tensor_cores ? gpu::select_decode_tc<T, D>(limit) : gpu::select_decode<T, D>(limit);
        GQA_CUDA_HEAD_DIMS(GQA_HEAD_DIM_CASE)
#undef GQA_HEAD_DIM_CASE
    }
    fail(GQA_STATUS_INTERNAL_ERROR, "no CUDA kernel for head_dim %lld", (long long)head_dim);
}

// The prefill or the decode kernel of a call: the one the environment or the defaults ask for,
// in the deepest variant that fits the device's shared memory; the other kernel when none fits
// and the choice was not forced; else UNSUPPORTED.
Kernel pick_attention(const Problem& p, const DeviceFacts& dev, bool prefill) {
    const char* variable = prefill ? "GQA_CUDA_PREFILL" : "GQA_CUDA_DECODE";
    const KernelChoice choice = kernel_choice(variable);
    const bool default_tc = prefill || decode_rows(p) >= kDecodeTcMinRows;
    const bool tc = choice == KernelChoice::TensorCore || (choice == KernelChoice::Default && default_tc);
    const int limit = smem_limit(dev);
    auto pick = [&](bool tensor_cores) {
        return p.dtype == DType::BF16 ? attention_kernel<__nv_bfloat16>(prefill, tensor_cores, p.head_dim, limit)
                                      : attention_kernel<__half>(prefill, tensor_cores, p.head_dim, limit);
    };
    const Kernel k = pick(tc);
    if (k.entry) return k;
    const char* forced = choice == KernelChoice::Default ? nullptr : variable;
    if (!forced) {
        const Kernel other = pick(!tc);
        if (other.entry) return other;
        fail(GQA_STATUS_UNSUPPORTED,
             "head_dim (%lld) %s on CUDA needs %d bytes of shared memory per block (%s) or %d (%s), but CUDA "
             "device %d allows %d%s",
             (long long)p.head_dim, prefill ? "prefill" : "decode", k.smem_bytes, k.name, other.smem_bytes,
             other.name, dev.index, limit, limit < dev.smem_per_block ? " (GQA_CUDA_SMEM_LIMIT)" : "");
    }
    fail(GQA_STATUS_UNSUPPORTED,
         "head_dim (%lld) %s on CUDA needs %d bytes of shared memory per block (%s, chosen by %s), but CUDA "
         "device %d allows %d%s",
         (long long)p.head_dim, prefill ? "prefill" : "decode", k.smem_bytes, k.name, forced, dev.index, limit,
         limit < dev.smem_per_block ? " (GQA_CUDA_SMEM_LIMIT)" : "");
}

// The kernels of one call, chosen and prepared (attributes, occupancy) before any is launched;
// a kernel without entry is not launched. Launch order per chunk of sequences: append, prefill,
// decode, combine (the attention kernels read no cache row the call writes, so append and
// attention are independent; combine reads decode's partials).
struct CallPlan {
    Kernel append;   // prefill with caches, the batched op's longer sequences: the cache copy
    Kernel prefill;
    Kernel decode;   // with its fused cache append
    Kernel combine;  // decode with partitions > 1: the merge
    int64_t partitions;
};

CallPlan plan_call(const Problem& p, const DeviceFacts& dev) {
    CallPlan plan{};
    if (runs_prefill_kernel(p)) plan.prefill = pick_attention(p, dev, true);
    if (runs_decode_kernel(p)) plan.decode = pick_attention(p, dev, false);
    plan.partitions = kv_partitions(p, dev);
    if (runs_prefill_kernel(p) && p.has_cache) plan.append = gpu::select_append_kv();
    if (plan.partitions > 1)
        plan.combine = p.dtype == DType::BF16 ? gpu::select_combine<__nv_bfloat16>() : gpu::select_combine<__half>();
    for (const Kernel* k : {&plan.append, &plan.prefill, &plan.decode, &plan.combine})
        if (k->entry) prepare_kernel(*k, dev);
    return plan;
}

// Element strides of a contiguous [batch][tokens][heads][head_dim] tensor.
gpu::RowStrides contiguous(int64_t tokens, int64_t heads, int64_t head_dim) {
    return gpu::RowStrides{tokens * heads * head_dim, heads * head_dim, head_dim};
}
// The strides of a call's q, k, v or out (validate.cpp resolved them: never 0). The batched
// op's rows are ragged [total_q][heads][head_dim]: no batch stride (Sequence::first_row).
gpu::RowStrides row_strides(const Problem& p, const Strides& s) {
    return gpu::RowStrides{p.kind == Kind::Batch ? 0 : s.batch, s.token, s.head};
}

// UNSUPPORTED, naming the tensor, unless each stride the kernels use keeps its rows on 16-byte
// boundaries (a multiple of kVec elements; a dimension of size 1 uses none).
void require_aligned_rows(const char* name, const Strides& s, const Problem& p, int64_t heads) {
    const bool batched = p.kind == Kind::Batch;  // one ragged run of total_q rows
    const struct { const char* field; int64_t stride; bool used; } fields[] = {
        {"batch", s.batch, !batched && p.batch > 1},
        {"token", s.token, batched ? p.device_batch.total_q > 1 : p.seq_len > 1},
        {"head", s.head, heads > 1}};
    for (const auto& f : fields)
        if (f.used && f.stride % gpu::kVec != 0)
            fail(GQA_STATUS_UNSUPPORTED,
                 "%s.%s (%lld) is not a multiple of %d elements: the CUDA kernels read 16-byte aligned rows", name,
                 f.field, (long long)f.stride, gpu::kVec);
}

AttnParams make_params(const Problem& p, int64_t partitions) {
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
    a.scale_log2 = float(double(p.scale) * 1.4426950408889634);  // log2(e)
    a.softcap = p.softcap;
    a.scale_over_cap = p.softcap > 0.0f ? float(double(p.scale) / p.softcap) : 0.0f;
    a.window_left = p.window_left;
    a.window_right = p.window_right;
    a.sinks = p.sinks;
    a.lse = p.lse;
    a.q_rows = row_strides(p, p.q_strides);
    a.out_rows = row_strides(p, p.out_strides);
    a.k_rows = row_strides(p, p.k_strides);
    a.v_rows = row_strides(p, p.v_strides);
    a.batch = p.batch;
    a.group_div = gpu::FastDiv::of(uint32_t(p.group));
    a.decode_max_q = int32_t(decode_max_q(p));
    if (p.kind == Kind::Batch) {
        a.cache_rows = contiguous(p.page_size, p.num_kv_heads, p.head_dim);  // its "batch" is the page
        a.q_indptr = p.device_batch.q_indptr;
        a.kv_lens = p.device_batch.kv_lens;
        a.page_table = p.device_batch.page_table;
        a.error_flags = p.device_batch.error_flags;
        a.total_q = p.device_batch.total_q;
        a.page_size = p.page_size;
        a.num_pages = p.num_pages;
        a.max_pages_per_seq = p.max_pages_per_seq;
        a.page_div = gpu::FastDiv::of(uint32_t(p.page_size));
        a.split_by_length = p.num_splits == 0 ? 1 : 0;
    } else {
        // Without caches no key is read from them: strides 0 keep kv_source off null-pointer arithmetic.
        a.cache_rows = p.has_cache ? contiguous(p.max_seq_len, p.num_kv_heads, p.head_dim) : gpu::RowStrides{0, 0, 0};
    }
    a.num_splits = int32_t(partitions);
    if (partitions > 1) {
        const int64_t entries = p.batch * a.decode_max_q * p.num_q_heads * partitions;
        a.partial_o = static_cast<float*>(p.workspace);
        a.partial_ml = reinterpret_cast<float2*>(static_cast<char*>(p.workspace) +
                                                 uint64_t(entries) * uint64_t(p.head_dim) * sizeof(float));
    }
    return a;
}

}  // namespace

bool cuda_built() { return true; }

bool cuda_usable(std::string* why) { return current_device_facts(why) != nullptr; }

void cuda_check_supported(const Problem& p) {
    std::string why;
    const DeviceFacts* facts = current_device_facts(&why);
    if (!facts) fail(GQA_STATUS_DEVICE_UNAVAILABLE, "device is GQA_DEVICE_CUDA but %s", why.c_str());
    const DeviceFacts& dev = *facts;
    if (p.dtype == DType::F32)
        fail(GQA_STATUS_UNSUPPORTED, "dtype (GQA_DTYPE_F32) is supported on the CPU only; use f16 or bf16 on CUDA");
    if (!head_dim_supported(p.head_dim))
        fail(GQA_STATUS_UNSUPPORTED, "head_dim (%lld) has no CUDA kernel; supported: " GQA_CUDA_HEAD_DIMS_TEXT,
             (long long)p.head_dim);
    if (runs_prefill_kernel(p) && p.num_q_heads > kMaxGridY)
        fail(GQA_STATUS_UNSUPPORTED, "num_q_heads (%lld) exceeds the CUDA prefill limit %lld",
             (long long)p.num_q_heads, (long long)kMaxGridY);
    if (runs_decode_kernel(p) && p.num_kv_heads * max_decode_head_groups(p) > kMaxGridY)
        fail(GQA_STATUS_UNSUPPORTED, "num_q_heads (%lld) with num_kv_heads (%lld)%s exceeds the CUDA decode grid limit",
             (long long)p.num_q_heads, (long long)p.num_kv_heads,
             p.kind == Kind::Batch ? format(" and %lld new tokens", (long long)decode_max_q(p)).c_str() : "");

    require_aligned_rows("q_strides", p.q_strides, p, p.num_q_heads);
    require_aligned_rows("k_strides", p.k_strides, p, p.num_kv_heads);
    require_aligned_rows("v_strides", p.v_strides, p, p.num_kv_heads);
    require_aligned_rows("out_strides", p.out_strides, p, p.num_q_heads);
    check_device_pointer(p.out, "out", dev);
    check_device_pointer(p.q, "q", dev);
    check_device_pointer(p.k, "k", dev);
    check_device_pointer(p.v, "v", dev);
    if (p.has_cache) {
        check_device_pointer(p.k_cache, "k_cache", dev);
        check_device_pointer(p.v_cache, "v_cache", dev);
    }
    if (p.sinks) check_device_pointer(p.sinks, "sinks", dev, alignof(float));
    if (p.lse) check_device_pointer(p.lse, "lse", dev, alignof(float));
    if (p.kind == Kind::Batch) {  // int32 metadata
        check_device_pointer(p.device_batch.q_indptr, "q_indptr", dev, alignof(int32_t));
        check_device_pointer(p.device_batch.kv_lens, "kv_lens", dev, alignof(int32_t));
        check_device_pointer(p.device_batch.page_table, "page_table", dev, alignof(int32_t));
        if (p.device_batch.error_flags) check_device_pointer(p.device_batch.error_flags, "error_flags", dev, alignof(int32_t));
    }
    if (runs_decode_kernel(p) && p.workspace != nullptr) {
        check_device_pointer(p.workspace, "workspace", dev);
        const uint64_t need = cuda_workspace_bytes(p);
        if (p.workspace_bytes < need)
            fail(GQA_STATUS_INVALID_ARGUMENT,
                 "workspace_bytes (%llu) is less than gqa_%s_workspace_size() (%llu) for this config",
                 (unsigned long long)p.workspace_bytes, p.kind == Kind::Batch ? "batch" : "decode",
                 (unsigned long long)need);
    }
    plan_call(p, dev);  // the kernels fit the device and are prepared
}

uint64_t cuda_workspace_bytes(const Problem& p) {
    const int64_t partitions = workspace_kv_partitions(p, usable_device());
    if (partitions <= 1) return 0;
    return gpu::decode_partial_bytes(p.batch * decode_max_q(p), p.num_q_heads, p.head_dim, partitions);
}

void cuda_copy_to_host(void* host, const void* device, uint64_t bytes, void* stream, const char* what) {
    cudaStream_t s = static_cast<cudaStream_t>(stream);
    cudaError_t e = cudaMemcpyAsync(host, device, size_t(bytes), cudaMemcpyDeviceToHost, s);
    if (e == cudaSuccess) e = cudaStreamSynchronize(s);
    if (e != cudaSuccess) {
        cudaGetLastError();
        fail(GQA_STATUS_CUDA_ERROR, "copying %s to the host failed: %s (%s); this synchronises the stream, which "
             "a CUDA graph capture does not allow", what, cudaGetErrorName(e), cudaGetErrorString(e));
    }
}

void cuda_attention(const Problem& p) {
    const DeviceFacts& dev = usable_device();
    const CallPlan plan = plan_call(p, dev);  // remembered per device: cheap, and checked already
    AttnParams a = make_params(p, plan.partitions);
    if (plan.decode.entry)
        GQA_LOG(GQA_LOG_DEBUG, "cuda decode: %lld split(s) (num_splits %d, workspace %llu B)",
                (long long)plan.partitions, p.num_splits, (unsigned long long)p.workspace_bytes);

    cudaStream_t stream = static_cast<cudaStream_t>(p.stream);
    // Prefill and decode carry their start positions in the parameters (BatchChunk); the batched
    // op reads them on the device, so its chunks are as large as the grid allows.
    const bool batched = p.kind == Kind::Batch;
    const int64_t per_launch = batched ? gpu::kMaxBatchSeqsPerLaunch : gpu::kMaxSeqsPerLaunch;
    for (int64_t first = 0; first < p.batch; first += per_launch) {
        const int64_t count = std::min<int64_t>(per_launch, p.batch - first);
        a.chunk.first = int32_t(first);
        a.chunk.count = int32_t(count);
        for (int64_t i = 0; i < count && !batched; ++i)
            a.chunk.start[i] = p.has_cache ? int32_t(p.start_of(first + i)) : 0;
        for (const Kernel* k : {&plan.append, &plan.prefill, &plan.decode, &plan.combine})
            if (k->entry) gpu::launch(*k, a, stream);
    }
}

}  // namespace gqa
