/* test_util.h: helpers shared by the C tests: checks, half/bfloat16 conversion, a float64
 * reference attention, random data and guard-banded buffers that prove nothing else was written. */
#ifndef GQA_TEST_UTIL_H
#define GQA_TEST_UTIL_H

#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "gqa.h"

static int g_failures = 0;
static int g_checks = 0;

#define CHECK(cond, ...)                                                       \
    do {                                                                       \
        ++g_checks;                                                            \
        if (!(cond)) {                                                         \
            ++g_failures;                                                      \
            fprintf(stderr, "FAIL %s:%d: %s: ", __FILE__, __LINE__, #cond);    \
            fprintf(stderr, __VA_ARGS__);                                      \
            fprintf(stderr, "\n");                                             \
        }                                                                      \
    } while (0)

static inline int test_summary(const char* name) {
    fprintf(stderr, "%s: %d checks, %d failed\n", name, g_checks, g_failures);
    return g_failures ? 1 : 0;
}

/* ---- storage conversions (round to nearest even) ---------------------------------------- */
static inline float f16_to_f32(uint16_t h) {
    uint32_t sign = (uint32_t)(h & 0x8000u) << 16, exp = (h >> 10) & 0x1f, man = h & 0x3ffu, bits;
    if (exp == 0) {
        float f = ldexpf((float)man, -24);
        return sign ? -f : f;
    }
    if (exp == 31) bits = sign | 0x7f800000u | (man << 13);
    else bits = sign | ((exp + 112) << 23) | (man << 13);
    float f;
    memcpy(&f, &bits, 4);
    return f;
}
static inline uint16_t f32_to_f16(float f) {
    uint32_t x;
    memcpy(&x, &f, 4);
    uint32_t sign = (x >> 16) & 0x8000u;
    float a = fabsf(f);
    if (a != a) return (uint16_t)(sign | 0x7e00u);
    if (a >= 65520.0f) return (uint16_t)(sign | 0x7c00u);
    if (a < 6.103515625e-05f) { /* subnormal: multiple of 2^-24 */
        return (uint16_t)(sign | (uint32_t)nearbyintf(a * 16777216.0f));
    }
    uint32_t ax;
    memcpy(&ax, &a, 4);
    uint32_t rounded = ax + 0xfffu + ((ax >> 13) & 1u);
    return (uint16_t)(sign | (((rounded >> 23) - 112) << 10) | ((rounded >> 13) & 0x3ffu));
}
static inline float bf16_to_f32(uint16_t h) {
    uint32_t bits = (uint32_t)h << 16;
    float f;
    memcpy(&f, &bits, 4);
    return f;
}
static inline uint16_t f32_to_bf16(float f) {
    uint32_t x;
    memcpy(&x, &f, 4);
    if ((x & 0x7fffffffu) > 0x7f800000u) return (uint16_t)((x >> 16) | 0x40u);
    return (uint16_t)((x + 0x7fffu + ((x >> 16) & 1u)) >> 16);
}

static inline size_t dtype_size(int32_t dtype) { return dtype == GQA_DTYPE_F32 ? 4 : 2; }

static inline float load_elem(const void* base, size_t i, int32_t dtype) {
    if (dtype == GQA_DTYPE_F32) return ((const float*)base)[i];
    uint16_t h = ((const uint16_t*)base)[i];
    return dtype == GQA_DTYPE_F16 ? f16_to_f32(h) : bf16_to_f32(h);
}
static inline void store_elem(void* base, size_t i, int32_t dtype, float f) {
    if (dtype == GQA_DTYPE_F32) ((float*)base)[i] = f;
    else ((uint16_t*)base)[i] = dtype == GQA_DTYPE_F16 ? f32_to_f16(f) : f32_to_bf16(f);
}

/* ---- random data ------------------------------------------------------------------------- */
static uint64_t g_rng = 0x9e3779b97f4a7c15ull;
static inline float rand_uniform(void) { /* in [-1, 1) */
    g_rng ^= g_rng << 13;
    g_rng ^= g_rng >> 7;
    g_rng ^= g_rng << 17;
    return (float)((g_rng >> 40) * (1.0 / 8388608.0)) * 2.0f - 1.0f;
}
static inline void fill_random(void* base, size_t n, int32_t dtype) {
    for (size_t i = 0; i < n; ++i) store_elem(base, i, dtype, rand_uniform());
}

/* ---- guard-banded buffers ---------------------------------------------------------------- */
#define GUARD_BYTES 64
#define GUARD_BYTE 0xA5

typedef struct {
    unsigned char* raw;
    void* data; /* raw + GUARD_BYTES */
    size_t bytes;
} guarded_buf;

static inline guarded_buf guarded_alloc(size_t bytes) {
    guarded_buf b;
    b.bytes = bytes;
    b.raw = (unsigned char*)malloc(bytes + 2 * GUARD_BYTES);
    if (!b.raw) {
        fprintf(stderr, "out of memory allocating %zu bytes\n", bytes);
        exit(2);
    }
    memset(b.raw, GUARD_BYTE, bytes + 2 * GUARD_BYTES);
    b.data = b.raw + GUARD_BYTES;
    return b;
}
static inline int guards_intact(const guarded_buf* b) {
    for (size_t i = 0; i < GUARD_BYTES; ++i) {
        if (b->raw[i] != GUARD_BYTE || b->raw[GUARD_BYTES + b->bytes + i] != GUARD_BYTE) return 0;
    }
    return 1;
}
static inline void guarded_free(guarded_buf* b) {
    free(b->raw);
    b->raw = NULL;
    b->data = NULL;
}

/* ---- float64 reference ------------------------------------------------------------------- */
/* Attention of one query row over keys [0, n_keys) of one (batch, kv head), in double.
 * key(j, d) reads element d of key j; the row result goes to res[0..head_dim). */
typedef struct {
    const void* base;
    int32_t dtype;
    size_t offset;      /* element offset of key 0, dim 0 */
    size_t row_stride;  /* elements between consecutive keys */
} strided_view;

static inline double view_at(const strided_view* v, int64_t j, int64_t d) {
    return load_elem(v->base, v->offset + (size_t)j * v->row_stride + (size_t)d, v->dtype);
}

static inline void reference_row(const strided_view* q, const strided_view* k, const strided_view* v,
                          int64_t n_keys, int64_t head_dim, double scale, double* res) {
    double m = -INFINITY, l = 0.0;
    for (int64_t d = 0; d < head_dim; ++d) res[d] = 0.0;
    double* s = (double*)malloc(sizeof(double) * (size_t)n_keys);
    for (int64_t j = 0; j < n_keys; ++j) {
        double dot = 0.0;
        for (int64_t d = 0; d < head_dim; ++d) dot += view_at(q, 0, d) * view_at(k, j, d);
        s[j] = dot * scale;
        if (s[j] > m) m = s[j];
    }
    for (int64_t j = 0; j < n_keys; ++j) {
        double p = exp(s[j] - m);
        l += p;
        for (int64_t d = 0; d < head_dim; ++d) res[d] += p * view_at(v, j, d);
    }
    for (int64_t d = 0; d < head_dim; ++d) res[d] /= l;
    free(s);
}

#endif /* GQA_TEST_UTIL_H */
