/* sweep.c: prefill and decode over many shapes against the float64 reference of gqa_test.h,
 * checking every output element and the exact cache bytes. Built by emulate.sh for the CPU
 * emulation of the CUDA kernels (too slow for a GPU run to need it: test_gpu.py covers more). */
#define _POSIX_C_SOURCE 200112L /* setenv */
#include <cuda_runtime_api.h>
#include <stdlib.h>

#include "gqa_test.h"

static void* dev(const void* h, size_t n) { void* d; cudaMalloc(&d, n); cudaMemcpy(d, h, n, cudaMemcpyHostToDevice); return d; }
static int fails = 0, cases = 0;

static void prefill(int32_t dt, int B, int S, int Hq, int Hkv, int D, int start, int maxs, int causal, int cache) {
    size_t nq = (size_t)B * S * Hq * D, nk = (size_t)B * S * Hkv * D, nc = (size_t)B * maxs * Hkv * D;
    uint16_t *q = malloc(nq * 2), *k = malloc(nk * 2), *v = malloc(nk * 2), *out = malloc(nq * 2);
    uint16_t* kvc = malloc(2 * nc * 2); /* k cache then v cache (expected contents) */
    fill_random(dt, q, nq); fill_random(dt, k, nk); fill_random(dt, v, nk);
    fill_value(dt, out, nq, NAN);
    fill_value(dt, kvc, 2 * nc, NAN);
    int starts[512];
    for (int b = 0; b < B; ++b) {
        starts[b] = cache ? start : 0;
        fill_random(dt, kvc + (size_t)b * maxs * Hkv * D, (size_t)starts[b] * Hkv * D);
        fill_random(dt, kvc + nc + (size_t)b * maxs * Hkv * D, (size_t)starts[b] * Hkv * D);
    }
    void *dq = dev(q, nq * 2), *dk = dev(k, nk * 2), *dv = dev(v, nk * 2), *dout = dev(out, nq * 2);
    void *dkc = dev(kvc, nc * 2), *dvc = dev(kvc + nc, nc * 2);
    gqa_prefill_config c = GQA_PREFILL_CONFIG_INIT;
    c.dtype = dt; c.device = GQA_DEVICE_CUDA; c.batch_size = B; c.seq_len = S; c.num_q_heads = Hq; c.num_kv_heads = Hkv;
    c.head_dim = D; c.max_seq_len = cache ? maxs : 0; c.start_pos = cache ? start : 0; c.causal = causal;
    int st = gqa_attention_prefill(dout, dq, dk, dv, cache ? dkc : NULL, cache ? dvc : NULL, &c, NULL);
    ++cases;
    if (st) { printf("FAIL status %d %s\n", st, gqa_last_error()); ++fails; return; }
    cudaMemcpy(out, dout, nq * 2, cudaMemcpyDeviceToHost);
    /* expected caches (without caches: the keys the queries see, at positions 0 ..) */
    const attn_shape shape = {dt, B, S, Hq, Hkv, D, maxs, starts, causal, 0.0};
    append_rows(&shape, kvc, k);
    append_rows(&shape, kvc + nc, v);
    int sameS = 1;
    if (cache) {
        uint16_t* got = malloc(nc * 2);
        cudaMemcpy(got, dkc, nc * 2, cudaMemcpyDeviceToHost); sameS &= memcmp(got, kvc, nc * 2) == 0;
        cudaMemcpy(got, dvc, nc * 2, cudaMemcpyDeviceToHost); sameS &= memcmp(got, kvc + nc, nc * 2) == 0;
        free(got);
    }
    double e = attention_error(&shape, q, kvc, kvc + nc, out);
    int ok = e <= tolerance(dt) && sameS;
    if (!ok) ++fails;
    printf("%s prefill dt%d B%d S%d %d:%d D%d start%d max%d causal%d cache%d err %.3g cachebytes %s\n", ok ? "ok  " : "FAIL",
           dt, B, S, Hq, Hkv, D, start, maxs, causal, cache, e, sameS ? "ok" : "BAD");
    cudaFree(dq); cudaFree(dk); cudaFree(dv); cudaFree(dout); cudaFree(dkc); cudaFree(dvc);
    free(q); free(k); free(v); free(out); free(kvc);
}

static void decode(int32_t dt, int B, int Hq, int Hkv, int D, int maxs, const int* lens, int splits, int ws_on) {
    size_t nq = (size_t)B * Hq * D, nk = (size_t)B * Hkv * D, nc = (size_t)B * maxs * Hkv * D;
    uint16_t *q = malloc(nq * 2), *k = malloc(nk * 2), *v = malloc(nk * 2), *out = malloc(nq * 2);
    uint16_t* kvc = malloc(2 * nc * 2);
    fill_random(dt, q, nq); fill_random(dt, k, nk); fill_random(dt, v, nk);
    fill_value(dt, out, nq, NAN);
    fill_value(dt, kvc, 2 * nc, NAN);
    for (int b = 0; b < B; ++b) {
        fill_random(dt, kvc + (size_t)b * maxs * Hkv * D, (size_t)lens[b] * Hkv * D);
        fill_random(dt, kvc + nc + (size_t)b * maxs * Hkv * D, (size_t)lens[b] * Hkv * D);
    }
    void *dq = dev(q, nq * 2), *dk = dev(k, nk * 2), *dv = dev(v, nk * 2), *dout = dev(out, nq * 2);
    void *dkc = dev(kvc, nc * 2), *dvc = dev(kvc + nc, nc * 2);
    gqa_decode_config c = GQA_DECODE_CONFIG_INIT;
    c.dtype = dt; c.device = GQA_DEVICE_CUDA; c.batch_size = B; c.num_q_heads = Hq; c.num_kv_heads = Hkv;
    c.head_dim = D; c.max_seq_len = maxs; c.cache_lens = lens; c.num_splits = splits;
    uint64_t bytes = 0; void* ws = NULL;
    if (ws_on) { gqa_decode_workspace_size(&c, &bytes); if (bytes) { cudaMalloc(&ws, bytes); c.workspace = ws; c.workspace_bytes = bytes; } }
    int st = gqa_attention_decode(dout, dq, dk, dv, dkc, dvc, &c, NULL);
    ++cases;
    if (st) { printf("FAIL status %d %s\n", st, gqa_last_error()); ++fails; return; }
    cudaMemcpy(out, dout, nq * 2, cudaMemcpyDeviceToHost);
    const attn_shape shape = {dt, B, 1, Hq, Hkv, D, maxs, lens, 1, 0.0};
    append_rows(&shape, kvc, k);
    append_rows(&shape, kvc + nc, v);
    int sameS = 1; uint16_t* got = malloc(nc * 2);
    cudaMemcpy(got, dkc, nc * 2, cudaMemcpyDeviceToHost); sameS &= memcmp(got, kvc, nc * 2) == 0;
    cudaMemcpy(got, dvc, nc * 2, cudaMemcpyDeviceToHost); sameS &= memcmp(got, kvc + nc, nc * 2) == 0;
    free(got);
    double e = attention_error(&shape, q, kvc, kvc + nc, out);
    int ok = e <= tolerance(dt) && sameS;
    if (!ok) ++fails;
    printf("%s decode dt%d B%d %d:%d D%d max%d len0 %d splits%d ws%llu err %.3g cachebytes %s\n", ok ? "ok  " : "FAIL", dt, B,
           Hq, Hkv, D, maxs, lens[0], splits, (unsigned long long)bytes, e, sameS ? "ok" : "BAD");
    cudaFree(dq); cudaFree(dk); cudaFree(dv); cudaFree(dout); cudaFree(dkc); cudaFree(dvc); if (ws) cudaFree(ws);
    free(q); free(k); free(v); free(out); free(kvc);
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
    printf("%d cases, %d failed\n", cases, fails);
    return fails != 0;
}
