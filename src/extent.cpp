// extent.cpp: see extent.hpp.
#include "extent.hpp"

#include <algorithm>
#include <utility>

#include "error.hpp"

namespace gqa {

namespace {

using Interval = std::pair<uintptr_t, uintptr_t>;  // [begin, end) in bytes

// Rows compared one by one at most (16 MiB of intervals): beyond, overlapping boxes count as
// overlap. Validation must not allocate by what a (possibly bogus) config claims.
constexpr int64_t kMaxExactRows = int64_t{1} << 20;

int64_t checked_mul(int64_t a, int64_t b, const char* name) {
    int64_t r = 0;
    if (__builtin_mul_overflow(a, b, &r)) {
        fail(GQA_STATUS_INVALID_ARGUMENT, "%s spans more bytes than a 64-bit size holds", name);
    }
    return r;
}

int64_t checked_add(int64_t a, int64_t b, const char* name) {
    int64_t r = 0;
    if (__builtin_add_overflow(a, b, &r)) {
        fail(GQA_STATUS_INVALID_ARGUMENT, "%s spans more bytes than a 64-bit size holds", name);
    }
    return r;
}

uintptr_t begin_of(const Extent& e) { return reinterpret_cast<uintptr_t>(e.ptr); }

// Every row of e as a byte interval, sorted by start.
std::vector<Interval> rows_of(const Extent& e) {
    std::vector<Interval> rows;
    rows.reserve(static_cast<size_t>(e.count[0] * e.count[1] * e.count[2]));
    const uintptr_t base = begin_of(e);
    const uintptr_t row_bytes = static_cast<uintptr_t>(e.row * e.elem_bytes);
    for (int64_t a = 0; a < e.count[0]; ++a)
        for (int64_t b = 0; b < e.count[1]; ++b)
            for (int64_t c = 0; c < e.count[2]; ++c) {
                const int64_t offset = (a * e.stride[0] + b * e.stride[1] + c * e.stride[2]) * e.elem_bytes;
                rows.emplace_back(base + static_cast<uintptr_t>(offset), base + static_cast<uintptr_t>(offset) + row_bytes);
            }
    std::sort(rows.begin(), rows.end());
    return rows;
}

// True when the rows of e cannot overlap each other: with the axes ordered by stride, each
// stride reaches past everything the inner axes span (every layout a tensor library makes).
bool nested(const Extent& e) {
    std::pair<int64_t, int64_t> axes[3];  // (stride, count)
    int n = 0;
    for (int i = 0; i < 3; ++i)
        if (e.count[i] > 1) axes[n++] = {e.stride[i], e.count[i]};
    for (int i = 1; i < n; ++i)  // by stride (three at most; std::sort trips -Warray-bounds here)
        for (int j = i; j > 0 && axes[j] < axes[j - 1]; --j) std::swap(axes[j], axes[j - 1]);
    int64_t inner = e.row;  // elements the inner axes span
    for (int i = 0; i < n; ++i) {
        if (axes[i].first < inner) return false;
        inner = axes[i].first * (axes[i].second - 1) + inner;
    }
    return true;
}

int64_t row_count(const Extent& e) {
    int64_t n = 1;
    for (int64_t c : e.count) {
        if (__builtin_mul_overflow(n, c, &n)) return INT64_MAX;
    }
    return n;
}

// The rows fill the bounding box: then boxes that overlap share elements.
bool dense(const Extent& e) {
    const int64_t rows = row_count(e);
    int64_t elements = 0;
    return nested(e) && !__builtin_mul_overflow(rows, e.row, &elements) && elements * e.elem_bytes == e.span_bytes();
}

bool boxes_overlap(const Extent& a, const Extent& b) {
    const uintptr_t a0 = begin_of(a), b0 = begin_of(b);
    return a0 < b0 + static_cast<uintptr_t>(b.span_bytes()) && b0 < a0 + static_cast<uintptr_t>(a.span_bytes());
}

// Does any row of b intersect one of the sorted, disjoint intervals `rows`?
bool intersects(const std::vector<Interval>& rows, const Extent& b) {
    for (const Interval& r : rows_of(b)) {
        auto it = std::upper_bound(rows.begin(), rows.end(), Interval{r.first, UINTPTR_MAX});
        if (it != rows.end() && it->first < r.second) return true;  // starts inside r
        if (it != rows.begin() && std::prev(it)->second > r.first) return true;  // covers r's start
    }
    return false;
}

void require_rows_disjoint(const Extent& e, std::vector<Interval>* rows) {
    if (row_count(e) > kMaxExactRows) {
        fail(GQA_STATUS_INVALID_ARGUMENT,
             "the strides of %s (batch %lld, token %lld, head %lld) do not nest, and its %lld rows are too many "
             "to check one by one for overlap; a tensor the call writes needs nested strides",
             e.name, static_cast<long long>(e.stride[0]), static_cast<long long>(e.stride[1]),
             static_cast<long long>(e.stride[2]), static_cast<long long>(row_count(e)));
    }
    *rows = rows_of(e);
    for (size_t i = 1; i < rows->size(); ++i) {
        if ((*rows)[i].first < (*rows)[i - 1].second) {
            fail(GQA_STATUS_INVALID_ARGUMENT,
                 "the strides of %s (batch %lld, token %lld, head %lld) make two of its rows share memory; "
                 "a tensor the call writes needs every element once",
                 e.name, static_cast<long long>(e.stride[0]), static_cast<long long>(e.stride[1]),
                 static_cast<long long>(e.stride[2]));
        }
    }
}

}  // namespace

Extent Extent::flat(const char* name, const void* ptr, int64_t elements, int64_t elem_bytes, bool written) {
    Extent e;
    e.name = name;
    e.ptr = ptr;
    e.elem_bytes = elem_bytes;
    e.row = elements;
    e.written = written;
    return e;
}

Extent Extent::bshd(const char* name, const void* ptr, int64_t batch, int64_t tokens, int64_t heads,
                    int64_t head_dim, const Strides& s, int64_t elem_bytes, bool written) {
    Extent e;
    e.name = name;
    e.ptr = ptr;
    e.elem_bytes = elem_bytes;
    e.count[0] = batch;
    e.count[1] = tokens;
    e.count[2] = heads;
    e.stride[0] = s.batch;
    e.stride[1] = s.token;
    e.stride[2] = s.head;
    e.row = head_dim;
    e.written = written;
    return e;
}

int64_t Extent::span_bytes() const {
    int64_t last = row;  // elements from the first to one past the last
    for (int i = 0; i < 3; ++i) last = checked_add(last, checked_mul(count[i] - 1, stride[i], name), name);
    return checked_mul(last, elem_bytes, name);
}

void require_no_aliasing(const std::vector<Extent>& tensors) {
    for (size_t w = 0; w < tensors.size(); ++w) {
        const Extent& written = tensors[w];
        if (!written.written || !written.ptr) continue;
        std::vector<Interval> rows;  // filled on first need: only strided or overlapping tensors pay
        if (!nested(written)) require_rows_disjoint(written, &rows);
        for (size_t o = 0; o < tensors.size(); ++o) {
            const Extent& other = tensors[o];
            if (o == w || !other.ptr || (other.written && o < w) || !boxes_overlap(written, other)) continue;
            // Dense boxes that overlap share elements; rows too many to compare count as shared.
            bool shared = (dense(written) && dense(other)) || row_count(written) > kMaxExactRows ||
                          row_count(other) > kMaxExactRows;
            if (!shared) {
                if (rows.empty()) rows = rows_of(written);
                shared = intersects(rows, other);
            }
            if (shared) {
                fail(GQA_STATUS_INVALID_ARGUMENT, "%s overlaps %s in memory; the tensors a call writes "
                     "(out, lse, k_cache, v_cache) must not share an element with any other tensor",
                     written.name, other.name);
            }
        }
    }
}

}  // namespace gqa
