/* test_bad_inputs.c: promise 1. A rejected call writes no byte of out or either cache (nor of
 * its inputs or config), returns its documented status and leaves a gqa_last_error() sentence
 * naming the parameter and its value; nothing aborts.
 *
 * Each row of the tables runs in its own forked child with a time limit, so a crash, an abort
 * or a hang is reported as that row's failure and the other rows still run. Every buffer
 * (guard bands included), the config and cache_lens are compared byte for byte after the call.
 * The valid base calls and a set of valid edge cases must be accepted and match the float64
 * reference, so the rejections cannot come from a library that rejects everything. */
#define _GNU_SOURCE
#include <float.h>
#include <stdint.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "attn_case.h"

#define ST(s) (1u << (s))
#define INV ST(GQA_STATUS_INVALID_ARGUMENT)
#define OVF ST(GQA_STATUS_CACHE_OVERFLOW)
#define UNS ST(GQA_STATUS_UNSUPPORTED)
#define VER ST(GQA_STATUS_VERSION_MISMATCH)
#define DEV ST(GQA_STATUS_DEVICE_UNAVAILABLE)
#define OK_ ST(GQA_STATUS_OK)

enum { P_OUT = 1, P_Q = 2, P_K = 4, P_V = 8, P_KC = 16, P_VC = 32, P_CONFIG = 64 };
enum { BASE_PREFILL, BASE_PREFILL_NOCACHE, BASE_DECODE, BASE_DECODE_LENS };
enum { ALIAS_NONE, ALIAS_OUT_Q, ALIAS_KC_VC, ALIAS_OUT_KC, ALIAS_VC_V };
static const char* base_names[] = {"prefill", "prefill(no cache)", "decode", "decode(cache_lens)"};

#define MAX_SET 7
typedef struct assign { const char* field; double value; } assign;
typedef struct bad_row {
    int base;
    char label[128];
    assign set[MAX_SET];
    int nset;
    int null_mask;       /* pointers passed as NULL                                 */
    int alias;           /* ALIAS_*: pass one buffer for two tensors                 */
    int lens_index;      /* decode(cache_lens): entry to change, -1 none             */
    int32_t lens_value;
    unsigned expect;     /* acceptable statuses                                     */
    char name[32];       /* parameter the message must name ("" : message non-empty) */
    char value[32];      /* token the message must contain ("" : not checked)        */
    int sinks;           /* SINKS_*: the sinks pointer                               */
    int lse;             /* LSE_*: the lse pointer                                   */
} bad_row;

/* The variant pointers (gqa.h, libgqa 0.2): none, a valid buffer, or a bad one. */
enum { SINKS_NONE, SINKS_NAN, SINKS_POS_INF };
enum { LSE_NONE, LSE_IS_OUT, LSE_IS_Q, LSE_IS_K_CACHE };

#define MAX_ROWS 512
static bad_row rows[MAX_ROWS];
static int nrows = 0;

static bad_row* add_row(int base, const char* label, unsigned expect, const char* name, const char* value) {
    if (nrows == MAX_ROWS) {
        fprintf(stderr, "test_bad_inputs: too many rows\n");
        exit(2);
    }
    bad_row* r = &rows[nrows++];
    memset(r, 0, sizeof *r);
    r->base = base;
    r->lens_index = -1;
    r->expect = expect;
    snprintf(r->label, sizeof r->label, "%s: %s", base_names[base], label);
    snprintf(r->name, sizeof r->name, "%s", name ? name : "");
    snprintf(r->value, sizeof r->value, "%s", value ? value : "");
    return r;
}

static void row_set(bad_row* r, const char* field, double value) {
    r->set[r->nset].field = field;
    r->set[r->nset].value = value;
    ++r->nset;
}

/* One field set to one value; the message must name the field and print the value. */
static void add_field(int base, const char* field, double value, unsigned expect) {
    char label[96], token[32];
    if (value == (double)(int64_t)value) snprintf(token, sizeof token, "%lld", (long long)value);
    else token[0] = '\0';
    snprintf(label, sizeof label, "%s = %s", field, token[0] ? token : "(non-integer)");
    if (isnan(value)) snprintf(label, sizeof label, "%s = nan", field);
    if (isinf(value)) snprintf(label, sizeof label, "%s = %sinf", field, value < 0 ? "-" : "");
    bad_row* r = add_row(base, label, expect, field, token);
    row_set(r, field, value);
}

/* ---- config field access by name ------------------------------------------------------ */
/* The variant fields both configs share (libgqa 0.2), e.g. "window_left", "q_strides.token". */
#define SET_VARIANT_FIELDS(c, f, v)                                                              \
    if (!strcmp(f, "window_left")) c->window_left = (int32_t)v;                                 \
    else if (!strcmp(f, "window_right")) c->window_right = (int32_t)v;                          \
    else if (!strcmp(f, "softcap")) c->softcap = (float)v;                                      \
    else if (!strcmp(f, "reserved2")) c->reserved2 = (int32_t)v;                                \
    else if (!strcmp(f, "q_strides.batch")) c->q_strides.batch = (int64_t)v;                    \
    else if (!strcmp(f, "q_strides.token")) c->q_strides.token = (int64_t)v;                    \
    else if (!strcmp(f, "k_strides.head")) c->k_strides.head = (int64_t)v;                      \
    else if (!strcmp(f, "v_strides.token")) c->v_strides.token = (int64_t)v;                    \
    else if (!strcmp(f, "out_strides.head")) c->out_strides.head = (int64_t)v;                  \
    else if (!strcmp(f, "out_strides.token")) c->out_strides.token = (int64_t)v;
static int set_prefill(gqa_prefill_config* c, const char* f, double v) {
    if (!strcmp(f, "struct_size")) c->struct_size = (uint32_t)(int64_t)v;
    else if (!strcmp(f, "abi_version")) c->abi_version = (uint32_t)(int64_t)v;
    else if (!strcmp(f, "dtype")) c->dtype = (int32_t)v;
    else if (!strcmp(f, "device")) c->device = (int32_t)v;
    else if (!strcmp(f, "batch_size")) c->batch_size = (int32_t)v;
    else if (!strcmp(f, "seq_len")) c->seq_len = (int32_t)v;
    else if (!strcmp(f, "num_q_heads")) c->num_q_heads = (int32_t)v;
    else if (!strcmp(f, "num_kv_heads")) c->num_kv_heads = (int32_t)v;
    else if (!strcmp(f, "head_dim")) c->head_dim = (int32_t)v;
    else if (!strcmp(f, "max_seq_len")) c->max_seq_len = (int32_t)v;
    else if (!strcmp(f, "start_pos")) c->start_pos = (int32_t)v;
    else if (!strcmp(f, "causal")) c->causal = (int32_t)v;
    else if (!strcmp(f, "scale")) c->scale = (float)v;
    else if (!strcmp(f, "reserved")) c->reserved = (int32_t)v;
    else SET_VARIANT_FIELDS(c, f, v)
    else return 0;
    return 1;
}

static int set_decode(gqa_decode_config* c, const char* f, double v) {
    if (!strcmp(f, "struct_size")) c->struct_size = (uint32_t)(int64_t)v;
    else if (!strcmp(f, "abi_version")) c->abi_version = (uint32_t)(int64_t)v;
    else if (!strcmp(f, "dtype")) c->dtype = (int32_t)v;
    else if (!strcmp(f, "device")) c->device = (int32_t)v;
    else if (!strcmp(f, "batch_size")) c->batch_size = (int32_t)v;
    else if (!strcmp(f, "num_q_heads")) c->num_q_heads = (int32_t)v;
    else if (!strcmp(f, "num_kv_heads")) c->num_kv_heads = (int32_t)v;
    else if (!strcmp(f, "head_dim")) c->head_dim = (int32_t)v;
    else if (!strcmp(f, "max_seq_len")) c->max_seq_len = (int32_t)v;
    else if (!strcmp(f, "cache_len")) c->cache_len = (int32_t)v;
    else if (!strcmp(f, "scale")) c->scale = (float)v;
    else if (!strcmp(f, "num_splits")) c->num_splits = (int32_t)v;
    else SET_VARIANT_FIELDS(c, f, v)
    else return 0;
    return 1;
}

/* ---- message checks ------------------------------------------------------------------- */
static int is_ident(char ch) { return (ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || (ch >= '0' && ch <= '9') || ch == '_'; }
static int is_numch(char ch) { return (ch >= '0' && ch <= '9') || ch == '.' || is_ident(ch); }

/* word occurs in msg with no identifier character on either side */
static int has_word(const char* msg, const char* word) {
    size_t n = strlen(word);
    for (const char* p = strstr(msg, word); p; p = strstr(p + 1, word)) {
        if ((p == msg || !is_ident(p[-1])) && !is_ident(p[n])) return 1;
    }
    return 0;
}

/* number token occurs in msg, not as part of a longer number */
static int has_number(const char* msg, const char* token) {
    size_t n = strlen(token);
    for (const char* p = strstr(msg, token); p; p = strstr(p + 1, token)) {
        int before_ok = p == msg || (!is_numch(p[-1]) && (token[0] == '-' || p[-1] != '-'));
        if (before_ok && !is_numch(p[n])) return 1;
    }
    return 0;
}

/* ---- running one row in a child ------------------------------------------------------- */
static void base_case(int base, attn_case* c) {
    static const int32_t lens[3] = {3, 15, 0};
    switch (base) {
    case BASE_PREFILL: attn_case_prefill(c, GQA_DTYPE_F16, 2, 3, 4, 2, 8, 16, 5, 1); break;
    case BASE_PREFILL_NOCACHE: attn_case_prefill(c, GQA_DTYPE_F16, 2, 3, 4, 2, 8, 0, 0, 1); break;
    case BASE_DECODE: attn_case_decode(c, GQA_DTYPE_F16, 3, 6, 2, 8, 16, 4, NULL); break;
    default: attn_case_decode(c, GQA_DTYPE_F16, 3, 6, 2, 8, 16, 0, lens); break;
    }
}

static int status_in(gqa_status s, unsigned mask) { return (unsigned)s < 32 && (mask & ST(s)); }

static void mask_names(unsigned mask, char* buf, size_t n) {
    buf[0] = '\0';
    for (int s = 0; s < 16; ++s) {
        if (mask & ST(s)) {
            size_t used = strlen(buf);
            snprintf(buf + used, n - used, "%s%s", used ? " or " : "", gqa_status_string((gqa_status)s));
        }
    }
}

/* Runs in the child: returns the number of failed checks. */
static long run_row(const bad_row* r) {
    attn_case c;
    base_case(r->base, &c);
    attn_case_alloc(&c, 1000 + (uint64_t)r->base);

    /* cache_lens and the config live in guarded buffers too; the config buffer has a zeroed
     * tail so that a struct_size larger than the struct cannot make a reader overrun. */
    guarded_buf lens, cfg;
    lens = guarded_alloc(c.cache_lens ? (size_t)c.batch * sizeof(int32_t) : sizeof(int32_t));
    if (c.cache_lens) memcpy(lens.data, c.cache_lens, (size_t)c.batch * sizeof(int32_t));
    if (r->lens_index >= 0) ((int32_t*)lens.data)[r->lens_index] = r->lens_value;
    cfg = guarded_alloc(1024);
    guarded_buf sinks = guarded_alloc((size_t)c.num_q_heads * sizeof(float));  /* [num_q_heads], one bad value */
    for (int64_t h = 0; h < c.num_q_heads; ++h) ((float*)sinks.data)[h] = 0.25f * (float)h;
    if (r->sinks == SINKS_NAN) ((float*)sinks.data)[1] = NAN;
    if (r->sinks == SINKS_POS_INF) ((float*)sinks.data)[0] = INFINITY;
    const float* sinks_ptr = r->sinks == SINKS_NONE ? NULL : (const float*)sinks.data;
    float* lse_ptr = r->lse == LSE_IS_OUT ? (float*)c.out.data : r->lse == LSE_IS_Q ? (float*)c.q.data
                   : r->lse == LSE_IS_K_CACHE ? (float*)c.k_cache.data : NULL;

    void* out = c.out.data;
    void* q = c.q.data;
    void* k = c.k.data;
    void* v = c.v.data;
    void* kc = c.max_seq_len ? c.k_cache.data : NULL;
    void* vc = c.max_seq_len ? c.v_cache.data : NULL;
    if (r->alias == ALIAS_OUT_Q) out = q;
    if (r->alias == ALIAS_KC_VC) vc = kc;
    if (r->alias == ALIAS_OUT_KC) out = kc;
    if (r->alias == ALIAS_VC_V) vc = v;
    if (r->null_mask & P_OUT) out = NULL;
    if (r->null_mask & P_Q) q = NULL;
    if (r->null_mask & P_K) k = NULL;
    if (r->null_mask & P_V) v = NULL;
    if (r->null_mask & P_KC) kc = NULL;
    if (r->null_mask & P_VC) vc = NULL;

    if (c.decode) {
        gqa_decode_config d;
        attn_case_decode_config(&c, &d);
        d.cache_lens = c.cache_lens ? (const int32_t*)lens.data : NULL;
        d.sinks = sinks_ptr;
        d.lse = lse_ptr;
        for (int i = 0; i < r->nset; ++i) {
            if (!set_decode(&d, r->set[i].field, r->set[i].value)) {
                fprintf(stderr, "test_bad_inputs: unknown decode field %s\n", r->set[i].field);
                exit(2);
            }
        }
        memcpy(cfg.data, &d, sizeof d);
    } else {
        gqa_prefill_config p;
        attn_case_prefill_config(&c, &p);
        p.sinks = sinks_ptr;
        p.lse = lse_ptr;
        for (int i = 0; i < r->nset; ++i) {
            if (!set_prefill(&p, r->set[i].field, r->set[i].value)) {
                fprintf(stderr, "test_bad_inputs: unknown prefill field %s\n", r->set[i].field);
                exit(2);
            }
        }
        memcpy(cfg.data, &p, sizeof p);
    }
    const void* config = (r->null_mask & P_CONFIG) ? NULL : cfg.data;

    attn_case_snapshot(&c);
    guarded_snapshot(&lens);
    guarded_snapshot(&cfg);
    guarded_snapshot(&sinks);
    gqa_status s = c.decode
        ? gqa_attention_decode(out, q, k, v, kc, vc, (const gqa_decode_config*)config, NULL)
        : gqa_attention_prefill(out, q, k, v, kc, vc, (const gqa_prefill_config*)config, NULL);
    const char* msg = gqa_last_error();

    long before = test_failures;
    char want[160];
    mask_names(r->expect, want, sizeof want);
    CHECK(status_in(s, r->expect), "[%s] status %d (%s), want %s; message: \"%s\"", r->label, (int)s,
              gqa_status_string(s), want, msg ? msg : "(null)");
    CHECK(msg != NULL && msg[0] != '\0', "[%s] gqa_last_error() is empty after a rejected call", r->label);
    if (msg && msg[0] && r->name[0]) {
        CHECK(has_word(msg, r->name), "[%s] message does not name '%s': \"%s\"", r->label, r->name, msg);
    }
    if (msg && msg[0] && r->value[0]) {
        CHECK(has_number(msg, r->value), "[%s] message does not give the value %s: \"%s\"", r->label, r->value, msg);
    }
    const char* which = NULL;
    CHECK(attn_case_changed(&c, &which) == 0, "[%s] rejected call modified %s (or its guard band)", r->label,
              which ? which : "?");
    CHECK(!guarded_changed(&lens, NULL), "[%s] rejected call modified cache_lens", r->label);
    CHECK(!guarded_changed(&cfg, NULL), "[%s] rejected call modified the config", r->label);
    CHECK(!guarded_changed(&sinks, NULL), "[%s] rejected call modified sinks", r->label);
    guarded_free(&sinks);
    guarded_free(&lens);
    guarded_free(&cfg);
    attn_case_free(&c);
    return test_failures - before;
}

static long run_row_fn(const void* arg) { return run_row((const bad_row*)arg); }

/* ---- the other entry points that take arguments ---------------------------------------- */
enum { API_CASES = 15 };
static const char* api_labels[API_CASES] = {
    "workspace_size(config = NULL)", "workspace_size(bytes = NULL)", "workspace_size(struct_size = 0)",
    "workspace_size(batch_size = -1)", "workspace_size(head_dim = 0)", "workspace_size(device = CUDA, none usable)",
    "workspace_size(dtype = 9)", "workspace_size(valid CPU config) = 0", "set_num_threads(-1)",
    "set_num_threads(INT32_MIN)", "set_num_threads(INT32_MAX), then a call", "set_log_level(-1)",
    "set_log_level(INT32_MAX)", "status_string(unknown values) not NULL", "config_init(NULL) returns",
};

static long run_api_case(const void* arg) {
    int which = *(const int*)arg;
    const char* label = api_labels[which];
    long before = test_failures;
    guarded_buf bytes;
    bytes = guarded_alloc(sizeof(uint64_t));
    memset(bytes.data, 0xAB, sizeof(uint64_t));
    guarded_snapshot(&bytes);
    gqa_decode_config d = GQA_DECODE_CONFIG_INIT;
    d.batch_size = 2;
    d.num_q_heads = 4;
    d.num_kv_heads = 2;
    d.head_dim = 64;
    d.max_seq_len = 16;
    gqa_status s = GQA_STATUS_OK, want = GQA_STATUS_INVALID_ARGUMENT;
    const char* name = NULL;
    const char* value = NULL;
    int32_t threads_before = gqa_get_num_threads(), level_before = gqa_get_log_level();
    switch (which) {
    case 0: s = gqa_decode_workspace_size(NULL, (uint64_t*)bytes.data); name = "config"; break;
    case 1: s = gqa_decode_workspace_size(&d, NULL); name = "bytes"; break;
    case 2: d.struct_size = 0; s = gqa_decode_workspace_size(&d, (uint64_t*)bytes.data); want = GQA_STATUS_VERSION_MISMATCH;
            name = "struct_size"; value = "0"; break;
    case 3: d.batch_size = -1; s = gqa_decode_workspace_size(&d, (uint64_t*)bytes.data); name = "batch_size"; value = "-1"; break;
    case 4: d.head_dim = 0; s = gqa_decode_workspace_size(&d, (uint64_t*)bytes.data); name = "head_dim"; value = "0"; break;
    case 5: d.device = GQA_DEVICE_CUDA; s = gqa_decode_workspace_size(&d, (uint64_t*)bytes.data);
            want = GQA_STATUS_DEVICE_UNAVAILABLE; break;
    case 6: d.dtype = 9; s = gqa_decode_workspace_size(&d, (uint64_t*)bytes.data); name = "dtype"; value = "9"; break;
    case 7: {
        s = gqa_decode_workspace_size(&d, (uint64_t*)bytes.data);
        uint64_t got;
        memcpy(&got, bytes.data, sizeof got);
        CHECK(s == GQA_STATUS_OK && got == 0, "[%s] status %d, bytes %llu: %s", label, (int)s, (unsigned long long)got,
                  gqa_last_error());
        CHECK(guards_intact(&bytes), "[%s] guard band around bytes overwritten", label);
        guarded_free(&bytes);
        return test_failures - before;
    }
    case 8: s = gqa_set_num_threads(-1); name = "num_threads"; value = "-1"; break;
    case 9: s = gqa_set_num_threads(INT32_MIN); name = "num_threads"; value = "-2147483648"; break;
    case 10: {
        /* May be refused or clamped; either way the next call must work (no 2^31 threads). */
        s = gqa_set_num_threads(INT32_MAX);
        CHECK(s == GQA_STATUS_OK || s == GQA_STATUS_INVALID_ARGUMENT, "[%s] status %d", label, (int)s);
        attn_case c;
        attn_case_prefill(&c, GQA_DTYPE_F32, 1, 3, 2, 1, 4, 0, 0, 1);
        attn_case_alloc(&c, 5);
        s = attn_case_run(&c);
        CHECK(s == GQA_STATUS_OK, "[%s] the next call: status %d: %s", label, (int)s, gqa_last_error());
        attn_case_free(&c);
        guarded_free(&bytes);
        return test_failures - before;
    }
    case 11: s = gqa_set_log_level(-1); name = "level"; value = "-1"; break;
    case 12: s = gqa_set_log_level(INT32_MAX); name = "level"; value = "2147483647"; break;
    case 13: {
        const gqa_status odd[] = {(gqa_status)-1, (gqa_status)9, (gqa_status)12345, (gqa_status)INT32_MIN};
        for (int i = 0; i < 4; ++i) {
            const char* t = gqa_status_string(odd[i]);
            CHECK(t != NULL && t[0], "[%s] gqa_status_string(%d) is NULL or empty", label, (int)odd[i]);
        }
        guarded_free(&bytes);
        return test_failures - before;
    }
    default:
        gqa_prefill_config_init(NULL);
        gqa_decode_config_init(NULL);
        guarded_free(&bytes);
        return test_failures - before;
    }
    const char* msg = gqa_last_error();
    CHECK(s == want, "[%s] status %d (%s), want %d (%s): \"%s\"", label, (int)s, gqa_status_string(s), (int)want,
              gqa_status_string(want), msg ? msg : "(null)");
    CHECK(msg && msg[0], "[%s] gqa_last_error() is empty", label);
    if (msg && name) CHECK(has_word(msg, name), "[%s] message does not name '%s': \"%s\"", label, name, msg);
    if (msg && value) CHECK(has_number(msg, value), "[%s] message does not give %s: \"%s\"", label, value, msg);
    CHECK(!guarded_changed(&bytes, NULL), "[%s] a rejected call wrote *bytes (or its guard band)", label);
    CHECK(gqa_get_num_threads() == threads_before, "[%s] a rejected call changed the thread count", label);
    CHECK(gqa_get_log_level() == level_before, "[%s] a rejected call changed the log level", label);
    guarded_free(&bytes);
    return test_failures - before;
}

/* ---- valid edge cases: must be accepted and correct ------------------------------------ */
typedef struct edge_case { const char* label; attn_case c; } edge_case;

static long run_edge(const void* arg) {
    const edge_case* e = (const edge_case*)arg;
    attn_case c = e->c;
    if (e->c.cache_lens) { /* own copy: attn_case_free frees it */
        c.cache_lens = (int32_t*)malloc((size_t)c.batch * sizeof(int32_t));
        memcpy(c.cache_lens, e->c.cache_lens, (size_t)c.batch * sizeof(int32_t));
    }
    attn_case_alloc(&c, 77);
    int64_t n_out = attn_case_out_elems(&c);
    double* ref = (double*)malloc((size_t)n_out * sizeof(double));
    void* ek = malloc(c.k_cache.bytes + 1);
    void* ev = malloc(c.v_cache.bytes + 1);
    attn_case_reference(&c, ref, ek, ev);
    attn_case_snapshot(&c);
    gqa_status s = attn_case_run(&c);
    long before = test_failures;
    CHECK(s == GQA_STATUS_OK, "[valid: %s] status %d (%s): \"%s\"", e->label, (int)s, gqa_status_string(s),
              gqa_last_error());
    if (s == GQA_STATUS_OK) {
        char label[160];
        snprintf(label, sizeof label, "valid: %s", e->label);
        attn_case_check(&c, label, ref, ek, ev);
    }
    free(ref);
    free(ek);
    free(ev);
    attn_case_free(&c);
    return test_failures - before;
}

/* ---- the tables ----------------------------------------------------------------------- */
static const double I32MAX = 2147483647.0, I32MIN = -2147483648.0, U32MAX = 4294967295.0;

static void common_header_rows(int base, size_t size) {
    const double sizes[] = {0, 1, 4, (double)size - 4, (double)size - 1, (double)size + 1, (double)size + 4,
                            (double)size + 256, I32MAX, U32MAX};
    for (size_t i = 0; i < sizeof sizes / sizeof *sizes; ++i) add_field(base, "struct_size", sizes[i], VER);
    const double abis[] = {0, GQA_ABI_VERSION + 1, I32MAX, U32MAX};
    for (size_t i = 0; i < sizeof abis / sizeof *abis; ++i) add_field(base, "abi_version", abis[i], VER);
    const double dtypes[] = {0, -1, 4, 100, I32MAX, I32MIN};
    for (size_t i = 0; i < sizeof dtypes / sizeof *dtypes; ++i) add_field(base, "dtype", dtypes[i], INV);
    const double devices[] = {0, -1, 3, I32MAX, I32MIN};
    for (size_t i = 0; i < sizeof devices / sizeof *devices; ++i) add_field(base, "device", devices[i], INV);
    /* NaN, infinities and negative scales are rejected (validate.cpp: finite and >= 0). */
    const double scales[] = {NAN, INFINITY, -INFINITY, -1.0, -FLT_MIN};
    for (size_t i = 0; i < sizeof scales / sizeof *scales; ++i) {
        bad_row* r = add_row(base, "scale", INV, "scale", NULL);
        snprintf(r->label, sizeof r->label, "%s: scale = %g", base_names[base], scales[i]);
        row_set(r, "scale", scales[i]);
    }
    const double bad_dims[] = {0, -1, I32MIN};
    const char* dims[] = {"batch_size", "num_q_heads", "num_kv_heads", "head_dim"};
    for (size_t f = 0; f < 4; ++f) {
        for (size_t i = 0; i < 3; ++i) add_field(base, dims[f], bad_dims[i], INV);
    }
    add_field(base, "num_q_heads", I32MAX, INV);  /* not a multiple of num_kv_heads (2) */
    add_field(base, "num_kv_heads", I32MAX, INV); /* does not divide num_q_heads        */
    add_field(base, "num_kv_heads", base == BASE_PREFILL || base == BASE_PREFILL_NOCACHE ? 3 : 4, INV);
    add_field(base, "head_dim", 513, UNS | INV);  /* beyond the largest supported head_dim */
    add_field(base, "head_dim", 65536, UNS | INV);
    add_field(base, "head_dim", I32MAX, UNS | INV);

    /* Null pointers, one at a time, and the config itself. */
    static const char* ptr_names[] = {"out", "q", "k", "v", "config"};
    static const int ptr_bits[] = {P_OUT, P_Q, P_K, P_V, P_CONFIG};
    for (int i = 0; i < 5; ++i) {
        char label[64];
        snprintf(label, sizeof label, "%s = NULL", ptr_names[i]);
        add_row(base, label, INV, ptr_names[i], NULL)->null_mask = ptr_bits[i];
    }
}

/* The variant fields (libgqa 0.2): each bad value rejected, naming the field and value. */
static void variant_rows(int base, int decode) {
    const double windows[] = {-2, I32MIN};
    for (int i = 0; i < 2; ++i) {
        add_field(base, "window_left", windows[i], INV);
        add_field(base, "window_right", windows[i], INV);
    }
    const double softcaps[] = {-1.0, -FLT_MIN, NAN, INFINITY, -INFINITY};
    for (size_t i = 0; i < sizeof softcaps / sizeof *softcaps; ++i) {
        bad_row* r = add_row(base, "softcap", INV, "softcap", NULL);
        snprintf(r->label, sizeof r->label, "%s: softcap = %g", base_names[base], softcaps[i]);
        row_set(r, "softcap", softcaps[i]);
    }
    add_field(base, "reserved2", 1, INV);
    add_field(base, "reserved2", I32MIN, INV);
    add_field(base, "q_strides.batch", -1, INV);
    add_field(base, "k_strides.head", -8, INV);
    add_field(base, "out_strides.head", -1, INV);
    if (decode) {
        add_field(base, "q_strides.token", 48, INV);  /* one token: no token stride */
        add_field(base, "v_strides.token", 1, INV);
    } else {
        add_field(base, "v_strides.token", -3, INV);
    }
    /* out's heads 4 elements apart with head_dim 8: two heads share elements */
    row_set(add_row(base, "out_strides.head = 4 (heads of out overlap)", INV, "out", NULL), "out_strides.head", 4);
    bad_row* r = add_row(base, "out_strides.token = 1 (tokens of out overlap)", INV, "out", NULL);
    row_set(r, "out_strides.token", 1);
    if (decode) snprintf(r->name, sizeof r->name, "out_strides.token");  /* decode: token must be 0 */
    add_row(base, "sinks[1] = nan", INV, "sinks", NULL)->sinks = SINKS_NAN;
    add_row(base, "sinks[0] = +inf", INV, "sinks", NULL)->sinks = SINKS_POS_INF;
    add_row(base, "lse aliases out", INV, "lse", NULL)->lse = LSE_IS_OUT;
    add_row(base, "lse aliases q", INV, "lse", NULL)->lse = LSE_IS_Q;
    if (base != BASE_PREFILL_NOCACHE) add_row(base, "lse aliases k_cache", INV, "lse", NULL)->lse = LSE_IS_K_CACHE;
}

static void build_tables(int cuda_usable) {
    variant_rows(BASE_PREFILL, 0);
    variant_rows(BASE_PREFILL_NOCACHE, 0);
    variant_rows(BASE_DECODE, 1);
    /* prefill with caches: B=2 S=3 14... see base_case() */
    common_header_rows(BASE_PREFILL, sizeof(gqa_prefill_config));
    const double bad[] = {0, -1, I32MIN};
    for (int i = 0; i < 3; ++i) add_field(BASE_PREFILL, "seq_len", bad[i], INV);
    for (int i = 0; i < 3; ++i) add_field(BASE_PREFILL, "max_seq_len", bad[i], INV | OVF);
    add_field(BASE_PREFILL, "start_pos", -1, INV);
    add_field(BASE_PREFILL, "start_pos", I32MIN, INV);
    add_field(BASE_PREFILL, "start_pos", 14, OVF); /* 14 + 3 > 16 */
    add_field(BASE_PREFILL, "start_pos", I32MAX, OVF);
    add_field(BASE_PREFILL, "seq_len", 12, OVF);   /* 5 + 12 > 16 */
    add_field(BASE_PREFILL, "seq_len", I32MAX, OVF);
    add_field(BASE_PREFILL, "max_seq_len", 7, OVF);
    const double causals[] = {-1, 2, I32MAX, I32MIN};
    for (int i = 0; i < 4; ++i) add_field(BASE_PREFILL, "causal", causals[i], INV);
    const double reserveds[] = {1, -1, I32MAX, I32MIN};
    for (int i = 0; i < 4; ++i) add_field(BASE_PREFILL, "reserved", reserveds[i], INV);
    add_row(BASE_PREFILL, "k_cache = NULL (v_cache given)", INV, "k_cache", NULL)->null_mask = P_KC;
    add_row(BASE_PREFILL, "v_cache = NULL (k_cache given)", INV, "v_cache", NULL)->null_mask = P_VC;
    add_row(BASE_PREFILL, "out aliases q", INV, "out", NULL)->alias = ALIAS_OUT_Q;
    add_row(BASE_PREFILL, "v_cache aliases k_cache", INV, "v_cache", NULL)->alias = ALIAS_KC_VC;
    add_row(BASE_PREFILL, "out aliases k_cache", INV, "out", NULL)->alias = ALIAS_OUT_KC;
    add_row(BASE_PREFILL, "v_cache aliases v", INV, "v_cache", NULL)->alias = ALIAS_VC_V;
    /* CUDA on a build or machine without it: the message names the device (as GQA_DEVICE_CUDA) */
    if (!cuda_usable) row_set(add_row(BASE_PREFILL, "device = GQA_DEVICE_CUDA (no usable CUDA)", DEV, "device", NULL), "device",
                              GQA_DEVICE_CUDA);
    /* int32 sums that overflow: start_pos + seq_len */
    {
        bad_row* r = add_row(BASE_PREFILL, "start_pos = INT32_MAX-1, seq_len = 2 (int32 sum overflows)", OVF,
                             "start_pos", "2147483646");
        row_set(r, "start_pos", I32MAX - 1);
        row_set(r, "seq_len", 2);
        r = add_row(BASE_PREFILL, "start_pos = seq_len = max_seq_len = INT32_MAX", OVF, "start_pos", NULL);
        row_set(r, "start_pos", I32MAX);
        row_set(r, "seq_len", I32MAX);
        row_set(r, "max_seq_len", I32MAX);
    }
    /* sizes whose product overflows 64 bits (in elements, or only in bytes) */
    {
        bad_row* r = add_row(BASE_PREFILL, "q and cache sizes overflow int64 (B=S=Hq=Hkv=T=INT32_MAX, D=256)", INV, "", NULL);
        row_set(r, "batch_size", I32MAX);
        row_set(r, "seq_len", I32MAX);
        row_set(r, "num_q_heads", I32MAX);
        row_set(r, "num_kv_heads", I32MAX);
        row_set(r, "head_dim", 256);
        row_set(r, "max_seq_len", I32MAX);
        row_set(r, "start_pos", 0);
        r = add_row(BASE_PREFILL, "only the cache size overflows int64 (B=T=INT32_MAX, S=Hq=Hkv=1, D=256)", INV,
                    "k_cache", NULL);
        row_set(r, "batch_size", I32MAX);
        row_set(r, "seq_len", 1);
        row_set(r, "num_q_heads", 1);
        row_set(r, "num_kv_heads", 1);
        row_set(r, "head_dim", 256);
        row_set(r, "max_seq_len", I32MAX);
        row_set(r, "start_pos", 0);
    }

    /* prefill without caches */
    common_header_rows(BASE_PREFILL_NOCACHE, sizeof(gqa_prefill_config));
    for (int i = 0; i < 3; ++i) add_field(BASE_PREFILL_NOCACHE, "seq_len", bad[i], INV);
    add_field(BASE_PREFILL_NOCACHE, "start_pos", 1, INV); /* must be 0 without caches */
    add_field(BASE_PREFILL_NOCACHE, "start_pos", -1, INV);
    add_field(BASE_PREFILL_NOCACHE, "start_pos", I32MAX, INV);
    for (int i = 0; i < 4; ++i) add_field(BASE_PREFILL_NOCACHE, "causal", causals[i], INV);
    for (int i = 0; i < 4; ++i) add_field(BASE_PREFILL_NOCACHE, "reserved", reserveds[i], INV);
    add_row(BASE_PREFILL_NOCACHE, "out aliases q", INV, "out", NULL)->alias = ALIAS_OUT_Q;
    {
        bad_row* r = add_row(BASE_PREFILL_NOCACHE, "q size overflows int64 (B=S=Hq=INT32_MAX, Hkv=1, D=256)", INV, "", NULL);
        row_set(r, "batch_size", I32MAX);
        row_set(r, "seq_len", I32MAX);
        row_set(r, "num_q_heads", I32MAX);
        row_set(r, "num_kv_heads", 1);
        row_set(r, "head_dim", 256);
        /* (2^31-1)^2 * 2 elements fit in int64, their bytes (x2) do not */
        r = add_row(BASE_PREFILL_NOCACHE, "q elements fit int64 but bytes do not (B=S=INT32_MAX, Hq=2, Hkv=D=1)",
                    INV, "", NULL);
        row_set(r, "batch_size", I32MAX);
        row_set(r, "seq_len", I32MAX);
        row_set(r, "num_q_heads", 2);
        row_set(r, "num_kv_heads", 1);
        row_set(r, "head_dim", 1);
    }

    /* decode, one cache_len */
    common_header_rows(BASE_DECODE, sizeof(gqa_decode_config));
    for (int i = 0; i < 3; ++i) add_field(BASE_DECODE, "max_seq_len", bad[i], INV | OVF);
    add_field(BASE_DECODE, "cache_len", -1, INV);
    add_field(BASE_DECODE, "cache_len", I32MIN, INV);
    add_field(BASE_DECODE, "cache_len", 16, OVF); /* == max_seq_len: no room for the new token */
    add_field(BASE_DECODE, "cache_len", 17, OVF);
    add_field(BASE_DECODE, "cache_len", I32MAX, OVF);
    add_field(BASE_DECODE, "max_seq_len", 4, OVF); /* == cache_len */
    {
        bad_row* r = add_row(BASE_DECODE, "cache_len = max_seq_len = INT32_MAX (cache_len + 1 overflows int32)", OVF,
                             "cache_len", "2147483647");
        row_set(r, "cache_len", I32MAX);
        row_set(r, "max_seq_len", I32MAX);
    }
    const double splits[] = {-1, 257, I32MAX, I32MIN};
    for (int i = 0; i < 4; ++i) add_field(BASE_DECODE, "num_splits", splits[i], INV);
    add_row(BASE_DECODE, "k_cache = NULL", INV, "k_cache", NULL)->null_mask = P_KC;
    add_row(BASE_DECODE, "v_cache = NULL", INV, "v_cache", NULL)->null_mask = P_VC;
    add_row(BASE_DECODE, "both caches NULL", INV, "k_cache", NULL)->null_mask = P_KC | P_VC;
    add_row(BASE_DECODE, "out aliases q", INV, "out", NULL)->alias = ALIAS_OUT_Q;
    add_row(BASE_DECODE, "v_cache aliases k_cache", INV, "v_cache", NULL)->alias = ALIAS_KC_VC;
    add_row(BASE_DECODE, "out aliases k_cache", INV, "out", NULL)->alias = ALIAS_OUT_KC;
    if (!cuda_usable) row_set(add_row(BASE_DECODE, "device = GQA_DEVICE_CUDA (no usable CUDA)", DEV, "device", NULL), "device",
                              GQA_DEVICE_CUDA);
    {
        bad_row* r = add_row(BASE_DECODE, "q and cache sizes overflow int64 (B=Hq=Hkv=T=INT32_MAX, D=256)", INV, "", NULL);
        row_set(r, "batch_size", I32MAX);
        row_set(r, "num_q_heads", I32MAX);
        row_set(r, "num_kv_heads", I32MAX);
        row_set(r, "head_dim", 256);
        row_set(r, "max_seq_len", I32MAX);
        r = add_row(BASE_DECODE, "only the cache size overflows int64 (B=T=INT32_MAX, Hq=Hkv=1, D=256)", INV,
                    "k_cache", NULL);
        row_set(r, "batch_size", I32MAX);
        row_set(r, "num_q_heads", 1);
        row_set(r, "num_kv_heads", 1);
        row_set(r, "head_dim", 256);
        row_set(r, "max_seq_len", I32MAX);
    }

    /* decode with cache_lens {3, 15, 0}: one bad entry, first or last */
    const int32_t lens_bad[] = {-1, INT32_MIN, 16, 17, INT32_MAX};
    const unsigned lens_expect[] = {INV, INV, OVF, OVF, OVF};
    for (int idx = 0; idx <= 2; idx += 2) {
        for (int i = 0; i < 5; ++i) {
            char label[64], token[16];
            snprintf(label, sizeof label, "cache_lens[%d] = %d", idx, (int)lens_bad[i]);
            snprintf(token, sizeof token, "%d", (int)lens_bad[i]);
            bad_row* r = add_row(BASE_DECODE_LENS, label, lens_expect[i], "cache_lens", token);
            r->lens_index = idx;
            r->lens_value = lens_bad[i];
        }
    }
    {
        bad_row* r = add_row(BASE_DECODE_LENS, "max_seq_len = 15 (== cache_lens[1])", OVF, "cache_lens", "15");
        row_set(r, "max_seq_len", 15);
    }
}

static void count_row(const bad_row* r, int passed, int* tried, int* ok) {
    tried[r->base]++;
    if (passed) ok[r->base]++;
}

int main(void) {
    int cuda_usable = gqa_cuda_available() == GQA_STATUS_OK;
    build_tables(cuda_usable);

    /* 1. The base calls of every table are valid: otherwise a rejection proves nothing. */
    static const int32_t lens[3] = {3, 15, 0};
    edge_case edges[32];
    int nedges = 0;
#define EDGE(lbl) (edges[nedges].label = (lbl), &edges[nedges++].c)
    attn_case_prefill(EDGE("base prefill"), GQA_DTYPE_F16, 2, 3, 4, 2, 8, 16, 5, 1);
    attn_case_prefill(EDGE("base prefill without caches"), GQA_DTYPE_F16, 2, 3, 4, 2, 8, 0, 0, 1);
    attn_case_decode(EDGE("base decode"), GQA_DTYPE_F16, 3, 6, 2, 8, 16, 4, NULL);
    attn_case_decode(EDGE("base decode with cache_lens"), GQA_DTYPE_F16, 3, 6, 2, 8, 16, 0, lens);
    /* 2. Edges that are valid: the limits themselves. */
    attn_case_prefill(EDGE("prefill start_pos + seq_len == max_seq_len"), GQA_DTYPE_F16, 2, 3, 4, 2, 8, 16, 13, 1);
    attn_case_prefill(EDGE("prefill start_pos 0, seq_len == max_seq_len"), GQA_DTYPE_BF16, 1, 16, 4, 2, 8, 16, 0, 1);
    attn_case_prefill(EDGE("prefill non-causal"), GQA_DTYPE_F32, 2, 3, 4, 2, 8, 16, 5, 0);
    attn_case_prefill(EDGE("prefill head_dim 512 (largest)"), GQA_DTYPE_F32, 1, 2, 2, 1, 512, 4, 1, 1);
    attn_case_prefill(EDGE("prefill head_dim 1, MQA 7:1"), GQA_DTYPE_F32, 1, 3, 7, 1, 1, 8, 2, 1);
    attn_case_prefill(EDGE("prefill max_seq_len 1"), GQA_DTYPE_F16, 2, 1, 2, 2, 4, 1, 0, 1);
    {
        attn_case* c = EDGE("prefill scale 1e-30 (tiny but valid)");
        attn_case_prefill(c, GQA_DTYPE_F32, 1, 3, 2, 1, 4, 0, 0, 1);
        c->scale = 1e-30f;
    }
    attn_case_decode(EDGE("decode cache_len == max_seq_len - 1"), GQA_DTYPE_F16, 2, 4, 2, 8, 16, 15, NULL);
    {
        static const int32_t edge_lens[3] = {15, 0, 7};
        attn_case_decode(EDGE("decode cache_lens {max-1, 0, 7}"), GQA_DTYPE_BF16, 3, 4, 1, 8, 16, 0, edge_lens);
        attn_case* c = EDGE("decode cache_lens given, cache_len field -1 (ignored)");
        attn_case_decode(c, GQA_DTYPE_F32, 3, 4, 1, 8, 16, -1, edge_lens);
        c = EDGE("decode num_splits 256");
        attn_case_decode(c, GQA_DTYPE_F32, 2, 4, 2, 8, 16, 9, NULL);
        c->num_splits = 256;
        c = EDGE("decode num_splits 1");
        attn_case_decode(c, GQA_DTYPE_F32, 2, 4, 2, 8, 16, 9, NULL);
        c->num_splits = 1;
    }
    attn_case_decode(EDGE("decode max_seq_len 1, cache_len 0"), GQA_DTYPE_F16, 2, 2, 2, 4, 1, 0, NULL);
#undef EDGE
    int edges_ok = 0;
    for (int i = 0; i < nedges; ++i) edges_ok += test_run_isolated(edges[i].label, run_edge, &edges[i]);

    int api_ok = 0, api_tried = 0, api_ids[API_CASES];
    for (int i = 0; i < API_CASES; ++i) {
        if (i == 5 && cuda_usable) continue;
        api_ids[i] = i;
        ++api_tried;
        api_ok += test_run_isolated(api_labels[i], run_api_case, &api_ids[i]);
    }

    int tried[4] = {0}, ok[4] = {0};
    for (int i = 0; i < nrows; ++i) count_row(&rows[i], test_run_isolated(rows[i].label, run_row_fn, &rows[i]), tried, ok);
    for (int i = 0; i < nedges; ++i) free(edges[i].c.cache_lens);

    int total = 0, total_ok = 0;
    fprintf(stderr, "bad inputs tried (each in its own process, every buffer and guard band compared):\n");
    for (int b = 0; b < 4; ++b) {
        fprintf(stderr, "  %-20s %3d tried, %3d rejected as documented with nothing written\n", base_names[b],
                tried[b], ok[b]);
        total += tried[b];
        total_ok += ok[b];
    }
    fprintf(stderr, "  %-20s %3d tried, %3d passed\n", "total", total, total_ok);
    fprintf(stderr, "other entry points (workspace_size, set_num_threads, set_log_level, ...): %d tried, %d passed\n",
            api_tried, api_ok);
    fprintf(stderr, "valid edge calls: %d tried, %d accepted and equal to the float64 reference\n", nedges, edges_ok);
    int failed = (total - total_ok) + (nedges - edges_ok) + (api_tried - api_ok);
    fprintf(stderr, "test_bad_inputs: %s (%d failures)\n", failed ? "FAILED" : "passed", failed);
    return failed ? 1 : 0;
}
