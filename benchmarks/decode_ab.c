/* decode_ab.c: A/B timing of gqa_attention_decode across libgqa builds, interleaved in one
 * process, for kernel tuning on a shared machine (benchmarks/NOTES.md). Not the benchmark of
 * record: that is `python -m gqa.bench --device cpu`.
 *
 *   cc -O2 -Iinclude benchmarks/decode_ab.c -o build/decode_ab -ldl -lm
 *   build/decode_ab [options] LIB.so [LIB.so ...]
 *     LIB.so@N                the library with num_splits = N (a library may be named more than
 *                             once, e.g. lib.so@4 lib.so@5, to compare split counts)
 *     -c Hq:Hkv:D:B:L:dtype   a config (repeatable; dtype f32|bf16|f16); default: the CPU grid
 *     -t N                    threads for every library (default 2)
 *     -r N                    rounds (default 15); each round: every library in rotating order,
 *                             a settle sleep, one untimed call, a burst of timed calls
 *     -s MS                   the settle sleep (default 30: longer than a pool's poll budget, so the
 *                             previous library's workers are asleep)
 *     -g MS                   idle-gap mode: sleep MS before each timed call (no burst)
 *     -P                      plain 4 KiB pages for the buffers (default: 2 MiB aligned and
 *                             madvise(MADV_HUGEPAGE), as NumPy does for its large arrays, so the
 *                             benchmark's arrays and these see the same TLB reach)
 *
 * Prints per config and library: min and median wall time per call, GB/s of K+V at the
 * median, process CPU time per call (all threads), for every library after the first its time
 * over the first's: the median and quartiles of that ratio over the rounds (each round's burst
 * medians, so a slow minute of the machine slows both sides of a ratio alike), and in idle-gap
 * mode the CPU cores the process kept busy while it slept (a pool that polls while idle shows
 * here). Each library keeps its own thread pool: the settle sleep lets the previous library's
 * workers go back to sleep. */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <sys/mman.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "gqa.h"

typedef gqa_status (*decode_fn)(void*, const void*, const void*, const void*, void*, void*,
                                const gqa_decode_config*, void*);
typedef void (*init_fn)(gqa_decode_config*);
typedef gqa_status (*threads_fn)(int32_t);

typedef struct {
    const char* path;
    decode_fn decode;
    init_fn init;
    int num_splits; /* 0: the library chooses */
} Lib;

typedef struct {
    int hq, hkv, d, b, l;
    int dtype; /* GQA_DTYPE_* */
} Config;

static double now(clockid_t clock) {
    struct timespec ts;
    clock_gettime(clock, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static void sleep_ms(double ms) {
    struct timespec ts = {(time_t)(ms / 1e3), (long)((ms - 1e3 * (double)(time_t)(ms / 1e3)) * 1e6)};
    nanosleep(&ts, NULL);
}

static int compare(const void* a, const void* b) {
    const double x = *(const double*)a, y = *(const double*)b;
    return (x > y) - (x < y);
}

static int huge_pages = 1;

/* A buffer like a large NumPy array's: transparent huge pages where the kernel grants them. */
static void* alloc_buffer(size_t bytes) {
    if (!huge_pages) return malloc(bytes);
    const size_t huge = (size_t)2 << 20, rounded = (bytes + huge - 1) / huge * huge;
    void* p = aligned_alloc(huge, rounded);
    if (p) madvise(p, rounded, MADV_HUGEPAGE);
    return p;
}

static int elem_bytes(int dtype) { return dtype == GQA_DTYPE_F32 ? 4 : 2; }

/* Random-ish finite values in the storage dtype: bf16/f16 bit patterns of numbers in [-1, 1). */
static void fill(void* p, size_t n, int dtype, uint32_t seed) {
    for (size_t i = 0; i < n; ++i) {
        seed = seed * 1664525u + 1013904223u;
        const float x = (float)(seed >> 8) / (float)(1u << 24) * 2.0f - 1.0f;
        if (dtype == GQA_DTYPE_F32) {
            ((float*)p)[i] = x;
        } else if (dtype == GQA_DTYPE_BF16) {
            uint32_t bits;
            memcpy(&bits, &x, 4);
            ((uint16_t*)p)[i] = (uint16_t)(bits >> 16);
        } else { /* f16: sign, 5-bit exponent, 10-bit mantissa of |x| < 1 */
            const float a = x < 0 ? -x : x;
            int e = 0;
            float m = a;
            while (m < 0.5f && e > -14) { m *= 2.0f; --e; }
            const uint16_t mant = (uint16_t)((m * 2.0f - 1.0f) * 1024.0f) & 0x3ff;
            ((uint16_t*)p)[i] = (uint16_t)((x < 0 ? 0x8000 : 0) | ((uint16_t)(e + 14) << 10) | mant);
        }
    }
}

static int parse_config(const char* s, Config* c) {
    char dt[8] = {0};
    if (sscanf(s, "%d:%d:%d:%d:%d:%7s", &c->hq, &c->hkv, &c->d, &c->b, &c->l, dt) != 6) return 0;
    c->dtype = !strcmp(dt, "f32") ? GQA_DTYPE_F32 : !strcmp(dt, "bf16") ? GQA_DTYPE_BF16 : GQA_DTYPE_F16;
    return 1;
}

int main(int argc, char** argv) {
    Config configs[64];
    int nconfigs = 0, threads = 2, rounds = 15;
    double gap_ms = -1, settle_ms = 30;
    Lib libs[8];
    int nlibs = 0;
    for (int i = 1; i < argc; ++i) {
        if (!strcmp(argv[i], "-c") && i + 1 < argc && nconfigs < 64) {
            if (!parse_config(argv[++i], &configs[nconfigs++])) return fprintf(stderr, "bad -c %s\n", argv[i]), 2;
        } else if (!strcmp(argv[i], "-t") && i + 1 < argc) {
            threads = atoi(argv[++i]);
        } else if (!strcmp(argv[i], "-r") && i + 1 < argc) {
            rounds = atoi(argv[++i]);
        } else if (!strcmp(argv[i], "-s") && i + 1 < argc) {
            settle_ms = atof(argv[++i]);
        } else if (!strcmp(argv[i], "-g") && i + 1 < argc) {
            gap_ms = atof(argv[++i]);
        } else if (!strcmp(argv[i], "-P")) {
            huge_pages = 0;
        } else if (nlibs < 8) {
            char path[4096];
            snprintf(path, sizeof path, "%s", argv[i]);
            char* at = strrchr(path, '@');
            libs[nlibs].num_splits = at ? atoi(at + 1) : 0;
            if (at) *at = 0;
            void* h = dlopen(path, RTLD_NOW | RTLD_LOCAL);
            if (!h) return fprintf(stderr, "%s\n", dlerror()), 2;
            libs[nlibs].path = argv[i];
            libs[nlibs].decode = (decode_fn)dlsym(h, "gqa_attention_decode");
            libs[nlibs].init = (init_fn)dlsym(h, "gqa_decode_config_init");
            ((threads_fn)dlsym(h, "gqa_set_num_threads"))(threads);
            ++nlibs;
        }
    }
    if (!nlibs) return fprintf(stderr, "usage: decode_ab [-c Hq:Hkv:D:B:L:dtype]... [-t N] [-r N] [-g MS] [-P] LIB.so...\n"), 2;
    if (threads > 1 && nlibs > 1 && settle_ms < 25) {
        // A pool's workers poll up to 20 ms (GQA_CPU_SPIN_US) after a call: with a shorter settle the
        // previous library's worker still holds a core during the next one's burst. On two Zen
        // 4 cores, -s 5 made a copy of one library time 2x its original (NOTES.md section 20).
        fprintf(stderr, "decode_ab: -s %g is shorter than a pool's poll budget (up to 20 ms): libraries after the first may lose a core\n",
                settle_ms);
    }
    if (!nconfigs) {
        const int models[3][3] = {{14, 2, 64}, {32, 32, 96}, {32, 8, 128}};
        const int shapes[4][2] = {{1, 1024}, {1, 8192}, {8, 1024}, {8, 8192}};
        const int dtypes[3] = {GQA_DTYPE_F32, GQA_DTYPE_BF16, GQA_DTYPE_F16};
        for (int m = 0; m < 3; ++m)
            for (int t = 0; t < 3; ++t)
                for (int s = 0; s < 4; ++s)
                    configs[nconfigs++] = (Config){models[m][0], models[m][1], models[m][2], shapes[s][0], shapes[s][1], dtypes[t]};
    }
    const char* dtype_names[4] = {"?", "f16", "bf16", "f32"};
    for (int ci = 0; ci < nconfigs; ++ci) {
        const Config c = configs[ci];
        const size_t es = (size_t)elem_bytes(c.dtype);
        const size_t qn = (size_t)c.b * c.hq * c.d, kn = (size_t)c.b * c.hkv * c.d;
        const size_t cn = (size_t)c.b * (size_t)(c.l + 1) * c.hkv * c.d;
        char *q = malloc(qn * es), *k = malloc(kn * es), *v = malloc(kn * es), *out = malloc(qn * es);
        char *kc = alloc_buffer(cn * es), *vc = alloc_buffer(cn * es);
        fill(q, qn, c.dtype, 1);
        fill(k, kn, c.dtype, 2);
        fill(v, kn, c.dtype, 3);
        fill(kc, cn, c.dtype, 4);
        fill(vc, cn, c.dtype, 5);
        const double kv_bytes = 2.0 * (double)cn * (double)es;
        static double wall[8][4096], round_med[8][256];
        double cpu[8], idle_cpu[8], idle_wall[8];
        int n[8] = {0};
        int burst = 1;
        for (int li = 0; li < nlibs; ++li) cpu[li] = idle_cpu[li] = idle_wall[li] = 0;
        for (int r = 0; r < rounds; ++r) {
            for (int j = 0; j < nlibs; ++j) {
                const int li = (j + r) % nlibs;
                gqa_decode_config cfg;
                libs[li].init(&cfg);
                cfg.dtype = c.dtype;
                cfg.device = GQA_DEVICE_CPU;
                cfg.batch_size = c.b;
                cfg.num_q_heads = c.hq;
                cfg.num_kv_heads = c.hkv;
                cfg.head_dim = c.d;
                cfg.max_seq_len = c.l + 1;
                cfg.cache_len = c.l;
                cfg.num_splits = libs[li].num_splits;
                sleep_ms(settle_ms);
                if (libs[li].decode(out, q, k, v, kc, vc, &cfg, NULL) != GQA_STATUS_OK) {
                    return fprintf(stderr, "%s: decode failed\n", libs[li].path), 1;
                }
                if (r == 0 && j == 0) { /* bursts of ~5 ms */
                    const double t0 = now(CLOCK_MONOTONIC);
                    libs[li].decode(out, q, k, v, kc, vc, &cfg, NULL);
                    const double t = now(CLOCK_MONOTONIC) - t0;
                    burst = gap_ms >= 0 ? 1 : t > 5e-3 ? 1 : (int)(5e-3 / t) > 32 ? 32 : (int)(5e-3 / t);
                }
                const int first = n[li];
                for (int b = 0; b < burst && n[li] < 4096; ++b) {
                    if (gap_ms > 0) {
                        const double i0 = now(CLOCK_PROCESS_CPUTIME_ID), w0 = now(CLOCK_MONOTONIC);
                        sleep_ms(gap_ms);
                        idle_cpu[li] += now(CLOCK_PROCESS_CPUTIME_ID) - i0;
                        idle_wall[li] += now(CLOCK_MONOTONIC) - w0;
                    }
                    const double c0 = now(CLOCK_PROCESS_CPUTIME_ID), t0 = now(CLOCK_MONOTONIC);
                    libs[li].decode(out, q, k, v, kc, vc, &cfg, NULL);
                    wall[li][n[li]++] = now(CLOCK_MONOTONIC) - t0;
                    cpu[li] += now(CLOCK_PROCESS_CPUTIME_ID) - c0;
                }
                double this_round[4096];
                memcpy(this_round, wall[li] + first, sizeof(double) * (size_t)(n[li] - first));
                qsort(this_round, (size_t)(n[li] - first), sizeof(double), compare);
                if (r < 256) round_med[li][r] = n[li] > first ? this_round[(n[li] - first) / 2] : 0.0;
            }
        }
        const int ratio_rounds = rounds < 256 ? rounds : 256;
        for (int li = 0; li < nlibs; ++li) {
            qsort(wall[li], (size_t)n[li], sizeof(double), compare);
            const double med = wall[li][n[li] / 2];
            printf("%2d:%-2d d%-3d B=%d L=%-5d %-4s  lib%d  min %8.1f us  med %8.1f us  %6.1f GB/s  cpu/call %8.1f us",
                   c.hq, c.hkv, c.d, c.b, c.l, dtype_names[c.dtype], li, 1e6 * wall[li][0], 1e6 * med,
                   kv_bytes / med / 1e9, 1e6 * cpu[li] / n[li]);
            if (li > 0 && ratio_rounds > 0) {
                double ratio[256];
                for (int r = 0; r < ratio_rounds; ++r) ratio[r] = round_med[li][r] / round_med[0][r];
                qsort(ratio, (size_t)ratio_rounds, sizeof(double), compare);
                printf("  /lib0 %.3f (%.3f-%.3f)", ratio[ratio_rounds / 2], ratio[ratio_rounds / 4],
                       ratio[(3 * ratio_rounds) / 4]);
            }
            if (idle_wall[li] > 0) printf("  idle cores %.3f", idle_cpu[li] / idle_wall[li]);
            printf("\n");
        }
        fflush(stdout);
        free(q), free(k), free(v), free(out), free(kc), free(vc);
    }
    return 0;
}
