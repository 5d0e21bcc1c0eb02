// kernel_simd.inl: the SIMD tile kernel, written once over a small vector interface `Simd`
// and compiled once per ISA (attention_avx2.cpp: 8 lanes, attention_avx512.cpp: 16 lanes).
//
// Two shapes of work, chosen per tile:
//  * rows in lanes (prefill_lanes.inl: a tile has >= kWidth query rows, prefill or decode with
//    a large group): query rows are the vector lanes, Q.K^T and P.V broadcast-FMA outer
//    products, a lane-wise online softmax.
//  * rows_in_registers (decode: the G query heads of one KV head). Too few rows to fill the
//    lanes, so head_dim is the vector axis: a dot product per (row, key), then P.V with all G
//    rows sharing every V load. Each K/V block is read from memory once for the whole group.
//    It only ever reads the keys a row sees, so a NaN/Inf in a masked key never reaches a row.
//
// Include only after defining `struct Simd` inside an anonymous namespace. Everything here
// has internal linkage (see convert.hpp for why).
#include "cpu/prefill_lanes.inl"
#include "cpu/simd_helpers.inl"

namespace gqa {
namespace cpu {
namespace {

// Keys [j0, j0 + n) of K and V to fp32 rows of `stride` floats (zero padded past head_dim),
// after asking for the next block [j0 + n, next_end) to be prefetched.
inline void pack_block(const Tile& t, int64_t j0, int64_t n, int64_t stride, float* kb, float* vb,
                       int64_t next_end) {
    prefetch_block(t, j0 + n, min64(kKeyBlock, next_end - (j0 + n)));
    const int64_t v_step = value_step(t);
    for (int64_t jj = 0, run = 0, k_offset = 0, v_offset = 0; jj < n;
         ++jj, --run, k_offset += t.kv_stride, v_offset += v_step) {
        if (run == 0) {  // a new run of consecutive rows (a page boundary): one lookup
            run = key_run(t, j0 + jj, n - jj);
            k_offset = key_offset(t, j0 + jj);
            v_offset = value_offset(t, j0 + jj);
        }
        load_row(t.k, k_offset, t.dtype, t.head_dim, stride, kb + jj * stride);
        load_row(t.v, v_offset, t.dtype, t.head_dim, stride, vb + jj * stride);
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
        load_row(t.q, i * t.q_stride + g * t.q_head_stride, t.dtype, d_len, dp, qf + r * dp);
        for (int64_t c = 0; c < dp; c += W) {
            Simd::store(qf + r * dp + c, Simd::mul(Simd::load(qf + r * dp + c), Simd::set1(t.scale)));
            Simd::store(acc + r * dp + c, Simd::zero());
        }
        if (t.resume) {
            for (int64_t d = 0; d < d_len; ++d) acc[r * dp + d] = t.part_acc[r * d_len + d];
        }
        init_row_state(t, r, row_max + r, row_sum + r);
    }

    const int64_t last_end = visible_end(t, t.num_queries - 1);
    for (int64_t j0 = visible_begin(t, 0); j0 < last_end; j0 += kKeyBlock) {
        const int64_t n = min64(kKeyBlock, last_end - j0);
        pack_block(t, j0, n, dp, kb, vb, last_end);
        for (int64_t i = 0; i < t.num_queries; ++i) {
            // Keys [j0 + lo, j0 + lo + visible) of this block are the ones query i sees.
            const int64_t lo = visible_begin(t, i) > j0 ? visible_begin(t, i) - j0 : 0;
            const int64_t visible = min64(n, visible_end(t, i) - j0) - lo;
            if (visible <= 0) continue;
            const int64_t r0 = i * g_len;
            for (int64_t r = r0; r < r0 + g_len; ++r) {
                scores_dot_any(qf + r * dp, kb + lo * dp, dp, visible, sc + r * sp);  // q is pre-scaled
                if (t.softcap > 0.0f) softcap_scores(sc + r * sp, round_up(visible, W), 1.0f, t.softcap);
            }
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
            pv_shared_any(g_len, vb + lo * dp, dp, visible, sc + r0 * sp, sp, acc + r0 * dp, correction + r0);
        }
    }
    for (int64_t r = 0; r < rows; ++r) finish_row(t, r, acc + r * dp, row_max[r], row_sum[r]);
}

void attend_tile_simd(const Tile& t, float* scratch) {
    if (t.num_queries * t.group >= W) {
        prefill_lanes<FmaMma>(t, scratch);
    } else {
        rows_in_registers(t, scratch);
    }
}

}  // namespace
}  // namespace cpu
}  // namespace gqa
