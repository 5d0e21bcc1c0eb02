/* test_determinism.c: promise 3. The same inputs give bitwise identical outputs and caches on
 * any CPU thread count (gqa_set_num_threads 1, 2, 3, 8) and on repeated calls. */
#include <math.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "attn_case.h"

static const int32_t kThreads[] = {1, 2, 3, 8};
enum { kRepeats = 3 };

static void run_case(attn_case* c, const char* label) {
    attn_case_alloc(c, 99);
    size_t out_bytes = c->out.bytes, cache_bytes = c->k_cache.bytes;
    int64_t n_out = attn_case_out_elems(c);
    uint8_t* k0 = malloc(cache_bytes + 1);
    uint8_t* v0 = malloc(cache_bytes + 1);
    uint8_t* first_out = malloc(out_bytes + 1);
    uint8_t* first_k = malloc(cache_bytes + 1);
    uint8_t* first_v = malloc(cache_bytes + 1);
    double* ref = malloc((size_t)n_out * sizeof(double));
    memcpy(k0, c->k_cache.data, cache_bytes);
    memcpy(v0, c->v_cache.data, cache_bytes);
    attn_case_reference(c, ref, first_k, first_v);
    attn_case_snapshot(c);

    int runs = 0;
    for (size_t t = 0; t < sizeof kThreads / sizeof *kThreads; ++t) {
        CHECK(gqa_set_num_threads(kThreads[t]) == GQA_STATUS_OK, "gqa_set_num_threads(%d) failed", kThreads[t]);
        CHECK(gqa_get_num_threads() == kThreads[t], "gqa_get_num_threads() is %d after setting %d",
                  gqa_get_num_threads(), kThreads[t]);
        for (int r = 0; r < kRepeats; ++r) {
            memcpy(c->k_cache.data, k0, cache_bytes);
            memcpy(c->v_cache.data, v0, cache_bytes);
            fill_value(c->dtype, c->out.data, n_out, NAN);
            gqa_status s = attn_case_run(c);
            CHECK(s == GQA_STATUS_OK, "%s threads %d: status %d: %s", label, kThreads[t], (int)s, gqa_last_error());
            if (runs == 0) {
                attn_case_check(c, label, ref, first_k, first_v); /* correct, not just repeatable */
                memcpy(first_out, c->out.data, out_bytes);
            } else {
                CHECK(memcmp(c->out.data, first_out, out_bytes) == 0,
                          "%s: output with %d threads (repeat %d) differs bitwise from 1 thread", label, kThreads[t], r);
                CHECK(memcmp(c->k_cache.data, first_k, cache_bytes) == 0 &&
                          memcmp(c->v_cache.data, first_v, cache_bytes) == 0,
                          "%s: caches with %d threads (repeat %d) differ from 1 thread", label, kThreads[t], r);
            }
            ++runs;
        }
    }
    gqa_set_num_threads(0);
    fprintf(stderr, "  %-60s %d runs bitwise identical\n", label, runs);
    free(k0);
    free(v0);
    free(first_out);
    free(first_k);
    free(first_v);
    free(ref);
    attn_case_free(c);
}

/* Switching the thread count between calls resizes the CPU backend's pool: no result may change,
 * no call may return while a worker is still in it, and none may hang. A spinning thread makes
 * the scheduler preempt the pool's workers at awkward moments. A watchdog turns a hang into a
 * failure (SIGALRM) instead of a ctest timeout. */
static atomic_int stop_spinning;
static void* spin(void* arg) {
    volatile unsigned long x = 0;
    (void)arg;
    while (!atomic_load(&stop_spinning)) ++x;
    return NULL;
}

static void on_watchdog(int sig) {
    (void)sig;
    static const char msg[] = "FAIL: switch_threads: a call did not return within 60 s (thread pool hang)\n";
    if (write(2, msg, sizeof msg - 1) < 0) _exit(3);
    _exit(3);
}

static void switch_threads(int rounds) {
    attn_case c;
    attn_case_prefill(&c, GQA_DTYPE_F32, 8, 5, 8, 8, 16, 12, 3, 1); /* 64 tasks */
    attn_case_alloc(&c, 7);
    size_t cache_bytes = c.k_cache.bytes, out_bytes = c.out.bytes;
    uint8_t* k0 = malloc(cache_bytes);
    uint8_t* v0 = malloc(cache_bytes);
    uint8_t* want = malloc(out_bytes);
    memcpy(k0, c.k_cache.data, cache_bytes);
    memcpy(v0, c.v_cache.data, cache_bytes);
    pthread_t spinners[1];
    atomic_store(&stop_spinning, 0);
    for (int i = 0; i < 1; ++i) pthread_create(&spinners[i], NULL, spin, NULL);
    signal(SIGALRM, on_watchdog);
    alarm(60);
    static const int32_t counts[] = {3, 8, 2, 5};
    long differ = 0, bad_status = 0;
    for (int r = 0; r < rounds; ++r) {
        gqa_set_num_threads(counts[r % 4]);
        memcpy(c.k_cache.data, k0, cache_bytes);
        memcpy(c.v_cache.data, v0, cache_bytes);
        fill_value(c.dtype, c.out.data, attn_case_out_elems(&c), NAN);
        if (attn_case_run(&c) != GQA_STATUS_OK) ++bad_status;
        if (r == 0) memcpy(want, c.out.data, out_bytes);
        else if (memcmp(want, c.out.data, out_bytes)) ++differ;
    }
    alarm(0);
    atomic_store(&stop_spinning, 1);
    for (int i = 0; i < 1; ++i) pthread_join(spinners[i], NULL);
    gqa_set_num_threads(0);
    CHECK(bad_status == 0, "switch_threads: %ld of %d calls failed: %s", bad_status, rounds, gqa_last_error());
    CHECK(differ == 0, "switch_threads: %ld of %d calls (thread count cycling 3, 8, 2, 5) differ from the first",
              differ, rounds);
    fprintf(stderr, "  %-60s %d calls, %ld differ\n", "prefill f32 B8 S5 8:8 d16, thread count changing every call",
            rounds, differ);
    free(k0);
    free(v0);
    free(want);
    attn_case_free(&c);
}

int main(void) {
    attn_case c;
    static const int32_t lens[5] = {0, 1, 100, 238, 17};
    attn_case_prefill(&c, GQA_DTYPE_F16, 2, 67, 14, 2, 64, 239, 100, 1);
    run_case(&c, "prefill f16 B2 S67 14:2 d64 T239 start100 causal");
    attn_case_prefill(&c, GQA_DTYPE_BF16, 1, 113, 8, 1, 17, 0, 0, 0);
    run_case(&c, "prefill bf16 B1 S113 8:1 d17 no cache non-causal");
    attn_case_prefill(&c, GQA_DTYPE_F32, 3, 17, 9, 3, 80, 40, 3, 1);
    run_case(&c, "prefill f32 B3 S17 9:3 d80 T40 start3 causal");
    attn_case_decode(&c, GQA_DTYPE_F16, 5, 32, 8, 128, 239, 0, lens);
    run_case(&c, "decode f16 B5 32:8 d128 T239 cache_lens {0,1,100,238,17}");
    attn_case_decode(&c, GQA_DTYPE_BF16, 1, 8, 1, 128, 4096, 4000, NULL);
    run_case(&c, "decode bf16 B1 8:1 d128 T4096 cache_len 4000 (long)");
    attn_case_decode(&c, GQA_DTYPE_F32, 2, 3, 3, 3, 7, 6, NULL);
    run_case(&c, "decode f32 B2 3:3 d3 T7 cache_len 6");
    switch_threads(getenv("REL_SWITCH_ROUNDS") ? atoi(getenv("REL_SWITCH_ROUNDS")) : 1000);
    return test_summary("test_determinism");
}
