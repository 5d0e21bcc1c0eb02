/* test_rejections.c: every bad input gets its documented status and a message naming the
 * parameter and value, and a rejected call writes no byte of out, k_cache or v_cache
 * (snapshots + guard bands around every buffer). */
#include <stddef.h>

#include "gqa_test.h"

enum { B = 2, S = 3, HQ = 4, HKV = 2, D = 8, MAXLEN = 8, START = 2 };
#define NQ ((size_t)B * S * HQ * D)
#define NK ((size_t)B * S * HKV * D)
#define NC ((size_t)B * MAXLEN * HKV * D)
#define ND_Q ((size_t)B * HQ * D)
#define ND_K ((size_t)B * HKV * D)

static guarded_buf g_out, g_q, g_k, g_v, g_kc, g_vc;
static unsigned char g_out_snap[NQ * 2], g_kc_snap[NC * 2], g_vc_snap[NC * 2];
static int g_cases = 0;

static void setup(void) {
    g_out = guarded_alloc(NQ * 2);
    g_q = guarded_alloc(NQ * 2);
    g_k = guarded_alloc(NK * 2);
    g_v = guarded_alloc(NK * 2);
    g_kc = guarded_alloc(NC * 2);
    g_vc = guarded_alloc(NC * 2);
    fill_random(GQA_DTYPE_F16, g_q.data, NQ);
    fill_random(GQA_DTYPE_F16, g_k.data, NK);
    fill_random(GQA_DTYPE_F16, g_v.data, NK);
    fill_random(GQA_DTYPE_F16, g_kc.data, NC);
    fill_random(GQA_DTYPE_F16, g_vc.data, NC);
    fill_value(GQA_DTYPE_F16, g_out.data, NQ, NAN);
    memcpy(g_out_snap, g_out.data, sizeof g_out_snap);
    memcpy(g_kc_snap, g_kc.data, sizeof g_kc_snap);
    memcpy(g_vc_snap, g_vc.data, sizeof g_vc_snap);
}

static void expect_rejected(const char* what, gqa_status got, gqa_status want, const char* message_part) {
    ++g_cases;
    const char* msg = gqa_last_error();
    CHECK(got == want, "%s: status %d (%s), want %d; message: %s", what, (int)got, gqa_status_string(got),
          (int)want, msg);
    CHECK(strstr(msg, message_part) != NULL, "%s: message '%s' lacks '%s'", what, msg, message_part);
    CHECK(memcmp(g_out.data, g_out_snap, sizeof g_out_snap) == 0, "%s: out was written", what);
    CHECK(memcmp(g_kc.data, g_kc_snap, sizeof g_kc_snap) == 0, "%s: k_cache was written", what);
    CHECK(memcmp(g_vc.data, g_vc_snap, sizeof g_vc_snap) == 0, "%s: v_cache was written", what);
    CHECK(guards_intact(&g_out) && guards_intact(&g_kc) && guards_intact(&g_vc), "%s: guard band written", what);
}

static gqa_prefill_config valid_prefill(void) {
    gqa_prefill_config c = GQA_PREFILL_CONFIG_INIT;
    c.batch_size = B; c.seq_len = S; c.num_q_heads = HQ; c.num_kv_heads = HKV; c.head_dim = D;
    c.max_seq_len = MAXLEN; c.start_pos = START;
    return c;
}
static gqa_decode_config valid_decode(void) {
    gqa_decode_config c = GQA_DECODE_CONFIG_INIT;
    c.batch_size = B; c.num_q_heads = HQ; c.num_kv_heads = HKV; c.head_dim = D;
    c.max_seq_len = MAXLEN; c.cache_len = START;
    return c;
}

/* One int32/float field of a config set to a bad value. */
typedef struct {
    size_t offset;
    int is_float;
    int32_t ival;
    float fval;
    gqa_status status;
    const char* message_part;
} field_case;

#define P_INT(field, value, status, msg) {offsetof(gqa_prefill_config, field), 0, value, 0.0f, status, msg}
#define P_FLT(field, value, status, msg) {offsetof(gqa_prefill_config, field), 1, 0, value, status, msg}
#define D_INT(field, value, status, msg) {offsetof(gqa_decode_config, field), 0, value, 0.0f, status, msg}
#define D_FLT(field, value, status, msg) {offsetof(gqa_decode_config, field), 1, 0, value, status, msg}
#define INV GQA_STATUS_INVALID_ARGUMENT
#define OVF GQA_STATUS_CACHE_OVERFLOW
#define UNS GQA_STATUS_UNSUPPORTED
#define VER GQA_STATUS_VERSION_MISMATCH

static void set_field(void* config, const field_case* fc) {
    if (fc->is_float) memcpy((char*)config + fc->offset, &fc->fval, 4);
    else memcpy((char*)config + fc->offset, &fc->ival, 4);
}

static void prefill_field_cases(void) {
    const field_case cases[] = {
        P_INT(struct_size, 0, VER, "struct_size (0)"),
        P_INT(struct_size, 4, VER, "struct_size (4)"),
        P_INT(struct_size, (int32_t)sizeof(gqa_prefill_config) + 8, VER, "struct_size"),
        P_INT(abi_version, 0, VER, "abi_version (0)"),
        P_INT(abi_version, GQA_ABI_VERSION + 1, VER, "abi_version"),
        P_INT(dtype, 0, INV, "dtype (0)"), P_INT(dtype, -1, INV, "dtype (-1)"),
        P_INT(dtype, INT32_MAX, INV, "dtype (2147483647)"),
        P_INT(device, 0, INV, "device (0)"), P_INT(device, -1, INV, "device (-1)"),
        P_INT(device, INT32_MAX, INV, "device (2147483647)"),
        P_INT(batch_size, 0, INV, "batch_size (0)"), P_INT(batch_size, -1, INV, "batch_size (-1)"),
        P_INT(seq_len, 0, INV, "seq_len (0)"), P_INT(seq_len, -1, INV, "seq_len (-1)"),
        P_INT(seq_len, INT32_MAX, OVF, "seq_len (2147483647) exceeds max_seq_len"),
        P_INT(num_q_heads, 0, INV, "num_q_heads (0)"), P_INT(num_q_heads, -1, INV, "num_q_heads (-1)"),
        P_INT(num_q_heads, 5, INV, "num_q_heads (5) must be a multiple of num_kv_heads (2)"),
        P_INT(num_kv_heads, 0, INV, "num_kv_heads (0)"), P_INT(num_kv_heads, -1, INV, "num_kv_heads (-1)"),
        P_INT(num_kv_heads, 3, INV, "num_q_heads (4) must be a multiple of num_kv_heads (3)"),
        P_INT(num_kv_heads, INT32_MAX, INV, "num_kv_heads (2147483647)"),
        P_INT(head_dim, 0, INV, "head_dim (0)"), P_INT(head_dim, -1, INV, "head_dim (-1)"),
        P_INT(head_dim, 513, UNS, "head_dim (513)"), P_INT(head_dim, INT32_MAX, UNS, "head_dim (2147483647)"),
        P_INT(max_seq_len, 0, INV, "max_seq_len (0)"), P_INT(max_seq_len, -1, INV, "max_seq_len (-1)"),
        P_INT(max_seq_len, 4, OVF, "start_pos (2) + seq_len (3) exceeds max_seq_len (4)"),
        P_INT(start_pos, -1, INV, "start_pos (-1)"),
        P_INT(start_pos, 6, OVF, "start_pos (6) + seq_len (3) exceeds max_seq_len (8)"),
        P_INT(start_pos, INT32_MAX, OVF, "start_pos (2147483647)"),
        P_INT(causal, 2, INV, "causal (2)"), P_INT(causal, -1, INV, "causal (-1)"),
        P_FLT(scale, -1.0f, INV, "scale (-1)"), P_FLT(scale, NAN, INV, "scale (nan)"),
        P_FLT(scale, INFINITY, INV, "scale (inf)"),
        P_INT(reserved, 1, INV, "reserved (1)"),
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; ++i) {
        gqa_prefill_config c = valid_prefill();
        set_field(&c, &cases[i]);
        char what[64];
        snprintf(what, sizeof what, "prefill field case %zu", i);
        expect_rejected(what, gqa_attention_prefill(g_out.data, g_q.data, g_k.data, g_v.data, g_kc.data,
                                                    g_vc.data, &c, NULL),
                        cases[i].status, cases[i].message_part);
    }
}

static void decode_field_cases(void) {
    const field_case cases[] = {
        D_INT(struct_size, 0, VER, "struct_size (0)"),
        D_INT(struct_size, (int32_t)sizeof(gqa_decode_config) + 8, VER, "struct_size"),
        D_INT(abi_version, 7, VER, "abi_version (7)"),
        D_INT(dtype, 0, INV, "dtype (0)"), D_INT(dtype, INT32_MAX, INV, "dtype (2147483647)"),
        D_INT(device, 0, INV, "device (0)"), D_INT(device, -1, INV, "device (-1)"),
        D_INT(batch_size, 0, INV, "batch_size (0)"), D_INT(batch_size, -1, INV, "batch_size (-1)"),
        D_INT(num_q_heads, 0, INV, "num_q_heads (0)"), D_INT(num_q_heads, 5, INV, "num_q_heads (5) must be"),
        D_INT(num_kv_heads, -1, INV, "num_kv_heads (-1)"),
        D_INT(head_dim, 0, INV, "head_dim (0)"), D_INT(head_dim, 513, UNS, "head_dim (513)"),
        D_INT(max_seq_len, 0, INV, "max_seq_len (0)"), D_INT(max_seq_len, -5, INV, "max_seq_len (-5)"),
        D_INT(cache_len, -1, INV, "cache_len (-1)"),
        D_INT(cache_len, MAXLEN, OVF, "cache_len (8) must be less than max_seq_len (8)"),
        D_INT(cache_len, INT32_MAX, OVF, "cache_len (2147483647)"),
        D_INT(num_splits, -1, INV, "num_splits (-1)"), D_INT(num_splits, 257, INV, "num_splits (257)"),
        D_FLT(scale, -2.0f, INV, "scale (-2)"), D_FLT(scale, NAN, INV, "scale (nan)"),
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; ++i) {
        gqa_decode_config c = valid_decode();
        set_field(&c, &cases[i]);
        char what[64];
        snprintf(what, sizeof what, "decode field case %zu", i);
        expect_rejected(what, gqa_attention_decode(g_out.data, g_q.data, g_k.data, g_v.data, g_kc.data,
                                                   g_vc.data, &c, NULL),
                        cases[i].status, cases[i].message_part);
    }
}

static void pointer_and_size_cases(void) {
    gqa_prefill_config c = valid_prefill();
    void* o = g_out.data; const void *q = g_q.data, *k = g_k.data, *v = g_v.data;
    void *kc = g_kc.data, *vc = g_vc.data;
    expect_rejected("config NULL", gqa_attention_prefill(o, q, k, v, kc, vc, NULL, NULL), INV, "config is NULL");
    expect_rejected("out NULL", gqa_attention_prefill(NULL, q, k, v, kc, vc, &c, NULL), INV, "out is NULL");
    expect_rejected("q NULL", gqa_attention_prefill(o, NULL, k, v, kc, vc, &c, NULL), INV, "q is NULL");
    expect_rejected("k NULL", gqa_attention_prefill(o, q, NULL, v, kc, vc, &c, NULL), INV, "k is NULL");
    expect_rejected("v NULL", gqa_attention_prefill(o, q, k, NULL, kc, vc, &c, NULL), INV, "v is NULL");
    expect_rejected("k_cache only", gqa_attention_prefill(o, q, k, v, NULL, vc, &c, NULL), INV,
                    "k_cache is NULL but v_cache is not");
    expect_rejected("v_cache only", gqa_attention_prefill(o, q, k, v, kc, NULL, &c, NULL), INV,
                    "v_cache is NULL but k_cache is not");
    expect_rejected("start_pos without cache", gqa_attention_prefill(o, q, k, v, NULL, NULL, &c, NULL), INV,
                    "start_pos (2) must be 0 without caches");
    expect_rejected("out aliases q", gqa_attention_prefill((void*)q, q, k, v, kc, vc, &c, NULL), INV,
                    "out overlaps q");
    expect_rejected("caches alias", gqa_attention_prefill(o, q, k, v, kc, kc, &c, NULL), INV,
                    "k_cache overlaps v_cache");
    expect_rejected("k_cache aliases out", gqa_attention_prefill(o, q, k, v, o, vc, &c, NULL), INV,
                    "out overlaps k_cache");

    /* Sizes whose byte counts overflow 64 bits are rejected before any pointer is touched. */
    gqa_prefill_config huge = valid_prefill();
    huge.batch_size = INT32_MAX; huge.num_q_heads = INT32_MAX; huge.num_kv_heads = INT32_MAX;
    huge.head_dim = 256; huge.max_seq_len = INT32_MAX; huge.seq_len = 1; huge.start_pos = 0;
    expect_rejected("64-bit overflow", gqa_attention_prefill(o, q, k, v, kc, vc, &huge, NULL), INV,
                    "overflows a 64-bit size");

    gqa_decode_config d = valid_decode();
    expect_rejected("decode config NULL", gqa_attention_decode(o, q, k, v, kc, vc, NULL, NULL), INV, "config is NULL");
    expect_rejected("decode k_cache NULL", gqa_attention_decode(o, q, k, v, NULL, vc, &d, NULL), INV, "k_cache is NULL");
    expect_rejected("decode v_cache NULL", gqa_attention_decode(o, q, k, v, kc, NULL, &d, NULL), INV, "v_cache is NULL");
    expect_rejected("decode out NULL", gqa_attention_decode(NULL, q, k, v, kc, vc, &d, NULL), INV, "out is NULL");
    const int32_t lens_bad[B] = {3, MAXLEN};
    d.cache_lens = lens_bad;
    expect_rejected("cache_lens overflow", gqa_attention_decode(o, q, k, v, kc, vc, &d, NULL), OVF,
                    "cache_lens[1] (8) must be less than max_seq_len (8)");
    const int32_t lens_neg[B] = {-4, 1};
    d.cache_lens = lens_neg;
    expect_rejected("cache_lens negative", gqa_attention_decode(o, q, k, v, kc, vc, &d, NULL), INV,
                    "cache_lens[0] (-4) must be >= 0");

    /* CUDA requests: "device unavailable" without a usable GPU; with one, host pointers are refused. */
    int have_gpu = gqa_cuda_available() == GQA_STATUS_OK;
    gqa_prefill_config cu = valid_prefill();
    cu.device = GQA_DEVICE_CUDA;
    expect_rejected("cuda with host pointers", gqa_attention_prefill(o, q, k, v, kc, vc, &cu, NULL),
                    have_gpu ? INV : GQA_STATUS_DEVICE_UNAVAILABLE, have_gpu ? "" : "device is GQA_DEVICE_CUDA");
    cu.dtype = GQA_DTYPE_F32;
    cu.batch_size = 1; /* f32 doubles the element size: one sequence keeps every span inside its buffer */
    expect_rejected("cuda f32", gqa_attention_prefill(o, q, k, v, kc, vc, &cu, NULL),
                    have_gpu ? UNS : GQA_STATUS_DEVICE_UNAVAILABLE, have_gpu ? "f32" : "GQA_DEVICE_CUDA");
}

int main(void) {
    setup();
    prefill_field_cases();
    decode_field_cases();
    pointer_and_size_cases();
    /* A valid call after all of that still works and clears the last error. */
    gqa_prefill_config c = valid_prefill();
    gqa_status st = gqa_attention_prefill(g_out.data, g_q.data, g_k.data, g_v.data, g_kc.data, g_vc.data, &c, NULL);
    CHECK(st == GQA_STATUS_OK, "valid call after rejections: %s", gqa_last_error());
    CHECK(gqa_last_error()[0] == '\0', "last error not cleared: %s", gqa_last_error());
    fprintf(stderr, "test_rejections: %d bad inputs tried\n", g_cases);
    return test_summary("test_rejections");
}
