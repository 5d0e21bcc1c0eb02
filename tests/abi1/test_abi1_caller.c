/* test_abi1_caller.c: a caller built against the gqa.h of ABI 1 (libgqa 0.1, frozen in this
 * folder) runs against the current libgqa: the config initializers write no byte past the
 * ABI-1 structs, prefill and decode match a float64 reference, the workspace size is answered,
 * and a config size that was never published (too small, or from a "future" gqa.h) is
 * GQA_STATUS_VERSION_MISMATCH naming both sizes, with nothing written.
 *
 * Every "gqa.h" here is this folder's frozen copy: tests/abi1 is the first include folder, and
 * the current include/ is not on the path (CMakeLists.txt). */
#include "gqa.h"

#include <stddef.h>

#include "gqa_test.h"

/* The sizes ABI 1 published; the library must accept them for ever. */
#define ABI1_PREFILL_SIZE 56
#define ABI1_DECODE_SIZE 72
_Static_assert(sizeof(gqa_prefill_config) == ABI1_PREFILL_SIZE, "not the ABI-1 gqa.h");
_Static_assert(sizeof(gqa_decode_config) == ABI1_DECODE_SIZE, "not the ABI-1 gqa.h");

enum { B = 2, S = 5, HQ = 6, HKV = 2, D = 40, MAXLEN = 23, START = 9 };
#define NQ ((size_t)B * S * HQ * D)
#define NK ((size_t)B * S * HKV * D)
#define NC ((size_t)B * MAXLEN * HKV * D)

/* An initializer's result in buf: the ABI-1 defaults `want` (size bytes), and the bytes after
 * them still their guard value 0xA5. */
static void check_initialized(const char* name, const unsigned char* buf, size_t buf_size, const void* want,
                              size_t size) {
    CHECK(memcmp(buf, want, size) == 0, "%s differs from the ABI-1 macro", name);
    int intact = 1;
    for (size_t i = size; i < buf_size; ++i) intact &= buf[i] == 0xA5;
    CHECK(intact, "%s wrote past the %zu bytes of an ABI-1 config", name, size);
}

/* The initializers fill exactly the ABI-1 struct. */
static void check_initializers(void) {
    _Alignas(gqa_decode_config) unsigned char buf[ABI1_DECODE_SIZE + 64];
    const gqa_prefill_config want_p = GQA_PREFILL_CONFIG_INIT;
    memset(buf, 0xA5, sizeof buf);
    gqa_prefill_config_init((gqa_prefill_config*)(void*)buf);
    check_initialized("gqa_prefill_config_init", buf, sizeof buf, &want_p, ABI1_PREFILL_SIZE);
    const gqa_decode_config want_d = GQA_DECODE_CONFIG_INIT;
    memset(buf, 0xA5, sizeof buf);
    gqa_decode_config_init((gqa_decode_config*)(void*)buf);
    check_initialized("gqa_decode_config_init", buf, sizeof buf, &want_d, ABI1_DECODE_SIZE);
}

static guarded_buf g_q, g_k, g_v, g_out, g_kc, g_vc;
static unsigned char *g_kc_before, *g_vc_before;

static void fill_inputs(int32_t dtype) {
    const size_t es = dtype_size(dtype);
    fill_random(dtype, g_q.data, NQ);
    fill_random(dtype, g_k.data, NK);
    fill_random(dtype, g_v.data, NK);
    fill_random(dtype, g_kc.data, NC);
    fill_random(dtype, g_vc.data, NC);
    fill_value(dtype, g_out.data, NQ, NAN);
    memcpy(g_kc_before, g_kc.data, NC * es);
    memcpy(g_vc_before, g_vc.data, NC * es);
}

/* The call wrote the new tokens' k/v into the caches at their positions and nothing else, and
 * out matches the float64 reference. seq new tokens per sequence, the first at starts[b]. */
static void check_result(const char* what, int32_t dtype, int64_t seq, const int32_t* starts) {
    const size_t es = dtype_size(dtype);
    const attn_shape s = {dtype, B, seq, HQ, HKV, D, MAXLEN, starts, 1, 0.0, NULL};
    append_rows(&s, g_kc_before, g_k.data);
    append_rows(&s, g_vc_before, g_v.data);
    CHECK(memcmp(g_kc.data, g_kc_before, NC * es) == 0 && memcmp(g_vc.data, g_vc_before, NC * es) == 0,
          "%s (%s): caches are not the old caches + the new k/v", what, dtype_name(dtype));
    const double err = attention_error(&s, g_q.data, g_kc.data, g_vc.data, g_out.data);
    CHECK(err <= tolerance(dtype), "%s (%s): max error %.3g > %.3g", what, dtype_name(dtype), err, tolerance(dtype));
    CHECK(guards_intact(&g_out) && guards_intact(&g_kc) && guards_intact(&g_vc), "%s wrote outside a buffer", what);
}

static void check_prefill(int32_t dtype) {
    fill_inputs(dtype);
    gqa_prefill_config c;
    gqa_prefill_config_init(&c);
    c.dtype = dtype;
    c.batch_size = B; c.seq_len = S; c.num_q_heads = HQ; c.num_kv_heads = HKV; c.head_dim = D;
    c.max_seq_len = MAXLEN; c.start_pos = START;
    gqa_status st = gqa_attention_prefill(g_out.data, g_q.data, g_k.data, g_v.data, g_kc.data, g_vc.data, &c, NULL);
    CHECK(st == GQA_STATUS_OK, "ABI-1 prefill (%s): status %d: %s", dtype_name(dtype), (int)st, gqa_last_error());
    const int32_t starts[B] = {START, START};
    check_result("ABI-1 prefill", dtype, S, starts);
}

static void check_decode(int32_t dtype, int32_t num_splits) {
    fill_inputs(dtype);
    const int32_t lens[B] = {0, MAXLEN - 1};
    gqa_decode_config c;
    gqa_decode_config_init(&c);
    c.dtype = dtype;
    c.batch_size = B; c.num_q_heads = HQ; c.num_kv_heads = HKV; c.head_dim = D; c.max_seq_len = MAXLEN;
    c.cache_lens = lens;
    c.num_splits = num_splits;
    gqa_status st = gqa_attention_decode(g_out.data, g_q.data, g_k.data, g_v.data, g_kc.data, g_vc.data, &c, NULL);
    CHECK(st == GQA_STATUS_OK, "ABI-1 decode (%s, splits %d): status %d: %s", dtype_name(dtype), num_splits, (int)st,
          gqa_last_error());
    check_result(num_splits ? "ABI-1 decode (split)" : "ABI-1 decode", dtype, 1, lens);
}

static void check_workspace_size(void) {
    gqa_decode_config c = GQA_DECODE_CONFIG_INIT;
    c.batch_size = B; c.num_q_heads = HQ; c.num_kv_heads = HKV; c.head_dim = D; c.max_seq_len = MAXLEN;
    uint64_t bytes = 123;
    gqa_status st = gqa_decode_workspace_size(&c, &bytes);
    CHECK(st == GQA_STATUS_OK && bytes == 0, "ABI-1 CPU workspace size: status %d, %llu bytes", (int)st,
          (unsigned long long)bytes);
    c.device = GQA_DEVICE_CUDA;
    st = gqa_decode_workspace_size(&c, &bytes);
    CHECK(st == (gqa_cuda_available() == GQA_STATUS_OK ? GQA_STATUS_OK : GQA_STATUS_DEVICE_UNAVAILABLE),
          "ABI-1 CUDA workspace size: status %d: %s", (int)st, gqa_last_error());
}

/* A config of a gqa.h newer than the library: an ABI-1 struct with a field appended. */
typedef struct {
    gqa_prefill_config abi1;
    int32_t appended;
    int32_t appended2;
} future_prefill_config;
typedef struct {
    gqa_decode_config abi1;
    int64_t appended;
} future_decode_config;

/* A call with this struct_size is VERSION_MISMATCH, names the size and the ABI-1 size, and
 * writes nothing. */
static void check_unknown_size(int decode, uint32_t struct_size) {
    fill_inputs(GQA_DTYPE_F16);
    unsigned char out_before[NQ * 2];
    memcpy(out_before, g_out.data, sizeof out_before);
    gqa_status st;
    if (decode) {
        future_decode_config f;
        memset(&f, 0, sizeof f);
        gqa_decode_config_init(&f.abi1);
        f.abi1.struct_size = struct_size;
        f.abi1.batch_size = B; f.abi1.num_q_heads = HQ; f.abi1.num_kv_heads = HKV; f.abi1.head_dim = D;
        f.abi1.max_seq_len = MAXLEN; f.abi1.cache_len = START;
        f.appended = 1;
        st = gqa_attention_decode(g_out.data, g_q.data, g_k.data, g_v.data, g_kc.data, g_vc.data, &f.abi1, NULL);
    } else {
        future_prefill_config f;
        memset(&f, 0, sizeof f);
        gqa_prefill_config_init(&f.abi1);
        f.abi1.struct_size = struct_size;
        f.abi1.batch_size = B; f.abi1.seq_len = S; f.abi1.num_q_heads = HQ; f.abi1.num_kv_heads = HKV;
        f.abi1.head_dim = D; f.abi1.max_seq_len = MAXLEN; f.abi1.start_pos = START;
        f.appended = 1;
        st = gqa_attention_prefill(g_out.data, g_q.data, g_k.data, g_v.data, g_kc.data, g_vc.data, &f.abi1, NULL);
    }
    const char* what = decode ? "decode" : "prefill";
    const char* msg = gqa_last_error();
    char given[48];
    snprintf(given, sizeof given, "struct_size (%u)", struct_size);
    const char* known = decode ? "72" : "56";
    CHECK(st == GQA_STATUS_VERSION_MISMATCH, "%s struct_size %u: status %d, want VERSION_MISMATCH", what,
          struct_size, (int)st);
    CHECK(strstr(msg, given) && strstr(msg, known), "%s struct_size %u: message '%s' lacks '%s' or the known size %s",
          what, struct_size, msg, given, known);
    CHECK(memcmp(g_out.data, out_before, sizeof out_before) == 0, "%s struct_size %u: out was written", what, struct_size);
    CHECK(memcmp(g_kc.data, g_kc_before, NC * 2) == 0 && memcmp(g_vc.data, g_vc_before, NC * 2) == 0,
          "%s struct_size %u: a cache was written", what, struct_size);
}

int main(void) {
    g_q = guarded_alloc(NQ * 4); g_out = guarded_alloc(NQ * 4);
    g_k = guarded_alloc(NK * 4); g_v = guarded_alloc(NK * 4);
    g_kc = guarded_alloc(NC * 4); g_vc = guarded_alloc(NC * 4);
    g_kc_before = (unsigned char*)test_malloc(NC * 4);
    g_vc_before = (unsigned char*)test_malloc(NC * 4);

    check_initializers();
    const int32_t dtypes[] = {GQA_DTYPE_F16, GQA_DTYPE_BF16, GQA_DTYPE_F32};
    for (int t = 0; t < 3; ++t) {
        check_prefill(dtypes[t]);
        check_decode(dtypes[t], 0);
        check_decode(dtypes[t], 3);
    }
    check_workspace_size();
    check_unknown_size(0, (uint32_t)sizeof(future_prefill_config));
    check_unknown_size(1, (uint32_t)sizeof(future_decode_config));
    check_unknown_size(0, ABI1_PREFILL_SIZE - 4); /* never published: a field short */
    check_unknown_size(1, ABI1_DECODE_SIZE - 8);
    check_unknown_size(0, 0);

    free(g_kc_before); free(g_vc_before);
    guarded_free(&g_q); guarded_free(&g_out); guarded_free(&g_k); guarded_free(&g_v);
    guarded_free(&g_kc); guarded_free(&g_vc);
    return test_summary("test_abi1_caller");
}
