/* test_numerics.c: prefill and decode on the CPU against a float64 reference, for every dtype,
 * odd sizes, with and without caches, chunked prefill and per-sequence cache lengths. Also
 * checks that exactly the new K/V rows of the caches were written and every output element. */
#include "gqa_test.h"

typedef struct {
    int32_t dtype, batch, seq_len, num_q_heads, num_kv_heads, head_dim, max_seq_len, start_pos;
    int32_t causal, with_cache;
} prefill_case;

/* Buffers of one call: inputs random, out NaN, caches random (prefix and untouched slots alike). */
typedef struct {
    guarded_buf q, k, v, out, kc, vc;
    unsigned char *kc_expected, *vc_expected; /* the caches the call must leave */
} call_buffers;

static call_buffers alloc_call(const attn_shape* s, int with_cache) {
    const size_t es = dtype_size(s->dtype);
    const size_t nq = (size_t)(s->batch * s->seq_len * s->num_q_heads * s->head_dim);
    const size_t nk = (size_t)(s->batch * s->seq_len * s->num_kv_heads * s->head_dim);
    const size_t nc = (size_t)(s->batch * s->kv_rows * s->num_kv_heads * s->head_dim);
    call_buffers c;
    c.q = guarded_alloc(nq * es); c.k = guarded_alloc(nk * es); c.v = guarded_alloc(nk * es);
    c.out = guarded_alloc(nq * es);
    c.kc = guarded_alloc(with_cache ? nc * es : 1); c.vc = guarded_alloc(with_cache ? nc * es : 1);
    fill_random(s->dtype, c.q.data, (int64_t)nq);
    fill_random(s->dtype, c.k.data, (int64_t)nk);
    fill_random(s->dtype, c.v.data, (int64_t)nk);
    fill_value(s->dtype, c.out.data, (int64_t)nq, NAN); /* poison */
    c.kc_expected = c.vc_expected = NULL;
    if (with_cache) {
        fill_random(s->dtype, c.kc.data, (int64_t)nc);
        fill_random(s->dtype, c.vc.data, (int64_t)nc);
        c.kc_expected = (unsigned char*)test_malloc(nc * es);
        c.vc_expected = (unsigned char*)test_malloc(nc * es);
        memcpy(c.kc_expected, c.kc.data, nc * es);
        memcpy(c.vc_expected, c.vc.data, nc * es);
        append_rows(s, c.kc_expected, c.k.data);
        append_rows(s, c.vc_expected, c.v.data);
    }
    return c;
}

/* Status OK, nothing written outside a buffer, exactly the new rows written into the caches;
 * returns the output's largest error against the float64 reference. */
static double check_call(const char* what, gqa_status st, const attn_shape* s, call_buffers* c) {
    double err;
    CHECK(st == GQA_STATUS_OK, "%s status %d: %s", what, (int)st, gqa_last_error());
    CHECK(guards_intact(&c->out) && guards_intact(&c->kc) && guards_intact(&c->vc), "write outside a buffer");
    if (c->kc_expected) {
        CHECK(memcmp(c->kc.data, c->kc_expected, c->kc.bytes) == 0, "%s: k_cache bytes differ from prefix + new k", what);
        CHECK(memcmp(c->vc.data, c->vc_expected, c->vc.bytes) == 0, "%s: v_cache bytes differ from prefix + new v", what);
        err = attention_error(s, c->q.data, c->kc_expected, c->vc_expected, c->out.data);
    } else {
        err = attention_error(s, c->q.data, c->k.data, c->v.data, c->out.data);
    }
    free(c->kc_expected);
    free(c->vc_expected);
    guarded_free(&c->q); guarded_free(&c->k); guarded_free(&c->v);
    guarded_free(&c->out); guarded_free(&c->kc); guarded_free(&c->vc);
    return err;
}

static void check_prefill(prefill_case p) {
    int32_t starts[8];
    for (int b = 0; b < p.batch; ++b) starts[b] = p.start_pos;
    const attn_shape s = {p.dtype, p.batch, p.seq_len, p.num_q_heads, p.num_kv_heads, p.head_dim,
                          p.with_cache ? p.max_seq_len : p.seq_len, p.with_cache ? starts : NULL, p.causal, 0.0, NULL};
    call_buffers c = alloc_call(&s, p.with_cache);
    gqa_prefill_config cfg = GQA_PREFILL_CONFIG_INIT;
    cfg.dtype = p.dtype;
    cfg.batch_size = p.batch;
    cfg.seq_len = p.seq_len;
    cfg.num_q_heads = p.num_q_heads;
    cfg.num_kv_heads = p.num_kv_heads;
    cfg.head_dim = p.head_dim;
    cfg.max_seq_len = p.max_seq_len;
    cfg.start_pos = p.start_pos;
    cfg.causal = p.causal;
    gqa_status st = gqa_attention_prefill(c.out.data, c.q.data, c.k.data, c.v.data, p.with_cache ? c.kc.data : NULL,
                                          p.with_cache ? c.vc.data : NULL, &cfg, NULL);
    const double max_err = check_call("prefill", st, &s, &c);
    CHECK(max_err <= tolerance(p.dtype),
          "prefill dtype=%d B=%d S=%d H=%d:%d D=%d start=%d causal=%d cache=%d: max err %.3g > %.3g",
          p.dtype, p.batch, p.seq_len, p.num_q_heads, p.num_kv_heads, p.head_dim, p.start_pos, p.causal,
          p.with_cache, max_err, tolerance(p.dtype));
}

static void check_decode(int32_t dtype, int32_t batch, int32_t hq, int32_t hkv, int32_t d, int32_t max_seq_len,
                         const int32_t* lens, int32_t num_splits) {
    const attn_shape s = {dtype, batch, 1, hq, hkv, d, max_seq_len, lens, 1, 0.0, NULL};
    call_buffers c = alloc_call(&s, 1);
    gqa_decode_config cfg = GQA_DECODE_CONFIG_INIT;
    cfg.dtype = dtype;
    cfg.batch_size = batch;
    cfg.num_q_heads = hq;
    cfg.num_kv_heads = hkv;
    cfg.head_dim = d;
    cfg.max_seq_len = max_seq_len;
    cfg.num_splits = num_splits;
    int same = 1;
    for (int32_t b = 1; b < batch; ++b) same &= lens[b] == lens[0];
    if (same) cfg.cache_len = lens[0];
    else cfg.cache_lens = lens;
    gqa_status st = gqa_attention_decode(c.out.data, c.q.data, c.k.data, c.v.data, c.kc.data, c.vc.data, &cfg, NULL);
    const double max_err = check_call("decode", st, &s, &c);
    CHECK(max_err <= tolerance(dtype), "decode dtype=%d B=%d H=%d:%d D=%d max=%d splits=%d: max err %.3g",
          dtype, batch, hq, hkv, d, max_seq_len, num_splits, max_err);
}

int main(void) {
    const int32_t dtypes[3] = {GQA_DTYPE_F32, GQA_DTYPE_F16, GQA_DTYPE_BF16};
    for (int t = 0; t < 3; ++t) {
        int32_t dt = dtypes[t];
        /*                 dtype B  S    Hq Hkv D    max  start causal cache */
        check_prefill((prefill_case){dt, 1, 1, 1, 1, 1, 4, 0, 1, 1});
        check_prefill((prefill_case){dt, 2, 17, 14, 2, 64, 40, 0, 1, 1});     /* Qwen2.5 14:2 */
        check_prefill((prefill_case){dt, 1, 113, 4, 4, 96, 120, 0, 1, 0});    /* MHA, no cache */
        check_prefill((prefill_case){dt, 2, 3, 7, 1, 80, 239, 200, 1, 1});    /* MQA, chunk at 200 */
        check_prefill((prefill_case){dt, 1, 33, 6, 2, 128, 64, 17, 0, 1});    /* non-causal chunk */
        check_prefill((prefill_case){dt, 1, 9, 9, 3, 256, 9, 0, 0, 0});       /* SmolLM2 9:3, D 256 */
        check_prefill((prefill_case){dt, 3, 5, 2, 1, 3, 11, 6, 1, 1});        /* tiny odd head_dim */

        const int32_t one[1] = {0}, last[1] = {99}, mid[1] = {57};
        const int32_t ragged[4] = {0, 1, 100, 254};
        check_decode(dt, 1, 14, 2, 64, 100, one, 0);     /* cache_len 0 */
        check_decode(dt, 1, 32, 32, 96, 100, last, 0);   /* cache_len max-1, Phi-3 32:32 */
        check_decode(dt, 1, 32, 8, 128, 100, mid, 3);    /* forced split, Llama-3 32:8 */
        check_decode(dt, 4, 9, 3, 64, 255, ragged, 0);   /* per-sequence lengths */
        check_decode(dt, 4, 8, 1, 17, 255, ragged, 7);
    }
    return test_summary("test_numerics");
}
