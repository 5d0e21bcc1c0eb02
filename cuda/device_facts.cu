// device_facts.cu: device facts read once per device, kernel preparation once per (kernel,
// device), pointer checks. Lock-free (atomics only), so a fork() in another thread's query
// cannot leave a lock held.
#include <cuda_runtime.h>

#include <atomic>
#include <cstdint>

#include "device_facts.hpp"
#include "error.hpp"

namespace gqa {
namespace {

constexpr int kDefaultDynamicSmem = 48 * 1024;  // what a kernel gets without opting in

// Slot states: empty, being filled by one thread, ready (facts valid, never written again).
enum SlotState : int { kEmpty = 0, kFilling = 1, kReady = 2 };
struct DeviceSlot {
    std::atomic<int> state{kEmpty};
    DeviceFacts facts{};
};
DeviceSlot g_devices[gpu::kMaxRememberedDevices];

std::string no_device_reason() {
    int count = 0;
    const cudaError_t e = cudaGetDeviceCount(&count);
    if (e != cudaSuccess) {
        cudaGetLastError();  // do not leave the error for a later cudaGetLastError()
        return format("no usable CUDA device: cudaGetDeviceCount failed: %s (%s); libgqa needs an "
                      "NVIDIA driver that supports CUDA %d.%d",
                      cudaGetErrorName(e), cudaGetErrorString(e), CUDART_VERSION / 1000,
                      CUDART_VERSION % 1000 / 10);
    }
    if (count == 0) return "no CUDA device is present";
    return "";
}

// Queries the driver; false (and *why) on failure.
bool query_facts(int dev, DeviceFacts* f, std::string* why) {
    f->index = dev;
    cudaError_t e = cudaDeviceGetAttribute(&f->cc_major, cudaDevAttrComputeCapabilityMajor, dev);
    if (e == cudaSuccess) e = cudaDeviceGetAttribute(&f->cc_minor, cudaDevAttrComputeCapabilityMinor, dev);
    if (e == cudaSuccess) e = cudaDeviceGetAttribute(&f->sm_count, cudaDevAttrMultiProcessorCount, dev);
    if (e == cudaSuccess)
        e = cudaDeviceGetAttribute(&f->smem_per_block, cudaDevAttrMaxSharedMemoryPerBlockOptin, dev);
    if (e != cudaSuccess || f->sm_count <= 0) {
        cudaGetLastError();
        if (why) {
            *why = no_device_reason();
            if (why->empty()) *why = format("cannot query CUDA device %d: %s", dev, cudaGetErrorString(e));
        }
        return false;
    }
    return true;
}

bool usable(const DeviceFacts& f, std::string* why) {
    if (f.cc_major >= 8) return true;
    if (why)
        *why = format("CUDA device %d has compute capability %d.%d; libgqa's kernels need 8.0 or newer",
                      f.index, f.cc_major, f.cc_minor);
    return false;
}

}  // namespace

const DeviceFacts* current_device_facts(std::string* why) {
    int dev = 0;
    const cudaError_t e = cudaGetDevice(&dev);
    if (e != cudaSuccess) {
        cudaGetLastError();
        if (why) {
            *why = no_device_reason();
            if (why->empty()) *why = format("cudaGetDevice failed: %s", cudaGetErrorString(e));
        }
        return nullptr;
    }
    DeviceSlot* slot = dev >= 0 && dev < gpu::kMaxRememberedDevices ? &g_devices[dev] : nullptr;
    if (slot && slot->state.load(std::memory_order_acquire) == kReady)
        return usable(slot->facts, why) ? &slot->facts : nullptr;

    // First use of this device (or one past the remembered ones): ask the driver.
    thread_local DeviceFacts unremembered;
    DeviceFacts f{};
    if (!query_facts(dev, &f, why)) return nullptr;
    int expected = kEmpty;
    if (slot && slot->state.compare_exchange_strong(expected, kFilling, std::memory_order_acq_rel)) {
        slot->facts = f;
        slot->state.store(kReady, std::memory_order_release);
        return usable(slot->facts, why) ? &slot->facts : nullptr;
    }
    unremembered = f;  // another thread is filling the slot, or the device is past the slots
    return usable(unremembered, why) ? &unremembered : nullptr;
}

const DeviceFacts& usable_device() {
    std::string why;
    const DeviceFacts* f = current_device_facts(&why);
    if (!f) fail(GQA_STATUS_DEVICE_UNAVAILABLE, "%s", why.c_str());
    return *f;
}

void prepare_kernel(const gpu::Kernel& k, const DeviceFacts& dev) {
    const bool remembered = dev.index < gpu::kMaxRememberedDevices;
    if (remembered && k.prepared->on_device[dev.index].load(std::memory_order_acquire)) return;
    const void* entry = reinterpret_cast<const void*>(k.entry);
    if (k.smem_bytes > kDefaultDynamicSmem) {
        const cudaError_t e =
            cudaFuncSetAttribute(entry, cudaFuncAttributeMaxDynamicSharedMemorySize, k.smem_bytes);
        if (e != cudaSuccess) {
            cudaGetLastError();
            fail(GQA_STATUS_UNSUPPORTED, "%s (head_dim %d, %d stages) cannot have %d bytes of shared memory "
                 "per block on CUDA device %d (it allows %d): %s",
                 k.name, k.head_dim, k.stages, k.smem_bytes, dev.index, dev.smem_per_block, cudaGetErrorString(e));
        }
    }
    int blocks = 0;
    const cudaError_t e = cudaOccupancyMaxActiveBlocksPerMultiprocessor(&blocks, entry, k.threads, size_t(k.smem_bytes));
    if (e != cudaSuccess || blocks < 1) {
        cudaGetLastError();
        fail(GQA_STATUS_UNSUPPORTED, "%s (head_dim %d, %d threads, %d bytes of shared memory) cannot run on "
             "CUDA device %d: %s", k.name, k.head_dim, k.threads, k.smem_bytes, dev.index,
             e != cudaSuccess ? cudaGetErrorString(e) : "no block fits a multiprocessor");
    }
    if (remembered) k.prepared->on_device[dev.index].store(true, std::memory_order_release);
}

void check_device_pointer(const void* ptr, const char* name, const DeviceFacts& dev, size_t alignment) {
    cudaPointerAttributes attr{};
    const cudaError_t e = cudaPointerGetAttributes(&attr, ptr);
    if (e != cudaSuccess) {
        cudaGetLastError();
        // A pointer CUDA never saw is cudaErrorInvalidValue; anything else is the runtime failing
        // (e.g. in a child process forked after CUDA was initialised).
        if (e != cudaErrorInvalidValue)
            fail(GQA_STATUS_DEVICE_UNAVAILABLE, "cannot check %s (%p): cudaPointerGetAttributes failed: %s (%s)",
                 name, ptr, cudaGetErrorName(e), cudaGetErrorString(e));
    }
    const bool device_memory =
        e == cudaSuccess && (attr.type == cudaMemoryTypeDevice || attr.type == cudaMemoryTypeManaged);
    if (!device_memory)
        fail(GQA_STATUS_INVALID_ARGUMENT,
             "%s (%p) is not CUDA device memory, but device is GQA_DEVICE_CUDA", name, ptr);
    if (attr.type == cudaMemoryTypeDevice && attr.device != dev.index)
        fail(GQA_STATUS_INVALID_ARGUMENT, "%s (%p) is memory of CUDA device %d, not of the current device %d",
             name, ptr, attr.device, dev.index);
    if (reinterpret_cast<uintptr_t>(ptr) % alignment != 0)
        fail(GQA_STATUS_UNSUPPORTED, "%s (%p) is not %zu-byte aligned, which the CUDA kernels need", name, ptr,
             alignment);
}

}  // namespace gqa
