// kernel_simd.inl: the SIMD tile kernel, written once over a small vector interface `Simd`
// and compiled once per ISA (attention_avx2.cpp: 8 lanes, attention_avx512.cpp: 16 lanes).
//
// Two shapes of work, chosen per tile:
//  * rows_in_lanes (prefill: a tile has >= kWidth query rows). Query rows are the vector
//    lanes. Q^T and O^T are packed [head_dim][rows]; each key block is converted to fp32 once
//    and its elements are broadcast. Q.K^T and P.V are then register-blocked broadcast-FMAs
//    (4 keys or 4 dims x 2 row vectors), and the online softmax is lane-wise: no horizontal
//    reductions anywhere in the hot loops.
//  * rows_in_registers (decode: the G query heads of one KV head). Too few rows to fill the
//    lanes, so head_dim is the vector axis: a dot product per (row, key), then P.V with all G
//    rows sharing every V load. Each K/V block is read from memory once for the whole group.
//
// Masking never multiplies: masked scores are replaced by -inf, and under a causal mask P.V
// skips masked keys per lane, so a NaN/Inf in a key a row cannot see never reaches that row.
//
// Include only after defining `struct Simd` inside an anonymous namespace. Everything here
// has internal linkage (see convert.hpp for why).
#include <immintrin.h>

#include <cmath>
#include <cstdint>

#include "cpu/convert.hpp"
#include "cpu/kernel.hpp"

namespace gqa {
namespace cpu {
namespace {

using Reg = Simd::Reg;
constexpr int64_t W = Simd::kWidth;

// Local copies of Tile::visible_end and dtype_bytes: this file is compiled with ISA flags, and
// calling an inline function with external linkage from here could let the linker keep this
// file's (AVX) copy for the whole library. The same reason for __builtin_fmaxf over std::fmax.
inline int64_t visible_end(const Tile& t, int64_t i) {
    if (!t.causal) return t.key_end;
    const int64_t end = t.first_visible_end + i;
    return end < t.key_end ? end : t.key_end;
}
inline int64_t elem_bytes(DType t) { return t == DType::F32 ? 4 : 2; }
inline int64_t min64(int64_t a, int64_t b) { return a < b ? a : b; }
inline int64_t round_up(int64_t x, int64_t m) { return (x + m - 1) / m * m; }
inline float* align64(float* p) {
    return reinterpret_cast<float*>((reinterpret_cast<uintptr_t>(p) + 63) & ~static_cast<uintptr_t>(63));
}
const float kNegInf = -INFINITY;

// n storage elements at src[offset..] to fp32 dst[0..n), then zeros up to `padded`.
inline void load_row(const void* src, int64_t offset, DType t, int64_t n, int64_t padded, float* dst) {
    int64_t d = 0;
    if (t == DType::F32) {
        const float* s = static_cast<const float*>(src) + offset;
        for (; d + W <= n; d += W) Simd::store(dst + d, Simd::load(s + d));
    } else if (t == DType::F16) {
        const uint16_t* s = static_cast<const uint16_t*>(src) + offset;
        for (; d + W <= n; d += W) Simd::store(dst + d, Simd::load_f16(s + d));
    } else {
        const uint16_t* s = static_cast<const uint16_t*>(src) + offset;
        for (; d + W <= n; d += W) Simd::store(dst + d, Simd::load_bf16(s + d));
    }
    for (; d < n; ++d) dst[d] = load_f32(src, offset + d, t);
    for (; d < padded; ++d) dst[d] = 0.0f;
}

// Asks for the K and V rows of keys [j0, j0 + n) to be brought into cache. The rows of one KV
// head are num_kv_heads * head_dim elements apart (often more than a page), which the hardware
// prefetchers do not follow; without this, decode waits on memory latency instead of bandwidth.
inline void prefetch_block(const Tile& t, int64_t j0, int64_t n) {
    const int64_t es = elem_bytes(t.dtype);
    const int64_t row_bytes = t.head_dim * es;
    const int64_t stride_bytes = t.kv_stride * es;
    for (int64_t j = j0, run; j < j0 + n; j += run) {  // one run of consecutive rows per page
        run = key_run(t, j, j0 + n - j);
        const char* k = static_cast<const char*>(t.k) + key_offset(t, j) * es;
        const char* v = static_cast<const char*>(t.v) + key_offset(t, j) * es;
        for (int64_t jj = 0; jj < run; ++jj, k += stride_bytes, v += stride_bytes) {
            for (int64_t b = 0; b < row_bytes; b += 64) {
                _mm_prefetch(k + b, _MM_HINT_T0);
                _mm_prefetch(v + b, _MM_HINT_T0);
            }
        }
    }
}

// Keys [j0, j0 + n) of K and V to fp32 rows of `stride` floats (zero padded past head_dim),
// after asking for the next block [j0 + n, next_end) to be prefetched. With check_finite,
// returns whether every V value is finite: then a masked key's 0 * V is exactly 0 and P.V needs
// no per-lane mask (decode does not need it: it skips the keys a row does not see).
inline bool pack_block(const Tile& t, int64_t j0, int64_t n, int64_t stride, float* kb, float* vb,
                       int64_t next_end, bool check_finite = true) {
    prefetch_block(t, j0 + n, min64(kKeyBlock, next_end - (j0 + n)));
    Reg poison = Simd::zero();  // stays 0 unless some V is Inf or NaN (Inf * 0 = NaN)
    const int64_t full = t.head_dim / W * W;
    for (int64_t jj = 0, run = 0, offset = 0; jj < n; ++jj, --run, offset += t.kv_stride) {
        if (run == 0) {  // a new run of consecutive rows (a page boundary): one lookup
            run = key_run(t, j0 + jj, n - jj);
            offset = key_offset(t, j0 + jj);
        }
        load_row(t.k, offset, t.dtype, t.head_dim, stride, kb + jj * stride);
        float* v = vb + jj * stride;
        load_row(t.v, offset, t.dtype, t.head_dim, stride, v);
        if (!check_finite) continue;
        for (int64_t d = 0; d < full; d += W) poison = Simd::fmadd(Simd::load(v + d), Simd::zero(), poison);
        for (int64_t d = full; d < t.head_dim; ++d) poison = Simd::add(poison, Simd::set1(v[d] * 0.0f));
    }
    return Simd::reduce_add(poison) == 0.0f;
}

// Row r's output (acc / sum, or the partial) from a contiguous fp32 accumulator row.
inline void finish_row(const Tile& t, int64_t r, const float* acc, float running_max, float running_sum) {
    const int64_t d_len = t.head_dim;
    if (t.out) {
        const float inv = running_sum == 0.0f ? 0.0f : 1.0f / running_sum;  // no finite logit: 0
        const int64_t i = r / t.group, g = r % t.group;
        const int64_t o = i * t.out_stride + g * d_len;
        if (t.dtype == DType::F32) {
            float* dst = static_cast<float*>(t.out) + o;
            for (int64_t d = 0; d < d_len; ++d) dst[d] = acc[d] * inv;
        } else {
            for (int64_t d = 0; d < d_len; ++d) store_f32(t.out, o + d, acc[d] * inv, t.dtype);
        }
    } else {
        t.part_max[r] = running_max;
        t.part_sum[r] = running_sum;
        for (int64_t d = 0; d < d_len; ++d) t.part_acc[r * d_len + d] = acc[d];
    }
}

// ---------------------------------------------------------------- rows in lanes (prefill)

// Scores S^T[jj][lanes] = sum_d K[jj][d] * Q^T[d][lanes] for U keys x NR row vectors.
template <int U, int NR>
inline void scores_block(const float* kb, int64_t d_len, const float* qt, int64_t rp, float* st, int64_t jj) {
    Reg acc[U][NR];
    // Fixed-size loops over register blocks: fully unrolled so the accumulators stay in registers.
#pragma GCC unroll 8
    for (int u = 0; u < U; ++u)
#pragma GCC unroll 4
        for (int r = 0; r < NR; ++r) acc[u][r] = Simd::zero();
    for (int64_t d = 0; d < d_len; ++d) {
        Reg q[NR];
#pragma GCC unroll 4
        for (int r = 0; r < NR; ++r) q[r] = Simd::load(qt + d * rp + r * W);
#pragma GCC unroll 8
        for (int u = 0; u < U; ++u) {
            const Reg k = Simd::set1(kb[(jj + u) * d_len + d]);
#pragma GCC unroll 4
            for (int r = 0; r < NR; ++r) acc[u][r] = Simd::fmadd(k, q[r], acc[u][r]);
        }
    }
    for (int u = 0; u < U; ++u)
        for (int r = 0; r < NR; ++r) Simd::store(st + (jj + u) * rp + r * W, acc[u][r]);
}

// O^T[d][lanes] += sum_jj P^T[jj][lanes] * V[jj][d] for DB dims x NR row vectors. With Masked,
// a lane takes key jj only if j0 + jj < its visible end (so a masked NaN V cannot leak in).
template <int DB, int NR, bool Masked>
inline void pv_block(const float* vb, int64_t d_len, const float* st, int64_t rp, int64_t n, float* ot,
                     int64_t d, const int32_t* ends, int64_t j0) {
    Reg acc[DB][NR];
    for (int e = 0; e < DB; ++e)
        for (int r = 0; r < NR; ++r) acc[e][r] = Simd::load(ot + (d + e) * rp + r * W);
    for (int64_t jj = 0; jj < n; ++jj) {
        Reg p[NR];
#pragma GCC unroll 4
        for (int r = 0; r < NR; ++r) p[r] = Simd::load(st + jj * rp + r * W);
#pragma GCC unroll 8
        for (int e = 0; e < DB; ++e) {
            const Reg v = Simd::set1(vb[jj * d_len + d + e]);
#pragma GCC unroll 4
            for (int r = 0; r < NR; ++r) {
                if (Masked) {
                    acc[e][r] = Simd::select_lt(static_cast<int32_t>(j0 + jj), ends + r * W,
                                                Simd::fmadd(p[r], v, acc[e][r]), acc[e][r]);
                } else {
                    acc[e][r] = Simd::fmadd(p[r], v, acc[e][r]);
                }
            }
        }
    }
    for (int e = 0; e < DB; ++e)
        for (int r = 0; r < NR; ++r) Simd::store(ot + (d + e) * rp + r * W, acc[e][r]);
}

template <int NR, bool Masked>
inline void pv_rows(const float* vb, int64_t d_len, const float* st, int64_t rp, int64_t n, float* ot,
                    const int32_t* ends, int64_t j0) {
    int64_t d = 0;
    for (; d + 4 <= d_len; d += 4) pv_block<4, NR, Masked>(vb, d_len, st, rp, n, ot, d, ends, j0);
    for (; d < d_len; ++d) pv_block<1, NR, Masked>(vb, d_len, st, rp, n, ot, d, ends, j0);
}

template <int NR>
inline void scores_rows(const float* kb, int64_t d_len, const float* qt, int64_t rp, int64_t n, float* st) {
    int64_t jj = 0;
    for (; jj + 4 <= n; jj += 4) scores_block<4, NR>(kb, d_len, qt, rp, st, jj);
    for (; jj < n; ++jj) scores_block<1, NR>(kb, d_len, qt, rp, st, jj);
}

void rows_in_lanes(const Tile& t, float* scratch) {
    const int64_t d_len = t.head_dim;
    const int64_t rows = t.num_queries * t.group;
    const int64_t rp = round_up(rows, W);  // lanes, padded to whole vectors
    float* qt = align64(scratch);           // [d_len][rp]   scaled queries, transposed
    float* ot = qt + d_len * rp;            // [d_len][rp]   unnormalised outputs, transposed
    float* st = ot + d_len * rp;            // [kKeyBlock][rp] scores, then probabilities
    float* kb = st + kKeyBlock * rp;        // [kKeyBlock][d_len]
    float* vb = kb + kKeyBlock * d_len;     // [kKeyBlock][d_len]
    float* row_max = vb + kKeyBlock * d_len;  // [rp]
    float* row_sum = row_max + rp;            // [rp]
    int32_t* ends = reinterpret_cast<int32_t*>(row_sum + rp);  // [rp] visible end per lane
    float* tmp = row_sum + 2 * rp;            // [d_len]

    for (int64_t r = 0; r < rp; ++r) {
        if (r < rows) {
            const int64_t i = r / t.group, g = r % t.group;
            load_row(t.q, i * t.q_stride + g * d_len, t.dtype, d_len, d_len, tmp);
            for (int64_t d = 0; d < d_len; ++d) qt[d * rp + r] = tmp[d] * t.scale;
            ends[r] = static_cast<int32_t>(visible_end(t, i));
        } else {
            for (int64_t d = 0; d < d_len; ++d) qt[d * rp + r] = 0.0f;
            ends[r] = static_cast<int32_t>(t.key_begin);  // padding lane: sees nothing
        }
        const bool resume = t.resume && r < rows;
        for (int64_t d = 0; d < d_len; ++d) ot[d * rp + r] = resume ? t.part_acc[r * d_len + d] : 0.0f;
        row_max[r] = resume ? t.part_max[r] : kNegInf;
        row_sum[r] = resume ? t.part_sum[r] : 0.0f;
    }

    const int64_t first_end = visible_end(t, 0);  // the fewest keys any row sees
    const int64_t last_end = visible_end(t, t.num_queries - 1);
    for (int64_t j0 = t.key_begin; j0 < last_end; j0 += kKeyBlock) {
        const int64_t n = min64(kKeyBlock, last_end - j0);
        const bool v_finite = pack_block(t, j0, n, d_len, kb, vb, last_end);
        const bool masked = j0 + n > first_end;  // padding lanes need no mask: never written

        int64_t rv = 0;
        for (; rv + 2 * W <= rp; rv += 2 * W) scores_rows<2>(kb, d_len, qt + rv, rp, n, st + rv);
        for (; rv < rp; rv += W) scores_rows<1>(kb, d_len, qt + rv, rp, n, st + rv);

        for (rv = 0; rv < rp; rv += W) {
            if (masked) {
                for (int64_t jj = 0; jj < n; ++jj) {
                    float* s = st + jj * rp + rv;
                    Simd::store(s, Simd::select_lt(static_cast<int32_t>(j0 + jj), ends + rv, Simd::load(s),
                                                   Simd::set1(kNegInf)));
                }
            }
            // Lane-wise online softmax. A lane whose logits are all -inf so far subtracts 0
            // instead of -inf: its probabilities are exp(-inf) = 0, never NaN.
            Reg block_max = Simd::set1(kNegInf);
            for (int64_t jj = 0; jj < n; ++jj) block_max = Simd::max(block_max, Simd::load(st + jj * rp + rv));
            const Reg old_max = Simd::load(row_max + rv);
            const Reg new_max = Simd::max(block_max, old_max);
            const Reg base = Simd::neg_inf_to_zero(new_max);
            const Reg correction = Simd::exp(Simd::sub(old_max, base));
            Reg sum = Simd::zero();
            for (int64_t jj = 0; jj < n; ++jj) {
                float* s = st + jj * rp + rv;
                const Reg p = Simd::exp(Simd::sub(Simd::load(s), base));
                Simd::store(s, p);
                sum = Simd::add(sum, p);
            }
            Simd::store(row_sum + rv, Simd::fmadd(Simd::load(row_sum + rv), correction, sum));
            Simd::store(row_max + rv, new_max);
            for (int64_t d = 0; d < d_len; ++d) {
                float* o = ot + d * rp + rv;
                Simd::store(o, Simd::mul(Simd::load(o), correction));
            }
        }

        rv = 0;
        if (masked && !v_finite) {
            for (; rv + 2 * W <= rp; rv += 2 * W) pv_rows<2, true>(vb, d_len, st + rv, rp, n, ot + rv, ends + rv, j0);
            for (; rv < rp; rv += W) pv_rows<1, true>(vb, d_len, st + rv, rp, n, ot + rv, ends + rv, j0);
        } else {
            for (; rv + 2 * W <= rp; rv += 2 * W) pv_rows<2, false>(vb, d_len, st + rv, rp, n, ot + rv, ends + rv, j0);
            for (; rv < rp; rv += W) pv_rows<1, false>(vb, d_len, st + rv, rp, n, ot + rv, ends + rv, j0);
        }
    }

    for (int64_t r = 0; r < rows; ++r) {
        for (int64_t d = 0; d < d_len; ++d) tmp[d] = ot[d * rp + r];
        finish_row(t, r, tmp, row_max[r], row_sum[r]);
    }
}

// ---------------------------------------------------------------- rows in registers (decode)

// Scores s[0..visible) of one query row q against the packed key rows kb, as dot products over
// head_dim (the vector axis), four keys at once for independent FMA chains.
inline void scores_dot(const float* q, const float* kb, int64_t dp, int64_t visible, float* s) {
    int64_t jj = 0;
    for (; jj + 4 <= visible; jj += 4) {
        Reg a0 = Simd::zero(), a1 = Simd::zero(), a2 = Simd::zero(), a3 = Simd::zero();
        const float* k = kb + jj * dp;
        for (int64_t c = 0; c < dp; c += W) {
            const Reg qv = Simd::load(q + c);
            a0 = Simd::fmadd(qv, Simd::load(k + c), a0);
            a1 = Simd::fmadd(qv, Simd::load(k + dp + c), a1);
            a2 = Simd::fmadd(qv, Simd::load(k + 2 * dp + c), a2);
            a3 = Simd::fmadd(qv, Simd::load(k + 3 * dp + c), a3);
        }
        Simd::reduce_add4(a0, a1, a2, a3, s + jj);
    }
    for (; jj < visible; ++jj) {
        Reg a = Simd::zero();
        for (int64_t c = 0; c < dp; c += W) a = Simd::fmadd(Simd::load(q + c), Simd::load(kb + jj * dp + c), a);
        s[jj] = Simd::reduce_add(a);
    }
}

// scores_dot with head_dim known at compile time (C vectors): the query row stays in registers
// and the loop over head_dim is unrolled, so the loop keeps no pointers on the stack.
template <int C>
inline void scores_dot_fixed(const float* q, const float* kb, int64_t visible, float* s) {
    constexpr int64_t dp = C * W;
    Reg qv[C];
#pragma GCC unroll 16
    for (int c = 0; c < C; ++c) qv[c] = Simd::load(q + c * W);
    int64_t jj = 0;
    for (; jj + 4 <= visible; jj += 4) {
        const float* k = kb + jj * dp;
        Reg a0 = Simd::mul(qv[0], Simd::load(k)), a1 = Simd::mul(qv[0], Simd::load(k + dp));
        Reg a2 = Simd::mul(qv[0], Simd::load(k + 2 * dp)), a3 = Simd::mul(qv[0], Simd::load(k + 3 * dp));
#pragma GCC unroll 16
        for (int c = 1; c < C; ++c) {
            a0 = Simd::fmadd(qv[c], Simd::load(k + c * W), a0);
            a1 = Simd::fmadd(qv[c], Simd::load(k + dp + c * W), a1);
            a2 = Simd::fmadd(qv[c], Simd::load(k + 2 * dp + c * W), a2);
            a3 = Simd::fmadd(qv[c], Simd::load(k + 3 * dp + c * W), a3);
        }
        Simd::reduce_add4(a0, a1, a2, a3, s + jj);
    }
    for (; jj < visible; ++jj) {
        Reg a = Simd::mul(qv[0], Simd::load(kb + jj * dp));
#pragma GCC unroll 16
        for (int c = 1; c < C; ++c) a = Simd::fmadd(qv[c], Simd::load(kb + jj * dp + c * W), a);
        s[jj] = Simd::reduce_add(a);
    }
}

inline void scores_dot_any(const float* q, const float* kb, int64_t dp, int64_t visible, float* s) {
    switch (dp / W) {
        case 4: scores_dot_fixed<4>(q, kb, visible, s); break;
        case 6: scores_dot_fixed<6>(q, kb, visible, s); break;
        case 8: scores_dot_fixed<8>(q, kb, visible, s); break;
        default: scores_dot(q, kb, dp, visible, s); break;
    }
}

// acc[r][:] = acc[r][:] * correction[r] + sum_jj p[r][jj] * V[jj][:] for R rows sharing V loads.
template <int R>
inline void pv_shared(const float* vb, int64_t dp, int64_t n, const float* p, int64_t p_stride, float* acc,
                      const float* correction) {
    for (int64_t c = 0; c < dp; c += W) {
        Reg a[R];
        for (int r = 0; r < R; ++r) a[r] = Simd::mul(Simd::load(acc + r * dp + c), Simd::set1(correction[r]));
        for (int64_t jj = 0; jj < n; ++jj) {
            const Reg v = Simd::load(vb + jj * dp + c);
#pragma GCC unroll 8
            for (int r = 0; r < R; ++r) a[r] = Simd::fmadd(Simd::set1(p[r * p_stride + jj]), v, a[r]);
        }
        for (int r = 0; r < R; ++r) Simd::store(acc + r * dp + c, a[r]);
    }
}

inline void pv_shared_any(int64_t rows, const float* vb, int64_t dp, int64_t n, const float* p, int64_t p_stride,
                          float* acc, const float* correction) {
    int64_t r = 0;
    for (; r + 8 <= rows; r += 8) pv_shared<8>(vb, dp, n, p + r * p_stride, p_stride, acc + r * dp, correction + r);
    switch (rows - r) {
        case 7: pv_shared<7>(vb, dp, n, p + r * p_stride, p_stride, acc + r * dp, correction + r); break;
        case 6: pv_shared<6>(vb, dp, n, p + r * p_stride, p_stride, acc + r * dp, correction + r); break;
        case 5: pv_shared<5>(vb, dp, n, p + r * p_stride, p_stride, acc + r * dp, correction + r); break;
        case 4: pv_shared<4>(vb, dp, n, p + r * p_stride, p_stride, acc + r * dp, correction + r); break;
        case 3: pv_shared<3>(vb, dp, n, p + r * p_stride, p_stride, acc + r * dp, correction + r); break;
        case 2: pv_shared<2>(vb, dp, n, p + r * p_stride, p_stride, acc + r * dp, correction + r); break;
        case 1: pv_shared<1>(vb, dp, n, p + r * p_stride, p_stride, acc + r * dp, correction + r); break;
        default: break;
    }
}

void rows_in_registers(const Tile& t, float* scratch) {
    const int64_t d_len = t.head_dim;
    const int64_t dp = round_up(d_len, W);
    const int64_t g_len = t.group;
    const int64_t rows = t.num_queries * g_len;
    const int64_t sp = kKeyBlock;  // score row stride (kKeyBlock is a multiple of W)
    float* kb = align64(scratch);           // [kKeyBlock][dp]
    float* vb = kb + kKeyBlock * dp;        // [kKeyBlock][dp]
    float* qf = vb + kKeyBlock * dp;        // [rows][dp] scaled queries
    float* acc = qf + rows * dp;            // [rows][dp]
    float* sc = acc + rows * dp;            // [rows][sp] scores, then probabilities
    float* row_max = sc + rows * sp;        // [rows]
    float* row_sum = row_max + rows;        // [rows]
    float* correction = row_sum + rows;     // [rows]

    for (int64_t r = 0; r < rows; ++r) {
        const int64_t i = r / g_len, g = r % g_len;
        load_row(t.q, i * t.q_stride + g * d_len, t.dtype, d_len, dp, qf + r * dp);
        for (int64_t c = 0; c < dp; c += W) {
            Simd::store(qf + r * dp + c, Simd::mul(Simd::load(qf + r * dp + c), Simd::set1(t.scale)));
            Simd::store(acc + r * dp + c, Simd::zero());
        }
        if (t.resume) {
            for (int64_t d = 0; d < d_len; ++d) acc[r * dp + d] = t.part_acc[r * d_len + d];
        }
        row_max[r] = t.resume ? t.part_max[r] : kNegInf;
        row_sum[r] = t.resume ? t.part_sum[r] : 0.0f;
    }

    const int64_t last_end = visible_end(t, t.num_queries - 1);
    for (int64_t j0 = t.key_begin; j0 < last_end; j0 += kKeyBlock) {
        const int64_t n = min64(kKeyBlock, last_end - j0);
        pack_block(t, j0, n, dp, kb, vb, last_end, /*check_finite=*/false);
        for (int64_t i = 0; i < t.num_queries; ++i) {
            const int64_t visible = min64(n, visible_end(t, i) - j0);  // keys of this block query i sees
            if (visible <= 0) continue;
            const int64_t r0 = i * g_len;
            for (int64_t r = r0; r < r0 + g_len; ++r) scores_dot_any(qf + r * dp, kb, dp, visible, sc + r * sp);
            for (int64_t r = r0; r < r0 + g_len; ++r) {
                float* s = sc + r * sp;
                int64_t jj;
                for (jj = visible; jj < round_up(visible, W); ++jj) s[jj] = kNegInf;

                Reg block_max = Simd::set1(kNegInf);
                for (jj = 0; jj < visible; jj += W) block_max = Simd::max(block_max, Simd::load(s + jj));
                const float new_max = __builtin_fmaxf(row_max[r], Simd::reduce_max(block_max));
                const float base = new_max == kNegInf ? 0.0f : new_max;  // all -inf so far: no NaN
                correction[r] = __builtin_expf(row_max[r] - base);
                Reg sum = Simd::zero();
                const Reg base_v = Simd::set1(base);
                for (jj = 0; jj < visible; jj += W) {
                    const Reg p = Simd::exp(Simd::sub(Simd::load(s + jj), base_v));
                    Simd::store(s + jj, p);
                    sum = Simd::add(sum, p);
                }
                row_sum[r] = row_sum[r] * correction[r] + Simd::reduce_add(sum);
                row_max[r] = new_max;
            }
            pv_shared_any(g_len, vb, dp, visible, sc + r0 * sp, sp, acc + r0 * dp, correction + r0);
        }
    }
    for (int64_t r = 0; r < rows; ++r) finish_row(t, r, acc + r * dp, row_max[r], row_sum[r]);
}

void attend_tile_simd(const Tile& t, float* scratch) {
    if (t.num_queries * t.group >= W) {
        rows_in_lanes(t, scratch);
    } else {
        rows_in_registers(t, scratch);
    }
}

}  // namespace
}  // namespace cpu
}  // namespace gqa
