// merge.cpp: gqa_merge_states on the CPU. Each output row (sequence, position, head) is the
// lse-weighted sum of its partial rows, summed in partial order in fp32; rows are independent,
// so splitting them over threads never changes a bit.
#include <algorithm>
#include <cmath>
#include <limits>
#include <vector>

#include "backend.hpp"
#include "cpu/convert.hpp"
#include "cpu/thread_pool.hpp"
#include "merge.hpp"

namespace gqa {

namespace {

// Rows per pool task: enough partial elements (~64 KiB of fp32) to outweigh a task hand-off.
int64_t rows_per_task(const MergeProblem& m) {
    return std::max<int64_t>(1, 16384 / (m.num_states * m.head_dim));
}

// Output row r = ((b * seq_len + s) * num_heads + h); its lse index (b, h, s).
void merge_row(const MergeProblem& m, int64_t r, float* acc) {
    const float neg_inf = -std::numeric_limits<float>::infinity();
    const int64_t d_len = m.head_dim;
    const int64_t h = r % m.num_heads;
    const int64_t s = (r / m.num_heads) % m.seq_len;
    const int64_t b = r / (m.num_heads * m.seq_len);
    const int64_t lse_index = (b * m.num_heads + h) * m.seq_len + s;
    const int64_t rows = m.batch * m.seq_len * m.num_heads;

    // The largest lse (and sink) is the base of the exponentials: every weight is <= 1.
    float top = m.sinks ? m.sinks[h] : neg_inf;
    for (int64_t n = 0; n < m.num_states; ++n) top = std::fmax(top, m.lses[n * rows + lse_index]);
    const float base = top == neg_inf ? 0.0f : top;  // nothing seen anywhere: no -inf - -inf

    float total = m.sinks ? std::exp(m.sinks[h] - base) : 0.0f;  // the sink, added once
    std::fill(acc, acc + d_len, 0.0f);
    for (int64_t n = 0; n < m.num_states; ++n) {
        const float lse = m.lses[n * rows + lse_index];
        if (lse == neg_inf) continue;  // an empty partial weighs exactly 0; its state is not read
        const float weight = std::exp(lse - base);  // NaN lse: NaN weight, NaN row (not hidden)
        total += weight;
        const int64_t offset = (n * rows + r) * d_len;
        for (int64_t d = 0; d < d_len; ++d) acc[d] += weight * cpu::load_f32(m.states, offset + d, m.dtype);
    }
    const float inv = total == 0.0f ? 0.0f : 1.0f / total;
    for (int64_t d = 0; d < d_len; ++d) cpu::store_f32(m.out, r * d_len + d, acc[d] * inv, m.dtype);
    if (m.lse_out) m.lse_out[lse_index] = total == 0.0f ? neg_inf : base + std::log(total);
}

}  // namespace

void cpu_merge_states(const MergeProblem& m) {
    const int64_t rows = m.batch * m.seq_len * m.num_heads;
    const int64_t per_task = rows_per_task(m);
    const int64_t tasks = (rows + per_task - 1) / per_task;
    cpu::thread_pool().run(tasks, cpu_num_threads(), [&](int64_t task, int32_t /*worker*/) {
        thread_local std::vector<float> acc;
        if (static_cast<int64_t>(acc.size()) < m.head_dim) acc.resize(static_cast<size_t>(m.head_dim));
        const int64_t end = std::min(rows, (task + 1) * per_task);
        for (int64_t r = task * per_task; r < end; ++r) merge_row(m, r, acc.data());
    });
}

}  // namespace gqa
