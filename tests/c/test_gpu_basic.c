/* test_gpu_basic.c: the CUDA backend through the C ABI, each tensor its own cudaMalloc, against
 * the float64 host reference: prefill with a cached prefix (chunked prefill) and without caches,
 * decode with per-sequence cache lengths, split-KV (explicit, automatic, none), rejected calls
 * that must write nothing. Cache rows that must not be read hold NaN. Exits 77 (skipped) when
 * no CUDA device is usable. Small enough to run under compute-sanitizer. */
#include <cuda_runtime_api.h>

#include "test_util.h"

#define CUDA_OK(call)                                                                          \
    do {                                                                                       \
        cudaError_t e_ = (call);                                                               \
        if (e_ != cudaSuccess) {                                                               \
            fprintf(stderr, "%s:%d: %s failed: %s\n", __FILE__, __LINE__, #call,               \
                    cudaGetErrorString(e_));                                                   \
            exit(1);                                                                           \
        }                                                                                      \
    } while (0)

static double tol(int32_t dtype) { return dtype == GQA_DTYPE_F16 ? 4e-3 : 3e-2; }
static const char* dname(int32_t dtype) { return dtype == GQA_DTYPE_F16 ? "f16" : "bf16"; }

/* A device copy of `bytes` host bytes in an allocation of `capacity` >= bytes (fully initialised). */
static void* to_device_cap(const void* host, size_t bytes, size_t capacity) {
    void* d = NULL;
    CUDA_OK(cudaMalloc(&d, capacity));
    CUDA_OK(cudaMemset(d, 0, capacity));
    CUDA_OK(cudaMemcpy(d, host, bytes, cudaMemcpyHostToDevice));
    return d;
}
static void* to_device(const void* host, size_t bytes) { return to_device_cap(host, bytes, bytes); }
static void to_host(void* host, const void* dev, size_t bytes) {
    CUDA_OK(cudaDeviceSynchronize());
    CUDA_OK(cudaMemcpy(host, dev, bytes, cudaMemcpyDeviceToHost));
}
static void* host_alloc(size_t bytes) {
    void* p = malloc(bytes ? bytes : 1);
    if (!p) {
        fprintf(stderr, "out of host memory\n");
        exit(2);
    }
    return p;
}
static void fill_nan(void* base, size_t n, int32_t dtype) {
    for (size_t i = 0; i < n; ++i) store_elem(base, i, dtype, NAN);
}

/* Largest |out - reference| over all rows; query row (b, s, h) sees cache rows 0 .. last(b, s)
 * of `cache` (the expected cache after the call, new rows included). */
typedef struct {
    int32_t dtype, batch, seq_len, hq, hkv, hd, max_seq;
    const int32_t* starts; /* per sequence */
    int32_t causal;
} shape;

static double max_error(const shape* c, const void* q, const void* kc, const void* vc, const void* out,
                        double scale) {
    const int64_t G = c->hq / c->hkv, D = c->hd;
    double worst = 0.0;
    double* res = (double*)host_alloc(sizeof(double) * (size_t)D);
    for (int64_t b = 0; b < c->batch; ++b) {
        for (int64_t s = 0; s < c->seq_len; ++s) {
            for (int64_t h = 0; h < c->hq; ++h) {
                const int64_t kvh = h / G;
                strided_view qv = {q, c->dtype, (size_t)(((b * c->seq_len + s) * c->hq + h) * D), 0};
                strided_view kv = {kc, c->dtype, (size_t)((b * c->max_seq * c->hkv + kvh) * D),
                                   (size_t)(c->hkv * D)};
                strided_view vv = {vc, c->dtype, kv.offset, kv.row_stride};
                const int64_t n_keys = c->causal ? c->starts[b] + s + 1 : c->starts[b] + c->seq_len;
                reference_row(&qv, &kv, &vv, n_keys, D, scale, res);
                for (int64_t d = 0; d < D; ++d) {
                    const float got = load_elem(out, (size_t)(((b * c->seq_len + s) * c->hq + h) * D + d), c->dtype);
                    const double err = got == got ? fabs(got - res[d]) : INFINITY;
                    if (err > worst) worst = err;
                }
            }
        }
    }
    free(res);
    return worst;
}

/* Expected cache after writing n new rows per sequence at starts[b]. */
static void expect_rows(unsigned char* cache, const unsigned char* rows, const shape* c, int32_t n) {
    const size_t row_bytes = (size_t)c->hkv * (size_t)c->hd * 2;
    for (int64_t b = 0; b < c->batch; ++b)
        memcpy(cache + ((size_t)b * (size_t)c->max_seq + (size_t)c->starts[b]) * row_bytes,
               rows + (size_t)b * (size_t)n * row_bytes, (size_t)n * row_bytes);
}

/* ---- prefill --------------------------------------------------------------------------- */
static void test_prefill(int32_t dtype, int32_t hd, int32_t with_cache, int32_t causal) {
    int32_t starts[2] = {with_cache ? 5 : 0, with_cache ? 5 : 0};
    shape c = {dtype, 2, 37, 6, 2, hd, with_cache ? 64 : 37, starts, causal};
    const size_t nq = (size_t)c.batch * c.seq_len * c.hq * hd;
    const size_t nk = (size_t)c.batch * c.seq_len * c.hkv * hd;
    const size_t nc = (size_t)c.batch * c.max_seq * c.hkv * hd;
    void *q = host_alloc(nq * 2), *k = host_alloc(nk * 2), *v = host_alloc(nk * 2), *out = host_alloc(nq * 2);
    unsigned char *kc = (unsigned char*)host_alloc(nc * 2), *vc = (unsigned char*)host_alloc(nc * 2);
    unsigned char *kc_got = (unsigned char*)host_alloc(nc * 2), *vc_got = (unsigned char*)host_alloc(nc * 2);
    fill_random(q, nq, dtype);
    fill_random(k, nk, dtype);
    fill_random(v, nk, dtype);
    fill_nan(out, nq, dtype);
    /* Cached prefix random; every row from the start on NaN: it must be written, never read. */
    fill_nan(kc, nc, dtype);
    fill_nan(vc, nc, dtype);
    const size_t row = (size_t)c.hkv * hd;
    for (int64_t b = 0; b < c.batch; ++b) {
        fill_random(kc + (size_t)b * c.max_seq * row * 2, (size_t)starts[b] * row, dtype);
        fill_random(vc + (size_t)b * c.max_seq * row * 2, (size_t)starts[b] * row, dtype);
    }
    void *dq = to_device(q, nq * 2), *dk = to_device(k, nk * 2), *dv = to_device(v, nk * 2);
    void* dout = to_device(out, nq * 2);
    void *dkc = to_device(kc, nc * 2), *dvc = to_device(vc, nc * 2);

    gqa_prefill_config cfg = GQA_PREFILL_CONFIG_INIT;
    cfg.dtype = dtype;
    cfg.device = GQA_DEVICE_CUDA;
    cfg.batch_size = c.batch;
    cfg.seq_len = c.seq_len;
    cfg.num_q_heads = c.hq;
    cfg.num_kv_heads = c.hkv;
    cfg.head_dim = hd;
    cfg.max_seq_len = with_cache ? c.max_seq : 0;
    cfg.start_pos = starts[0];
    cfg.causal = causal;
    gqa_status st = gqa_attention_prefill(dout, dq, dk, dv, with_cache ? dkc : NULL,
                                          with_cache ? dvc : NULL, &cfg, NULL);
    CHECK(st == GQA_STATUS_OK, "prefill %s hd%d cache=%d: %s", dname(dtype), hd, with_cache, gqa_last_error());
    to_host(out, dout, nq * 2);
    double err;
    if (with_cache) {
        to_host(kc_got, dkc, nc * 2);
        to_host(vc_got, dvc, nc * 2);
        expect_rows(kc, (const unsigned char*)k, &c, c.seq_len);
        expect_rows(vc, (const unsigned char*)v, &c, c.seq_len);
        CHECK(memcmp(kc, kc_got, nc * 2) == 0, "prefill %s hd%d: k_cache bytes differ from expected", dname(dtype), hd);
        CHECK(memcmp(vc, vc_got, nc * 2) == 0, "prefill %s hd%d: v_cache bytes differ from expected", dname(dtype), hd);
        err = max_error(&c, q, kc, vc, out, 1.0 / sqrt((double)hd));
    } else {
        /* Without caches the keys are k itself: view k as a cache of max_seq = seq_len. */
        err = max_error(&c, q, k, v, out, 1.0 / sqrt((double)hd));
    }
    CHECK(err <= tol(dtype), "prefill %s hd%d cache=%d causal=%d: max error %g", dname(dtype), hd,
          with_cache, causal, err);
    fprintf(stderr, "prefill %s hd%d cache=%d causal=%d: max error %.3g\n", dname(dtype), hd, with_cache,
            causal, err);

    cudaFree(dq); cudaFree(dk); cudaFree(dv); cudaFree(dout); cudaFree(dkc); cudaFree(dvc);
    free(q); free(k); free(v); free(out); free(kc); free(vc); free(kc_got); free(vc_got);
}

/* ---- decode ---------------------------------------------------------------------------- */
/* Runs one decode with the given split request on fresh device copies of the caches; returns
 * the output (host, caller frees) and checks the caches. */
static void* run_decode(const shape* c, const void* q, const void* k, const void* v, const unsigned char* kc,
                        const unsigned char* vc, int32_t num_splits, int32_t with_workspace) {
    const size_t nq = (size_t)c->batch * c->hq * c->hd, nk = (size_t)c->batch * c->hkv * c->hd;
    const size_t nc = (size_t)c->batch * c->max_seq * c->hkv * c->hd;
    void* out = host_alloc(nq * 2);
    fill_nan(out, nq, c->dtype);
    void *dq = to_device(q, nq * 2), *dk = to_device(k, nk * 2), *dv = to_device(v, nk * 2);
    void* dout = to_device(out, nq * 2);
    void *dkc = to_device(kc, nc * 2), *dvc = to_device(vc, nc * 2);

    gqa_decode_config cfg = GQA_DECODE_CONFIG_INIT;
    cfg.dtype = c->dtype;
    cfg.device = GQA_DEVICE_CUDA;
    cfg.batch_size = c->batch;
    cfg.num_q_heads = c->hq;
    cfg.num_kv_heads = c->hkv;
    cfg.head_dim = c->hd;
    cfg.max_seq_len = c->max_seq;
    cfg.cache_lens = c->starts;
    cfg.num_splits = num_splits;
    void* ws = NULL;
    if (with_workspace) {
        uint64_t bytes = 0;
        gqa_status st = gqa_decode_workspace_size(&cfg, &bytes);
        CHECK(st == GQA_STATUS_OK, "workspace size: %s", gqa_last_error());
        if (bytes) {
            CUDA_OK(cudaMalloc(&ws, (size_t)bytes));
            cfg.workspace = ws;
            cfg.workspace_bytes = bytes;
        }
    }
    gqa_status st = gqa_attention_decode(dout, dq, dk, dv, dkc, dvc, &cfg, NULL);
    CHECK(st == GQA_STATUS_OK, "decode %s hd%d splits=%d: %s", dname(c->dtype), c->hd, num_splits, gqa_last_error());
    to_host(out, dout, nq * 2);

    unsigned char *kc_want = (unsigned char*)host_alloc(nc * 2), *vc_want = (unsigned char*)host_alloc(nc * 2);
    unsigned char *got = (unsigned char*)host_alloc(nc * 2);
    memcpy(kc_want, kc, nc * 2);
    memcpy(vc_want, vc, nc * 2);
    expect_rows(kc_want, (const unsigned char*)k, c, 1);
    expect_rows(vc_want, (const unsigned char*)v, c, 1);
    to_host(got, dkc, nc * 2);
    CHECK(memcmp(got, kc_want, nc * 2) == 0, "decode %s hd%d: k_cache bytes differ", dname(c->dtype), c->hd);
    to_host(got, dvc, nc * 2);
    CHECK(memcmp(got, vc_want, nc * 2) == 0, "decode %s hd%d: v_cache bytes differ", dname(c->dtype), c->hd);
    free(kc_want); free(vc_want); free(got);
    cudaFree(dq); cudaFree(dk); cudaFree(dv); cudaFree(dout); cudaFree(dkc); cudaFree(dvc);
    if (ws) cudaFree(ws);
    return out;
}

static void test_decode(int32_t dtype, int32_t batch, int32_t hq, int32_t hkv, int32_t hd, int32_t max_seq,
                        const int32_t* cache_lens, int32_t explicit_splits) {
    shape c = {dtype, batch, 1, hq, hkv, hd, max_seq, cache_lens, 1};
    const size_t nq = (size_t)batch * hq * hd, nk = (size_t)batch * hkv * hd;
    const size_t nc = (size_t)batch * max_seq * hkv * hd, row = (size_t)hkv * hd;
    void *q = host_alloc(nq * 2), *k = host_alloc(nk * 2), *v = host_alloc(nk * 2);
    unsigned char *kc = (unsigned char*)host_alloc(nc * 2), *vc = (unsigned char*)host_alloc(nc * 2);
    fill_random(q, nq, dtype);
    fill_random(k, nk, dtype);
    fill_random(v, nk, dtype);
    fill_nan(kc, nc, dtype); /* rows >= cache_len: written (one) or never read (the rest) */
    fill_nan(vc, nc, dtype);
    for (int64_t b = 0; b < batch; ++b) {
        fill_random(kc + (size_t)b * max_seq * row * 2, (size_t)cache_lens[b] * row, dtype);
        fill_random(vc + (size_t)b * max_seq * row * 2, (size_t)cache_lens[b] * row, dtype);
    }
    unsigned char *kc_after = (unsigned char*)host_alloc(nc * 2), *vc_after = (unsigned char*)host_alloc(nc * 2);
    memcpy(kc_after, kc, nc * 2);
    memcpy(vc_after, vc, nc * 2);
    expect_rows(kc_after, (const unsigned char*)k, &c, 1);
    expect_rows(vc_after, (const unsigned char*)v, &c, 1);

    void* none = run_decode(&c, q, k, v, kc, vc, 1, 0);
    void* autos = run_decode(&c, q, k, v, kc, vc, 0, 1);
    void* split = run_decode(&c, q, k, v, kc, vc, explicit_splits, 1);
    const double scale = 1.0 / sqrt((double)hd);
    const double e_none = max_error(&c, q, kc_after, vc_after, none, scale);
    const double e_auto = max_error(&c, q, kc_after, vc_after, autos, scale);
    const double e_split = max_error(&c, q, kc_after, vc_after, split, scale);
    CHECK(e_none <= tol(dtype), "decode %s hd%d no split: max error %g", dname(dtype), hd, e_none);
    CHECK(e_auto <= tol(dtype), "decode %s hd%d auto split: max error %g", dname(dtype), hd, e_auto);
    CHECK(e_split <= tol(dtype), "decode %s hd%d %d splits: max error %g", dname(dtype), hd, explicit_splits, e_split);
    fprintf(stderr, "decode %s %d:%d hd%d batch %d: max error none %.3g auto %.3g split(%d) %.3g\n", dname(dtype),
            hq, hkv, hd, batch, e_none, e_auto, explicit_splits, e_split);
    free(none); free(autos); free(split);
    free(q); free(k); free(v); free(kc); free(vc); free(kc_after); free(vc_after);
}

/* ---- rejected calls write nothing -------------------------------------------------------- */
static void test_rejections(void) {
    const int32_t hd = 64, hq = 4, hkv = 2, max_seq = 16, S = 3;
    const size_t nq = (size_t)S * hq * hd, nk = (size_t)S * hkv * hd, nc = (size_t)max_seq * hkv * hd;
    void *q = host_alloc(nq * 2), *k = host_alloc(nk * 2), *out = host_alloc(nq * 2);
    unsigned char *kc = (unsigned char*)host_alloc(nc * 2), *got = (unsigned char*)host_alloc(nc * 2);
    fill_random(q, nq, GQA_DTYPE_F16);
    fill_random(k, nk, GQA_DTYPE_F16);
    fill_nan(out, nq, GQA_DTYPE_F16);
    fill_random(kc, nc, GQA_DTYPE_F16);
    /* Room for f32 elements, so that the f32 call below is rejected for its dtype alone. */
    void *dq = to_device_cap(q, nq * 2, nq * 4), *dk = to_device_cap(k, nk * 2, nk * 4);
    void *dv = to_device_cap(k, nk * 2, nk * 4), *dout = to_device_cap(out, nq * 2, nq * 4);
    void *dkc = to_device_cap(kc, nc * 2, nc * 4), *dvc = to_device_cap(kc, nc * 2, nc * 4);

    gqa_prefill_config cfg = GQA_PREFILL_CONFIG_INIT;
    cfg.device = GQA_DEVICE_CUDA;
    cfg.batch_size = 1;
    cfg.seq_len = S;
    cfg.num_q_heads = hq;
    cfg.num_kv_heads = hkv;
    cfg.head_dim = hd;
    cfg.max_seq_len = max_seq;
    cfg.start_pos = 2;

    gqa_status st = gqa_attention_prefill(dout, q /* host */, dk, dv, dkc, dvc, &cfg, NULL);
    CHECK(st == GQA_STATUS_INVALID_ARGUMENT, "host q accepted on CUDA: status %d", (int)st);
    CHECK(strstr(gqa_last_error(), "q") != NULL, "message does not name q: %s", gqa_last_error());
    cfg.dtype = GQA_DTYPE_F32;
    st = gqa_attention_prefill(dout, dq, dk, dv, dkc, dvc, &cfg, NULL);
    CHECK(st == GQA_STATUS_UNSUPPORTED, "f32 on CUDA: status %d", (int)st);
    cfg.dtype = GQA_DTYPE_F16;
    cfg.start_pos = max_seq - S + 1; /* overflows the cache */
    st = gqa_attention_prefill(dout, dq, dk, dv, dkc, dvc, &cfg, NULL);
    CHECK(st == GQA_STATUS_CACHE_OVERFLOW, "cache overflow: status %d", (int)st);
    cfg.start_pos = 2;
    cfg.head_dim = 48; /* valid on the CPU, no CUDA kernel */
    cfg.num_q_heads = 2;
    cfg.num_kv_heads = 1;
    st = gqa_attention_prefill(dout, dq, dk, dv, dkc, dvc, &cfg, NULL);
    CHECK(st == GQA_STATUS_UNSUPPORTED, "head_dim 48 on CUDA: status %d", (int)st);

    to_host(got, dout, nq * 2);
    CHECK(memcmp(got, out, nq * 2) == 0, "a rejected call wrote out");
    to_host(got, dkc, nc * 2);
    CHECK(memcmp(got, kc, nc * 2) == 0, "a rejected call wrote k_cache");
    to_host(got, dvc, nc * 2);
    CHECK(memcmp(got, kc, nc * 2) == 0, "a rejected call wrote v_cache");
    cudaFree(dq); cudaFree(dk); cudaFree(dv); cudaFree(dout); cudaFree(dkc); cudaFree(dvc);
    free(q); free(k); free(out); free(kc); free(got);
}

int main(void) {
    /* test_util.h helpers this test does not use (they are static, and -Werror is on). */
    (void)guarded_alloc;
    (void)guards_intact;
    (void)guarded_free;
    (void)dtype_size;
    int count = 0;
    if (gqa_cuda_available() != GQA_STATUS_OK || cudaGetDeviceCount(&count) != cudaSuccess || count == 0) {
        fprintf(stderr, "test_gpu_basic: skipped, no usable CUDA device (%s)\n", gqa_last_error());
        return 77;
    }
    const int32_t dtypes[2] = {GQA_DTYPE_F16, GQA_DTYPE_BF16};
    for (int i = 0; i < 2; ++i) {
        test_prefill(dtypes[i], 128, 1, 1);
        test_prefill(dtypes[i], 80, 1, 0);
        test_prefill(dtypes[i], 256, 0, 1);
        test_prefill(dtypes[i], 64, 0, 0);
    }
    const int32_t lens_a[2] = {42, 3};
    const int32_t lens_b[1] = {1500};
    const int32_t lens_c[3] = {0, 100, 255};
    test_decode(GQA_DTYPE_F16, 2, 6, 2, 128, 64, lens_a, 4);    /* empty splits */
    test_decode(GQA_DTYPE_BF16, 1, 8, 1, 64, 2048, lens_b, 3);  /* MQA, many tiles per split */
    test_decode(GQA_DTYPE_F16, 3, 32, 2, 96, 256, lens_c, 2);   /* G = 16: two head groups */
    test_decode(GQA_DTYPE_BF16, 2, 14, 2, 80, 64, lens_a, 5);   /* G = 7 */
    test_rejections();
    return test_summary("test_gpu_basic");
}
