// thread_pool.hpp: a small persistent std::thread pool for the CPU backend.
//
// Not OpenMP: libgqa is loaded next to PyTorch, and two OpenMP runtimes in one process clash.
// run() hands out task indices 0..n-1 through an atomic counter; the calling thread works too
// (as worker 0). Which worker runs a task never changes the result: each task writes its own
// outputs and kernels are deterministic.
//
// Concurrency: one call owns the pool at a time. A call that finds the pool busy (another user
// thread, or a log callback that calls back into libgqa) does not wait: it runs all its tasks
// inline on its own thread. Same results, only slower.
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

private:
    void resize(int32_t workers);  // pool_mutex_ held
    void stop_workers();           // pool_mutex_ held
    void worker_loop(int32_t worker, uint64_t seen);
    void work(int32_t worker);

    std::mutex pool_mutex_;  // one call at a time owns the workers

    std::mutex state_mutex_;
    std::condition_variable wake_;
    std::condition_variable done_;
    std::vector<std::thread> threads_;
    uint64_t generation_ = 0;
    bool stopping_ = false;
    int32_t active_workers_ = 0;  // workers (excluding the caller) taking part in this run
    int32_t busy_ = 0;            // of those, still working

    const Task* task_ = nullptr;
    int64_t num_tasks_ = 0;
    std::atomic<int64_t> next_{0};
};

ThreadPool& thread_pool();

}  // namespace cpu
}  // namespace gqa
