/* test_large_offsets.c: promise 5. Caches of more than 2^31 (and 2^32) elements work: the
 * caches are lazily allocated anonymous mappings (MAP_NORESERVE: only the touched pages exist),
 * batch 3 with max_seq_len * num_kv_heads * head_dim = 2^31 + 384 elements per sequence, so
 * sequence 1 starts past 2^31 elements and sequence 2 past 2^32 (a 32-bit offset would wrap
 * back onto sequence 0's data). Each result must equal, bit for bit, the same call on small
 * dense caches holding the same live prefix, and match the float64 reference; the big caches
 * must hold the new k, v at exactly the right positions and nothing else may change. */
#define _GNU_SOURCE
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>

#include "attn_case.h"

enum { kBatch = 3, kKvHeads = 2, kHeadDim = 64, kHeads = 6, kSmallT = 24 };
static const int64_t kBigT = (1 << 24) + 3; /* 2^24+3 positions x 2 heads x 64 = 2^31 + 384 */

typedef struct big_cache { uint8_t* k; uint8_t* v; size_t bytes; } big_cache;

static int map_big(big_cache* c, int32_t dtype) {
    c->bytes = (size_t)kBatch * (size_t)kBigT * kKvHeads * kHeadDim * dtype_size(dtype);
    c->k = mmap(NULL, c->bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    c->v = mmap(NULL, c->bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    if (c->k == MAP_FAILED || c->v == MAP_FAILED) {
        fprintf(stderr, "test_large_offsets: cannot map 2 x %zu bytes of lazily allocated memory\n", c->bytes);
        return 0;
    }
    return 1;
}

static void unmap_big(big_cache* c) {
    munmap(c->k, c->bytes);
    munmap(c->v, c->bytes);
}

static long rss_kib(void) {
    FILE* f = fopen("/proc/self/status", "r");
    char line[256];
    long kib = -1;
    while (f && fgets(line, sizeof line, f)) {
        if (!strncmp(line, "VmRSS:", 6)) kib = atol(line + 6);
    }
    if (f) fclose(f);
    return kib;
}

/* Copy the first `positions` positions of every sequence between a small [B, kSmallT, H, D]
 * cache and a big [B, kBigT, H, D] one (to_big: small -> big). */
static void copy_prefix(uint8_t* big, uint8_t* small, int64_t positions, size_t es, int to_big) {
    size_t row = (size_t)kKvHeads * kHeadDim * es;
    for (int64_t b = 0; b < kBatch; ++b) {
        uint8_t* pb = big + (size_t)(b * kBigT) * row;
        uint8_t* ps = small + (size_t)(b * kSmallT) * row;
        if (to_big) memcpy(pb, ps, (size_t)positions * row);
        else memcpy(ps, pb, (size_t)positions * row);
    }
}

/* Positions [from, from + n) of every sequence of the big cache are still zero (untouched). */
static int big_zero(const uint8_t* big, int64_t from, int64_t n, size_t es) {
    size_t row = (size_t)kKvHeads * kHeadDim * es;
    for (int64_t b = 0; b < kBatch; ++b) {
        const uint8_t* p = big + (size_t)(b * kBigT + from) * row;
        for (size_t i = 0; i < (size_t)n * row; ++i) {
            if (p[i]) return 0;
        }
    }
    return 1;
}

/* Runs case c (allocated with small caches of kSmallT positions) once on the small caches and
 * once on the big ones, and compares. */
static void run_pair(attn_case* c, const char* label) {
    big_cache big;
    if (!map_big(&big, c->dtype)) {
        CHECK(0, "%s: the lazily allocated caches could not be mapped", label);
        return;
    }
    long failures_before = test_failures;
    size_t es = dtype_size(c->dtype);
    int64_t live = kSmallT - 4; /* every start/cache_len + seq_len stays below this */
    int64_t n_out = attn_case_out_elems(c);
    double* ref = malloc((size_t)n_out * sizeof(double));
    uint8_t* ek = malloc(c->k_cache.bytes);
    uint8_t* ev = malloc(c->v_cache.bytes);
    uint8_t* small_out = malloc(c->out.bytes);
    copy_prefix(big.k, c->k_cache.data, live, es, 1);
    copy_prefix(big.v, c->v_cache.data, live, es, 1);

    /* Small dense caches: the reference result. */
    attn_case_reference(c, ref, ek, ev);
    attn_case_snapshot(c);
    gqa_status s = attn_case_run(c);
    CHECK(s == GQA_STATUS_OK, "%s (small caches): status %d: %s", label, (int)s, gqa_last_error());
    attn_case_check(c, label, ref, ek, ev);
    memcpy(small_out, c->out.data, c->out.bytes);

    /* The same call on the big caches. */
    fill_value(c->dtype, c->out.data, n_out, NAN);
    void* ks = c->k_cache.data;
    void* vs = c->v_cache.data;
    int64_t small_t = c->max_seq_len;
    c->max_seq_len = kBigT;
    c->k_cache.data = big.k;
    c->v_cache.data = big.v;
    s = attn_case_run(c);
    c->k_cache.data = ks;
    c->v_cache.data = vs;
    c->max_seq_len = small_t;
    CHECK(s == GQA_STATUS_OK, "%s (caches of %lld elements): status %d: %s", label,
              (long long)(kBatch * kBigT * kKvHeads * kHeadDim), (int)s, gqa_last_error());
    CHECK(memcmp(c->out.data, small_out, c->out.bytes) == 0,
              "%s: output with caches past 2^31/2^32 elements differs from the small-cache result", label);
    /* The big caches hold exactly the expected prefix and nothing was written beyond it. */
    uint8_t* back_k = calloc(1, c->k_cache.bytes);
    uint8_t* back_v = calloc(1, c->v_cache.bytes);
    memcpy(back_k, ek, c->k_cache.bytes);
    memcpy(back_v, ev, c->v_cache.bytes);
    copy_prefix(big.k, back_k, live, es, 0);
    copy_prefix(big.v, back_v, live, es, 0);
    CHECK(memcmp(back_k, ek, c->k_cache.bytes) == 0 && memcmp(back_v, ev, c->v_cache.bytes) == 0,
              "%s: the big caches' live prefix differs from the expected caches (wrong write offset?)", label);
    CHECK(big_zero(big.k, live, 64, es) && big_zero(big.v, live, 64, es),
              "%s: the big caches were written beyond the live prefix", label);
    CHECK(guards_intact(&c->out), "%s: guard band of out overwritten", label);
    fprintf(stderr, "  %-50s %s, resident memory %ld MiB of %zu MiB mapped\n", label,
            test_failures == failures_before ? "ok" : "FAILED", rss_kib() / 1024, 2 * big.bytes >> 20);
    free(back_k);
    free(back_v);
    free(ref);
    free(ek);
    free(ev);
    free(small_out);
    unmap_big(&big);
}

int main(void) {
    fprintf(stderr, "test_large_offsets: batch %d, max_seq_len %lld, %d kv heads, head_dim %d: %lld elements per "
            "sequence (2^31 = %lld), sequence 2 starts at element %lld\n", kBatch, (long long)kBigT, kKvHeads,
            kHeadDim, (long long)(kBigT * kKvHeads * kHeadDim), 1LL << 31,
            (long long)(2 * kBigT * kKvHeads * kHeadDim));
    attn_case c;
    static const int32_t lens[kBatch] = {5, 17, 9};
    attn_case_decode(&c, GQA_DTYPE_F16, kBatch, kHeads, kKvHeads, kHeadDim, kSmallT, 0, lens);
    attn_case_alloc(&c, 31);
    run_pair(&c, "decode f16, cache_lens {5, 17, 9}");
    attn_case_free(&c);

    attn_case_decode(&c, GQA_DTYPE_F32, kBatch, kHeads, kKvHeads, kHeadDim, kSmallT, 11, NULL);
    attn_case_alloc(&c, 32);
    run_pair(&c, "decode f32, cache_len 11");
    attn_case_free(&c);

    attn_case_prefill(&c, GQA_DTYPE_BF16, kBatch, 7, kHeads, kKvHeads, kHeadDim, kSmallT, 6, 1);
    attn_case_alloc(&c, 33);
    run_pair(&c, "prefill bf16 causal, start_pos 6, seq_len 7");
    attn_case_free(&c);

    attn_case_prefill(&c, GQA_DTYPE_F16, kBatch, 5, kHeads, kKvHeads, kHeadDim, kSmallT, 13, 0);
    attn_case_alloc(&c, 34);
    run_pair(&c, "prefill f16 non-causal, start_pos 13, seq_len 5");
    attn_case_free(&c);
    return test_summary("test_large_offsets");
}
