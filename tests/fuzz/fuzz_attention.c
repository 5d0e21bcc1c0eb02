/* fuzz_attention.c: gqa_attention_prefill and gqa_attention_decode under the fuzzer.
 *
 * The bytes decode into a config (every field, mostly in a small valid range, sometimes an
 * extreme), which pointers are NULL, a seed for small random tensors, and then (absent in
 * inputs from before libgqa 0.2, which keep their meaning) the variant options: window,
 * softcap, sinks, an lse output and strided q/k/v/out. Every buffer sits between guard bands,
 * the gaps of strided tensors and the cache slots the call may not read hold NaN.
 *
 * Oracle, from the documented rules (gqa.h) re-derived here independently of src/validate.cpp:
 * a call the rules reject returns non-OK with a message and changes no byte of any buffer
 * (tensors, caches, guard bands, gaps, config, cache_lens, sinks, lse); a call they accept
 * returns OK, matches the float64 reference (output within the dtype's tolerance, so no NaN
 * from a poisoned slot or gap; lse within lse_tolerance()), writes k/v at exactly their cache
 * positions and leaves everything else as it was. */
#include "fuzz.h"

typedef struct attention_call {
    int decode, has_cache, null_mask, use_lens;
    gqa_prefill_config p;
    gqa_decode_config d;
    int32_t lens[4];
    uint64_t seed;
    fuzz_variants v;
} attention_call;

static void read_call(reader* r, int decode, attention_call* f) {
    memset(f, 0, sizeof *f);
    f->decode = decode;
    int32_t dtype = next_dtype(r);
    int32_t device = next_device(r);
    int32_t batch = next_field(r, 1, 4);
    int32_t seq_len = next_field(r, 1, 9);
    int32_t kv_heads = next_field(r, 1, 3);
    int32_t group = next_field(r, 1, 4);
    int32_t q_heads = (kv_heads > 0 && group > 0 && kv_heads <= 3 && group <= 4) ? kv_heads * group : group;
    int32_t head_dim = next_head_dim(r);
    int32_t max_seq_len = next_field(r, 1, 24);
    int32_t pos = next_field(r, 0, 24);
    uint8_t flags = next_u8(r);
    f->has_cache = f->decode || (flags & 1);
    f->use_lens = f->decode && (flags & 2) && batch >= 1 && batch <= 4; /* lens holds 4 values */
    int32_t causal = (flags & 4) ? 0 : 1;
    float scale = next_scale(r);
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
    f->seed = next_seed(r);
    next_variants(r, &f->v);

    /* The fields the two configs share, by name. */
#define SET_SHARED_FIELDS(cfg)                      \
    do {                                            \
        (cfg).struct_size += struct_delta;          \
        (cfg).abi_version = abi;                    \
        (cfg).dtype = dtype;                        \
        (cfg).device = device;                      \
        (cfg).batch_size = batch;                   \
        (cfg).num_q_heads = q_heads;                \
        (cfg).num_kv_heads = kv_heads;              \
        (cfg).head_dim = head_dim;                  \
        (cfg).max_seq_len = max_seq_len;            \
        (cfg).scale = scale;                        \
        (cfg).window_left = f->v.window_left;       \
        (cfg).window_right = f->v.window_right;     \
        (cfg).softcap = f->v.softcap;               \
        (cfg).reserved2 = f->v.reserved;            \
    } while (0)
    gqa_prefill_config p = GQA_PREFILL_CONFIG_INIT;
    SET_SHARED_FIELDS(p);
    p.seq_len = seq_len;
    p.start_pos = f->has_cache ? pos : ((flags & 8) ? pos : 0);
    p.causal = causal;
    p.reserved = reserved;
    f->p = p;
    gqa_decode_config d = GQA_DECODE_CONFIG_INIT;
    SET_SHARED_FIELDS(d);
    d.cache_len = pos;
    d.num_splits = num_splits;
    f->d = d;
#undef SET_SHARED_FIELDS
}

/* The growth rule: libgqa reads the variant fields only from a config of the 0.2 size; one of
 * ABI 1's size (56 / 72 bytes) is plain attention, whatever the bytes past it hold. */
static int sees_variants(const attention_call* f) {
    return f->decode ? f->d.struct_size == sizeof(gqa_decode_config) : f->p.struct_size == sizeof(gqa_prefill_config);
}

/* The documented rules (gqa.h, README): does the library have to accept this call? */
static int should_accept(const attention_call* f, const float* sinks, int64_t sink_count, const gqa_strides strides[4]) {
    if (f->null_mask) return 0; /* every pointer the harness may clear is required */
    uint32_t size = f->decode ? f->d.struct_size : f->p.struct_size;
    uint32_t abi = f->decode ? f->d.abi_version : f->p.abi_version;
    /* every published size: ABI 1's 72 / 56 bytes, and this header's */
    if (!sees_variants(f) && size != (f->decode ? 72u : 56u)) return 0;
    if (abi != GQA_ABI_VERSION) return 0;
    int32_t dtype = f->decode ? f->d.dtype : f->p.dtype;
    int32_t device = f->decode ? f->d.device : f->p.device;
    if (!valid_dtype(dtype)) return 0;
    if (device != GQA_DEVICE_CPU) return 0; /* CUDA: rejected without a device (never sent with one) */
    int32_t B = f->decode ? f->d.batch_size : f->p.batch_size;
    int32_t hq = f->decode ? f->d.num_q_heads : f->p.num_q_heads;
    int32_t hkv = f->decode ? f->d.num_kv_heads : f->p.num_kv_heads;
    int32_t D = f->decode ? f->d.head_dim : f->p.head_dim;
    int32_t T = f->decode ? f->d.max_seq_len : f->p.max_seq_len;
    float scale = f->decode ? f->d.scale : f->p.scale;
    if (B < 1 || hq < 1 || hkv < 1 || hq % hkv != 0 || D < 1 || D > 512) return 0;
    if (!isfinite(scale) || scale < 0.0f) return 0;
    if (sees_variants(f)) {
        if (!variants_valid(&f->v, sinks, sink_count)) return 0;
        for (int i = 0; i < 4; ++i) {
            if (!strides_valid(&strides[i], f->decode ? kDecodeStrides : kPrefillStrides)) return 0;
        }
    }
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

static void violation(const char* what, const attention_call* f, gqa_status s) {
    const fuzz_variants* v = &f->v;
    if (f->decode) {
        fuzz_violation(what, s,
                       "decode: size=%u abi=%u dtype=%d device=%d B=%d Hq=%d Hkv=%d D=%d T=%d cache_len=%d "
                       "lens=%s{%d,%d,%d,%d} scale=%g splits=%d null_mask=%d window=(%d,%d) softcap=%g sinks=%d/%d "
                       "lse=%d strides=%02x,%02x,%02x,%02x reserved2=%d",
                       f->d.struct_size, f->d.abi_version, f->d.dtype, f->d.device, f->d.batch_size, f->d.num_q_heads,
                       f->d.num_kv_heads, f->d.head_dim, f->d.max_seq_len, f->d.cache_len,
                       f->use_lens ? "" : "(unused)", f->lens[0], f->lens[1], f->lens[2], f->lens[3],
                       (double)f->d.scale, f->d.num_splits, f->null_mask, v->window_left, v->window_right,
                       (double)v->softcap, v->has_sinks, v->sinks_rare, v->want_lse, v->stride_bytes[0],
                       v->stride_bytes[1], v->stride_bytes[2], v->stride_bytes[3], v->reserved);
    }
    fuzz_violation(what, s,
                   "prefill: size=%u abi=%u dtype=%d device=%d B=%d S=%d Hq=%d Hkv=%d D=%d T=%d start=%d causal=%d "
                   "scale=%g reserved=%d caches=%d null_mask=%d window=(%d,%d) softcap=%g sinks=%d/%d lse=%d "
                   "strides=%02x,%02x,%02x,%02x reserved2=%d",
                   f->p.struct_size, f->p.abi_version, f->p.dtype, f->p.device, f->p.batch_size, f->p.seq_len,
                   f->p.num_q_heads, f->p.num_kv_heads, f->p.head_dim, f->p.max_seq_len, f->p.start_pos,
                   f->p.causal, (double)f->p.scale, f->p.reserved, f->has_cache, f->null_mask, v->window_left,
                   v->window_right, (double)v->softcap, v->has_sinks, v->sinks_rare, v->want_lse,
                   v->stride_bytes[0], v->stride_bytes[1], v->stride_bytes[2], v->stride_bytes[3], v->reserved);
}

static int32_t clamp_dim(int32_t x, int32_t hi) { return x < 1 ? 1 : x > hi ? hi : x; }

void fuzz_attention(reader* r, int decode, int cuda_usable) {
    attention_call f;
    read_call(r, decode, &f);
    const int variants_seen = sees_variants(&f);
    if (!variants_seen) memset(f.v.stride_bytes, 0, sizeof f.v.stride_bytes); /* libgqa reads them contiguous */
    int32_t device = f.decode ? f.d.device : f.p.device;
    if (cuda_usable && device == GQA_DEVICE_CUDA) return; /* host pointers are not device memory */
    int32_t dtype = f.decode ? f.d.dtype : f.p.dtype;
    int32_t B = f.decode ? f.d.batch_size : f.p.batch_size, hq = f.decode ? f.d.num_q_heads : f.p.num_q_heads;
    int32_t hkv = f.decode ? f.d.num_kv_heads : f.p.num_kv_heads, D = f.decode ? f.d.head_dim : f.p.head_dim;
    int32_t T = f.decode ? f.d.max_seq_len : f.p.max_seq_len, S = f.decode ? 1 : f.p.seq_len;

    /* The sinks first (the rules look at their values): one per head of any call that can run. */
    const int64_t sink_count = hq >= 1 && hq <= kMaxElems ? hq : 12;
    guarded_buf sinks = guarded_alloc(sizeof(float) * (size_t)sink_count);
    fill_sinks(&f.v, f.seed, (float*)sinks.data, sink_count);
    /* The strides asked for, over the call's shapes as given (any value will do when rejected). */
    const int kind = f.decode ? kDecodeStrides : kPrefillStrides;
    const int64_t q_count[3] = {B, S, hq}, kv_count[3] = {B, S, hkv};
    gqa_strides strides[4];
    int64_t layout[4][3];
    for (int i = 0; i < 4; ++i) {
        strides_from_byte(f.v.stride_bytes[i], kind, i == 1 || i == 2 ? kv_count : q_count, D, &strides[i], layout[i]);
    }
    int accept = should_accept(&f, (const float*)sinks.data, sink_count, strides);

    /* Shapes of the buffers: exact for an accepted call; clamped (any size will do) otherwise. */
    if (accept) {
        double elems = (double)B * S * hq * D + (f.has_cache ? 2.0 * B * T * hkv * D : 0.0);
        int32_t start = f.decode ? (f.use_lens ? 23 : f.d.cache_len) : (f.has_cache ? f.p.start_pos : 0);
        double work = (double)B * S * hq * D * ((double)start + S); /* reference cost */
        if (elems > kMaxElems || work > kMaxWork || (double)B * S * hq > kMaxRows) {
            guarded_free(&sinks);
            return;
        }
    } else {
        B = clamp_dim(B, 4);
        S = clamp_dim(S, 9);
        hq = clamp_dim(hq, 12);
        hkv = clamp_dim(hkv, 3);
        D = clamp_dim(D, 512);
        T = clamp_dim(T, 24);
        const int64_t q_clamped[3] = {B, S, hq}, kv_clamped[3] = {B, S, hkv};
        gqa_strides ignored;
        for (int i = 0; i < 4; ++i) {
            strides_from_byte(f.v.stride_bytes[i], kind, i == 1 || i == 2 ? kv_clamped : q_clamped, D, &ignored,
                              layout[i]);
        }
    }
    attn_case c;
    const int32_t buf_dtype = buffer_dtype(dtype);
    if (f.decode) {
        attn_case_decode(&c, buf_dtype, B, hq, hkv, D, T, f.d.cache_len, f.use_lens ? f.lens : NULL);
        c.scale = f.d.scale;
        c.num_splits = f.d.num_splits;
    } else {
        attn_case_prefill(&c, buf_dtype, B, S, hq, hkv, D, f.has_cache ? T : 0, f.p.start_pos, f.p.causal);
        c.scale = f.p.scale;
    }
    const attn_variants ref_variants = reference_variants(&f.v, (const float*)sinks.data);
    c.variants = variants_seen ? &ref_variants : NULL;
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
    const int64_t lse_count = (int64_t)B * hq * S;
    double *ref = NULL, *ref_lse = NULL;
    uint8_t *ek = NULL, *ev = NULL;
    if (accept) {
        ref = (double*)test_malloc((size_t)attn_case_out_elems(&c) * sizeof(double));
        ref_lse = (double*)test_malloc((size_t)lse_count * sizeof(double));
        ek = (uint8_t*)test_malloc(c.k_cache.bytes + 1);
        ev = (uint8_t*)test_malloc(c.v_cache.bytes + 1);
        attn_case_reference_lse(&c, ref, ref_lse, ek, ev);
    }

    /* The tensors as the call sees them: the case's own, or strided copies of them. */
    guarded_buf* contiguous[4] = {&c.q, &c.k, &c.v, &c.out};
    const int64_t counts[4][3] = {{B, S, hq}, {B, S, hkv}, {B, S, hkv}, {B, S, hq}};
    strided_tensor strided[4];
    void* tensor[4];
    strided_tensors(f.v.stride_bytes, buf_dtype, counts, D, layout, contiguous, strided, tensor);
    guarded_buf lse = guarded_alloc(sizeof(float) * (size_t)lse_count);
    fill_value(GQA_DTYPE_F32, lse.data, lse_count, NAN);

    guarded_buf cfg = guarded_alloc(512); /* zero tail: a too-large struct_size cannot overrun */
    guarded_buf lens = guarded_alloc(sizeof f.lens);
    memcpy(lens.data, f.lens, sizeof f.lens);
    const float* sinks_ptr = f.v.has_sinks ? (const float*)sinks.data : NULL;
    float* lse_ptr = f.v.want_lse ? (float*)lse.data : NULL;
    /* The pointer fields of either config, then the config into its guarded buffer. */
#define SET_POINTERS(config)                            \
    do {                                                \
        (config).sinks = sinks_ptr;                     \
        (config).lse = lse_ptr;                         \
        (config).q_strides = strides[0];                \
        (config).k_strides = strides[1];                \
        (config).v_strides = strides[2];                \
        (config).out_strides = strides[3];              \
        memcpy(cfg.data, &(config), sizeof(config));    \
    } while (0)
    if (f.decode) {
        f.d.cache_lens = f.use_lens ? (const int32_t*)lens.data : NULL;
        SET_POINTERS(f.d);
    } else {
        SET_POINTERS(f.p);
    }
#undef SET_POINTERS

    void* out = (f.null_mask & 1) ? NULL : tensor[3];
    void* q = (f.null_mask & 2) ? NULL : tensor[0];
    void* k = (f.null_mask & 4) ? NULL : tensor[1];
    void* v = (f.null_mask & 8) ? NULL : tensor[2];
    void* kc = (!f.has_cache || (f.null_mask & 16)) ? NULL : c.k_cache.data;
    void* vc = (!f.has_cache || (f.null_mask & 32)) ? NULL : c.v_cache.data;
    const void* config = (f.null_mask & 64) ? NULL : cfg.data;
    attn_case_snapshot(&c);
    guarded_buf* others[] = {&cfg, &lens, &sinks, &lse};
    for (size_t i = 0; i < sizeof others / sizeof others[0]; ++i) guarded_snapshot(others[i]);
    for (int i = 0; i < 4; ++i) {
        if (f.v.stride_bytes[i]) guarded_snapshot(&strided[i].buf);
    }

    fuzz_count(f.decode ? kOpDecode : kOpPrefill, accept);
    gqa_status s = f.decode ? gqa_attention_decode(out, q, k, v, kc, vc, config, NULL)
                            : gqa_attention_prefill(out, q, k, v, kc, vc, config, NULL);
    const char* wrong = status_wrong(accept, s);
    if (wrong) violation(wrong, &f, s);
    if (!accept) {
        if (attn_case_changed(&c, NULL)) violation("rejected call wrote a tensor, cache or guard band", &f, s);
        for (int i = 0; i < 4; ++i) {
            if (f.v.stride_bytes[i] && guarded_changed(&strided[i].buf, NULL)) {
                violation("rejected call wrote a strided tensor or its gaps", &f, s);
            }
        }
        if (guarded_changed(&lse, NULL)) violation("rejected call wrote lse", &f, s);
    } else {
        for (int i = 0; i < 3; ++i) {
            if (f.v.stride_bytes[i] && guarded_changed(&strided[i].buf, NULL)) {
                violation("accepted call wrote a strided input", &f, s);
            }
        }
        if (f.v.stride_bytes[3]) {
            if (strided_gaps_changed(&strided[3])) violation("accepted call wrote between the rows of strided out", &f, s);
            strided_gather(&strided[3], c.out.data);
        }
        long failed = attn_case_check(&c, "fuzz", ref, ek, ev);
        if (failed) violation("accepted call: wrong output, cache or guard band (see FAIL lines)", &f, s);
        if (lse_ptr && variants_seen) {
            if (!guards_intact(&lse) || lse_differs((const float*)lse.data, ref_lse, lse_count)) {
                violation("accepted call: lse differs from the float64 reference", &f, s);
            }
        } else if (guarded_changed(&lse, NULL)) {
            violation("accepted call wrote lse, which it was not given", &f, s);
        }
    }
    if (guarded_changed(&cfg, NULL) || guarded_changed(&lens, NULL)) violation("the call wrote its config", &f, s);
    if (guarded_changed(&sinks, NULL)) violation("the call wrote sinks", &f, s);
    free(ref);
    free(ref_lse);
    free(ek);
    free(ev);
    for (size_t i = 0; i < sizeof others / sizeof others[0]; ++i) guarded_free(others[i]);
    strided_tensors_free(f.v.stride_bytes, strided);
    attn_case_free(&c);
}
