/* emu_control.h: what a test can ask of the CPU emulation's CUDA runtime (emu_runtime.cpp).
 * C, so that the C tests (sweep.c, limits.c) can include it. */
#ifndef GQA_EMU_CONTROL_H
#define GQA_EMU_CONTROL_H

#ifdef __cplusplus
extern "C" {
#endif

/* Makes `device` (0 .. 7) exist with this many multiprocessors and this opt-in shared memory per
 * block (cudaDevAttrMaxSharedMemoryPerBlockOptin), compute capability 8.6 unless it is device 0.
 * Device 0 exists from the start: 132 SMs, 232448 B (227 KB), 9.0, like an H100/H200. */
void emu_set_device(int device, int sm_count, int smem_per_block_optin);

/* Makes the n-th kernel launch from now (1: the next one) fail with cudaErrorLaunchOutOfResources,
 * as a launch the library could not foresee would; 0 cancels. */
void emu_fail_launch(int n);

/* Runtime calls made so far, to check what a library call costs on the host. */
typedef struct {
    long device_attribute_queries; /* cudaDeviceGetAttribute */
    long pointer_queries;          /* cudaPointerGetAttributes */
    long func_attribute_sets;      /* cudaFuncSetAttribute */
    long occupancy_queries;        /* cudaOccupancyMaxActiveBlocksPerMultiprocessor */
    long launches;                 /* kernel launches, accepted or not */
    long copies;                   /* cudaMemcpy, cudaMemcpyAsync */
    long synchronizations;         /* cudaDeviceSynchronize, cudaStreamSynchronize */
} emu_counters;
emu_counters emu_get_counters(void);

#ifdef __cplusplus
}
#endif
#endif
