/* rel_util.c: see rel_util.h. */
#include "rel_util.h"

#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

long rel_checks = 0;
long rel_failures = 0;

void rel_fail(const char* fmt, ...) {
    ++rel_failures;
    va_list ap;
    va_start(ap, fmt);
    fputs("FAIL: ", stderr);
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
    va_end(ap);
}

int rel_summary(const char* name) {
    fprintf(stderr, "%s: %ld checks, %ld failed\n", name, rel_checks, rel_failures);
    return rel_failures ? 1 : 0;
}

/* ---- guarded buffers ------------------------------------------------------------------ */
static uint8_t canary(size_t i) { return (uint8_t)(0xA5u ^ (uint8_t)(i * 31u)); }

void rel_buf_alloc(rel_buf* b, size_t bytes) {
    size_t total = bytes + 2 * REL_GUARD_BYTES;
    b->base = (uint8_t*)malloc(total);
    if (!b->base) {
        fprintf(stderr, "rel_buf_alloc: out of memory (%zu bytes)\n", total);
        exit(2);
    }
    b->data = b->base + REL_GUARD_BYTES;
    b->bytes = bytes;
    b->snap = NULL;
    for (size_t i = 0; i < REL_GUARD_BYTES; ++i) {
        b->base[i] = canary(i);
        b->data[bytes + i] = canary(i + 7);
    }
    memset(b->data, 0, bytes);
}

void rel_buf_free(rel_buf* b) {
    free(b->base);
    free(b->snap);
    memset(b, 0, sizeof *b);
}

int rel_buf_guards_ok(const rel_buf* b) {
    for (size_t i = 0; i < REL_GUARD_BYTES; ++i) {
        if (b->base[i] != canary(i) || b->data[b->bytes + i] != canary(i + 7)) return 0;
    }
    return 1;
}

void rel_buf_snapshot(rel_buf* b) {
    size_t total = b->bytes + 2 * REL_GUARD_BYTES;
    if (!b->snap) b->snap = (uint8_t*)malloc(total);
    if (!b->snap) {
        fprintf(stderr, "rel_buf_snapshot: out of memory\n");
        exit(2);
    }
    memcpy(b->snap, b->base, total);
}

int rel_buf_changed(const rel_buf* b, long long* first_diff) {
    size_t total = b->bytes + 2 * REL_GUARD_BYTES;
    if (!b->snap || memcmp(b->snap, b->base, total) == 0) return 0;
    for (size_t i = 0; i < total; ++i) {
        if (b->snap[i] != b->base[i]) {
            if (first_diff) *first_diff = (long long)i - REL_GUARD_BYTES;
            break;
        }
    }
    return 1;
}

/* ---- dtypes --------------------------------------------------------------------------- */
size_t rel_dtype_size(int32_t dtype) { return dtype == GQA_DTYPE_F32 ? 4 : 2; }

const char* rel_dtype_name(int32_t dtype) {
    return dtype == GQA_DTYPE_F16 ? "f16" : dtype == GQA_DTYPE_BF16 ? "bf16" : "f32";
}

static float f16_bits_to_float(uint16_t h) {
    uint32_t sign = (uint32_t)(h >> 15) << 31, exponent = (h >> 10) & 0x1fu, mantissa = h & 0x3ffu;
    if (exponent == 0) { /* zero or subnormal: mantissa * 2^-24 */
        float f = ldexpf((float)mantissa, -24);
        return sign ? -f : f;
    }
    uint32_t bits = exponent == 31 ? (sign | 0x7f800000u | (mantissa << 13))
                                   : (sign | ((exponent + 112u) << 23) | (mantissa << 13));
    float f;
    memcpy(&f, &bits, 4);
    return f;
}

/* Round-to-nearest-even from the float's bits; handles subnormals, overflow and NaN. */
static uint16_t float_to_f16_bits(float f) {
    uint32_t x;
    memcpy(&x, &f, 4);
    uint32_t sign = (x >> 16) & 0x8000u, exponent = (x >> 23) & 0xffu, mantissa = x & 0x7fffffu;
    if (exponent == 0xff) return (uint16_t)(sign | 0x7c00u | (mantissa ? 0x200u : 0u));
    int e = (int)exponent - 127 + 15;
    if (e >= 31) return (uint16_t)(sign | 0x7c00u);
    if (e <= 0) {
        if (e < -10) return (uint16_t)sign;
        uint32_t m = mantissa | 0x800000u, shift = (uint32_t)(14 - e);
        uint32_t h = m >> shift, rest = m & ((1u << shift) - 1u), half = 1u << (shift - 1u);
        if (rest > half || (rest == half && (h & 1u))) ++h;
        return (uint16_t)(sign | h);
    }
    uint32_t h = sign | ((uint32_t)e << 10) | (mantissa >> 13), rest = mantissa & 0x1fffu;
    if (rest > 0x1000u || (rest == 0x1000u && (h & 1u))) ++h; /* a carry may reach inf: right */
    return (uint16_t)h;
}

static float bf16_bits_to_float(uint16_t h) {
    uint32_t bits = (uint32_t)h << 16;
    float f;
    memcpy(&f, &bits, 4);
    return f;
}

static uint16_t float_to_bf16_bits(float f) {
    uint32_t x;
    memcpy(&x, &f, 4);
    if ((x & 0x7fffffffu) > 0x7f800000u) return (uint16_t)((x >> 16) | 0x40u);
    return (uint16_t)((x + 0x7fffu + ((x >> 16) & 1u)) >> 16);
}

double rel_load(int32_t dtype, const void* base, int64_t i) {
    if (dtype == GQA_DTYPE_F32) return ((const float*)base)[i];
    uint16_t h = ((const uint16_t*)base)[i];
    return dtype == GQA_DTYPE_F16 ? f16_bits_to_float(h) : bf16_bits_to_float(h);
}

void rel_store(int32_t dtype, void* base, int64_t i, double x) {
    float f = (float)x;
    if (dtype == GQA_DTYPE_F32) ((float*)base)[i] = f;
    else if (dtype == GQA_DTYPE_F16) ((uint16_t*)base)[i] = float_to_f16_bits(f);
    else ((uint16_t*)base)[i] = float_to_bf16_bits(f);
}

double rel_tolerance(int32_t dtype) {
    return dtype == GQA_DTYPE_F32 ? 1e-4 : dtype == GQA_DTYPE_F16 ? 4e-3 : 3e-2;
}

/* ---- random numbers ------------------------------------------------------------------- */
void rel_rng_seed(rel_rng* r, uint64_t seed) { r->s = seed * 0x9E3779B97F4A7C15ull + 0x2545F4914F6CDD1Dull; }

uint64_t rel_rng_next(rel_rng* r) {
    r->s ^= r->s >> 12;
    r->s ^= r->s << 25;
    r->s ^= r->s >> 27;
    return r->s * 0x2545F4914F6CDD1Dull;
}

double rel_rng_uniform(rel_rng* r, double lo, double hi) {
    return lo + (hi - lo) * ((double)(rel_rng_next(r) >> 11) * (1.0 / 9007199254740992.0));
}

void rel_fill_uniform(rel_rng* r, int32_t dtype, void* base, int64_t n, double lo, double hi) {
    for (int64_t i = 0; i < n; ++i) rel_store(dtype, base, i, rel_rng_uniform(r, lo, hi));
}

void rel_fill_value(int32_t dtype, void* base, int64_t n, double x) {
    for (int64_t i = 0; i < n; ++i) rel_store(dtype, base, i, x);
}

/* ---- one attention case --------------------------------------------------------------- */
void rel_case_prefill(rel_case* c, int32_t dtype, int64_t batch, int64_t seq_len, int64_t hq,
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

void rel_case_decode(rel_case* c, int32_t dtype, int64_t batch, int64_t hq, int64_t hkv, int64_t d,
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

int64_t rel_case_start(const rel_case* c, int64_t b) {
    if (c->decode) return c->cache_lens ? c->cache_lens[b] : c->cache_len;
    return c->max_seq_len ? c->start_pos : 0;
}

int64_t rel_case_out_elems(const rel_case* c) {
    return c->batch * c->seq_len * c->num_q_heads * c->head_dim;
}

int64_t rel_case_cache_elems(const rel_case* c) {
    return c->batch * c->max_seq_len * c->num_kv_heads * c->head_dim;
}

void rel_case_alloc(rel_case* c, uint64_t seed) {
    size_t es = rel_dtype_size(c->dtype);
    int64_t n_out = rel_case_out_elems(c);
    int64_t n_kv = c->batch * c->seq_len * c->num_kv_heads * c->head_dim;
    int64_t n_cache = rel_case_cache_elems(c);
    rel_buf_alloc(&c->q, (size_t)n_out * es);
    rel_buf_alloc(&c->out, (size_t)n_out * es);
    rel_buf_alloc(&c->k, (size_t)n_kv * es);
    rel_buf_alloc(&c->v, (size_t)n_kv * es);
    rel_buf_alloc(&c->k_cache, (size_t)n_cache * es);
    rel_buf_alloc(&c->v_cache, (size_t)n_cache * es);
    rel_rng rng;
    rel_rng_seed(&rng, seed);
    rel_fill_uniform(&rng, c->dtype, c->q.data, n_out, -1.0, 1.0);
    rel_fill_uniform(&rng, c->dtype, c->k.data, n_kv, -1.0, 1.0);
    rel_fill_uniform(&rng, c->dtype, c->v.data, n_kv, -1.0, 1.0);
    rel_fill_uniform(&rng, c->dtype, c->k_cache.data, n_cache, -1.0, 1.0);
    rel_fill_uniform(&rng, c->dtype, c->v_cache.data, n_cache, -1.0, 1.0);
    rel_fill_value(c->dtype, c->out.data, n_out, NAN); /* unwritten outputs show as NaN */
}

void rel_case_free(rel_case* c) {
    rel_buf_free(&c->q);
    rel_buf_free(&c->k);
    rel_buf_free(&c->v);
    rel_buf_free(&c->out);
    rel_buf_free(&c->k_cache);
    rel_buf_free(&c->v_cache);
    free(c->cache_lens);
    c->cache_lens = NULL;
}

void rel_case_prefill_config(const rel_case* c, gqa_prefill_config* cfg) {
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

void rel_case_decode_config(const rel_case* c, gqa_decode_config* cfg) {
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

gqa_status rel_case_run(rel_case* c) {
    void* kc = c->max_seq_len ? c->k_cache.data : NULL;
    void* vc = c->max_seq_len ? c->v_cache.data : NULL;
    if (c->decode) {
        gqa_decode_config cfg;
        rel_case_decode_config(c, &cfg);
        return gqa_attention_decode(c->out.data, c->q.data, c->k.data, c->v.data, kc, vc, &cfg, NULL);
    }
    gqa_prefill_config cfg;
    rel_case_prefill_config(c, &cfg);
    return gqa_attention_prefill(c->out.data, c->q.data, c->k.data, c->v.data, kc, vc, &cfg, NULL);
}

void rel_case_reference(const rel_case* c, double* ref_out, void* exp_k, void* exp_v) {
    const int32_t dt = c->dtype;
    const int64_t S = c->seq_len, Hq = c->num_q_heads, Hkv = c->num_kv_heads, D = c->head_dim;
    const int64_t G = Hq / Hkv, T = c->max_seq_len;
    const size_t es = rel_dtype_size(dt);
    const double scale = c->scale != 0.0f ? (double)c->scale : 1.0 / sqrt((double)D);
    const int has_cache = T > 0;

    /* Keys/values the queries see: the caches after the write, or the new tokens alone. */
    void* kk = NULL;
    void* vv = NULL;
    int64_t positions = S;
    if (has_cache) {
        size_t cache_bytes = (size_t)rel_case_cache_elems(c) * es;
        kk = exp_k ? exp_k : malloc(cache_bytes);
        vv = exp_v ? exp_v : malloc(cache_bytes);
        memcpy(kk, c->k_cache.data, cache_bytes);
        memcpy(vv, c->v_cache.data, cache_bytes);
        for (int64_t b = 0; b < c->batch; ++b) {
            for (int64_t i = 0; i < S; ++i) {
                int64_t dst = ((b * T + rel_case_start(c, b) + i) * Hkv) * D * (int64_t)es;
                int64_t src = ((b * S + i) * Hkv) * D * (int64_t)es;
                memcpy((uint8_t*)kk + dst, (const uint8_t*)c->k.data + src, (size_t)(Hkv * D) * es);
                memcpy((uint8_t*)vv + dst, (const uint8_t*)c->v.data + src, (size_t)(Hkv * D) * es);
            }
        }
        positions = T;
    } else {
        kk = c->k.data;
        vv = c->v.data;
    }

    int64_t max_keys = has_cache ? T : S;
    double* logits = (double*)malloc((size_t)max_keys * sizeof(double));
    for (int64_t b = 0; b < c->batch; ++b) {
        int64_t start = rel_case_start(c, b);
        for (int64_t i = 0; i < S; ++i) {
            int64_t last = c->causal ? start + i : start + S - 1;
            for (int64_t h = 0; h < Hq; ++h) {
                int64_t kvh = h / G;
                int64_t qoff = ((b * S + i) * Hq + h) * D;
                double m = -INFINITY;
                for (int64_t j = 0; j <= last; ++j) {
                    int64_t koff = ((b * positions + j) * Hkv + kvh) * D;
                    double dot = 0.0;
                    for (int64_t d = 0; d < D; ++d) dot += rel_load(dt, c->q.data, qoff + d) * rel_load(dt, kk, koff + d);
                    logits[j] = dot * scale;
                    if (logits[j] > m) m = logits[j]; /* a NaN logit makes the row NaN below */
                }
                double denom = 0.0;
                for (int64_t j = 0; j <= last; ++j) {
                    logits[j] = exp(logits[j] - m);
                    denom += logits[j];
                }
                for (int64_t d = 0; d < D; ++d) {
                    double acc = 0.0;
                    for (int64_t j = 0; j <= last; ++j) {
                        int64_t voff = ((b * positions + j) * Hkv + kvh) * D;
                        acc += logits[j] * rel_load(dt, vv, voff + d);
                    }
                    ref_out[qoff + d] = acc / denom;
                }
            }
        }
    }
    free(logits);
    if (has_cache) {
        if (!exp_k) free(kk);
        if (!exp_v) free(vv);
    }
}

void rel_case_snapshot(rel_case* c) {
    rel_buf_snapshot(&c->q);
    rel_buf_snapshot(&c->k);
    rel_buf_snapshot(&c->v);
    rel_buf_snapshot(&c->out);
    rel_buf_snapshot(&c->k_cache);
    rel_buf_snapshot(&c->v_cache);
}

int rel_case_changed(const rel_case* c, const char** which) {
    const rel_buf* bufs[] = {&c->q, &c->k, &c->v, &c->out, &c->k_cache, &c->v_cache};
    static const char* names[] = {"q", "k", "v", "out", "k_cache", "v_cache"};
    int changed = 0;
    for (int i = 0; i < 6; ++i) {
        if (rel_buf_changed(bufs[i], NULL)) {
            if (!changed && which) *which = names[i];
            ++changed;
        }
    }
    return changed;
}

long rel_case_check(rel_case* c, const char* label, const double* ref_out, const void* exp_k,
                    const void* exp_v) {
    long before = rel_failures;
    const double tol = rel_tolerance(c->dtype);
    int64_t n = rel_case_out_elems(c), worst = -1;
    double max_err = 0.0;
    for (int64_t i = 0; i < n; ++i) {
        double got = rel_load(c->dtype, c->out.data, i);
        double err = fabs(got - ref_out[i]);
        if (!(err <= max_err)) { /* NaN-aware: a NaN error always becomes the worst */
            max_err = err;
            worst = i;
            if (err != err) break;
        }
    }
    REL_CHECK(max_err <= tol, "%s: out differs from the float64 reference by %g (tolerance %g) at "
              "element %lld: got %g, want %g", label, max_err, tol, (long long)worst,
              worst >= 0 ? rel_load(c->dtype, c->out.data, worst) : 0.0, worst >= 0 ? ref_out[worst] : 0.0);
    if (c->max_seq_len && exp_k && exp_v) {
        REL_CHECK(memcmp(c->k_cache.data, exp_k, c->k_cache.bytes) == 0,
                  "%s: k_cache differs from the expected cache (new k at its positions, the rest untouched)", label);
        REL_CHECK(memcmp(c->v_cache.data, exp_v, c->v_cache.bytes) == 0,
                  "%s: v_cache differs from the expected cache (new v at its positions, the rest untouched)", label);
    }
    const rel_buf* inputs[] = {&c->q, &c->k, &c->v};
    static const char* input_names[] = {"q", "k", "v"};
    for (int i = 0; i < 3; ++i) {
        REL_CHECK(!rel_buf_changed(inputs[i], NULL), "%s: input %s was modified", label, input_names[i]);
    }
    const rel_buf* all[] = {&c->q, &c->k, &c->v, &c->out, &c->k_cache, &c->v_cache};
    static const char* all_names[] = {"q", "k", "v", "out", "k_cache", "v_cache"};
    for (int i = 0; i < 6; ++i) {
        REL_CHECK(rel_buf_guards_ok(all[i]), "%s: a guard band around %s was overwritten", label, all_names[i]);
    }
    return rel_failures - before;
}
