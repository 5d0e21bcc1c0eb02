/* test_scale_bound.c: the largest scale libgqa accepts, and why (include/gqa.h).
 *
 * Logits scale * q.k are fp32. libgqa accepts a scale only while every input f16 can hold
 * (|x| <= 65504) keeps its logits within +-FLT_MAX / 2, so that they and their differences in
 * the softmax (s - max) are finite: scale <= FLT_MAX / (2 * head_dim * 65504^2). Above it the
 * call is rejected before anything is written (it used to return all-NaN for scale = 3e38 and
 * ordinary inputs).
 *   1. scales above the bound (3e38, 1e30, the bound's next float) are INVALID_ARGUMENT, nothing
 *      written, the message naming scale, its value and the bound;
 *   2. at the bound, the worst f16 inputs (q = 65504, keys +-65504) give finite, exact outputs;
 *   3. a large scale below it on ordinary inputs gives the float64 result (a hard max). */
#include <float.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "attn_case.h"

static const double kF16Max = 65504.0;

static float max_scale(int64_t head_dim) {
    const double bound = FLT_MAX / (2.0 * (double)head_dim * kF16Max * kF16Max);
    float f = (float)bound;
    if ((double)f > bound) f = nextafterf(f, 0.0f);  /* the largest float not above the bound */
    return f;
}

static void describe(const attn_case* c, char* label, size_t size, const char* what) {
    snprintf(label, size, "%s %s S%lld G%lld %s D%lld scale %g", what, c->decode ? "decode" : "prefill",
             (long long)c->seq_len, (long long)(c->num_q_heads / c->num_kv_heads), dtype_name(c->dtype),
             (long long)c->head_dim, (double)c->scale);
}

/* Runs c (allocated, with its data) against the float64 reference of its current inputs. */
static void expect_exact(attn_case* c, const char* what) {
    char label[160];
    describe(c, label, sizeof label, what);
    attn_expect want;
    attn_expect_take(&want, c);
    const gqa_status s = attn_case_run(c);
    CHECK(s == GQA_STATUS_OK, "%s: status %d: %s", label, (int)s, gqa_last_error());
    attn_expect_check(c, &want, label);
    attn_expect_free(&want);
}

static void expect_rejected(attn_case* c) {
    char label[160];
    describe(c, label, sizeof label, "too large:");
    attn_case_snapshot(c);
    const gqa_status s = attn_case_run(c);
    CHECK(s == GQA_STATUS_INVALID_ARGUMENT, "%s: status %d, want INVALID_ARGUMENT", label, (int)s);
    const char* which = "";
    CHECK(attn_case_changed(c, &which) == 0, "%s: the rejected call modified %s", label, which);
    char value[32];
    snprintf(value, sizeof value, "scale (%g)", (double)c->scale);
    CHECK(strstr(gqa_last_error(), value) && strstr(gqa_last_error(), "head_dim"),
              "%s: message does not name '%s' and the bound: %s", label, value, gqa_last_error());
}

static void prefill_case(attn_case* c, int32_t dtype, int64_t d) {  /* few rows: rows in registers */
    attn_case_prefill(c, dtype, 2, 7, 4, 2, d, 16, 3, 1);
}
static void prefill_lanes_case(attn_case* c, int32_t dtype, int64_t d) {  /* 37 x 4 rows: in vector lanes */
    attn_case_prefill(c, dtype, 1, 37, 8, 2, d, 48, 5, 1);
}
static void decode_case(attn_case* c, int32_t dtype, int64_t d) {
    attn_case_decode(c, dtype, 2, 4, 2, d, 40, 29, NULL);
}
typedef void (*make_case)(attn_case*, int32_t, int64_t);

/* q = +65504 everywhere; key rows alternate +65504 / -65504 (over the new k and the cache):
 * the logits are +-scale * head_dim * 65504^2, at the bound +-FLT_MAX / 2 and their difference
 * -FLT_MAX; the output is the mean of v over the '+' keys a row sees. */
static void fill_worst_f16(attn_case* c) {
    const int64_t row = c->num_kv_heads * c->head_dim;
    fill_value(c->dtype, c->q.data, (int64_t)(c->q.bytes / 2), kF16Max);
    guarded_buf* keys[] = {&c->k, &c->k_cache};
    for (int i = 0; i < 2; ++i) {
        const int64_t rows = (int64_t)(keys[i]->bytes / 2) / row;
        for (int64_t r = 0; r < rows; ++r) {
            fill_value(c->dtype, keys[i]->data + r * row * 2, row, r % 2 ? -kF16Max : kF16Max);
        }
    }
}

int main(void) {
    const make_case makers[] = {prefill_case, prefill_lanes_case, decode_case};
    const int32_t dtypes[] = {GQA_DTYPE_F16, GQA_DTYPE_BF16, GQA_DTYPE_F32};
    const int64_t dims[] = {1, 64, 256};
    for (int m = 0; m < 3; ++m) {
        for (int t = 0; t < 3; ++t) {
            for (int di = 0; di < 3; ++di) {
                const int64_t d = dims[di];
                const float bound = max_scale(d);
                const float too_large[] = {3e38f, 1e30f, nextafterf(bound, INFINITY)};
                for (int s = 0; s < 3; ++s) {
                    attn_case c;
                    makers[m](&c, dtypes[t], d);
                    c.scale = too_large[s];
                    attn_case_alloc(&c, 100 + (uint64_t)s);
                    expect_rejected(&c);
                    attn_case_free(&c);
                }
                attn_case c;
                makers[m](&c, dtypes[t], d);
                c.scale = 1e20f;  /* far above any model's, below every bound */
                attn_case_alloc(&c, 7);
                expect_exact(&c, "ordinary inputs, large scale:");
                attn_case_free(&c);
                if (dtypes[t] == GQA_DTYPE_F16) {
                    makers[m](&c, dtypes[t], d);
                    c.scale = bound;
                    attn_case_alloc(&c, 8);
                    fill_worst_f16(&c);
                    expect_exact(&c, "largest f16 inputs at the bound:");
                    attn_case_free(&c);
                }
            }
        }
    }
    return test_summary("test_scale_bound");
}
