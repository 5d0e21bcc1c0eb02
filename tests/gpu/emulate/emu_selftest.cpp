// emu_selftest.cpp: the emulator's own checks, on tiny kernels (built and run by emulate.sh with
// emu.hpp force-included, like the kernels of cuda/):
//   - dynamic shared memory is NaN-poisoned (0xff) before every block, not once per launch;
//   - a cp.async poisons its destination when issued and copies at its wait_group;
//   - a cp.async read by another thread without a __syncthreads after its wait, or a refill of
//     shared memory another thread read since the last __syncthreads, stops the emulation, in
//     whatever order the threads run (checked in a child process: the emulator aborts);
//   - with fibers: a barrier that some threads never reach stops the emulation (no hang), and a
//     plain shared-memory store read by another thread without a __syncthreads is never seen.
#include <sys/wait.h>
#include <unistd.h>

#include <cstdio>

namespace {

int failures = 0;
void expect(bool ok, const char* what) {
    std::fprintf(stderr, "%s emu_selftest: %s\n", ok ? "ok  " : "FAIL", what);
    failures += !ok;
}

struct Params {
    int* poisoned;              // per block: 1 when its shared memory started as 0xff
    const unsigned char* src;   // 16-byte aligned global bytes for cp.async
    unsigned char* seen;        // bytes thread 0 read
    int with_barrier;
};

void poison_probe(Params p) {
    unsigned char* s = gqa::gpu::dynamic_smem();
    bool all = true;
    for (int i = 0; i < 16; ++i) all = all && s[threadIdx.x * 16 + i] == 0xff;
    if (!all) p.poisoned[blockIdx.x] = 0;
    __syncthreads();
    for (int i = 0; i < 16; ++i) s[threadIdx.x * 16 + i] = 0;  // what the next block must not see
}

void cp_async_probe(Params p) {
    unsigned char* s = gqa::gpu::dynamic_smem();
    if (threadIdx.x != 0) return;
    std::memset(s, 0, 16);
    gqa::gpu::cp_async_16(s, p.src, true);
    gqa::gpu::cp_async_commit();
    std::memcpy(p.seen, s, 16);  // before the wait: the hardware may have written anything
    gqa::gpu::cp_async_wait<0>();
    std::memcpy(p.seen + 16, s, 16);
}

// Warp 0 fills 32 chunks with cp.async; warp 1 reads them with ldmatrix.
void read_after_fill(Params p) {
    unsigned char* s = gqa::gpu::dynamic_smem();
    const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
    if (warp == 0) {
        gqa::gpu::cp_async_16(s + 16 * lane, p.src, true);
        gqa::gpu::cp_async_commit();
        gqa::gpu::cp_async_wait<0>();
    }
    if (p.with_barrier) __syncthreads();
    if (warp == 1) {
        uint32_t r[4];
        gqa::gpu::ldmatrix_x4(r, s + 16 * lane);
    }
    if (!p.with_barrier) __syncthreads();  // the same number of barriers in both variants
}

// Warp 1 reads 32 chunks; warp 0 then refills them.
void refill_after_read(Params p) {
    unsigned char* s = gqa::gpu::dynamic_smem();
    const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
    if (warp == 1) {
        uint32_t r[4];
        gqa::gpu::ldmatrix_x4(r, s + 16 * lane);
    }
    if (p.with_barrier) __syncthreads();
    if (warp == 0) {
        gqa::gpu::cp_async_16(s + 16 * lane, p.src, true);
        gqa::gpu::cp_async_commit();
        gqa::gpu::cp_async_wait<0>();
    }
    if (!p.with_barrier) __syncthreads();
}

// Thread 0 leaves before the barrier the others wait at (a barrier in divergent code).
void barrier_never_reached(Params p) {
    if (threadIdx.x == 0) return;
    __syncthreads();
    p.seen[threadIdx.x % 32] = 1;
}

// Each thread stores its index to shared memory and, after the barrier (or none), reads its
// neighbour's: without it the neighbour has not stored yet in the fiber order (thread t runs to
// its next barrier before thread t + 1 starts), so the read sees the NaN poison.
void neighbour_exchange(Params p) {
    unsigned char* s = gqa::gpu::dynamic_smem();
    s[threadIdx.x] = static_cast<unsigned char>(threadIdx.x);
    if (p.with_barrier) __syncthreads();
    if (s[(threadIdx.x + 1) % blockDim.x] != (threadIdx.x + 1) % blockDim.x) p.poisoned[0] = 0;
    if (!p.with_barrier) __syncthreads();
}

// Runs kernel in a child process; true when the emulation stopped it (abort).
bool emulation_stops(void (*kernel)(Params), Params p) {
    std::fflush(stderr);
    const pid_t pid = fork();
    if (pid == 0) {
        emu_launch(kernel, dim3(1), dim3(64), p, 512, "selftest");
        _exit(0);
    }
    int status = 0;
    waitpid(pid, &status, 0);
    return WIFSIGNALED(status) && WTERMSIG(status) == SIGABRT;
}

}  // namespace

int main() {
    alignas(16) static unsigned char src[16];
    std::memset(src, 0x11, sizeof src);
    int poisoned[3] = {1, 1, 1};
    unsigned char seen[32];
    Params p{poisoned, src, seen, 1};

    emu_launch(poison_probe, dim3(3), dim3(32), p, 512, "poison_probe");
    expect(poisoned[0] && poisoned[1] && poisoned[2], "every block starts with NaN-poisoned shared memory");

    emu_launch(cp_async_probe, dim3(1), dim3(32), p, 512, "cp_async_probe");
    bool poison = true, landed = true;
    for (int i = 0; i < 16; ++i) poison = poison && seen[i] == 0xff, landed = landed && seen[16 + i] == 0x11;
    expect(poison, "a cp.async destination reads as NaN between the issue and the wait");
    expect(landed, "a cp.async destination holds the source after the wait");

    p.with_barrier = 1;
    expect(!emulation_stops(read_after_fill, p), "reading after wait + __syncthreads is accepted");
    expect(!emulation_stops(refill_after_read, p), "refilling after a __syncthreads is accepted");
    p.with_barrier = 0;
    expect(emulation_stops(read_after_fill, p), "reading another thread's cp.async without a __syncthreads stops");
    expect(emulation_stops(refill_after_read, p), "refilling what another thread read without a __syncthreads stops");
#if EMU_FIBERS
    // Real threads would hang here; the fibers see that no thread can go on.
    expect(emulation_stops(barrier_never_reached, p), "a barrier some threads never reach stops, not hangs");
    // Real threads may interleave so that the race goes unseen; the fiber order shows it.
    for (int with_barrier = 1; with_barrier >= 0; --with_barrier) {
        p.with_barrier = with_barrier;
        poisoned[0] = 1;
        emu_launch(neighbour_exchange, dim3(1), dim3(64), p, 512, "neighbour_exchange");
        expect(poisoned[0] == with_barrier, with_barrier ? "a neighbour's store is seen after a __syncthreads"
                                                          : "a neighbour's store read without a __syncthreads is not seen");
    }
#endif
    std::fprintf(stderr, "emu_selftest: %d failed\n", failures);
    return failures != 0;
}
