/* test_batch_bad_inputs.c: promise 1 for gqa_attention_batch. Every field of gqa_batch_config
 * (and every pointer) spoilt in turn: the call returns the documented status, names the field
 * and its value in gqa_last_error(), and writes no byte of out, the caches, the inputs, the
 * metadata or the config (guard bands included); nothing aborts.
 *
 * Each row runs in its own forked child with a time limit, so a crash, an abort or a hang is
 * that row's failure. The unspoilt call must be accepted (and write out) first, so the
 * rejections cannot come from a library that rejects everything. */
#define _GNU_SOURCE
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "gqa_test.h"

/* The valid call: 3 sequences (q_len 3, 1, 0; kv_len 6, 9, 2), page_size 4, shuffled pages. */
enum { B = 3, TOTAL_Q = 4, HQ = 4, HKV = 2, D = 8, PAGE = 4, PAGES = 8, COLS = 4 };
static const int32_t kIndptr[B + 1] = {0, 3, 4, 4};
static const int32_t kLens[B] = {6, 9, 2};
static const int32_t kTable[B * COLS] = {5, 2, 7, -1, 0, 6, 3, -1, 1, -1, -1, -1};

typedef struct call {
    guarded_buf out, q, k, v, k_cache, v_cache, indptr, lens, table, config;
    gqa_batch_config* cfg;
    void* ptr[6]; /* out, q, k, v, k_cache, v_cache as passed (a row may replace one) */
} call;

static void call_init(call* c) {
    const size_t es = 4;
    c->out = guarded_alloc((size_t)TOTAL_Q * HQ * D * es);
    c->q = guarded_alloc((size_t)TOTAL_Q * HQ * D * es);
    c->k = guarded_alloc((size_t)TOTAL_Q * HKV * D * es);
    c->v = guarded_alloc((size_t)TOTAL_Q * HKV * D * es);
    c->k_cache = guarded_alloc((size_t)PAGES * PAGE * HKV * D * es);
    c->v_cache = guarded_alloc((size_t)PAGES * PAGE * HKV * D * es);
    c->indptr = guarded_alloc(sizeof kIndptr);
    c->lens = guarded_alloc(sizeof kLens);
    c->table = guarded_alloc(sizeof kTable);
    c->config = guarded_alloc(sizeof(gqa_batch_config));
    test_rng rng;
    rng_seed(&rng, 16);
    fill_value(GQA_DTYPE_F32, c->out.data, TOTAL_Q * HQ * D, NAN);
    fill_uniform(&rng, GQA_DTYPE_F32, c->q.data, TOTAL_Q * HQ * D, -1, 1);
    fill_uniform(&rng, GQA_DTYPE_F32, c->k.data, TOTAL_Q * HKV * D, -1, 1);
    fill_uniform(&rng, GQA_DTYPE_F32, c->v.data, TOTAL_Q * HKV * D, -1, 1);
    fill_uniform(&rng, GQA_DTYPE_F32, c->k_cache.data, PAGES * PAGE * HKV * D, -1, 1);
    fill_uniform(&rng, GQA_DTYPE_F32, c->v_cache.data, PAGES * PAGE * HKV * D, -1, 1);
    memcpy(c->indptr.data, kIndptr, sizeof kIndptr);
    memcpy(c->lens.data, kLens, sizeof kLens);
    memcpy(c->table.data, kTable, sizeof kTable);
    gqa_batch_config init = GQA_BATCH_CONFIG_INIT;
    init.dtype = GQA_DTYPE_F32;
    init.batch_size = B;
    init.total_q = TOTAL_Q;
    init.num_q_heads = HQ;
    init.num_kv_heads = HKV;
    init.head_dim = D;
    init.page_size = PAGE;
    init.num_pages = PAGES;
    init.max_pages_per_seq = COLS;
    init.q_indptr = (const int32_t*)c->indptr.data;
    init.kv_lens = (const int32_t*)c->lens.data;
    init.page_table = (const int32_t*)c->table.data;
    memcpy(c->config.data, &init, sizeof init);
    c->cfg = (gqa_batch_config*)c->config.data;
    void* ptrs[6] = {c->out.data, c->q.data, c->k.data, c->v.data, c->k_cache.data, c->v_cache.data};
    memcpy(c->ptr, ptrs, sizeof ptrs);
}

static gqa_status call_run(call* c) {
    return gqa_attention_batch(c->ptr[0], c->ptr[1], c->ptr[2], c->ptr[3], c->ptr[4], c->ptr[5], c->cfg, NULL);
}

static guarded_buf* call_bufs(call* c, int i) {
    guarded_buf* all[] = {&c->out, &c->q, &c->k, &c->v, &c->k_cache, &c->v_cache, &c->indptr, &c->lens, &c->table,
                      &c->config};
    return i < 10 ? all[i] : NULL;
}
static void call_free(call* c) {
    for (int i = 0; i < 10; ++i) guarded_free(call_bufs(c, i));
}

static const char* kBufNames[] = {"out", "q", "k", "v", "k_cache", "v_cache", "q_indptr", "kv_lens",
                                  "page_table", "config"};

/* One spoilt field: what to do, and what the library must answer. */
typedef struct row {
    const char* label;
    void (*spoil)(call* c);
    gqa_status expect;
    const char* name;  /* the message names the field ... */
    const char* value; /* ... and its value */
} row;

#define SETTER(fn, stmt) static void fn(call* c) { stmt; }
#define TBL(c) ((int32_t*)(c)->table.data)
SETTER(s_struct_size, c->cfg->struct_size = 12)
SETTER(s_abi, c->cfg->abi_version = 9)
SETTER(s_dtype, c->cfg->dtype = 0)
SETTER(s_device, c->cfg->device = 5)
SETTER(s_batch, c->cfg->batch_size = 0)
SETTER(s_total_q, c->cfg->total_q = -2)
SETTER(s_total_q_mismatch, c->cfg->total_q = 3)
SETTER(s_max_q_len, c->cfg->max_q_len = 2)
SETTER(s_max_q_len_neg, c->cfg->max_q_len = -1)
SETTER(s_hq, c->cfg->num_q_heads = 3)
SETTER(s_hkv, c->cfg->num_kv_heads = 0)
SETTER(s_head_dim, c->cfg->head_dim = 100000)
SETTER(s_page_size, c->cfg->page_size = 0)
SETTER(s_num_pages, c->cfg->num_pages = -4)
SETTER(s_num_pages_small, c->cfg->num_pages = 6)
SETTER(s_cols, c->cfg->max_pages_per_seq = 0)
SETTER(s_capacity, c->cfg->max_pages_per_seq = 2)
SETTER(s_causal, c->cfg->causal = 3)
SETTER(s_scale, c->cfg->scale = -1.0f)
SETTER(s_splits, c->cfg->num_splits = 300)
SETTER(s_indptr_null, c->cfg->q_indptr = NULL)
SETTER(s_lens_null, c->cfg->kv_lens = NULL)
SETTER(s_table_null, c->cfg->page_table = NULL)
SETTER(s_window_left, c->cfg->window_left = -7)
SETTER(s_window_right, c->cfg->window_right = -3)
SETTER(s_softcap, c->cfg->softcap = INFINITY)
SETTER(s_reserved, c->cfg->reserved = 4)
SETTER(s_q_strides, c->cfg->q_strides.batch = 64)
SETTER(s_k_strides, c->cfg->k_strides.head = -8)
SETTER(s_v_strides, c->cfg->v_strides.batch = 1)
SETTER(s_out_strides, c->cfg->out_strides.token = -1)
SETTER(s_indptr0, ((int32_t*)c->indptr.data)[0] = 1)
SETTER(s_indptr_down, ((int32_t*)c->indptr.data)[2] = 2)
SETTER(s_indptr_huge, ((int32_t*)c->indptr.data)[3] = 2147483647)
SETTER(s_lens_neg, ((int32_t*)c->lens.data)[0] = -1)
SETTER(s_lens_big, ((int32_t*)c->lens.data)[1] = 2147483647)
SETTER(s_page_neg, TBL(c)[1] = -1)
SETTER(s_page_big, TBL(c)[COLS + 2] = PAGES)
SETTER(s_page_shared_write, TBL(c)[COLS + 2] = TBL(c)[1])
SETTER(s_page_twice, TBL(c)[0] = TBL(c)[2])
SETTER(s_null_out, c->ptr[0] = NULL)
SETTER(s_null_q, c->ptr[1] = NULL)
SETTER(s_null_k, c->ptr[2] = NULL)
SETTER(s_null_v, c->ptr[3] = NULL)
SETTER(s_null_kc, c->ptr[4] = NULL)
SETTER(s_null_vc, c->ptr[5] = NULL)
SETTER(s_alias_out_q, c->ptr[0] = c->ptr[1])
SETTER(s_alias_kc_vc, c->ptr[5] = c->ptr[4])
SETTER(s_alias_kc_table, c->ptr[4] = c->table.data)
SETTER(s_cuda, { c->cfg->device = GQA_DEVICE_CUDA; c->cfg->dtype = GQA_DTYPE_F16; })

static const row kRows[] = {
    {"struct_size", s_struct_size, GQA_STATUS_VERSION_MISMATCH, "struct_size", "12"},
    {"abi_version", s_abi, GQA_STATUS_VERSION_MISMATCH, "abi_version", "9"},
    {"dtype", s_dtype, GQA_STATUS_INVALID_ARGUMENT, "dtype", "(0)"},
    {"device", s_device, GQA_STATUS_INVALID_ARGUMENT, "device", "(5)"},
    {"batch_size", s_batch, GQA_STATUS_INVALID_ARGUMENT, "batch_size", "(0)"},
    {"total_q", s_total_q, GQA_STATUS_INVALID_ARGUMENT, "total_q", "(-2)"},
    {"total_q != q_indptr[B]", s_total_q_mismatch, GQA_STATUS_INVALID_ARGUMENT, "total_q", "(3)"},
    {"max_q_len below a q_len", s_max_q_len, GQA_STATUS_INVALID_ARGUMENT, "max_q_len", "(2)"},
    {"max_q_len", s_max_q_len_neg, GQA_STATUS_INVALID_ARGUMENT, "max_q_len", "(-1)"},
    {"num_q_heads", s_hq, GQA_STATUS_INVALID_ARGUMENT, "num_q_heads", "(3)"},
    {"num_kv_heads", s_hkv, GQA_STATUS_INVALID_ARGUMENT, "num_kv_heads", "(0)"},
    {"head_dim", s_head_dim, GQA_STATUS_UNSUPPORTED, "head_dim", "(100000)"},
    {"page_size", s_page_size, GQA_STATUS_INVALID_ARGUMENT, "page_size", "(0)"},
    {"num_pages", s_num_pages, GQA_STATUS_INVALID_ARGUMENT, "num_pages", "(-4)"},
    {"num_pages below a page id", s_num_pages_small, GQA_STATUS_INVALID_ARGUMENT, "num_pages = 6", "(7)"},
    {"max_pages_per_seq", s_cols, GQA_STATUS_INVALID_ARGUMENT, "max_pages_per_seq", "(0)"},
    {"max_pages_per_seq too few", s_capacity, GQA_STATUS_CACHE_OVERFLOW, "max_pages_per_seq", "(2)"},
    {"causal", s_causal, GQA_STATUS_INVALID_ARGUMENT, "causal", "(3)"},
    {"scale", s_scale, GQA_STATUS_INVALID_ARGUMENT, "scale", "(-1)"},
    {"num_splits", s_splits, GQA_STATUS_INVALID_ARGUMENT, "num_splits", "(300)"},
    {"q_indptr NULL", s_indptr_null, GQA_STATUS_INVALID_ARGUMENT, "q_indptr", "NULL"},
    {"kv_lens NULL", s_lens_null, GQA_STATUS_INVALID_ARGUMENT, "kv_lens", "NULL"},
    {"page_table NULL", s_table_null, GQA_STATUS_INVALID_ARGUMENT, "page_table", "NULL"},
    {"window_left", s_window_left, GQA_STATUS_INVALID_ARGUMENT, "window_left", "(-7)"},
    {"window_right", s_window_right, GQA_STATUS_INVALID_ARGUMENT, "window_right", "(-3)"},
    {"softcap", s_softcap, GQA_STATUS_INVALID_ARGUMENT, "softcap", "(inf)"},
    {"reserved", s_reserved, GQA_STATUS_INVALID_ARGUMENT, "reserved", "(4)"},
    {"q_strides.batch", s_q_strides, GQA_STATUS_INVALID_ARGUMENT, "q_strides.batch", "(64)"},
    {"k_strides.head", s_k_strides, GQA_STATUS_INVALID_ARGUMENT, "k_strides", "head -8"},
    {"v_strides.batch", s_v_strides, GQA_STATUS_INVALID_ARGUMENT, "v_strides.batch", "(1)"},
    {"out_strides.token", s_out_strides, GQA_STATUS_INVALID_ARGUMENT, "out_strides", "token -1"},
    {"q_indptr[0]", s_indptr0, GQA_STATUS_INVALID_ARGUMENT, "q_indptr[0]", "(1)"},
    {"q_indptr decreasing", s_indptr_down, GQA_STATUS_INVALID_ARGUMENT, "q_indptr[2]", "(2)"},
    {"q_indptr past total_q", s_indptr_huge, GQA_STATUS_INVALID_ARGUMENT, "sequence 2 has q_len", "q_indptr[3]"},
    {"kv_lens negative", s_lens_neg, GQA_STATUS_INVALID_ARGUMENT, "kv_lens[0]", "(-1)"},
    {"kv_lens past the pages", s_lens_big, GQA_STATUS_CACHE_OVERFLOW, "kv_lens[1]", "(2147483647)"},
    {"page id negative", s_page_neg, GQA_STATUS_INVALID_ARGUMENT, "page_table[0][1]", "(-1)"},
    {"page id past the pool", s_page_big, GQA_STATUS_INVALID_ARGUMENT, "page_table[1][2]", "(8)"},
    {"write into another sequence's page", s_page_shared_write, GQA_STATUS_INVALID_ARGUMENT, "sequence 1 writes page 2",
     "sequence 0"},
    {"one page mapped twice", s_page_twice, GQA_STATUS_INVALID_ARGUMENT, "sequence 0 writes page 7",
     "page_table[0][0]"},
    {"out NULL", s_null_out, GQA_STATUS_INVALID_ARGUMENT, "out", "NULL"},
    {"q NULL", s_null_q, GQA_STATUS_INVALID_ARGUMENT, "q", "NULL"},
    {"k NULL", s_null_k, GQA_STATUS_INVALID_ARGUMENT, "k", "NULL"},
    {"v NULL", s_null_v, GQA_STATUS_INVALID_ARGUMENT, "v", "NULL"},
    {"k_cache NULL", s_null_kc, GQA_STATUS_INVALID_ARGUMENT, "k_cache", "NULL"},
    {"v_cache NULL", s_null_vc, GQA_STATUS_INVALID_ARGUMENT, "v_cache", "NULL"},
    {"out aliases q", s_alias_out_q, GQA_STATUS_INVALID_ARGUMENT, "out overlaps q", ""},
    {"v_cache aliases k_cache", s_alias_kc_vc, GQA_STATUS_INVALID_ARGUMENT, "k_cache overlaps v_cache", ""},
    {"k_cache over page_table", s_alias_kc_table, GQA_STATUS_INVALID_ARGUMENT, "k_cache overlaps page_table", ""},
    {"device CUDA, host memory", s_cuda, GQA_STATUS_INVALID_ARGUMENT, "CUDA", ""},
};

/* Runs one row (in its own process: test_run_isolated); returns the number of failed checks. */
static long run_row(const void* arg) {
    const row* r = (const row*)arg;
    const long before = test_failures;
    call c;
    call_init(&c);
    r->spoil(&c);
    for (int i = 0; i < 10; ++i) guarded_snapshot(call_bufs(&c, i));
    gqa_status st = call_run(&c);
    const char* msg = gqa_last_error();
    gqa_status expect = r->expect;
    if (r->spoil == s_cuda && gqa_cuda_available() != GQA_STATUS_OK) expect = GQA_STATUS_DEVICE_UNAVAILABLE;
    CHECK(st == expect, "%s: status %d (%s), expected %d: %s", r->label, st, gqa_status_string(st), expect, msg);
    CHECK(strstr(msg, r->name) != NULL, "%s: message does not name '%s': %s", r->label, r->name, msg);
    CHECK(strstr(msg, r->value) != NULL, "%s: message does not give '%s': %s", r->label, r->value, msg);
    for (int i = 0; i < 10; ++i) {
        long long at = 0;
        CHECK(!guarded_changed(call_bufs(&c, i), &at), "%s: the rejected call changed %s (byte %lld)", r->label,
                  kBufNames[i], at);
    }
    call_free(&c);
    return test_failures - before;
}

int main(void) {
    /* The unspoilt call is valid and writes every element of out. */
    call base;
    call_init(&base);
    gqa_status st = call_run(&base);
    CHECK(st == GQA_STATUS_OK, "the valid base call failed: %s", gqa_last_error());
    for (int64_t i = 0; i < TOTAL_Q * HQ * D; ++i) {
        double x = load_elem(GQA_DTYPE_F32, base.out.data, i);
        if (!isfinite(x)) {
            CHECK(0, "the valid base call left out[%lld] = %g", (long long)i, x);
            break;
        }
    }
    call_free(&base);
    const int n = (int)(sizeof kRows / sizeof kRows[0]);
    for (int i = 0; i < n; ++i) {
        CHECK(test_run_isolated(kRows[i].label, run_row, &kRows[i]), "%s: failed in its own process (above)",
              kRows[i].label);
    }
    return test_summary("test_batch_bad_inputs");
}
