// extent.hpp: where a (possibly strided) tensor of a call lies in memory, and the exact
// aliasing rule of gqa.h: a tensor the call writes shares no element with any other tensor of
// the call, nor two of its own rows with each other; inputs may interleave freely (three views
// of one fused QKV buffer). Bounding boxes first; rows are compared only when boxes overlap and
// at least one layout leaves gaps (up to 2^20 rows each; beyond, overlapping boxes count as
// shared, so validation never allocates by what a config claims).
#pragma once

#include <cstdint>
#include <vector>

#include "problem.hpp"

namespace gqa {

struct Extent {
    const char* name = "";
    const void* ptr = nullptr;   // nullptr: not part of the call (skipped)
    int64_t elem_bytes = 0;
    int64_t count[3] = {1, 1, 1};     // rows along batch, token, head
    int64_t stride[3] = {0, 0, 0};    // elements between rows along each
    int64_t row = 0;                  // contiguous elements per row
    bool written = false;

    // A contiguous run of `elements` (a cache, lse, sinks).
    static Extent flat(const char* name, const void* ptr, int64_t elements, int64_t elem_bytes, bool written);
    // A BSHD tensor [batch, tokens, heads, head_dim] with element strides.
    static Extent bshd(const char* name, const void* ptr, int64_t batch, int64_t tokens, int64_t heads,
                       int64_t head_dim, const Strides& s, int64_t elem_bytes, bool written);

    // Bytes from the first to one past the last element; fails (naming the tensor) on overflow.
    int64_t span_bytes() const;
};

// INVALID_ARGUMENT naming the pair (or the tensor and its strides) when a written tensor shares
// an element with another tensor or with itself.
void require_no_aliasing(const std::vector<Extent>& tensors);

}  // namespace gqa
