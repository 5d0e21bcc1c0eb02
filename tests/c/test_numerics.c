/* test_numerics.c: prefill and decode on the CPU against a float64 reference, for every dtype,
 * odd sizes, with and without caches, chunked prefill and per-sequence cache lengths. Also
 * checks that exactly the new K/V rows of the caches were written and every output element. */
#include "test_util.h"

static double tolerance(int32_t dtype) {
    return dtype == GQA_DTYPE_F32 ? 1e-4 : dtype == GQA_DTYPE_F16 ? 4e-3 : 3e-2;
}

typedef struct {
    int32_t dtype, batch, seq_len, num_q_heads, num_kv_heads, head_dim, max_seq_len, start_pos;
    int32_t causal, with_cache;
} prefill_case;

/* Fills cache rows [start, start + n) of one sequence from k (seq rows), in the expected copy. */
static void expect_cache_rows(unsigned char* expected, const unsigned char* src, int64_t b, int64_t start,
                              int64_t n, int64_t max_seq_len, int64_t row_bytes) {
    memcpy(expected + ((size_t)b * (size_t)max_seq_len + (size_t)start) * (size_t)row_bytes,
           src + (size_t)b * (size_t)n * (size_t)row_bytes, (size_t)(n * row_bytes));
}

static void check_prefill(prefill_case c) {
    const size_t es = dtype_size(c.dtype);
    const int64_t G = c.num_q_heads / c.num_kv_heads, D = c.head_dim;
    const size_t nq = (size_t)c.batch * c.seq_len * c.num_q_heads * D;
    const size_t nk = (size_t)c.batch * c.seq_len * c.num_kv_heads * D;
    const size_t nc = (size_t)c.batch * c.max_seq_len * c.num_kv_heads * D;
    guarded_buf q = guarded_alloc(nq * es), k = guarded_alloc(nk * es), v = guarded_alloc(nk * es);
    guarded_buf out = guarded_alloc(nq * es);
    guarded_buf kc = guarded_alloc(c.with_cache ? nc * es : 1), vc = guarded_alloc(c.with_cache ? nc * es : 1);
    fill_random(q.data, nq, c.dtype);
    fill_random(k.data, nk, c.dtype);
    fill_random(v.data, nk, c.dtype);
    for (size_t i = 0; i < nq; ++i) store_elem(out.data, i, c.dtype, NAN); /* poison */
    unsigned char *kc_expected = NULL, *vc_expected = NULL;
    if (c.with_cache) {
        fill_random(kc.data, nc, c.dtype); /* prefix and untouched slots alike */
        fill_random(vc.data, nc, c.dtype);
        kc_expected = (unsigned char*)malloc(nc * es);
        vc_expected = (unsigned char*)malloc(nc * es);
        memcpy(kc_expected, kc.data, nc * es);
        memcpy(vc_expected, vc.data, nc * es);
        const int64_t row_bytes = (int64_t)c.num_kv_heads * D * (int64_t)es;
        for (int64_t b = 0; b < c.batch; ++b) {
            unsigned char* kx = kc_expected + (size_t)b * c.max_seq_len * row_bytes;
            memcpy(kx + (size_t)c.start_pos * row_bytes, (unsigned char*)k.data + (size_t)b * c.seq_len * row_bytes,
                   (size_t)c.seq_len * row_bytes);
            unsigned char* vx = vc_expected + (size_t)b * c.max_seq_len * row_bytes;
            memcpy(vx + (size_t)c.start_pos * row_bytes, (unsigned char*)v.data + (size_t)b * c.seq_len * row_bytes,
                   (size_t)c.seq_len * row_bytes);
        }
    }

    gqa_prefill_config cfg = GQA_PREFILL_CONFIG_INIT;
    cfg.dtype = c.dtype;
    cfg.batch_size = c.batch;
    cfg.seq_len = c.seq_len;
    cfg.num_q_heads = c.num_q_heads;
    cfg.num_kv_heads = c.num_kv_heads;
    cfg.head_dim = c.head_dim;
    cfg.max_seq_len = c.max_seq_len;
    cfg.start_pos = c.start_pos;
    cfg.causal = c.causal;
    gqa_status st = gqa_attention_prefill(out.data, q.data, k.data, v.data, c.with_cache ? kc.data : NULL,
                                          c.with_cache ? vc.data : NULL, &cfg, NULL);
    CHECK(st == GQA_STATUS_OK, "prefill status %d: %s", (int)st, gqa_last_error());
    CHECK(guards_intact(&out) && guards_intact(&kc) && guards_intact(&vc), "write outside a buffer");
    if (c.with_cache) {
        CHECK(memcmp(kc.data, kc_expected, nc * es) == 0, "k_cache bytes differ from prefix + new k");
        CHECK(memcmp(vc.data, vc_expected, nc * es) == 0, "v_cache bytes differ from prefix + new v");
    }

    double max_err = 0.0;
    double* res = (double*)malloc(sizeof(double) * (size_t)D);
    for (int64_t b = 0; b < c.batch; ++b) {
        for (int64_t i = 0; i < c.seq_len; ++i) {
            for (int64_t h = 0; h < c.num_q_heads; ++h) {
                const int64_t kvh = h / G;
                strided_view qv = {q.data, c.dtype, (size_t)(((b * c.seq_len + i) * c.num_q_heads + h) * D), 0};
                strided_view kv, vv;
                int64_t n_keys;
                if (c.with_cache) {
                    n_keys = c.causal ? c.start_pos + i + 1 : c.start_pos + c.seq_len;
                    size_t off = (size_t)((b * c.max_seq_len * c.num_kv_heads + kvh) * D);
                    kv = (strided_view){kc_expected, c.dtype, off, (size_t)(c.num_kv_heads * D)};
                    vv = (strided_view){vc_expected, c.dtype, off, (size_t)(c.num_kv_heads * D)};
                } else {
                    n_keys = c.causal ? i + 1 : c.seq_len;
                    size_t off = (size_t)((b * c.seq_len * c.num_kv_heads + kvh) * D);
                    kv = (strided_view){k.data, c.dtype, off, (size_t)(c.num_kv_heads * D)};
                    vv = (strided_view){v.data, c.dtype, off, (size_t)(c.num_kv_heads * D)};
                }
                reference_row(&qv, &kv, &vv, n_keys, D, 1.0 / sqrt((double)D), res);
                for (int64_t d = 0; d < D; ++d) {
                    double got = load_elem(out.data, (size_t)qv.offset + (size_t)d, c.dtype);
                    double err = fabs(got - res[d]);
                    if (!(err <= max_err)) max_err = err; /* NaN propagates into max_err */
                }
            }
        }
    }
    CHECK(max_err <= tolerance(c.dtype),
          "prefill dtype=%d B=%d S=%d H=%d:%d D=%d start=%d causal=%d cache=%d: max err %.3g > %.3g",
          c.dtype, c.batch, c.seq_len, c.num_q_heads, c.num_kv_heads, c.head_dim, c.start_pos, c.causal,
          c.with_cache, max_err, tolerance(c.dtype));
    free(res);
    free(kc_expected);
    free(vc_expected);
    guarded_free(&q); guarded_free(&k); guarded_free(&v); guarded_free(&out); guarded_free(&kc); guarded_free(&vc);
}

static void check_decode(int32_t dtype, int32_t batch, int32_t hq, int32_t hkv, int32_t d, int32_t max_seq_len,
                         const int32_t* lens, int32_t num_splits) {
    const size_t es = dtype_size(dtype);
    const int64_t G = hq / hkv;
    const size_t nq = (size_t)batch * hq * d, nk = (size_t)batch * hkv * d;
    const size_t nc = (size_t)batch * max_seq_len * hkv * d;
    guarded_buf q = guarded_alloc(nq * es), k = guarded_alloc(nk * es), v = guarded_alloc(nk * es);
    guarded_buf out = guarded_alloc(nq * es), kc = guarded_alloc(nc * es), vc = guarded_alloc(nc * es);
    fill_random(q.data, nq, dtype);
    fill_random(k.data, nk, dtype);
    fill_random(v.data, nk, dtype);
    fill_random(kc.data, nc, dtype);
    fill_random(vc.data, nc, dtype);
    for (size_t i = 0; i < nq; ++i) store_elem(out.data, i, dtype, NAN);
    unsigned char* kx = (unsigned char*)malloc(nc * es);
    unsigned char* vx = (unsigned char*)malloc(nc * es);
    memcpy(kx, kc.data, nc * es);
    memcpy(vx, vc.data, nc * es);
    const int64_t row_bytes = (int64_t)hkv * d * (int64_t)es;
    for (int64_t b = 0; b < batch; ++b) {
        expect_cache_rows(kx, (const unsigned char*)k.data, b, lens[b], 1, max_seq_len, row_bytes);
        expect_cache_rows(vx, (const unsigned char*)v.data, b, lens[b], 1, max_seq_len, row_bytes);
    }
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
    gqa_status st = gqa_attention_decode(out.data, q.data, k.data, v.data, kc.data, vc.data, &cfg, NULL);
    CHECK(st == GQA_STATUS_OK, "decode status %d: %s", (int)st, gqa_last_error());
    CHECK(guards_intact(&out) && guards_intact(&kc) && guards_intact(&vc), "write outside a buffer");
    CHECK(memcmp(kc.data, kx, nc * es) == 0, "k_cache bytes differ from cache + appended k");
    CHECK(memcmp(vc.data, vx, nc * es) == 0, "v_cache bytes differ from cache + appended v");
    double max_err = 0.0, res[256];
    for (int64_t b = 0; b < batch; ++b) {
        for (int64_t h = 0; h < hq; ++h) {
            size_t off = (size_t)((b * max_seq_len * hkv + h / G) * d);
            strided_view qv = {q.data, dtype, (size_t)((b * hq + h) * d), 0};
            strided_view kv = {kx, dtype, off, (size_t)(hkv * d)}, vv = {vx, dtype, off, (size_t)(hkv * d)};
            reference_row(&qv, &kv, &vv, lens[b] + 1, d, 1.0 / sqrt((double)d), res);
            for (int64_t e = 0; e < d; ++e) {
                double err = fabs(load_elem(out.data, qv.offset + (size_t)e, dtype) - res[e]);
                if (!(err <= max_err)) max_err = err;
            }
        }
    }
    CHECK(max_err <= tolerance(dtype), "decode dtype=%d B=%d H=%d:%d D=%d max=%d splits=%d: max err %.3g",
          dtype, batch, hq, hkv, d, max_seq_len, num_splits, max_err);
    free(kx);
    free(vx);
    guarded_free(&q); guarded_free(&k); guarded_free(&v); guarded_free(&out); guarded_free(&kc); guarded_free(&vc);
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
