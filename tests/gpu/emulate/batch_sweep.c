/* batch_sweep.c: gqa_attention_batch on the CUDA backend (run by emulate.sh in the CPU emulation)
 * against the float64 reference of gqa_test.h, one sequence at a time. Every case lives in a page
 * pool whose slots no sequence owns, whose slots about to be written and whose guard pages (one
 * before and one after the pool, in the same allocation) are NaN, so a wrong page, slot, length
 * or a write outside the pool shows. It covers:
 *   - ragged batches mixing decode, speculative verification, prefill chunks and q_len 0, with
 *     page sizes 1, 7, 16 and 256, every head dim and group sizes 1..16, both kernels of each
 *     phase, causal and not;
 *   - shuffled pages bitwise equal to the same batch in ordered pages, and the contiguous layout
 *     bitwise equal to gqa_attention_decode / gqa_attention_prefill;
 *   - spec-decode verification (q_len 1..8) against the same tokens one call each;
 *   - split-KV (automatic, explicit, none; bitwise repeatable), over 256 sequences in one call;
 *   - metadata out of range: skipped, flagged in error_flags, nothing outside the pool written;
 *   - GQA_VALIDATE_METADATA=1: rejected with nothing written; and the normal call making no copy
 *     and no synchronisation (the emulator counts them). */
#define _POSIX_C_SOURCE 200112L /* setenv */
#include <cuda_runtime_api.h>
#include <limits.h>
#include <stdlib.h>

#include "emu_control.h"
#include "gqa_test.h"

/* ---- a batch: its shape, host metadata, rows and pool ------------------------------------------------ */
typedef struct batch {
    int32_t dt;
    int B, Hq, Hkv, D, ps, causal;
    int window_left, window_right; /* the variant options (gqa.h): -1 -1, 0, NULL by default */
    double softcap;
    const float* sinks; /* [Hq] host values (copied to the device for the call) */
    int q_lens[320], kv_lens[320];
    int total_q, max_q_len, mpp, npages; /* pool pages, guards excluded */
    int32_t indptr[321], *table;         /* table [B][mpp], -1 past a sequence's pages */
    uint16_t *q, *k, *v;                 /* [total_q][H][D] */
    uint16_t* pool;                      /* k pool then v pool, each guard page | npages pages | guard page */
    size_t page_elems, pool_elems;       /* per page; per pool with its guards */
} batch;

static test_rng rng;

static int pages_for(int tokens, int ps) { return (tokens + ps - 1) / ps; }

/* q_lens/kv_lens (n sequences) in pages of ps tokens; shuffled: the pool's pages in random order,
 * else in sequence order. Three spare pages belong to no sequence. */
static batch make_batch(int32_t dt, int n, const int* q_lens, const int* kv_lens, int Hq, int Hkv, int D, int ps,
                        int causal, int shuffled) {
    batch c;
    memset(&c, 0, sizeof(c));
    c.dt = dt, c.B = n, c.Hq = Hq, c.Hkv = Hkv, c.D = D, c.ps = ps, c.causal = causal;
    c.window_left = c.window_right = -1;
    int used = 0;
    for (int b = 0; b < n; ++b) {
        c.q_lens[b] = q_lens[b], c.kv_lens[b] = kv_lens[b];
        c.indptr[b + 1] = c.indptr[b] + q_lens[b];
        if (q_lens[b] > c.max_q_len) c.max_q_len = q_lens[b];
        const int p = pages_for(kv_lens[b] + q_lens[b], ps);
        if (p + 1 > c.mpp) c.mpp = p + 1;
        used += p;
    }
    c.total_q = c.indptr[n];
    c.npages = used + 3;
    int* order = test_malloc(sizeof(int) * c.npages);
    for (int i = 0; i < c.npages; ++i) order[i] = i;
    for (int i = c.npages - 1; shuffled && i > 0; --i) {
        const int j = (int)(rng_next(&rng) % (uint64_t)(i + 1)), t = order[i];
        order[i] = order[j], order[j] = t;
    }
    c.table = test_malloc(sizeof(int32_t) * n * c.mpp);
    for (int b = 0, next = 0; b < n; ++b)
        for (int i = 0; i < c.mpp; ++i)
            c.table[b * c.mpp + i] = i < pages_for(kv_lens[b] + q_lens[b], ps) ? order[next++] : -1;
    free(order);
    const size_t rows_q = (size_t)c.total_q * Hq * D, rows_kv = (size_t)c.total_q * Hkv * D;
    c.q = test_malloc(rows_q * 2 + 1), c.k = test_malloc(rows_kv * 2 + 1), c.v = test_malloc(rows_kv * 2 + 1);
    fill_random(dt, c.q, rows_q), fill_random(dt, c.k, rows_kv), fill_random(dt, c.v, rows_kv);
    c.page_elems = (size_t)ps * Hkv * D;
    c.pool_elems = (size_t)(c.npages + 2) * c.page_elems;
    c.pool = test_malloc(2 * c.pool_elems * 2);
    fill_value(dt, c.pool, (int64_t)(2 * c.pool_elems), NAN);
    for (int kv = 0; kv < 2; ++kv) /* the cached prefixes random, everything else NaN */
        for (int b = 0; b < n; ++b)
            for (int t = 0; t < kv_lens[b]; ++t) {
                const int32_t page = c.table[b * c.mpp + t / ps];
                fill_random(dt, c.pool + kv * c.pool_elems + (size_t)(page + 1) * c.page_elems + (size_t)(t % ps) * Hkv * D,
                            (int64_t)Hkv * D);
            }
    return c;
}

static void free_batch(batch* c) { free(c->table), free(c->q), free(c->k), free(c->v), free(c->pool); }

/* The same sequences, rows and cached tokens in pages in sequence order (bitwise: same inputs). */
static batch reordered(const batch* c) {
    batch o = make_batch(c->dt, c->B, c->q_lens, c->kv_lens, c->Hq, c->Hkv, c->D, c->ps, c->causal, 0);
    const size_t rq = (size_t)c->total_q * c->Hq * c->D * 2, rk = (size_t)c->total_q * c->Hkv * c->D * 2;
    memcpy(o.q, c->q, rq), memcpy(o.k, c->k, rk), memcpy(o.v, c->v, rk);
    memcpy(o.pool, c->pool, 2 * c->pool_elems * 2); /* NaN everywhere, then each sequence's pages moved */
    for (int kv = 0; kv < 2; ++kv)
        for (int b = 0; b < c->B; ++b)
            for (int i = 0; i < c->mpp && c->table[b * c->mpp + i] >= 0; ++i)
                memcpy(o.pool + kv * o.pool_elems + (size_t)(o.table[b * o.mpp + i] + 1) * o.page_elems,
                       c->pool + kv * c->pool_elems + (size_t)(c->table[b * c->mpp + i] + 1) * c->page_elems,
                       c->page_elems * 2);
    return o;
}

/* Element offset in a pool (guards included) of position t of sequence b, KV head 0; -1 when the
 * page id is outside the pool. */
static int64_t slot(const batch* c, const int32_t* table, int b, int t) {
    const int32_t page = table[b * c->mpp + t / c->ps];
    if (page < 0 || page >= c->npages) return -1;
    return (int64_t)(page + 1) * (int64_t)c->page_elems + (int64_t)(t % c->ps) * c->Hkv * c->D;
}

/* The float64 reference of every row of the sequences not in `skip` (ref [total_q][Hq][D]; lse
 * [Hq][total_q] when given) and the pool after the call (want: the new rows written in their
 * slots, skipping invalid pages), from the case's inputs and variant options, with metadata
 * table and kv (the case's or spoiled ones). */
static void expect_lse(const batch* c, const int32_t* table, const int32_t* kv, const int* skip, double* ref,
                       uint16_t* want, double* lse) {
    const int D = c->D, Hkv = c->Hkv, G = c->Hq / c->Hkv;
    memcpy(want, c->pool, 2 * c->pool_elems * 2);
    for (int b = 0; b < c->B; ++b) {
        if (skip && skip[b]) continue;
        const int n = kv[b] + c->q_lens[b], first = c->indptr[b];
        uint16_t* keys = test_malloc((size_t)2 * (n + 1) * Hkv * D * 2); /* the sequence's keys, then values */
        uint16_t* vals = keys + (size_t)(n + 1) * Hkv * D;
        for (int t = 0; t < n; ++t) {
            const int64_t at = slot(c, table, b, t);
            const uint16_t *ks, *vs;
            if (t < kv[b]) { /* an invalid page reads as NaN here: such a sequence is not compared */
                ks = at >= 0 ? c->pool + at : NULL, vs = at >= 0 ? c->pool + c->pool_elems + at : NULL;
            } else {
                ks = c->k + (size_t)(first + t - kv[b]) * Hkv * D, vs = c->v + (size_t)(first + t - kv[b]) * Hkv * D;
                if (at >= 0) {
                    memcpy(want + at, ks, (size_t)Hkv * D * 2);
                    memcpy(want + c->pool_elems + at, vs, (size_t)Hkv * D * 2);
                }
            }
            if (ks) {
                memcpy(keys + (size_t)t * Hkv * D, ks, (size_t)Hkv * D * 2);
                memcpy(vals + (size_t)t * Hkv * D, vs, (size_t)Hkv * D * 2);
            } else {
                fill_value(c->dt, keys + (size_t)t * Hkv * D, (int64_t)Hkv * D, NAN);
                fill_value(c->dt, vals + (size_t)t * Hkv * D, (int64_t)Hkv * D, NAN);
            }
        }
        for (int j = 0; j < c->q_lens[b]; ++j)
            for (int h = 0; h < c->Hq; ++h) {
                const size_t row = (size_t)(first + j) * c->Hq + h;
                const strided_view qv = {c->q, c->dt, row * D, (size_t)D};
                const strided_view kvw = {keys, c->dt, (size_t)(h / G) * D, (size_t)Hkv * D};
                const strided_view vvw = {vals, c->dt, (size_t)(h / G) * D, (size_t)Hkv * D};
                const int pos = kv[b] + j; /* the keys [lo, hi) it sees: gqa.h's window, causality */
                int lo = 0, hi = c->causal ? pos + 1 : n;
                if (c->window_left >= 0 && pos - c->window_left > lo) lo = pos - c->window_left;
                if (c->window_right >= 0 && pos + c->window_right + 1 < hi) hi = pos + c->window_right + 1;
                reference_row_variants(&qv, &kvw, &vvw, lo, hi, D, 1.0 / sqrt((double)D), c->softcap,
                                       c->sinks ? c->sinks[h] : -INFINITY, ref + row * D,
                                       lse ? lse + (size_t)h * c->total_q + first + j : NULL);
            }
        free(keys);
    }
}

static void expect(const batch* c, const int32_t* table, const int32_t* kv, const int* skip, double* ref,
                   uint16_t* want) {
    expect_lse(c, table, kv, skip, ref, want, NULL);
}

static int fails = 0, cases = 0;
#define EXPECT(cond, ...)                                    \
    do {                                                     \
        if (!(cond)) {                                       \
            ++fails;                                         \
            printf("FAIL %s:%d: ", __FILE__, __LINE__);      \
            printf(__VA_ARGS__);                             \
            printf("\n");                                    \
        }                                                    \
    } while (0)

/* ---- one call on the emulated device ------------------------------------------------------------ */
typedef struct options {
    int num_splits, workspace, max_q_len, total_q; /* max_q_len, total_q: 0 = the case's */
    const int32_t *indptr, *kv, *table;            /* spoiled metadata (NULL: the case's) */
    int host_metadata;                             /* pass host pointers as metadata */
    int lse;                                       /* ask for the lse [Hq][total_q] */
    int fused; /* q, k, v as strided views of one [total_q][Hq + 2 Hkv][D] buffer; out in every other row */
} options;
typedef struct result {
    gqa_status status;
    char error[512];
    uint16_t *out, *pool; /* after the call (out [total_q][Hq][D]) */
    float* lse;           /* [Hq][total_q] with options.lse (NaN where unwritten), else NULL */
    int32_t flags;
    emu_counters cost;    /* runtime calls during the call */
} result;

static void* dev(const void* h, size_t n) {
    void* d;
    cudaMalloc(&d, n ? n : 1);
    if (n) cudaMemcpy(d, h, n, cudaMemcpyHostToDevice);
    return d;
}

static result run(const batch* c, options o) {
    result r;
    memset(&r, 0, sizeof(r));
    const int rows = o.total_q ? o.total_q : c->total_q; /* a spoiled total_q gets tensors that large */
    const size_t nq = (size_t)rows * c->Hq * c->D, nk = (size_t)rows * c->Hkv * c->D;
    uint16_t *q = test_malloc(nq * 2 + 1), *k = test_malloc(nk * 2 + 1), *v = test_malloc(nk * 2 + 1);
    fill_value(c->dt, q, (int64_t)nq, 0.5), fill_value(c->dt, k, (int64_t)nk, 0.5), fill_value(c->dt, v, (int64_t)nk, 0.5);
    memcpy(q, c->q, (size_t)c->total_q * c->Hq * c->D * 2);
    memcpy(k, c->k, (size_t)c->total_q * c->Hkv * c->D * 2), memcpy(v, c->v, (size_t)c->total_q * c->Hkv * c->D * 2);
    r.out = test_malloc(nq * 2 + 1), r.pool = test_malloc(2 * c->pool_elems * 2);
    fill_value(c->dt, r.out, (int64_t)nq, NAN);
    const int32_t* indptr = o.indptr ? o.indptr : c->indptr;
    const int32_t* kv = o.kv ? o.kv : (const int32_t*)c->kv_lens;
    const int32_t* table = o.table ? o.table : c->table;
    void *dq, *dk, *dv, *dout, *dfused = NULL;
    const size_t W = (size_t)(c->Hq + 2 * c->Hkv) * c->D, HqD = (size_t)c->Hq * c->D, HkvD = (size_t)c->Hkv * c->D;
    if (o.fused) {
        uint16_t* fused = test_malloc((size_t)rows * W * 2);
        for (size_t t = 0; t < (size_t)rows; ++t) {
            memcpy(fused + t * W, q + t * HqD, HqD * 2);
            memcpy(fused + t * W + HqD, k + t * HkvD, HkvD * 2);
            memcpy(fused + t * W + HqD + HkvD, v + t * HkvD, HkvD * 2);
        }
        dfused = dev(fused, (size_t)rows * W * 2);
        dq = dfused, dk = (uint16_t*)dfused + HqD, dv = (uint16_t*)dfused + HqD + HkvD;
        uint16_t* wide = test_malloc(2 * nq * 2);
        fill_value(c->dt, wide, (int64_t)(2 * nq), NAN);
        dout = dev(wide, 2 * nq * 2);
        free(fused), free(wide);
    } else {
        dq = dev(q, nq * 2), dk = dev(k, nk * 2), dv = dev(v, nk * 2), dout = dev(r.out, nq * 2);
    }
    uint16_t* dpool = dev(c->pool, 2 * c->pool_elems * 2);
    int32_t zero = 0;
    void *dind = dev(indptr, 4 * (c->B + 1)), *dkv = dev(kv, 4 * c->B), *dtab = dev(table, 4 * c->B * c->mpp);
    int32_t* dflags = dev(&zero, 4);
    gqa_batch_config cfg;
    gqa_batch_config_init_sized(&cfg, sizeof(cfg));
    cfg.dtype = c->dt, cfg.device = GQA_DEVICE_CUDA, cfg.batch_size = c->B, cfg.total_q = rows;
    cfg.max_q_len = o.max_q_len ? o.max_q_len : c->max_q_len;
    cfg.num_q_heads = c->Hq, cfg.num_kv_heads = c->Hkv, cfg.head_dim = c->D;
    cfg.page_size = c->ps, cfg.num_pages = c->npages, cfg.max_pages_per_seq = c->mpp, cfg.causal = c->causal;
    cfg.num_splits = o.num_splits;
    if (o.fused) {
        cfg.q_strides.token = cfg.k_strides.token = cfg.v_strides.token = (int64_t)W;
        cfg.out_strides.token = (int64_t)(2 * HqD);
    }
    cfg.window_left = c->window_left, cfg.window_right = c->window_right, cfg.softcap = (float)c->softcap;
    float* dsinks = c->sinks ? dev(c->sinks, sizeof(float) * c->Hq) : NULL;
    const size_t nl = (size_t)c->Hq * rows;
    float* dlse = NULL;
    if (o.lse) {
        r.lse = test_malloc(sizeof(float) * nl + 4);
        for (size_t i = 0; i < nl; ++i) r.lse[i] = NAN;
        dlse = dev(r.lse, sizeof(float) * nl);
    }
    cfg.sinks = dsinks, cfg.lse = dlse;
    cfg.q_indptr = o.host_metadata ? indptr : dind, cfg.kv_lens = o.host_metadata ? kv : dkv;
    cfg.page_table = o.host_metadata ? table : dtab;
    cfg.error_flags = dflags;
    void* ws = NULL;
    if (o.workspace) {
        uint64_t bytes = 0;
        gqa_batch_workspace_size(&cfg, &bytes);
        if (o.workspace < 0) bytes /= 2; /* too small */
        if (bytes) cudaMalloc(&ws, bytes), cfg.workspace = ws, cfg.workspace_bytes = bytes;
    }
    const emu_counters before = emu_get_counters();
    r.status = gqa_attention_batch(dout, dq, dk, dv, dpool + c->page_elems, dpool + c->pool_elems + c->page_elems, &cfg, NULL);
    const emu_counters after = emu_get_counters();
    r.cost.copies = after.copies - before.copies, r.cost.synchronizations = after.synchronizations - before.synchronizations;
    snprintf(r.error, sizeof(r.error), "%s", gqa_last_error());
    if (o.fused) {
        uint16_t* wide = test_malloc(2 * nq * 2);
        cudaMemcpy(wide, dout, 2 * nq * 2, cudaMemcpyDeviceToHost);
        for (size_t t = 0; t < (size_t)rows; ++t) {
            memcpy(r.out + t * HqD, wide + 2 * t * HqD, HqD * 2);
            for (size_t i = 0; i < HqD; ++i) /* the rows between stay untouched */
                EXPECT(isnan(load_elem(c->dt, wide, (int64_t)((2 * t + 1) * HqD + i))), "strided out: gap written");
        }
        free(wide);
    } else {
        cudaMemcpy(r.out, dout, nq * 2, cudaMemcpyDeviceToHost);
    }
    cudaMemcpy(r.pool, dpool, 2 * c->pool_elems * 2, cudaMemcpyDeviceToHost);
    cudaMemcpy(&r.flags, dflags, 4, cudaMemcpyDeviceToHost);
    if (dfused) cudaFree(dfused);
    else cudaFree(dq), cudaFree(dk), cudaFree(dv);
    cudaFree(dout), cudaFree(dpool), cudaFree(dind), cudaFree(dkv), cudaFree(dtab), cudaFree(dflags);
    if (dlse) cudaMemcpy(r.lse, dlse, sizeof(float) * nl, cudaMemcpyDeviceToHost), cudaFree(dlse);
    if (dsinks) cudaFree(dsinks);
    if (ws) cudaFree(ws);
    free(q), free(k), free(v);
    return r;
}

static void free_result(result* r) { free(r->out), free(r->pool), free(r->lse); }

/* The rows of sequence b within tolerance of ref (or, unchecked, at least written and finite);
 * the rows of skipped sequences (and rows past the batch) untouched NaN. */
static double check_rows(const batch* c, const result* r, const double* ref, const int* skip, const int* unchecked,
                         int rows) {
    double worst = 0.0;
    const size_t row = (size_t)c->Hq * c->D;
    for (int b = 0; b < c->B; ++b) {
        const size_t first = (size_t)c->indptr[b] * row, n = (size_t)c->q_lens[b] * row;
        if (skip && skip[b]) {
            for (size_t i = 0; i < n; ++i) EXPECT(isnan(load_elem(c->dt, r->out, (int64_t)(first + i))), "skipped sequence %d written", b);
            continue;
        }
        double e = max_error(c->dt, r->out + first, ref + first, (int64_t)n, NULL);
        if (unchecked && unchecked[b]) {
            e = 0.0;
            for (size_t i = 0; i < n; ++i) EXPECT(isfinite(load_elem(c->dt, r->out, (int64_t)(first + i))), "sequence %d: NaN", b);
        }
        if (e > worst) worst = e;
    }
    for (size_t i = (size_t)c->total_q * row; i < (size_t)rows * row; ++i) EXPECT(isnan(load_elem(c->dt, r->out, (int64_t)i)), "row past the batch written");
    return worst;
}

/* One call of a good batch, checked: status, every row, the pool bit for bit (guards included),
 * no flag, no copy, no synchronisation. */
static void check_batch(const char* what, const batch* c, options o) {
    ++cases;
    double* ref = test_malloc(sizeof(double) * (size_t)c->total_q * c->Hq * c->D + 8);
    uint16_t* want = test_malloc(2 * c->pool_elems * 2);
    expect(c, c->table, (const int32_t*)c->kv_lens, NULL, ref, want);
    result r = run(c, o);
    const double e = r.status == GQA_STATUS_OK ? check_rows(c, &r, ref, NULL, NULL, c->total_q) : INFINITY;
    const int pool_ok = memcmp(r.pool, want, 2 * c->pool_elems * 2) == 0;
    const int ok = r.status == GQA_STATUS_OK && e <= tolerance(c->dt) && pool_ok && r.flags == 0 && r.cost.copies == 0 &&
                   r.cost.synchronizations == 0;
    if (!ok) ++fails;
    printf("%s %s dt%d B%d %d:%d D%d ps%d causal%d splits%d ws%d: err %.3g pool %s flags %d copies %ld syncs %ld %s\n",
           ok ? "ok  " : "FAIL", what, c->dt, c->B, c->Hq, c->Hkv, c->D, c->ps, c->causal, o.num_splits, o.workspace, e,
           pool_ok ? "ok" : "BAD", r.flags, r.cost.copies, r.cost.synchronizations, r.status ? r.error : "");
    free_result(&r), free(ref), free(want);
}

/* ---- the cases -------------------------------------------------------------------------------------- */
/* decode steps, a chunk after a cached prefix, an empty row, a fresh prompt, a long chunk (tiled as
 * prefill), a speculative verification of 5 tokens */
static const int kMixedQ[7] = {1, 9, 0, 13, 70, 5, 1}, kMixedKv[7] = {30, 17, 5, 0, 3, 300, 0};

static void mixed_batches(void) {
    const int page_sizes[4] = {1, 7, 16, 256};
    const int shapes[6][3] = {{14, 2, 64}, {4, 4, 32}, {6, 2, 80}, {16, 1, 128}, {8, 2, 256}, {12, 3, 96}};
    for (int i = 0; i < 8; ++i) { /* every page size with two dtypes, causal both */
        batch c = make_batch(i % 2 ? GQA_DTYPE_BF16 : GQA_DTYPE_F16, 7, kMixedQ, kMixedKv, 14, 2, 64, page_sizes[i % 4],
                             i < 4, 1);
        check_batch("mixed", &c, (options){0, 1});
        free_batch(&c);
    }
    for (int i = 1; i < 6; ++i) { /* every head dim, group sizes 1..16 */
        batch c = make_batch(i % 2 ? GQA_DTYPE_BF16 : GQA_DTYPE_F16, 7, kMixedQ, kMixedKv, shapes[i][0], shapes[i][1],
                             shapes[i][2], page_sizes[i % 4], i != 3, 1);
        check_batch("shape", &c, (options){i % 3 == 0 ? 1 : 0, 1});
        free_batch(&c);
    }
    const char* kernels[2] = {"simt", "tensor_core"};
    for (int i = 0; i < 2; ++i) { /* each kernel of each phase forced */
        setenv("GQA_CUDA_DECODE", kernels[i], 1), setenv("GQA_CUDA_PREFILL", kernels[i], 1);
        for (int g = 0; g < 2; ++g) {
            batch c = make_batch(GQA_DTYPE_F16, 7, kMixedQ, kMixedKv, g ? 14 : 3, g ? 2 : 3, 64, 7, 1, 1);
            check_batch(kernels[i], &c, (options){0, 1});
            free_batch(&c);
        }
    }
    unsetenv("GQA_CUDA_DECODE"), unsetenv("GQA_CUDA_PREFILL");
}

/* Shuffled pages give the bits of ordered pages, at every page size. */
static void shuffled_equals_ordered(void) {
    const int page_sizes[4] = {1, 7, 16, 256};
    for (int i = 0; i < 4; ++i) {
        ++cases;
        batch c = make_batch(GQA_DTYPE_F16, 7, kMixedQ, kMixedKv, 9, 3, 64, page_sizes[i], 1, 1);
        batch o = reordered(&c);
        result a = run(&c, (options){0, 1}), b = run(&o, (options){0, 1});
        const int same = a.status == 0 && b.status == 0 && memcmp(a.out, b.out, (size_t)c.total_q * c.Hq * c.D * 2) == 0;
        EXPECT(same, "page size %d: shuffled pages differ from ordered pages (%s %s)", c.ps, a.error, b.error);
        printf("%s shuffled == ordered ps%d\n", same ? "ok  " : "FAIL", c.ps);
        free_result(&a), free_result(&b), free_batch(&c), free_batch(&o);
    }
}

/* The contiguous layout (one page of max_seq_len tokens per sequence) gives the bits of decode and
 * prefill with caches: the same kernels through the same accessors. */
static void contiguous_equals_dense(void) {
    const int B = 3, Hq = 8, Hkv = 2, D = 64, M = 300;
    for (int decode = 0; decode < 2; ++decode) {
        ++cases;
        const int S = decode ? 1 : 40, start = decode ? 200 : 17;
        const int qs[3] = {S, S, S}, kvs[3] = {start, start, start};
        batch c = make_batch(GQA_DTYPE_BF16, B, qs, kvs, Hq, Hkv, D, M, 1, 0);
        result r = run(&c, (options){1, 0});
        /* the dense call on the same bytes: page b + 1 of the pool (after the guard) is sequence b's */
        const size_t nq = (size_t)B * S * Hq * D, nk = (size_t)B * S * Hkv * D;
        uint16_t* out = test_malloc(nq * 2);
        fill_value(c.dt, out, (int64_t)nq, NAN);
        void *dq = dev(c.q, nq * 2), *dk = dev(c.k, nk * 2), *dv = dev(c.v, nk * 2), *dout = dev(out, nq * 2);
        uint16_t* dpool = dev(c.pool, 2 * c.pool_elems * 2);
        void *kc = dpool + c.page_elems, *vc = dpool + c.pool_elems + c.page_elems;
        gqa_status st;
        if (decode) {
            gqa_decode_config d = GQA_DECODE_CONFIG_INIT;
            d.dtype = c.dt, d.device = GQA_DEVICE_CUDA, d.batch_size = B, d.num_q_heads = Hq, d.num_kv_heads = Hkv;
            d.head_dim = D, d.max_seq_len = M, d.cache_len = start, d.num_splits = 1;
            st = gqa_attention_decode(dout, dq, dk, dv, kc, vc, &d, NULL);
        } else {
            gqa_prefill_config pf = GQA_PREFILL_CONFIG_INIT;
            pf.dtype = c.dt, pf.device = GQA_DEVICE_CUDA, pf.batch_size = B, pf.seq_len = S, pf.num_q_heads = Hq;
            pf.num_kv_heads = Hkv, pf.head_dim = D, pf.max_seq_len = M, pf.start_pos = start;
            st = gqa_attention_prefill(dout, dq, dk, dv, kc, vc, &pf, NULL);
        }
        cudaMemcpy(out, dout, nq * 2, cudaMemcpyDeviceToHost);
        uint16_t* pool = test_malloc(2 * c.pool_elems * 2);
        cudaMemcpy(pool, dpool, 2 * c.pool_elems * 2, cudaMemcpyDeviceToHost);
        const int same = st == 0 && r.status == 0 && memcmp(out, r.out, nq * 2) == 0 &&
                         memcmp(pool, r.pool, 2 * c.pool_elems * 2) == 0;
        EXPECT(same, "contiguous batch != %s (%s / %s)", decode ? "decode" : "prefill", r.error, gqa_last_error());
        printf("%s contiguous batch == %s\n", same ? "ok  " : "FAIL", decode ? "decode" : "prefill");
        cudaFree(dq), cudaFree(dk), cudaFree(dv), cudaFree(dout), cudaFree(dpool);
        free(out), free(pool), free_result(&r), free_batch(&c);
    }
}

/* k new tokens verified in one call: within tolerance of the reference, and the same pool bits as k
 * one-token calls (each token against the cache the previous ones wrote). */
static void spec_decode(void) {
    for (int k = 1; k <= 8; ++k) {
        const int qs[3] = {k, k, k}, kvs[3] = {11, 400, 0};
        batch c = make_batch(GQA_DTYPE_F16, 3, qs, kvs, 14, 2, 64, 16, 1, 1);
        check_batch("spec", &c, (options){0, 1});
        ++cases;
        double* ref = test_malloc(sizeof(double) * (size_t)c.total_q * c.Hq * c.D);
        uint16_t* want = test_malloc(2 * c.pool_elems * 2);
        expect(&c, c.table, (const int32_t*)c.kv_lens, NULL, ref, want);
        batch step = c; /* the same pool and pages, one token per sequence per call */
        step.pool = test_malloc(2 * c.pool_elems * 2);
        memcpy(step.pool, c.pool, 2 * c.pool_elems * 2);
        const size_t rq = (size_t)c.Hq * c.D, rk = (size_t)c.Hkv * c.D;
        step.q = test_malloc(3 * rq * 2), step.k = test_malloc(3 * rk * 2), step.v = test_malloc(3 * rk * 2);
        double worst = 0.0;
        for (int j = 0; j < k; ++j) {
            for (int b = 0; b < 3; ++b) {
                step.q_lens[b] = 1, step.kv_lens[b] = kvs[b] + j, step.indptr[b + 1] = b + 1;
                memcpy(step.q + b * rq, c.q + (size_t)(c.indptr[b] + j) * rq, rq * 2);
                memcpy(step.k + b * rk, c.k + (size_t)(c.indptr[b] + j) * rk, rk * 2);
                memcpy(step.v + b * rk, c.v + (size_t)(c.indptr[b] + j) * rk, rk * 2);
            }
            step.total_q = 3, step.max_q_len = 1;
            result r = run(&step, (options){0, 1});
            for (int b = 0; b < 3; ++b) {
                const double e = max_error(c.dt, r.out + b * rq, ref + (size_t)(c.indptr[b] + j) * rq, (int64_t)rq, NULL);
                if (r.status || e > worst) worst = r.status ? INFINITY : e;
            }
            memcpy(step.pool, r.pool, 2 * c.pool_elems * 2);
            free_result(&r);
        }
        const int ok = worst <= tolerance(c.dt) && memcmp(step.pool, want, 2 * c.pool_elems * 2) == 0;
        EXPECT(ok, "spec decode k=%d: %d single steps err %.3g or pool differs", k, k, worst);
        printf("%s spec k%d: single steps err %.3g, pool == one call's\n", ok ? "ok  " : "FAIL", k, worst);
        free(step.pool), free(step.q), free(step.k), free(step.v), free(ref), free(want), free_batch(&c);
    }
}

/* Long keys and few sequences: split-KV automatic, explicit and none agree with the reference, and
 * a repeated call gives the same bits; a too-small workspace is rejected with nothing written. */
static void split_kv(void) {
    const int qs[3] = {1, 3, 8}, kvs[3] = {1000, 777, 64};
    const int splits[4] = {0, 2, 5, 1};
    for (int i = 0; i < 8; ++i) {
        batch c = make_batch(i < 4 ? GQA_DTYPE_BF16 : GQA_DTYPE_F16, 3, qs, kvs, i < 4 ? 8 : 3, i < 4 ? 2 : 3, 64, 16, 1, 1);
        check_batch("split", &c, (options){splits[i % 4], 1});
        if (i % 4 == 0) {
            ++cases;
            result a = run(&c, (options){0, 1}), b = run(&c, (options){0, 1});
            const int same = memcmp(a.out, b.out, (size_t)c.total_q * c.Hq * c.D * 2) == 0;
            EXPECT(same, "split-KV: a repeated call gave other bits");
            printf("%s split repeatable\n", same ? "ok  " : "FAIL");
            free_result(&a), free_result(&b);
            ++cases;
            result s = run(&c, (options){4, -1});
            const int rejected = s.status == GQA_STATUS_INVALID_ARGUMENT && strstr(s.error, "workspace_bytes") &&
                                 memcmp(s.pool, c.pool, 2 * c.pool_elems * 2) == 0 && isnan(load_elem(c.dt, s.out, 0));
            EXPECT(rejected, "a too-small workspace: status %d (%s)", s.status, s.error);
            printf("%s small workspace rejected\n", rejected ? "ok  " : "FAIL");
            free_result(&s);
        }
        free_batch(&c);
    }
    int q300[300], kv300[300]; /* more sequences than one prefill/decode launch takes */
    for (int b = 0; b < 300; ++b) q300[b] = 1 + b % 2, kv300[b] = (b * 7) % 40;
    batch c = make_batch(GQA_DTYPE_BF16, 300, q300, kv300, 4, 2, 64, 16, 1, 1);
    check_batch("300 sequences", &c, (options){0, 1});
    free_batch(&c);
}

/* Metadata out of range: each spoiled call runs, flags exactly `flag`, leaves the skipped sequences'
 * rows and pages untouched, writes nothing outside the pool and gets every other sequence right;
 * with GQA_VALIDATE_METADATA=1 the same call is rejected with nothing written. */
typedef struct spoil {
    const char* what;
    int32_t flag;
    int skip[7], unchecked[7]; /* sequences skipped; sequences run on a bad page (finite only) */
    int seq, column, page;     /* a page-table entry to spoil (seq -1: none) */
    int kv_seq, kv;            /* a kv_len to spoil (kv_seq -1: none) */
    int indptr_at, indptr;     /* a q_indptr entry to spoil (-1: none) */
    int max_q_len, extra_rows; /* config spoils (0: none) */
} spoil;

static void bad_metadata(void) {
    /* sequences: 0 decode kv30, 1 chunk 9 after 17, 2 empty, 3 prompt 13, 4 chunk 70 after 3, 5 verify 5 after 300, 6 decode */
    const spoil spoils[] = {
        {"page -1 read", GQA_BATCH_FLAG_BAD_PAGE, {0}, {0, 0, 0, 0, 0, 1}, 5, 3, -1, -1, 0, -1, 0, 0, 0},
        {"page num_pages written (prefill)", GQA_BATCH_FLAG_BAD_PAGE, {0}, {0}, 4, 1, 1 << 20, -1, 0, -1, 0, 0, 0},
        {"page INT_MIN written (decode)", GQA_BATCH_FLAG_BAD_PAGE, {0}, {0}, 6, 0, INT_MIN, -1, 0, -1, 0, 0, 0},
        {"kv_len negative", GQA_BATCH_FLAG_BAD_KV_LEN, {0, 1}, {0}, -1, 0, 0, 1, -5, -1, 0, 0, 0},
        {"kv_len past the pages", GQA_BATCH_FLAG_BAD_KV_LEN, {0, 0, 0, 0, 0, 1}, {0}, -1, 0, 0, 5, 100000, -1, 0, 0, 0},
        {"kv_len near INT32_MAX", GQA_BATCH_FLAG_BAD_KV_LEN, {0, 0, 0, 1}, {0}, -1, 0, 0, 3, INT_MAX - 5, -1, 0, 0, 0},
        {"kv_len negative, q_len 0", GQA_BATCH_FLAG_BAD_KV_LEN, {0}, {0}, -1, 0, 0, 2, -1, -1, 0, 0, 0},
        {"q_indptr[0] not 0", GQA_BATCH_FLAG_BAD_INDPTR, {1}, {0}, -1, 0, 0, -1, 0, 0, 1, 0, 0},
        {"q_indptr past total_q", GQA_BATCH_FLAG_BAD_INDPTR, {0, 0, 0, 0, 0, 1, 1}, {0}, -1, 0, 0, -1, 0, 6, 1 << 30, 0, 0},
        {"q_indptr negative", GQA_BATCH_FLAG_BAD_INDPTR, {0, 1, 1}, {0}, -1, 0, 0, -1, 0, 2, -7, 0, 0},
        {"q_len above max_q_len", GQA_BATCH_FLAG_BAD_INDPTR, {0, 0, 0, 0, 1}, {0}, -1, 0, 0, -1, 0, -1, 0, 69, 0},
        {"q_indptr[B] below total_q", GQA_BATCH_FLAG_BAD_INDPTR, {0, 0, 0, 0, 0, 0, 1}, {0}, -1, 0, 0, -1, 0, -1, 0, 0, 3},
    };
    for (size_t i = 0; i < sizeof(spoils) / sizeof(spoils[0]); ++i) {
        const spoil* s = &spoils[i];
        batch c = make_batch(GQA_DTYPE_F16, 7, kMixedQ, kMixedKv, 14, 2, 64, 7, 1, 1);
        int32_t* table = test_malloc(sizeof(int32_t) * c.B * c.mpp);
        int32_t kv[7], indptr[8];
        memcpy(table, c.table, sizeof(int32_t) * c.B * c.mpp), memcpy(kv, c.kv_lens, sizeof(kv));
        memcpy(indptr, c.indptr, sizeof(indptr));
        if (s->seq >= 0) table[s->seq * c.mpp + s->column] = s->page >= (1 << 20) ? c.npages : s->page;
        if (s->kv_seq >= 0) kv[s->kv_seq] = s->kv;
        if (s->indptr_at >= 0) indptr[s->indptr_at] = s->indptr;
        const options o = {0, 1, s->max_q_len, s->extra_rows ? c.total_q + s->extra_rows : 0, indptr, kv, table, 0};
        double* ref = test_malloc(sizeof(double) * (size_t)c.total_q * c.Hq * c.D + 8);
        uint16_t* want = test_malloc(2 * c.pool_elems * 2);
        ++cases;
        expect(&c, table, kv, s->skip, ref, want);
        result r = run(&c, o);
        const double e = check_rows(&c, &r, ref, s->skip, s->unchecked, o.total_q ? o.total_q : c.total_q);
        const int pool_ok = memcmp(r.pool, want, 2 * c.pool_elems * 2) == 0;
        const int ok = r.status == GQA_STATUS_OK && r.flags == s->flag && e <= tolerance(c.dt) && pool_ok;
        EXPECT(ok, "%s: status %d flags %d (want %d) err %.3g pool %s", s->what, r.status, r.flags, s->flag, e,
               pool_ok ? "ok" : "BAD");
        printf("%s bad metadata, %s: flags %d err %.3g pool %s\n", ok ? "ok  " : "FAIL", s->what, r.flags, e,
               pool_ok ? "ok" : "BAD");
        free_result(&r);

        ++cases;
        setenv("GQA_VALIDATE_METADATA", "1", 1);
        r = run(&c, o);
        unsetenv("GQA_VALIDATE_METADATA");
        const int untouched = memcmp(r.pool, c.pool, 2 * c.pool_elems * 2) == 0 && r.flags == 0 &&
                              isnan(load_elem(c.dt, r.out, 0)) && isnan(load_elem(c.dt, r.out, (int64_t)c.total_q * c.Hq * c.D - 1));
        const int rejected = (r.status == GQA_STATUS_INVALID_ARGUMENT || r.status == GQA_STATUS_CACHE_OVERFLOW) &&
                             r.error[0] && untouched;
        EXPECT(rejected, "GQA_VALIDATE_METADATA=1, %s: status %d (%s), %s", s->what, r.status, r.error,
               untouched ? "nothing written" : "WRITTEN");
        printf("%s validated, %s: status %d: %s\n", rejected ? "ok  " : "FAIL", s->what, r.status, r.error);
        free_result(&r), free(ref), free(want), free(table), free_batch(&c);
    }
}

/* The validation mode: a good call runs (after one copy per metadata array and a wait), a page
 * written by two sequences is rejected, a bad setting is an error; host memory as metadata is
 * rejected in any mode. Nothing is written by a rejected call. */
static void validation_mode(void) {
    batch c = make_batch(GQA_DTYPE_BF16, 7, kMixedQ, kMixedKv, 14, 2, 64, 16, 1, 1);
    ++cases;
    setenv("GQA_VALIDATE_METADATA", "1", 1);
    result r = run(&c, (options){0, 1});
    const int ran = r.status == 0 && r.cost.copies == 3 && r.cost.synchronizations == 3;
    EXPECT(ran, "validated good call: status %d (%s), %ld copies, %ld syncs", r.status, r.error, r.cost.copies,
           r.cost.synchronizations);
    printf("%s validated good call: %ld copies, %ld syncs\n", ran ? "ok  " : "FAIL", r.cost.copies, r.cost.synchronizations);
    free_result(&r);

    int32_t* table = test_malloc(sizeof(int32_t) * c.B * c.mpp);
    memcpy(table, c.table, sizeof(int32_t) * c.B * c.mpp);
    table[6 * c.mpp] = table[0 * c.mpp + 1]; /* sequence 6 writes its page 0, which sequence 0 writes too */
    const struct {
        const char* what;
        const char* setting;
        options o;
        gqa_status status;
        const char* message;
    } rejects[] = {
        {"shared written page", "1", {0, 1, 0, 0, NULL, NULL, table, 0}, GQA_STATUS_INVALID_ARGUMENT, "writes page"},
        {"bad setting", "yes", {0, 1}, GQA_STATUS_INVALID_ARGUMENT, "GQA_VALIDATE_METADATA (\"yes\")"},
        {"host metadata", "0", {0, 1, 0, 0, NULL, NULL, NULL, 1}, GQA_STATUS_INVALID_ARGUMENT, "q_indptr"},
    };
    for (size_t i = 0; i < sizeof(rejects) / sizeof(rejects[0]); ++i) {
        ++cases;
        setenv("GQA_VALIDATE_METADATA", rejects[i].setting, 1);
        r = run(&c, rejects[i].o);
        const int ok = r.status == rejects[i].status && strstr(r.error, rejects[i].message) &&
                       memcmp(r.pool, c.pool, 2 * c.pool_elems * 2) == 0 && isnan(load_elem(c.dt, r.out, 0));
        EXPECT(ok, "%s: status %d (%s)", rejects[i].what, r.status, r.error);
        printf("%s rejected, %s: %s\n", ok ? "ok  " : "FAIL", rejects[i].what, r.error);
        free_result(&r);
    }
    unsetenv("GQA_VALIDATE_METADATA");
    free(table), free_batch(&c);

    ++cases; /* every sequence empty: nothing to do, nothing written */
    const int q0[3] = {0, 0, 0}, kv0[3] = {4, 0, 9};
    c = make_batch(GQA_DTYPE_F16, 3, q0, kv0, 4, 2, 64, 16, 1, 1);
    r = run(&c, (options){0, 1, 1});
    const int idle = r.status == 0 && r.flags == 0 && memcmp(r.pool, c.pool, 2 * c.pool_elems * 2) == 0;
    EXPECT(idle, "an all-empty batch: status %d (%s)", r.status, r.error);
    printf("%s all-empty batch\n", idle ? "ok  " : "FAIL");
    free_result(&r), free_batch(&c);
}

/* The variant options of gqa.h on a mixed batch against the reference per row: sliding windows
 * (the cached slots before every window of a sequence are NaN, so a key outside one that is read
 * shows), softcap, sinks (head 1: -inf, as none) and the lse [Hq][total_q], causal both ways, with
 * and without split-KV (the sink then joins in combine_kernel), each kernel forced. */
static void variants(void) {
    float sinks[14];
    for (int h = 0; h < 14; ++h) sinks[h] = h == 1 ? -INFINITY : (float)((h * 37 % 17) / 4.0 - 2.0);
    const struct {
        int wl, wr, causal, splits, ps;
        double softcap;
        int sinks;
        const char* kernel; /* GQA_CUDA_DECODE and GQA_CUDA_PREFILL (NULL: the defaults) */
    } specs[] = {
        {20, -1, 1, 0, 7, 30.0, 1, NULL},   {12, 5, 0, 0, 16, 0.0, 1, NULL},         {-1, -1, 1, 3, 16, 5.0, 1, NULL},
        {33, -1, 1, 2, 1, 0.0, 0, "simt"}, {7, 2, 0, 0, 256, 20.0, 1, "tensor_core"}, {7, 2, 1, 4, 7, 20.0, 1, "simt"},
        {3, 0, 0, 5, 16, 0.0, 1, "tensor_core"},
    };
    for (size_t i = 0; i < sizeof(specs) / sizeof(specs[0]); ++i) {
        ++cases;
        if (specs[i].kernel) setenv("GQA_CUDA_DECODE", specs[i].kernel, 1), setenv("GQA_CUDA_PREFILL", specs[i].kernel, 1);
        batch c = make_batch(i % 2 ? GQA_DTYPE_BF16 : GQA_DTYPE_F16, 7, kMixedQ, kMixedKv, 14, 2, 64, specs[i].ps,
                             specs[i].causal, 1);
        c.window_left = specs[i].wl, c.window_right = specs[i].wr, c.softcap = specs[i].softcap;
        c.sinks = specs[i].sinks ? sinks : NULL;
        for (int b = 0; c.window_left >= 0 && b < c.B; ++b) /* slots no row of b sees: NaN */
            for (int t = 0; t < c.kv_lens[b] - c.window_left; ++t)
                for (int kv = 0; kv < 2; ++kv)
                    fill_value(c.dt, c.pool + kv * c.pool_elems + slot(&c, c.table, b, t), (int64_t)c.Hkv * c.D, NAN);
        double* ref = test_malloc(sizeof(double) * (size_t)c.total_q * c.Hq * c.D);
        double* ref_lse = test_malloc(sizeof(double) * (size_t)c.total_q * c.Hq);
        uint16_t* want = test_malloc(2 * c.pool_elems * 2);
        expect_lse(&c, c.table, (const int32_t*)c.kv_lens, NULL, ref, want, ref_lse);
        options o = {specs[i].splits, 1};
        o.lse = 1;
        result r = run(&c, o);
        const double e = r.status == GQA_STATUS_OK ? check_rows(&c, &r, ref, NULL, NULL, c.total_q) : INFINITY;
        double e_lse = 0.0;
        for (size_t j = 0; j < (size_t)c.total_q * c.Hq; ++j) {
            const double w = ref_lse[j], err = fabs(r.lse[j] - w) / (fabs(w) > 1.0 ? fabs(w) : 1.0);
            if (!(err <= e_lse)) e_lse = err != err ? INFINITY : err;
        }
        const int pool_ok = memcmp(r.pool, want, 2 * c.pool_elems * 2) == 0;
        const int ok = r.status == GQA_STATUS_OK && e <= tolerance(c.dt) && e_lse <= 2e-5 && pool_ok && r.flags == 0;
        EXPECT(ok, "variants %zu: status %d (%s)", i, r.status, r.error);
        printf("%s variants dt%d ps%d causal%d window(%d,%d) softcap%g sinks%d splits%d %s: err %.3g lse %.3g pool %s\n",
               ok ? "ok  " : "FAIL", c.dt, c.ps, c.causal, c.window_left, c.window_right, c.softcap, specs[i].sinks,
               specs[i].splits, specs[i].kernel ? specs[i].kernel : "default", e, e_lse, pool_ok ? "ok" : "BAD");
        unsetenv("GQA_CUDA_DECODE"), unsetenv("GQA_CUDA_PREFILL");
        free_result(&r), free(ref), free(ref_lse), free(want), free_batch(&c);
    }
}

/* q, k, v as strided views of one fused buffer and out in every other row slot: the bits of the
 * contiguous call, at page sizes 7 and 16, both kernels of each phase. */
static void strided_rows(void) {
    for (int i = 0; i < 4; ++i) {
        ++cases;
        if (i >= 2) setenv("GQA_CUDA_DECODE", "simt", 1), setenv("GQA_CUDA_PREFILL", "simt", 1);
        batch c = make_batch(i % 2 ? GQA_DTYPE_BF16 : GQA_DTYPE_F16, 7, kMixedQ, kMixedKv, 14, 2, 64, i % 2 ? 16 : 7, 1, 1);
        options plain = {0, 1}, fused = {0, 1};
        fused.fused = 1;
        result a = run(&c, plain), b = run(&c, fused);
        const int same = a.status == 0 && b.status == 0 && memcmp(a.out, b.out, (size_t)c.total_q * c.Hq * c.D * 2) == 0 &&
                         memcmp(a.pool, b.pool, 2 * c.pool_elems * 2) == 0;
        EXPECT(same, "strided rows differ from contiguous rows (%s / %s)", a.error, b.error);
        printf("%s strided (fused qkv, gapped out) == contiguous ps%d %s\n", same ? "ok  " : "FAIL", c.ps,
               i >= 2 ? "simt" : "default");
        unsetenv("GQA_CUDA_DECODE"), unsetenv("GQA_CUDA_PREFILL");
        free_result(&a), free_result(&b), free_batch(&c);
    }
}

int main(void) {
    rng_seed(&rng, 16);
    mixed_batches();
    shuffled_equals_ordered();
    contiguous_equals_dense();
    spec_decode();
    split_kv();
    bad_metadata();
    validation_mode();
    variants();
    strided_rows();
    printf("%d cases, %d failed\n", cases, fails);
    return fails != 0;
}
