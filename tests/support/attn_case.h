/* attn_case.h: one attention call (prefill or decode) as a test case: its shape, its guarded
 * buffers (random q, k, v and caches; out NaN), its config, its call, its float64 reference
 * (expected output and expected caches) and the checks of a run against that reference.
 * Used by tests/reliability and tests/fuzz; builds configs with the current gqa.h. */
#ifndef GQA_ATTN_CASE_H
#define GQA_ATTN_CASE_H

#include "gqa_test.h"

typedef struct attn_case {
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
    const attn_variants* variants; /* for the reference (NULL: none); the caller's config has them */
    guarded_buf q, k, v, out, k_cache, v_cache;
} attn_case;

/* Describe a case; buffers are allocated by attn_case_alloc. */
void attn_case_prefill(attn_case* c, int32_t dtype, int64_t batch, int64_t seq_len, int64_t hq, int64_t hkv,
                       int64_t d, int64_t max_seq_len, int32_t start_pos, int32_t causal);
void attn_case_decode(attn_case* c, int32_t dtype, int64_t batch, int64_t hq, int64_t hkv, int64_t d,
                      int64_t max_seq_len, int32_t cache_len, const int32_t* cache_lens);
/* Allocate guarded buffers; q, k, v and the whole caches random in [-1, 1); out NaN. */
void attn_case_alloc(attn_case* c, uint64_t seed);
void attn_case_free(attn_case* c);
/* Cache position of sequence b's first new token. */
int64_t attn_case_start(const attn_case* c, int64_t b);
int64_t attn_case_out_elems(const attn_case* c);
int64_t attn_case_cache_elems(const attn_case* c);
void attn_case_prefill_config(const attn_case* c, gqa_prefill_config* cfg);
void attn_case_decode_config(const attn_case* c, gqa_decode_config* cfg);
/* Call the library on the case's buffers. */
gqa_status attn_case_run(attn_case* c);

/* Float64 reference from the case's CURRENT inputs and caches (call before running, as the
 * run writes the caches): ref_out[out_elems]; expected caches (the caches after the new
 * k, v were written) into exp_k/exp_v when given (cache_elems elements of the storage dtype). */
void attn_case_reference(const attn_case* c, double* ref_out, void* exp_k, void* exp_v);
/* attn_case_reference with the case's variants and, when ref_lse is given, the lse of every row
 * ([batch, num_q_heads, seq_len]). */
void attn_case_reference_lse(const attn_case* c, double* ref_out, double* ref_lse, void* exp_k, void* exp_v);

/* Check a run against a reference taken before it: output within tolerance (and everywhere
 * written: no NaN), caches equal to the expected caches byte for byte, inputs unchanged,
 * every guard band intact. Returns the number of failed checks. */
long attn_case_check(attn_case* c, const char* label, const double* ref_out, const void* exp_k,
                     const void* exp_v);

/* Snapshot every buffer of a case (guards included). */
void attn_case_snapshot(attn_case* c);
/* Number of buffers that differ from their snapshot; names the first in *which (static text). */
int attn_case_changed(const attn_case* c, const char** which);

/* What a run of a case must produce, taken from its CURRENT inputs (attn_case_reference), with
 * a snapshot of the case so that attn_expect_check also proves the inputs unchanged. */
typedef struct attn_expect {
    double* out;
    uint8_t* k_cache; /* NULL without caches */
    uint8_t* v_cache;
} attn_expect;
void attn_expect_take(attn_expect* e, attn_case* c);
void attn_expect_free(attn_expect* e);
/* attn_case_check of the case's current output and caches against e; returns the failures. */
long attn_expect_check(attn_case* c, const attn_expect* e, const char* label);

#endif /* GQA_ATTN_CASE_H */
