/* fuzz_batch.c: gqa_attention_batch under the fuzzer, its metadata in host memory (CPU).
 *
 * The bytes decode into a batch of up to 4 sequences (q_len 0..6 new tokens over kv_len 0..12
 * cached), a paged pool (page_size 1..8, pages shuffled, sometimes a read-only prefix page
 * shared by two sequences, untouched page-table entries -1 or garbage), the config fields, the
 * variant options and now and then one spoilt field, value or pointer. The oracle re-derives
 * gqa.h's rules from the values the call gets: a call they reject returns non-OK with a message
 * and changes no byte (tensors, pool, metadata, config, sinks, lse, guard bands); a call they
 * accept returns OK, matches the float64 reference per sequence (keys read through the page
 * table; pool slots the call may not read hold NaN) and writes the new K/V at exactly their
 * (page, slot), the rest of the pool untouched. */
#include "fuzz.h"

enum { kMaxSeqs = 4 };

typedef struct batch_call {
    gqa_batch_config c;
    int32_t indptr[kMaxSeqs + 1], lens[kMaxSeqs];
    int32_t* table;    /* [table_rows, table_cols] as made; a spoilt config may claim fewer */
    int32_t table_rows, table_cols;
    int null_mask;     /* out q k v k_cache v_cache q_indptr kv_lens page_table config */
    uint64_t seed;
    fuzz_variants v;
} batch_call;

/* A shuffled order of the pool's pages, from one byte. */
static void shuffle(int32_t* ids, int32_t n, uint8_t seed) {
    test_rng rng;
    rng_seed(&rng, 977u + seed);
    for (int32_t i = 0; i < n; ++i) ids[i] = i;
    for (int32_t i = n - 1; i > 0; --i) {
        const int32_t j = (int32_t)(rng_next(&rng) % (uint64_t)(i + 1)), t = ids[i];
        ids[i] = ids[j];
        ids[j] = t;
    }
}

static void read_call(reader* r, batch_call* f) {
    memset(f, 0, sizeof *f);
    gqa_batch_config c = GQA_BATCH_CONFIG_INIT;
    c.dtype = next_dtype(r);
    c.device = next_device(r);
    const int32_t batch = 1 + next_u8(r) % kMaxSeqs;
    const int32_t kv_heads = 1 + next_u8(r) % 3, group = 1 + next_u8(r) % 4;
    c.num_kv_heads = kv_heads;
    c.num_q_heads = kv_heads * group;
    c.head_dim = next_head_dim(r);
    const int32_t page = 1 + next_u8(r) % 8;
    const uint8_t flags = next_u8(r);
    c.causal = (flags & 1) ? 0 : 1;
    c.scale = next_scale(r);
    c.num_splits = next_field(r, 0, 8);
    const uint8_t rare = next_u8(r);
    int32_t q_lens[kMaxSeqs], most_keys = 1, longest = 0;
    for (int b = 0; b < kMaxSeqs; ++b) q_lens[b] = next_u8(r) % 7;
    for (int b = 0; b < kMaxSeqs; ++b) f->lens[b] = next_u8(r) % 13;
    const int32_t extra_pages = next_u8(r) % 4, slack_cols = next_u8(r) % 3;
    const uint8_t table_seed = next_u8(r);
    f->seed = next_seed(r);
    next_variants(r, &f->v);

    for (int b = 0; b < batch; ++b) {
        f->indptr[b + 1] = f->indptr[b] + q_lens[b];
        if (f->lens[b] + q_lens[b] > most_keys) most_keys = f->lens[b] + q_lens[b];
        if (q_lens[b] > longest) longest = q_lens[b];
    }
    const int32_t cols = (most_keys + page - 1) / page + slack_cols;
    c.batch_size = batch;
    c.total_q = f->indptr[batch];
    const int32_t max_q_modes[4] = {0, longest, longest + 1, longest - 1}; /* the last: too small when > 0 */
    c.max_q_len = max_q_modes[(flags >> 1) & 3];
    c.page_size = page;
    c.num_pages = batch * cols + extra_pages;
    c.max_pages_per_seq = cols;
    f->table_rows = batch;
    f->table_cols = cols;
    f->table = (int32_t*)test_malloc(sizeof(int32_t) * (size_t)(batch * cols));
    int32_t* ids = (int32_t*)test_malloc(sizeof(int32_t) * (size_t)c.num_pages);
    shuffle(ids, c.num_pages, table_seed);
    for (int b = 0; b < batch; ++b) {
        const int32_t used = (f->lens[b] + q_lens[b] + page - 1) / page;
        for (int col = 0; col < cols; ++col) {
            /* Past the sequence's last position an id is never read: -1, or anything. */
            f->table[b * cols + col] = col < used ? ids[b * cols + col] : (flags & 16) ? 1000 * col - 7 : -1;
        }
        /* A common prefix: a page both sequences have filled, read by both, written by neither. */
        if ((flags & 8) && b > 0 && f->lens[0] >= page && f->lens[b] >= page) f->table[b * cols] = f->table[0];
    }
    free(ids);
    c.window_left = f->v.window_left;
    c.window_right = f->v.window_right;
    c.softcap = f->v.softcap;
    c.reserved = f->v.reserved;

    /* Now and then one spoilt field, metadata value or pointer. */
    if (rare == 230) c.struct_size += (uint32_t)next_i32(r);
    if (rare == 231) c.abi_version = (uint32_t)next_i32(r);
    if (rare == 232) c.causal = next_i32(r);
    if (rare == 233) c.batch_size = -(int32_t)(next_u8(r) % 2); /* 0 or -1: the arrays hold batch values */
    if (rare == 234) c.max_q_len = next_field(r, -1, 8);
    if (rare == 235) f->indptr[next_u8(r) % (batch + 1)] = next_field(r, -1, 30);
    if (rare == 236) f->lens[next_u8(r) % batch] = next_field(r, -2, 30);
    if (rare == 237) f->table[next_u8(r) % (batch * cols)] = next_field(r, -2, c.num_pages + 1);
    if (rare == 238) c.total_q = next_field(r, -1, 30);
    if (rare == 239) c.num_pages = next_field(r, 0, c.num_pages);
    if (rare == 240) c.page_size = next_field(r, -1, 9);
    if (rare == 241) c.max_pages_per_seq = (int32_t)(next_u8(r) % (uint32_t)(cols + 1)); /* within the array */
    if (rare == 242 && batch >= 2) f->table[cols] = f->table[f->lens[0] / page]; /* seq 1 on seq 0's written page */
    if (rare >= 246) f->null_mask = 1 << (rare - 246);
    f->c = c;
}

static int64_t q_len_of(const batch_call* f, int b) { return (int64_t)f->indptr[b + 1] - f->indptr[b]; }
static int32_t page_of(const batch_call* f, int b, int64_t col) { return f->table[b * f->c.max_pages_per_seq + col]; }

/* gqa.h's rules for the batched op, on the values the call gets. */
static int should_accept(const batch_call* f, const float* sinks, const gqa_strides strides[4]) {
    const gqa_batch_config* c = &f->c;
    if (f->null_mask) return 0;
    if (c->struct_size != sizeof(gqa_batch_config) || c->abi_version != GQA_ABI_VERSION) return 0;
    if (!valid_dtype(c->dtype) || c->device != GQA_DEVICE_CPU) return 0; /* CUDA: host memory (or no CUDA) */
    if (c->batch_size < 1 || c->total_q < 0 || c->max_q_len < 0) return 0;
    if (c->num_q_heads < 1 || c->num_kv_heads < 1 || c->num_q_heads % c->num_kv_heads || c->head_dim < 1 ||
        c->head_dim > 512)
        return 0;
    if (c->page_size < 1 || c->num_pages < 1 || c->max_pages_per_seq < 1) return 0;
    if ((c->causal != 0 && c->causal != 1) || !isfinite(c->scale) || c->scale < 0.0f) return 0;
    if (c->num_splits < 0 || c->num_splits > 256) return 0;
    if (!variants_valid(&f->v, sinks, c->num_q_heads)) return 0;
    for (int i = 0; i < 4; ++i) {
        if (!strides_valid(&strides[i], kBatchStrides)) return 0;
    }
    const int B = c->batch_size;
    const int64_t max_q = c->max_q_len ? c->max_q_len : c->total_q;
    if (f->indptr[0] != 0 || f->indptr[B] != c->total_q) return 0;
    for (int b = 0; b < B; ++b) {
        if (q_len_of(f, b) < 0 || q_len_of(f, b) > max_q) return 0;
    }
    const int64_t capacity = (int64_t)c->max_pages_per_seq * c->page_size;
    for (int b = 0; b < B; ++b) {
        if (f->lens[b] < 0) return 0;
        if (q_len_of(f, b) == 0) continue; /* untouched: nothing of it is read */
        const int64_t keys = (int64_t)f->lens[b] + q_len_of(f, b);
        if (keys > capacity) return 0;
        for (int64_t col = 0; col * c->page_size < keys; ++col) {
            if (page_of(f, b, col) < 0 || page_of(f, b, col) >= c->num_pages) return 0;
        }
    }
    /* A page a sequence writes is used by no other (sequence, column) of the call. */
    for (int b = 0; b < B; ++b) {
        if (q_len_of(f, b) == 0) continue;
        const int64_t keys = (int64_t)f->lens[b] + q_len_of(f, b);
        for (int64_t col = f->lens[b] / c->page_size; col * c->page_size < keys; ++col) {
            for (int b2 = 0; b2 < B; ++b2) {
                if (q_len_of(f, b2) == 0) continue;
                const int64_t keys2 = (int64_t)f->lens[b2] + q_len_of(f, b2);
                for (int64_t col2 = 0; col2 * c->page_size < keys2; ++col2) {
                    if ((b2 != b || col2 != col) && page_of(f, b2, col2) == page_of(f, b, col)) return 0;
                }
            }
        }
    }
    return 1;
}

static void violation(const char* what, const batch_call* f, gqa_status s) {
    const gqa_batch_config* c = &f->c;
    const fuzz_variants* v = &f->v;
    char table[512] = "";
    size_t used = 0;
    for (int i = 0; i < f->table_rows * f->table_cols && used + 16 < sizeof table; ++i) {
        used += (size_t)snprintf(table + used, sizeof table - used, "%s%d", i ? "," : "", f->table[i]);
    }
    fuzz_violation(what, s,
                   "batch: size=%u abi=%u dtype=%d device=%d B=%d total_q=%d max_q_len=%d Hq=%d Hkv=%d D=%d page=%d "
                   "pages=%d cols=%d causal=%d scale=%g splits=%d indptr={%d,%d,%d,%d,%d} kv_lens={%d,%d,%d,%d} "
                   "table={%s} null_mask=%d window=(%d,%d) softcap=%g sinks=%d/%d lse=%d strides=%02x,%02x,%02x,%02x "
                   "reserved=%d",
                   c->struct_size, c->abi_version, c->dtype, c->device, c->batch_size, c->total_q, c->max_q_len,
                   c->num_q_heads, c->num_kv_heads, c->head_dim, c->page_size, c->num_pages, c->max_pages_per_seq,
                   c->causal, (double)c->scale, c->num_splits, f->indptr[0], f->indptr[1], f->indptr[2], f->indptr[3],
                   f->indptr[4], f->lens[0], f->lens[1], f->lens[2], f->lens[3], table, f->null_mask, v->window_left,
                   v->window_right, (double)v->softcap, v->has_sinks, v->sinks_rare, v->want_lse, v->stride_bytes[0],
                   v->stride_bytes[1], v->stride_bytes[2], v->stride_bytes[3], v->reserved);
}

static int32_t clamp(int32_t x, int32_t lo, int32_t hi) { return x < lo ? lo : x > hi ? hi : x; }

/* What an accepted call must produce: the pool with the new K/V written (exp_k, exp_v) and
 * every row's output and lse, each sequence against the keys its page table maps. */
static void reference(const batch_call* f, const void* q, const void* k, const void* v, const float* sinks,
                      uint8_t* exp_k, uint8_t* exp_v, double* ref, double* ref_lse) {
    const gqa_batch_config* c = &f->c;
    const int64_t D = c->head_dim, hq = c->num_q_heads, hkv = c->num_kv_heads, G = hq / hkv;
    const size_t es = dtype_size(c->dtype), row = (size_t)(hkv * D) * es;
    const double scale = c->scale != 0.0f ? c->scale : 1.0 / sqrt((double)D);
    const attn_variants variants = reference_variants(&f->v, sinks);
    for (int b = 0; b < c->batch_size; ++b) {
        const int64_t n = q_len_of(f, b), keys = f->lens[b] + n;
        if (n == 0) continue;
        for (int64_t j = 0; j < n; ++j) { /* the new tokens into their slots */
            const int64_t pos = f->lens[b] + j;
            const size_t slot = (size_t)((int64_t)page_of(f, b, pos / c->page_size) * c->page_size + pos % c->page_size);
            memcpy(exp_k + slot * row, (const uint8_t*)k + (size_t)(f->indptr[b] + j) * row, row);
            memcpy(exp_v + slot * row, (const uint8_t*)v + (size_t)(f->indptr[b] + j) * row, row);
        }
        uint8_t* dense_k = (uint8_t*)test_malloc((size_t)keys * row);
        uint8_t* dense_v = (uint8_t*)test_malloc((size_t)keys * row);
        for (int64_t pos = 0; pos < keys; ++pos) { /* the sequence's keys, dense */
            const size_t slot = (size_t)((int64_t)page_of(f, b, pos / c->page_size) * c->page_size + pos % c->page_size);
            memcpy(dense_k + (size_t)pos * row, exp_k + slot * row, row);
            memcpy(dense_v + (size_t)pos * row, exp_v + slot * row, row);
        }
        for (int64_t j = 0; j < n; ++j) {
            const int64_t pos = f->lens[b] + j, out_row = f->indptr[b] + j;
            int64_t begin, end;
            reference_key_range(&variants, c->causal, pos, keys, &begin, &end);
            for (int64_t h = 0; h < hq; ++h) {
                const strided_view qv = {q, c->dtype, (size_t)((out_row * hq + h) * D), 0};
                const strided_view kv = {dense_k, c->dtype, (size_t)((h / G) * D), (size_t)(hkv * D)};
                const strided_view vv = {dense_v, c->dtype, (size_t)((h / G) * D), (size_t)(hkv * D)};
                const double sink = variants.sinks ? (double)variants.sinks[h] : -INFINITY;
                reference_row_variants(&qv, &kv, &vv, begin, end, D, scale, variants.softcap, sink,
                                       ref + (out_row * hq + h) * D, &ref_lse[h * c->total_q + out_row]);
            }
        }
        free(dense_k);
        free(dense_v);
    }
}

void fuzz_batch(reader* r, int cuda_usable) {
    batch_call f;
    read_call(r, &f);
    gqa_batch_config* c = &f.c;
    if (cuda_usable && c->device == GQA_DEVICE_CUDA) { /* host pointers are not device memory */
        free(f.table);
        return;
    }
    guarded_buf sinks = guarded_alloc(sizeof(float) * (size_t)c->num_q_heads); /* 1..12 heads */
    fill_sinks(&f.v, f.seed, (float*)sinks.data, c->num_q_heads);
    int32_t total_q = c->total_q, hq = c->num_q_heads, hkv = c->num_kv_heads, D = c->head_dim;
    int32_t page = c->page_size, pages = c->num_pages;
    const int64_t q_count[3] = {1, total_q, hq}, kv_count[3] = {1, total_q, hkv};
    gqa_strides strides[4];
    int64_t layout[4][3];
    for (int i = 0; i < 4; ++i) {
        strides_from_byte(f.v.stride_bytes[i], kBatchStrides, i == 1 || i == 2 ? kv_count : q_count, D, &strides[i],
                          layout[i]);
    }
    const int accept = should_accept(&f, (const float*)sinks.data, strides);
    if (accept) {
        double work = 0.0;
        for (int b = 0; b < c->batch_size; ++b) work += (double)q_len_of(&f, b) * (f.lens[b] + q_len_of(&f, b)) * hq * D;
        const double elems = (double)total_q * hq * D + 2.0 * pages * page * hkv * D;
        if (elems > kMaxElems || work > kMaxWork) {
            guarded_free(&sinks);
            free(f.table);
            return;
        }
    } else { /* any size will do: nothing may be read */
        total_q = clamp(total_q, 0, 30);
        D = clamp(D, 1, 512);
        page = clamp(page, 1, 9);
        pages = clamp(pages, 1, 40);
        const int64_t q_clamped[3] = {1, total_q, hq}, kv_clamped[3] = {1, total_q, hkv};
        gqa_strides ignored;
        for (int i = 0; i < 4; ++i) {
            strides_from_byte(f.v.stride_bytes[i], kBatchStrides, i == 1 || i == 2 ? kv_clamped : q_clamped, D,
                              &ignored, layout[i]);
        }
    }
    const int32_t dtype = buffer_dtype(c->dtype);
    const size_t es = dtype_size(dtype);
    const int64_t q_elems = (int64_t)total_q * hq * D, kv_elems = (int64_t)total_q * hkv * D;
    const int64_t pool_elems = (int64_t)pages * page * hkv * D;
    guarded_buf q = guarded_alloc((size_t)q_elems * es), k = guarded_alloc((size_t)kv_elems * es);
    guarded_buf v = guarded_alloc((size_t)kv_elems * es), out = guarded_alloc((size_t)q_elems * es);
    guarded_buf kc = guarded_alloc((size_t)pool_elems * es), vc = guarded_alloc((size_t)pool_elems * es);
    test_rng rng;
    rng_seed(&rng, f.seed);
    fill_uniform(&rng, dtype, q.data, q_elems, -1.0, 1.0);
    fill_uniform(&rng, dtype, k.data, kv_elems, -1.0, 1.0);
    fill_uniform(&rng, dtype, v.data, kv_elems, -1.0, 1.0);
    fill_value(dtype, out.data, q_elems, NAN);
    /* The pool: NaN but in the cached positions of the sequences the call reads. */
    fill_value(dtype, kc.data, pool_elems, NAN);
    fill_value(dtype, vc.data, pool_elems, NAN);
    if (accept) {
        const int64_t row = (int64_t)hkv * D;
        for (int b = 0; b < c->batch_size; ++b) {
            if (q_len_of(&f, b) == 0) continue;
            for (int64_t pos = 0; pos < f.lens[b]; ++pos) {
                const int64_t slot = (int64_t)page_of(&f, b, pos / page) * page + pos % page;
                fill_uniform(&rng, dtype, kc.data + (size_t)(slot * row) * es, row, -1.0, 1.0);
                fill_uniform(&rng, dtype, vc.data + (size_t)(slot * row) * es, row, -1.0, 1.0);
            }
        }
    }
    const int64_t lse_count = (int64_t)hq * total_q;
    double *ref = NULL, *ref_lse = NULL;
    uint8_t *exp_k = NULL, *exp_v = NULL;
    if (accept) {
        ref = (double*)test_malloc(sizeof(double) * (size_t)q_elems);
        ref_lse = (double*)test_malloc(sizeof(double) * (size_t)lse_count);
        exp_k = (uint8_t*)test_malloc(kc.bytes);
        exp_v = (uint8_t*)test_malloc(vc.bytes);
        memcpy(exp_k, kc.data, kc.bytes);
        memcpy(exp_v, vc.data, vc.bytes);
        reference(&f, q.data, k.data, v.data, (const float*)sinks.data, exp_k, exp_v, ref, ref_lse);
    }

    guarded_buf* contiguous[4] = {&q, &k, &v, &out};
    const int64_t counts[4][3] = {{1, total_q, hq}, {1, total_q, hkv}, {1, total_q, hkv}, {1, total_q, hq}};
    strided_tensor strided[4];
    void* tensor[4];
    strided_tensors(f.v.stride_bytes, dtype, counts, D, layout, contiguous, strided, tensor);
    guarded_buf lse = guarded_alloc(sizeof(float) * (size_t)lse_count);
    fill_value(GQA_DTYPE_F32, lse.data, lse_count, NAN);
    guarded_buf indptr = guarded_alloc(sizeof f.indptr), lens = guarded_alloc(sizeof f.lens);
    guarded_buf table = guarded_alloc(sizeof(int32_t) * (size_t)(f.table_rows * f.table_cols));
    memcpy(indptr.data, f.indptr, sizeof f.indptr);
    memcpy(lens.data, f.lens, sizeof f.lens);
    memcpy(table.data, f.table, table.bytes);
    c->q_indptr = (f.null_mask & 64) ? NULL : (const int32_t*)indptr.data;
    c->kv_lens = (f.null_mask & 128) ? NULL : (const int32_t*)lens.data;
    c->page_table = (f.null_mask & 256) ? NULL : (const int32_t*)table.data;
    c->sinks = f.v.has_sinks ? (const float*)sinks.data : NULL;
    c->lse = f.v.want_lse ? (float*)lse.data : NULL;
    c->q_strides = strides[0];
    c->k_strides = strides[1];
    c->v_strides = strides[2];
    c->out_strides = strides[3];
    guarded_buf cfg = guarded_alloc(512); /* zero tail: a too-large struct_size cannot overrun */
    memcpy(cfg.data, c, sizeof *c);

    guarded_buf* all[] = {&q, &k, &v, &out, &kc, &vc, &lse, &indptr, &lens, &table, &cfg, &sinks};
    const char* names[] = {"q", "k", "v", "out", "k_cache", "v_cache", "lse", "q_indptr", "kv_lens", "page_table",
                           "config", "sinks"};
    const size_t n_all = sizeof all / sizeof all[0];
    for (size_t i = 0; i < n_all; ++i) guarded_snapshot(all[i]);
    for (int i = 0; i < 4; ++i) {
        if (f.v.stride_bytes[i]) guarded_snapshot(&strided[i].buf);
    }
    void* pointers[6] = {tensor[3], tensor[0], tensor[1], tensor[2], kc.data, vc.data}; /* out q k v k_cache v_cache */
    for (int i = 0; i < 6; ++i) {
        if (f.null_mask & (1 << i)) pointers[i] = NULL;
    }
    fuzz_count(kOpBatch, accept);
    const gqa_status s = gqa_attention_batch(pointers[0], pointers[1], pointers[2], pointers[3], pointers[4],
                                             pointers[5], (f.null_mask & 512) ? NULL : (const gqa_batch_config*)cfg.data,
                                             NULL);
    char what[160];
    const char* wrong = status_wrong(accept, s);
    if (wrong) violation(wrong, &f, s);
    const int written[] = {0, 0, 0, 1, 1, 1, 1, 0, 0, 0, 0, 0}; /* out, the pool, lse */
    if (buffer_written_wrongly(all, names, written, n_all, accept, what, sizeof what)) violation(what, &f, s);
    for (int i = 0; i < 4; ++i) {
        if (f.v.stride_bytes[i] && (!accept || i < 3) && guarded_changed(&strided[i].buf, NULL)) {
            violation(accept ? "accepted call wrote a strided input" : "rejected call wrote a strided tensor or its gaps",
                      &f, s);
        }
    }
    if (accept) {
        if (f.v.stride_bytes[3]) {
            if (strided_gaps_changed(&strided[3])) violation("accepted call wrote between the rows of strided out", &f, s);
            strided_gather(&strided[3], out.data);
        }
        if (out_differs(dtype, out.data, ref, q_elems)) violation("accepted call: out differs from the float64 reference", &f, s);
        if (memcmp(kc.data, exp_k, kc.bytes) || memcmp(vc.data, exp_v, vc.bytes)) {
            violation("accepted call: the pool differs from the expected one (new K/V at their slots, the rest as it was)",
                      &f, s);
        }
        if (f.v.want_lse ? lse_differs((const float*)lse.data, ref_lse, lse_count) : guarded_changed(&lse, NULL)) {
            violation(f.v.want_lse ? "accepted call: lse differs from the float64 reference"
                                   : "accepted call wrote lse, which it was not given", &f, s);
        }
    }
    free(ref);
    free(ref_lse);
    free(exp_k);
    free(exp_v);
    for (size_t i = 0; i < n_all; ++i) guarded_free(all[i]);
    strided_tensors_free(f.v.stride_bytes, strided);
    free(f.table);
}
