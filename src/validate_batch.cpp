// validate_batch.cpp: every check of gqa_attention_batch, run before anything is written.
//
// On the CPU the metadata (q_indptr, kv_lens, page_table) is host memory and is read here in
// full: row ranges, lengths against the sequence's pages, every page id a sequence touches, and
// the shared-page write rule. On CUDA it is device memory that the host must not read (a
// captured graph replays with new contents): the kernels check each sequence's metadata
// themselves (skip and flag, cuda/common.cuh: AttnParams::sequence), and only with
// GQA_VALIDATE_METADATA=1 is it copied to the host and checked here as on the CPU.
#include "validate_batch.hpp"

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

#include "backend.hpp"
#include "extent.hpp"
#include "config.hpp"
#include "error.hpp"
#include "validate.hpp"

namespace gqa {

namespace {

void require_non_negative(const char* name, int32_t value) {
    if (value < 0) fail(GQA_STATUS_INVALID_ARGUMENT, "%s (%d) must be >= 0", name, value);
}

// The variant options (gqa.h: the same meaning as for prefill and decode) into p. Strides: the
// rows are ragged, so batch must be 0; a 0 token or head stride is the contiguous value.
void read_variants(const gqa_batch_config& c, Problem& p) {
    require_window("window_left", c.window_left);
    require_window("window_right", c.window_right);
    if (!std::isfinite(c.softcap) || c.softcap < 0.0f) {
        fail(GQA_STATUS_INVALID_ARGUMENT, "softcap (%g) must be finite and >= 0 (0 = off)", static_cast<double>(c.softcap));
    }
    if (c.reserved != 0) fail(GQA_STATUS_INVALID_ARGUMENT, "reserved (%d) must be 0", c.reserved);
    const struct {
        const char* name;
        const gqa_strides& given;
        Strides& resolved;
        int64_t heads;
    } tensors[] = {{"q_strides", c.q_strides, p.q_strides, p.num_q_heads},
                   {"k_strides", c.k_strides, p.k_strides, p.num_kv_heads},
                   {"v_strides", c.v_strides, p.v_strides, p.num_kv_heads},
                   {"out_strides", c.out_strides, p.out_strides, p.num_q_heads}};
    for (const auto& t : tensors) {
        if (t.given.batch != 0) {
            fail(GQA_STATUS_INVALID_ARGUMENT, "%s.batch (%lld) must be 0: the batched op's rows are ragged",
                 t.name, static_cast<long long>(t.given.batch));
        }
        if (t.given.token < 0 || t.given.head < 0) {
            fail(GQA_STATUS_INVALID_ARGUMENT, "%s (token %lld, head %lld) must not be negative", t.name,
                 static_cast<long long>(t.given.token), static_cast<long long>(t.given.head));
        }
        t.resolved = Strides{0, t.given.token ? t.given.token : t.heads * p.head_dim,
                             t.given.head ? t.given.head : p.head_dim};
    }
    p.window_left = c.window_left;
    p.window_right = c.window_right;
    p.softcap = c.softcap;
    p.sinks = c.sinks;
    p.lse = c.lse;
}

// The pointer- and metadata-free part: header, dtype, device, shapes.
Problem batch_shape(const gqa_batch_config& c) {
    Problem p;
    p.kind = Kind::Batch;
    p.dtype = require_dtype(c.dtype);
    require_device(c.device);
    p.device = c.device;
    require_positive("batch_size", c.batch_size);
    require_non_negative("total_q", c.total_q);
    require_non_negative("max_q_len", c.max_q_len);
    require_heads(c.num_q_heads, c.num_kv_heads, c.head_dim);
    require_positive("page_size", c.page_size);
    require_positive("num_pages", c.num_pages);
    require_positive("max_pages_per_seq", c.max_pages_per_seq);
    if (c.causal != 0 && c.causal != 1) fail(GQA_STATUS_INVALID_ARGUMENT, "causal (%d) must be 0 or 1", c.causal);
    p.scale = resolve_scale(c.scale, c.head_dim);
    if (c.num_splits < 0 || c.num_splits > kMaxSplits) {
        fail(GQA_STATUS_INVALID_ARGUMENT, "num_splits (%d) must be between 0 (choose) and %d", c.num_splits, kMaxSplits);
    }
    p.batch = c.batch_size;
    p.seq_len = c.max_q_len == 0 ? c.total_q : c.max_q_len;
    p.num_q_heads = c.num_q_heads;
    p.num_kv_heads = c.num_kv_heads;
    p.group = p.num_q_heads / p.num_kv_heads;
    p.head_dim = c.head_dim;
    p.page_size = c.page_size;
    p.num_pages = c.num_pages;
    p.max_pages_per_seq = c.max_pages_per_seq;
    p.max_seq_len = static_cast<int64_t>(c.max_pages_per_seq) * c.page_size;  // a sequence's capacity
    p.has_cache = true;
    p.causal = c.causal == 1;
    p.num_splits = c.num_splits;
    read_variants(c, p);
    return p;
}

// q_indptr: starts at 0, never decreases, ends at total_q; no q_len above max_q_len.
void require_row_ranges(const Problem& p, const int32_t* q_indptr, int32_t total_q) {
    if (q_indptr[0] != 0) fail(GQA_STATUS_INVALID_ARGUMENT, "q_indptr[0] (%d) must be 0", q_indptr[0]);
    for (int64_t b = 0; b < p.batch; ++b) {
        if (q_indptr[b + 1] < q_indptr[b]) {
            fail(GQA_STATUS_INVALID_ARGUMENT, "q_indptr[%lld] (%d) is less than q_indptr[%lld] (%d): it must not decrease",
                 static_cast<long long>(b + 1), q_indptr[b + 1], static_cast<long long>(b), q_indptr[b]);
        }
        const int64_t q_len = static_cast<int64_t>(q_indptr[b + 1]) - q_indptr[b];
        if (q_len > p.seq_len) {
            fail(GQA_STATUS_INVALID_ARGUMENT, "sequence %lld has q_len %lld (q_indptr[%lld] - q_indptr[%lld]), more than "
                 "max_q_len (%lld)", static_cast<long long>(b), static_cast<long long>(q_len),
                 static_cast<long long>(b + 1), static_cast<long long>(b), static_cast<long long>(p.seq_len));
        }
    }
    if (q_indptr[p.batch] != total_q) {
        fail(GQA_STATUS_INVALID_ARGUMENT, "q_indptr[batch_size] (%d) must equal total_q (%d)", q_indptr[p.batch], total_q);
    }
}

// kv_lens: >= 0, and with the new tokens within the sequence's pages; every page id a sequence
// touches (positions 0 .. kv_len + q_len - 1) in [0, num_pages). A q_len 0 sequence touches
// nothing, so only its kv_len's sign is checked.
void require_lengths_and_pages(const Problem& p) {
    const int64_t capacity = p.max_pages_per_seq * p.page_size;
    for (int64_t b = 0; b < p.batch; ++b) {
        const int32_t kv_len = p.start_positions[b];
        if (kv_len < 0) fail(GQA_STATUS_INVALID_ARGUMENT, "kv_lens[%lld] (%d) must be >= 0", static_cast<long long>(b), kv_len);
        if (p.q_len(b) == 0) continue;
        if (p.kv_len_of(b) > capacity) {
            fail(GQA_STATUS_CACHE_OVERFLOW,
                 "kv_lens[%lld] (%d) + q_len (%lld) exceeds max_pages_per_seq (%lld) * page_size (%lld) = %lld: the "
                 "sequence's pages are too few", static_cast<long long>(b), kv_len, static_cast<long long>(p.q_len(b)),
                 static_cast<long long>(p.max_pages_per_seq), static_cast<long long>(p.page_size),
                 static_cast<long long>(capacity));
        }
        const int32_t* pages = p.pages_of(b);
        const int64_t used = (p.kv_len_of(b) + p.page_size - 1) / p.page_size;
        for (int64_t i = 0; i < used; ++i) {
            if (pages[i] < 0 || pages[i] >= p.num_pages) {
                fail(GQA_STATUS_INVALID_ARGUMENT,
                     "page_table[%lld][%lld] (%d) must be in [0, num_pages = %lld): sequence %lld reads or writes positions "
                     "%lld..%lld there", static_cast<long long>(b), static_cast<long long>(i), pages[i],
                     static_cast<long long>(p.num_pages), static_cast<long long>(b), static_cast<long long>(i * p.page_size),
                     static_cast<long long>(std::min(p.kv_len_of(b), (i + 1) * p.page_size) - 1));
            }
        }
    }
}

// A page that a sequence writes (the pages of positions kv_len .. kv_len + q_len - 1) must be
// used by no other (sequence, page column) of the call: otherwise what another sequence reads
// would depend on the order of writes. Cost: one sort of the written pages, then one binary
// search per touched page; nothing proportional to the pool.
void require_private_written_pages(const Problem& p) {
    struct Use {
        int32_t page;
        int64_t b, column;
    };
    std::vector<Use> written;
    for (int64_t b = 0; b < p.batch; ++b) {
        if (p.q_len(b) == 0) continue;
        const int32_t* pages = p.pages_of(b);
        for (int64_t i = p.start_of(b) / p.page_size; i * p.page_size < p.kv_len_of(b); ++i) written.push_back({pages[i], b, i});
    }
    std::sort(written.begin(), written.end(), [](const Use& x, const Use& y) { return x.page < y.page; });
    for (int64_t b = 0; b < p.batch; ++b) {
        if (p.q_len(b) == 0) continue;
        const int32_t* pages = p.pages_of(b);
        for (int64_t i = 0; i * p.page_size < p.kv_len_of(b); ++i) {
            auto first = std::lower_bound(written.begin(), written.end(), pages[i],
                                          [](const Use& u, int32_t page) { return u.page < page; });
            for (auto w = first; w != written.end() && w->page == pages[i]; ++w) {
                if (w->b == b && w->column == i) continue;  // this very use
                fail(GQA_STATUS_INVALID_ARGUMENT,
                     "sequence %lld writes page %d (page_table[%lld][%lld]), which sequence %lld also uses "
                     "(page_table[%lld][%lld]); a page written by a call must belong to one sequence only",
                     static_cast<long long>(w->b), pages[i], static_cast<long long>(w->b),
                     static_cast<long long>(w->column), static_cast<long long>(b), static_cast<long long>(b),
                     static_cast<long long>(i));
            }
        }
    }
}

// The three metadata checks, on host copies (p's q_indptr, start_positions, page_table).
void require_metadata(const Problem& p, int32_t total_q) {
    require_row_ranges(p, p.q_indptr, total_q);
    require_lengths_and_pages(p);
    require_private_written_pages(p);
}

// GQA_VALIDATE_METADATA, read at every CUDA call (so that a test can switch in-process): "1"
// copies the metadata to the host and checks it as on the CPU before anything is launched;
// unset, "" or "0": the kernels skip and flag out-of-range metadata instead. Anything else is
// an error before anything is written.
bool metadata_validation_requested() {
    const char* value = std::getenv("GQA_VALIDATE_METADATA");
    if (value == nullptr || *value == '\0' || std::strcmp(value, "0") == 0) return false;
    if (std::strcmp(value, "1") == 0) return true;
    fail(GQA_STATUS_INVALID_ARGUMENT, "environment variable GQA_VALIDATE_METADATA (\"%s\") must be \"1\" (validate "
         "the batched op's device metadata on the host), \"0\" or unset", value);
}

// GQA_VALIDATE_METADATA=1: the device metadata copied to the host (after the work already on the
// call's stream, which this waits for), then the CPU's checks.
void require_valid_device_metadata(const Problem& p, const gqa_batch_config& c) {
    std::vector<int32_t> q_indptr(p.batch + 1), kv_lens(p.batch), page_table(p.batch * p.max_pages_per_seq);
    cuda_copy_to_host(q_indptr.data(), c.q_indptr, q_indptr.size() * 4, p.stream, "q_indptr (GQA_VALIDATE_METADATA=1)");
    cuda_copy_to_host(kv_lens.data(), c.kv_lens, kv_lens.size() * 4, p.stream, "kv_lens (GQA_VALIDATE_METADATA=1)");
    cuda_copy_to_host(page_table.data(), c.page_table, page_table.size() * 4, p.stream,
                      "page_table (GQA_VALIDATE_METADATA=1)");
    Problem host = p;
    host.q_indptr = q_indptr.data();
    host.start_positions = kv_lens.data();
    host.page_table = page_table.data();
    require_metadata(host, c.total_q);
}

}  // namespace

Problem validate_batch_shape(const gqa_batch_config* config) { return batch_shape(read_config(config)); }

Problem validate_batch(void* out, const void* q, const void* k, const void* v, void* k_cache, void* v_cache,
                       const gqa_batch_config* config, void* stream) {
    const gqa_batch_config c = read_config(config);
    Problem p = batch_shape(c);
    const struct {
        const char* name;
        const void* ptr;
    } pointers[] = {{"out", out}, {"q", q}, {"k", k}, {"v", v}, {"k_cache", k_cache}, {"v_cache", v_cache},
                    {"q_indptr", c.q_indptr}, {"kv_lens", c.kv_lens}, {"page_table", c.page_table}};
    for (const auto& named : pointers) require_pointer(named.name, named.ptr);
    const bool cuda = p.device == GQA_DEVICE_CUDA;
    if (cuda) {  // device metadata: never read here (but see GQA_VALIDATE_METADATA below)
        p.device_batch = {c.q_indptr, c.kv_lens, c.page_table, c.error_flags, c.total_q};
        p.workspace = c.workspace;  // split-KV partials (the CPU needs none: ignored there)
        p.workspace_bytes = c.workspace_bytes;
    } else {
        p.q_indptr = c.q_indptr;
        p.start_positions = c.kv_lens;
        p.page_table = c.page_table;
        require_metadata(p, c.total_q);
    }

    const int64_t eb = dtype_bytes(p.dtype);
    const int64_t B = p.batch;
    // Sizes first (overflow is named), then the exact aliasing rule of extent.hpp on the
    // (possibly strided) rows; the batch is one "sequence" of total_q rows.
    tensor_bytes("out", c.total_q, p.num_q_heads, p.head_dim, 1, eb);
    tensor_bytes("k", c.total_q, p.num_kv_heads, p.head_dim, 1, eb);
    const int64_t cache_elements = tensor_bytes("k_cache", p.num_pages, p.page_size, p.num_kv_heads, p.head_dim, 1);
    const int64_t table_elements = tensor_bytes("page_table", B, p.max_pages_per_seq, 1, 1, 1);
    if (p.sinks) require_sink_values(p.sinks, p.num_q_heads, p.device);
    const int64_t workspace_bytes = static_cast<int64_t>(std::min<uint64_t>(p.workspace_bytes, INT64_MAX));
    auto rows = [&](const char* name, const void* ptr, int64_t heads, const Strides& s, bool written) {
        return Extent::bshd(name, ptr, 1, c.total_q, heads, p.head_dim, s, eb, written);
    };
    require_no_aliasing({rows("out", out, p.num_q_heads, p.out_strides, true),
                         Extent::flat("k_cache", k_cache, cache_elements, eb, true),
                         Extent::flat("v_cache", v_cache, cache_elements, eb, true),
                         Extent::flat("lse", p.lse, static_cast<int64_t>(p.num_q_heads) * c.total_q, 4, true),
                         Extent::flat("error_flags", cuda ? c.error_flags : nullptr, 1, 4, true),
                         Extent::flat("workspace", p.workspace, workspace_bytes, 1, true),
                         rows("q", q, p.num_q_heads, p.q_strides, false),
                         rows("k", k, p.num_kv_heads, p.k_strides, false),
                         rows("v", v, p.num_kv_heads, p.v_strides, false),
                         Extent::flat("sinks", p.sinks, p.num_q_heads, 4, false),
                         Extent::flat("q_indptr", c.q_indptr, B + 1, 4, false),
                         Extent::flat("kv_lens", c.kv_lens, B, 4, false),
                         Extent::flat("page_table", c.page_table, table_elements, 4, false)});
    p.out = out;
    p.q = q;
    p.k = k;
    p.v = v;
    p.k_cache = k_cache;
    p.v_cache = v_cache;
    p.stream = stream;
    if (cuda) {
        validate_backend(p);  // device pointers, kernels, workspace, the variants CUDA runs
        if (metadata_validation_requested()) require_valid_device_metadata(p, c);
    }
    return p;
}

}  // namespace gqa
