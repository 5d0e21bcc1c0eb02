/* rel_util.h: shared helpers of the reliability tests (tests/reliability/).
 *
 * - guarded buffers: every tensor lives between two canary bands, and a snapshot of the whole
 *   allocation proves that a call wrote nothing it was not allowed to write;
 * - storage conversions (f16, bf16, f32) and random fills with values exactly representable
 *   in the storage dtype, so the float64 reference sees exactly what the library sees;
 * - one attention case (prefill or decode) with its buffers, its call and its float64
 *   reference (expected output and expected caches);
 * - a tiny check/report layer: every failure prints one line to stderr naming the case. */
#ifndef GQA_REL_UTIL_H
#define GQA_REL_UTIL_H

#include <stddef.h>
#include <stdint.h>

#include "gqa.h"

/* ---- checks --------------------------------------------------------------------------- */
extern long rel_checks;
extern long rel_failures;
void rel_fail(const char* fmt, ...) __attribute__((format(printf, 1, 2)));
#define REL_CHECK(cond, ...)                                                   \
    do {                                                                       \
        ++rel_checks;                                                          \
        if (!(cond)) rel_fail(__VA_ARGS__);                                    \
    } while (0)
/* Prints "<name>: N checks, M failed" and returns the process exit code. */
int rel_summary(const char* name);

/* ---- guarded buffers ------------------------------------------------------------------ */
#define REL_GUARD_BYTES 256
typedef struct rel_buf {
    uint8_t* base;   /* allocation: guard | data | guard */
    uint8_t* data;   /* what the library is given        */
    size_t bytes;    /* size of data                     */
    uint8_t* snap;   /* copy of the whole allocation, taken by rel_buf_snapshot() */
} rel_buf;

void rel_buf_alloc(rel_buf* b, size_t bytes);
void rel_buf_free(rel_buf* b);
/* Guard bands still hold their canary pattern. */
int rel_buf_guards_ok(const rel_buf* b);
void rel_buf_snapshot(rel_buf* b);
/* Byte offset (into data) of the first difference from the snapshot, -1 if none; guard-band
 * differences are reported as offsets < 0 or >= bytes. */
int rel_buf_changed(const rel_buf* b, long long* first_diff);

/* ---- dtypes --------------------------------------------------------------------------- */
size_t rel_dtype_size(int32_t dtype);
const char* rel_dtype_name(int32_t dtype);
double rel_load(int32_t dtype, const void* base, int64_t i);
/* Stores x rounded to nearest even in the storage dtype. */
void rel_store(int32_t dtype, void* base, int64_t i, double x);
double rel_tolerance(int32_t dtype); /* f32 1e-4, f16 4e-3, bf16 3e-2 (O(1) data) */

/* ---- random numbers (xorshift64*, deterministic) -------------------------------------- */
typedef struct rel_rng { uint64_t s; } rel_rng;
void rel_rng_seed(rel_rng* r, uint64_t seed);
uint64_t rel_rng_next(rel_rng* r);
double rel_rng_uniform(rel_rng* r, double lo, double hi);
void rel_fill_uniform(rel_rng* r, int32_t dtype, void* base, int64_t n, double lo, double hi);
void rel_fill_value(int32_t dtype, void* base, int64_t n, double x);

/* ---- one attention case --------------------------------------------------------------- */
typedef struct rel_case {
    int decode;            /* 0: gqa_attention_prefill, 1: gqa_attention_decode            */
    int32_t dtype;
    int64_t batch, seq_len, num_q_heads, num_kv_heads, head_dim;
    int64_t max_seq_len;   /* 0: prefill without caches                                      */
    int32_t start_pos;     /* prefill                                                        */
    int32_t cache_len;     /* decode, when cache_lens is NULL                                */
    int32_t* cache_lens;   /* decode: optional, batch values (owned by the case)             */
    int32_t causal;
    float scale;
    int32_t num_splits;
    rel_buf q, k, v, out, k_cache, v_cache;
} rel_case;

/* Describe a case; buffers are allocated by rel_case_alloc. */
void rel_case_prefill(rel_case* c, int32_t dtype, int64_t batch, int64_t seq_len, int64_t hq,
                      int64_t hkv, int64_t d, int64_t max_seq_len, int32_t start_pos, int32_t causal);
void rel_case_decode(rel_case* c, int32_t dtype, int64_t batch, int64_t hq, int64_t hkv, int64_t d,
                     int64_t max_seq_len, int32_t cache_len, const int32_t* cache_lens);
/* Allocate guarded buffers; q, k, v and the whole caches random in [-1, 1); out NaN. */
void rel_case_alloc(rel_case* c, uint64_t seed);
void rel_case_free(rel_case* c);
/* Cache position of sequence b's first new token. */
int64_t rel_case_start(const rel_case* c, int64_t b);
int64_t rel_case_out_elems(const rel_case* c);
int64_t rel_case_cache_elems(const rel_case* c);
void rel_case_prefill_config(const rel_case* c, gqa_prefill_config* cfg);
void rel_case_decode_config(const rel_case* c, gqa_decode_config* cfg);
/* Call the library on the case's buffers. */
gqa_status rel_case_run(rel_case* c);

/* Float64 reference from the case's CURRENT inputs and caches (call before running, as the
 * run writes the caches): ref_out[out_elems]; expected caches (the caches after the new
 * k, v were written) into exp_k/exp_v when given (cache_elems elements of the storage dtype). */
void rel_case_reference(const rel_case* c, double* ref_out, void* exp_k, void* exp_v);

/* Check a run against a reference taken before it: status OK, output within tolerance
 * (and everywhere written: no NaN), caches equal to the expected caches byte for byte,
 * inputs unchanged, every guard band intact. Returns the number of failed checks. */
long rel_case_check(rel_case* c, const char* label, const double* ref_out, const void* exp_k,
                    const void* exp_v);

/* Snapshot every buffer of a case (guards included). */
void rel_case_snapshot(rel_case* c);
/* Number of buffers that differ from their snapshot; names them in *which (static text). */
int rel_case_changed(const rel_case* c, const char** which);

#endif /* GQA_REL_UTIL_H */
