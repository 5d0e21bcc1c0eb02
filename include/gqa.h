/*
 * gqa.h: libgqa, Grouped-Query Attention for LLM inference.
 *
 * This header is the one stable contract of libgqa. Python (cffi, ABI mode) reads its
 * declarations from this file; C, C++, Rust and Go callers link against the same text.
 * It compiles as C99 and C++11 and needs no CUDA header.
 *
 * Tensor layout is BSHD, row-major; contiguous unless a config gives strides (gqa_strides):
 *   q, out (prefill)    [batch, seq_len, num_q_heads, head_dim]
 *   k, v  (prefill)     [batch, seq_len, num_kv_heads, head_dim]
 *   k_cache, v_cache    [batch, max_seq_len, num_kv_heads, head_dim]   (always contiguous)
 *   q, out (decode)     [batch, 1, num_q_heads, head_dim]
 *   k, v  (decode)      [batch, 1, num_kv_heads, head_dim]
 *   lse (prefill)       [batch, num_q_heads, seq_len] fp32, contiguous  (optional output)
 *   lse (decode)        [batch, num_q_heads] fp32, contiguous           (optional output)
 * The batched op (gqa_attention_batch, below) packs ragged rows instead, [total_q, heads,
 * head_dim], and pages the cache, [num_pages, page_size, num_kv_heads, head_dim].
 * Query head h reads KV head h / (num_q_heads / num_kv_heads).
 * Alignment: on the CPU q, k, v, out, k_cache and v_cache may start at any byte address
 * (every access is alignment-safe; a NumPy array at an odd offset is fine); lse and sinks are
 * float*, aligned as their type says. On CUDA q, k, v, out, k_cache, v_cache and the workspace
 * must be 16-byte aligned (sinks, lse and gqa_merge_states' arrays: aligned as their element
 * type), else the call returns GQA_STATUS_UNSUPPORTED and writes nothing.
 *
 * Every entry point validates everything before touching memory: a call that returns a
 * status other than GQA_STATUS_OK has written no byte of out, k_cache or v_cache. Besides the
 * obvious (NULL pointers, sizes <= 0, num_q_heads % num_kv_heads, cache positions), a call is
 * rejected when: scale is not finite, < 0, or larger than FLT_MAX / (2 * head_dim * 65504^2)
 * (INVALID_ARGUMENT; about 3e26 at head_dim 128: up to it, no input f16 can hold overflows
 * the fp32 logits scale * q.k or their differences); head_dim > 512 (UNSUPPORTED;
 * CUDA: a head_dim without kernels, 32, 64, 80, 96, 128, 256 and 512 have them, or one whose
 * kernels need more shared memory than the device has, e.g. 512 prefill on 64 KB); a CUDA
 * stride that is not a multiple of 8 elements (UNSUPPORTED: rows must stay 16-byte aligned);
 * a tensor's byte size or extent overflows 64 bits
 * (INVALID_ARGUMENT); a tensor the call writes (out, lse, k_cache, v_cache) shares an element with
 * any other tensor of the call (INVALID_ARGUMENT; inputs may share memory, e.g. three strided
 * views of one fused QKV buffer).
 * Nothing aborts, nothing prints to stdout; a C++ exception never crosses this ABI.
 *
 * Lines between GQA_CDEF_BEGIN and GQA_CDEF_END are fed to cffi's cdef: keep them free of
 * preprocessor conditionals; GQA_API is stripped and only `#define NAME integer` lines are kept.
 */
#ifndef GQA_H
#define GQA_H

#include <stddef.h>
#include <stdint.h>

#if defined(_WIN32)
#  if defined(GQA_BUILDING_LIBRARY)
#    define GQA_API __declspec(dllexport)
#  else
#    define GQA_API __declspec(dllimport)
#  endif
#elif defined(__GNUC__) || defined(__clang__)
#  define GQA_API __attribute__((visibility("default")))
#else
#  define GQA_API
#endif

#ifdef __cplusplus
extern "C" {
#endif

/* GQA_CDEF_BEGIN */

/* Library version (semantic). gqa_version_number() returns MAJOR*10000 + MINOR*100 + PATCH. */
#define GQA_VERSION_MAJOR 0
#define GQA_VERSION_MINOR 2
#define GQA_VERSION_PATCH 0
/* Bumped only when a declaration below changes incompatibly (a field moved or changed type, a
 * function's parameters changed, a value changed meaning). Appending a field to a config is
 * compatible and leaves it as it is (see "Growing the configs" below). Every binding checks
 * that gqa_abi_version() equals the GQA_ABI_VERSION it was written for. */
#define GQA_ABI_VERSION 1

/* Status codes. The values are pinned: they never change meaning. */
typedef enum gqa_status {
    GQA_STATUS_OK = 0,
    GQA_STATUS_INVALID_ARGUMENT = 1,   /* a pointer, size or field is wrong              */
    GQA_STATUS_CACHE_OVERFLOW = 2,     /* a cache position would reach max_seq_len        */
    GQA_STATUS_UNSUPPORTED = 3,        /* valid, but not supported by the chosen backend  */
    GQA_STATUS_DEVICE_UNAVAILABLE = 4, /* no CUDA in this build, no driver or no device   */
    GQA_STATUS_CUDA_ERROR = 5,         /* the CUDA runtime reported an error              */
    GQA_STATUS_VERSION_MISMATCH = 6,   /* config struct_size / abi_version not known here */
    GQA_STATUS_OUT_OF_MEMORY = 7,      /* host scratch memory could not be allocated      */
    GQA_STATUS_INTERNAL_ERROR = 8      /* a bug in libgqa: please report the message      */
} gqa_status;

/* Storage dtype of every tensor of a call. Accumulation is always fp32. 0 is invalid so that
 * a zero-filled config is rejected rather than guessed.
 * What the CPU rounds: f32 and f16 calls multiply in fp32 (exact products) on every path. The
 * CPU path is chosen at run time, or forced with GQA_CPU_ISA = scalar, avx2, avx512,
 * avx512_bf16 or amx_bf16 (one the CPU or OS cannot run logs a warning and the best available
 * runs instead). bf16 prefill on amx_bf16 (AMX tiles; libgqa asks Linux for AMX state once) and
 * avx512_bf16 (vdpbf16ps) multiplies bf16 pairs exactly, accumulates in fp32, reads subnormal
 * bf16 inputs as 0 and rounds the softmax probabilities P to bf16 (nearest even) before P.V, as
 * the CUDA kernels do; every other CPU path keeps P in fp32, decode too except below. bf16 decode on
 * those two paths forms Q.K scores over cache rows read in place with vdpbf16ps too (exact
 * products, fp32 sums, subnormals as 0, the softmax scale applied after the sum) and, for
 * head_dim 64 on AMD CPUs, P.V as well, with P rounded to bf16 as in prefill. */
#define GQA_DTYPE_F16 1
#define GQA_DTYPE_BF16 2
#define GQA_DTYPE_F32 3 /* CPU only */

/* Where the tensors live. CUDA pointers are device pointers of the current device. */
#define GQA_DEVICE_CPU 1
#define GQA_DEVICE_CUDA 2

/* Log levels; the values match Python's logging module. */
#define GQA_LOG_DEBUG 10
#define GQA_LOG_INFO 20
#define GQA_LOG_WARNING 30
#define GQA_LOG_ERROR 40
#define GQA_LOG_OFF 100

/* Growing the configs. A config is known by its struct_size: libgqa accepts every size it ever
 * published for that struct (the sizeof in any earlier gqa.h) and gives the fields past the
 * caller's size their defaults, so a caller built against an older gqa.h keeps working
 * unchanged. Fields are only ever appended, and a new field's default is what an older caller
 * gets. A struct_size libgqa never published (e.g. from a gqa.h newer than the library) is
 * GQA_STATUS_VERSION_MISMATCH; abi_version must be GQA_ABI_VERSION. */

/* Element strides of q, k, v or out (head_dim is always contiguous: element d of a head is d
 * elements after element 0). All three 0 (the default): the contiguous BSHD layout of the call.
 * A non-zero field is used as given; a 0 field means the contiguous value of that field
 * (batch: seq_len * heads * head_dim, token: heads * head_dim, head: head_dim). Negative strides
 * are INVALID_ARGUMENT. Three views of one fused QKV projection [B, S, (Hq + 2 Hkv) * D] are
 * q = {S*(Hq+2Hkv)*D, (Hq+2Hkv)*D, D} from base, k from base + Hq*D, v from base + (Hq+Hkv)*D. */
typedef struct gqa_strides {
    int64_t batch;  /* elements between sequences                                   */
    int64_t token;  /* elements between tokens (decode: must be 0, one token)      */
    int64_t head;   /* elements between heads                                       */
} gqa_strides;

/* The attention variants, appended to both configs (libgqa 0.2). Same meaning in every op:
 *
 * window_left, window_right (FlashAttention's meaning): the query at absolute position i sees
 *   key j only when i - window_left <= j <= i + window_right; -1 = unbounded on that side (the
 *   default, -1 and -1). Causality (j <= i) and what exists (j < cached + new) still apply, so
 *   window_right matters only when causal = 0. Other negative values are INVALID_ARGUMENT. Keys
 *   that no query of the call sees are never read, and the cost follows the window, not the
 *   cache length (CPU prefill reads whole blocks of 128 keys from the first key any query sees).
 *   onnxruntime's local_window_size and OpenVINO's sliding_window count the current token:
 *   local_window_size = window_left + 1 (Mistral's sliding_window 4096 is window_left = 4095).
 * softcap: c > 0 turns every scaled logit s = scale * q.k into c * tanh(s / c) before masking
 *   and softmax (Gemma 2: 50). 0 (default) = off; negative or non-finite: INVALID_ARGUMENT.
 * sinks: optional fp32 [num_q_heads] logits, one per query head, in memory of the call's device
 *   (gpt-oss). Sink s_h joins the softmax denominator only:
 *   out = sum_j e^{s_j} v_j / (sum_j e^{s_j} + e^{s_h}). Equal to onnxruntime's head_sink; its
 *   smooth_softmax is all-zero sinks. NULL (default) = none. -inf is no sink for that head; NaN
 *   or +inf is INVALID_ARGUMENT on the CPU (CUDA does not read device memory to check).
 * lse: optional fp32 output (call's device memory; layout at the top of this file): the natural
 *   log of sum_j e^{s_j} (+ e^{s_h} with sinks), s after scale and softcap. -inf for a row that
 *   saw no key and has no sink; a row with a sink that saw no key has out 0 and lse s_h.
 *   With gqa_merge_states this combines attention over disjoint key sets (split-KV, cascade /
 *   shared-prefix attention, context parallelism). NULL (default) = not computed.
 * q_strides, k_strides, v_strides, out_strides: see gqa_strides; all 0 (default) = contiguous.
 * reserved2 must be 0. */

/* Prefill: seq_len new tokens per sequence attend causally to themselves and to the cache.
 * With caches: k, v are written to cache positions [start_pos, start_pos + seq_len); query i
 * (absolute position start_pos + i) attends to cache positions 0 .. start_pos + i (causal) or
 * 0 .. start_pos + seq_len - 1 (non-causal). Without caches (both NULL): attends over the
 * seq_len new keys only; start_pos must then be 0 and max_seq_len is ignored. */
typedef struct gqa_prefill_config {
    uint32_t struct_size;  /* sizeof(gqa_prefill_config), set by the initializer */
    uint32_t abi_version;  /* GQA_ABI_VERSION, set by the initializer            */
    int32_t dtype;         /* GQA_DTYPE_*                                        */
    int32_t device;        /* GQA_DEVICE_*                                       */
    int32_t batch_size;
    int32_t seq_len;       /* new tokens per sequence                            */
    int32_t num_q_heads;
    int32_t num_kv_heads;  /* divides num_q_heads                                */
    int32_t head_dim;
    int32_t max_seq_len;   /* cache capacity in tokens (with caches)             */
    int32_t start_pos;     /* cache position of the first new token              */
    int32_t causal;        /* 1 (default) or 0                                   */
    float scale;           /* 0 means 1/sqrt(head_dim)                           */
    int32_t reserved;      /* must be 0                                          */
    /* libgqa 0.2: the variants (see above); defaults keep the 0.1 behaviour.   */
    int32_t window_left;   /* default -1 (unbounded)                             */
    int32_t window_right;  /* default -1 (unbounded)                             */
    float softcap;         /* default 0 (off)                                    */
    int32_t reserved2;     /* must be 0                                          */
    const float* sinks;    /* default NULL; [num_q_heads]                        */
    float* lse;            /* default NULL; [batch, num_q_heads, seq_len]        */
    gqa_strides q_strides; /* default all 0 (contiguous)                         */
    gqa_strides k_strides;
    gqa_strides v_strides;
    gqa_strides out_strides;
} gqa_prefill_config;

/* Decode: one new token per sequence. Its k, v are written at cache position cache_len
 * (or cache_lens[b]), and its query attends over cache positions 0 .. cache_len. */
typedef struct gqa_decode_config {
    uint32_t struct_size;  /* sizeof(gqa_decode_config), set by the initializer  */
    uint32_t abi_version;  /* GQA_ABI_VERSION, set by the initializer            */
    int32_t dtype;         /* GQA_DTYPE_*                                        */
    int32_t device;        /* GQA_DEVICE_*                                       */
    int32_t batch_size;
    int32_t num_q_heads;
    int32_t num_kv_heads;  /* divides num_q_heads                                */
    int32_t head_dim;
    int32_t max_seq_len;   /* cache capacity in tokens                           */
    int32_t cache_len;     /* tokens already cached, 0 .. max_seq_len - 1        */
    float scale;           /* 0 means 1/sqrt(head_dim)                           */
    int32_t num_splits;    /* split-KV partitions: 0 = choose, 1 = none, N <= 256 */
    const int32_t* cache_lens; /* optional, HOST memory, batch_size values;
                                  NULL means cache_len for every sequence        */
    void* workspace;       /* optional CUDA scratch for split-KV (device memory);
                              size from gqa_decode_workspace_size(). NULL: no split.
                              Ignored on the CPU, which needs no workspace.       */
    uint64_t workspace_bytes; /* size of workspace; ignored when workspace is NULL */
    /* libgqa 0.2: the variants (see above); defaults keep the 0.1 behaviour.   */
    int32_t window_left;   /* default -1 (unbounded)                             */
    int32_t window_right;  /* default -1; no key lies right of the query: -1 or >= 0 */
    float softcap;         /* default 0 (off)                                    */
    int32_t reserved2;     /* must be 0                                          */
    const float* sinks;    /* default NULL; [num_q_heads]                        */
    float* lse;            /* default NULL; [batch, num_q_heads]                 */
    gqa_strides q_strides; /* default all 0 (contiguous); token must be 0        */
    gqa_strides k_strides;
    gqa_strides v_strides;
    gqa_strides out_strides;
} gqa_decode_config;

/* Fill a config with its defaults (struct_size, abi_version, f16, CPU, causal=1, windows -1,
 * the rest 0). For callers that cannot use the initializer macros below (Python, Rust, Go).
 * gqa_*_config_init() write the struct as libgqa 0.1 published it, and set struct_size to that
 * size, so that a caller built against any gqa.h may call them; a config they fill cannot use
 * the fields appended since (libgqa reads them as their defaults). A caller that sets those
 * uses the sized form with the sizeof of its own gqa.h: it fills that many bytes with the
 * defaults and sets struct_size to it; VERSION_MISMATCH (config untouched) for a size libgqa
 * never published. */
GQA_API void gqa_prefill_config_init(gqa_prefill_config* config);
GQA_API void gqa_decode_config_init(gqa_decode_config* config);
GQA_API gqa_status gqa_prefill_config_init_sized(gqa_prefill_config* config, uint32_t struct_size);
GQA_API gqa_status gqa_decode_config_init_sized(gqa_decode_config* config, uint32_t struct_size);

/* The two operations. stream is a cudaStream_t (NULL: the legacy default stream); it is
 * ignored on the CPU. CUDA calls are asynchronous: they neither allocate nor synchronise. */
GQA_API gqa_status gqa_attention_prefill(void* out, const void* q, const void* k, const void* v,
                                         void* k_cache, void* v_cache,
                                         const gqa_prefill_config* config, void* stream);
GQA_API gqa_status gqa_attention_decode(void* out, const void* q, const void* k, const void* v,
                                        void* k_cache, void* v_cache,
                                        const gqa_decode_config* config, void* stream);

/* Bytes of CUDA workspace a decode call with this config may use for split-KV (0 on the CPU). */
GQA_API gqa_status gqa_decode_workspace_size(const gqa_decode_config* config, uint64_t* bytes);

/* Merge: num_states partial attentions of the same queries over disjoint key sets (each with
 * its lse, e.g. from prefill / decode with lse set) into the exact attention over the union of
 * the key sets, with its lse. Layouts (all contiguous):
 *   states  [num_states, batch, seq_len, num_heads, head_dim]  (dtype)
 *   lses    [num_states, batch, num_heads, seq_len]            fp32
 *   out     [batch, seq_len, num_heads, head_dim]              (dtype)
 *   lse_out [batch, num_heads, seq_len]                        fp32, optional (NULL)
 * (decode results: seq_len 1.) out = sum_n e^{lse_n - L} state_n with L = log(sum_n e^{lse_n}
 * (+ e^{sink_h})). A partial with lse -inf (it saw no key) weighs exactly 0 and its state is not
 * read; the partials are summed in index order in fp32, so the result is deterministic. sinks
 * (optional fp32 [num_heads]) are added here once: compute the partials without them. Every
 * pointer is memory of config->device; the written tensors must not overlap any other. */
typedef struct gqa_merge_config {
    uint32_t struct_size;  /* sizeof(gqa_merge_config), set by the initializer   */
    uint32_t abi_version;  /* GQA_ABI_VERSION, set by the initializer            */
    int32_t dtype;         /* GQA_DTYPE_* of states and out                      */
    int32_t device;        /* GQA_DEVICE_*                                       */
    int32_t num_states;    /* >= 1                                               */
    int32_t batch_size;
    int32_t seq_len;
    int32_t num_heads;
    int32_t head_dim;
    int32_t reserved;      /* must be 0                                          */
    const float* sinks;    /* optional [num_heads]; NULL: none                   */
} gqa_merge_config;
/* The defaults (f16, CPU, the rest 0 / NULL) over the first struct_size bytes of config, and
 * config->struct_size = struct_size: pass sizeof(gqa_merge_config) of your gqa.h (the struct
 * may grow; there is no unsized form). VERSION_MISMATCH, config untouched, for a size libgqa
 * never published. */
GQA_API gqa_status gqa_merge_config_init_sized(gqa_merge_config* config, uint32_t struct_size);
GQA_API gqa_status gqa_merge_states(void* out, float* lse_out, const void* states, const float* lses,
                                    const gqa_merge_config* config, void* stream);

/* The batched op: continuous batching in one call. Sequence b has q_len[b] = q_indptr[b + 1] -
 * q_indptr[b] >= 0 new tokens, packed without padding, and kv_lens[b] tokens already cached in
 * a paged KV cache:
 *   q, out            [total_q, num_q_heads, head_dim]   rows q_indptr[b] .. q_indptr[b+1]-1
 *   k, v              [total_q, num_kv_heads, head_dim]  the new tokens' keys and values
 *   k_cache, v_cache  [num_pages, page_size, num_kv_heads, head_dim], contiguous
 *   page_table        [batch_size, max_pages_per_seq] int32 page ids
 * Position t of sequence b lives in page page_table[b * max_pages_per_seq + t / page_size],
 * slot t % page_size. The new K/V are written at positions kv_lens[b] .. kv_lens[b] + q_len[b] - 1;
 * new token j of sequence b (absolute position kv_lens[b] + j) sees positions 0 .. kv_lens[b] + j
 * (causal, aligned bottom-right as FlashAttention) or 0 .. kv_lens[b] + q_len[b] - 1 (causal = 0),
 * then the window. One call covers decode (q_len 1), chunked prefill, speculative verification
 * (q_len k) and mixed batches; a q_len 0 sequence is untouched (nothing of it is read or
 * written). The contiguous [B, max_seq_len, Hkv, D] cache is the special case page_size =
 * max_seq_len, num_pages = B, page_table[b] = b. Pages need not be in order and may be shared
 * read-only by several sequences (a common prefix); a call in which a sequence writes a slot of
 * a page that another sequence of the call reads or writes (or that the sequence itself maps
 * twice) is rejected on the CPU (INVALID_ARGUMENT naming both sequences and the page) and
 * undefined on CUDA. Requirements: kv_lens[b] + q_len[b] <= max_pages_per_seq * page_size
 * (else CACHE_OVERFLOW), every page id a sequence touches in [0, num_pages) (ids past its last
 * position are not read and may be anything, e.g. -1).
 * CPU: q_indptr, kv_lens, page_table are host memory, all validated before anything is
 * written. CUDA: they (and sinks, lse, error_flags) are device memory read by the kernels, so a
 * captured CUDA graph replays with whatever the buffers hold; the call allocates nothing and
 * never synchronises; metadata out of range is skipped (nothing outside the pool is read or
 * written) and reported by OR-ing GQA_BATCH_FLAG_* into *error_flags; GQA_VALIDATE_METADATA=1
 * copies the metadata to the host (synchronising) and validates it as the CPU does. */
typedef struct gqa_batch_config {
    uint32_t struct_size;      /* sizeof(gqa_batch_config), set by the initializer         */
    uint32_t abi_version;      /* GQA_ABI_VERSION, set by the initializer                   */
    int32_t dtype;             /* GQA_DTYPE_*                                               */
    int32_t device;            /* GQA_DEVICE_*                                              */
    int32_t batch_size;        /* sequences                                                 */
    int32_t total_q;           /* rows of q, k, v, out; q_indptr[batch_size] must equal it  */
    int32_t max_q_len;         /* upper bound of any q_len (host value; sizes CUDA grids); 0: total_q */
    int32_t num_q_heads;
    int32_t num_kv_heads;      /* divides num_q_heads                                       */
    int32_t head_dim;
    int32_t page_size;         /* tokens per cache page, >= 1 (any value)                   */
    int32_t num_pages;         /* pages in the pool                                         */
    int32_t max_pages_per_seq; /* columns of page_table                                     */
    int32_t causal;            /* 1 (default) or 0                                          */
    float scale;               /* 0 means 1/sqrt(head_dim)                                  */
    int32_t num_splits;        /* split-KV: 0 choose, 1 none, N <= 256 (CUDA needs a workspace) */
    const int32_t* q_indptr;   /* [batch_size + 1], q_indptr[0] = 0, non-decreasing         */
    const int32_t* kv_lens;    /* [batch_size] tokens already cached per sequence           */
    const int32_t* page_table; /* [batch_size, max_pages_per_seq] page ids                  */
    int32_t window_left;       /* sliding window, as in gqa_prefill_config; default -1      */
    int32_t window_right;      /* default -1                                                */
    float softcap;             /* default 0 (off)                                           */
    int32_t reserved;          /* must be 0                                                 */
    const float* sinks;        /* optional fp32 [num_q_heads]; default NULL                 */
    float* lse;                /* optional fp32 output [num_q_heads, total_q]; default NULL */
    gqa_strides q_strides;     /* batch must be 0 (ragged rows); token/head as gqa_strides  */
    gqa_strides k_strides;
    gqa_strides v_strides;
    gqa_strides out_strides;
    void* workspace;           /* CUDA split-KV scratch, size from gqa_batch_workspace_size() */
    uint64_t workspace_bytes;
    int32_t* error_flags;      /* CUDA: optional device int32; kernels OR GQA_BATCH_FLAG_* into it */
} gqa_batch_config;

/* Flags the CUDA kernels report when device-side metadata is out of range (the offending
 * sequence or page is skipped; nothing outside the pool is read or written). */
#define GQA_BATCH_FLAG_BAD_INDPTR 1
#define GQA_BATCH_FLAG_BAD_KV_LEN 2
#define GQA_BATCH_FLAG_BAD_PAGE 4

/* The defaults (f16, CPU, causal 1, window (-1, -1), the rest 0 / NULL) over the first
 * struct_size bytes of config, and config->struct_size = struct_size: pass
 * sizeof(gqa_batch_config) of your gqa.h (the struct may grow; there is no unsized form).
 * VERSION_MISMATCH, config untouched, for a size libgqa never published. */
GQA_API gqa_status gqa_batch_config_init_sized(gqa_batch_config* config, uint32_t struct_size);
/* The batched op (see gqa_batch_config). stream as for prefill and decode. */
GQA_API gqa_status gqa_attention_batch(void* out, const void* q, const void* k, const void* v,
                                       void* k_cache, void* v_cache,
                                       const gqa_batch_config* config, void* stream);
/* The host-side "plan": bytes of CUDA workspace for split-KV (0 on the CPU). It depends on the
 * shape fields only (no lengths, no metadata read), so an engine asks once per batch shape,
 * outside any CUDA graph. */
GQA_API gqa_status gqa_batch_workspace_size(const gqa_batch_config* config, uint64_t* bytes);

/* Errors. gqa_status_string never returns NULL. gqa_last_error is a thread-local sentence
 * naming the parameter and its value, set by the last failed call of this thread ("" if none);
 * valid until this thread's next libgqa call. */
GQA_API const char* gqa_status_string(gqa_status status);
GQA_API const char* gqa_last_error(void);

/* Version. */
GQA_API const char* gqa_version_string(void);
GQA_API uint32_t gqa_version_number(void);
GQA_API uint32_t gqa_abi_version(void);

/* Logging. The initial level comes from the environment variable GQA_LOG_LEVEL (DEBUG, INFO,
 * WARNING, ERROR, OFF in any case, or a number 0..100; surrounding whitespace is ignored),
 * read at the first libgqa call; any other value means WARNING and is reported once as a
 * WARNING message. Without a callback, messages go to stderr. At DEBUG
 * every call logs its backend, shapes and work split (and CUDA launch parameters). The
 * callback may be called from any thread that calls libgqa; NULL restores stderr. A call
 * already running on another thread when the callback is replaced may still deliver one
 * message to the previous callback, so keep its user_data alive until such calls return. */
typedef void (*gqa_log_callback)(int32_t level, const char* message, void* user_data);
GQA_API gqa_status gqa_set_log_level(int32_t level);
GQA_API int32_t gqa_get_log_level(void);
GQA_API gqa_status gqa_set_log_callback(gqa_log_callback callback, void* user_data);

/* CPU threads: from GQA_NUM_THREADS, else the cores this process may use. 0 restores that. */
GQA_API gqa_status gqa_set_num_threads(int32_t num_threads);
GQA_API int32_t gqa_get_num_threads(void);

/* CUDA: GQA_STATUS_OK if this build has CUDA and a usable device is present; otherwise
 * GQA_STATUS_DEVICE_UNAVAILABLE and gqa_last_error() says why. */
GQA_API gqa_status gqa_cuda_available(void);
/* Non-zero when this libgqa was built with its CUDA backend. */
GQA_API int32_t gqa_built_with_cuda(void);

/* GQA_CDEF_END */

#ifdef __cplusplus
} /* extern "C" */
#endif

/* Static initializers, e.g. `gqa_prefill_config c = GQA_PREFILL_CONFIG_INIT;` */
#define GQA_STRIDES_CONTIGUOUS { 0, 0, 0 }
#define GQA_PREFILL_CONFIG_INIT                                                          \
    { (uint32_t)sizeof(gqa_prefill_config), GQA_ABI_VERSION, GQA_DTYPE_F16, GQA_DEVICE_CPU, \
      0, 0, 0, 0, 0, 0, 0, 1, 0.0f, 0,                                                   \
      -1, -1, 0.0f, 0, NULL, NULL, GQA_STRIDES_CONTIGUOUS, GQA_STRIDES_CONTIGUOUS,        \
      GQA_STRIDES_CONTIGUOUS, GQA_STRIDES_CONTIGUOUS }
#define GQA_DECODE_CONFIG_INIT                                                          \
    { (uint32_t)sizeof(gqa_decode_config), GQA_ABI_VERSION, GQA_DTYPE_F16, GQA_DEVICE_CPU, \
      0, 0, 0, 0, 0, 0, 0.0f, 0, NULL, NULL, 0,                                          \
      -1, -1, 0.0f, 0, NULL, NULL, GQA_STRIDES_CONTIGUOUS, GQA_STRIDES_CONTIGUOUS,        \
      GQA_STRIDES_CONTIGUOUS, GQA_STRIDES_CONTIGUOUS }
#define GQA_MERGE_CONFIG_INIT                                                           \
    { (uint32_t)sizeof(gqa_merge_config), GQA_ABI_VERSION, GQA_DTYPE_F16, GQA_DEVICE_CPU, \
      0, 0, 0, 0, 0, 0, NULL }
#define GQA_BATCH_CONFIG_INIT                                                          \
    { (uint32_t)sizeof(gqa_batch_config), GQA_ABI_VERSION, GQA_DTYPE_F16, GQA_DEVICE_CPU,  \
      0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0.0f, 0, NULL, NULL, NULL, -1, -1, 0.0f, 0, NULL, NULL, \
      GQA_STRIDES_CONTIGUOUS, GQA_STRIDES_CONTIGUOUS, GQA_STRIDES_CONTIGUOUS,               \
      GQA_STRIDES_CONTIGUOUS, NULL, 0, NULL }

#endif /* GQA_H */
