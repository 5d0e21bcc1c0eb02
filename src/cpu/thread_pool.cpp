// thread_pool.cpp: see thread_pool.hpp.
#include "cpu/thread_pool.hpp"

#include <pthread.h>

#include <algorithm>
#include <chrono>
#include <cstdlib>
#include <exception>
#include <limits>
#include <new>

#include "gqa.h"
#include "log.hpp"

namespace gqa {
namespace cpu {

ThreadPool::~ThreadPool() {
    std::lock_guard<std::mutex> hold(pool_mutex_);
    stop_workers();
}

void ThreadPool::stop_workers() {
    {
        std::lock_guard<std::mutex> lock(state_mutex_);
        stopping_.store(true, std::memory_order_release);
    }
    wake_.notify_all();
    for (std::thread& t : threads_) t.join();
    threads_.clear();
    stopping_.store(false, std::memory_order_release);
}

int64_t ThreadPool::spin_ns() {
    static std::atomic<int64_t> cached{-1};
    int64_t ns = cached.load(std::memory_order_relaxed);
    if (ns >= 0) return ns;
    ns = kDefaultSpinUs * 1000;
    const char* env = std::getenv("GQA_CPU_SPIN_US");
    bool bad = false;
    if (env && *env) {
        char* end = nullptr;
        const long long us = std::strtoll(env, &end, 10);
        if (end != env && *end == '\0' && us >= 0 && us <= 1000000) {
            ns = us * 1000;
        } else {
            bad = true;
        }
    }
    int64_t unset = -1;
    if (cached.compare_exchange_strong(unset, ns) && bad) {  // only the first reader warns
        GQA_LOG(GQA_LOG_WARNING, "GQA_CPU_SPIN_US='%s' is not 0..1000000 microseconds; using %lld", env,
                static_cast<long long>(kDefaultSpinUs));
    }
    return cached.load(std::memory_order_relaxed);
}

template <typename Ready>
ThreadPool::Polled ThreadPool::poll(const Ready& ready, int64_t limit, int64_t* lost_at) {
    if (limit == 0) return ready() ? Polled::Ready : Polled::TimedOut;
    using Clock = std::chrono::steady_clock;
    const auto ns = [](Clock::duration d) { return std::chrono::duration_cast<std::chrono::nanoseconds>(d).count(); };
    const Clock::time_point start = Clock::now();
    Clock::time_point last = start;
    for (uint32_t i = 1;; ++i) {
        if (ready()) return Polled::Ready;
        if (i % 64 == 0) {  // the clock (~20 ns) once per 64 pauses
            const Clock::time_point now = Clock::now();
            if (ns(now - last) >= kPreemptedNs) {
                if (!lost_at) return Polled::Preempted;
                const int64_t at = ns(now.time_since_epoch()), previous = *lost_at;
                *lost_at = at;
                if (at - previous < kLostCoreWindowNs) return Polled::Preempted;
            }
            if (ns(now - start) >= limit) return Polled::TimedOut;
            last = now;
        }
#if defined(__x86_64__) || defined(__i386__)
        __builtin_ia32_pause();
#endif
    }
}

int64_t ThreadPool::adapt_poll_ns(int64_t used, Polled result) {
    const int64_t ceiling = spin_ns(), floor = std::min(ceiling, kMinPollNs);
    int64_t next = used;
    if (result == Polled::Preempted) next = std::max(floor, used / 4);
    if (result == Polled::Ready) next = std::min(ceiling, std::max(floor, used + kMinPollNs));
    // A whole budget polled without losing the core: nothing competes for it (any more).
    if (result == Polled::TimedOut) next = std::min(ceiling, std::max(floor, 2 * used));
    poll_ns_.store(next, std::memory_order_relaxed);
    return next;
}

void ThreadPool::resize(int32_t workers) {
    if (static_cast<int32_t>(threads_.size()) == workers) return;
    stop_workers();
    // A new worker starts from the current generation: it joins only runs set up after it
    // exists.
    const uint64_t current = generation_of(ticket_.load(std::memory_order_acquire));
    started_ = 0;
    for (int32_t w = 0; w < workers; ++w) threads_.emplace_back(&ThreadPool::worker_loop, this, w + 1, current);
    // Wait until every new thread runs its loop. A run may end before a worker took part, so
    // without this the caller could return, and fork(), while a thread is still starting up in
    // the C library or a sanitizer runtime, holding one of their locks: the child would inherit
    // it taken (an ASan build hung in 14 of 300 forks right after a first small call).
    std::unique_lock<std::mutex> lock(state_mutex_);
    done_.wait(lock, [&] { return started_ == workers; });
}

void ThreadPool::work(int32_t worker) {
    for (;;) {
        const int64_t i = next_.fetch_add(1, std::memory_order_relaxed);
        if (i >= num_tasks_) return;
        (*task_)(i, worker);
    }
}

void ThreadPool::worker_loop(int32_t worker, uint64_t seen) {
    const auto ready = [&] {
        return stopping_.load(std::memory_order_acquire) ||
               generation_of(ticket_.load(std::memory_order_acquire)) != seen;
    };
    {
        std::lock_guard<std::mutex> lock(state_mutex_);
        ++started_;
    }
    done_.notify_all();
    int64_t lost_at = std::numeric_limits<int64_t>::min() / 2;  // no lost slice yet
    for (;;) {
        int64_t budget = poll_ns_.load(std::memory_order_relaxed);
        if (budget < 0) budget = spin_ns();
        const Polled polled = poll(ready, budget, &lost_at);
        adapt_poll_ns(budget, polled);
        if (polled != Polled::Ready) {  // idle for the whole budget, or lost the core: sleep
            std::unique_lock<std::mutex> lock(state_mutex_);
            wake_.wait(lock, ready);
        }
        if (stopping_.load(std::memory_order_acquire)) return;
        // The run this worker was woken for, or a later one; it may be over already.
        const uint64_t ticket = ticket_.load(std::memory_order_acquire);
        seen = generation_of(ticket);
        if (worker > active_of(ticket)) continue;  // not needed for this run
        // Enter, then look whether the run is still open; the caller closes, then waits for
        // none inside (both seq_cst): either this worker sees it closed and leaves the tasks
        // alone, or the caller sees it inside and waits for it.
        inside_.fetch_add(1, std::memory_order_seq_cst);
        if (open_.load(std::memory_order_seq_cst) == seen) work(worker);
        if (inside_.fetch_sub(1, std::memory_order_seq_cst) == 1) {
            std::lock_guard<std::mutex> lock(state_mutex_);  // the caller may be asleep on done_
            done_.notify_one();
        }
    }
}

void ThreadPool::run(int64_t num_tasks, int32_t num_threads, const Task& task) {
    if (num_tasks <= 0) return;
    const int64_t useful = num_tasks < num_threads ? num_tasks : num_threads;
    std::unique_lock<std::mutex> owner;
    if (!inherited_) owner = std::unique_lock<std::mutex>(pool_mutex_, std::try_to_lock);
    if (useful <= 1 || !owner.owns_lock()) {
        // inline: one thread, a busy pool, or a forked child's inherited pool
        for (int64_t i = 0; i < num_tasks; ++i) task(i, 0);
        return;
    }
    resize(num_threads - 1);  // keep the pool at the configured size so it is not respawned often

    // Tasks must not throw past a worker; the first exception is rethrown here.
    std::exception_ptr failure;
    std::mutex failure_mutex;
    const Task guarded = [&](int64_t i, int32_t worker) {
        try {
            task(i, worker);
        } catch (...) {
            std::lock_guard<std::mutex> lock(failure_mutex);
            if (!failure) failure = std::current_exception();
        }
    };
    const int32_t active = static_cast<int32_t>(useful) - 1;
    {
        std::lock_guard<std::mutex> lock(state_mutex_);
        task_ = &guarded;
        num_tasks_ = num_tasks;
        next_.store(0, std::memory_order_relaxed);
        const uint64_t generation = generation_of(ticket_.load(std::memory_order_relaxed)) + 1;
        open_.store(generation, std::memory_order_relaxed);  // published by the ticket's release
        ticket_.store(generation << kActiveBits | static_cast<uint64_t>(active), std::memory_order_release);
    }
    wake_.notify_all();  // no system call when every worker is polling
    work(0);
    // Every task is taken: close the run, so that a worker that has not woken up yet (a slow
    // wake-up, a halted virtual CPU) is not waited for. Then wait for those still inside,
    // briefly by polling: one may have lost its core, and this thread polling on could keep it
    // from getting one back.
    open_.store(0, std::memory_order_seq_cst);
    const auto done = [&] { return inside_.load(std::memory_order_seq_cst) == 0; };
    if (poll(done, std::min(spin_ns(), kCallerPollNs), nullptr) != Polled::Ready) {
        std::unique_lock<std::mutex> lock(state_mutex_);
        done_.wait(lock, done);
    }
    task_ = nullptr;
    if (failure) std::rethrow_exception(failure);
}

// ---- the process's pool, and fork() ------------------------------------------------------
//
// The pool lives on the heap and is reached through g_pool, so that a forked child can switch
// to a fresh one. The fresh pool is allocated before fork() (in the prepare handler, by the
// forking thread) because the child handler should not allocate: the child is a copy of a
// multi-threaded process, and only the forking thread exists in it. All of this is set up at
// load time, with no lazily initialised static whose guard a fork could catch half taken.
namespace {

ThreadPool* g_pool = nullptr;
ThreadPool* g_spare = nullptr;  // the next child's fresh pool, made before each fork
ThreadPool* g_abandoned = nullptr;  // pools of the parent(s), in a child: see next_abandoned_
std::mutex g_fork_mutex;        // held from prepare to parent/child: guards g_spare

void before_fork() {
    g_fork_mutex.lock();
    if (!g_spare) g_spare = new (std::nothrow) ThreadPool();  // none: the child runs inline
}

void after_fork_in_parent() { g_fork_mutex.unlock(); }

}  // namespace

void ThreadPool::after_fork_in_child() {
    g_fork_mutex.unlock();  // held by this thread since before_fork
    if (g_spare) {
        g_pool->next_abandoned_ = g_abandoned;
        g_abandoned = g_pool;
        g_pool = g_spare;
        g_spare = nullptr;
    } else {
        g_pool->inherited_ = true;
    }
}

struct PoolOwner {
    PoolOwner() {
        g_pool = new ThreadPool();
        pthread_atfork(&before_fork, &after_fork_in_parent, &ThreadPool::after_fork_in_child);
    }
    // At exit or dlclose: join the workers, unless they are a parent's (inherited).
    ~PoolOwner() {
        if (!g_pool->inherited_) delete g_pool;
        delete g_spare;
    }
};

namespace {
PoolOwner g_pool_owner;
}  // namespace

ThreadPool& thread_pool() { return *g_pool; }

}  // namespace cpu
}  // namespace gqa
