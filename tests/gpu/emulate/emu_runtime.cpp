// emu_runtime.cpp: the CUDA runtime calls libgqa and the GPU C tests make, on host memory, with
// emulated devices (emu_control.h). "Device" memory is whatever this cudaMalloc returned (exact
// size, so that AddressSanitizer sees every boundary), tagged with the device that was current;
// any other pointer reports as unregistered host memory. Errors follow the runtime's rules: a
// failed call or launch leaves its error for cudaGetLastError, per host thread.
#include <atomic>
#include <cstdarg>
#include <cstdlib>
#include <cstring>
#include <map>
#include <mutex>
#include <utility>

#include "emu.hpp"
#include "emu_control.h"

namespace emu {
dim3 block_dim, grid_dim;
Barrier* block_barrier;
Barrier* warp_barrier[32];
float exchange[32][32];
uint32_t fragments[32][32][6];
const void* row_address[32][32];
unsigned char* dynamic_smem;
size_t dynamic_smem_bytes;
const char* running_kernel = "";
std::vector<ChunkShadow> smem_shadow;
std::mutex smem_shadow_mutex;

void die(const char* what) {
    std::fprintf(stderr, "emulated kernel error: %s\n", what);
    std::abort();
}
void die_in_block(const char* fmt, ...) {
    std::fprintf(stderr, "emulated kernel error in %s, block (%u,%u,%u): ", running_kernel, block_idx.x,
                 block_idx.y, block_idx.z);
    va_list args;
    va_start(args, fmt);
    std::vfprintf(stderr, fmt, args);
    va_end(args);
    std::fputc('\n', stderr);
    std::abort();
}
}  // namespace emu

namespace {
constexpr int kMaxDevices = 8;
constexpr int kDefaultDynamicSmem = 48 * 1024;
struct Device {
    int sm_count, smem_optin, cc_major, cc_minor;
};
Device devices[kMaxDevices] = {{132, 232448, 9, 0}};
std::atomic<int> device_count{1};
thread_local int current_device = 0;
thread_local cudaError_t last_error = cudaSuccess;

std::atomic<long> attribute_queries{0}, pointer_queries{0}, attribute_sets{0}, occupancy_queries{0}, launches{0};
std::atomic<long> copies{0}, synchronizations{0};
std::atomic<int> launches_until_failure{0};  // 0: none injected

std::mutex state_mutex;  // allocations and kernel attributes
struct Allocation {
    size_t bytes;
    int device;
};
std::map<const char*, Allocation>& allocs() {
    static std::map<const char*, Allocation> m;
    return m;
}
std::map<std::pair<const void*, int>, int>& kernel_smem() {  // (kernel, device) -> allowed bytes
    static std::map<std::pair<const void*, int>, int> m;
    return m;
}

cudaError_t fail_with(cudaError_t e) {
    last_error = e;
    return e;
}
}  // namespace

namespace emu {
int allowed_dynamic_smem(const void* kernel) {
    std::lock_guard<std::mutex> lock(state_mutex);
    auto it = kernel_smem().find({kernel, current_device});
    return it == kernel_smem().end() ? kDefaultDynamicSmem : it->second;
}
void set_last_error(cudaError_t e) { last_error = e; }
bool accept_launch() {
    ++launches;
    int n = launches_until_failure.load();
    while (n > 0 && !launches_until_failure.compare_exchange_weak(n, n - 1)) {
    }
    return n != 1;
}
}  // namespace emu

extern "C" {
void emu_set_device(int device, int sm_count, int smem_per_block_optin) {
    if (device < 0 || device >= kMaxDevices) emu::die("emu_set_device: device out of range");
    devices[device] = {sm_count, smem_per_block_optin, device == 0 ? 9 : 8, device == 0 ? 0 : 6};
    if (device_count.load() <= device) device_count.store(device + 1);
}
void emu_fail_launch(int n) { launches_until_failure.store(n); }
emu_counters emu_get_counters(void) {
    return {attribute_queries.load(), pointer_queries.load(), attribute_sets.load(), occupancy_queries.load(),
            launches.load(), copies.load(), synchronizations.load()};
}

cudaError_t cudaGetDeviceCount(int* count) {
    *count = device_count.load();
    return cudaSuccess;
}
cudaError_t cudaGetDevice(int* device) {
    *device = current_device;
    return cudaSuccess;
}
cudaError_t cudaSetDevice(int device) {
    if (device < 0 || device >= device_count.load()) return fail_with(cudaErrorInvalidDevice);
    current_device = device;
    return cudaSuccess;
}
cudaError_t cudaDeviceGetAttribute(int* value, cudaDeviceAttr attr, int device) {
    ++attribute_queries;
    if (device < 0 || device >= device_count.load()) return fail_with(cudaErrorInvalidDevice);
    const Device& d = devices[device];
    switch (attr) {
        case cudaDevAttrMultiProcessorCount: *value = d.sm_count; break;
        case cudaDevAttrComputeCapabilityMajor: *value = d.cc_major; break;
        case cudaDevAttrComputeCapabilityMinor: *value = d.cc_minor; break;
        case cudaDevAttrMaxSharedMemoryPerBlockOptin: *value = d.smem_optin; break;
        default: return fail_with(cudaErrorInvalidValue);
    }
    return cudaSuccess;
}
cudaError_t cudaPointerGetAttributes(cudaPointerAttributes* attr, const void* ptr) {
    ++pointer_queries;
    std::memset(attr, 0, sizeof(*attr));
    attr->type = cudaMemoryTypeUnregistered;
    std::lock_guard<std::mutex> lock(state_mutex);
    const char* p = static_cast<const char*>(ptr);
    auto it = allocs().upper_bound(p);
    if (it != allocs().begin() && p < std::prev(it)->first + std::prev(it)->second.bytes) {
        attr->type = cudaMemoryTypeDevice;
        attr->device = std::prev(it)->second.device;
    }
    return cudaSuccess;
}
cudaError_t cudaFuncSetAttribute(const void* kernel, enum cudaFuncAttribute attr, int value) {
    ++attribute_sets;
    if (attr != cudaFuncAttributeMaxDynamicSharedMemorySize) return fail_with(cudaErrorInvalidValue);
    if (value < 0 || value > devices[current_device].smem_optin) return fail_with(cudaErrorInvalidValue);
    std::lock_guard<std::mutex> lock(state_mutex);
    kernel_smem()[{kernel, current_device}] = value;
    return cudaSuccess;
}
cudaError_t cudaOccupancyMaxActiveBlocksPerMultiprocessor(int* blocks, const void* kernel, int threads,
                                                          size_t smem) {
    ++occupancy_queries;
    *blocks = threads >= 1 && threads <= 1024 && smem <= size_t(emu::allowed_dynamic_smem(kernel)) ? 1 : 0;
    return cudaSuccess;
}
cudaError_t cudaGetLastError(void) {
    const cudaError_t e = last_error;
    last_error = cudaSuccess;
    return e;
}
cudaError_t cudaPeekAtLastError(void) { return last_error; }
const char* cudaGetErrorString(cudaError_t e) {
    switch (e) {
        case cudaSuccess: return "no error";
        case cudaErrorInvalidValue: return "invalid argument";
        case cudaErrorInvalidDevice: return "invalid device ordinal";
        case cudaErrorMemoryAllocation: return "out of memory";
        case cudaErrorLaunchOutOfResources: return "too many resources requested for launch";
        default: return "emulated error";
    }
}
const char* cudaGetErrorName(cudaError_t e) {
    switch (e) {
        case cudaSuccess: return "cudaSuccess";
        case cudaErrorInvalidValue: return "cudaErrorInvalidValue";
        case cudaErrorInvalidDevice: return "cudaErrorInvalidDevice";
        case cudaErrorMemoryAllocation: return "cudaErrorMemoryAllocation";
        case cudaErrorLaunchOutOfResources: return "cudaErrorLaunchOutOfResources";
        default: return "cudaErrorUnknown";
    }
}
cudaError_t cudaMalloc(void** ptr, size_t bytes) {
    if (posix_memalign(ptr, 256, bytes ? bytes : 1) != 0) return fail_with(cudaErrorMemoryAllocation);
    std::lock_guard<std::mutex> lock(state_mutex);
    allocs()[static_cast<const char*>(*ptr)] = {bytes, current_device};
    return cudaSuccess;
}
cudaError_t cudaFree(void* ptr) {
    {
        std::lock_guard<std::mutex> lock(state_mutex);
        allocs().erase(static_cast<const char*>(ptr));
    }
    std::free(ptr);
    return cudaSuccess;
}
cudaError_t cudaMemcpy(void* dst, const void* src, size_t bytes, cudaMemcpyKind) {
    ++copies;
    std::memcpy(dst, src, bytes);
    return cudaSuccess;
}
cudaError_t cudaMemcpyAsync(void* dst, const void* src, size_t bytes, cudaMemcpyKind kind, cudaStream_t) {
    return cudaMemcpy(dst, src, bytes, kind);  // kernels run at their launch: the stream is always idle
}
cudaError_t cudaStreamSynchronize(cudaStream_t) {
    ++synchronizations;
    return cudaSuccess;
}
cudaError_t cudaMemset(void* ptr, int value, size_t bytes) {
    std::memset(ptr, value, bytes);
    return cudaSuccess;
}
cudaError_t cudaDeviceSynchronize(void) {
    ++synchronizations;
    return cudaSuccess;
}
}
