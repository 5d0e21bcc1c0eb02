/* test_fork.c: libgqa survives fork() after its CPU thread pool has run (pre-forking servers,
 * multiprocessing, PyTorch DataLoader workers). The parent's pool workers do not exist in a
 * child, so a child must get working calls (a fresh pool) and a clean exit(), and the parent
 * must be unaffected. Every child runs under an alarm: a hang kills it with SIGALRM, which the
 * parent reports as a failure (not a stuck ctest).
 *
 *   1. a child that calls prefill and decode (correct against float64, caches exact), then exit()
 *   2. a child that never calls libgqa and only exit()s (static destructors run)
 *   3. a child that calls, then forks a grandchild that calls (a child's own pool forks too)
 *   4. forks while another parent thread keeps the pool busy (its locks held at fork time)
 *   5. children that fork at once after their first call, whose workers have just started
 *      (a run can end before a worker takes part: a thread still starting up in a sanitizer
 *      runtime at fork time left its lock taken in the grandchild)
 *   6. the parent afterwards: still correct, on its own workers */
#include <math.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "attn_case.h"

enum { kChildSeconds = 30, kParentSeconds = 500, kBusyForks = 8, kFreshForks = 100, kThreads = 4 };

/* One case with its expected results, taken once: a run rewrites the same cache slots with
 * the same values, so every later run must match them too. */
typedef struct {
    attn_case c;
    attn_expect want;
    const char* label;
} checked_case;

static checked_case g_prefill, g_decode, g_busy;

/* LeakSanitizer (the ASan build) in a forked child: the parent's pool workers do not exist
 * there, so the fp32 scratch they kept in thread_local buffers has no root left and would be
 * reported as leaked. That memory is the dead threads' (shared copy-on-write with the parent,
 * never touched again), not a leak of the child's calls, so the leak check is for the parent
 * only. LSan calls this hook, when a program defines it, before its exit-time check. */
static int g_is_child = 0;
__attribute__((visibility("default"), used)) int __lsan_is_turned_off(void) { return g_is_child; }

static void prepare(checked_case* cc, const char* label, uint64_t seed) {
    attn_case_alloc(&cc->c, seed);
    attn_expect_take(&cc->want, &cc->c);
    cc->label = label;
}

static void release(checked_case* cc) {
    attn_expect_free(&cc->want);
    attn_case_free(&cc->c);
}

/* Runs the case on a NaN-poisoned output and checks it; returns the failures. */
static long run_checked(checked_case* cc, const char* where) {
    char label[160];
    snprintf(label, sizeof label, "%s (%s)", cc->label, where);
    const long before = test_failures;
    fill_value(cc->c.dtype, cc->c.out.data, attn_case_out_elems(&cc->c), NAN);
    const gqa_status s = attn_case_run(&cc->c);
    CHECK(s == GQA_STATUS_OK, "%s: status %d: %s", label, (int)s, gqa_last_error());
    attn_expect_check(&cc->c, &cc->want, label);
    return test_failures - before;
}

/* Both cases, as a child does; returns the failures. */
static long child_calls(const char* where) {
    return run_checked(&g_prefill, where) + run_checked(&g_decode, where);
}

typedef enum { kChildCalls, kChildExits, kChildCallsThenForks, kChildFirstCallForks } child_kind;

static int wait_child(pid_t pid, const char* what);

/* A child's calls (kChildFirstCallForks: one decode, the first parallel run of its fresh pool);
 * with kChildCallsThenForks and kChildFirstCallForks it then forks a grandchild that calls too.
 * Returns the failures. */
static long child_work(child_kind kind, const char* where) {
    long failures = kind == kChildExits            ? 0
                    : kind == kChildFirstCallForks ? run_checked(&g_decode, where)
                                                   : child_calls(where);
    if (kind == kChildCallsThenForks || kind == kChildFirstCallForks) {
        fflush(NULL);
        const pid_t grandchild = fork();
        if (grandchild == 0) {
            g_is_child = 1;
            alarm(kChildSeconds);
            exit(child_calls("grandchild") == 0 ? 0 : 1);
        }
        if (grandchild < 0 || !wait_child(grandchild, "grandchild")) ++failures;
    }
    return failures;
}

/* Waits for a child; 1 when it exited with status 0. */
static int wait_child(pid_t pid, const char* what) {
    int status = 0;
    if (waitpid(pid, &status, 0) != pid) {
        CHECK(0, "%s: waitpid failed", what);
        return 0;
    }
    if (WIFSIGNALED(status)) {
        CHECK(0, "%s: killed by signal %d (%s)", what, WTERMSIG(status),
                 WTERMSIG(status) == SIGALRM ? "hung: still running after the alarm" : "crashed");
        return 0;
    }
    if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) {
        CHECK(0, "%s: exit status %d (its failures are printed above)", what, WEXITSTATUS(status));
        return 0;
    }
    return 1;
}

static void fork_and_check(child_kind kind, const char* what) {
    fflush(NULL);
    const pid_t pid = fork();
    if (pid == 0) {  /* exit(), not _exit(): the static destructors must run and not hang */
        g_is_child = 1;
        alarm(kChildSeconds);
        exit(child_work(kind, what) == 0 ? 0 : 1);
    }
    ++test_checks;
    if (pid < 0) {
        CHECK(0, "%s: fork failed", what);
        return;
    }
    if (wait_child(pid, what)) fprintf(stderr, "  %-56s ok\n", what);
}

/* A parent thread that keeps calling libgqa (on its own buffers) while the main thread forks. */
static atomic_int g_stop_busy;
static atomic_long g_busy_calls, g_busy_bad;
static void* keep_busy(void* arg) {
    (void)arg;
    while (!atomic_load(&g_stop_busy)) {
        if (attn_case_run(&g_busy.c) != GQA_STATUS_OK) atomic_fetch_add(&g_busy_bad, 1);
        atomic_fetch_add(&g_busy_calls, 1);
    }
    return NULL;
}

int main(void) {
    alarm(kParentSeconds);  /* the parent itself must not hang either */
    /* Enough tasks that the pool's workers take part: 2 x 2 heads x 3 query tiles; decode:
     * 4 sequences x 2 splits. */
    attn_case_prefill(&g_prefill.c, GQA_DTYPE_F16, 2, 37, 8, 2, 64, 64, 5, 1);
    attn_case_decode(&g_decode.c, GQA_DTYPE_BF16, 4, 8, 2, 64, 600, 500, NULL);
    attn_case_prefill(&g_busy.c, GQA_DTYPE_F32, 2, 64, 8, 2, 32, 80, 3, 1);
    prepare(&g_prefill, "prefill f16 B2 S37 Hq8 Hkv2 D64", 11);
    prepare(&g_decode, "decode bf16 B4 Hq8 Hkv2 D64 len500", 12);
    prepare(&g_busy, "busy prefill f32", 13);
    CHECK(gqa_set_num_threads(kThreads) == GQA_STATUS_OK, "gqa_set_num_threads: %s", gqa_last_error());

    /* The pool's workers exist before any fork. */
    child_calls("parent, before fork");

    fork_and_check(kChildCalls, "child calls prefill + decode, exits");
    fork_and_check(kChildExits, "child only exits");
    fork_and_check(kChildCallsThenForks, "child calls, forks a grandchild that calls");
    for (int i = 0; i < kFreshForks; ++i) {
        char what[96];
        snprintf(what, sizeof what, "child's first call, then a grandchild at once (%d)", i);
        fork_and_check(kChildFirstCallForks, what);
    }

    pthread_t busy;
    CHECK(pthread_create(&busy, NULL, keep_busy, NULL) == 0, "pthread_create failed");
    while (atomic_load(&g_busy_calls) < 2) usleep(1000);
    for (int i = 0; i < kBusyForks; ++i) {
        char what[96];
        snprintf(what, sizeof what, "fork %d while another thread calls", i);
        fork_and_check(i % 2 ? kChildExits : kChildCalls, what);
    }
    atomic_store(&g_stop_busy, 1);
    pthread_join(busy, NULL);
    CHECK(atomic_load(&g_busy_bad) == 0, "the busy thread's calls failed %ld times", atomic_load(&g_busy_bad));
    run_checked(&g_busy, "busy thread's buffers, after the forks");

    child_calls("parent, after the forks");
    fprintf(stderr, "test_fork: %d forks while busy; the busy thread made %ld calls\n", kBusyForks,
            atomic_load(&g_busy_calls));
    release(&g_prefill);
    release(&g_decode);
    release(&g_busy);
    return test_summary("test_fork");
}
