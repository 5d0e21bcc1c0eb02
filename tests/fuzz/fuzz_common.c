/* fuzz_common.c: see fuzz.h. */
#include <stdarg.h>

#include "fuzz.h"

/* ---- reading ----------------------------------------------------------------------------- */
uint8_t next_u8(reader* r) {
    if (!r->n) return 0;
    --r->n;
    return *r->p++;
}

int32_t next_i32(reader* r) {
    uint32_t x = 0;
    for (int i = 0; i < 4; ++i) x = (x << 8) | next_u8(r);
    return (int32_t)x;
}

int32_t next_field(reader* r, int32_t lo, int32_t hi) {
    static const int32_t extremes[] = {0, -1, 1, 2147483647, (-2147483647 - 1), 257, 65536, 1 << 20, 3, 16};
    uint8_t s = next_u8(r);
    if (s < 240) return lo + (int32_t)(s % (uint32_t)(hi - lo + 1));
    if (s < 250) return extremes[s - 240];
    return next_i32(r);
}

int32_t next_dtype(reader* r) {
    static const int32_t dtypes[] = {GQA_DTYPE_F16, GQA_DTYPE_BF16, GQA_DTYPE_F32};
    uint8_t s = next_u8(r);
    return s < 250 ? dtypes[s % 3] : next_field(r, -1, 4);
}

int32_t next_device(reader* r) { return next_u8(r) < 250 ? GQA_DEVICE_CPU : next_field(r, -1, 3); }

int32_t next_head_dim(reader* r) {
    static const int32_t model_dims[] = {64, 80, 96, 128, 256};
    uint8_t s = next_u8(r);
    return s < 200 ? 1 + s % 40 : s < 240 ? model_dims[s % 5] : next_field(r, 1, 300);
}

float next_scale(reader* r) {
    static const float odd[] = {NAN, INFINITY, -1.0f, -INFINITY, 1e-38f, 4.0f};
    uint8_t s = next_u8(r);
    return s < 128 ? 0.0f : s < 250 ? (float)(s - 127) / 64.0f : odd[s - 250];
}

uint64_t next_seed(reader* r) {
    uint64_t seed = 0;
    for (int i = 0; i < 8; ++i) seed = (seed << 8) | next_u8(r);
    return seed;
}

int valid_dtype(int32_t dtype) {
    return dtype == GQA_DTYPE_F16 || dtype == GQA_DTYPE_BF16 || dtype == GQA_DTYPE_F32;
}

int32_t buffer_dtype(int32_t dtype) { return valid_dtype(dtype) ? dtype : GQA_DTYPE_F32; }

/* ---- variants ---------------------------------------------------------------------------- */
enum { kWindow = 1, kSoftcap = 2, kSinks = 4, kLse = 8, kStrides = 16, kReservedMask = 0xE0 };

void next_variants(reader* r, fuzz_variants* v) {
    /* Softcaps: model-like values, then the edges of "finite and >= 0" (-0 is 0: off). Not above
     * 1000: the SIMD paths' tanh loses ~4e-8 * softcap of absolute logit accuracy (3000 already
     * misses the f32 tolerance; a known, reported limit, see reports/cleanup.md). */
    static const float odd_softcaps[] = {0.0f, NAN, INFINITY, -1.0f, -INFINITY, 1e-30f, 300.0f, 0.01f,
                                         100.0f, 1000.0f, 1e-3f, -0.0f, 0.5f, 1.0f, 2.0f, 8.0f};
    memset(v, 0, sizeof *v);
    v->window_left = v->window_right = -1;
    const uint8_t which = next_u8(r);
    if (which & kWindow) {
        v->window_left = next_field(r, -1, 12);
        v->window_right = next_field(r, -1, 12);
    }
    if (which & kSoftcap) {
        const uint8_t s = next_u8(r);
        v->softcap = s < 240 ? 0.25f + (float)s / 8.0f : odd_softcaps[s - 240];
    }
    if (which & kSinks) {
        const uint8_t s = next_u8(r);
        v->has_sinks = s < 200 ? 1 : s < 240 ? 2 : 3; /* finite; some -inf; one NaN or +inf */
        v->sinks_rare = s >= 240 ? s : 0;
    }
    v->want_lse = (which & kLse) != 0;
    if (which & kStrides) {
        for (int i = 0; i < 4; ++i) v->stride_bytes[i] = next_u8(r);
    }
    if ((which & kReservedMask) == kReservedMask) v->reserved = next_i32(r);
}

void fill_sinks(const fuzz_variants* v, uint64_t seed, float* sinks, int64_t num_q_heads) {
    test_rng rng;
    rng_seed(&rng, seed ^ 0x5117c5u);
    for (int64_t h = 0; h < num_q_heads; ++h) {
        sinks[h] = (float)rng_uniform(&rng, -4.0, 4.0);
        if (v->has_sinks == 2 && rng_next(&rng) % 3 == 0) sinks[h] = -INFINITY; /* no sink for that head */
    }
    if (v->has_sinks == 3 && num_q_heads > 0) sinks[v->sinks_rare % num_q_heads] = v->sinks_rare < 248 ? NAN : INFINITY;
}

int strides_negative(const gqa_strides* s) { return s->batch < 0 || s->token < 0 || s->head < 0; }

int variants_valid(const fuzz_variants* v, const float* sinks, int64_t num_q_heads) {
    if (v->window_left < -1 || v->window_right < -1) return 0;
    if (!isfinite(v->softcap) || v->softcap < 0.0f) return 0;
    if (v->reserved != 0) return 0;
    if (v->has_sinks) {
        for (int64_t h = 0; h < num_q_heads; ++h) {
            if (isnan(sinks[h]) || sinks[h] == INFINITY) return 0; /* -inf: no sink, allowed */
        }
    }
    return 1;
}

attn_variants reference_variants(const fuzz_variants* v, const float* sinks) {
    attn_variants a;
    a.window_left = v->window_left;
    a.window_right = v->window_right;
    a.softcap = v->softcap;
    a.sinks = v->has_sinks ? sinks : NULL;
    return a;
}

/* ---- strided tensors --------------------------------------------------------------------- */
void strides_from_byte(uint8_t b, int kind, const int64_t count[3], int64_t head_dim, gqa_strides* given,
                       int64_t stride[3]) {
    /* A shape too large to run (rejected, or not made) gets the strides of a one-element shape:
     * then only which fields are set and their signs matter, and the products stay in range. */
    const int huge = !(fabs((double)count[1] * (double)count[2] * (double)head_dim) <= 1e12);
    const int64_t tokens = huge ? 1 : count[1], heads = huge ? 1 : count[2], dim = huge ? 1 : head_dim;
    stride[2] = dim;
    stride[1] = heads * dim;
    stride[0] = tokens * stride[1];
    memset(given, 0, sizeof *given);
    if (b == 0) return; /* all 0: contiguous */
    stride[2] = dim + (b & 3);
    stride[1] = heads * stride[2] + ((b >> 2) & 3);
    stride[0] = tokens * stride[1] + ((b >> 4) & 1);
    given->batch = kind == kBatchStrides ? 0 : stride[0];
    given->token = kind == kDecodeStrides ? 0 : stride[1];
    given->head = stride[2];
    if (b >> 5 == 7) given->head = -1; /* rejected: negative */
    if (b >> 5 == 6 && kind == kDecodeStrides) given->token = 1;   /* rejected: decode has no token stride */
    if (b >> 5 == 6 && kind == kBatchStrides) given->batch = 1;    /* rejected: ragged rows */
}

int strides_valid(const gqa_strides* s, int kind) {
    if (strides_negative(s)) return 0;
    if (kind == kDecodeStrides && s->token != 0) return 0;
    if (kind == kBatchStrides && s->batch != 0) return 0;
    return 1;
}

static int64_t strided_elems(const strided_tensor* t) {
    int64_t n = t->head_dim;
    for (int i = 0; i < 3; ++i) {
        if (t->count[i] == 0) return 0;
        n += (t->count[i] - 1) * t->stride[i];
    }
    return n;
}

/* Calls fn(t, row offset in elements, contiguous row index) for every row. */
static void for_each_row(const strided_tensor* t, void (*fn)(const strided_tensor*, int64_t, int64_t, void*),
                         void* arg) {
    int64_t row = 0;
    for (int64_t b = 0; b < t->count[0]; ++b)
        for (int64_t s = 0; s < t->count[1]; ++s)
            for (int64_t h = 0; h < t->count[2]; ++h, ++row)
                fn(t, b * t->stride[0] + s * t->stride[1] + h * t->stride[2], row, arg);
}

static void put_row(const strided_tensor* t, int64_t at, int64_t row, void* from) {
    const size_t es = dtype_size(t->dtype), bytes = (size_t)t->head_dim * es;
    memcpy(t->buf.data + (size_t)at * es, (const uint8_t*)from + (size_t)row * bytes, bytes);
}

static void get_row(const strided_tensor* t, int64_t at, int64_t row, void* to) {
    const size_t es = dtype_size(t->dtype), bytes = (size_t)t->head_dim * es;
    memcpy((uint8_t*)to + (size_t)row * bytes, t->buf.data + (size_t)at * es, bytes);
}

/* Puts the initial bytes of a row back into a copy of the buffer (arg), for the gap check. */
static void restore_row(const strided_tensor* t, int64_t at, int64_t row, void* copy) {
    const size_t es = dtype_size(t->dtype);
    (void)row;
    memcpy((uint8_t*)copy + (size_t)at * es, t->initial + (size_t)at * es, (size_t)t->head_dim * es);
}

void strided_make(strided_tensor* t, int32_t dtype, const int64_t count[3], int64_t head_dim, const int64_t stride[3],
                  const void* from) {
    memset(t, 0, sizeof *t);
    t->dtype = dtype;
    t->head_dim = head_dim;
    for (int i = 0; i < 3; ++i) {
        t->count[i] = count[i];
        t->stride[i] = stride[i];
    }
    const int64_t n = strided_elems(t);
    t->buf = guarded_alloc((size_t)n * dtype_size(dtype));
    fill_value(dtype, t->buf.data, n, NAN);
    if (from) for_each_row(t, put_row, (void*)from);
    t->initial = (uint8_t*)test_malloc(t->buf.bytes);
    memcpy(t->initial, t->buf.data, t->buf.bytes);
}

void strided_gather(const strided_tensor* t, void* to) { for_each_row(t, get_row, to); }

int strided_gaps_changed(const strided_tensor* t) {
    uint8_t* copy = (uint8_t*)test_malloc(t->buf.bytes);
    memcpy(copy, t->buf.data, t->buf.bytes);
    for_each_row(t, restore_row, copy);
    const int changed = memcmp(copy, t->initial, t->buf.bytes) != 0 || !guards_intact(&t->buf);
    free(copy);
    return changed;
}

void strided_free(strided_tensor* t) {
    guarded_free(&t->buf);
    free(t->initial);
    t->initial = NULL;
}

void strided_tensors(const uint8_t stride_bytes[4], int32_t dtype, const int64_t counts[4][3], int64_t head_dim,
                     int64_t layout[4][3], guarded_buf* const contiguous[4], strided_tensor strided[4],
                     void* tensor[4]) {
    for (int i = 0; i < 4; ++i) {
        if (stride_bytes[i]) {
            strided_make(&strided[i], dtype, counts[i], head_dim, layout[i], i < 3 ? contiguous[i]->data : NULL);
            tensor[i] = strided[i].buf.data;
        } else {
            tensor[i] = contiguous[i]->data;
        }
    }
}

void strided_tensors_free(const uint8_t stride_bytes[4], strided_tensor strided[4]) {
    for (int i = 0; i < 4; ++i) {
        if (stride_bytes[i]) strided_free(&strided[i]);
    }
}

/* ---- the oracle's report ----------------------------------------------------------------- */
long fuzz_calls[kOpCount], fuzz_accepted[kOpCount];

void fuzz_count(int op, int accepted) {
    ++fuzz_calls[op];
    fuzz_accepted[op] += accepted != 0;
}

void fuzz_violation(const char* what, gqa_status status, const char* call_fmt, ...) {
    va_list ap;
    fprintf(stderr, "fuzz_gqa ORACLE VIOLATION: %s\n  status=%d (%s) last_error=\"%s\"\n  ", what, (int)status,
            gqa_status_string(status), gqa_last_error());
    va_start(ap, call_fmt);
    vfprintf(stderr, call_fmt, ap);
    va_end(ap);
    fputc('\n', stderr);
    abort();
}

const char* status_wrong(int accepted, gqa_status s) {
    if (accepted) return s == GQA_STATUS_OK ? NULL : "rejected a call the documented rules accept";
    if (s == GQA_STATUS_OK) return "accepted a call the documented rules reject";
    return gqa_last_error()[0] ? NULL : "rejected call left gqa_last_error() empty";
}

int buffer_written_wrongly(guarded_buf* const bufs[], const char* const names[], const int written[], size_t n,
                           int accepted, char* what, size_t size) {
    for (size_t i = 0; i < n; ++i) {
        const int may_write = accepted && written[i];
        if (may_write ? !guards_intact(bufs[i]) : guarded_changed(bufs[i], NULL)) {
            snprintf(what, size, "%s call wrote %s%s", accepted ? "accepted" : "rejected", names[i],
                     may_write ? "'s guard band" : accepted ? "" : " (or its guard band)");
            return 1;
        }
    }
    return 0;
}

int out_differs(int32_t dtype, const void* out, const double* ref, int64_t n) {
    int64_t worst = -1;
    const double err = max_error(dtype, out, ref, n, &worst);
    if (err <= tolerance(dtype)) return 0;
    fprintf(stderr, "out[%lld] = %g, reference %g (error %g, tolerance %g)\n", (long long)worst,
            load_elem(dtype, out, worst), ref[worst], err, tolerance(dtype));
    return 1;
}

int lse_differs(const float* got, const double* want, int64_t n) {
    for (int64_t i = 0; i < n; ++i) {
        if (want[i] == -INFINITY ? got[i] != -INFINITY : !(fabs((double)got[i] - want[i]) <= lse_tolerance())) return 1;
    }
    return 0;
}
