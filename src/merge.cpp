// merge.cpp: gqa_merge_states' validation and dispatch (the arithmetic is in cpu/merge.cpp and
// cuda/merge.cu).
#include "merge.hpp"

#include <cmath>

#include "config.hpp"
#include "error.hpp"
#include "extent.hpp"
#include "validate.hpp"

namespace gqa {

namespace {

MergeProblem validate_merge(void* out, float* lse_out, const void* states, const float* lses,
                            const gqa_merge_config* config, void* stream) {
    const gqa_merge_config c = read_config(config);
    MergeProblem m;
    m.dtype = require_dtype(c.dtype);
    require_device(c.device);
    m.device = c.device;
    require_positive("num_states", c.num_states);
    require_positive("batch_size", c.batch_size);
    require_positive("seq_len", c.seq_len);
    require_positive("num_heads", c.num_heads);
    require_positive("head_dim", c.head_dim);
    if (c.reserved != 0) fail(GQA_STATUS_INVALID_ARGUMENT, "reserved (%d) must be 0", c.reserved);
    require_pointer("out", out);
    require_pointer("states", states);
    require_pointer("lses", lses);
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

    // Sizes first (an overflow is named), in elements: rows of lse_out, then out, states, lses.
    const int64_t eb = dtype_bytes(m.dtype);
    const int64_t rows = tensor_bytes("lse_out", m.batch, m.num_heads, m.seq_len, 4, 1) / 4;
    const int64_t row_elements = tensor_bytes("out", rows, m.head_dim, eb, 1, 1) / eb;
    const int64_t state_elements = tensor_bytes("states", m.num_states, row_elements, eb, 1, 1) / eb;
    const int64_t lse_elements = tensor_bytes("lses", m.num_states, rows, 4, 1, 1) / 4;
    require_no_aliasing({
        Extent::flat("out", out, row_elements, eb, true),
        Extent::flat("lse_out", lse_out, rows, 4, true),
        Extent::flat("states", states, state_elements, eb, false),
        Extent::flat("lses", lses, lse_elements, 4, false),
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
