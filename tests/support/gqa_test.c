/* gqa_test.c: see gqa_test.h. */
#define _GNU_SOURCE /* fork, waitpid, alarm, strsignal */
#include "gqa_test.h"

#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>
#include <stdarg.h>

/* ---- checks ------------------------------------------------------------------------------ */
long test_checks = 0;
long test_failures = 0;

void test_fail(const char* file, int line, const char* fmt, ...) {
    va_list ap;
    ++test_failures;
    va_start(ap, fmt);
    fprintf(stderr, "FAIL %s:%d: ", file, line);
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
    va_end(ap);
}

int test_summary(const char* name) {
    fprintf(stderr, "%s: %ld checks, %ld failed\n", name, test_checks, test_failures);
    return test_failures ? 1 : 0;
}

void* test_malloc(size_t bytes) {
    void* p = malloc(bytes ? bytes : 1);
    if (!p) {
        fprintf(stderr, "test_malloc: out of host memory (%zu bytes)\n", bytes);
        exit(2);
    }
    return p;
}

int test_run_isolated(const char* label, long (*fn)(const void*), const void* arg) {
    fflush(NULL);
    pid_t pid = fork();
    if (pid < 0) {
        perror("fork");
        exit(2);
    }
    if (pid == 0) {
        alarm(60);
        long failed = fn(arg);
        fflush(NULL);
        _exit(failed ? 1 : 0);
    }
    int status = 0;
    waitpid(pid, &status, 0);
    if (WIFSIGNALED(status)) {
        fprintf(stderr, "FAIL: [%s] the call crashed or hung: signal %d (%s)\n", label, WTERMSIG(status),
                strsignal(WTERMSIG(status)));
        return 0;
    }
    if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) {
        if (WIFEXITED(status) && WEXITSTATUS(status) != 1) {
            fprintf(stderr, "FAIL: [%s] the child exited with %d (a sanitizer report or abort?)\n", label,
                    WEXITSTATUS(status));
        }
        return 0;
    }
    return 1;
}

/* ---- storage dtypes ---------------------------------------------------------------------- */
size_t dtype_size(int32_t dtype) { return dtype == GQA_DTYPE_F32 ? 4 : 2; }

const char* dtype_name(int32_t dtype) {
    return dtype == GQA_DTYPE_F16 ? "f16" : dtype == GQA_DTYPE_BF16 ? "bf16" : "f32";
}

float f16_to_float(uint16_t h) {
    uint32_t sign = (uint32_t)(h >> 15) << 31, exponent = (h >> 10) & 0x1fu, mantissa = h & 0x3ffu, bits;
    float f;
    if (exponent == 0) { /* zero or subnormal: mantissa * 2^-24 */
        f = ldexpf((float)mantissa, -24);
        return sign ? -f : f;
    }
    bits = exponent == 31 ? (sign | 0x7f800000u | (mantissa << 13)) : (sign | ((exponent + 112u) << 23) | (mantissa << 13));
    memcpy(&f, &bits, 4);
    return f;
}

/* Round to nearest even from the float's bits; subnormals, overflow and NaN included. */
uint16_t float_to_f16(float f) {
    uint32_t x, sign, exponent, mantissa, h, rest;
    int e;
    memcpy(&x, &f, 4);
    sign = (x >> 16) & 0x8000u;
    exponent = (x >> 23) & 0xffu;
    mantissa = x & 0x7fffffu;
    if (exponent == 0xff) return (uint16_t)(sign | 0x7c00u | (mantissa ? 0x200u : 0u));
    e = (int)exponent - 127 + 15;
    if (e >= 31) return (uint16_t)(sign | 0x7c00u);
    if (e <= 0) {
        uint32_t m = mantissa | 0x800000u, shift = (uint32_t)(14 - e), half;
        if (e < -10) return (uint16_t)sign;
        h = m >> shift;
        rest = m & ((1u << shift) - 1u);
        half = 1u << (shift - 1u);
        if (rest > half || (rest == half && (h & 1u))) ++h;
        return (uint16_t)(sign | h);
    }
    h = sign | ((uint32_t)e << 10) | (mantissa >> 13);
    rest = mantissa & 0x1fffu;
    if (rest > 0x1000u || (rest == 0x1000u && (h & 1u))) ++h; /* a carry may reach inf: right */
    return (uint16_t)h;
}

float bf16_to_float(uint16_t h) {
    uint32_t bits = (uint32_t)h << 16;
    float f;
    memcpy(&f, &bits, 4);
    return f;
}

uint16_t float_to_bf16(float f) {
    uint32_t x;
    memcpy(&x, &f, 4);
    if ((x & 0x7fffffffu) > 0x7f800000u) return (uint16_t)((x >> 16) | 0x40u); /* quiet NaN */
    return (uint16_t)((x + 0x7fffu + ((x >> 16) & 1u)) >> 16);
}

double load_elem(int32_t dtype, const void* base, int64_t i) {
    uint16_t h;
    if (dtype == GQA_DTYPE_F32) return ((const float*)base)[i];
    h = ((const uint16_t*)base)[i];
    return dtype == GQA_DTYPE_F16 ? f16_to_float(h) : bf16_to_float(h);
}

void store_elem(int32_t dtype, void* base, int64_t i, double x) {
    const float f = (float)x;
    if (dtype == GQA_DTYPE_F32) ((float*)base)[i] = f;
    else if (dtype == GQA_DTYPE_F16) ((uint16_t*)base)[i] = float_to_f16(f);
    else ((uint16_t*)base)[i] = float_to_bf16(f);
}

double tolerance(int32_t dtype) { return dtype == GQA_DTYPE_F32 ? 1e-4 : dtype == GQA_DTYPE_F16 ? 4e-3 : 3e-2; }

/* ---- random numbers ---------------------------------------------------------------------- */
void rng_seed(test_rng* r, uint64_t seed) { r->s = seed * 0x9E3779B97F4A7C15ull + 0x2545F4914F6CDD1Dull; }

uint64_t rng_next(test_rng* r) {
    r->s ^= r->s >> 12;
    r->s ^= r->s << 25;
    r->s ^= r->s >> 27;
    return r->s * 0x2545F4914F6CDD1Dull;
}

double rng_uniform(test_rng* r, double lo, double hi) {
    return lo + (hi - lo) * ((double)(rng_next(r) >> 11) * (1.0 / 9007199254740992.0));
}

void fill_uniform(test_rng* r, int32_t dtype, void* base, int64_t n, double lo, double hi) {
    int64_t i;
    for (i = 0; i < n; ++i) store_elem(dtype, base, i, rng_uniform(r, lo, hi));
}

void fill_random(int32_t dtype, void* base, int64_t n) {
    static test_rng process_rng = {0x9e3779b97f4a7c15ull};
    fill_uniform(&process_rng, dtype, base, n, -1.0, 1.0);
}

void fill_value(int32_t dtype, void* base, int64_t n, double x) {
    int64_t i;
    for (i = 0; i < n; ++i) store_elem(dtype, base, i, x);
}

/* ---- guarded buffers --------------------------------------------------------------------- */
static uint8_t canary(size_t i) { return (uint8_t)(0xA5u ^ (uint8_t)(i * 31u)); }

guarded_buf guarded_alloc(size_t bytes) {
    guarded_buf b;
    size_t i;
    b.base = (uint8_t*)test_malloc(bytes + 2 * GUARD_BYTES);
    b.data = b.base + GUARD_BYTES;
    b.bytes = bytes;
    b.snap = NULL;
    for (i = 0; i < GUARD_BYTES; ++i) {
        b.base[i] = canary(i);
        b.data[bytes + i] = canary(i + 7);
    }
    memset(b.data, 0, bytes);
    return b;
}

void guarded_free(guarded_buf* b) {
    free(b->base);
    free(b->snap);
    memset(b, 0, sizeof *b);
}

int guards_intact(const guarded_buf* b) {
    size_t i;
    for (i = 0; i < GUARD_BYTES; ++i) {
        if (b->base[i] != canary(i) || b->data[b->bytes + i] != canary(i + 7)) return 0;
    }
    return 1;
}

void guarded_snapshot(guarded_buf* b) {
    const size_t total = b->bytes + 2 * GUARD_BYTES;
    if (!b->snap) b->snap = (uint8_t*)test_malloc(total);
    memcpy(b->snap, b->base, total);
}

int guarded_changed(const guarded_buf* b, long long* first_diff) {
    const size_t total = b->bytes + 2 * GUARD_BYTES;
    size_t i;
    if (!b->snap || memcmp(b->snap, b->base, total) == 0) return 0;
    for (i = 0; i < total; ++i) {
        if (b->snap[i] != b->base[i]) {
            if (first_diff) *first_diff = (long long)i - GUARD_BYTES;
            break;
        }
    }
    return 1;
}

/* ---- float64 reference ------------------------------------------------------------------- */
static double view_at(const strided_view* v, int64_t j, int64_t d) {
    return load_elem(v->dtype, v->base, (int64_t)(v->offset + (size_t)j * v->row_stride) + d);
}

void reference_row_variants(const strided_view* q, const strided_view* k, const strided_view* v, int64_t first,
                            int64_t end, int64_t head_dim, double scale, double softcap, double sink, double* res,
                            double* lse) {
    const int64_t n = end > first ? end - first : 0;
    double m = sink, l = 0.0;
    double* s = (double*)test_malloc(sizeof(double) * (size_t)(n + 1));
    int64_t j, d;
    for (d = 0; d < head_dim; ++d) res[d] = 0.0;
    for (j = 0; j < n; ++j) {
        double dot = 0.0;
        for (d = 0; d < head_dim; ++d) dot += view_at(q, 0, d) * view_at(k, first + j, d);
        s[j] = dot * scale;
        if (softcap > 0.0) s[j] = softcap * tanh(s[j] / softcap);
        if (s[j] > m) m = s[j]; /* a NaN logit never wins here, and makes the row NaN below */
    }
    if (m == -INFINITY) { /* no key and no sink */
        if (lse) *lse = -INFINITY;
        free(s);
        return;
    }
    if (sink != -INFINITY) l = exp(sink - m);
    for (j = 0; j < n; ++j) {
        const double p = exp(s[j] - m);
        l += p;
        for (d = 0; d < head_dim; ++d) res[d] += p * view_at(v, first + j, d);
    }
    for (d = 0; d < head_dim; ++d) res[d] /= l;
    if (lse) *lse = m + log(l);
    free(s);
}

void reference_row(const strided_view* q, const strided_view* k, const strided_view* v, int64_t n_keys,
                   int64_t head_dim, double scale, double* res) {
    reference_row_variants(q, k, v, 0, n_keys, head_dim, scale, 0.0, -INFINITY, res, NULL);
}

void append_rows(const attn_shape* s, void* cache, const void* rows) {
    const size_t row = (size_t)(s->num_kv_heads * s->head_dim) * dtype_size(s->dtype);
    int64_t b;
    for (b = 0; b < s->batch; ++b) {
        const int64_t start = s->starts ? s->starts[b] : 0;
        memcpy((uint8_t*)cache + (size_t)(b * s->kv_rows + start) * row,
               (const uint8_t*)rows + (size_t)(b * s->seq_len) * row, (size_t)s->seq_len * row);
    }
}

void reference_key_range(const attn_variants* v, int causal, int64_t pos, int64_t n_keys, int64_t* first,
                         int64_t* end) {
    *first = 0;
    *end = causal && pos + 1 < n_keys ? pos + 1 : n_keys;
    if (v && v->window_left >= 0 && pos - v->window_left > *first) *first = pos - v->window_left;
    if (v && v->window_right >= 0 && pos + v->window_right + 1 < *end) *end = pos + v->window_right + 1;
    if (*end < *first) *end = *first;
}

double lse_tolerance(void) { return 2e-3; }

void reference_attention_lse(const attn_shape* s, const void* q, const void* k, const void* v, double* ref_out,
                             double* ref_lse) {
    const int64_t G = s->num_q_heads / s->num_kv_heads, D = s->head_dim;
    const double scale = s->scale != 0.0 ? s->scale : 1.0 / sqrt((double)D);
    const attn_variants none = {-1, -1, 0.0, NULL};
    const attn_variants* var = s->variants ? s->variants : &none;
    int64_t b, i, h;
    for (b = 0; b < s->batch; ++b) {
        const int64_t start = s->starts ? s->starts[b] : 0;
        for (i = 0; i < s->seq_len; ++i) {
            int64_t first, end; /* the keys query i sees */
            reference_key_range(var, s->causal, start + i, start + s->seq_len, &first, &end);
            for (h = 0; h < s->num_q_heads; ++h) {
                const size_t q_row = (size_t)(((b * s->seq_len + i) * s->num_q_heads + h) * D);
                const size_t kv_row = (size_t)((b * s->kv_rows * s->num_kv_heads + h / G) * D);
                const size_t stride = (size_t)(s->num_kv_heads * D);
                const strided_view qv = {q, s->dtype, q_row, 0};
                const strided_view kv = {k, s->dtype, kv_row, stride};
                const strided_view vv = {v, s->dtype, kv_row, stride};
                const double sink = var->sinks ? (double)var->sinks[h] : -INFINITY;
                double* lse = ref_lse ? ref_lse + (b * s->num_q_heads + h) * s->seq_len + i : NULL;
                reference_row_variants(&qv, &kv, &vv, first, end, D, scale, var->softcap, sink, ref_out + q_row, lse);
            }
        }
    }
}

void reference_attention(const attn_shape* s, const void* q, const void* k, const void* v, double* ref_out) {
    reference_attention_lse(s, q, k, v, ref_out, NULL);
}

double max_error(int32_t dtype, const void* got, const double* want, int64_t n, int64_t* worst) {
    double max_err = 0.0;
    int64_t i, at = n > 0 ? 0 : -1;
    for (i = 0; i < n; ++i) {
        const double err = fabs(load_elem(dtype, got, i) - want[i]);
        if (!(err <= max_err)) { /* NaN-aware: a NaN error is the worst, and final */
            max_err = err;
            at = i;
            if (err != err) break;
        }
    }
    if (worst) *worst = at;
    return max_err;
}

double attention_error(const attn_shape* s, const void* q, const void* k, const void* v, const void* out) {
    const int64_t n = s->batch * s->seq_len * s->num_q_heads * s->head_dim;
    double* ref = (double*)test_malloc(sizeof(double) * (size_t)n);
    double err;
    reference_attention(s, q, k, v, ref);
    err = max_error(s->dtype, out, ref, n, NULL);
    free(ref);
    return err;
}
