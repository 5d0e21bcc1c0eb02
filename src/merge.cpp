// merge.cpp: gqa_merge_states' validation and dispatch (the arithmetic is in cpu/merge.cpp and
// cuda/merge.cu).
#include "merge.hpp"

#include <cmath>
#include <initializer_list>

#include "config.hpp"
#include "error.hpp"
#include "extent.hpp"
#include "validate.hpp"

namespace gqa {

namespace {

// The product of dims, failing (naming the tensor) when its byte size overflows 64 bits.
int64_t elements(const char* name, std::initializer_list<int64_t> dims, int64_t elem_bytes) {
    int64_t n = 1, bytes = 0;
    for (int64_t d : dims) {
        if (__builtin_mul_overflow(n, d, &n)) n = -1;
        if (n < 0) break;
    }
    if (n < 0 || __builtin_mul_overflow(n, elem_bytes, &bytes)) {
        fail(GQA_STATUS_INVALID_ARGUMENT, "%s has more bytes than a 64-bit size holds", name);
    }
    return n;
}

MergeProblem validate_merge(void* out, float* lse_out, const void* states, const float* lses,
                            const gqa_merge_config* config, void* stream) {
    const gqa_merge_config c = read_config(config);
    MergeProblem m;
    m.dtype = require_dtype(c.dtype);
    require_device(c.device);
    m.device = c.device;
    const struct { const char* name; int32_t value; } sizes[] = {
        {"num_states", c.num_states}, {"batch_size", c.batch_size}, {"seq_len", c.seq_len},
        {"num_heads", c.num_heads}, {"head_dim", c.head_dim}};
    for (const auto& size : sizes) {
        if (size.value <= 0) fail(GQA_STATUS_INVALID_ARGUMENT, "%s (%d) must be > 0", size.name, size.value);
    }
    if (c.reserved != 0) fail(GQA_STATUS_INVALID_ARGUMENT, "reserved (%d) must be 0", c.reserved);
    if (!out) fail(GQA_STATUS_INVALID_ARGUMENT, "out is NULL");
    if (!states) fail(GQA_STATUS_INVALID_ARGUMENT, "states is NULL");
    if (!lses) fail(GQA_STATUS_INVALID_ARGUMENT, "lses is NULL");
    m.num_states = c.num_states;
    m.batch = c.batch_size;
    m.seq_len = c.seq_len;
    m.num_heads = c.num_heads;
    m.head_dim = c.head_dim;
    m.sinks = c.sinks;
    m.out = out;
    m.lse_out = lse_out;
    m.states = states;
    m.lses = lses;
    m.stream = stream;

    const int64_t eb = dtype_bytes(m.dtype);
    const int64_t rows = elements("lse_out", {m.batch, m.num_heads, m.seq_len}, 4);
    const int64_t row_elements = elements("out", {rows, m.head_dim}, eb);
    require_no_aliasing({
        Extent::flat("out", out, row_elements, eb, true),
        Extent::flat("lse_out", lse_out, rows, 4, true),
        Extent::flat("states", states, elements("states", {m.num_states, row_elements}, eb), eb, false),
        Extent::flat("lses", lses, elements("lses", {m.num_states, rows}, 4), 4, false),
        Extent::flat("sinks", m.sinks, m.num_heads, 4, false),
    });
    require_sink_values(m.sinks, m.num_heads, m.device);
    if (m.device == GQA_DEVICE_CUDA) cuda_check_merge(m);
    return m;
}

}  // namespace

void merge_states(void* out, float* lse_out, const void* states, const float* lses, const gqa_merge_config* config,
                  void* stream) {
    const MergeProblem m = validate_merge(out, lse_out, states, lses, config, stream);
    if (m.device == GQA_DEVICE_CUDA) cuda_merge_states(m); else cpu_merge_states(m);
}

}  // namespace gqa
