/* fuzz_merge.c: gqa_merge_states under the fuzzer.
 *
 * The bytes decode into a merge of 1..4 partial states (batch 1..3, seq_len 1..4, heads 1..4,
 * any head_dim), their lses (finite, or -inf for a partial that saw nothing: its state holds
 * NaN and must not be read), optional sinks and lse_out, and now and then a spoilt field, a NULL
 * pointer or an output that overlaps an input. Oracle, from gqa.h: a rejected call returns
 * non-OK with a message and changes no byte; an accepted one returns OK with
 * out = sum_n e^(lse_n - L) state_n, L = log(sum_n e^lse_n (+ e^sink)), within the dtype's
 * tolerance (0 for a row that has nothing), lse_out = L (-inf for nothing), and writes nothing
 * else. */
#include "fuzz.h"

enum { kMaxStates = 4 };

typedef struct merge_call {
    gqa_merge_config c;
    uint8_t lse_modes[kMaxStates]; /* per state: finite lses, all -inf, or a mix */
    int null_mask;                 /* out states lses config */
    int overlap;                   /* 1: lse_out over lses; 2: out over states */
    int want_lse_out;
    uint64_t seed;
    fuzz_variants v;               /* only the sinks are used */
} merge_call;

static void read_call(reader* r, merge_call* f) {
    memset(f, 0, sizeof *f);
    gqa_merge_config c = GQA_MERGE_CONFIG_INIT;
    c.dtype = next_dtype(r);
    c.device = next_device(r);
    c.num_states = 1 + next_u8(r) % kMaxStates;
    c.batch_size = 1 + next_u8(r) % 3;
    c.seq_len = 1 + next_u8(r) % 4;
    c.num_heads = 1 + next_u8(r) % 4;
    c.head_dim = next_head_dim(r);
    const uint8_t flags = next_u8(r);
    f->want_lse_out = flags & 1;
    f->v.has_sinks = (flags & 2) ? 1 + (flags >> 2) % 3 : 0; /* finite; some -inf; one NaN or +inf */
    f->v.sinks_rare = f->v.has_sinks == 3 ? 240 + (flags >> 4) : 0;
    const uint8_t rare = next_u8(r);
    for (int n = 0; n < kMaxStates; ++n) f->lse_modes[n] = next_u8(r);
    f->seed = next_seed(r);
    if (rare == 240) c.struct_size += (uint32_t)next_i32(r);
    if (rare == 241) c.abi_version = (uint32_t)next_i32(r);
    if (rare == 242) c.reserved = next_i32(r);
    if (rare == 243) c.num_states = -(int32_t)(next_u8(r) % 2); /* 0 or -1 */
    if (rare == 244) c.head_dim = -(int32_t)(next_u8(r) % 2);
    if (rare == 245) f->overlap = 1;
    if (rare == 246) f->overlap = 2;
    if (rare >= 250 && rare <= 253) f->null_mask = 1 << (rare - 250);
    f->c = c;
}

static int should_accept(const merge_call* f, const float* sinks) {
    const gqa_merge_config* c = &f->c;
    if (f->null_mask || f->overlap) return 0;
    if (c->struct_size != sizeof(gqa_merge_config) || c->abi_version != GQA_ABI_VERSION) return 0;
    if (!valid_dtype(c->dtype) || c->device != GQA_DEVICE_CPU) return 0; /* CUDA: not supported yet */
    if (c->num_states < 1 || c->batch_size < 1 || c->seq_len < 1 || c->num_heads < 1 || c->head_dim < 1) return 0;
    if (c->reserved != 0) return 0;
    return variants_valid(&f->v, sinks, c->num_heads);
}

static void violation(const char* what, const merge_call* f, gqa_status s) {
    const gqa_merge_config* c = &f->c;
    fuzz_violation(what, s,
                   "merge: size=%u abi=%u dtype=%d device=%d states=%d B=%d S=%d H=%d D=%d reserved=%d "
                   "lse_modes={%d,%d,%d,%d} sinks=%d/%d lse_out=%d null_mask=%d overlap=%d",
                   c->struct_size, c->abi_version, c->dtype, c->device, c->num_states, c->batch_size, c->seq_len,
                   c->num_heads, c->head_dim, c->reserved, f->lse_modes[0], f->lse_modes[1], f->lse_modes[2],
                   f->lse_modes[3], f->v.has_sinks, f->v.sinks_rare, f->want_lse_out, f->null_mask, f->overlap);
}

/* Row r = (b, s, h) of every partial and the output; its lse index (b, h, s). */
static void reference(const merge_call* f, const void* states, const float* lses, const float* sinks, double* ref,
                      double* ref_lse) {
    const gqa_merge_config* c = &f->c;
    const int64_t rows = (int64_t)c->batch_size * c->seq_len * c->num_heads, D = c->head_dim;
    for (int64_t r = 0; r < rows; ++r) {
        const int64_t h = r % c->num_heads, s = (r / c->num_heads) % c->seq_len, b = r / (c->num_heads * c->seq_len);
        const int64_t at = (b * c->num_heads + h) * c->seq_len + s;
        const int has_sink = f->v.has_sinks && sinks[h] != -INFINITY;
        double top = has_sink ? sinks[h] : -INFINITY;
        for (int64_t n = 0; n < c->num_states; ++n) top = fmax(top, lses[n * rows + at]);
        double total = has_sink ? exp(sinks[h] - top) : 0.0;
        for (int64_t d = 0; d < D; ++d) ref[r * D + d] = 0.0;
        for (int64_t n = 0; n < c->num_states; ++n) {
            if (lses[n * rows + at] == -INFINITY) continue; /* weighs 0, not read */
            const double w = exp(lses[n * rows + at] - top);
            total += w;
            for (int64_t d = 0; d < D; ++d) ref[r * D + d] += w * load_elem(c->dtype, states, (n * rows + r) * D + d);
        }
        for (int64_t d = 0; d < D; ++d) ref[r * D + d] = total > 0.0 ? ref[r * D + d] / total : 0.0;
        ref_lse[at] = total > 0.0 ? top + log(total) : -INFINITY;
    }
}

void fuzz_merge(reader* r, int cuda_usable) {
    merge_call f;
    read_call(r, &f);
    gqa_merge_config* c = &f.c;
    if (cuda_usable && c->device == GQA_DEVICE_CUDA) return; /* host pointers are not device memory */
    guarded_buf sinks = guarded_alloc(sizeof(float) * (size_t)c->num_heads); /* 1..4 heads */
    fill_sinks(&f.v, f.seed, (float*)sinks.data, c->num_heads);
    const int accept = should_accept(&f, (const float*)sinks.data);
    const int32_t dtype = buffer_dtype(c->dtype);
    /* Exact shapes for an accepted call; any will do otherwise. */
    const int64_t states_n = c->num_states >= 1 ? c->num_states : 1;
    const int64_t D = accept ? c->head_dim : c->head_dim < 1 ? 1 : c->head_dim > 512 ? 512 : c->head_dim;
    const int64_t rows = (int64_t)c->batch_size * c->seq_len * c->num_heads;
    if (accept && (double)states_n * rows * D > kMaxElems) {
        guarded_free(&sinks);
        return;
    }
    const size_t es = dtype_size(dtype);
    guarded_buf states = guarded_alloc((size_t)(states_n * rows * D) * es);
    guarded_buf lses = guarded_alloc(sizeof(float) * (size_t)(states_n * rows));
    guarded_buf out = guarded_alloc((size_t)(rows * D) * es);
    guarded_buf lse_out = guarded_alloc(sizeof(float) * (size_t)rows);
    test_rng rng;
    rng_seed(&rng, f.seed);
    fill_uniform(&rng, dtype, states.data, states_n * rows * D, -1.0, 1.0);
    float* l = (float*)lses.data;
    for (int64_t n = 0; n < states_n; ++n) {
        const uint8_t mode = f.lse_modes[n % kMaxStates];
        for (int64_t i = 0; i < rows; ++i) {
            const int empty = mode >= 200 && (mode >= 240 || rng_next(&rng) % 2);
            l[n * rows + i] = empty ? -INFINITY : (float)rng_uniform(&rng, -6.0, 6.0);
        }
    }
    /* A partial row that saw nothing (lse -inf) holds NaN: it must not be read. Rows are
     * (b, s, h), lses (b, h, s). */
    for (int64_t n = 0; n < states_n; ++n) {
        for (int64_t row = 0; row < rows; ++row) {
            const int64_t h = row % c->num_heads, s = (row / c->num_heads) % c->seq_len;
            const int64_t b = row / (c->num_heads * c->seq_len), at = (b * c->num_heads + h) * c->seq_len + s;
            if (l[n * rows + at] == -INFINITY) fill_value(dtype, states.data + (size_t)((n * rows + row) * D) * es, D, NAN);
        }
    }
    fill_value(dtype, out.data, rows * D, NAN);
    fill_value(GQA_DTYPE_F32, lse_out.data, rows, NAN);
    double *ref = NULL, *ref_lse = NULL;
    if (accept) {
        ref = (double*)test_malloc(sizeof(double) * (size_t)(rows * D));
        ref_lse = (double*)test_malloc(sizeof(double) * (size_t)rows);
        reference(&f, states.data, l, (const float*)sinks.data, ref, ref_lse);
    }
    c->sinks = f.v.has_sinks ? (const float*)sinks.data : NULL;
    guarded_buf cfg = guarded_alloc(512); /* zero tail: a too-large struct_size cannot overrun */
    memcpy(cfg.data, c, sizeof *c);
    guarded_buf* all[] = {&states, &lses, &out, &lse_out, &sinks, &cfg};
    const char* names[] = {"states", "lses", "out", "lse_out", "sinks", "config"};
    const size_t n_all = sizeof all / sizeof all[0];
    for (size_t i = 0; i < n_all; ++i) guarded_snapshot(all[i]);

    void* out_ptr = (f.null_mask & 1) ? NULL : f.overlap == 2 ? (void*)states.data : (void*)out.data;
    float* lse_out_ptr = f.overlap == 1 ? (float*)lses.data : f.want_lse_out ? (float*)lse_out.data : NULL;
    fuzz_count(kOpMerge, accept);
    const gqa_status s = gqa_merge_states(out_ptr, lse_out_ptr, (f.null_mask & 2) ? NULL : states.data,
                                          (f.null_mask & 4) ? NULL : (const float*)lses.data,
                                          (f.null_mask & 8) ? NULL : (const gqa_merge_config*)cfg.data, NULL);
    char what[120];
    const char* wrong = status_wrong(accept, s);
    if (wrong) violation(wrong, &f, s);
    const int written[] = {0, 0, 1, f.want_lse_out, 0, 0}; /* out, lse_out when given */
    if (buffer_written_wrongly(all, names, written, n_all, accept, what, sizeof what)) violation(what, &f, s);
    if (accept) {
        if (out_differs(dtype, out.data, ref, rows * D)) violation("accepted call: out differs from the float64 reference", &f, s);
        if (f.want_lse_out && lse_differs((const float*)lse_out.data, ref_lse, rows)) {
            violation("accepted call: lse_out differs from the float64 reference", &f, s);
        }
    }
    free(ref);
    free(ref_lse);
    for (size_t i = 0; i < n_all; ++i) guarded_free(all[i]);
}
