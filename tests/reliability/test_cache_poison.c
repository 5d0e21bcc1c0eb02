/* test_cache_poison.c: promise 2. Cache slots at or beyond cache_len + 1 (decode) and beyond
 * start_pos + seq_len (prefill) are never read: filling them with NaN, +-Inf or huge values
 * leaves the output bitwise identical, and the poison itself is never overwritten. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "attn_case.h"

/* First cache position after the live region of sequence b. */
static int64_t live_end(const attn_case* c, int64_t b) { return attn_case_start(c, b) + c->seq_len; }

/* Write x into every cache slot at or beyond the live region, in both caches. */
static void poison_tail(attn_case* c, double x) {
    int64_t row = c->num_kv_heads * c->head_dim;
    for (int64_t b = 0; b < c->batch; ++b) {
        int64_t from = (b * c->max_seq_len + live_end(c, b)) * row;
        int64_t n = (c->max_seq_len - live_end(c, b)) * row;
        size_t es = dtype_size(c->dtype);
        fill_value(c->dtype, (uint8_t*)c->k_cache.data + from * (int64_t)es, n, x);
        fill_value(c->dtype, (uint8_t*)c->v_cache.data + from * (int64_t)es, n, -x);
    }
}

/* Bytes of the tail regions equal between two caches. */
static int tails_equal(const attn_case* c, const uint8_t* a, const uint8_t* b) {
    size_t es = dtype_size(c->dtype);
    int64_t row = c->num_kv_heads * c->head_dim * (int64_t)es;
    for (int64_t s = 0; s < c->batch; ++s) {
        int64_t from = (s * c->max_seq_len + live_end(c, s)) * row;
        int64_t n = (c->max_seq_len - live_end(c, s)) * row;
        if (memcmp(a + from, b + from, (size_t)n) != 0) return 0;
    }
    return 1;
}

static void run_case(attn_case* c, const char* label) {
    attn_case_alloc(c, 4242);
    int64_t n_out = attn_case_out_elems(c);
    size_t out_bytes = c->out.bytes, cache_bytes = c->k_cache.bytes;
    uint8_t* k0 = malloc(cache_bytes + 1);
    uint8_t* v0 = malloc(cache_bytes + 1);
    uint8_t* out_clean = malloc(out_bytes + 1);
    uint8_t* ek = malloc(cache_bytes + 1);
    uint8_t* ev = malloc(cache_bytes + 1);
    double* ref = malloc((size_t)n_out * sizeof(double));
    memcpy(k0, c->k_cache.data, cache_bytes);
    memcpy(v0, c->v_cache.data, cache_bytes);

    /* Clean run: finite random values everywhere; it must match the float64 reference. */
    attn_case_reference(c, ref, ek, ev);
    attn_case_snapshot(c);
    gqa_status s = attn_case_run(c);
    CHECK(s == GQA_STATUS_OK, "%s: clean run status %d: %s", label, (int)s, gqa_last_error());
    attn_case_check(c, label, ref, ek, ev);
    memcpy(out_clean, c->out.data, out_bytes);

    const double poisons[] = {NAN, INFINITY, -INFINITY, 60000.0, -1e30};
    for (size_t p = 0; p < sizeof poisons / sizeof *poisons; ++p) {
        memcpy(c->k_cache.data, k0, cache_bytes);
        memcpy(c->v_cache.data, v0, cache_bytes);
        poison_tail(c, poisons[p]);
        fill_value(c->dtype, c->out.data, n_out, NAN);
        uint8_t* kp = malloc(cache_bytes + 1);
        uint8_t* vp = malloc(cache_bytes + 1);
        memcpy(kp, c->k_cache.data, cache_bytes);
        memcpy(vp, c->v_cache.data, cache_bytes);
        s = attn_case_run(c);
        CHECK(s == GQA_STATUS_OK, "%s poison %g: status %d: %s", label, poisons[p], (int)s, gqa_last_error());
        CHECK(memcmp(c->out.data, out_clean, out_bytes) == 0,
                  "%s: poison %g beyond the live cache changed the output (it was read)", label, poisons[p]);
        CHECK(tails_equal(c, c->k_cache.data, kp) && tails_equal(c, c->v_cache.data, vp),
                  "%s: poison %g beyond the live cache was overwritten", label, poisons[p]);
        /* The live region holds exactly what the clean run wrote. */
        for (int64_t b = 0; b < c->batch; ++b) {
            size_t row = (size_t)(c->num_kv_heads * c->head_dim) * dtype_size(c->dtype);
            size_t from = (size_t)(b * c->max_seq_len) * row, n = (size_t)live_end(c, b) * row;
            CHECK(memcmp(c->k_cache.data + from, ek + from, n) == 0 && memcmp(c->v_cache.data + from, ev + from, n) == 0,
                      "%s poison %g: live cache region of sequence %lld differs from the clean run", label, poisons[p],
                      (long long)b);
        }
        int guards = guards_intact(&c->out) && guards_intact(&c->k_cache) && guards_intact(&c->v_cache);
        CHECK(guards, "%s poison %g: a guard band was overwritten", label, poisons[p]);
        free(kp);
        free(vp);
    }
    free(k0);
    free(v0);
    free(out_clean);
    free(ek);
    free(ev);
    free(ref);
    attn_case_free(c);
}

int main(void) {
    attn_case c;
    static const int32_t lens_a[4] = {0, 1, 100, 298};
    static const int32_t lens_b[3] = {237, 17, 3};

    attn_case_prefill(&c, GQA_DTYPE_F16, 2, 5, 6, 2, 17, 40, 7, 1);
    run_case(&c, "prefill f16 B2 S5 6:2 d17 T40 start7 causal");
    attn_case_prefill(&c, GQA_DTYPE_BF16, 1, 17, 4, 4, 64, 64, 0, 0);
    run_case(&c, "prefill bf16 B1 S17 4:4 d64 T64 start0 non-causal");
    attn_case_prefill(&c, GQA_DTYPE_F32, 3, 1, 7, 1, 3, 9, 0, 1);
    run_case(&c, "prefill f32 B3 S1 7:1 d3 T9 start0");
    attn_case_prefill(&c, GQA_DTYPE_F32, 2, 3, 4, 2, 96, 113, 50, 0);
    run_case(&c, "prefill f32 B2 S3 4:2 d96 T113 start50 non-causal");
    attn_case_decode(&c, GQA_DTYPE_F16, 4, 14, 2, 64, 300, 0, lens_a);
    run_case(&c, "decode f16 B4 14:2 d64 T300 cache_lens {0,1,100,298}");
    attn_case_decode(&c, GQA_DTYPE_BF16, 2, 8, 8, 128, 113, 57, NULL);
    run_case(&c, "decode bf16 B2 8:8 d128 T113 cache_len 57");
    attn_case_decode(&c, GQA_DTYPE_F32, 3, 9, 3, 80, 239, 0, lens_b);
    run_case(&c, "decode f32 B3 9:3 d80 T239 cache_lens {237,17,3}");
    return test_summary("test_cache_poison");
}
