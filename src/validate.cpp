// validate.cpp: every check a call needs, run before any byte of out or the caches is written.
// Messages name the parameter and its value, e.g.
//   "num_q_heads (14) must be a multiple of num_kv_heads (4)".
#include "validate.hpp"

#include <cmath>
#include <cstdint>
#include <limits>
#include <string>

#include "backend.hpp"
#include "config.hpp"
#include "error.hpp"
#include "extent.hpp"

namespace gqa {

DType require_dtype(int32_t dtype) {
    if (dtype != GQA_DTYPE_F16 && dtype != GQA_DTYPE_BF16 && dtype != GQA_DTYPE_F32) {
        fail(GQA_STATUS_INVALID_ARGUMENT,
             "dtype (%d) must be GQA_DTYPE_F16 (%d), GQA_DTYPE_BF16 (%d) or GQA_DTYPE_F32 (%d)",
             dtype, GQA_DTYPE_F16, GQA_DTYPE_BF16, GQA_DTYPE_F32);
    }
    return static_cast<DType>(dtype);
}

void require_device(int32_t device) {
    if (device != GQA_DEVICE_CPU && device != GQA_DEVICE_CUDA) {
        fail(GQA_STATUS_INVALID_ARGUMENT, "device (%d) must be GQA_DEVICE_CPU (%d) or GQA_DEVICE_CUDA (%d)",
             device, GQA_DEVICE_CPU, GQA_DEVICE_CUDA);
    }
}

void require_sink_values(const float* sinks, int64_t count, int32_t device) {
    if (!sinks || device != GQA_DEVICE_CPU) return;  // CUDA: device memory, not read here
    for (int64_t h = 0; h < count; ++h) {
        if (std::isnan(sinks[h]) || sinks[h] == INFINITY) {
            fail(GQA_STATUS_INVALID_ARGUMENT, "sinks[%lld] (%g) must be a finite logit or -inf (no sink)",
                 static_cast<long long>(h), static_cast<double>(sinks[h]));
        }
    }
}

void require_positive(const char* name, int32_t value) {
    if (value <= 0) fail(GQA_STATUS_INVALID_ARGUMENT, "%s (%d) must be > 0", name, value);
}

void require_heads(int32_t num_q_heads, int32_t num_kv_heads, int32_t head_dim) {
    require_positive("num_q_heads", num_q_heads);
    require_positive("num_kv_heads", num_kv_heads);
    require_positive("head_dim", head_dim);
    if (num_q_heads % num_kv_heads != 0) {
        fail(GQA_STATUS_INVALID_ARGUMENT, "num_q_heads (%d) must be a multiple of num_kv_heads (%d)",
             num_q_heads, num_kv_heads);
    }
    if (head_dim > kMaxHeadDim) {
        fail(GQA_STATUS_UNSUPPORTED, "head_dim (%d) is larger than %d, the largest libgqa supports",
             head_dim, kMaxHeadDim);
    }
}

// The largest scale whose fp32 logits scale * q.k stay within +-FLT_MAX / 2 for every input f16
// can hold (|x| <= 65504, so |q.k| <= head_dim * 65504^2): then the logits, and their
// differences s - max in the softmax, are finite. A larger scale overflows on ordinary inputs
// (3e38 did, giving all-NaN rows); no model uses a scale within many orders of magnitude of it.
double max_scale(int32_t head_dim) {
    constexpr double kF16Max = 65504.0;
    return std::numeric_limits<float>::max() / (2.0 * head_dim * kF16Max * kF16Max);
}

float resolve_scale(float scale, int32_t head_dim) {
    if (!std::isfinite(scale) || scale < 0.0f) {
        fail(GQA_STATUS_INVALID_ARGUMENT,
             "scale (%g) must be finite and >= 0 (0 means 1/sqrt(head_dim))", static_cast<double>(scale));
    }
    if (scale > max_scale(head_dim)) {
        fail(GQA_STATUS_INVALID_ARGUMENT,
             "scale (%g) must be at most FLT_MAX / (2 * head_dim * 65504^2) = %g for head_dim %d: larger "
             "scales can overflow the fp32 logits scale * q.k of ordinary inputs",
             static_cast<double>(scale), max_scale(head_dim), head_dim);
    }
    return scale == 0.0f ? static_cast<float>(1.0 / std::sqrt(static_cast<double>(head_dim))) : scale;
}

void require_pointer(const char* name, const void* ptr) {
    if (!ptr) fail(GQA_STATUS_INVALID_ARGUMENT, "%s is NULL", name);
}

// Bytes of a tensor [d0, d1, d2, d3] of elem_bytes each; fails if the size does not fit in
// int64 (and so in any address space).
int64_t tensor_bytes(const char* name, int64_t d0, int64_t d1, int64_t d2, int64_t d3, int64_t elem_bytes) {
    int64_t total = elem_bytes;
    for (int64_t d : {d0, d1, d2, d3}) {
        if (__builtin_mul_overflow(total, d, &total)) {
            fail(GQA_STATUS_INVALID_ARGUMENT,
                 "%s has %lld x %lld x %lld x %lld elements of %lld bytes, which overflows a 64-bit size",
                 name, static_cast<long long>(d0), static_cast<long long>(d1), static_cast<long long>(d2),
                 static_cast<long long>(d3), static_cast<long long>(elem_bytes));
        }
    }
    return total;
}

// -1 (unbounded) or a key count >= 0.
void require_window(const char* name, int32_t value) {
    if (value < -1) fail(GQA_STATUS_INVALID_ARGUMENT, "%s (%d) must be -1 (unbounded) or >= 0", name, value);
}

namespace {

// A caller's strides: checked here, 0 fields replaced by their contiguous value in finish().
Strides require_strides(const char* name, const gqa_strides& given, const Problem& p) {
    const int64_t fields[3] = {given.batch, given.token, given.head};
    const char* field_names[3] = {"batch", "token", "head"};
    for (int i = 0; i < 3; ++i) {
        if (fields[i] < 0) {
            fail(GQA_STATUS_INVALID_ARGUMENT, "%s.%s (%lld) must be >= 0 (0: contiguous)", name, field_names[i],
                 static_cast<long long>(fields[i]));
        }
    }
    if (p.kind == Kind::Decode && given.token != 0) {
        fail(GQA_STATUS_INVALID_ARGUMENT, "%s.token (%lld) must be 0 for decode (one token per sequence)", name,
             static_cast<long long>(given.token));
    }
    Strides s;
    s.batch = given.batch;
    s.token = given.token;
    s.head = given.head;
    return s;
}

// Fills the 0 fields with the contiguous layout of [tokens, heads, head_dim] sequences; called
// once the tensor sizes are known to fit in 64 bits.
void fill_contiguous(Strides& s, const Problem& p, int64_t heads) {
    if (!s.head) s.head = p.head_dim;
    if (!s.token) s.token = heads * p.head_dim;
    if (!s.batch) s.batch = p.seq_len * heads * p.head_dim;
}

// The variant fields (gqa.h), the same in both configs.
template <typename Config>
void read_variants(const Config& c, Problem& p) {
    require_window("window_left", c.window_left);
    require_window("window_right", c.window_right);
    if (!std::isfinite(c.softcap) || c.softcap < 0.0f) {
        fail(GQA_STATUS_INVALID_ARGUMENT, "softcap (%g) must be finite and >= 0 (0: off)",
             static_cast<double>(c.softcap));
    }
    if (c.reserved2 != 0) fail(GQA_STATUS_INVALID_ARGUMENT, "reserved2 (%d) must be 0", c.reserved2);
    p.window_left = c.window_left;
    p.window_right = c.window_right;
    p.softcap = c.softcap;
    p.sinks = c.sinks;
    p.lse = c.lse;
    p.q_strides = require_strides("q_strides", c.q_strides, p);
    p.k_strides = require_strides("k_strides", c.k_strides, p);
    p.v_strides = require_strides("v_strides", c.v_strides, p);
    p.out_strides = require_strides("out_strides", c.out_strides, p);
}

// The fields every entry point has, checked in this order, into a new Problem.
Problem shape(Kind kind, int32_t dtype, int32_t device, int32_t batch_size, int32_t seq_len,
              int32_t num_q_heads, int32_t num_kv_heads, int32_t head_dim) {
    Problem p;
    p.kind = kind;
    p.dtype = require_dtype(dtype);
    require_device(device);
    p.device = device;
    require_positive("batch_size", batch_size);
    require_positive("seq_len", seq_len);
    require_heads(num_q_heads, num_kv_heads, head_dim);
    p.batch = batch_size;
    p.seq_len = seq_len;
    p.num_q_heads = num_q_heads;
    p.num_kv_heads = num_kv_heads;
    p.group = p.num_q_heads / p.num_kv_heads;
    p.head_dim = head_dim;
    return p;
}

void require_tensors(const void* out, const void* q, const void* k, const void* v) {
    require_pointer("out", out);
    require_pointer("q", q);
    require_pointer("k", k);
    require_pointer("v", v);
}

// The tensors of a call, then the checks that need every field: byte sizes, aliasing and the
// backend's own limits.
void finish(Problem& p, void* out, const void* q, const void* k, const void* v, void* k_cache,
            void* v_cache, void* stream) {
    p.out = out;
    p.q = q;
    p.k = k;
    p.v = v;
    p.k_cache = k_cache;
    p.v_cache = v_cache;
    p.stream = stream;

    const int64_t eb = dtype_bytes(p.dtype);
    tensor_bytes("out", p.batch, p.seq_len, p.num_q_heads, p.head_dim, eb);
    tensor_bytes("q", p.batch, p.seq_len, p.num_q_heads, p.head_dim, eb);
    tensor_bytes("k", p.batch, p.seq_len, p.num_kv_heads, p.head_dim, eb);
    const int64_t cache_bytes = p.has_cache
        ? tensor_bytes("k_cache", p.batch, p.max_seq_len, p.num_kv_heads, p.head_dim, eb) : 0;
    const int64_t lse_elements = p.batch * p.num_q_heads * p.seq_len;  // no larger than q
    fill_contiguous(p.q_strides, p, p.num_q_heads);
    fill_contiguous(p.k_strides, p, p.num_kv_heads);
    fill_contiguous(p.v_strides, p, p.num_kv_heads);
    fill_contiguous(p.out_strides, p, p.num_q_heads);
    const auto bshd = [&](const char* name, const void* ptr, int64_t heads, const Strides& s, bool written) {
        return Extent::bshd(name, ptr, p.batch, p.seq_len, heads, p.head_dim, s, eb, written);
    };
    require_no_aliasing({
        bshd("out", p.out, p.num_q_heads, p.out_strides, true),
        bshd("q", p.q, p.num_q_heads, p.q_strides, false),
        bshd("k", p.k, p.num_kv_heads, p.k_strides, false),
        bshd("v", p.v, p.num_kv_heads, p.v_strides, false),
        Extent::flat("k_cache", p.k_cache, cache_bytes / eb, eb, true),
        Extent::flat("v_cache", p.v_cache, cache_bytes / eb, eb, true),
        Extent::flat("lse", p.lse, lse_elements, 4, true),
        Extent::flat("sinks", p.sinks, p.num_q_heads, 4, false),
    });
    require_sink_values(p.sinks, p.num_q_heads, p.device);
    validate_backend(p);
}

// The pointer-free part of a decode call: dtype, device, shapes, split request.
Problem decode_shape(const gqa_decode_config& c) {
    Problem p = shape(Kind::Decode, c.dtype, c.device, c.batch_size, 1, c.num_q_heads, c.num_kv_heads,
                      c.head_dim);
    require_positive("max_seq_len", c.max_seq_len);
    p.scale = resolve_scale(c.scale, c.head_dim);
    if (c.num_splits < 0 || c.num_splits > kMaxSplits) {
        fail(GQA_STATUS_INVALID_ARGUMENT, "num_splits (%d) must be between 0 (choose) and %d",
             c.num_splits, kMaxSplits);
    }
    p.max_seq_len = c.max_seq_len;
    p.has_cache = true;
    p.causal = true;
    p.num_splits = c.num_splits;
    return p;
}

}  // namespace

Problem validate_prefill(void* out, const void* q, const void* k, const void* v, void* k_cache,
                         void* v_cache, const gqa_prefill_config* config, void* stream) {
    const gqa_prefill_config c = read_config(config);
    Problem p = shape(Kind::Prefill, c.dtype, c.device, c.batch_size, c.seq_len, c.num_q_heads,
                      c.num_kv_heads, c.head_dim);
    if (c.causal != 0 && c.causal != 1) {
        fail(GQA_STATUS_INVALID_ARGUMENT, "causal (%d) must be 0 or 1", c.causal);
    }
    if (c.reserved != 0) fail(GQA_STATUS_INVALID_ARGUMENT, "reserved (%d) must be 0", c.reserved);
    p.scale = resolve_scale(c.scale, c.head_dim);
    p.causal = c.causal == 1;
    read_variants(c, p);

    require_tensors(out, q, k, v);
    if ((k_cache == nullptr) != (v_cache == nullptr)) {
        fail(GQA_STATUS_INVALID_ARGUMENT, "%s is NULL but %s is not; pass both caches or neither",
             k_cache ? "v_cache" : "k_cache", k_cache ? "k_cache" : "v_cache");
    }
    p.has_cache = k_cache != nullptr;
    if (p.has_cache) {
        require_positive("max_seq_len", c.max_seq_len);
        if (c.start_pos < 0) fail(GQA_STATUS_INVALID_ARGUMENT, "start_pos (%d) must be >= 0", c.start_pos);
        if (static_cast<int64_t>(c.start_pos) + c.seq_len > c.max_seq_len) {
            fail(GQA_STATUS_CACHE_OVERFLOW,
                 "start_pos (%d) + seq_len (%d) exceeds max_seq_len (%d): the cache is too small",
                 c.start_pos, c.seq_len, c.max_seq_len);
        }
        p.max_seq_len = c.max_seq_len;
        p.start_pos = c.start_pos;
    } else if (c.start_pos != 0) {
        fail(GQA_STATUS_INVALID_ARGUMENT,
             "start_pos (%d) must be 0 without caches (k_cache and v_cache are NULL)", c.start_pos);
    }
    finish(p, out, q, k, v, k_cache, v_cache, stream);
    return p;
}

Problem validate_decode_shape(const gqa_decode_config* config) { return decode_shape(read_config(config)); }

Problem validate_decode(void* out, const void* q, const void* k, const void* v, void* k_cache,
                        void* v_cache, const gqa_decode_config* config, void* stream) {
    const gqa_decode_config c = read_config(config);
    Problem p = decode_shape(c);
    require_tensors(out, q, k, v);
    require_pointer("k_cache", k_cache);
    require_pointer("v_cache", v_cache);

    // Each sequence appends at its cache length, which must leave room for the new token.
    auto check_len = [&](const char* name, int32_t len) {
        if (len < 0) fail(GQA_STATUS_INVALID_ARGUMENT, "%s (%d) must be >= 0", name, len);
        if (len >= c.max_seq_len) {
            fail(GQA_STATUS_CACHE_OVERFLOW,
                 "%s (%d) must be less than max_seq_len (%d): the cache has no room for the new token",
                 name, len, c.max_seq_len);
        }
    };
    if (c.cache_lens) {
        for (int32_t b = 0; b < c.batch_size; ++b) {
            const int32_t len = c.cache_lens[b];
            if (len < 0 || len >= c.max_seq_len) check_len(format("cache_lens[%d]", b).c_str(), len);  // named on failure only
        }
    } else {
        check_len("cache_len", c.cache_len);
    }

    read_variants(c, p);
    p.start_pos = c.cache_lens ? 0 : c.cache_len;
    p.start_positions = c.cache_lens;
    p.workspace = c.workspace;
    p.workspace_bytes = c.workspace_bytes;
    finish(p, out, q, k, v, k_cache, v_cache, stream);
    return p;
}

void validate_backend(const Problem& p) {
    // Both backends run every variant option; the CPU backend takes every valid Problem, CUDA
    // checks what its kernels need (head dims, 16-byte aligned rows, device memory, ...).
    if (p.device == GQA_DEVICE_CUDA) cuda_check_supported(p);
}

}  // namespace gqa
