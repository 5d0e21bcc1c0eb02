/* test_threads.c: promise 4. Concurrent calls from many threads, each on its own buffers, give
 * exactly the serial results; gqa_last_error() stays per thread. Phase 2 repeats this while one
 * more thread keeps changing the CPU thread count and the log level (with a log callback that
 * receives messages from every thread).
 *
 * Also the many-threads test of the ThreadSanitizer build (scripts/reliability/). Usage:
 *   test_threads [rounds]      (default 6; env REL_THREAD_ROUNDS overrides too) */
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "attn_case.h"

enum { kCallers = 16 };

typedef struct worker {
    int id;
    attn_case c;
    uint8_t *k0, *v0;               /* caches before the call                     */
    uint8_t *want_out, *want_k, *want_v; /* the serial results                    */
    int rounds;
    long mismatches, bad_status, bad_message;
} worker;

static atomic_int stop_chaos;
static atomic_long log_messages;

static void restore(worker* w) {
    memcpy(w->c.k_cache.data, w->k0, w->c.k_cache.bytes);
    memcpy(w->c.v_cache.data, w->v0, w->c.v_cache.bytes);
    memset(w->c.out.data, 0xFF, w->c.out.bytes); /* NaN in every dtype */
}

/* A shape per caller: prefill and decode, three dtypes, odd sizes, different groups. */
static void make_case(int id, attn_case* c) {
    static const int32_t dtypes[3] = {GQA_DTYPE_F16, GQA_DTYPE_BF16, GQA_DTYPE_F32};
    int32_t dt = dtypes[id % 3];
    switch (id % 4) {
    case 0: attn_case_prefill(c, dt, 2, 17 + id, 6, 2, 32 + id, 64, 5 + id, 1); break;
    case 1: attn_case_prefill(c, dt, 1, 9 + id, 7, 1, 17, 0, 0, id & 1); break;
    case 2: {
        int32_t lens[3] = {id, 3 * id + 1, 0};
        attn_case_decode(c, dt, 3, 14, 2, 64, 4 * id + 8, 0, lens);
        break;
    }
    default: attn_case_decode(c, dt, 2, 8, 8, 128, 200, 150 + id, NULL); break;
    }
}

static void* caller(void* arg) {
    worker* w = (worker*)arg;
    char want_msg[32];
    snprintf(want_msg, sizeof want_msg, "(%d)", -1000 - w->id);
    for (int r = 0; r < w->rounds; ++r) {
        restore(w);
        gqa_status s = attn_case_run(&w->c);
        if (s != GQA_STATUS_OK) {
            ++w->bad_status;
            fprintf(stderr, "FAIL: thread %d round %d: status %d: %s\n", w->id, r, (int)s, gqa_last_error());
        }
        if (memcmp(w->c.out.data, w->want_out, w->c.out.bytes) != 0 ||
            memcmp(w->c.k_cache.data, w->want_k, w->c.k_cache.bytes) != 0 ||
            memcmp(w->c.v_cache.data, w->want_v, w->c.v_cache.bytes) != 0) {
            ++w->mismatches;
        }
        /* A rejected call of this thread: its message is this thread's, not another's. */
        gqa_prefill_config bad = GQA_PREFILL_CONFIG_INIT;
        bad.batch_size = -1000 - w->id;
        bad.seq_len = bad.num_q_heads = bad.num_kv_heads = bad.head_dim = 1;
        s = gqa_attention_prefill(w->c.out.data, w->c.q.data, w->c.k.data, w->c.v.data, NULL, NULL, &bad, NULL);
        const char* msg = gqa_last_error();
        if (s != GQA_STATUS_INVALID_ARGUMENT || !msg || !strstr(msg, want_msg)) {
            ++w->bad_message;
            fprintf(stderr, "FAIL: thread %d: status %d, gqa_last_error() \"%s\" lacks %s\n", w->id, (int)s,
                    msg ? msg : "(null)", want_msg);
        }
    }
    return NULL;
}

static void count_log(int32_t level, const char* message, void* user_data) {
    (void)level;
    (void)message;
    (void)user_data;
    atomic_fetch_add(&log_messages, 1);
}

/* Changes global settings while the callers run: results must not change (determinism). */
static void* chaos(void* arg) {
    (void)arg;
    long i = 0;
    while (!atomic_load(&stop_chaos)) {
        gqa_set_num_threads((int32_t)(1 + i % 4));
        gqa_set_log_level(i % 2 ? GQA_LOG_DEBUG : GQA_LOG_WARNING);
        (void)gqa_get_num_threads();
        ++i;
    }
    return NULL;
}

static long run_phase(worker* w, int with_chaos, const char* name) {
    pthread_t threads[kCallers], chaos_thread;
    atomic_store(&stop_chaos, 0);
    if (with_chaos) {
        gqa_set_log_callback(count_log, NULL);
        pthread_create(&chaos_thread, NULL, chaos, NULL);
    }
    for (int i = 0; i < kCallers; ++i) {
        w[i].mismatches = w[i].bad_status = w[i].bad_message = 0;
        pthread_create(&threads[i], NULL, caller, &w[i]);
    }
    for (int i = 0; i < kCallers; ++i) pthread_join(threads[i], NULL);
    if (with_chaos) {
        atomic_store(&stop_chaos, 1);
        pthread_join(chaos_thread, NULL);
        gqa_set_log_level(GQA_LOG_WARNING);
        gqa_set_log_callback(NULL, NULL);
        gqa_set_num_threads(0);
    }
    long failed = 0, calls = 0;
    for (int i = 0; i < kCallers; ++i) {
        calls += 2L * w[i].rounds;
        CHECK(w[i].mismatches == 0, "%s: thread %d: %ld of %d concurrent results differ from the serial result",
                  name, i, w[i].mismatches, w[i].rounds);
        CHECK(w[i].bad_status == 0 && w[i].bad_message == 0, "%s: thread %d: %ld bad statuses, %ld wrong messages",
                  name, i, w[i].bad_status, w[i].bad_message);
        failed += w[i].mismatches + w[i].bad_status + w[i].bad_message;
    }
    fprintf(stderr, "  %s: %d threads x %d rounds = %ld calls (half of them rejected on purpose), %ld failures%s\n", name,
            kCallers, w[0].rounds, calls, failed, with_chaos ? "" : "");
    return failed;
}

int main(int argc, char** argv) {
    int rounds = 6;
    if (getenv("REL_THREAD_ROUNDS")) rounds = atoi(getenv("REL_THREAD_ROUNDS"));
    if (argc > 1) rounds = atoi(argv[1]);
    if (rounds < 1) rounds = 1;

    static worker w[kCallers];
    for (int i = 0; i < kCallers; ++i) {
        w[i].id = i;
        w[i].rounds = rounds;
        make_case(i, &w[i].c);
        attn_case_alloc(&w[i].c, 500 + (uint64_t)i);
        size_t cb = w[i].c.k_cache.bytes + 1, ob = w[i].c.out.bytes + 1;
        w[i].k0 = malloc(cb);
        w[i].v0 = malloc(cb);
        w[i].want_k = malloc(cb);
        w[i].want_v = malloc(cb);
        w[i].want_out = malloc(ob);
        memcpy(w[i].k0, w[i].c.k_cache.data, cb - 1);
        memcpy(w[i].v0, w[i].c.v_cache.data, cb - 1);
        /* Serial result, checked against the float64 reference. */
        double* ref = malloc((size_t)attn_case_out_elems(&w[i].c) * sizeof(double));
        attn_case_reference(&w[i].c, ref, w[i].want_k, w[i].want_v);
        attn_case_snapshot(&w[i].c);
        restore(&w[i]);
        gqa_status s = attn_case_run(&w[i].c);
        char label[64];
        snprintf(label, sizeof label, "serial case %d", i);
        CHECK(s == GQA_STATUS_OK, "%s: status %d: %s", label, (int)s, gqa_last_error());
        attn_case_check(&w[i].c, label, ref, w[i].want_k, w[i].want_v);
        memcpy(w[i].want_out, w[i].c.out.data, ob - 1);
        free(ref);
    }
    fprintf(stderr, "test_threads: %d caller threads, %d rounds each\n", kCallers, rounds);
    run_phase(w, 0, "phase 1 (concurrent calls)");
    run_phase(w, 1, "phase 2 (concurrent calls + set_num_threads/log level/callback churn)");
    fprintf(stderr, "  log callback received %ld messages from the callers\n", atomic_load(&log_messages));
    for (int i = 0; i < kCallers; ++i) {
        CHECK(guards_intact(&w[i].c.out) && guards_intact(&w[i].c.k_cache) &&
                  guards_intact(&w[i].c.v_cache), "thread %d: a guard band was overwritten", i);
        free(w[i].k0);
        free(w[i].v0);
        free(w[i].want_k);
        free(w[i].want_v);
        free(w[i].want_out);
        attn_case_free(&w[i].c);
    }
    return test_summary("test_threads");
}
