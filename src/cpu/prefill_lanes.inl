// prefill_lanes.inl: attention with the query rows of a tile in the vector lanes, over K/V
// blocks packed once per call (PrefillPath::pack) or, for a decode tile with a large group,
// packed here one block at a time; f32 K of a short sequence is read in place
// (f32_keys_in_place).
//
// A tile's rows (query positions x heads of a group) are the lanes: Q^T and O^T are [dp][rp]
// (dp: head_dim padded, rp: rows padded to whole vectors), the scores S^T [key][rp]. For each
// key block:
//   Mma::scores   S^T = K Q^T (raw dot products; per lane vector, only the keys it may see)
//   softmax_block logits (softcap_scores, mask_score and the scale: the one place for score
//                 transforms),
//                 lane-wise online softmax, P written as Mma wants it, O^T rescaled
//   Mma::pv       O^T += V^T P^T
//   add_nonfinite_v  the products of non-finite V values (stored as 0 in the pack) for the rows
//                 that see them, so a masked key's 0 * NaN never reaches a row.
// The row state is set up by init_rows and written out by finish_rows.
//
// The Mma policy says how the two block products run: FmaMma below (fp32 broadcast-FMAs, exact
// fp32 products for every dtype); Dpbf16Mma and AmxMma (prefill_bf16.inl users) for bf16.
//
// Include only after defining `struct Simd` inside an anonymous namespace (internal linkage,
// see convert.hpp for why).
#pragma once

#include <type_traits>

#include "cpu/simd_helpers.inl"

namespace gqa {
namespace cpu {
namespace {

// ---------------------------------------------------------------- row state

// Visible begin and end per lane (begins = ends + rp; padding lanes see nothing), the softmax
// state (init_row_state: fresh, from a sink, or resumed from a partial) and O^T.
inline void init_rows(const Tile& t, int64_t rows, int64_t rp, int64_t dp, float* ot, float* row_max,
                      float* row_sum, int32_t* ends) {
    int32_t* begins = ends + rp;
    for (int64_t i = 0; i < dp * rp; i += W) Simd::store(ot + i, Simd::zero());
    for (int64_t r = 0; r < rp; ++r) {
        const bool live = r < rows;
        ends[r] = static_cast<int32_t>(live ? visible_end(t, r / t.group) : t.key_begin);
        begins[r] = static_cast<int32_t>(live ? visible_begin(t, r / t.group) : t.key_begin);
        row_max[r] = live ? kNegInf : 0.0f;  // a padding lane sees nothing: any finite reference
        row_sum[r] = 0.0f;
        if (live) init_row_state(t, r, row_max + r, row_sum + r);
        const bool resume = t.resume && live;
        if (resume) {
            for (int64_t d = 0; d < t.head_dim; ++d) ot[d * rp + r] = t.part_acc[r * t.head_dim + d];
        }
    }
}

// O^T back to rows (W x W transposes through `stage`, [W][dp]), each row finished by finish_row.
inline void finish_rows(const Tile& t, int64_t rows, int64_t rp, int64_t dp, const float* ot,
                        const float* row_max, const float* row_sum, float* stage) {
    for (int64_t r0 = 0; r0 < rows; r0 += W) {
        for (int64_t d0 = 0; d0 < dp; d0 += W) Simd::transpose(ot + d0 * rp + r0, rp, stage + d0, dp);
        for (int64_t r = r0; r < min64(rows, r0 + W); ++r) {
            finish_row(t, r, stage + (r - r0) * dp, row_max[r], row_sum[r]);
        }
    }
}

// ---------------------------------------------------------------- scores to probabilities

// The one place where a raw dot product becomes a logit: logit = raw * scale (scale > 0; with a
// softcap, softcap_scores has turned raw into logits and scale is 1), with the mask (causal,
// window: lanes see [begins, ends)) as raw = -inf (never a product, so nothing from a masked
// key survives). The mask is applied here; the scale right after it, in softmax_block.
inline Reg mask_score(Reg raw, bool masked, int64_t j, const int32_t* ends, int64_t rp) {
    return masked ? Simd::select_in(static_cast<int32_t>(j), ends + rp, ends, raw, Simd::set1(kNegInf)) : raw;
}

// How far (in powers of 2) a block's logits may rise above a row's reference max before
// softmax_block takes the exact max: with the reference kept, p <= 2^kLazyHeadroom.
constexpr float kLazyHeadroom = 8.0f;

// One key block [j0, j0 + n) of raw scores st[jj][rp] -> probabilities, lane-wise online
// softmax over logits (raw * scale; row_max in logit units: the reference every p of the row
// is taken against, its running max or, lazily, one close to it).
// p = 2^((logit - reference) log2(e)), the difference taken on the rounded logit (Simd::rounded:
// no FMA contraction): the largest gives exactly 2^0 = 1 however large the logits are. (An FMA,
// raw * scale - max, keeps the unrounded product and leaves a residual of about ulp(logit):
// > 100 once logits pass ~1e9, and the rows came out 0 or NaN; test_scale_bound.c.)
// Lazy reference: once every lane of a vector has one (a finite row_max), the block is done in
// one pass against it, tracking the block's max on the way; only if some logit rose more than
// kLazyHeadroom powers of 2 above it are the probabilities redone against the exact new max.
// A kept reference needs no correction: the sum just grows and O^T is not rescaled. Lanes with
// no reference yet (row_max -inf: every logit so far masked) take two passes, max first; such a
// lane subtracts 0 instead of -inf: its probabilities are 0, never NaN. O^T rows [0, d_len) are
// rescaled unless every lane's correction is exactly 1 (then the product would change no bit).
// P goes to `pairs`: Mma::kPairedP as bf16 pairs of keys ([n/2][rp] dwords, zero up to
// Mma::kKeyGranule keys), else fp32 [n][rp]. Mma::exp2 is the exponential of the probabilities
// (to the precision P keeps).
template <class Mma>
inline void softmax_block(const float* st, int64_t n, int64_t rp, float scale, bool masked, int64_t j0,
                          const int32_t* ends, float* row_max, float* row_sum, float* ot, int64_t d_len,
                          void* pairs) {
    const Reg log2e = Simd::set1(1.44269504f);
    const Reg scale_v = Simd::set1(scale);
    const Reg headroom = Simd::set1(kLazyHeadroom / 1.44269504f);  // in logit units
    for (int64_t rv = 0; rv < rp; rv += W) {
        auto logit_of = [&](int64_t jj) {
            return Simd::rounded(Simd::mul(mask_score(Simd::load(st + jj * rp + rv), masked, j0 + jj, ends + rv, rp), scale_v));
        };
        // Every p of the block against `base`, into P; returns their sum, and the block's max
        // logit in *block when asked. Four independent max chains and two sums (one chain would
        // wait on each add).
        auto exponentiate = [&](Reg base, Reg* block) {
            Reg block_max[4] = {Simd::set1(kNegInf), Simd::set1(kNegInf), Simd::set1(kNegInf), Simd::set1(kNegInf)};
            auto p_of = [&](int64_t jj) {
                const Reg logit = logit_of(jj);
                if (block) block_max[jj % 4] = Simd::max(block_max[jj % 4], logit);
                return Mma::exp2(Simd::mul(Simd::sub(logit, base), log2e));
            };
            Reg sum0 = Simd::zero(), sum1 = Simd::zero();
            if constexpr (Mma::kPairedP) {
                int64_t jj = 0;
                for (; jj < n; jj += 2) {
                    const Reg p0 = p_of(jj);
                    const Reg p1 = jj + 1 < n ? p_of(jj + 1) : Simd::zero();
                    sum0 = Simd::add(sum0, p0);
                    sum1 = Simd::add(sum1, p1);
                    Mma::store_pair(pairs, rp, jj / 2, rv, p0, p1);
                }
                for (; jj < round_up(n, Mma::kKeyGranule); jj += 2) Mma::store_pair(pairs, rp, jj / 2, rv, Simd::zero(), Simd::zero());
            } else {
                for (int64_t jj = 0; jj < n; ++jj) {
                    const Reg p = p_of(jj);
                    Simd::store(static_cast<float*>(pairs) + jj * rp + rv, p);
                    if (jj % 2) {
                        sum1 = Simd::add(sum1, p);
                    } else {
                        sum0 = Simd::add(sum0, p);
                    }
                }
            }
            if (block) *block = Simd::max(Simd::max(block_max[0], block_max[1]), Simd::max(block_max[2], block_max[3]));
            return Simd::add(sum0, sum1);
        };
        const Reg old_max = Simd::load(row_max + rv);
        Reg block;
        if (Simd::all_equal(Simd::neg_inf_to_zero(old_max), old_max)) {  // every lane has a reference
            const Reg sum = exponentiate(old_max, &block);
            const Reg limit = Simd::add(old_max, headroom);
            if (Simd::all_equal(Simd::max(block, limit), limit)) {  // kept (a NaN logit: kept, p NaN)
                Simd::store(row_sum + rv, Simd::add(Simd::load(row_sum + rv), sum));
                continue;
            }
        } else {
            Reg block_max[4] = {Simd::set1(kNegInf), Simd::set1(kNegInf), Simd::set1(kNegInf), Simd::set1(kNegInf)};
            for (int64_t jj = 0; jj < n; ++jj) block_max[jj % 4] = Simd::max(block_max[jj % 4], logit_of(jj));
            block = Simd::max(Simd::max(block_max[0], block_max[1]), Simd::max(block_max[2], block_max[3]));
        }
        const Reg new_max = Simd::max(block, old_max);
        const Reg base = Simd::neg_inf_to_zero(new_max);
        const Reg correction = Simd::exp2(Simd::mul(Simd::sub(old_max, base), log2e));
        const Reg sum = exponentiate(base, nullptr);
        Simd::store(row_sum + rv, Simd::fmadd(Simd::load(row_sum + rv), correction, sum));
        Simd::store(row_max + rv, new_max);
        if (!Simd::all_equal(correction, Simd::set1(1.0f))) {
            for (int64_t d = 0; d < d_len; ++d) {
                float* o = ot + d * rp + rv;
                Simd::store(o, Simd::mul(Simd::load(o), correction));
            }
        }
    }
}

// For a block with non-finite V values (stored as 0 in the pack): adds P * V for exactly those
// values, from the storage rows, to the rows that see the key. Rare; scalar.
template <class Mma>
void add_nonfinite_v(const Tile& t, int64_t j0, int64_t n, int64_t rows, int64_t rp, const int32_t* ends,
                     const void* p, float* ot) {
    const int32_t* begins = ends + rp;
    for (int64_t jj = 0; jj < n; ++jj) {
        const int64_t offset = value_offset(t, j0 + jj);
        for (int64_t d = 0; d < t.head_dim; ++d) {
            const float v = load_f32(t.v, offset + d, t.dtype);
            if (__builtin_isfinite(v)) continue;
            for (int64_t r = 0; r < rows; ++r) {
                const int64_t j = j0 + jj;
                if (begins[r] <= j && j < ends[r]) ot[d * rp + r] += Mma::probability(p, rp, jj, r) * v;
            }
        }
    }
}

// ---------------------------------------------------------------- packing

// Rows of one KV head (or query rows) are num_heads * head_dim elements apart, a stride the
// hardware prefetchers do not follow: the packs ask for the row kPrefetchAhead rows on.
constexpr int64_t kPrefetchAhead = 8;

inline void prefetch_row(const void* base, int64_t offset, const Tile& t) {
    const char* row = static_cast<const char*>(base) + offset * elem_bytes(t.dtype);
    for (int64_t b = 0; b < t.head_dim * elem_bytes(t.dtype); b += 64) prefetch_l1(row + b);
}
// Where the K and V rows of the keys j0, j0 + 1, ... of one packed block (and the
// kPrefetchAhead after it, for the prefetches) start in t.k / t.v: found by walking runs of
// consecutive rows (key_run), one page-table lookup per run instead of a division and a modulo
// per key and head.
struct BlockRows {
    int64_t k[kPrefillKeyBlock + kPrefetchAhead], v[kPrefillKeyBlock + kPrefetchAhead];
    int64_t known;  // keys with offsets: up to the block plus kPrefetchAhead, clipped to key_end

    BlockRows(const Tile& t, int64_t j0, int64_t n) {
        known = min64(n + kPrefetchAhead, t.key_end - j0);
        const int64_t v_step = value_step(t);
        for (int64_t jj = 0, run; jj < known; jj += run) {
            run = key_run(t, j0 + jj, known - jj);
            int64_t ko = key_offset(t, j0 + jj), vo = value_offset(t, j0 + jj);
            for (int64_t r = jj; r < jj + run; ++r, ko += t.kv_stride, vo += v_step) {
                k[r] = ko;
                v[r] = vo;
            }
        }
    }
    // K and V rows of key j0 + jj into L1, if the tile has it.
    void prefetch(const Tile& t, int64_t jj) const {
        if (jj >= known) return;
        prefetch_row(t.k, k[jj], t);
        prefetch_row(t.v, v[jj], t);
    }
};
// Query row r of the tile, if it has it.
inline int64_t query_offset(const Tile& t, int64_t r) { return (r / t.group) * t.q_stride + (r % t.group) * t.q_head_stride; }
inline void prefetch_query(const Tile& t, int64_t r, int64_t rows) {
    if (r < rows) prefetch_row(t.q, query_offset(t, r), t);
}

// The K rows of a block starting at key j0, where the scores read them in place rather than
// packed (FmaMma): asked for by the driver (t.keys_in_place), f32 rows of whole vectors in one
// dense cache or input, kv_stride apart, 4-byte aligned (FmaOp reads floats; a misaligned input
// is packed, whose loads take any address). The same values in the same order: the same bits
// as the packed copy.
inline const float* f32_keys_in_place(const Tile& t, int64_t j0) {
    if (!t.keys_in_place || t.dtype != DType::F32 || t.head_dim % W != 0 || t.pages ||
        reinterpret_cast<uintptr_t>(t.k) % alignof(float) != 0) {
        return nullptr;
    }
    return static_cast<const float*>(t.k) + key_offset(t, j0);
}

// Keys [j0, j0 + n) of K and V into one packed block of fp32 (layout: PackKernel in
// kernel.hpp; K left out where f32_keys_in_place reads it). Returns whether a V value was
// non-finite (stored as 0).
inline bool pack_block_f32(const Tile& t, int64_t j0, int64_t n, int64_t dp, float* block, float* stage) {
    float* kb = block;
    float* vt = block + kPrefillKeyBlock * dp;
    const BlockRows at(t, j0, n);
    for (int64_t jj = 0; jj < kPrefetchAhead; ++jj) at.prefetch(t, jj);
    if (!f32_keys_in_place(t, j0)) {
        for (int64_t jj = 0; jj < kPrefillKeyBlock; ++jj) {
            if (jj < n) {
                at.prefetch(t, jj + kPrefetchAhead);
                load_row(t.k, at.k[jj], t.dtype, t.head_dim, dp, kb + jj * dp);
            } else {
                for (int64_t d = 0; d < dp; d += W) Simd::store(kb + jj * dp + d, Simd::zero());
            }
        }
    }
    Reg poison = Simd::zero();  // stays 0 unless some V is Inf or NaN (Inf * 0 = NaN)
    for (int64_t k0 = 0; k0 < kPrefillKeyBlock; k0 += W) {
        for (int64_t w = 0; w < W; ++w) {
            float* row = stage + w * dp;
            if (k0 + w < n) {
                load_row(t.v, at.v[k0 + w], t.dtype, t.head_dim, dp, row);
                for (int64_t d = 0; d < dp; d += W) poison = Simd::fmadd(Simd::load(row + d), Simd::zero(), poison);
            } else {
                for (int64_t d = 0; d < dp; d += W) Simd::store(row + d, Simd::zero());
            }
        }
        if (Simd::reduce_add(poison) != 0.0f) {
            for (int64_t i = 0; i < W * dp; ++i) {
                if (!__builtin_isfinite(stage[i])) stage[i] = 0.0f;
            }
        }
        for (int64_t d0 = 0; d0 < dp; d0 += W) Simd::transpose(stage + d0, dp, vt + d0 * kPrefillKeyBlock + k0, kPrefillKeyBlock);
    }
    return Simd::reduce_add(poison) != 0.0f;
}

// ---------------------------------------------------------------- fp32 products (FmaMma)

// Row vectors per register block: 4 x 16 lanes on AVX-512 (32 registers), 2 x 8 on AVX2 (16).
constexpr int kRowVectors = W == 16 ? 4 : 2;

// Register block of an outer product: out[a][lanes] (+)= sum over s of
// Op::madd(Op::bcast(b + a * b_a + s * b_s), Op::vec(vec + s * rp + lanes)) for A broadcast
// values x NR row vectors; out rows are rp apart. Both block products of every Mma that computes
// in vector registers are this shape (Q.K^T: a = key, s = dim; P.V: a = dim, s = key).
template <int A, int NR, class Op>
inline void outer_block(const typename Op::Scalar* b, int64_t b_a, int64_t b_s, const float* vec, int64_t rp,
                        int64_t steps, float* out, bool accumulate) {
    Reg acc[A][NR];
    // Fixed-size loops over register blocks: fully unrolled so the accumulators stay in registers.
#pragma GCC unroll 8
    for (int a = 0; a < A; ++a)
#pragma GCC unroll 4
        for (int r = 0; r < NR; ++r) acc[a][r] = accumulate ? Simd::load(out + a * rp + r * W) : Simd::zero();
    for (int64_t s = 0; s < steps; ++s) {
        typename Op::Vec v[NR];
#pragma GCC unroll 4
        for (int r = 0; r < NR; ++r) v[r] = Op::vec(vec + s * rp + r * W);
#pragma GCC unroll 8
        for (int a = 0; a < A; ++a) {
            const typename Op::Vec x = Op::bcast(b + a * b_a + s * b_s);
#pragma GCC unroll 4
            for (int r = 0; r < NR; ++r) acc[a][r] = Op::madd(acc[a][r], v[r], x);
        }
    }
#pragma GCC unroll 8
    for (int a = 0; a < A; ++a)
#pragma GCC unroll 4
        for (int r = 0; r < NR; ++r) Simd::store(out + a * rp + r * W, acc[a][r]);
}

// Which of an outer product's two extents runs over the block's keys: the broadcast rows
// (Q.K^T: a = key) or the steps (P.V: s = key, keys_per_step keys a step).
enum class KeysAre { Count, Steps };

// outer_block for the vectors [v, NR) of a register block: NR - v picks the template.
template <int A, int NR, class Op>
inline void outer_block_tail(int v, const typename Op::Scalar* b, int64_t b_a, int64_t b_s, const float* vec,
                             int64_t rp, int64_t steps, float* out, bool accumulate) {
    switch (NR - v) {
        case 4: outer_block<A, 4, Op>(b, b_a, b_s, vec + v * W, rp, steps, out + v * W, accumulate); break;
        case 3: outer_block<A, 3, Op>(b, b_a, b_s, vec + v * W, rp, steps, out + v * W, accumulate); break;
        case 2: outer_block<A, 2, Op>(b, b_a, b_s, vec + v * W, rp, steps, out + v * W, accumulate); break;
        default: outer_block<A, 1, Op>(b, b_a, b_s, vec + v * W, rp, steps, out + v * W, accumulate); break;
    }
}

// outer_block over all rp lanes, each vector's keys extent stopping at the keys its lanes may
// see (vec_keys[vector], see prefill_lanes): past it every lane is masked, so scores there are
// never read and P is exactly 0. A register block of NR vectors runs its keys in segments:
// keys [K(v - 1), K(v)) for the vectors [v, NR), K(v) the most keys any of vectors 0..v needs.
// Under a causal mask later rows see more keys, so every vector gets just its own keys.
template <class Op, KeysAre Keys>
inline void outer_product(const typename Op::Scalar* b, int64_t b_a, int64_t b_s, int64_t count, const float* vec,
                          int64_t rp, int64_t steps, float* out, bool accumulate, const int32_t* vec_keys,
                          int64_t keys_per_step = 1) {
    auto rows = [&](auto nr, int64_t rv) {
        constexpr int NR = decltype(nr)::value;
        int64_t done = 0;  // K(v - 1)
        for (int v = 0; v < NR; ++v) {
            const int64_t upto = vec_keys[rv / W + v] > done ? vec_keys[rv / W + v] : done;  // K(v)
            if (upto == done) continue;
            if (Keys == KeysAre::Count) {
                int64_t a = done;
                for (; a + 4 <= upto; a += 4) {
                    outer_block_tail<4, NR, Op>(v, b + a * b_a, b_a, b_s, vec + rv, rp, steps, out + a * rp + rv, accumulate);
                }
                for (; a < upto; ++a) {
                    outer_block_tail<1, NR, Op>(v, b + a * b_a, b_a, b_s, vec + rv, rp, steps, out + a * rp + rv, accumulate);
                }
            } else {
                const int64_t s0 = (done + keys_per_step - 1) / keys_per_step, s1 = (upto + keys_per_step - 1) / keys_per_step;
                int64_t a = 0;
                for (; a + 4 <= count; a += 4) {
                    outer_block_tail<4, NR, Op>(v, b + a * b_a + s0 * b_s, b_a, b_s, vec + s0 * rp + rv, rp, s1 - s0,
                                                out + a * rp + rv, accumulate);
                }
                for (; a < count; ++a) {
                    outer_block_tail<1, NR, Op>(v, b + a * b_a + s0 * b_s, b_a, b_s, vec + s0 * rp + rv, rp, s1 - s0,
                                                out + a * rp + rv, accumulate);
                }
            }
            done = upto;
        }
    };
    int64_t rv = 0;
    for (; rv + kRowVectors * W <= rp; rv += kRowVectors * W) rows(std::integral_constant<int, kRowVectors>{}, rv);
    for (; rv + 2 * W <= rp; rv += 2 * W) rows(std::integral_constant<int, 2>{}, rv);
    for (; rv < rp; rv += W) rows(std::integral_constant<int, 1>{}, rv);
}

// fp32 multiply-adds: a broadcast element times a vector of fp32 lanes.
struct FmaOp {
    using Scalar = float;
    using Vec = Reg;
    static Reg vec(const float* p) { return Simd::load(p); }
    static Reg bcast(const float* p) { return Simd::set1(*p); }
    static Reg madd(Reg acc, Reg v, Reg x) { return Simd::fmadd(x, v, acc); }
};

// fp32 products for every dtype: K, V^T, Q^T and P in fp32.
struct FmaMma {
    using Elem = float;
    static constexpr int64_t kDimAlign = W;
    static constexpr bool kPairedP = false;

    // Q^T [dp][rp], unscaled (softmax_block scales), through W x W transposes.
    static void pack_queries(const Tile& t, int64_t rows, int64_t dp, int64_t rp, float* qt, float* stage) {
        for (int64_t r = 0; r < kPrefetchAhead; ++r) prefetch_query(t, r, rows);
        for (int64_t r0 = 0; r0 < rp; r0 += W) {
            for (int64_t w = 0; w < W; ++w) {
                const int64_t r = r0 + w;
                float* row = stage + w * dp;
                if (r < rows) {
                    prefetch_query(t, r + kPrefetchAhead, rows);
                    load_row(t.q, query_offset(t, r), t.dtype, t.head_dim, dp, row);
                } else {
                    for (int64_t d = 0; d < dp; d += W) Simd::store(row + d, Simd::zero());
                }
            }
            for (int64_t d0 = 0; d0 < dp; d0 += W) Simd::transpose(stage + d0, dp, qt + d0 * rp + r0, rp);
        }
    }
    static bool pack_block(const Tile& t, int64_t j0, int64_t n, int64_t dp, float* block, float* stage) {
        return pack_block_f32(t, j0, n, dp, block, stage);
    }
    // The block's K rows where scores reads them in place (kv_stride apart), else null: packed.
    static const float* keys_in_place(const Tile& t, int64_t j0) { return f32_keys_in_place(t, j0); }
    // key_stride: floats between kb's key rows (dp packed; kv_stride in place).
    static void scores(const float* qt, const float* kb, int64_t d_len, int64_t key_stride, int64_t rp,
                       const int32_t* vec_keys, float* st) {
        outer_product<FmaOp, KeysAre::Count>(kb, key_stride, 1, 0, qt, rp, d_len, st, /*accumulate=*/false, vec_keys);
    }
    static void pv(const float* vt, int64_t d_len, int64_t /*dp*/, const void* p, int64_t rp, const int32_t* vec_keys,
                   float* ot) {
        outer_product<FmaOp, KeysAre::Steps>(vt, kPrefillKeyBlock, 1, d_len, static_cast<const float*>(p), rp, 0, ot,
                                             /*accumulate=*/true, vec_keys);
    }
    static float probability(const void* p, int64_t rp, int64_t jj, int64_t r) {
        return static_cast<const float*>(p)[jj * rp + r];
    }
    static Reg exp2(Reg t) { return Simd::exp2(t); }  // the probabilities stay fp32
    static void begin() {}
    static void end() {}
};

// ---------------------------------------------------------------- the tile

template <class Mma>
void lanes_chunk(const Tile& t, float* scratch) {
    using Elem = typename Mma::Elem;
    const int64_t d_len = t.head_dim;
    const int64_t rows = t.num_queries * t.group;
    const int64_t rp = round_up(rows, W);
    const int64_t dp = round_up(d_len, Mma::kDimAlign);
    const int64_t block_elems = 2 * kPrefillKeyBlock * dp;
    float* q = align64(scratch);             // Mma's Q layout, at most dp * rp floats
    float* ot = q + dp * rp;                 // [dp][rp]   unnormalised outputs, transposed
    float* st = ot + dp * rp;                // [kPrefillKeyBlock][rp] raw scores
    float* pairs = st + kPrefillKeyBlock * rp;      // P: [kPrefillKeyBlock][rp] fp32, or bf16 pairs (kPairedP)
    float* own = pairs + kPrefillKeyBlock * rp;     // one block packed here when t.packed is unset
    float* row_max = own + block_elems;      // [rp]
    float* row_sum = row_max + rp;           // [rp]
    int32_t* ends = reinterpret_cast<int32_t*>(row_sum + rp);  // [rp] visible end per lane, then begins
    float* stage = row_sum + 3 * rp;         // [W][dp] rows staged for a transpose
    int32_t* vec_keys = reinterpret_cast<int32_t*>(stage + W * dp);  // [rp / W] keys a vector needs

    Mma::begin();
    Mma::pack_queries(t, rows, dp, rp, q, stage);
    init_rows(t, rows, rp, dp, ot, row_max, row_sum, ends);
    const int64_t first_end = visible_end(t, 0);  // the fewest keys any row sees
    const int64_t last_end = visible_end(t, t.num_queries - 1);
    const int64_t last_begin = visible_begin(t, t.num_queries - 1);  // the latest first key
    const float scale = t.softcap > 0.0f ? 1.0f : t.scale;  // softcap_scores applies it
    const void* p = pairs;
    for (int64_t j0 = t.key_begin; j0 < last_end; j0 += kPrefillKeyBlock) {
        const int64_t n = min64(kPrefillKeyBlock, last_end - j0);
        const Elem* kb;
        bool v_nonfinite;
        if (t.packed) {
            const int64_t block = (j0 - t.packed_first_key) / kPrefillKeyBlock;
            kb = static_cast<const Elem*>(t.packed) + block * block_elems;
            v_nonfinite = t.packed_v_nonfinite[block] != 0;
        } else {
            prefetch_block(t, j0 + n, min64(kPrefillKeyBlock, last_end - (j0 + n)));
            v_nonfinite = Mma::pack_block(t, j0, n, dp, reinterpret_cast<Elem*>(own), stage);
            kb = reinterpret_cast<const Elem*>(own);
        }
        // Keys of this block the live lanes of each vector see (n unless the block is masked).
        for (int64_t v = 0; v < rp / W; ++v) {
            int64_t keys = 0;
            for (int64_t r = v * W; r < min64(rows, (v + 1) * W); ++r) keys = keys > ends[r] - j0 ? keys : ends[r] - j0;
            vec_keys[v] = static_cast<int32_t>(keys < 0 ? 0 : keys > n ? n : keys);
        }
        const Elem* k_rows = Mma::keys_in_place(t, j0);
        Mma::scores(q, k_rows ? k_rows : kb, d_len, k_rows ? t.kv_stride : dp, rp, vec_keys, st);
        // Past a vector's vec_keys its lanes are all masked: the scores there are not computed
        // and mask_score replaces them (after the softcap, which may see anything there).
        if (t.softcap > 0.0f) softcap_scores(st, n * rp, t.scale, t.softcap);
        const bool masked = j0 + n > first_end || j0 < last_begin;
        softmax_block<Mma>(st, n, rp, scale, masked, j0, ends, row_max, row_sum, ot, d_len, pairs);
        Mma::pv(kb + kPrefillKeyBlock * dp, d_len, dp, p, rp, vec_keys, ot);
        if (v_nonfinite) add_nonfinite_v<Mma>(t, j0, n, rows, rp, ends, p, ot);
    }
    Mma::end();
    finish_rows(t, rows, rp, dp, ot, row_max, row_sum, stage);
}

// A tile of at most kMaxLaneRows rows at once: a larger one in chunks of whole queries, or of
// kMaxLaneRows heads of one query when its group alone is larger (kernel.hpp). Every row's
// arithmetic stays lane-wise, and the chunks depend only on the tile: no thread dependence.
template <class Mma>
void prefill_lanes(const Tile& t, float* scratch) {
    const int64_t chunk = lane_chunk_rows(t);
    if (chunk == t.num_queries * t.group) return lanes_chunk<Mma>(t, scratch);
    if (t.group <= kMaxLaneRows) {
        const int64_t queries = chunk / t.group;
        for (int64_t q0 = 0; q0 < t.num_queries; q0 += queries) {
            lanes_chunk<Mma>(sub_tile(t, q0, min64(queries, t.num_queries - q0), 0, t.group), scratch);
        }
        return;
    }
    for (int64_t i = 0; i < t.num_queries; ++i) {
        for (int64_t g0 = 0; g0 < t.group; g0 += chunk) lanes_chunk<Mma>(sub_tile(t, i, 1, g0, min64(chunk, t.group - g0)), scratch);
    }
}

// The PackKernel of a path (kernel.hpp): blocks [first_block, first_block + num_blocks) of the
// Tile's keys from packed_first_key on, up to key_end, each by Mma::pack_block.
template <class Mma>
void pack_kv(const Tile& t, int64_t first_block, int64_t num_blocks, void* blocks, uint8_t* v_nonfinite) {
    using Elem = typename Mma::Elem;
    const int64_t dp = round_up(t.head_dim, Mma::kDimAlign);
    alignas(64) float stage[W * kMaxHeadDim];
    for (int64_t b = first_block; b < first_block + num_blocks; ++b) {
        const int64_t j0 = t.packed_first_key + b * kPrefillKeyBlock;
        Elem* block = static_cast<Elem*>(blocks) + b * 2 * kPrefillKeyBlock * dp;
        v_nonfinite[b] = Mma::pack_block(t, j0, min64(kPrefillKeyBlock, t.key_end - j0), dp, block, stage) ? 1 : 0;
    }
}

}  // namespace
}  // namespace cpu
}  // namespace gqa
