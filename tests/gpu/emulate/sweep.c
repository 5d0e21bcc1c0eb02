/* sweep.c: prefill and decode over many shapes and every variant option (window, softcap,
 * sinks, lse, strided views, huge scales) against the float64 reference of gqa_test.h,
 * checking every output element, the lse and the exact cache bytes, with each kernel forced.
 * Cache slots no query may read hold NaN (past the new rows, and before the window), so a
 * wrongly read key shows. Built by emulate.sh for the CPU emulation of the CUDA kernels. */
#define _POSIX_C_SOURCE 200112L /* setenv */
#include <cuda_runtime_api.h>
#include <stdlib.h>

#include "gqa_test.h"

static void* dev(const void* h, size_t n) { void* d; cudaMalloc(&d, n); cudaMemcpy(d, h, n, cudaMemcpyHostToDevice); return d; }
static void* host(const void* d, size_t n) { void* h = test_malloc(n); cudaMemcpy(h, d, n, cudaMemcpyDeviceToHost); return h; }
static int fails = 0, cases = 0;

/* One call. decode: seq_len 1, lens per sequence; prefill: start (with cache) for every sequence. */
typedef struct {
    int32_t dt;
    int decode;
    int B, S, Hq, Hkv, D;
    int start, maxs, causal, cache; /* prefill (maxs: cache capacity, decode too) */
    const int* lens;                /* decode */
    int splits, ws_on;              /* decode */
    int wl, wr;                     /* window, -1: unbounded */
    float softcap;
    int sinks, lse;                 /* random sinks (head 1: -inf); lse output */
    double scale;                   /* 0: 1/sqrt(D) */
    int strided;                    /* q, k, v views of one fused QKV buffer; out rows padded */
} sweep_case;

static const sweep_case kBase = {GQA_DTYPE_F16, 0, 1, 1, 1, 1, 64, 0, 1, 1, 1, NULL, 1, 1, -1, -1, 0.0f, 0, 0, 0.0, 0};

/* The first key any query of sequence b sees: cache rows before it may hold NaN. */
static int first_seen(const sweep_case* c, int start) { return c->wl >= 0 && start > c->wl ? start - c->wl : 0; }

/* Element offset of (b, t, h) in a [B, T, H, D] tensor of row strides (batch, token, head). */
static size_t at(int64_t bs, int64_t ts, int64_t hs, int b, int t, int h) { return (size_t)(b * bs + t * ts + h * hs); }

static void run_case(const sweep_case* c) {
    const int T = c->decode ? 1 : c->S, D = c->D, Hq = c->Hq, Hkv = c->Hkv, B = c->B;
    const int cache = c->decode || c->cache, maxs = cache ? c->maxs : T;
    const size_t nq = (size_t)B * T * Hq * D, nk = (size_t)B * T * Hkv * D, nc = (size_t)B * maxs * Hkv * D;
    const size_t es = 2;
    uint16_t *q = test_malloc(nq * es), *k = test_malloc(nk * es), *v = test_malloc(nk * es);
    uint16_t* kvc = test_malloc(2 * nc * es); /* k cache then v cache (expected contents) */
    fill_random(c->dt, q, (int64_t)nq); fill_random(c->dt, k, (int64_t)nk); fill_random(c->dt, v, (int64_t)nk);
    fill_value(c->dt, kvc, (int64_t)(2 * nc), NAN);
    int starts[512];
    const size_t row = (size_t)Hkv * D;
    for (int b = 0; b < B; ++b) {
        starts[b] = c->decode ? c->lens[b] : cache ? c->start : 0;
        const int from = first_seen(c, starts[b]);
        for (int half = 0; half < 2; ++half)
            fill_random(c->dt, kvc + half * nc + ((size_t)b * maxs + from) * row, (int64_t)((starts[b] - from) * row));
    }
    float sinks[1024];
    for (int h = 0; h < Hq; ++h) sinks[h] = h == 1 ? -INFINITY : (float)((h * 37 % 17) / 4.0 - 2.0);

    /* Device tensors: contiguous, or q/k/v inside one fused [B, T, Hq + 2 Hkv, D] buffer and out
     * in rows of D + 8 (the 8 pad elements NaN, never written). */
    const int Hf = Hq + 2 * Hkv, Dp = D + 8;
    const size_t nf = (size_t)B * T * Hf * D, no = c->strided ? (size_t)B * T * Hq * Dp : nq;
    gqa_strides qs = {0, 0, 0}, ks = {0, 0, 0}, os = {0, 0, 0};
    void *dq, *dk, *dv, *dfused = NULL;
    uint16_t* out0 = test_malloc(no * es);
    fill_value(c->dt, out0, (int64_t)no, NAN);
    if (c->strided) {
        uint16_t* fused = test_malloc(nf * es);
        fill_value(c->dt, fused, (int64_t)nf, NAN);
        qs.batch = (int64_t)T * Hf * D; qs.token = c->decode ? 0 : Hf * D; qs.head = D;
        ks = qs;
        os.batch = (int64_t)T * Hq * Dp; os.token = c->decode ? 0 : Hq * Dp; os.head = Dp;
        for (int b = 0; b < B; ++b)
            for (int t = 0; t < T; ++t) {
                for (int h = 0; h < Hq; ++h)
                    memcpy(fused + at(qs.batch, Hf * D, D, b, t, h), q + at((int64_t)T * Hq * D, Hq * D, D, b, t, h), D * es);
                for (int h = 0; h < Hkv; ++h) {
                    memcpy(fused + at(qs.batch, Hf * D, D, b, t, Hq + h), k + at((int64_t)T * Hkv * D, Hkv * D, D, b, t, h), D * es);
                    memcpy(fused + at(qs.batch, Hf * D, D, b, t, Hq + Hkv + h), v + at((int64_t)T * Hkv * D, Hkv * D, D, b, t, h), D * es);
                }
            }
        dfused = dev(fused, nf * es);
        dq = dfused;
        dk = (uint16_t*)dfused + (size_t)Hq * D;
        dv = (uint16_t*)dfused + (size_t)(Hq + Hkv) * D;
        free(fused);
    } else {
        dq = dev(q, nq * es); dk = dev(k, nk * es); dv = dev(v, nk * es);
    }
    void *dout = dev(out0, no * es), *dkc = dev(kvc, nc * es), *dvc = dev(kvc + nc, nc * es);
    const size_t nl = (size_t)B * Hq * T;
    float* lse0 = test_malloc(nl * sizeof(float));
    for (size_t i = 0; i < nl; ++i) lse0[i] = NAN;
    float* dlse = c->lse ? dev(lse0, nl * sizeof(float)) : NULL;
    float* dsinks = c->sinks ? dev(sinks, (size_t)Hq * sizeof(float)) : NULL;

    int st;
    uint64_t bytes = 0;
    void* ws = NULL;
    if (c->decode) {
        gqa_decode_config cfg = GQA_DECODE_CONFIG_INIT;
        cfg.dtype = c->dt; cfg.device = GQA_DEVICE_CUDA; cfg.batch_size = B; cfg.num_q_heads = Hq; cfg.num_kv_heads = Hkv;
        cfg.head_dim = D; cfg.max_seq_len = maxs; cfg.cache_lens = c->lens; cfg.num_splits = c->splits; cfg.scale = (float)c->scale;
        cfg.window_left = c->wl; cfg.window_right = c->wr; cfg.softcap = c->softcap; cfg.sinks = dsinks; cfg.lse = dlse;
        cfg.q_strides = qs; cfg.k_strides = ks; cfg.v_strides = ks; cfg.out_strides = os;
        if (c->ws_on) { gqa_decode_workspace_size(&cfg, &bytes); if (bytes) { cudaMalloc(&ws, bytes); cfg.workspace = ws; cfg.workspace_bytes = bytes; } }
        st = gqa_attention_decode(dout, dq, dk, dv, dkc, dvc, &cfg, NULL);
    } else {
        gqa_prefill_config cfg = GQA_PREFILL_CONFIG_INIT;
        cfg.dtype = c->dt; cfg.device = GQA_DEVICE_CUDA; cfg.batch_size = B; cfg.seq_len = T; cfg.num_q_heads = Hq;
        cfg.num_kv_heads = Hkv; cfg.head_dim = D; cfg.max_seq_len = cache ? maxs : 0; cfg.start_pos = cache ? c->start : 0;
        cfg.causal = c->causal; cfg.scale = (float)c->scale;
        cfg.window_left = c->wl; cfg.window_right = c->wr; cfg.softcap = c->softcap; cfg.sinks = dsinks; cfg.lse = dlse;
        cfg.q_strides = qs; cfg.k_strides = ks; cfg.v_strides = ks; cfg.out_strides = os;
        st = gqa_attention_prefill(dout, dq, dk, dv, cache ? dkc : NULL, cache ? dvc : NULL, &cfg, NULL);
    }
    ++cases;
    char what[300];
    snprintf(what, sizeof what, "%s dt%d B%d S%d %d:%d D%d start%d max%d causal%d cache%d lens0 %d splits%d ws%llu "
             "window(%d,%d) softcap%g sinks%d lse%d scale%g strided%d", c->decode ? "decode" : "prefill", c->dt, B, T,
             Hq, Hkv, D, c->decode ? 0 : c->start, maxs, c->causal, cache, c->decode ? c->lens[0] : 0,
             c->decode ? c->splits : 1, (unsigned long long)bytes, c->wl, c->wr, (double)c->softcap, c->sinks, c->lse,
             c->scale, c->strided);
    if (st) {
        printf("FAIL %s: status %d %s\n", what, st, gqa_last_error());
        ++fails;
    } else {
        uint16_t* got = host(dout, no * es);
        uint16_t* out = test_malloc(nq * es);
        int pads = 1; /* out's pad elements untouched */
        if (c->strided) {
            for (size_t r = 0; r < (size_t)B * T * Hq; ++r) {
                memcpy(out + r * D, got + r * Dp, D * es);
                pads &= memcmp(got + r * Dp + D, out0 + r * Dp + D, (size_t)(Dp - D) * es) == 0;
            }
        } else {
            memcpy(out, got, nq * es);
        }
        const attn_variants var = {c->wl, c->wr, c->softcap, c->sinks ? sinks : NULL};
        const attn_shape shape = {c->dt, B, T, Hq, Hkv, D, maxs, starts, c->decode ? 1 : c->causal, c->scale, &var};
        append_rows(&shape, kvc, k);
        append_rows(&shape, kvc + nc, v);
        int same_caches = 1;
        if (cache) {
            uint16_t* gk = host(dkc, nc * es);
            uint16_t* gv = host(dvc, nc * es);
            same_caches = memcmp(gk, kvc, nc * es) == 0 && memcmp(gv, kvc + nc, nc * es) == 0;
            free(gk); free(gv);
        }
        double* ref = test_malloc(nq * sizeof(double));
        double* ref_lse = test_malloc(nl * sizeof(double));
        reference_attention_lse(&shape, q, cache ? kvc : k, cache ? kvc + nc : v, ref, ref_lse);
        const double e = max_error(c->dt, out, ref, (int64_t)nq, NULL);
        double e_lse = 0.0;
        if (c->lse) {
            float* gl = host(dlse, nl * sizeof(float));
            for (size_t i = 0; i < nl; ++i) {
                const double want = ref_lse[i], err = fabs(gl[i] - want) / (fabs(want) > 1.0 ? fabs(want) : 1.0);
                if (!(want == -INFINITY && gl[i] == -INFINITY) && !(err <= e_lse)) e_lse = err != err ? INFINITY : err;
            }
            free(gl);
        }
        const int ok = e <= tolerance(c->dt) && e_lse <= 2e-5 && same_caches && pads;
        if (!ok) ++fails;
        printf("%s %s err %.3g lse %.3g caches %s pads %s\n", ok ? "ok  " : "FAIL", what, e, e_lse,
               same_caches ? "ok" : "BAD", pads ? "ok" : "WRITTEN");
        free(got); free(out); free(ref); free(ref_lse);
    }
    if (dfused) cudaFree(dfused); else { cudaFree(dq); cudaFree(dk); cudaFree(dv); }
    cudaFree(dout); cudaFree(dkc); cudaFree(dvc);
    if (dlse) cudaFree(dlse);
    if (dsinks) cudaFree(dsinks);
    if (ws) cudaFree(ws);
    free(q); free(k); free(v); free(kvc); free(out0); free(lse0);
}

static void prefill(int32_t dt, int B, int S, int Hq, int Hkv, int D, int start, int maxs, int causal, int cache) {
    sweep_case c = kBase;
    c.dt = dt; c.B = B; c.S = S; c.Hq = Hq; c.Hkv = Hkv; c.D = D; c.start = start; c.maxs = maxs; c.causal = causal; c.cache = cache;
    run_case(&c);
}

static void decode(int32_t dt, int B, int Hq, int Hkv, int D, int maxs, const int* lens, int splits, int ws_on) {
    sweep_case c = kBase;
    c.decode = 1; c.dt = dt; c.B = B; c.Hq = Hq; c.Hkv = Hkv; c.D = D; c.maxs = maxs; c.lens = lens; c.splits = splits; c.ws_on = ws_on;
    run_case(&c);
}

static void decode_cases(void) {
    int lensA[6] = {0, 1, 31, 32, 33, 70};
    int lensB[1] = {1000};
    int lensC[3] = {0, 100, 255};
    int lens300[300]; for (int b = 0; b < 300; ++b) lens300[b] = (b * 7) % 40;
    for (int s = 0; s < 5; ++s) {
        int sp[5] = {1, 0, 2, 3, 7};
        decode(GQA_DTYPE_F16, 6, 8, 2, 128, 71, lensA, sp[s], 1);
        decode(GQA_DTYPE_BF16, 1, 16, 1, 64, 1024, lensB, sp[s], 1);
        decode(GQA_DTYPE_F16, 3, 32, 2, 96, 256, lensC, sp[s], 1);
        decode(GQA_DTYPE_BF16, 3, 15, 3, 80, 256, lensC, sp[s], 1);
        decode(GQA_DTYPE_F16, 3, 9, 3, 256, 256, lensC, sp[s], 1);
        decode(GQA_DTYPE_BF16, 3, 24, 1, 32, 256, lensC, sp[s], 1);
    }
    decode(GQA_DTYPE_BF16, 300, 4, 2, 64, 40, lens300, 2, 1);
    decode(GQA_DTYPE_F16, 300, 4, 2, 64, 40, lens300, 1, 0);
}

/* The largest scale libgqa takes for head_dim d (validate.cpp: FLT_MAX / (2 d 65504^2)). */
static double max_scale(int d) { return 3.4028234663852886e38 / (2.0 * d * 65504.0 * 65504.0) * (1 - 1e-6); }

/* Every variant option, alone and combined, on prefill (with and without caches, causal and
 * not) and decode (no split, automatic, 7 splits), under the current kernel choice. */
static void variant_cases(void) {
    /* window (left, right): 0 (the query's own key), 1, a few keys, larger than the cache */
    const int windows[][2] = {{0, -1}, {1, -1}, {5, 3}, {1000, -1}, {-1, 0}, {7, 0}};
    {
        for (int w = 0; w < 6; ++w)
            for (int causal = 0; causal < 2; ++causal) {
                sweep_case c = kBase;
                c.dt = w % 2 ? GQA_DTYPE_BF16 : GQA_DTYPE_F16; c.B = 2; c.S = 37 + 40 * (w == 3); c.Hq = 4; c.Hkv = 2;
                c.D = w % 3 == 2 ? 128 : 64; c.start = 21; c.maxs = 140; c.causal = causal; c.cache = w != 2;
                c.wl = windows[w][0]; c.wr = windows[w][1]; c.lse = w % 2;
                run_case(&c);
            }
        sweep_case c = kBase; /* softcap, sinks, lse, each alone, then all with a window */
        c.dt = GQA_DTYPE_BF16; c.B = 2; c.S = 33; c.Hq = 6; c.Hkv = 2; c.D = 96; c.start = 9; c.maxs = 50; c.scale = 1.0;
        c.softcap = 5.0f; run_case(&c);
        c.softcap = 0.0f; c.sinks = 1; run_case(&c);
        c.sinks = 0; c.lse = 1; run_case(&c);
        c.sinks = 1; c.softcap = 5.0f; c.wl = 6; c.dt = GQA_DTYPE_F16; c.D = 80; run_case(&c);
        c.causal = 0; c.wr = 2; c.cache = 0; c.start = 0; c.Hq = 3; c.Hkv = 1; c.D = 32; run_case(&c);
        c = kBase; /* huge scales: the largest logit must give exactly 1, at any magnitude */
        c.B = 1; c.S = 45; c.Hq = 2; c.Hkv = 1; c.D = 128; c.start = 3; c.maxs = 64; c.lse = 1; c.sinks = 1;
        c.scale = 1e20; run_case(&c);
        c.scale = max_scale(128); c.dt = GQA_DTYPE_BF16; run_case(&c);
        c.scale = 1e20; c.softcap = 30.0f; c.wl = 9; run_case(&c);
        c = kBase; /* head_dim 512 (Gemma 4): a window, sinks and lse on a cached prefix (two query tiles) */
        c.dt = GQA_DTYPE_BF16; c.B = 1; c.S = 45; c.Hq = 2; c.Hkv = 1; c.D = 512; c.start = 40; c.maxs = 90;
        c.wl = 30; c.sinks = 1; c.lse = 1; run_case(&c);
        c.wl = -1; c.sinks = 0; c.dt = GQA_DTYPE_F16; c.causal = 0; c.cache = 0; c.start = 0; c.S = 35; run_case(&c);
        c = kBase; /* strided: q, k, v views of one fused QKV buffer, out in padded rows */
        c.B = 2; c.S = 19; c.Hq = 4; c.Hkv = 2; c.D = 64; c.start = 5; c.maxs = 30; c.strided = 1; c.lse = 1;
        run_case(&c);
        c.cache = 0; c.start = 0; c.causal = 0; c.wl = 3; c.wr = 2; c.dt = GQA_DTYPE_BF16; c.sinks = 1; run_case(&c);
    }
    const int lens[4] = {0, 5, 100, 255}, one[1] = {1000};
    const int splits[3] = {1, 0, 7};
    for (int s = 0; s < 3; ++s) {
        const int lefts[4] = {0, 1, 40, 5000};
        for (int w = 0; w < 4; ++w) {
            sweep_case c = kBase;
            c.decode = 1; c.dt = w % 2 ? GQA_DTYPE_BF16 : GQA_DTYPE_F16; c.B = 4; c.Hq = 8; c.Hkv = 2; c.D = w == 2 ? 128 : 64;
            c.maxs = 256; c.lens = lens; c.splits = splits[s]; c.wl = lefts[w]; c.lse = 1; c.sinks = w % 2;
            run_case(&c);
        }
        sweep_case c = kBase; /* softcap and sinks on a long cache, then everything together */
        c.decode = 1; c.dt = GQA_DTYPE_BF16; c.B = 1; c.Hq = 5; c.Hkv = 1; c.D = 80; c.maxs = 1001; c.lens = one;
        c.splits = splits[s]; c.scale = 1.0; c.softcap = 4.0f; run_case(&c);
        c.softcap = 0.0f; c.sinks = 1; c.lse = 1; run_case(&c);
        c.softcap = 4.0f; c.wl = 300; c.dt = GQA_DTYPE_F16; c.Hq = 16; c.Hkv = 2; c.D = 256; run_case(&c);
        c.wl = -1; c.softcap = 0.0f; c.scale = 1e20; c.D = 64; run_case(&c);  /* huge scale */
        c.strided = 1; c.scale = 0.0; c.wl = 50; c.D = 32; c.Hq = 6; c.lens = lens; c.B = 4; c.maxs = 256; run_case(&c);
        c = kBase; /* head_dim 512 */
        c.decode = 1; c.dt = GQA_DTYPE_BF16; c.B = 4; c.Hq = 4; c.Hkv = 1; c.D = 512; c.maxs = 256; c.lens = lens;
        c.splits = splits[s]; c.wl = 70; c.sinks = 1; c.lse = 1; run_case(&c);
    }
}

/* gqa_merge_states on CUDA against its float64 formula: N partials (one with every lse -inf, its
 * states NaN: never read), optional sinks (head 1: -inf), optional lse_out. */
static void merge_case(int32_t dt, int N, int B, int S, int H, int D, int with_sinks, int with_lse) {
    const size_t rows = (size_t)B * S * H, es = dtype_size(dt), nstates = (size_t)N * rows * D;
    void* states = test_malloc(nstates * es);
    float* lses = test_malloc((size_t)N * rows * sizeof(float));
    float sinks[64];
    test_rng rng;
    rng_seed(&rng, 99);
    fill_random(dt, states, (int64_t)nstates);
    for (size_t i = 0; i < (size_t)N * rows; ++i) lses[i] = (float)rng_uniform(&rng, -3.0, 3.0);
    for (int h = 0; h < H; ++h) sinks[h] = h == 1 ? -INFINITY : (float)rng_uniform(&rng, -2.0, 2.0);
    const int empty = N > 1 ? 1 : -1; /* partial 1 saw nothing */
    if (empty >= 0) {
        for (size_t i = 0; i < rows; ++i) lses[empty * rows + i] = -INFINITY;
        fill_value(dt, (uint8_t*)states + empty * rows * D * es, (int64_t)(rows * D), NAN);
    }
    void *dstates = dev(states, nstates * es), *dlses = dev(lses, (size_t)N * rows * sizeof(float));
    void* dsinks = with_sinks ? dev(sinks, (size_t)H * sizeof(float)) : NULL;
    void* out0 = test_malloc(rows * D * es);
    fill_value(dt, out0, (int64_t)(rows * D), NAN);
    float* lse_out = test_malloc(rows * sizeof(float));
    for (size_t i = 0; i < rows; ++i) lse_out[i] = NAN;
    void *dout = dev(out0, rows * D * es), *dlse_out = with_lse ? dev(lse_out, rows * sizeof(float)) : NULL;
    gqa_merge_config cfg;
    gqa_merge_config_init_sized(&cfg, sizeof cfg);
    cfg.dtype = dt; cfg.device = GQA_DEVICE_CUDA; cfg.num_states = N; cfg.batch_size = B; cfg.seq_len = S;
    cfg.num_heads = H; cfg.head_dim = D; cfg.sinks = dsinks;
    const int st = gqa_merge_states(dout, dlse_out, dstates, dlses, &cfg, NULL);
    ++cases;
    double e = 0.0, e_lse = 0.0;
    if (st == GQA_STATUS_OK) {
        void* got = host(dout, rows * D * es);
        float* got_lse = with_lse ? host(dlse_out, rows * sizeof(float)) : NULL;
        for (int b = 0; b < B; ++b)
            for (int s = 0; s < S; ++s)
                for (int h = 0; h < H; ++h) {
                    const size_t r = ((size_t)b * S + s) * H + h, li = ((size_t)b * H + h) * S + s;
                    double top = with_sinks ? sinks[h] : -INFINITY, total = 0.0;
                    for (int n = 0; n < N; ++n) if (lses[n * rows + li] > top) top = lses[n * rows + li];
                    if (with_sinks && sinks[h] != -INFINITY) total = exp(sinks[h] - top);
                    for (int n = 0; n < N; ++n) total += lses[n * rows + li] == -INFINITY ? 0.0 : exp(lses[n * rows + li] - top);
                    for (int d = 0; d < D; ++d) {
                        double acc = 0.0;
                        for (int n = 0; n < N; ++n)
                            if (lses[n * rows + li] != -INFINITY)
                                acc += exp(lses[n * rows + li] - top) * load_elem(dt, states, (int64_t)((n * rows + r) * D + d));
                        const double err = fabs(load_elem(dt, got, (int64_t)(r * D + d)) - acc / total);
                        if (!(err <= e)) e = err;
                    }
                    if (got_lse) {
                        const double err = fabs(got_lse[li] - (top + log(total)));
                        if (!(err <= e_lse)) e_lse = err;
                    }
                }
        free(got); free(got_lse);
    }
    const int ok = st == GQA_STATUS_OK && e <= tolerance(dt) && e_lse <= 1e-5;
    if (!ok) ++fails;
    printf("%s merge dt%d N%d B%d S%d H%d D%d sinks%d lse%d: status %d err %.3g lse %.3g\n", ok ? "ok  " : "FAIL", dt, N,
           B, S, H, D, with_sinks, with_lse, st, e, e_lse);
    cudaFree(dstates); cudaFree(dlses); cudaFree(dout);
    if (dsinks) cudaFree(dsinks);
    if (dlse_out) cudaFree(dlse_out);
    free(states); free(lses); free(out0); free(lse_out);
}

int main(void) {
    int dims[6] = {32, 64, 80, 96, 128, 256}, groups[8] = {1, 2, 3, 4, 5, 7, 8, 16}, seqs[6] = {1, 3, 17, 33, 64, 113};
    for (int i = 0; i < 24; ++i) {
        int dt = i % 2 ? GQA_DTYPE_BF16 : GQA_DTYPE_F16, D = dims[i % 6], G = groups[i % 8], S = seqs[i % 6];
        int Hkv = 1 + i % 3, mode = i % 4, maxs = S + 37;
        int start = mode == 0 ? 0 : mode == 1 ? 1 : mode == 2 ? maxs - S : 0;
        prefill(dt, 1 + i % 2, S, G * Hkv, Hkv, D, start, maxs, i % 3 != 2, mode != 3);
    }
    prefill(GQA_DTYPE_F16, 300, 3, 2, 1, 32, 2, 8, 1, 1);  /* > 256 sequences: two launches */
    /* Every decode case with each kernel: the default choice (tensor cores from 4 query heads
     * per KV head), then each kernel forced, so both see every group size. */
    const char* kernels[3] = {"", "simt", "tensor_core"};
    for (int i = 0; i < 3; ++i) {
        setenv("GQA_CUDA_DECODE", kernels[i], 1);
        printf("decode kernel: GQA_CUDA_DECODE=\"%s\"\n", kernels[i]);
        decode_cases();
    }
    /* The variants with every kernel forced (prefill and decode alike). */
    for (int i = 1; i < 3; ++i) {
        setenv("GQA_CUDA_DECODE", kernels[i], 1);
        setenv("GQA_CUDA_PREFILL", kernels[i], 1);
        printf("decode kernel: GQA_CUDA_PREFILL=GQA_CUDA_DECODE=\"%s\"\n", kernels[i]);
        variant_cases();
    }
    merge_case(GQA_DTYPE_F16, 3, 2, 5, 3, 64, 1, 1);
    merge_case(GQA_DTYPE_BF16, 1, 1, 1, 4, 512, 0, 1);
    merge_case(GQA_DTYPE_F32, 4, 3, 2, 2, 7, 1, 0);  /* any head_dim, f32 states */
    merge_case(GQA_DTYPE_F16, 2, 1, 3, 5, 128, 0, 0);
    printf("%d cases, %d failed\n", cases, fails);
    return fails != 0;
}
