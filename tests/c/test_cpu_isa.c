/* test_cpu_isa.c: every CPU kernel path forced in turn with GQA_CPU_ISA, each in a child process
 * (the choice is made once per process). A forced path runs bf16, f16 and f32 prefills within
 * the float64 tolerances, and the debug log names the ISA and the prefill path that ran. A name
 * this CPU (or, for AMX, the OS) cannot run logs a WARNING and falls back to the best available
 * path, never SIGILL; so does an unknown name; and so does amx_bf16 when Linux refuses AMX tile
 * state (a child whose signal stack is too small for it). Unset, and in every fallback, the
 * automatic choice runs: the best path, avx512_bf16 only on AMD (src/cpu/isa.cpp). */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>
#if defined(__x86_64__)
#include <cpuid.h>
#include <sys/syscall.h>
#endif

#include "attn_case.h"

/* ---- child: run prefills, report what the library logged ---- */

static char g_isa[64], g_bf16_path[64];
static int g_warnings;

static void on_log(int32_t level, const char* message, void* user_data) {
    (void)user_data;
    if (level >= GQA_LOG_WARNING && strstr(message, "GQA_CPU_ISA")) ++g_warnings;
    const char* isa = strstr(message, "cpu prefill: isa=");
    if (isa) {
        char path[64] = "";
        if (sscanf(isa, "cpu prefill: isa=%63s path=%63s", g_isa, path) == 2 && strstr(message, "dtype=bf16")) {
            strcpy(g_bf16_path, path);
        }
    }
}

/* Causal prefill without caches, B1 S H:Hkv D, against the float64 reference. */
static void check_prefill(int32_t dtype, int32_t S, int32_t H, int32_t Hkv, int32_t D) {
    attn_case c;
    attn_expect expect;
    char label[128];
    const char* isa = getenv("GQA_CPU_ISA");
    snprintf(label, sizeof label, "GQA_CPU_ISA=%s dtype %d S%d %d:%d d%d", isa ? isa : "(unset)", dtype, S, H, Hkv, D);
    attn_case_prefill(&c, dtype, 1, S, H, Hkv, D, 0, 0, 1);
    attn_case_alloc(&c, (uint64_t)(S * 1009 + D));
    attn_expect_take(&expect, &c);
    CHECK(attn_case_run(&c) == GQA_STATUS_OK, "%s: %s", label, gqa_last_error());
    attn_expect_check(&c, &expect, label);
    attn_expect_free(&expect);
    attn_case_free(&c);
}

static int child(int small_signal_stack) {
    if (small_signal_stack) {
        static char stack[4096]; /* far below the ~11 KiB an AMX signal frame needs */
        stack_t ss = {.ss_sp = stack, .ss_size = sizeof stack, .ss_flags = 0};
        CHECK(sigaltstack(&ss, NULL) == 0, "sigaltstack failed");
    }
    gqa_set_log_callback(on_log, NULL);
    gqa_set_log_level(GQA_LOG_DEBUG);
    gqa_set_num_threads(2);
    static const int32_t dtypes[] = {GQA_DTYPE_BF16, GQA_DTYPE_F16, GQA_DTYPE_F32};
    for (int i = 0; i < 3; ++i) {
        check_prefill(dtypes[i], 67, 14, 2, 64);
        check_prefill(dtypes[i], 130, 4, 4, 96);
        check_prefill(dtypes[i], 21, 3, 1, 17);
    }
    /* Reported on stdout for the parent: ISA, bf16 path, warning count, failures. */
    printf("%s %s %d %d\n", g_isa, g_bf16_path, g_warnings, (int)test_failures);
    return test_failures ? 1 : 0;
}

/* ---- parent ---- */

/* What this machine can run, by the same rules as src/cpu/isa.cpp (AMX: CPUID, then a probe
 * child asks Linux for tile state, so this process's own state stays untouched). */
static int cpu_runs(const char* isa) {
#if defined(__x86_64__)
    unsigned a, b, c, d;
    __builtin_cpu_init();
    const int avx2 = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") && __get_cpuid(1, &a, &b, &c, &d) &&
                     (c & bit_F16C);
    const int avx512 = avx2 && __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
                       __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512dq");
    const int avx512_bf16 = avx512 && __get_cpuid_count(7, 1, &a, &b, &c, &d) && (a & (1u << 5));
    int amx = avx512_bf16 && __get_cpuid_count(7, 0, &a, &b, &c, &d) && (d & (1u << 22)) && (d & (1u << 24));
    if (amx) {
        pid_t pid = fork();
        if (pid == 0) _exit(syscall(SYS_arch_prctl, 0x1023, 18) == 0 ? 0 : 1);
        int status = 0;
        amx = pid > 0 && waitpid(pid, &status, 0) == pid && WIFEXITED(status) && WEXITSTATUS(status) == 0;
    }
    if (!strcmp(isa, "scalar")) return 1;
    if (!strcmp(isa, "avx2")) return avx2;
    if (!strcmp(isa, "avx512")) return avx512;
    if (!strcmp(isa, "avx512_bf16")) return avx512_bf16;
    if (!strcmp(isa, "amx_bf16")) return amx;
    return 0;
#else
    return !strcmp(isa, "scalar");
#endif
}

/* The ISA the automatic choice takes (isa.cpp: best first, avx512_bf16 only on AMD); without AMX
 * when Linux refuses it tile state. */
static const char* automatic_isa(int amx_refused) {
#if defined(__x86_64__)
    unsigned a, b, c, d;
    const int amd = __get_cpuid(0, &a, &b, &c, &d) && b == 0x68747541u && d == 0x69746e65u && c == 0x444d4163u;
    if (!amx_refused && cpu_runs("amx_bf16")) return "amx_bf16";
    if (amd && cpu_runs("avx512_bf16")) return "avx512_bf16";
    if (cpu_runs("avx512")) return "avx512";
    if (cpu_runs("avx2")) return "avx2";
#else
    (void)amx_refused;
#endif
    return "scalar";
}

/* The bf16 prefill path each ISA name runs. */
static const char* bf16_path_of(const char* isa) {
    if (!strcmp(isa, "amx_bf16") || !strcmp(isa, "avx512_bf16")) return isa;
    if (!strcmp(isa, "avx512")) return "avx512_fp32";
    if (!strcmp(isa, "avx2")) return "avx2_fp32";
    return "scalar";
}

static void run_child(const char* self, const char* isa, int small_signal_stack) {
    int fds[2];
    CHECK(pipe(fds) == 0, "pipe failed");
    pid_t pid = fork();
    if (pid == 0) {
        dup2(fds[1], 1);
        close(fds[0]);
        setenv("GQA_CPU_ISA", isa, 1);
        execl(self, self, small_signal_stack ? "child-small-signal-stack" : "child", (char*)NULL);
        _exit(127);
    }
    close(fds[1]);
    char line[256] = "";
    FILE* f = fdopen(fds[0], "r");
    if (!fgets(line, sizeof line, f)) line[0] = '\0';
    fclose(f);
    int status = 0;
    waitpid(pid, &status, 0);
    char ran[64] = "", path[64] = "";
    int warnings = -1, failures = -1;
    sscanf(line, "%63s %63s %d %d", ran, path, &warnings, &failures);
    const char* label = small_signal_stack ? " (signal stack too small for AMX)" : "";
    CHECK(WIFEXITED(status) && WEXITSTATUS(status) == 0, "GQA_CPU_ISA=%s%s: child %s %d (output '%s')", isa, label,
          WIFSIGNALED(status) ? "killed by signal" : "exit", WIFSIGNALED(status) ? WTERMSIG(status) : WEXITSTATUS(status),
          line);
    const int automatic = !*isa;
    const int expect_exact = !automatic && !small_signal_stack && cpu_runs(isa);
    const char* want = expect_exact ? isa : automatic_isa(small_signal_stack);
    if (expect_exact || automatic) {
        CHECK(!strcmp(ran, want) && warnings == 0, "GQA_CPU_ISA='%s': ran isa=%s with %d warnings, want %s", isa, ran,
              warnings, want);
    } else {
        CHECK(strcmp(ran, isa) != 0 && !strcmp(ran, want) && warnings >= 1,
              "GQA_CPU_ISA=%s%s: ran isa=%s with %d warnings, want a fallback to %s and a warning", isa, label, ran,
              warnings, want);
    }
    CHECK(!strcmp(path, bf16_path_of(ran)), "GQA_CPU_ISA='%s'%s: bf16 prefill path %s, want %s", isa, label, path,
          bf16_path_of(ran));
    fprintf(stderr, "  GQA_CPU_ISA=%-12s%s ran isa=%s bf16 path=%s, %d warning(s)\n", isa, label, ran, path, warnings);
}

int main(int argc, char** argv) {
    if (argc > 1 && !strcmp(argv[1], "child")) return child(0);
    if (argc > 1 && !strcmp(argv[1], "child-small-signal-stack")) return child(1);
    static const char* names[] = {"", "scalar", "avx2", "avx512", "avx512_bf16", "amx_bf16", "avx1024", "AVX512"};
    for (size_t i = 0; i < sizeof names / sizeof *names; ++i) run_child("/proc/self/exe", names[i], 0);
    run_child("/proc/self/exe", "amx_bf16", 1);
    return test_summary("test_cpu_isa");
}
