// emu_runtime.cpp: the few CUDA runtime calls libgqa and the GPU C tests make, on host memory.
// "Device" memory is whatever this cudaMalloc returned (exact size, so that AddressSanitizer
// sees every boundary); any other pointer reports as unregistered host memory.
#include <cstdlib>
#include <cstring>
#include <map>
#include <mutex>

#include "emu.hpp"

namespace emu {
dim3 block_dim, grid_dim;
std::barrier<>* block_barrier;
std::barrier<>* warp_barrier[32];
float exchange[32][32];
uint32_t fragments[32][32][6];
const void* row_address[32][32];
unsigned char* dynamic_smem;
size_t dynamic_smem_bytes;
void die(const char* what) {
    std::fprintf(stderr, "emulated kernel error: %s\n", what);
    std::abort();
}
}  // namespace emu

namespace {
std::mutex allocs_mutex;
std::map<const char*, size_t>& allocs() {
    static std::map<const char*, size_t> m;
    return m;
}
}  // namespace

extern "C" {
cudaError_t cudaGetDeviceCount(int* count) {
    *count = 1;
    return cudaSuccess;
}
cudaError_t cudaGetDevice(int* device) {
    *device = 0;
    return cudaSuccess;
}
cudaError_t cudaDeviceGetAttribute(int* value, cudaDeviceAttr attr, int) {
    *value = attr == cudaDevAttrMultiProcessorCount ? 132 : attr == cudaDevAttrComputeCapabilityMajor ? 9 : 0;
    return cudaSuccess;
}
cudaError_t cudaPointerGetAttributes(cudaPointerAttributes* attr, const void* ptr) {
    std::memset(attr, 0, sizeof(*attr));
    attr->type = cudaMemoryTypeUnregistered;
    std::lock_guard<std::mutex> lock(allocs_mutex);
    const char* p = static_cast<const char*>(ptr);
    auto it = allocs().upper_bound(p);
    if (it != allocs().begin() && p < std::prev(it)->first + std::prev(it)->second)
        attr->type = cudaMemoryTypeDevice;
    return cudaSuccess;
}
cudaError_t cudaGetLastError(void) { return cudaSuccess; }
const char* cudaGetErrorString(cudaError_t) { return "emulated"; }
const char* cudaGetErrorName(cudaError_t) { return "emulated"; }
cudaError_t cudaMalloc(void** ptr, size_t bytes) {
    if (posix_memalign(ptr, 256, bytes ? bytes : 1) != 0) return cudaErrorMemoryAllocation;
    std::lock_guard<std::mutex> lock(allocs_mutex);
    allocs()[static_cast<const char*>(*ptr)] = bytes;
    return cudaSuccess;
}
cudaError_t cudaFree(void* ptr) {
    {
        std::lock_guard<std::mutex> lock(allocs_mutex);
        allocs().erase(static_cast<const char*>(ptr));
    }
    std::free(ptr);
    return cudaSuccess;
}
cudaError_t cudaMemcpy(void* dst, const void* src, size_t bytes, cudaMemcpyKind) {
    std::memcpy(dst, src, bytes);
    return cudaSuccess;
}
cudaError_t cudaMemset(void* ptr, int value, size_t bytes) {
    std::memset(ptr, value, bytes);
    return cudaSuccess;
}
cudaError_t cudaDeviceSynchronize(void) { return cudaSuccess; }
cudaError_t cudaFuncSetAttribute(const void*, enum cudaFuncAttribute, int) { return cudaSuccess; }
}
