/* test_misaligned.c: the CPU backend takes tensors at any byte address (include/gqa.h): a NumPy
 * array from np.frombuffer at an odd offset is legal, so every CPU access to q, k, v, out and the
 * caches must be alignment-safe. Every tensor of each call sits at an odd address (and, for
 * f32, also at 2 mod 4); results must equal the float64 reference and the caches be exact. The
 * ASan+UBSan build (scripts/reliability/sanitize.sh) turns any misaligned typed load or store
 * in the library into a failure (-fsanitize=alignment), which is what this test is for.
 *
 * Every CPU kernel is covered, including ones added later: the test asks libgqa for the ISA
 * names GQA_CPU_ISA accepts (from the warning an unknown value produces), then runs the cases
 * in a child process per ISA (the ISA is chosen once per process), checking from the DEBUG log
 * that the forced ISA really ran. An ISA this CPU lacks is reported as skipped. */
#define _GNU_SOURCE
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "attn_case.h"

enum { kCanaryBytes = 64, kSkipped = 77 };

/* ---- the cases -------------------------------------------------------------------------- */

/* A copy of one tensor at `offset` bytes past a 16-byte boundary, between canary bands. */
typedef struct {
    uint8_t* raw;
    uint8_t* data;
    size_t bytes;
} shifted;

static shifted shift(const guarded_buf* b, size_t offset) {
    shifted s;
    s.bytes = b->bytes;
    s.raw = malloc(b->bytes + offset + 2 * kCanaryBytes);
    if (!s.raw) exit(2);
    memset(s.raw, 0x5A, b->bytes + offset + 2 * kCanaryBytes);
    s.data = s.raw + kCanaryBytes + offset;  /* malloc is 16-aligned: data is offset mod 16 */
    memcpy(s.data, b->data, b->bytes);
    return s;
}

static int canaries_ok(const shifted* s, size_t offset) {
    for (size_t i = 0; i < kCanaryBytes + offset; ++i) {
        if (s->raw[i] != 0x5A) return 0;
    }
    for (size_t i = 0; i < kCanaryBytes; ++i) {
        if (s->data[s->bytes + i] != 0x5A) return 0;
    }
    return 1;
}

/* Runs c with every tensor at `offset` mod 16 and checks it against the float64 reference. */
static void run_shifted(attn_case* c, size_t offset, const char* what) {
    char label[200];
    snprintf(label, sizeof label, "%s %s, every tensor at +%zu mod 16", what, dtype_name(c->dtype), offset);
    attn_expect want;
    attn_expect_take(&want, c);

    guarded_buf* bufs[] = {&c->q, &c->k, &c->v, &c->out, &c->k_cache, &c->v_cache};
    static const char* names[] = {"q", "k", "v", "out", "k_cache", "v_cache"};
    shifted s[6];
    for (int i = 0; i < 6; ++i) s[i] = shift(bufs[i], offset);
    void* kc = c->max_seq_len ? s[4].data : NULL;
    void* vc = c->max_seq_len ? s[5].data : NULL;
    gqa_status st;
    if (c->decode) {
        gqa_decode_config cfg;
        attn_case_decode_config(c, &cfg);
        st = gqa_attention_decode(s[3].data, s[0].data, s[1].data, s[2].data, kc, vc, &cfg, NULL);
    } else {
        gqa_prefill_config cfg;
        attn_case_prefill_config(c, &cfg);
        st = gqa_attention_prefill(s[3].data, s[0].data, s[1].data, s[2].data, kc, vc, &cfg, NULL);
    }
    CHECK(st == GQA_STATUS_OK, "%s: status %d: %s", label, (int)st, gqa_last_error());
    for (int i = 0; i < 6; ++i) {
        CHECK(canaries_ok(&s[i], offset), "%s: a write outside %s", label, names[i]);
        if (i < 3) CHECK(memcmp(s[i].data, bufs[i]->data, bufs[i]->bytes) == 0, "%s: %s modified", label, names[i]);
        memcpy(bufs[i]->data, s[i].data, bufs[i]->bytes);  /* results back, for attn_case_check */
        free(s[i].raw);
    }
    attn_expect_check(c, &want, label);
    attn_expect_free(&want);
}

static void run_all_cases(void) {
    const int32_t dtypes[] = {GQA_DTYPE_F16, GQA_DTYPE_BF16, GQA_DTYPE_F32};
    static const int32_t lens[] = {0, 41, 300};
    for (int t = 0; t < 3; ++t) {
        const size_t offsets[] = {1, 2};
        for (int o = 0; o < (dtypes[t] == GQA_DTYPE_F32 ? 2 : 1); ++o) {
            attn_case c;
            /* Prefill, query rows in vector lanes (G 4 x 37 positions); odd head_dim: tails. */
            attn_case_prefill(&c, dtypes[t], 2, 37, 8, 2, 17, 48, 5, 1);
            attn_case_alloc(&c, 21);
            run_shifted(&c, offsets[o], "prefill cache D17 G4");
            attn_case_free(&c);
            attn_case_prefill(&c, dtypes[t], 2, 19, 8, 2, 64, 0, 0, 0);
            attn_case_alloc(&c, 22);
            run_shifted(&c, offsets[o], "prefill no cache non-causal D64 G4");
            attn_case_free(&c);
            /* Few rows (G 3 x 5): rows in registers. */
            attn_case_prefill(&c, dtypes[t], 1, 5, 3, 1, 64, 0, 0, 1);
            attn_case_alloc(&c, 23);
            run_shifted(&c, offsets[o], "prefill no cache D64 G3");
            attn_case_free(&c);
            /* Decode: 2 automatic splits (the merge writes out), G 4. */
            attn_case_decode(&c, dtypes[t], 2, 8, 2, 64, 320, 290, NULL);
            attn_case_alloc(&c, 24);
            run_shifted(&c, offsets[o], "decode len 290 D64 G4");
            attn_case_free(&c);
            /* Decode: per-sequence lengths, 3 forced splits, G 16 (rows in lanes), odd head_dim. */
            attn_case_decode(&c, dtypes[t], 3, 16, 1, 40, 320, 0, lens);
            c.num_splits = 3;
            attn_case_alloc(&c, 25);
            run_shifted(&c, offsets[o], "decode lens 0/41/300 splits 3 D40 G16");
            attn_case_free(&c);
        }
    }
}

/* ---- ISA discovery and one child per ISA -------------------------------------------------- */

static char g_messages[8192];
static void collect(int32_t level, const char* message, void* user_data) {
    (void)level;
    (void)user_data;
    size_t used = strlen(g_messages);
    snprintf(g_messages + used, sizeof g_messages - used, "%s\n", message);
}

static void tiny_call(void) {
    attn_case c;
    attn_case_prefill(&c, GQA_DTYPE_F32, 1, 2, 2, 1, 8, 0, 0, 1);
    attn_case_alloc(&c, 1);
    attn_case_run(&c);
    attn_case_free(&c);
}

/* Child, GQA_CPU_ISA unknown: print the names libgqa lists in its warning, one per line. The
 * warning reads "GQA_CPU_ISA='...' is not one of NAME, NAME, ...; using ..." (src/cpu/isa.cpp). */
static int list_isas(void) {
    gqa_set_log_callback(collect, NULL);
    tiny_call();
    const char* marker = "is not one of ";
    const char* at = strstr(g_messages, marker);
    const char* end = at ? strchr(at, ';') : NULL;
    if (!at || !end) {
        fprintf(stderr, "no ISA list in libgqa's GQA_CPU_ISA warning; messages were:\n%s", g_messages);
        return 1;
    }
    for (const char* p = at + strlen(marker); p < end;) {
        const size_t len = strcspn(p, ",;");
        printf("%.*s\n", (int)len, p);
        p += len;
        while (*p == ',' || *p == ' ') ++p;
    }
    return 0;
}

/* Child, GQA_CPU_ISA=isa: all cases; 77 when this CPU cannot run that ISA (libgqa fell back). */
static int run_isa(const char* isa) {
    gqa_set_log_callback(collect, NULL);
    gqa_set_log_level(GQA_LOG_DEBUG);
    tiny_call();
    char used[64];
    snprintf(used, sizeof used, "isa=%s ", isa);
    if (!strstr(g_messages, used)) {
        fprintf(stderr, "  GQA_CPU_ISA=%s: not supported by this CPU, skipped\n", isa);
        return kSkipped;
    }
    gqa_set_log_level(GQA_LOG_WARNING);
    run_all_cases();
    char name[96];
    snprintf(name, sizeof name, "test_misaligned GQA_CPU_ISA=%s", isa);
    return test_summary(name);
}

/* Runs this program again with GQA_CPU_ISA=isa and `mode`; its stdout goes to `out` (if
 * given); returns its exit status, or -1 if it did not exit normally. */
static int run_child(const char* isa, const char* mode, char* out, size_t out_size) {
    int fds[2];
    if (pipe(fds) != 0) return -1;
    fflush(NULL);
    const pid_t pid = fork();
    if (pid == 0) {
        dup2(fds[1], STDOUT_FILENO);
        close(fds[0]);
        close(fds[1]);
        setenv("GQA_CPU_ISA", isa, 1);
        execl("/proc/self/exe", "test_misaligned", mode, isa, (char*)NULL);
        _exit(127);
    }
    close(fds[1]);
    size_t used = 0;
    ssize_t got;
    char sink[256];
    while ((got = read(fds[0], out ? out + used : sink, out ? out_size - 1 - used : sizeof sink)) > 0) {
        if (out) used += (size_t)got;
    }
    if (out) out[used] = '\0';
    close(fds[0]);
    int status = 0;
    if (waitpid(pid, &status, 0) != pid || !WIFEXITED(status)) return -1;
    return WEXITSTATUS(status);
}

int main(int argc, char** argv) {
    if (argc == 3 && strcmp(argv[1], "--list") == 0) return list_isas();
    if (argc == 3 && strcmp(argv[1], "--run") == 0) return run_isa(argv[2]);

    char names[1024];
    CHECK(run_child("not-an-isa", "--list", names, sizeof names) == 0, "could not list the ISAs");
    int ran = 0;
    for (char* isa = strtok(names, "\n"); isa; isa = strtok(NULL, "\n")) {
        const int status = run_child(isa, "--run", NULL, 0);
        ++test_checks;
        if (status == kSkipped) continue;
        if (status != 0) {
            test_fail(__FILE__, __LINE__, "GQA_CPU_ISA=%s: %s", isa, status < 0 ? "the child crashed (a sanitizer abort?)"
                                                               : "failures (or a sanitizer report) above");
        }
        ++ran;
    }
    CHECK(ran >= 1, "no ISA ran (at least scalar must)");
    fprintf(stderr, "test_misaligned: %d ISA paths ran\n", ran);
    return test_summary("test_misaligned");
}
