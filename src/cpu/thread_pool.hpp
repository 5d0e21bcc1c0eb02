// thread_pool.hpp: a small persistent std::thread pool for the CPU backend.
//
// Not OpenMP: libgqa is loaded next to PyTorch, and two OpenMP runtimes in one process clash.
// run() hands out task indices 0..n-1 through an atomic counter; the calling thread works too
// (as worker 0). Which worker runs a task never changes the result: each task writes its own
// outputs and kernels are deterministic.
//
// Waiting: after a run, a worker stays awake for a bounded time (like OpenMP's blocktime): it
// polls for the next run (with pause), and sleeps on a condition variable only when nothing
// came for its poll budget. A call after a short idle gap (between two layers of a model) so
// finds its workers awake instead of paying a wake-up; a process idle for longer costs at most
// the budget of CPU per worker. The budget adapts to the machine: GQA_CPU_SPIN_US (spin_ns(),
// default kDefaultSpinUs; 0: sleep at once) while pollers keep their cores, cut by 4 (down to
// kMinPollNs) when a poller finds it lost its core for kPreemptedNs twice within
// kLostCoreWindowNs: then there are more runnable threads than cores, a poller takes a core
// from threads with work (its own caller's too), and a sleeper woken by the next run gets a
// core sooner than a poller waiting for its turn. One lost slice alone (a kernel thread, an
// interrupt: a few a second on a quiet 2-vCPU guest) is not that, and is forgiven. Each poll
// that saw its run arrive adds kMinPollNs back, each that polled its whole budget doubles it
// (up to the ceiling). The caller polls for the workers' last tasks for at most
// kCallerPollNs before it sleeps: a worker that lost its core mid-task needs that core back.
// Once every task is taken the caller closes the run: a worker not awake yet then skips it,
// and the caller does not wait for a wake-up it no longer needs (a halted virtual CPU can
// take milliseconds to run again).
//
// Concurrency: one call owns the pool at a time. A call that finds the pool busy (another user
// thread, or a log callback that calls back into libgqa) does not wait: it runs all its tasks
// inline on its own thread. Same results, only slower.
//
// fork(): the child has none of the parent's workers, and the pool's mutexes and condition
// variables may be held or waited on by threads that do not exist there. So a child never
// touches the parent's pool again (no run, no join at exit): thread_pool() gives it a fresh
// pool, which starts its own workers at its first parallel run.
#pragma once

#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <functional>
#include <mutex>
#include <thread>
#include <vector>

namespace gqa {
namespace cpu {

class ThreadPool {
public:
    using Task = std::function<void(int64_t task, int32_t worker)>;

    ~ThreadPool();  // stops and joins the workers (process exit or dlclose)

    // Runs task(i, worker) for i in [0, num_tasks) on up to num_threads threads (the caller
    // included) and returns when all are done. Worker ids are < num_threads.
    void run(int64_t num_tasks, int32_t num_threads, const Task& task);

    // After fork(), in the child (its only thread): switch to a fresh pool. See thread_pool.cpp.
    static void after_fork_in_child();

    static constexpr int64_t kDefaultSpinUs = 20000;
    static constexpr int64_t kPreemptedNs = 200000;
    static constexpr int64_t kLostCoreWindowNs = 10000000;
    static constexpr int64_t kMinPollNs = 50000;
    static constexpr int64_t kCallerPollNs = 50000;
    // How long a worker (or the waiting caller) polls before it sleeps, from GQA_CPU_SPIN_US
    // (read once; a value that is not 0..10^6 logs a WARNING and keeps the default).
    static int64_t spin_ns();

private:
    friend struct PoolOwner;

    void resize(int32_t workers);  // pool_mutex_ held
    void stop_workers();           // pool_mutex_ held
    void worker_loop(int32_t worker, uint64_t seen);
    void work(int32_t worker);
    // Polls until ready() or limit_ns has passed, or until it finds it lost its core. With
    // lost_at (a worker's own: the steady-clock ns of the last lost slice it saw), a lost slice
    // counts only when another came less than kLostCoreWindowNs before it; without (the
    // caller's short wait), every one counts.
    enum class Polled { Ready, TimedOut, Preempted };
    template <typename Ready>
    static Polled poll(const Ready& ready, int64_t limit_ns, int64_t* lost_at);
    // The next poll budget after a poll of `used` ns ended with `result` (see Waiting above).
    int64_t adapt_poll_ns(int64_t used, Polled result);

    std::mutex pool_mutex_;  // one call at a time owns the workers

    // A run is published by a new ticket_, stored under state_mutex_ (a sleeping worker waits
    // on wake_ under it); polling workers read ticket_ and stopping_ without the lock. The
    // ticket is the run's generation and, in its low kActiveBits, how many workers (excluding
    // the caller) take part: one atomic, so a worker never pairs one run's generation with
    // another's count.
    static constexpr int kActiveBits = 16;
    static uint64_t generation_of(uint64_t ticket) { return ticket >> kActiveBits; }
    static int32_t active_of(uint64_t ticket) { return static_cast<int32_t>(ticket & ((1u << kActiveBits) - 1)); }
    std::mutex state_mutex_;
    std::condition_variable wake_;
    std::condition_variable done_;
    std::vector<std::thread> threads_;
    std::atomic<uint64_t> ticket_{0};
    std::atomic<bool> stopping_{false};
    std::atomic<uint64_t> open_{0};  // the generation of the run workers may still join; 0: none
    std::atomic<int32_t> inside_{0};  // workers inside a run (or looking whether it is open)
    int32_t started_ = 0;  // workers of the latest resize() that run their loop (state_mutex_)
    std::atomic<int64_t> poll_ns_{-1};  // the workers' poll budget; -1: spin_ns() (not read yet)

    const Task* task_ = nullptr;
    int64_t num_tasks_ = 0;
    std::atomic<int64_t> next_{0};

    // Set in a forked child that had no fresh pool ready: the workers are the parent's, so
    // every run is inline on the caller and nothing else of this pool is touched.
    bool inherited_ = false;
    // In a forked child, pools of the parent are never used nor destroyed again (their threads
    // do not exist); they are kept on a list, reachable, so that leak checkers stay quiet.
    ThreadPool* next_abandoned_ = nullptr;
};

// The process's pool (a fresh one in a forked child).
ThreadPool& thread_pool();

}  // namespace cpu
}  // namespace gqa
