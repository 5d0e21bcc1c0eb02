/* test_gpu_basic.c: the CUDA backend through the C ABI, each tensor its own cudaMalloc, against
 * the float64 host reference: prefill with a cached prefix (chunked prefill) and without caches,
 * the variants (window, softcap, sinks, lse), decode with per-sequence cache lengths, split-KV
 * (explicit, automatic, none), rejected calls that must write nothing. Cache rows that must not be read hold NaN. Exits 77 (skipped) when
 * no CUDA device is usable. Small enough to run under compute-sanitizer. */
#include <cuda_runtime_api.h>

#include "gqa_test.h"

#define CUDA_OK(call)                                                                          \
    do {                                                                                       \
        cudaError_t e_ = (call);                                                               \
        if (e_ != cudaSuccess) {                                                               \
            fprintf(stderr, "%s:%d: %s failed: %s\n", __FILE__, __LINE__, #call,               \
                    cudaGetErrorString(e_));                                                   \
            exit(1);                                                                           \
        }                                                                                      \
    } while (0)

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

/* ---- prefill --------------------------------------------------------------------------- */
/* var (optional): window, softcap and sinks of the call, which then also writes the lse. */
static void test_prefill(int32_t dtype, int32_t hd, int32_t with_cache, int32_t causal, const attn_variants* var) {
    int32_t starts[2] = {with_cache ? 5 : 0, with_cache ? 5 : 0};
    attn_shape c = {dtype, 2, 37, 6, 2, hd, with_cache ? 64 : 37, starts, causal, 0.0, var};
    const size_t nq = (size_t)c.batch * c.seq_len * c.num_q_heads * hd;
    const size_t nk = (size_t)c.batch * c.seq_len * c.num_kv_heads * hd;
    const size_t nc = (size_t)c.batch * c.kv_rows * c.num_kv_heads * hd;
    void *q = test_malloc(nq * 2), *k = test_malloc(nk * 2), *v = test_malloc(nk * 2), *out = test_malloc(nq * 2);
    unsigned char *kc = (unsigned char*)test_malloc(nc * 2), *vc = (unsigned char*)test_malloc(nc * 2);
    unsigned char *kc_got = (unsigned char*)test_malloc(nc * 2), *vc_got = (unsigned char*)test_malloc(nc * 2);
    fill_random(dtype, q, nq);
    fill_random(dtype, k, nk);
    fill_random(dtype, v, nk);
    fill_value(dtype, out, nq, NAN);
    /* Cached prefix random; every row from the start on NaN: it must be written, never read. */
    fill_value(dtype, kc, nc, NAN);
    fill_value(dtype, vc, nc, NAN);
    const size_t row = (size_t)c.num_kv_heads * hd;
    for (int64_t b = 0; b < c.batch; ++b) {
        fill_random(dtype, kc + (size_t)b * c.kv_rows * row * 2, (size_t)starts[b] * row);
        fill_random(dtype, vc + (size_t)b * c.kv_rows * row * 2, (size_t)starts[b] * row);
    }
    void *dq = to_device(q, nq * 2), *dk = to_device(k, nk * 2), *dv = to_device(v, nk * 2);
    void* dout = to_device(out, nq * 2);
    void *dkc = to_device(kc, nc * 2), *dvc = to_device(vc, nc * 2);

    gqa_prefill_config cfg = GQA_PREFILL_CONFIG_INIT;
    cfg.dtype = dtype;
    cfg.device = GQA_DEVICE_CUDA;
    cfg.batch_size = c.batch;
    cfg.seq_len = c.seq_len;
    cfg.num_q_heads = c.num_q_heads;
    cfg.num_kv_heads = c.num_kv_heads;
    cfg.head_dim = hd;
    cfg.max_seq_len = with_cache ? c.kv_rows : 0;
    cfg.start_pos = starts[0];
    cfg.causal = causal;
    const size_t nl = (size_t)c.batch * c.num_q_heads * c.seq_len;
    float* lse = (float*)test_malloc(nl * sizeof(float));
    for (size_t i = 0; i < nl; ++i) lse[i] = NAN;
    void *dlse = NULL, *dsinks = NULL;
    if (var) {
        cfg.window_left = var->window_left;
        cfg.window_right = var->window_right;
        cfg.softcap = (float)var->softcap;
        if (var->sinks) cfg.sinks = dsinks = to_device(var->sinks, (size_t)c.num_q_heads * sizeof(float));
        cfg.lse = dlse = to_device(lse, nl * sizeof(float));
    }
    gqa_status st = gqa_attention_prefill(dout, dq, dk, dv, with_cache ? dkc : NULL,
                                          with_cache ? dvc : NULL, &cfg, NULL);
    CHECK(st == GQA_STATUS_OK, "prefill %s hd%d cache=%d: %s", dtype_name(dtype), hd, with_cache, gqa_last_error());
    to_host(out, dout, nq * 2);
    if (dlse) to_host(lse, dlse, nl * sizeof(float));
    double* ref = (double*)test_malloc(nq * sizeof(double));
    double* ref_lse = (double*)test_malloc(nl * sizeof(double));
    if (with_cache) {
        to_host(kc_got, dkc, nc * 2);
        to_host(vc_got, dvc, nc * 2);
        append_rows(&c, kc, k);
        append_rows(&c, vc, v);
        CHECK(memcmp(kc, kc_got, nc * 2) == 0, "prefill %s hd%d: k_cache bytes differ from expected", dtype_name(dtype), hd);
        CHECK(memcmp(vc, vc_got, nc * 2) == 0, "prefill %s hd%d: v_cache bytes differ from expected", dtype_name(dtype), hd);
        reference_attention_lse(&c, q, kc, vc, ref, ref_lse);
    } else {
        /* Without caches the keys are k itself: a "cache" of kv_rows = seq_len rows. */
        reference_attention_lse(&c, q, k, v, ref, ref_lse);
    }
    const double err = max_error(dtype, out, ref, (int64_t)nq, NULL);
    double lse_err = 0.0;
    for (size_t i = 0; var && i < nl; ++i) {
        const double e = fabs(lse[i] - ref_lse[i]);
        if (!(e <= lse_err)) lse_err = e;
    }
    CHECK(err <= tolerance(dtype), "prefill %s hd%d cache=%d causal=%d variants=%d: max error %g", dtype_name(dtype),
          hd, with_cache, causal, var != NULL, err);
    CHECK(lse_err <= 1e-4, "prefill %s hd%d variants: lse error %g", dtype_name(dtype), hd, lse_err);
    fprintf(stderr, "prefill %s hd%d cache=%d causal=%d variants=%d: max error %.3g, lse %.3g\n", dtype_name(dtype),
            hd, with_cache, causal, var != NULL, err, lse_err);

    free(ref); free(ref_lse); free(lse);
    if (dlse) cudaFree(dlse);
    if (dsinks) cudaFree(dsinks);
    cudaFree(dq); cudaFree(dk); cudaFree(dv); cudaFree(dout); cudaFree(dkc); cudaFree(dvc);
    free(q); free(k); free(v); free(out); free(kc); free(vc); free(kc_got); free(vc_got);
}

/* ---- decode ---------------------------------------------------------------------------- */
/* Runs one decode with the given split request on fresh device copies of the caches; returns
 * the output (host, caller frees) and checks the caches. */
static void* run_decode(const attn_shape* c, const void* q, const void* k, const void* v, const unsigned char* kc,
                        const unsigned char* vc, int32_t num_splits, int32_t with_workspace) {
    const size_t nq = (size_t)c->batch * c->num_q_heads * c->head_dim, nk = (size_t)c->batch * c->num_kv_heads * c->head_dim;
    const size_t nc = (size_t)c->batch * c->kv_rows * c->num_kv_heads * c->head_dim;
    void* out = test_malloc(nq * 2);
    fill_value(c->dtype, out, nq, NAN);
    void *dq = to_device(q, nq * 2), *dk = to_device(k, nk * 2), *dv = to_device(v, nk * 2);
    void* dout = to_device(out, nq * 2);
    void *dkc = to_device(kc, nc * 2), *dvc = to_device(vc, nc * 2);

    gqa_decode_config cfg = GQA_DECODE_CONFIG_INIT;
    cfg.dtype = c->dtype;
    cfg.device = GQA_DEVICE_CUDA;
    cfg.batch_size = c->batch;
    cfg.num_q_heads = c->num_q_heads;
    cfg.num_kv_heads = c->num_kv_heads;
    cfg.head_dim = c->head_dim;
    cfg.max_seq_len = c->kv_rows;
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
    CHECK(st == GQA_STATUS_OK, "decode %s hd%d splits=%d: %s", dtype_name(c->dtype), (int)c->head_dim, num_splits, gqa_last_error());
    to_host(out, dout, nq * 2);

    unsigned char *kc_want = (unsigned char*)test_malloc(nc * 2), *vc_want = (unsigned char*)test_malloc(nc * 2);
    unsigned char *got = (unsigned char*)test_malloc(nc * 2);
    memcpy(kc_want, kc, nc * 2);
    memcpy(vc_want, vc, nc * 2);
    append_rows(c, kc_want, k);
    append_rows(c, vc_want, v);
    to_host(got, dkc, nc * 2);
    CHECK(memcmp(got, kc_want, nc * 2) == 0, "decode %s hd%d: k_cache bytes differ", dtype_name(c->dtype), (int)c->head_dim);
    to_host(got, dvc, nc * 2);
    CHECK(memcmp(got, vc_want, nc * 2) == 0, "decode %s hd%d: v_cache bytes differ", dtype_name(c->dtype), (int)c->head_dim);
    free(kc_want); free(vc_want); free(got);
    cudaFree(dq); cudaFree(dk); cudaFree(dv); cudaFree(dout); cudaFree(dkc); cudaFree(dvc);
    if (ws) cudaFree(ws);
    return out;
}

static void test_decode(int32_t dtype, int32_t batch, int32_t hq, int32_t hkv, int32_t hd, int32_t max_seq,
                        const int32_t* cache_lens, int32_t explicit_splits) {
    attn_shape c = {dtype, batch, 1, hq, hkv, hd, max_seq, cache_lens, 1, 0.0, NULL};
    const size_t nq = (size_t)batch * hq * hd, nk = (size_t)batch * hkv * hd;
    const size_t nc = (size_t)batch * max_seq * hkv * hd, row = (size_t)hkv * hd;
    void *q = test_malloc(nq * 2), *k = test_malloc(nk * 2), *v = test_malloc(nk * 2);
    unsigned char *kc = (unsigned char*)test_malloc(nc * 2), *vc = (unsigned char*)test_malloc(nc * 2);
    fill_random(dtype, q, nq);
    fill_random(dtype, k, nk);
    fill_random(dtype, v, nk);
    fill_value(dtype, kc, nc, NAN); /* rows >= cache_len: written (one) or never read (the rest) */
    fill_value(dtype, vc, nc, NAN);
    for (int64_t b = 0; b < batch; ++b) {
        fill_random(dtype, kc + (size_t)b * max_seq * row * 2, (size_t)cache_lens[b] * row);
        fill_random(dtype, vc + (size_t)b * max_seq * row * 2, (size_t)cache_lens[b] * row);
    }
    unsigned char *kc_after = (unsigned char*)test_malloc(nc * 2), *vc_after = (unsigned char*)test_malloc(nc * 2);
    memcpy(kc_after, kc, nc * 2);
    memcpy(vc_after, vc, nc * 2);
    append_rows(&c, kc_after, k);
    append_rows(&c, vc_after, v);

    void* none = run_decode(&c, q, k, v, kc, vc, 1, 0);
    void* autos = run_decode(&c, q, k, v, kc, vc, 0, 1);
    void* split = run_decode(&c, q, k, v, kc, vc, explicit_splits, 1);
    const double e_none = attention_error(&c, q, kc_after, vc_after, none);
    const double e_auto = attention_error(&c, q, kc_after, vc_after, autos);
    const double e_split = attention_error(&c, q, kc_after, vc_after, split);
    CHECK(e_none <= tolerance(dtype), "decode %s hd%d no split: max error %g", dtype_name(dtype), hd, e_none);
    CHECK(e_auto <= tolerance(dtype), "decode %s hd%d auto split: max error %g", dtype_name(dtype), hd, e_auto);
    CHECK(e_split <= tolerance(dtype), "decode %s hd%d %d splits: max error %g", dtype_name(dtype), hd, explicit_splits, e_split);
    fprintf(stderr, "decode %s %d:%d hd%d batch %d: max error none %.3g auto %.3g split(%d) %.3g\n", dtype_name(dtype),
            hq, hkv, hd, batch, e_none, e_auto, explicit_splits, e_split);
    free(none); free(autos); free(split);
    free(q); free(k); free(v); free(kc); free(vc); free(kc_after); free(vc_after);
}

/* ---- rejected calls write nothing -------------------------------------------------------- */
static void test_rejections(void) {
    const int32_t hd = 64, hq = 4, hkv = 2, max_seq = 16, S = 3;
    const size_t nq = (size_t)S * hq * hd, nk = (size_t)S * hkv * hd, nc = (size_t)max_seq * hkv * hd;
    void *q = test_malloc(nq * 2), *k = test_malloc(nk * 2), *out = test_malloc(nq * 2);
    unsigned char *kc = (unsigned char*)test_malloc(nc * 2), *got = (unsigned char*)test_malloc(nc * 2);
    fill_random(GQA_DTYPE_F16, q, nq);
    fill_random(GQA_DTYPE_F16, k, nk);
    fill_value(GQA_DTYPE_F16, out, nq, NAN);
    fill_random(GQA_DTYPE_F16, kc, nc);
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
    cfg.head_dim = hd;
    cfg.num_q_heads = hq;
    cfg.num_kv_heads = hkv;
    /* Variant arguments CUDA cannot take: rows off 16-byte boundaries, host sinks or lse. */
    float host_floats[16] = {0.0f};
    for (int option = 0; option < 3; ++option) {
        gqa_prefill_config variant = cfg;
        if (option == 0) variant.q_strides.head = 2 * hd + 4;
        if (option == 1) variant.sinks = host_floats;
        if (option == 2) variant.lse = host_floats;
        const char* names[3] = {"q_strides.head", "sinks", "lse"};
        st = gqa_attention_prefill(dout, dq, dk, dv, dkc, dvc, &variant, NULL);
        CHECK(st == (option == 0 ? GQA_STATUS_UNSUPPORTED : GQA_STATUS_INVALID_ARGUMENT) &&
              strstr(gqa_last_error(), names[option]) != NULL,
              "variant %d on CUDA: status %d, %s", option, (int)st, gqa_last_error());
    }

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
    int count = 0;
    if (gqa_cuda_available() != GQA_STATUS_OK || cudaGetDeviceCount(&count) != cudaSuccess || count == 0) {
        fprintf(stderr, "test_gpu_basic: skipped, no usable CUDA device (%s)\n", gqa_last_error());
        return 77;
    }
    const int32_t dtypes[2] = {GQA_DTYPE_F16, GQA_DTYPE_BF16};
    for (int i = 0; i < 2; ++i) {
        test_prefill(dtypes[i], 128, 1, 1, NULL);
        test_prefill(dtypes[i], 80, 1, 0, NULL);
        test_prefill(dtypes[i], 256, 0, 1, NULL);
        test_prefill(dtypes[i], 64, 0, 0, NULL);
    }
    const float sinks[6] = {0.5f, -INFINITY, -1.0f, 2.0f, 0.0f, 1.5f};
    const attn_variants windowed = {7, -1, 0.0, sinks}, capped = {3, 4, 2.0, NULL};
    test_prefill(GQA_DTYPE_F16, 64, 1, 1, &windowed);
    test_prefill(GQA_DTYPE_BF16, 96, 0, 0, &capped);
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
