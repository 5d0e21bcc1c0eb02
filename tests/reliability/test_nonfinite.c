/* test_nonfinite.c: promise 6. NaN/Inf in live q, k, v or cache entries reach only the output
 * rows that attend to them (the other rows stay bitwise identical to a clean run), and a
 * logit of -1e5 still beats a masked position (masks are -inf, with -inf - -inf guarded).
 *
 * "Row" = out[b, i, h, :]. A value planted in q[b,i,h] touches that row only; one planted in
 * k/v at absolute position p of sequence b, kv head g touches rows (b, i, h) with h / G == g
 * and p visible to query i. NaN in k makes a touched row all NaN; NaN or Inf in v[..., d]
 * makes only column d of a touched row non-finite. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "attn_case.h"

enum { IN_Q, IN_K, IN_V, IN_KCACHE, IN_VCACHE };
static const char* in_names[] = {"q", "k", "v", "k_cache", "v_cache"};

typedef struct plant {
    int where;           /* IN_*                                   */
    int64_t b, pos, head, d; /* pos: token index (q, k, v) or cache position */
    double value;
} plant;

static guarded_buf* target(attn_case* c, int where) {
    switch (where) {
    case IN_Q: return &c->q;
    case IN_K: return &c->k;
    case IN_V: return &c->v;
    case IN_KCACHE: return &c->k_cache;
    default: return &c->v_cache;
    }
}

static int64_t plant_index(const attn_case* c, const plant* p) {
    if (p->where == IN_Q) return ((p->b * c->seq_len + p->pos) * c->num_q_heads + p->head) * c->head_dim + p->d;
    if (p->where == IN_K || p->where == IN_V)
        return ((p->b * c->seq_len + p->pos) * c->num_kv_heads + p->head) * c->head_dim + p->d;
    return ((p->b * c->max_seq_len + p->pos) * c->num_kv_heads + p->head) * c->head_dim + p->d;
}

/* Does out row (b, i, h) attend to the planted value? */
static int touches(const attn_case* c, const plant* p, int64_t b, int64_t i, int64_t h) {
    if (b != p->b) return 0;
    if (p->where == IN_Q) return i == p->pos && h == p->head;
    int64_t group = c->num_q_heads / c->num_kv_heads;
    if (h / group != p->head) return 0;
    int64_t start = attn_case_start(c, b);
    int64_t abs_pos = (p->where == IN_K || p->where == IN_V) ? start + p->pos : p->pos;
    /* A cache slot overwritten by this call's new k/v is never read with its old value. */
    if ((p->where == IN_KCACHE || p->where == IN_VCACHE) && abs_pos >= start && abs_pos < start + c->seq_len) return 0;
    int64_t last = c->causal ? start + i : start + c->seq_len - 1;
    return abs_pos <= last;
}

static void run_plant(attn_case* c, const uint8_t* clean_out, const plant* p, const char* case_label,
                      const uint8_t* k0, const uint8_t* v0) {
    char label[200];
    snprintf(label, sizeof label, "%s: %g in %s[b%lld, pos %lld, head %lld, d %lld]", case_label, p->value,
             in_names[p->where], (long long)p->b, (long long)p->pos, (long long)p->head, (long long)p->d);
    memcpy(c->k_cache.data, k0, c->k_cache.bytes);
    memcpy(c->v_cache.data, v0, c->v_cache.bytes);
    guarded_buf* t = target(c, p->where);
    int64_t idx = plant_index(c, p);
    double saved = load_elem(c->dtype, t->data, idx);
    store_elem(c->dtype, t->data, idx, p->value);
    fill_value(c->dtype, c->out.data, attn_case_out_elems(c), 12345.0); /* finite poison */
    gqa_status s = attn_case_run(c);
    store_elem(c->dtype, t->data, idx, saved);
    CHECK(s == GQA_STATUS_OK, "%s: status %d: %s", label, (int)s, gqa_last_error());

    const int64_t D = c->head_dim;
    const size_t es = dtype_size(c->dtype);
    long touched = 0, leaked = 0, not_poisoned = 0;
    for (int64_t b = 0; b < c->batch; ++b) {
        for (int64_t i = 0; i < c->seq_len; ++i) {
            for (int64_t h = 0; h < c->num_q_heads; ++h) {
                int64_t row = ((b * c->seq_len + i) * c->num_q_heads + h) * D;
                if (!touches(c, p, b, i, h)) {
                    if (memcmp((const uint8_t*)c->out.data + row * (int64_t)es, clean_out + row * (int64_t)es, (size_t)D * es))
                        ++leaked;
                    continue;
                }
                ++touched;
                for (int64_t d = 0; d < D; ++d) {
                    double x = load_elem(c->dtype, c->out.data, row + d);
                    int value_column = p->where == IN_V || p->where == IN_VCACHE;
                    if (value_column && d != p->d) { /* other columns: as if clean */
                        if (memcmp((const uint8_t*)c->out.data + (row + d) * (int64_t)es,
                                   clean_out + (row + d) * (int64_t)es, es)) ++leaked;
                    } else if (isnan(p->value) || value_column) {
                        if (isfinite(x)) ++not_poisoned;
                    }
                }
            }
        }
    }
    CHECK(leaked == 0, "%s: %ld output rows/columns that do not attend to it changed", label, leaked);
    int overwritten = (p->where == IN_KCACHE || p->where == IN_VCACHE) && p->pos >= attn_case_start(c, p->b) &&
                      p->pos < attn_case_start(c, p->b) + c->seq_len;
    CHECK(touched > 0 || overwritten, "%s: test bug: no row touches the planted value", label);
    CHECK(not_poisoned == 0, "%s: %ld elements of rows that attend to it stayed finite", label, not_poisoned);
}

static void nonfinite_case(attn_case* c, const char* label, const plant* plants, int nplants) {
    attn_case_alloc(c, 606);
    int64_t n_out = attn_case_out_elems(c);
    double* ref = malloc((size_t)n_out * sizeof(double));
    uint8_t* ek = malloc(c->k_cache.bytes + 1);
    uint8_t* ev = malloc(c->v_cache.bytes + 1);
    uint8_t* k0 = malloc(c->k_cache.bytes + 1);
    uint8_t* v0 = malloc(c->v_cache.bytes + 1);
    uint8_t* clean = malloc(c->out.bytes + 1);
    memcpy(k0, c->k_cache.data, c->k_cache.bytes);
    memcpy(v0, c->v_cache.data, c->v_cache.bytes);
    attn_case_reference(c, ref, ek, ev);
    attn_case_snapshot(c);
    gqa_status s = attn_case_run(c);
    CHECK(s == GQA_STATUS_OK, "%s: clean status %d: %s", label, (int)s, gqa_last_error());
    attn_case_check(c, label, ref, ek, ev);
    memcpy(clean, c->out.data, c->out.bytes);
    for (int i = 0; i < nplants; ++i) run_plant(c, clean, &plants[i], label, k0, v0);
    fprintf(stderr, "  %-52s %d planted values, only attending rows affected\n", label, nplants);
    free(ref);
    free(ek);
    free(ev);
    free(k0);
    free(v0);
    free(clean);
    attn_case_free(c);
}

/* ---- -1e5 logits against masked positions ------------------------------------------- */
/* Every visible logit is exactly -1e5 (q = (-a, 0...), k = (b, 0...), a*b = 1e5, scale 1), so
 * query i must return the plain mean of the visible v rows. A finite mask value above -1e5
 * (e.g. -1e4 or -65504) would let masked positions win instead. v[pos, d] = pos + d / 4. */
static void masked_case(int32_t dtype, int decode, int64_t seq_len, int64_t max_seq_len, int32_t start,
                        const int32_t* lens, int32_t num_splits) {
    attn_case c;
    const int64_t B = lens ? 4 : 1, H = 2, D = 4;
    if (decode) attn_case_decode(&c, dtype, B, H, 1, D, max_seq_len, start, lens);
    else attn_case_prefill(&c, dtype, B, seq_len, H, 1, D, max_seq_len, start, 1);
    c.scale = 1.0f;
    c.num_splits = num_splits;
    attn_case_alloc(&c, 1);
    const double qa = dtype == GQA_DTYPE_F32 ? 100.0 : 250.0, kb = 1e5 / qa;
    int64_t S = c.seq_len;
    for (int64_t b = 0; b < B; ++b) {
        for (int64_t i = 0; i < S; ++i) {
            for (int64_t h = 0; h < H; ++h) {
                for (int64_t d = 0; d < D; ++d) store_elem(dtype, c.q.data, ((b * S + i) * H + h) * D + d, d ? 0.0 : -qa);
            }
            for (int64_t d = 0; d < D; ++d) {
                int64_t pos = attn_case_start(&c, b) + i;
                store_elem(dtype, c.k.data, (b * S + i) * D + d, d ? 0.0 : kb);
                store_elem(dtype, c.v.data, (b * S + i) * D + d, (double)pos + d / 4.0);
            }
        }
        for (int64_t pos = 0; pos < c.max_seq_len; ++pos) {
            for (int64_t d = 0; d < D; ++d) {
                int live = pos < attn_case_start(&c, b);
                /* beyond the live region: a +1e5 logit and a huge v, which must never be seen */
                store_elem(dtype, c.k_cache.data, (b * c.max_seq_len + pos) * D + d, d ? 0.0 : (live ? kb : -kb));
                store_elem(dtype, c.v_cache.data, (b * c.max_seq_len + pos) * D + d, live ? (double)pos + d / 4.0 : 3e4);
            }
        }
    }
    gqa_status s = attn_case_run(&c);
    CHECK(s == GQA_STATUS_OK, "masked case: status %d: %s", (int)s, gqa_last_error());
    double worst = 0.0;
    for (int64_t b = 0; b < B; ++b) {
        for (int64_t i = 0; i < S; ++i) {
            int64_t last = attn_case_start(&c, b) + i; /* positions 0..last visible, all logits -1e5 */
            for (int64_t h = 0; h < H; ++h) {
                for (int64_t d = 0; d < D; ++d) {
                    double want = last / 2.0 + d / 4.0;
                    double got = load_elem(dtype, c.out.data, ((b * S + i) * H + h) * D + d);
                    double err = fabs(got - want) / (1.0 + fabs(want));
                    if (!(err <= worst)) worst = err;
                }
            }
        }
    }
    char label[160];
    snprintf(label, sizeof label, "%s %s, logits -1e5, %s%d, max_seq_len %lld, num_splits %d", decode ? "decode" : "prefill",
             dtype_name(dtype), decode ? (lens ? "cache_lens[0] " : "cache_len ") : "start_pos ",
             lens ? lens[0] : start, (long long)max_seq_len, num_splits);
    CHECK(worst <= tolerance(dtype), "%s: relative error %g: masked positions (or -inf - -inf) leak", label, worst);
    fprintf(stderr, "  %-80s max rel err %.3g\n", label, worst);
    attn_case_free(&c);
}

int main(void) {
    attn_case c;
    /* Prefill with a cache: B2 S9 4:2 d16, T32, start 4, causal. */
    const plant prefill_plants[] = {
        {IN_Q, 1, 3, 2, 5, NAN},      {IN_K, 0, 2, 1, 0, NAN},     {IN_V, 0, 2, 1, 7, NAN},
        {IN_KCACHE, 1, 1, 0, 3, NAN}, {IN_VCACHE, 1, 3, 1, 9, NAN}, {IN_V, 1, 8, 0, 15, INFINITY},
        {IN_V, 0, 0, 1, 2, -INFINITY}, {IN_Q, 0, 0, 0, 0, INFINITY}, {IN_K, 1, 5, 0, 4, INFINITY},
        {IN_KCACHE, 0, 2, 1, 1, -INFINITY}, {IN_KCACHE, 0, 5, 1, 1, NAN} /* overwritten by new k */,
    };
    const int np = (int)(sizeof prefill_plants / sizeof *prefill_plants);
    attn_case_prefill(&c, GQA_DTYPE_F32, 2, 9, 4, 2, 16, 32, 4, 1);
    nonfinite_case(&c, "prefill f32 B2 S9 4:2 d16 T32 start4 causal", prefill_plants, np);
    attn_case_prefill(&c, GQA_DTYPE_F16, 2, 9, 4, 2, 16, 32, 4, 1);
    nonfinite_case(&c, "prefill f16 B2 S9 4:2 d16 T32 start4 causal", prefill_plants, np);
    attn_case_prefill(&c, GQA_DTYPE_BF16, 2, 9, 4, 2, 16, 32, 4, 0);
    nonfinite_case(&c, "prefill bf16 B2 S9 4:2 d16 T32 start4 non-causal", prefill_plants, np);
    const plant nocache_plants[] = {{IN_K, 0, 4, 0, 3, NAN}, {IN_V, 1, 0, 1, 0, NAN}, {IN_Q, 1, 16, 3, 2, NAN}};
    attn_case_prefill(&c, GQA_DTYPE_F16, 2, 17, 4, 2, 8, 0, 0, 1);
    nonfinite_case(&c, "prefill f16 B2 S17 4:2 d8 no cache causal", nocache_plants, 3);

    /* Decode: B3 6:3 d8, T20, cache_lens {4, 10, 0}. */
    static const int32_t lens[3] = {4, 10, 0};
    const plant decode_plants[] = {
        {IN_KCACHE, 1, 7, 2, 1, NAN}, {IN_V, 2, 0, 0, 3, NAN}, {IN_Q, 0, 0, 5, 7, NAN},
        {IN_KCACHE, 0, 4, 1, 0, NAN} /* slot cache_len: overwritten by the new k first */,
        {IN_VCACHE, 1, 0, 0, 6, INFINITY}, {IN_K, 0, 0, 2, 2, NAN},
    };
    attn_case_decode(&c, GQA_DTYPE_F16, 3, 6, 3, 8, 20, 0, lens);
    nonfinite_case(&c, "decode f16 B3 6:3 d8 T20 cache_lens {4,10,0}", decode_plants, 6);
    attn_case_decode(&c, GQA_DTYPE_F32, 3, 6, 3, 8, 20, 0, lens);
    nonfinite_case(&c, "decode f32 B3 6:3 d8 T20 cache_lens {4,10,0}", decode_plants, 6);

    /* -1e5 logits beat masked positions. */
    static const int32_t short_lens[4] = {0, 1, 2, 63};
    masked_case(GQA_DTYPE_F32, 0, 40, 0, 0, NULL, 0);
    masked_case(GQA_DTYPE_F16, 0, 40, 0, 0, NULL, 0);
    masked_case(GQA_DTYPE_BF16, 0, 40, 0, 0, NULL, 0);
    masked_case(GQA_DTYPE_F32, 0, 20, 64, 30, NULL, 0);
    masked_case(GQA_DTYPE_F16, 0, 70, 200, 100, NULL, 0);
    masked_case(GQA_DTYPE_F32, 1, 1, 64, 50, NULL, 0);
    masked_case(GQA_DTYPE_F16, 1, 1, 64, 0, short_lens, 256);
    masked_case(GQA_DTYPE_F32, 1, 1, 64, 0, short_lens, 16);
    masked_case(GQA_DTYPE_BF16, 1, 1, 64, 0, short_lens, 0);
    return test_summary("test_nonfinite");
}
