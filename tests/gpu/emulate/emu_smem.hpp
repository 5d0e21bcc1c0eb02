// emu_smem.hpp: the emulator's shared-memory ordering check (included by emu.hpp).
//
// For every 16-byte chunk of the block's dynamic shared memory it remembers the last cp.async
// into it (thread, and the barrier intervals in which it may land) and the last reads through
// ldmatrix. A cp.async issued in interval e and waited for in interval w may land at any time
// in [e, w], so another thread may read the chunk only from interval w + 1 on (after a
// __syncthreads that follows the wait), and a cp.async may not overwrite a chunk that another
// thread read in the same interval. Both are checked whatever order the threads (fibers or
// std::threads) run in, so a missing barrier fails every time, not only when they interleave badly.
// (Plain C++ loads and stores of shared memory are not seen; the NaN poisoning covers those.)
#pragma once

#include <climits>
#include <mutex>
#include <vector>

namespace emu {

struct ChunkShadow {
    int writer = -1;        // thread of the last cp.async into the chunk (-1: none)
    int write_from = 0;     // interval it was issued in
    int write_to = 0;       // interval it was waited for in (kPending until then)
    int reader = -1;        // a thread that read the chunk in interval read_epoch
    int read_epoch = -1;
    bool many_readers = false;  // more than one thread read it in read_epoch
};
constexpr int kPending = INT_MAX;

extern std::vector<ChunkShadow> smem_shadow;  // one per 16 bytes of dynamic shared memory
extern std::mutex smem_shadow_mutex;

inline void smem_shadow_reset(size_t bytes) { smem_shadow.assign(bytes / 16 + 1, ChunkShadow{}); }

inline ChunkShadow& chunk_of(const void* p) {
    return smem_shadow[size_t(static_cast<const unsigned char*>(p) - dynamic_smem) / 16];
}

// An ldmatrix row (16 bytes at p) read by this thread.
inline void note_smem_read(const void* p) {
    const int me = int(thread_idx.x);
    std::lock_guard<std::mutex> lock(smem_shadow_mutex);
    ChunkShadow& c = chunk_of(p);
    if (c.writer >= 0 && c.writer != me && epoch >= c.write_from && epoch <= c.write_to)
        die_in_block("thread %d reads shared memory at offset %td in barrier interval %d, but thread %d's "
                     "cp.async into it (issued in interval %d, %s) may still be landing: a __syncthreads "
                     "is missing after the cp.async.wait_group",
                     me, static_cast<const unsigned char*>(p) - dynamic_smem, epoch, c.writer, c.write_from,
                     c.write_to == kPending ? "not yet waited for" : "waited for in the same interval");
    if (c.writer == me && c.write_to == kPending)
        die_in_block("thread %d reads shared memory at offset %td before the cp.async.wait_group of its own "
                     "cp.async into it", me, static_cast<const unsigned char*>(p) - dynamic_smem);
    if (c.read_epoch != epoch) {
        c.read_epoch = epoch;
        c.reader = me;
        c.many_readers = false;
    } else if (c.reader != me) {
        c.many_readers = true;
    }
}

// A cp.async of this thread into the 16 bytes at p, issued now.
inline void note_cp_async_issue(const void* p) {
    const int me = int(thread_idx.x);
    std::lock_guard<std::mutex> lock(smem_shadow_mutex);
    ChunkShadow& c = chunk_of(p);
    if (c.read_epoch == epoch && (c.reader != me || c.many_readers))
        die_in_block("thread %d's cp.async overwrites shared memory at offset %td that thread %d read in the "
                     "same barrier interval %d: a __syncthreads is missing before the refill",
                     me, static_cast<const unsigned char*>(p) - dynamic_smem, c.reader == me ? -1 : c.reader, epoch);
    c.writer = me;
    c.write_from = epoch;
    c.write_to = kPending;
}

// This thread's cp.async into p has been waited for.
inline void note_cp_async_landed(const void* p) {
    std::lock_guard<std::mutex> lock(smem_shadow_mutex);
    ChunkShadow& c = chunk_of(p);
    if (c.writer == int(thread_idx.x)) c.write_to = epoch;
}

}  // namespace emu
