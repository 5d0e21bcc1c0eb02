/* gqa_test.h: the C test toolkit of libgqa, shared by tests/c, tests/reliability, tests/fuzz,
 * tests/abi1 and the CUDA emulation's sweep (tests/gpu/emulate). One home for:
 *   - CHECK and the pass/fail summary;
 *   - storage dtypes: f16/bf16 conversions (round to nearest even), element load/store, and
 *     the tolerance table against the float64 reference;
 *   - one random generator (xorshift64*, deterministic);
 *   - guarded buffers: data between two canary bands, with snapshots to prove a call wrote
 *     nothing it was not allowed to;
 *   - the float64 reference attention of one query row.
 * One attention case with its buffers, call, reference and checks is in attn_case.h.
 * C99; tests/support/CMakeLists.txt builds it as the library gqa_test_support. */
#ifndef GQA_TEST_H
#define GQA_TEST_H

#include <math.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "gqa.h"

#ifdef __cplusplus
extern "C" {
#endif

/* ---- checks ------------------------------------------------------------------------------ */
extern long test_checks;
extern long test_failures;
/* Counts a failure and prints "FAIL file:line: <message>" to stderr. */
void test_fail(const char* file, int line, const char* fmt, ...)
#if defined(__GNUC__)
    __attribute__((format(printf, 3, 4)))
#endif
    ;
#define CHECK(cond, ...)                                              \
    do {                                                              \
        ++test_checks;                                                \
        if (!(cond)) test_fail(__FILE__, __LINE__, __VA_ARGS__);      \
    } while (0)
/* Prints "<name>: N checks, M failed" to stderr and returns the process exit code. */
int test_summary(const char* name);
/* malloc that never returns NULL (exits 2: out of memory is not a test result). */
void* test_malloc(size_t bytes);
/* Runs fn(arg) in a forked child under a 60 s alarm, so that a crash, an abort or a hang is a
 * failure of that case (printed here, naming label) and not the end of the test; fn returns its
 * number of failed checks. Returns 1 when the child passed, else 0. */
int test_run_isolated(const char* label, long (*fn)(const void*), const void* arg);

/* ---- storage dtypes ---------------------------------------------------------------------- */
size_t dtype_size(int32_t dtype);
const char* dtype_name(int32_t dtype);
float f16_to_float(uint16_t h);
uint16_t float_to_f16(float f);
float bf16_to_float(uint16_t h);
uint16_t float_to_bf16(float f);
double load_elem(int32_t dtype, const void* base, int64_t i);
/* Stores x rounded to nearest even in the storage dtype. */
void store_elem(int32_t dtype, void* base, int64_t i, double x);
/* Largest error allowed against the float64 reference on O(1) data: f32 1e-4, f16 4e-3,
 * bf16 3e-2 (the one tolerance table of the C tests). */
double tolerance(int32_t dtype);

/* ---- random numbers ---------------------------------------------------------------------- */
typedef struct test_rng {
    uint64_t s;
} test_rng;
void rng_seed(test_rng* r, uint64_t seed);
uint64_t rng_next(test_rng* r);
double rng_uniform(test_rng* r, double lo, double hi); /* in [lo, hi) */
/* n elements uniform in [lo, hi), stored in the dtype (so the reference sees what libgqa sees). */
void fill_uniform(test_rng* r, int32_t dtype, void* base, int64_t n, double lo, double hi);
/* fill_uniform in [-1, 1) from one process-wide generator. */
void fill_random(int32_t dtype, void* base, int64_t n);
void fill_value(int32_t dtype, void* base, int64_t n, double x);

/* ---- guarded buffers --------------------------------------------------------------------- */
#define GUARD_BYTES 256
typedef struct guarded_buf {
    uint8_t* base; /* allocation: guard | data | guard                        */
    uint8_t* data; /* what the library is given (zero-filled by guarded_alloc) */
    size_t bytes;  /* size of data                                            */
    uint8_t* snap; /* copy of the whole allocation, taken by guarded_snapshot  */
} guarded_buf;
guarded_buf guarded_alloc(size_t bytes);
void guarded_free(guarded_buf* b);
/* The guard bands still hold their canary pattern. */
int guards_intact(const guarded_buf* b);
void guarded_snapshot(guarded_buf* b);
/* Non-zero when the allocation (guards included) differs from its snapshot; *first_diff (when
 * given) is the byte offset into data of the first difference, < 0 or >= bytes in a guard. */
int guarded_changed(const guarded_buf* b, long long* first_diff);

/* ---- float64 reference ------------------------------------------------------------------- */
/* Element d of row j of a tensor: base[offset + j * row_stride + d], in the dtype. */
typedef struct strided_view {
    const void* base;
    int32_t dtype;
    size_t offset;     /* element offset of row 0, element 0 */
    size_t row_stride; /* elements between consecutive rows  */
} strided_view;

/* Softmax attention of query row 0 of q over keys/values 0 .. n_keys - 1, in double:
 * res[0 .. head_dim). A NaN or infinite logit makes the whole row NaN, as in libgqa. */
void reference_row(const strided_view* q, const strided_view* k, const strided_view* v, int64_t n_keys,
                   int64_t head_dim, double scale, double* res);
/* The same over keys first .. end - 1 with the variants of gqa.h: logits scale * q.k, then
 * softcap * tanh(logit / softcap) when softcap > 0; sink (-INFINITY: none) joins the
 * denominator only. *lse (when given): natural log of the denominator; a row that sees no key
 * has res 0 and lse = sink (-inf without). */
void reference_row_variants(const strided_view* q, const strided_view* k, const strided_view* v, int64_t first,
                            int64_t end, int64_t head_dim, double scale, double softcap, double sink, double* res,
                            double* lse);

/* The variant options of a call (gqa.h), for the reference. */
typedef struct attn_variants {
    int32_t window_left, window_right; /* -1: unbounded                 */
    double softcap;                    /* 0: off                        */
    const float* sinks;                /* [num_q_heads] or NULL (none)  */
} attn_variants;
/* The keys [*first, *end) the query at absolute position pos sees, of the n_keys that exist
 * (0 .. n_keys - 1): causality (keys <= pos), then the window of v (NULL: none). */
void reference_key_range(const attn_variants* v, int causal, int64_t pos, int64_t n_keys, int64_t* first,
                         int64_t* end);
/* Largest error allowed for an lse output against the float64 reference (fp32 logits of the
 * stored inputs): 2e-3, every dtype. */
double lse_tolerance(void);

/* One call's shape, for the reference of all its rows. q and out are [batch, seq_len,
 * num_q_heads, head_dim]; k and v are [batch, kv_rows, num_kv_heads, head_dim] and hold every
 * key a query sees: the caches after the call (kv_rows = max_seq_len), or the new k, v
 * without caches (kv_rows = seq_len). Query i of sequence b sits at key position
 * starts[b] + i (starts NULL: 0) and sees keys 0 .. that position (causal) or
 * 0 .. starts[b] + seq_len - 1, within the window of variants. */
typedef struct attn_shape {
    int32_t dtype;
    int64_t batch, seq_len, num_q_heads, num_kv_heads, head_dim, kv_rows;
    const int32_t* starts;
    int causal;
    double scale; /* 0: 1 / sqrt(head_dim) */
    const attn_variants* variants; /* NULL: none (window -1, -1; no softcap, no sinks) */
} attn_shape;
/* What a call writes to a cache [batch, kv_rows, num_kv_heads, head_dim]: row i of sequence b
 * of rows ([batch, seq_len, num_kv_heads, head_dim], the new k or v) at position starts[b] + i.
 * Applied to a copy of the cache before the call, it gives the expected cache. */
void append_rows(const attn_shape* s, void* cache, const void* rows);
/* ref_out[batch * seq_len * num_q_heads * head_dim]: the float64 reference of every row. */
void reference_attention(const attn_shape* s, const void* q, const void* k, const void* v, double* ref_out);
/* The same, and ref_lse[batch * num_q_heads * seq_len] (gqa.h's lse layout) when given. */
void reference_attention_lse(const attn_shape* s, const void* q, const void* k, const void* v, double* ref_out,
                             double* ref_lse);
/* Largest |got[i] - want[i]| over i < n, NaN-aware: an unwritten (NaN) output is the worst
 * error there is. *worst (when given) is its index, -1 when n is 0. */
double max_error(int32_t dtype, const void* got, const double* want, int64_t n, int64_t* worst);
/* max_error of out against reference_attention. */
double attention_error(const attn_shape* s, const void* q, const void* k, const void* v, const void* out);

#ifdef __cplusplus
} /* extern "C" */
#endif

#endif /* GQA_TEST_H */
