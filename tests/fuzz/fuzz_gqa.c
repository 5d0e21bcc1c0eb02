/* fuzz_gqa.c: libFuzzer harness over both entry points.
 *
 * The fuzz bytes decode into a config (prefill or decode: every field, mostly in a small valid
 * range, sometimes an extreme such as 0, -1, INT32_MAX, INT32_MIN or 4 raw bytes), which
 * pointers are NULL, and a seed for small random tensors. Every tensor sits between guard bands;
 * the cache slots the call may not read are NaN.
 *
 * Oracle, from the documented rules (gqa.h) re-derived here independently of src/validate.cpp:
 *   - a config the rules reject must return a non-OK status, a non-empty gqa_last_error(), and
 *     leave every byte (tensors, caches, guard bands, config, cache_lens) untouched;
 *   - a config the rules accept must return OK, match a float64 reference within the dtype's
 *     tolerance (so no NaN from the poisoned slots), write k/v at exactly their cache
 *     positions, and leave the guard bands and inputs untouched.
 * Any violation aborts with a message: libFuzzer then saves the input as a reproducer.
 * Valid configs too large to run quickly (kMaxElems elements, kMaxWork reference MACs) are not called. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "attn_case.h"

enum { kMaxElems = 1 << 20, kMaxWork = 1 << 22 };

typedef struct reader { const uint8_t* p; size_t n; } reader;

static uint8_t next_u8(reader* r) {
    if (!r->n) return 0;
    --r->n;
    return *r->p++;
}

static int32_t next_i32(reader* r) {
    uint32_t x = 0;
    for (int i = 0; i < 4; ++i) x = (x << 8) | next_u8(r);
    return (int32_t)x;
}

/* A field: usually lo..hi, about 1 in 16 an extreme value. */
static int32_t next_field(reader* r, int32_t lo, int32_t hi) {
    static const int32_t extremes[] = {0, -1, 1, 2147483647, (-2147483647 - 1), 257, 65536, 1 << 20, 3, 16};
    uint8_t s = next_u8(r);
    if (s < 240) return lo + (int32_t)(s % (uint32_t)(hi - lo + 1));
    if (s < 250) return extremes[s - 240];
    return next_i32(r);
}

typedef struct fuzz_call {
    int decode, has_cache, null_mask, use_lens;
    gqa_prefill_config p;
    gqa_decode_config d;
    int32_t lens[4];
    uint64_t seed;
} fuzz_call;

static void decode_input(reader* r, fuzz_call* f) {
    memset(f, 0, sizeof *f);
    f->decode = next_u8(r) & 1;
    static const int32_t dtypes[] = {GQA_DTYPE_F16, GQA_DTYPE_BF16, GQA_DTYPE_F32};
    uint8_t dsel = next_u8(r);
    int32_t dtype = dsel < 250 ? dtypes[dsel % 3] : next_field(r, -1, 4);
    int32_t device = next_u8(r) < 250 ? GQA_DEVICE_CPU : next_field(r, -1, 3);
    int32_t batch = next_field(r, 1, 4);
    int32_t seq_len = next_field(r, 1, 9);
    int32_t kv_heads = next_field(r, 1, 3);
    int32_t group = next_field(r, 1, 4);
    int32_t q_heads = (kv_heads > 0 && group > 0 && kv_heads <= 3 && group <= 4) ? kv_heads * group : group;
    uint8_t dsize = next_u8(r);
    int32_t head_dim = dsize < 200 ? 1 + dsize % 40 : dsize < 240 ? (int32_t[]){64, 80, 96, 128, 256}[dsize % 5]
                                                                 : next_field(r, 1, 300);
    int32_t max_seq_len = next_field(r, 1, 24);
    int32_t pos = next_field(r, 0, 24);
    uint8_t flags = next_u8(r);
    f->has_cache = f->decode || (flags & 1);
    f->use_lens = f->decode && (flags & 2) && batch >= 1 && batch <= 4; /* lens holds 4 values */
    int32_t causal = (flags & 4) ? 0 : 1;
    uint8_t ssel = next_u8(r);
    float scale = ssel < 128 ? 0.0f : ssel < 250 ? (float)(ssel - 127) / 64.0f
                : (float[]){NAN, INFINITY, -1.0f, -INFINITY, 1e-38f, 4.0f}[ssel - 250];
    int32_t num_splits = next_field(r, 0, 8);
    /* rare: NULL pointers, a wrong header, reserved != 0 */
    uint8_t rare = next_u8(r);
    f->null_mask = (rare >= 248 && rare <= 254) ? 1 << (rare - 248) : 0; /* out q k v k_cache v_cache config */
    if (!f->has_cache) f->null_mask &= ~(16 | 32); /* no caches: they are NULL anyway */
    uint32_t struct_delta = rare == 247 ? (uint32_t)next_i32(r) : 0;
    uint32_t abi = rare == 246 ? (uint32_t)next_i32(r) : GQA_ABI_VERSION;
    int32_t reserved = rare == 245 ? next_i32(r) : 0;
    if (rare == 244) causal = next_i32(r);
    for (int b = 0; b < 4; ++b) f->lens[b] = next_field(r, 0, 23);
    f->seed = 0;
    for (int i = 0; i < 8; ++i) f->seed = (f->seed << 8) | next_u8(r);

    gqa_prefill_config p = GQA_PREFILL_CONFIG_INIT;
    p.struct_size += struct_delta;
    p.abi_version = abi;
    p.dtype = dtype;
    p.device = device;
    p.batch_size = batch;
    p.seq_len = seq_len;
    p.num_q_heads = q_heads;
    p.num_kv_heads = kv_heads;
    p.head_dim = head_dim;
    p.max_seq_len = max_seq_len;
    p.start_pos = f->has_cache ? pos : ((flags & 8) ? pos : 0);
    p.causal = causal;
    p.scale = scale;
    p.reserved = reserved;
    f->p = p;
    gqa_decode_config d = GQA_DECODE_CONFIG_INIT;
    d.struct_size += struct_delta;
    d.abi_version = abi;
    d.dtype = dtype;
    d.device = device;
    d.batch_size = batch;
    d.num_q_heads = q_heads;
    d.num_kv_heads = kv_heads;
    d.head_dim = head_dim;
    d.max_seq_len = max_seq_len;
    d.cache_len = pos;
    d.scale = scale;
    d.num_splits = num_splits;
    f->d = d;
}

/* The documented rules (gqa.h, README): does the library have to accept this call? */
static int should_accept(const fuzz_call* f, int cuda_usable) {
    if (f->null_mask) return 0; /* every pointer the harness may clear is required */
    uint32_t size = f->decode ? f->d.struct_size : f->p.struct_size;
    uint32_t abi = f->decode ? f->d.abi_version : f->p.abi_version;
    /* the growth rule: every published size (ABI 1's 72 / 56 bytes, and this header's) */
    if (size != (f->decode ? sizeof(gqa_decode_config) : sizeof(gqa_prefill_config)) && size != (f->decode ? 72u : 56u))
        return 0;
    if (abi != GQA_ABI_VERSION) return 0;
    int32_t dtype = f->decode ? f->d.dtype : f->p.dtype;
    int32_t device = f->decode ? f->d.device : f->p.device;
    if (dtype != GQA_DTYPE_F16 && dtype != GQA_DTYPE_BF16 && dtype != GQA_DTYPE_F32) return 0;
    if (device != GQA_DEVICE_CPU) return 0; /* CUDA: rejected without a device (never sent with one) */
    (void)cuda_usable;
    int32_t B = f->decode ? f->d.batch_size : f->p.batch_size;
    int32_t hq = f->decode ? f->d.num_q_heads : f->p.num_q_heads;
    int32_t hkv = f->decode ? f->d.num_kv_heads : f->p.num_kv_heads;
    int32_t D = f->decode ? f->d.head_dim : f->p.head_dim;
    int32_t T = f->decode ? f->d.max_seq_len : f->p.max_seq_len;
    float scale = f->decode ? f->d.scale : f->p.scale;
    if (B < 1 || hq < 1 || hkv < 1 || hq % hkv != 0 || D < 1 || D > 512) return 0;
    if (!isfinite(scale) || scale < 0.0f) return 0;
    if (f->decode) {
        if (T < 1 || f->d.num_splits < 0 || f->d.num_splits > 256) return 0;
        for (int b = 0; b < (f->use_lens ? B : 1); ++b) {
            int32_t len = f->use_lens ? f->lens[b] : f->d.cache_len;
            if (len < 0 || len >= T) return 0;
        }
        return 1;
    }
    if (f->p.seq_len < 1 || (f->p.causal != 0 && f->p.causal != 1) || f->p.reserved != 0) return 0;
    if (f->has_cache) return T >= 1 && f->p.start_pos >= 0 && (int64_t)f->p.start_pos + f->p.seq_len <= T;
    return f->p.start_pos == 0;
}

static void die(const char* what, const fuzz_call* f, gqa_status s) {
    fprintf(stderr, "fuzz_gqa ORACLE VIOLATION: %s\n  op=%s status=%d (%s) last_error=\"%s\"\n", what,
            f->decode ? "decode" : "prefill", (int)s, gqa_status_string(s), gqa_last_error());
    if (f->decode) {
        fprintf(stderr, "  decode: size=%u abi=%u dtype=%d device=%d B=%d Hq=%d Hkv=%d D=%d T=%d cache_len=%d "
                "lens=%s{%d,%d,%d,%d} scale=%g splits=%d null_mask=%d\n", f->d.struct_size, f->d.abi_version,
                f->d.dtype, f->d.device, f->d.batch_size, f->d.num_q_heads, f->d.num_kv_heads, f->d.head_dim,
                f->d.max_seq_len, f->d.cache_len, f->use_lens ? "" : "(unused)", f->lens[0], f->lens[1], f->lens[2],
                f->lens[3], (double)f->d.scale, f->d.num_splits, f->null_mask);
    } else {
        fprintf(stderr, "  prefill: size=%u abi=%u dtype=%d device=%d B=%d S=%d Hq=%d Hkv=%d D=%d T=%d start=%d "
                "causal=%d scale=%g reserved=%d caches=%d null_mask=%d\n", f->p.struct_size, f->p.abi_version,
                f->p.dtype, f->p.device, f->p.batch_size, f->p.seq_len, f->p.num_q_heads, f->p.num_kv_heads,
                f->p.head_dim, f->p.max_seq_len, f->p.start_pos, f->p.causal, (double)f->p.scale, f->p.reserved,
                f->has_cache, f->null_mask);
    }
    abort();
}

static int32_t clamp_dim(int32_t x, int32_t hi) { return x < 1 ? 1 : x > hi ? hi : x; }

int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
    static int cuda_usable = -1;
    if (cuda_usable < 0) {
        gqa_set_log_level(GQA_LOG_OFF);
        gqa_set_num_threads(2);
        cuda_usable = gqa_cuda_available() == GQA_STATUS_OK;
    }
    reader r = {data, size};
    fuzz_call f;
    decode_input(&r, &f);
    int32_t device = f.decode ? f.d.device : f.p.device;
    if (cuda_usable && device == GQA_DEVICE_CUDA) return 0; /* host pointers are not device memory */
    int accept = should_accept(&f, cuda_usable);

    /* Shapes of the buffers: exact for an accepted call; clamped (any size will do) otherwise. */
    attn_case c;
    int32_t dtype = f.decode ? f.d.dtype : f.p.dtype;
    int32_t buf_dtype = (dtype == GQA_DTYPE_F16 || dtype == GQA_DTYPE_BF16 || dtype == GQA_DTYPE_F32) ? dtype : GQA_DTYPE_F32;
    int32_t B = f.decode ? f.d.batch_size : f.p.batch_size, hq = f.decode ? f.d.num_q_heads : f.p.num_q_heads;
    int32_t hkv = f.decode ? f.d.num_kv_heads : f.p.num_kv_heads, D = f.decode ? f.d.head_dim : f.p.head_dim;
    int32_t T = f.decode ? f.d.max_seq_len : f.p.max_seq_len, S = f.decode ? 1 : f.p.seq_len;
    if (accept) {
        double elems = (double)B * S * hq * D + (f.has_cache ? 2.0 * B * T * hkv * D : 0.0);
        int32_t start = f.decode ? (f.use_lens ? 23 : f.d.cache_len) : (f.has_cache ? f.p.start_pos : 0);
        double work = (double)B * S * hq * D * ((double)start + S); /* reference cost */
        if (elems > kMaxElems || work > kMaxWork) return 0;
    } else {
        B = clamp_dim(B, 4);
        S = clamp_dim(S, 9);
        hq = clamp_dim(hq, 12);
        hkv = clamp_dim(hkv, 3);
        D = clamp_dim(D, 512);
        T = clamp_dim(T, 24);
    }
    if (f.decode) {
        attn_case_decode(&c, buf_dtype, B, hq, hkv, D, T, f.d.cache_len, f.use_lens ? f.lens : NULL);
        c.scale = f.d.scale;
        c.num_splits = f.d.num_splits;
    } else {
        attn_case_prefill(&c, buf_dtype, B, S, hq, hkv, D, f.has_cache ? T : 0, f.p.start_pos, f.p.causal);
        c.scale = f.p.scale;
    }
    attn_case_alloc(&c, f.seed);
    /* Cache slots beyond what the call may read hold NaN (accepted calls only: shapes exact). */
    if (accept && f.has_cache) {
        int64_t row = c.num_kv_heads * c.head_dim;
        for (int64_t b = 0; b < c.batch; ++b) {
            int64_t from = attn_case_start(&c, b) + c.seq_len;
            size_t es = dtype_size(c.dtype);
            fill_value(c.dtype, c.k_cache.data + (size_t)((b * c.max_seq_len + from) * row) * es,
                           (c.max_seq_len - from) * row, NAN);
            fill_value(c.dtype, c.v_cache.data + (size_t)((b * c.max_seq_len + from) * row) * es,
                           (c.max_seq_len - from) * row, NAN);
        }
    }
    double* ref = NULL;
    uint8_t *ek = NULL, *ev = NULL;
    if (accept) {
        ref = malloc((size_t)attn_case_out_elems(&c) * sizeof(double));
        ek = malloc(c.k_cache.bytes + 1);
        ev = malloc(c.v_cache.bytes + 1);
        attn_case_reference(&c, ref, ek, ev);
    }

    guarded_buf cfg, lens;
    cfg = guarded_alloc(512); /* zero tail: a too-large struct_size cannot overrun */
    if (f.decode) {
        f.d.cache_lens = NULL;
        memcpy(cfg.data, &f.d, sizeof f.d);
    } else {
        memcpy(cfg.data, &f.p, sizeof f.p);
    }
    lens = guarded_alloc(sizeof f.lens);
    memcpy(lens.data, f.lens, sizeof f.lens);
    if (f.decode && f.use_lens) ((gqa_decode_config*)cfg.data)->cache_lens = (const int32_t*)lens.data;

    void* out = (f.null_mask & 1) ? NULL : c.out.data;
    void* q = (f.null_mask & 2) ? NULL : c.q.data;
    void* k = (f.null_mask & 4) ? NULL : c.k.data;
    void* v = (f.null_mask & 8) ? NULL : c.v.data;
    void* kc = (!f.has_cache || (f.null_mask & 16)) ? NULL : c.k_cache.data;
    void* vc = (!f.has_cache || (f.null_mask & 32)) ? NULL : c.v_cache.data;
    const void* config = (f.null_mask & 64) ? NULL : cfg.data;
    attn_case_snapshot(&c);
    guarded_snapshot(&cfg);
    guarded_snapshot(&lens);

    gqa_status s = f.decode ? gqa_attention_decode(out, q, k, v, kc, vc, config, NULL)
                            : gqa_attention_prefill(out, q, k, v, kc, vc, config, NULL);
    if (!accept) {
        if (s == GQA_STATUS_OK) die("accepted a call the documented rules reject", &f, s);
        const char* msg = gqa_last_error();
        if (!msg || !msg[0]) die("rejected call left gqa_last_error() empty", &f, s);
        if (attn_case_changed(&c, NULL)) die("rejected call wrote a tensor, cache or guard band", &f, s);
        if (guarded_changed(&cfg, NULL) || guarded_changed(&lens, NULL)) die("rejected call wrote its config", &f, s);
    } else {
        if (s != GQA_STATUS_OK) die("rejected a call the documented rules accept", &f, s);
        long failed = attn_case_check(&c, "fuzz", ref, ek, ev);
        if (failed) die("accepted call: wrong output, cache or guard band (see FAIL lines)", &f, s);
        if (guarded_changed(&cfg, NULL) || guarded_changed(&lens, NULL)) die("accepted call wrote its config", &f, s);
    }
    free(ref);
    free(ek);
    free(ev);
    guarded_free(&cfg);
    guarded_free(&lens);
    attn_case_free(&c);
    return 0;
}
