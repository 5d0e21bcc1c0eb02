// emu_fibers.cpp: a block's CUDA threads as fibers on the launching thread (emu.hpp, EMU_FIBERS).
//
// One OS thread per CUDA thread made every barrier a storm of OS context switches (on a 2-core
// KVM guest, system time 2.5x user time: benchmarks/NOTES.md section 12). Here each CUDA thread
// is a ucontext fiber with its own stack; a barrier wait switches to the next fiber in thread
// order, so a fiber runs until it reaches a barrier (or ends) and the next one takes over. That
// order is deterministic and the most adversarial one for a missing barrier: thread 0 runs as
// far ahead of the others as the barriers let it, so a read before another thread's write, or
// a write before another thread's read, shows in every run. The emulator's per-thread state
// (emu.hpp's thread_locals) is swapped with the fiber. When every unfinished fiber waits and
// none can go on (threads waiting at different barriers, or for one that ended), the emulation
// stops with a message instead of hanging.
#include <sys/mman.h>
#include <ucontext.h>

#include <functional>
#include <utility>
#include <vector>

#include "emu.hpp"

#if EMU_FIBERS
namespace emu {
namespace {

// Stacks are reused from block to block; a guard page below each one turns an overflow into a
// crash rather than a silent write into the next stack.
constexpr size_t kStackBytes = 1 << 20;
constexpr size_t kGuardBytes = 1 << 12;

struct Fiber {
    ucontext_t context;
    char* stack = nullptr;  // kStackBytes after a guard page, kept for the process
    bool done = false;
    // The thread_locals of emu.hpp, for this fiber while another one runs.
    uint3 thread_idx, block_idx;
    int epoch = 0, committed_groups = 0;
    std::vector<PendingCopy> pending_copies;
};

std::vector<Fiber> fibers;  // [0, launched): this block's threads; the rest keep their stacks
int launched = 0;
int current = -1;  // the running fiber
int unfinished = 0;
long progress = 0;  // barrier arrivals and fiber ends so far: a wait that sees none in a whole round is a deadlock
ucontext_t launcher;
const std::function<void(int)>* body;

void save_state(Fiber& f) {
    f.thread_idx = thread_idx;
    f.block_idx = block_idx;
    f.epoch = epoch;
    f.committed_groups = committed_groups;
    f.pending_copies = std::move(pending_copies);
    pending_copies.clear();
}
void load_state(Fiber& f) {
    thread_idx = f.thread_idx;
    block_idx = f.block_idx;
    epoch = f.epoch;
    committed_groups = f.committed_groups;
    pending_copies = std::move(f.pending_copies);
    f.pending_copies.clear();
}

// Switches from the running fiber to the next unfinished one after it (itself when it is the
// only one), or back to the launcher when every fiber has ended.
void switch_to_next() {
    const int from = current, n = launched;
    save_state(fibers[from]);
    if (unfinished == 0) {
        current = -1;
        swapcontext(&fibers[from].context, &launcher);
        return;  // not reached: an ended fiber is never resumed
    }
    int to = (from + 1) % n;
    while (fibers[to].done) to = (to + 1) % n;
    current = to;
    load_state(fibers[to]);
    if (to != from) swapcontext(&fibers[from].context, &fibers[to].context);
}

void fiber_main() {
    (*body)(current);
    fibers[current].done = true;
    --unfinished;
    ++progress;
    switch_to_next();
}

char* new_stack() {
    void* p = mmap(nullptr, kGuardBytes + kStackBytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (p == MAP_FAILED) die("cannot map a fiber stack");
    mprotect(p, kGuardBytes, PROT_NONE);
    return static_cast<char*>(p) + kGuardBytes;
}

}  // namespace

void run_as_fibers(int threads, const std::function<void(int)>& run_thread) {
    if (current >= 0) die("a launch while another one runs: the emulator runs one launch at a time");
    Fiber host;  // the launching thread's own emu state, given back afterwards
    save_state(host);
    if (int(fibers.size()) < threads) fibers.resize(size_t(threads));
    for (int t = 0; t < threads; ++t) {
        Fiber& f = fibers[size_t(t)];  // run_thread sets the indices and the barrier interval
        if (!f.stack) f.stack = new_stack();
        f.done = false;
        f.committed_groups = 0;
        f.pending_copies.clear();
        getcontext(&f.context);
        f.context.uc_stack.ss_sp = f.stack;
        f.context.uc_stack.ss_size = kStackBytes;
        f.context.uc_link = nullptr;
        makecontext(&f.context, fiber_main, 0);
    }
    launched = threads;
    body = &run_thread;
    unfinished = threads;
    current = 0;
    load_state(fibers[0]);
    swapcontext(&launcher, &fibers[0].context);
    load_state(host);
}

void Barrier::arrive_and_wait() {
    ++progress;
    const unsigned generation_now = generation_;
    if (++arrived_ == count_) {
        arrived_ = 0;
        ++generation_;
        return;
    }
    long seen = progress;
    for (int idle_rounds = 0; generation_ == generation_now;) {
        switch_to_next();  // back here after every other unfinished fiber has had its turn
        if (progress != seen) {
            seen = progress;
            idle_rounds = 0;
        } else if (++idle_rounds > 1) {
            die_in_block("thread %u waits at a barrier that the other threads of its block or warp never reach "
                         "(they wait at another barrier or have ended)", thread_idx.x);
        }
    }
}

}  // namespace emu
#endif
