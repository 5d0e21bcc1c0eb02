/* fuzz.h: what the parts of the libFuzzer harness share (see README.md): the byte reader, the
 * field generators, the variant options of gqa.h and their documented rules, strided copies of
 * tensors, and the oracle's failure report. Each op has its file: fuzz_attention.c (prefill and
 * decode), fuzz_batch.c (gqa_attention_batch), fuzz_merge.c (gqa_merge_states); fuzz_gqa.c
 * picks one from the first byte. */
#ifndef GQA_FUZZ_H
#define GQA_FUZZ_H

#include "attn_case.h"

/* Calls too large to run quickly are not made: elements of every tensor, reference MACs, and
 * query rows (batch * seq_len * num_q_heads): past 2^16 rows a call costs seconds under ASan
 * (2^20 one-token sequences: 22 s, past libFuzzer's timeout). */
enum { kMaxElems = 1 << 20, kMaxWork = 1 << 22, kMaxRows = 1 << 16 };

/* ---- reading the fuzz bytes (past the end: zeros) ---------------------------------------- */
typedef struct reader {
    const uint8_t* p;
    size_t n;
} reader;
uint8_t next_u8(reader* r);
int32_t next_i32(reader* r);
/* A field: usually lo..hi, about 1 in 16 an extreme value (0, -1, INT32_MAX, raw bytes...). */
int32_t next_field(reader* r, int32_t lo, int32_t hi);
/* A GQA_DTYPE_* (now and then anything), a device (almost always CPU), a head_dim (1..40, a
 * model's, or any field), a scale (0 = default, small positive values, now and then NaN, inf,
 * negative), 8 bytes of tensor seed. */
int32_t next_dtype(reader* r);
int32_t next_device(reader* r);
int32_t next_head_dim(reader* r);
float next_scale(reader* r);
uint64_t next_seed(reader* r);

int valid_dtype(int32_t dtype);
/* The storage dtype of a call's buffers: its dtype when valid, else f32 (any will do). */
int32_t buffer_dtype(int32_t dtype);

/* ---- the variant options of gqa.h (window, softcap, sinks, lse, strides) ----------------- */
/* One byte says which options are given; absent bytes (an input from before they existed)
 * give none. Strides are one byte per tensor (q, k, v, out): 0 contiguous (all fields 0),
 * else explicit nested strides padded by its bits, now and then a negative field or (decode)
 * a token stride (both rejected). */
typedef struct fuzz_variants {
    int32_t window_left, window_right;
    float softcap;
    int32_t reserved; /* reserved2 (prefill, decode) or reserved (batch): must be 0 */
    int has_sinks, sinks_rare, want_lse;
    uint8_t stride_bytes[4]; /* q, k, v, out */
} fuzz_variants;
void next_variants(reader* r, fuzz_variants* v);
/* The sink logits of the call: [num_q_heads] finite values and -inf (no sink); with sinks_rare,
 * one NaN or +inf (rejected). */
void fill_sinks(const fuzz_variants* v, uint64_t seed, float* sinks, int64_t num_q_heads);
/* gqa.h's rules for the variant fields (sinks as filled): 1 when they are valid. */
int variants_valid(const fuzz_variants* v, const float* sinks, int64_t num_q_heads);
/* The options as the reference takes them. */
attn_variants reference_variants(const fuzz_variants* v, const float* sinks);

/* ---- strided tensors --------------------------------------------------------------------- */
/* A [count[0], count[1], count[2], head_dim] tensor as the call sees it: its rows at the given
 * element strides in a guarded buffer whose gaps hold NaN, so a read of a gap shows in the
 * output and a write to one is caught. */
typedef struct strided_tensor {
    int32_t dtype;
    int64_t count[3], stride[3], head_dim;
    guarded_buf buf;
    uint8_t* initial; /* the buffer as made, for the gap check */
} strided_tensor;
/* Which stride fields a config has: prefill all three; decode batch and head (token must be
 * 0: one token); the batched op token and head (batch must be 0: ragged rows). */
enum { kPrefillStrides, kDecodeStrides, kBatchStrides };
/* The strides that stride_byte asks for (see fuzz_variants) over [count..., head_dim]: the
 * layout in stride[] (nested, never overlapping), the config's fields in *given. */
void strides_from_byte(uint8_t stride_byte, int kind, const int64_t count[3], int64_t head_dim, gqa_strides* given,
                       int64_t stride[3]);
int strides_negative(const gqa_strides* s);
/* gqa.h's rules for a config's strides of that kind: 1 when valid. */
int strides_valid(const gqa_strides* s, int kind);
/* Lays out the contiguous [count..., head_dim] tensor `from` at `stride` (NULL from: NaN rows). */
void strided_make(strided_tensor* t, int32_t dtype, const int64_t count[3], int64_t head_dim, const int64_t stride[3],
                  const void* from);
/* Copies the rows back into the contiguous `to`. */
void strided_gather(const strided_tensor* t, void* to);
/* 1 when a byte outside the rows changed since strided_make (guard bands included). */
int strided_gaps_changed(const strided_tensor* t);
void strided_free(strided_tensor* t);
/* A call's q, k, v, out (index 0..3): tensor[i] is contiguous[i]'s buffer, or, when
 * stride_bytes[i] asks for strides, a strided copy of it made in strided[i] at layout[i] (out:
 * NaN rows). strided_tensors_free frees the copies. */
void strided_tensors(const uint8_t stride_bytes[4], int32_t dtype, const int64_t counts[4][3], int64_t head_dim,
                     int64_t layout[4][3], guarded_buf* const contiguous[4], strided_tensor strided[4],
                     void* tensor[4]);
void strided_tensors_free(const uint8_t stride_bytes[4], strided_tensor strided[4]);

/* ---- the oracle's report ----------------------------------------------------------------- */
/* Prints "fuzz_gqa ORACLE VIOLATION: what", the call's status and message, and the call (the
 * printf-style rest), then aborts: libFuzzer saves the input as a reproducer. */
void fuzz_violation(const char* what, gqa_status status, const char* call_fmt, ...)
#if defined(__GNUC__)
    __attribute__((format(printf, 3, 4), noreturn))
#endif
    ;
/* What is wrong with a call's status (NULL: nothing): a rejected call must return non-OK with
 * a message, an accepted one OK. */
const char* status_wrong(int accepted, gqa_status s);
/* The first of a call's n buffers that changed although it may not: a rejected call writes
 * nothing; an accepted one only the buffers marked written, never their guard bands. Puts the
 * complaint into what[size] and returns 1; else 0. */
int buffer_written_wrongly(guarded_buf* const bufs[], const char* const names[], const int written[], size_t n,
                           int accepted, char* what, size_t size);
/* 1 (printing the worst element) when out differs from the float64 reference by more than the
 * dtype's tolerance (an unwritten NaN always does). */
int out_differs(int32_t dtype, const void* out, const double* ref, int64_t n);
/* 1 when any of the n lse values differs from the reference by more than lse_tolerance() (-inf
 * must be -inf; NaN always differs). */
int lse_differs(const float* got, const double* want, int64_t n);

/* How many calls each op made and how many of them the rules accepted (fuzz_replay prints
 * them, so a corpus that no longer reaches the accepting paths shows). */
enum { kOpPrefill, kOpDecode, kOpBatch, kOpMerge, kOpCount };
extern long fuzz_calls[kOpCount], fuzz_accepted[kOpCount];
void fuzz_count(int op, int accepted);

/* ---- the ops (each decodes the rest of the input, calls, and checks) --------------------- */
void fuzz_attention(reader* r, int decode, int cuda_usable);
void fuzz_batch(reader* r, int cuda_usable);
void fuzz_merge(reader* r, int cuda_usable);

#endif /* GQA_FUZZ_H */
