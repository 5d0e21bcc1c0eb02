// kernel_simd.inl: the SIMD tile kernel, written once over a small vector interface `Simd`
// and compiled once per ISA (attention_avx2.cpp: 8 lanes, attention_avx512.cpp: 16 lanes).
//
// Two shapes of work, chosen per tile:
//  * rows in lanes (prefill_lanes.inl: a tile has >= kWidth query rows, prefill or decode with
//    a large group): query rows are the vector lanes, Q.K^T and P.V broadcast-FMA outer
//    products, a lane-wise online softmax.
//  * fewer rows than lanes (a short prefill tile): a one-head decode (decode_simd.inl, head_dim
//    the vector axis: a dot product per (row, key), P.V with the rows sharing every V load).
//
// Include only after defining `struct Simd` inside an anonymous namespace, and include
// decode_simd.inl after it (it defines decode_simd). Everything here has internal linkage
// (see convert.hpp for why).
#include "cpu/prefill_lanes.inl"
#include "cpu/simd_helpers.inl"
#include "cpu/decode.hpp"

namespace gqa {
namespace cpu {
namespace {

void decode_simd(const DecodeWork& w, float* scratch);  // decode_simd.inl

inline void attend_tile_simd(const Tile& t, float* scratch) {  // inline: unused where only decode is built
    if (t.num_queries * t.group >= W) {
        prefill_lanes<FmaMma>(t, scratch);
    } else {
        DecodeWork one_head;
        one_head.head0 = t;
        one_head.num_kv_heads = 1;
        decode_simd(one_head, scratch);
    }
}

}  // namespace
}  // namespace cpu
}  // namespace gqa
