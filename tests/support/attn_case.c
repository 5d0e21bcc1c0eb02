/* attn_case.c: see attn_case.h. */
#include "attn_case.h"

void attn_case_prefill(attn_case* c, int32_t dtype, int64_t batch, int64_t seq_len, int64_t hq,
                       int64_t hkv, int64_t d, int64_t max_seq_len, int32_t start_pos, int32_t causal) {
    memset(c, 0, sizeof *c);
    c->dtype = dtype;
    c->batch = batch;
    c->seq_len = seq_len;
    c->num_q_heads = hq;
    c->num_kv_heads = hkv;
    c->head_dim = d;
    c->max_seq_len = max_seq_len;
    c->start_pos = start_pos;
    c->causal = causal;
}

void attn_case_decode(attn_case* c, int32_t dtype, int64_t batch, int64_t hq, int64_t hkv, int64_t d,
                      int64_t max_seq_len, int32_t cache_len, const int32_t* cache_lens) {
    memset(c, 0, sizeof *c);
    c->decode = 1;
    c->dtype = dtype;
    c->batch = batch;
    c->seq_len = 1;
    c->num_q_heads = hq;
    c->num_kv_heads = hkv;
    c->head_dim = d;
    c->max_seq_len = max_seq_len;
    c->cache_len = cache_len;
    c->causal = 1;
    if (cache_lens) {
        c->cache_lens = (int32_t*)malloc((size_t)batch * sizeof(int32_t));
        memcpy(c->cache_lens, cache_lens, (size_t)batch * sizeof(int32_t));
    }
}

int64_t attn_case_start(const attn_case* c, int64_t b) {
    if (c->decode) return c->cache_lens ? c->cache_lens[b] : c->cache_len;
    return c->max_seq_len ? c->start_pos : 0;
}

int64_t attn_case_out_elems(const attn_case* c) {
    return c->batch * c->seq_len * c->num_q_heads * c->head_dim;
}

int64_t attn_case_cache_elems(const attn_case* c) {
    return c->batch * c->max_seq_len * c->num_kv_heads * c->head_dim;
}

void attn_case_alloc(attn_case* c, uint64_t seed) {
    size_t es = dtype_size(c->dtype);
    int64_t n_out = attn_case_out_elems(c);
    int64_t n_kv = c->batch * c->seq_len * c->num_kv_heads * c->head_dim;
    int64_t n_cache = attn_case_cache_elems(c);
    c->q = guarded_alloc((size_t)n_out * es);
    c->out = guarded_alloc((size_t)n_out * es);
    c->k = guarded_alloc((size_t)n_kv * es);
    c->v = guarded_alloc((size_t)n_kv * es);
    c->k_cache = guarded_alloc((size_t)n_cache * es);
    c->v_cache = guarded_alloc((size_t)n_cache * es);
    test_rng rng;
    rng_seed(&rng, seed);
    fill_uniform(&rng, c->dtype, c->q.data, n_out, -1.0, 1.0);
    fill_uniform(&rng, c->dtype, c->k.data, n_kv, -1.0, 1.0);
    fill_uniform(&rng, c->dtype, c->v.data, n_kv, -1.0, 1.0);
    fill_uniform(&rng, c->dtype, c->k_cache.data, n_cache, -1.0, 1.0);
    fill_uniform(&rng, c->dtype, c->v_cache.data, n_cache, -1.0, 1.0);
    fill_value(c->dtype, c->out.data, n_out, NAN); /* unwritten outputs show as NaN */
}

void attn_case_free(attn_case* c) {
    guarded_free(&c->q);
    guarded_free(&c->k);
    guarded_free(&c->v);
    guarded_free(&c->out);
    guarded_free(&c->k_cache);
    guarded_free(&c->v_cache);
    free(c->cache_lens);
    c->cache_lens = NULL;
}

void attn_case_prefill_config(const attn_case* c, gqa_prefill_config* cfg) {
    gqa_prefill_config init = GQA_PREFILL_CONFIG_INIT;
    *cfg = init;
    cfg->dtype = c->dtype;
    cfg->batch_size = (int32_t)c->batch;
    cfg->seq_len = (int32_t)c->seq_len;
    cfg->num_q_heads = (int32_t)c->num_q_heads;
    cfg->num_kv_heads = (int32_t)c->num_kv_heads;
    cfg->head_dim = (int32_t)c->head_dim;
    cfg->max_seq_len = (int32_t)c->max_seq_len;
    cfg->start_pos = c->start_pos;
    cfg->causal = c->causal;
    cfg->scale = c->scale;
}

void attn_case_decode_config(const attn_case* c, gqa_decode_config* cfg) {
    gqa_decode_config init = GQA_DECODE_CONFIG_INIT;
    *cfg = init;
    cfg->dtype = c->dtype;
    cfg->batch_size = (int32_t)c->batch;
    cfg->num_q_heads = (int32_t)c->num_q_heads;
    cfg->num_kv_heads = (int32_t)c->num_kv_heads;
    cfg->head_dim = (int32_t)c->head_dim;
    cfg->max_seq_len = (int32_t)c->max_seq_len;
    cfg->cache_len = c->cache_len;
    cfg->cache_lens = c->cache_lens;
    cfg->scale = c->scale;
    cfg->num_splits = c->num_splits;
}

gqa_status attn_case_run(attn_case* c) {
    void* kc = c->max_seq_len ? c->k_cache.data : NULL;
    void* vc = c->max_seq_len ? c->v_cache.data : NULL;
    if (c->decode) {
        gqa_decode_config cfg;
        attn_case_decode_config(c, &cfg);
        return gqa_attention_decode(c->out.data, c->q.data, c->k.data, c->v.data, kc, vc, &cfg, NULL);
    }
    gqa_prefill_config cfg;
    attn_case_prefill_config(c, &cfg);
    return gqa_attention_prefill(c->out.data, c->q.data, c->k.data, c->v.data, kc, vc, &cfg, NULL);
}

void attn_case_reference(const attn_case* c, double* ref_out, void* exp_k, void* exp_v) {
    attn_case_reference_lse(c, ref_out, NULL, exp_k, exp_v);
}

void attn_case_reference_lse(const attn_case* c, double* ref_out, double* ref_lse, void* exp_k, void* exp_v) {
    const int has_cache = c->max_seq_len > 0;
    int32_t* starts = (int32_t*)test_malloc(sizeof(int32_t) * (size_t)c->batch);
    attn_shape s;
    const void* keys = c->k.data;
    const void* values = c->v.data;
    void* kk = NULL;
    void* vv = NULL;
    int64_t b;
    for (b = 0; b < c->batch; ++b) starts[b] = (int32_t)attn_case_start(c, b);
    s.dtype = c->dtype;
    s.batch = c->batch;
    s.seq_len = c->seq_len;
    s.num_q_heads = c->num_q_heads;
    s.num_kv_heads = c->num_kv_heads;
    s.head_dim = c->head_dim;
    s.kv_rows = has_cache ? c->max_seq_len : c->seq_len;
    s.starts = has_cache ? starts : NULL;
    s.causal = c->causal;
    s.scale = c->scale;
    s.variants = c->variants; /* NULL: the defaults, no window, softcap or sinks */
    /* Keys/values the queries see: the caches after the write, or the new tokens alone. */
    if (has_cache) {
        const size_t cache_bytes = (size_t)attn_case_cache_elems(c) * dtype_size(c->dtype);
        kk = exp_k ? exp_k : test_malloc(cache_bytes);
        vv = exp_v ? exp_v : test_malloc(cache_bytes);
        memcpy(kk, c->k_cache.data, cache_bytes);
        memcpy(vv, c->v_cache.data, cache_bytes);
        append_rows(&s, kk, c->k.data);
        append_rows(&s, vv, c->v.data);
        keys = kk;
        values = vv;
    }
    reference_attention_lse(&s, c->q.data, keys, values, ref_out, ref_lse);
    if (kk != exp_k) free(kk);
    if (vv != exp_v) free(vv);
    free(starts);
}

/* The case's buffers in one order, with their names. */
enum { kBuffers = 6, kInputs = 3 };
static const char* const kBufferNames[kBuffers] = {"q", "k", "v", "out", "k_cache", "v_cache"};
static void buffers(const attn_case* c, guarded_buf* all[kBuffers]) {
    attn_case* m = (attn_case*)c;
    all[0] = &m->q;
    all[1] = &m->k;
    all[2] = &m->v;
    all[3] = &m->out;
    all[4] = &m->k_cache;
    all[5] = &m->v_cache;
}

void attn_case_snapshot(attn_case* c) {
    guarded_buf* all[kBuffers];
    int i;
    buffers(c, all);
    for (i = 0; i < kBuffers; ++i) guarded_snapshot(all[i]);
}

int attn_case_changed(const attn_case* c, const char** which) {
    guarded_buf* all[kBuffers];
    int i, changed = 0;
    buffers(c, all);
    for (i = 0; i < kBuffers; ++i) {
        if (guarded_changed(all[i], NULL)) {
            if (!changed && which) *which = kBufferNames[i];
            ++changed;
        }
    }
    return changed;
}

long attn_case_check(attn_case* c, const char* label, const double* ref_out, const void* exp_k,
                     const void* exp_v) {
    guarded_buf* all[kBuffers];
    const long before = test_failures;
    const double tol = tolerance(c->dtype);
    int64_t worst = -1;
    const double err = max_error(c->dtype, c->out.data, ref_out, attn_case_out_elems(c), &worst);
    int i;
    buffers(c, all);
    CHECK(err <= tol, "%s: out differs from the float64 reference by %g (tolerance %g) at element %lld: got %g, "
          "want %g", label, err, tol, (long long)worst, worst >= 0 ? load_elem(c->dtype, c->out.data, worst) : 0.0,
          worst >= 0 ? ref_out[worst] : 0.0);
    if (c->max_seq_len && exp_k && exp_v) {
        CHECK(memcmp(c->k_cache.data, exp_k, c->k_cache.bytes) == 0,
              "%s: k_cache differs from the expected cache (new k at its positions, the rest untouched)", label);
        CHECK(memcmp(c->v_cache.data, exp_v, c->v_cache.bytes) == 0,
              "%s: v_cache differs from the expected cache (new v at its positions, the rest untouched)", label);
    }
    for (i = 0; i < kInputs; ++i) {
        CHECK(!guarded_changed(all[i], NULL), "%s: input %s was modified", label, kBufferNames[i]);
    }
    for (i = 0; i < kBuffers; ++i) {
        CHECK(guards_intact(all[i]), "%s: a guard band around %s was overwritten", label, kBufferNames[i]);
    }
    return test_failures - before;
}

void attn_expect_take(attn_expect* e, attn_case* c) {
    e->out = (double*)test_malloc((size_t)attn_case_out_elems(c) * sizeof(double));
    e->k_cache = c->max_seq_len ? (uint8_t*)test_malloc(c->k_cache.bytes) : NULL;
    e->v_cache = c->max_seq_len ? (uint8_t*)test_malloc(c->v_cache.bytes) : NULL;
    attn_case_reference(c, e->out, e->k_cache, e->v_cache);
    attn_case_snapshot(c);
}

void attn_expect_free(attn_expect* e) {
    free(e->out);
    free(e->k_cache);
    free(e->v_cache);
    memset(e, 0, sizeof *e);
}

long attn_expect_check(attn_case* c, const attn_expect* e, const char* label) {
    return attn_case_check(c, label, e->out, e->k_cache, e->v_cache);
}
