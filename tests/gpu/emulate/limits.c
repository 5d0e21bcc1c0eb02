/* limits.c: the CUDA backend on emulated devices with less shared memory or fewer SMs than
 * device 0 (an H100-like 132 SMs, 227 KB per block), and the host work of a call. Built and run
 * by emulate.sh.
 *   - A 99 KB device (sm_86/89/120: A10, L4, L40S, RTX 4090) runs every decode and prefill of
 *     head_dim 128, 256 and 512 with a shallower cp.async ring: the same bits as device 0
 *     (tensor-core prefill d512: smaller key tiles, within the tolerance).
 *   - A device too small for a kernel gets UNSUPPORTED before anything is written (prefill with
 *     caches included: no cache copy runs first), or the other kernel where it fits.
 *   - Device facts and kernel attributes are read and set once per device, not per call.
 *   - A launch that fails names the kernel that was launched.
 *   - GQA_CUDA_SMEM_LIMIT makes a large device run a small device's variants (same bits).
 * Shapes are small: every kernel runs its blocks on the CPU. */
#define _POSIX_C_SOURCE 200112L /* setenv */
#include <cuda_runtime_api.h>
#include <pthread.h>

#include "emu_control.h"
#include "gqa_test.h"

enum { PREFILL, DECODE };
enum { DEV_H100 = 0, DEV_99KB = 1, DEV_64KB = 2, DEV_48KB = 3, DEV_FRESH = 4 };

typedef struct {
    int op, dtype, batch, seq, hq, hkv, hd, max_seq, start;
} call_shape;

/* Host inputs of one call: q, k, v random; the cached prefix random, every later cache row and
 * out NaN (they must be written, never read). */
typedef struct {
    size_t nq, nk, nc; /* elements of q (and out), of k (and v), of each cache */
    uint16_t *q, *k, *v, *out, *kc, *vc;
    int32_t* lens; /* decode: per-sequence cache lengths */
} inputs;

typedef struct {
    gqa_status status;
    char error[600];
    uint16_t *out, *kc, *vc; /* after the call */
} result;

static inputs make_inputs(const call_shape* s) {
    inputs in;
    in.nq = (size_t)s->batch * s->seq * s->hq * s->hd;
    in.nk = (size_t)s->batch * s->seq * s->hkv * s->hd;
    in.nc = (size_t)s->batch * s->max_seq * s->hkv * s->hd;
    in.q = test_malloc(in.nq * 2); in.k = test_malloc(in.nk * 2); in.v = test_malloc(in.nk * 2);
    in.out = test_malloc(in.nq * 2); in.kc = test_malloc(in.nc * 2); in.vc = test_malloc(in.nc * 2);
    in.lens = test_malloc(sizeof(int32_t) * (size_t)s->batch);
    fill_random(s->dtype, in.q, in.nq); fill_random(s->dtype, in.k, in.nk); fill_random(s->dtype, in.v, in.nk);
    fill_value(s->dtype, in.out, in.nq, NAN); fill_value(s->dtype, in.kc, in.nc, NAN); fill_value(s->dtype, in.vc, in.nc, NAN);
    const size_t row = (size_t)s->hkv * s->hd;
    for (int b = 0; b < s->batch; ++b) {
        in.lens[b] = s->start + 37 * b % (s->max_seq - s->start); /* distinct lengths, all < max_seq */
        const int prefix = s->op == DECODE ? in.lens[b] : s->start;
        fill_random(s->dtype, in.kc + (size_t)b * s->max_seq * row, (int64_t)prefix * row);
        fill_random(s->dtype, in.vc + (size_t)b * s->max_seq * row, (int64_t)prefix * row);
    }
    return in;
}

static void free_inputs(inputs* in) {
    free(in->q); free(in->k); free(in->v); free(in->out); free(in->kc); free(in->vc); free(in->lens);
}

static void* to_device(const void* h, size_t bytes) {
    void* d = NULL;
    cudaMalloc(&d, bytes);
    cudaMemcpy(d, h, bytes, cudaMemcpyHostToDevice);
    return d;
}
static uint16_t* to_host(const void* d, size_t bytes) {
    uint16_t* h = test_malloc(bytes);
    cudaMemcpy(h, d, bytes, cudaMemcpyDeviceToHost);
    return h;
}

/* One call on `device` with the kernel choice `kernel` ("" = default; GQA_CUDA_PREFILL or
 * GQA_CUDA_DECODE by s->op) and, for decode, a workspace for automatic splits. */
static result run_on(int device, const char* kernel, const call_shape* s, const inputs* in, int with_workspace) {
    result r;
    cudaSetDevice(device);
    setenv(s->op == PREFILL ? "GQA_CUDA_PREFILL" : "GQA_CUDA_DECODE", kernel, 1);
    void *dq = to_device(in->q, in->nq * 2), *dk = to_device(in->k, in->nk * 2), *dv = to_device(in->v, in->nk * 2);
    void *dout = to_device(in->out, in->nq * 2), *dkc = to_device(in->kc, in->nc * 2), *dvc = to_device(in->vc, in->nc * 2);
    void* ws = NULL;
    if (s->op == PREFILL) {
        gqa_prefill_config c = GQA_PREFILL_CONFIG_INIT;
        c.dtype = s->dtype; c.device = GQA_DEVICE_CUDA; c.batch_size = s->batch; c.seq_len = s->seq;
        c.num_q_heads = s->hq; c.num_kv_heads = s->hkv; c.head_dim = s->hd; c.max_seq_len = s->max_seq;
        c.start_pos = s->start; c.causal = 1;
        r.status = gqa_attention_prefill(dout, dq, dk, dv, dkc, dvc, &c, NULL);
    } else {
        gqa_decode_config c = GQA_DECODE_CONFIG_INIT;
        c.dtype = s->dtype; c.device = GQA_DEVICE_CUDA; c.batch_size = s->batch; c.num_q_heads = s->hq;
        c.num_kv_heads = s->hkv; c.head_dim = s->hd; c.max_seq_len = s->max_seq; c.cache_lens = in->lens;
        uint64_t bytes = 0;
        if (with_workspace && gqa_decode_workspace_size(&c, &bytes) == GQA_STATUS_OK && bytes) {
            cudaMalloc(&ws, (size_t)bytes);
            c.workspace = ws;
            c.workspace_bytes = bytes;
        }
        r.status = gqa_attention_decode(dout, dq, dk, dv, dkc, dvc, &c, NULL);
    }
    snprintf(r.error, sizeof r.error, "%s", r.status ? gqa_last_error() : "");
    r.out = to_host(dout, in->nq * 2);
    r.kc = to_host(dkc, in->nc * 2);
    r.vc = to_host(dvc, in->nc * 2);
    cudaFree(dq); cudaFree(dk); cudaFree(dv); cudaFree(dout); cudaFree(dkc); cudaFree(dvc);
    if (ws) cudaFree(ws);
    unsetenv(s->op == PREFILL ? "GQA_CUDA_PREFILL" : "GQA_CUDA_DECODE");
    cudaSetDevice(DEV_H100);
    return r;
}

static void free_result(result* r) { free(r->out); free(r->kc); free(r->vc); }

static int has_nan(const uint16_t* x, size_t n, int dtype) {
    for (size_t i = 0; i < n; ++i) {
        const double f = load_elem(dtype, x, (int64_t)i);
        if (f != f) return 1;
    }
    return 0;
}

static const char* op_name(int op) { return op == PREFILL ? "prefill" : "decode"; }

/* The call on `device` gives exactly the bits of the same call on device 0 (no split: each block
 * walks the whole cache through its ring). */
static void expect_same_as_h100(int device, const char* kernel, const call_shape* s) {
    inputs in = make_inputs(s);
    result want = run_on(DEV_H100, kernel, s, &in, 0), got = run_on(device, kernel, s, &in, 0);
    CHECK(want.status == GQA_STATUS_OK, "%s hd%d kernel '%s' on device 0: %s", op_name(s->op), s->hd, kernel, want.error);
    CHECK(got.status == GQA_STATUS_OK, "%s hd%d kernel '%s' on device %d: %s", op_name(s->op), s->hd, kernel, device,
          got.error);
    if (want.status == GQA_STATUS_OK && got.status == GQA_STATUS_OK) {
        CHECK(!has_nan(want.out, in.nq, s->dtype), "%s hd%d '%s': NaN in out", op_name(s->op), s->hd, kernel);
        CHECK(memcmp(want.out, got.out, in.nq * 2) == 0, "%s hd%d '%s': out on device %d differs from device 0",
              op_name(s->op), s->hd, kernel, device);
        CHECK(memcmp(want.kc, got.kc, in.nc * 2) == 0 && memcmp(want.vc, got.vc, in.nc * 2) == 0,
              "%s hd%d '%s': caches on device %d differ from device 0", op_name(s->op), s->hd, kernel, device);
    }
    free_result(&want); free_result(&got); free_inputs(&in);
}

/* The call on `device` is rejected with `status`, naming shared memory, and writes nothing. */
static void expect_rejected_unwritten(int device, const char* kernel, const call_shape* s) {
    inputs in = make_inputs(s);
    result r = run_on(device, kernel, s, &in, 1);
    CHECK(r.status == GQA_STATUS_UNSUPPORTED, "%s hd%d '%s' on device %d: status %d (%s), want UNSUPPORTED",
          op_name(s->op), s->hd, kernel, device, (int)r.status, r.error);
    CHECK(strstr(r.error, "shared memory") != NULL, "%s hd%d: the message should name shared memory: %s",
          op_name(s->op), s->hd, r.error);
    CHECK(memcmp(r.out, in.out, in.nq * 2) == 0, "%s hd%d '%s' on device %d: a rejected call wrote out",
          op_name(s->op), s->hd, kernel, device);
    CHECK(memcmp(r.kc, in.kc, in.nc * 2) == 0 && memcmp(r.vc, in.vc, in.nc * 2) == 0,
          "%s hd%d '%s' on device %d: a rejected call wrote the caches", op_name(s->op), s->hd, kernel, device);
    fprintf(stderr, "limits: rejected as expected: %s\n", r.error);
    free_result(&r); free_inputs(&in);
}

/* Long enough that every kernel's cp.async ring wraps (>= 4 key tiles per block), so that a
 * missing barrier shows (barrier_check.sh runs this program). */
static const call_shape kDecode128 = {DECODE, GQA_DTYPE_F16, 2, 1, 8, 1, 128, 400, 300};
static const call_shape kDecode256 = {DECODE, GQA_DTYPE_BF16, 2, 1, 8, 1, 256, 400, 300};
static const call_shape kPrefill128 = {PREFILL, GQA_DTYPE_F16, 1, 70, 4, 1, 128, 400, 200};
static const call_shape kPrefill256 = {PREFILL, GQA_DTYPE_BF16, 1, 40, 4, 1, 256, 200, 100};
static const call_shape kDecode512 = {DECODE, GQA_DTYPE_F16, 1, 1, 4, 1, 512, 200, 150};
static const call_shape kPrefill512 = {PREFILL, GQA_DTYPE_BF16, 1, 20, 2, 1, 512, 100, 50};

/* The call on `device` succeeds and agrees with device 0 within the dtype's tolerance (another
 * tile size: the same arithmetic in another order). */
static void expect_close_to_h100(int device, const char* kernel, const call_shape* s) {
    inputs in = make_inputs(s);
    result want = run_on(DEV_H100, kernel, s, &in, 0), got = run_on(device, kernel, s, &in, 0);
    CHECK(want.status == GQA_STATUS_OK && got.status == GQA_STATUS_OK, "%s hd%d '%s' on device %d: %s %s",
          op_name(s->op), s->hd, kernel, device, want.error, got.error);
    if (want.status == GQA_STATUS_OK && got.status == GQA_STATUS_OK) {
        double worst = 0.0;
        for (size_t i = 0; i < in.nq; ++i) {
            const double d = fabs(load_elem(s->dtype, want.out, (int64_t)i) - load_elem(s->dtype, got.out, (int64_t)i));
            if (!(d <= worst)) worst = d;
        }
        CHECK(worst <= tolerance(s->dtype), "%s hd%d '%s' on device %d: differs from device 0 by %g", op_name(s->op),
              s->hd, kernel, device, worst);
    }
    free_result(&want); free_result(&got); free_inputs(&in);
}

static void test_99kb_device(void) {
    /* Tensor-core decode: 108,800 B (d128, 3 stages) and 143,616 B (d256, 2 stages) do not fit
     * 99 KB; SIMT decode d256 (3 stages) neither; the tensor-core prefill d256 fits exactly. */
    const char* kernels[2] = {"tensor_core", "simt"};
    for (int i = 0; i < 2; ++i) {
        expect_same_as_h100(DEV_99KB, kernels[i], &kDecode128);
        expect_same_as_h100(DEV_99KB, kernels[i], &kDecode256);
        expect_same_as_h100(DEV_99KB, kernels[i], &kPrefill128);
        expect_same_as_h100(DEV_99KB, kernels[i], &kPrefill256);
        expect_same_as_h100(DEV_99KB, kernels[i], &kDecode512);  /* 1-stage rings */
    }
    expect_same_as_h100(DEV_99KB, "", &kDecode128);
    /* d512: the SIMT prefill (68,736 B) runs as on device 0; the tensor-core prefill takes
     * 16-key tiles there (99,840 B instead of 166,400). */
    expect_same_as_h100(DEV_99KB, "simt", &kPrefill512);
    expect_close_to_h100(DEV_99KB, "tensor_core", &kPrefill512);
}

static void test_too_small_devices(void) {
    /* 64 KB: the tensor-core prefill d128 (87 KB) cannot run. Forced, the call is rejected and
     * the caches stay as they were (the cache copy must not run first); by default the SIMT
     * prefill (30 KB) runs instead, with its exact bits. */
    expect_rejected_unwritten(DEV_64KB, "tensor_core", &kPrefill128);
    {
        inputs in = make_inputs(&kPrefill128);
        result want = run_on(DEV_H100, "simt", &kPrefill128, &in, 0), got = run_on(DEV_64KB, "", &kPrefill128, &in, 0);
        CHECK(got.status == GQA_STATUS_OK, "prefill hd128 on a 64 KB device by default: %s", got.error);
        CHECK(got.status != GQA_STATUS_OK || memcmp(want.out, got.out, in.nq * 2) == 0,
              "prefill hd128 on a 64 KB device: not the SIMT prefill's bits");
        free_result(&want); free_result(&got); free_inputs(&in);
    }
    /* 48 KB: no decode kernel of head_dim 256 fits (1-stage tensor cores 76 KB, 2-stage SIMT 77 KB). */
    expect_rejected_unwritten(DEV_48KB, "", &kDecode256);
    expect_rejected_unwritten(DEV_48KB, "simt", &kDecode256);
    /* 64 KB: no prefill kernel of head_dim 512 fits (SIMT 68,736 B, tensor cores 99,840 B). */
    expect_rejected_unwritten(DEV_64KB, "", &kPrefill512);
}

/* After a first call has prepared the device, a call makes no device-attribute queries, sets
 * no kernel attribute, asks for no occupancy, checks each tensor's pointer once, and launches
 * exactly its kernels. */
static void test_host_work_per_call(void) {
    const call_shape* shapes[2] = {&kDecode128, &kPrefill128};
    const long want_pointers[2] = {7, 6}; /* decode: 6 tensors + the workspace */
    const long want_launches[2] = {2, 2}; /* decode: attention + combine; prefill: cache copy + attention */
    for (int i = 0; i < 2; ++i) {
        inputs in = make_inputs(shapes[i]);
        result warm = run_on(DEV_H100, "", shapes[i], &in, 1);
        free_result(&warm);
        const emu_counters before = emu_get_counters();
        result r = run_on(DEV_H100, "", shapes[i], &in, 1);
        const emu_counters after = emu_get_counters();
        CHECK(r.status == GQA_STATUS_OK, "%s: %s", op_name(shapes[i]->op), r.error);
        const long attrs = after.device_attribute_queries - before.device_attribute_queries;
        const long sets = after.func_attribute_sets - before.func_attribute_sets;
        const long occ = after.occupancy_queries - before.occupancy_queries;
        const long ptrs = after.pointer_queries - before.pointer_queries;
        const long launches = after.launches - before.launches;
        CHECK(attrs == 0, "%s: %ld cudaDeviceGetAttribute calls in a call after the first", op_name(shapes[i]->op), attrs);
        CHECK(sets == 0, "%s: %ld cudaFuncSetAttribute calls in a call after the first", op_name(shapes[i]->op), sets);
        CHECK(occ == 0, "%s: %ld occupancy queries in a call after the first", op_name(shapes[i]->op), occ);
        CHECK(ptrs == want_pointers[i], "%s: %ld cudaPointerGetAttributes calls, want %ld (one per tensor)",
              op_name(shapes[i]->op), ptrs, want_pointers[i]);
        CHECK(launches == want_launches[i], "%s: %ld launches, want %ld", op_name(shapes[i]->op), launches,
              want_launches[i]);
        fprintf(stderr, "limits: %s host work per call: %ld attribute queries, %ld attribute sets, %ld occupancy "
                "queries, %ld pointer queries, %ld launches\n", op_name(shapes[i]->op), attrs, sets, occ, ptrs, launches);
        free_result(&r); free_inputs(&in);
    }
}

/* The message of a failed launch names the kernel that was launched. */
static void test_launch_failure_names_kernel(void) {
    const char* kernels[2] = {"tensor_core", "simt"};
    const char* names[2] = {"decode_tc_kernel", "decode_kernel"};
    for (int i = 0; i < 2; ++i) {
        inputs in = make_inputs(&kDecode128);
        emu_fail_launch(1);
        result r = run_on(DEV_H100, kernels[i], &kDecode128, &in, 0);
        emu_fail_launch(0);
        char want[64];
        snprintf(want, sizeof want, "launching %s ", names[i]);
        CHECK(r.status == GQA_STATUS_CUDA_ERROR, "decode '%s' with a failing launch: status %d", kernels[i], (int)r.status);
        CHECK(strstr(r.error, want) != NULL, "decode '%s': the message should say '%s': %s", kernels[i], want, r.error);
        free_result(&r); free_inputs(&in);
    }
}

/* The split choice follows each device's SM count (facts are per device), also when several
 * threads ask first at once. */
static uint64_t workspace_on(int device) {
    cudaSetDevice(device);
    gqa_decode_config c = GQA_DECODE_CONFIG_INIT;
    c.dtype = GQA_DTYPE_F16; c.device = GQA_DEVICE_CUDA; c.batch_size = 1; c.num_q_heads = 8;
    c.num_kv_heads = 2; c.head_dim = 64; c.max_seq_len = 4096;
    uint64_t bytes = 0;
    if (gqa_decode_workspace_size(&c, &bytes) != GQA_STATUS_OK) bytes = 0;
    cudaSetDevice(DEV_H100);
    return bytes;
}
static void* workspace_thread(void* out) {
    *(uint64_t*)out = workspace_on(DEV_FRESH);
    return NULL;
}
static void test_facts_per_device(void) {
    /* batch 1 x 2 KV heads = 2 blocks; automatic splits ceil(2 x SMs / 2) = SMs. */
    const uint64_t per_split = (uint64_t)8 * (64 + 2) * 4;
    CHECK(workspace_on(DEV_H100) == 132 * per_split, "workspace on device 0: %llu", (unsigned long long)workspace_on(DEV_H100));
    CHECK(workspace_on(DEV_99KB) == 58 * per_split, "workspace on device 1: %llu", (unsigned long long)workspace_on(DEV_99KB));
    pthread_t threads[8];
    uint64_t got[8];
    for (int i = 0; i < 8; ++i) pthread_create(&threads[i], NULL, workspace_thread, &got[i]);
    for (int i = 0; i < 8; ++i) pthread_join(threads[i], NULL);
    for (int i = 0; i < 8; ++i)
        CHECK(got[i] == 20 * per_split, "thread %d: workspace on a fresh 20-SM device %llu", i, (unsigned long long)got[i]);
}

/* The launches a call logs at DEBUG, concatenated. */
static char g_log[8192];
static void log_to_buffer(int32_t level, const char* message, void* user) {
    (void)level; (void)user;
    if (strstr(message, "cuda ") == message) strncat(g_log, message, sizeof g_log - strlen(g_log) - 2), strcat(g_log, "\n");
}

static void test_smem_limit_variable(void) {
    /* Device 0 told it has 99 KB: the 2-stage tensor-core decode runs, with the 99 KB device's bits. */
    inputs in = make_inputs(&kDecode128);
    result small = run_on(DEV_99KB, "tensor_core", &kDecode128, &in, 0);
    g_log[0] = '\0';
    const int32_t level = gqa_get_log_level();
    gqa_set_log_callback(log_to_buffer, NULL);
    gqa_set_log_level(GQA_LOG_DEBUG);
    setenv("GQA_CUDA_SMEM_LIMIT", "101376", 1);
    result limited = run_on(DEV_H100, "tensor_core", &kDecode128, &in, 0);
    unsetenv("GQA_CUDA_SMEM_LIMIT");
    gqa_set_log_level(level);
    gqa_set_log_callback(NULL, NULL);
    CHECK(limited.status == GQA_STATUS_OK, "decode with GQA_CUDA_SMEM_LIMIT=101376: %s", limited.error);
    CHECK(strstr(g_log, "decode_tc_kernel (head_dim 128, 2-stage ring)") != NULL,
          "GQA_CUDA_SMEM_LIMIT=101376 should run the 2-stage ring; the launches were:\n%s", g_log);
    CHECK(small.status == GQA_STATUS_OK && memcmp(small.out, limited.out, in.nq * 2) == 0,
          "decode with GQA_CUDA_SMEM_LIMIT differs from the 99 KB device");
    free_result(&small); free_result(&limited);
    /* Anything but a positive decimal number of bytes is rejected before anything is written. */
    const char* bad[] = {"abc", "0", "-5", " 5", "+5", "5x", "99999999999999999999999"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; ++i) {
        setenv("GQA_CUDA_SMEM_LIMIT", bad[i], 1);
        result r = run_on(DEV_H100, "", &kDecode128, &in, 0);
        unsetenv("GQA_CUDA_SMEM_LIMIT");
        CHECK(r.status == GQA_STATUS_INVALID_ARGUMENT && strstr(r.error, "GQA_CUDA_SMEM_LIMIT") != NULL,
              "GQA_CUDA_SMEM_LIMIT=\"%s\": status %d (%s)", bad[i], (int)r.status, r.error);
        CHECK(memcmp(r.out, in.out, in.nq * 2) == 0 && memcmp(r.kc, in.kc, in.nc * 2) == 0,
              "GQA_CUDA_SMEM_LIMIT=\"%s\": a rejected call wrote", bad[i]);
        free_result(&r);
    }
    free_inputs(&in);
}

int main(void) {
    emu_set_device(DEV_99KB, 58, 99 * 1024);
    emu_set_device(DEV_64KB, 16, 64 * 1024);
    emu_set_device(DEV_48KB, 16, 48 * 1024);
    emu_set_device(DEV_FRESH, 20, 99 * 1024);
    test_host_work_per_call();
    test_launch_failure_names_kernel();
    test_facts_per_device();
    test_99kb_device();
    test_too_small_devices();
    test_smem_limit_variable();
    return test_summary("limits");
}
