// device_facts.hpp: what the CUDA backend needs to know about a device, read once per device,
// and the once-per-(kernel, device) preparation of a kernel (its shared-memory attribute and
// an occupancy check), so that a call does no repeated driver queries.
#pragma once

#include <string>

#include "launchers.hpp"

namespace gqa {

struct DeviceFacts {
    int index;           // CUDA device ordinal
    int cc_major, cc_minor;
    int sm_count;
    int smem_per_block;  // bytes of shared memory one block may opt in to
};

// The current device's facts (read on its first use, then remembered; thread-safe, lock-free),
// or nullptr with *why saying what is missing when there is no usable device (compute
// capability 8.0 or newer). `why` is formatted only on failure.
const DeviceFacts* current_device_facts(std::string* why);
// The same; DEVICE_UNAVAILABLE when there is no usable device.
const DeviceFacts& usable_device();

// Makes k launchable on dev: sets its dynamic shared-memory attribute (above the default 48 KB)
// and checks that at least one block fits an SM. Done once per (kernel, device); UNSUPPORTED
// or CUDA_ERROR, naming the kernel, when it cannot run there.
void prepare_kernel(const gpu::Kernel& k, const DeviceFacts& dev);

// INVALID_ARGUMENT unless ptr is device (or managed) memory of dev; UNSUPPORTED unless it is
// `alignment`-byte aligned (tensors: 16, the kernels' vector loads; fp32 and int32 arrays: 4).
// One cudaPointerGetAttributes.
void check_device_pointer(const void* ptr, const char* name, const DeviceFacts& dev, size_t alignment = 16);

}  // namespace gqa
