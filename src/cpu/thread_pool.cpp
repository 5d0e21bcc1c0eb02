// thread_pool.cpp: see thread_pool.hpp.
#include "cpu/thread_pool.hpp"

#include <pthread.h>

#include <exception>
#include <new>

namespace gqa {
namespace cpu {

ThreadPool::~ThreadPool() {
    std::lock_guard<std::mutex> hold(pool_mutex_);
    stop_workers();
}

void ThreadPool::stop_workers() {
    {
        std::lock_guard<std::mutex> lock(state_mutex_);
        stopping_ = true;
    }
    wake_.notify_all();
    for (std::thread& t : threads_) t.join();
    threads_.clear();
    std::lock_guard<std::mutex> lock(state_mutex_);
    stopping_ = false;
}

void ThreadPool::resize(int32_t workers) {
    if (static_cast<int32_t>(threads_.size()) == workers) return;
    stop_workers();
    // A new worker must not act on the generation of a run that is already over (it would read
    // a stale active_workers_ and decrement busy_ of the next run): it starts from the current
    // generation and joins only runs set up after it exists.
    uint64_t current;
    {
        std::lock_guard<std::mutex> lock(state_mutex_);
        current = generation_;
    }
    for (int32_t w = 0; w < workers; ++w) threads_.emplace_back(&ThreadPool::worker_loop, this, w + 1, current);
}

void ThreadPool::work(int32_t worker) {
    for (;;) {
        const int64_t i = next_.fetch_add(1, std::memory_order_relaxed);
        if (i >= num_tasks_) return;
        (*task_)(i, worker);
    }
}

void ThreadPool::worker_loop(int32_t worker, uint64_t seen) {
    for (;;) {
        {
            std::unique_lock<std::mutex> lock(state_mutex_);
            wake_.wait(lock, [&] { return stopping_ || generation_ != seen; });
            if (stopping_) return;
            seen = generation_;
            if (worker > active_workers_) continue;  // not needed for this run
        }
        work(worker);
        std::lock_guard<std::mutex> lock(state_mutex_);
        if (--busy_ == 0) done_.notify_one();
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
    {
        std::lock_guard<std::mutex> lock(state_mutex_);
        task_ = &guarded;
        num_tasks_ = num_tasks;
        next_.store(0, std::memory_order_relaxed);
        active_workers_ = static_cast<int32_t>(useful) - 1;
        busy_ = active_workers_;
        ++generation_;
    }
    wake_.notify_all();
    work(0);
    {
        std::unique_lock<std::mutex> lock(state_mutex_);
        done_.wait(lock, [&] { return busy_ == 0; });
        task_ = nullptr;
    }
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
