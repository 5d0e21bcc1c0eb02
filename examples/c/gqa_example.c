/*
 * gqa_example.c: prefill a prompt into a KV cache, then decode a few tokens, with libgqa's C API,
 * and check every output against a small float64 reference. Exit status 0 when all match.
 *
 * Build against an installed libgqa, either with CMake (examples/c/CMakeLists.txt):
 *     cmake -S examples/c -B build-example -DCMAKE_PREFIX_PATH=/path/to/prefix
 * or with pkg-config:
 *     cc gqa_example.c $(pkg-config --cflags --libs gqa) -lm -o gqa_example
 */
#include <gqa.h>

#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

enum { BATCH = 2, Q_HEADS = 6, KV_HEADS = 2, HEAD_DIM = 16, MAX_SEQ = 32, PROMPT = 7, STEPS = 3 };

/* Deterministic values in [-1, 1): the check must not depend on the C library's rand(). */
static float next_value(uint64_t* state) {
    *state = *state * 6364136223846793005ULL + 1442695040888963407ULL;
    return (float)((double)(*state >> 11) / 9007199254740992.0 * 2.0 - 1.0);
}

static void fill_random(float* x, size_t n, uint64_t* state) {
    for (size_t i = 0; i < n; ++i) x[i] = next_value(state);
}

/* Index of element [b][s][h][d] in a BSHD tensor with `seq` positions and `heads` heads. */
static size_t at(int b, int s, int h, int d, int seq, int heads) {
    return (((size_t)b * (size_t)seq + (size_t)s) * (size_t)heads + (size_t)h) * HEAD_DIM + (size_t)d;
}

/* float64 attention of one query row (query head h of sequence b) over cache positions
 * 0 .. last; returns the largest absolute difference to `got`. */
static double check_row(const float* q_row, const float* k_cache, const float* v_cache, int b,
                        int h, int last, const float* got) {
    const int kv_head = h / (Q_HEADS / KV_HEADS);
    const double scale = 1.0 / sqrt((double)HEAD_DIM);
    double scores[MAX_SEQ];
    double max_score = -INFINITY;
    for (int t = 0; t <= last; ++t) {
        double dot = 0.0;
        for (int d = 0; d < HEAD_DIM; ++d)
            dot += (double)q_row[d] * k_cache[at(b, t, kv_head, d, MAX_SEQ, KV_HEADS)];
        scores[t] = dot * scale;
        if (scores[t] > max_score) max_score = scores[t];
    }
    double sum = 0.0;
    for (int t = 0; t <= last; ++t) {
        scores[t] = exp(scores[t] - max_score);
        sum += scores[t];
    }
    double worst = 0.0;
    for (int d = 0; d < HEAD_DIM; ++d) {
        double expected = 0.0;
        for (int t = 0; t <= last; ++t)
            expected += scores[t] / sum * v_cache[at(b, t, kv_head, d, MAX_SEQ, KV_HEADS)];
        double diff = fabs(expected - (double)got[d]);
        if (!(diff <= worst)) worst = diff; /* NaN (an unwritten output) becomes the worst */
    }
    return worst;
}

static int fail(const char* what, gqa_status status) {
    fprintf(stderr, "%s failed: %s: %s\n", what, gqa_status_string(status), gqa_last_error());
    return 1;
}

int main(void) {
    if (gqa_abi_version() != GQA_ABI_VERSION) {
        fprintf(stderr, "libgqa ABI %u, this program was built for %d\n",
                (unsigned)gqa_abi_version(), GQA_ABI_VERSION);
        return 1;
    }
    const size_t cache_elems = (size_t)BATCH * MAX_SEQ * KV_HEADS * HEAD_DIM;
    float* k_cache = malloc(cache_elems * sizeof(float));
    float* v_cache = malloc(cache_elems * sizeof(float));
    float* q = malloc((size_t)BATCH * PROMPT * Q_HEADS * HEAD_DIM * sizeof(float));
    float* k = malloc((size_t)BATCH * PROMPT * KV_HEADS * HEAD_DIM * sizeof(float));
    float* v = malloc((size_t)BATCH * PROMPT * KV_HEADS * HEAD_DIM * sizeof(float));
    float* out = malloc((size_t)BATCH * PROMPT * Q_HEADS * HEAD_DIM * sizeof(float));
    if (!k_cache || !v_cache || !q || !k || !v || !out) return 1;
    uint64_t rng = 42;
    for (size_t i = 0; i < cache_elems; ++i) k_cache[i] = v_cache[i] = NAN; /* unwritten shows */

    /* Prefill: the prompt's K/V go to cache positions [0, PROMPT); causal attention. */
    fill_random(q, (size_t)BATCH * PROMPT * Q_HEADS * HEAD_DIM, &rng);
    fill_random(k, (size_t)BATCH * PROMPT * KV_HEADS * HEAD_DIM, &rng);
    fill_random(v, (size_t)BATCH * PROMPT * KV_HEADS * HEAD_DIM, &rng);
    for (size_t i = 0; i < (size_t)BATCH * PROMPT * Q_HEADS * HEAD_DIM; ++i) out[i] = NAN;
    gqa_prefill_config prefill = GQA_PREFILL_CONFIG_INIT;
    prefill.dtype = GQA_DTYPE_F32;
    prefill.batch_size = BATCH;
    prefill.seq_len = PROMPT;
    prefill.num_q_heads = Q_HEADS;
    prefill.num_kv_heads = KV_HEADS;
    prefill.head_dim = HEAD_DIM;
    prefill.max_seq_len = MAX_SEQ;
    gqa_status status = gqa_attention_prefill(out, q, k, v, k_cache, v_cache, &prefill, NULL);
    if (status != GQA_STATUS_OK) return fail("gqa_attention_prefill", status);

    double worst = 0.0;
    for (int b = 0; b < BATCH; ++b)
        for (int s = 0; s < PROMPT; ++s)
            for (int h = 0; h < Q_HEADS; ++h) {
                size_t row = at(b, s, h, 0, PROMPT, Q_HEADS);
                double err = check_row(q + row, k_cache, v_cache, b, h, s, out + row);
                if (!(err <= worst)) worst = err;
            }
    /* The prefill must also have copied the prompt's K/V into the cache. */
    for (int b = 0; b < BATCH; ++b)
        for (int s = 0; s < PROMPT; ++s)
            for (int j = 0; j < KV_HEADS * HEAD_DIM; ++j) {
                size_t src = at(b, s, 0, 0, PROMPT, KV_HEADS) + (size_t)j;
                size_t dst = at(b, s, 0, 0, MAX_SEQ, KV_HEADS) + (size_t)j;
                if (k_cache[dst] != k[src] || v_cache[dst] != v[src]) {
                    fprintf(stderr, "prefill did not write the cache at b=%d s=%d\n", b, s);
                    return 1;
                }
            }

    /* Decode: one token per step, appended at cache_len, attending over cache_len + 1. */
    gqa_decode_config decode = GQA_DECODE_CONFIG_INIT;
    decode.dtype = GQA_DTYPE_F32;
    decode.batch_size = BATCH;
    decode.num_q_heads = Q_HEADS;
    decode.num_kv_heads = KV_HEADS;
    decode.head_dim = HEAD_DIM;
    decode.max_seq_len = MAX_SEQ;
    for (int step = 0; step < STEPS; ++step) {
        decode.cache_len = PROMPT + step;
        fill_random(q, (size_t)BATCH * Q_HEADS * HEAD_DIM, &rng);
        fill_random(k, (size_t)BATCH * KV_HEADS * HEAD_DIM, &rng);
        fill_random(v, (size_t)BATCH * KV_HEADS * HEAD_DIM, &rng);
        for (size_t i = 0; i < (size_t)BATCH * Q_HEADS * HEAD_DIM; ++i) out[i] = NAN;
        status = gqa_attention_decode(out, q, k, v, k_cache, v_cache, &decode, NULL);
        if (status != GQA_STATUS_OK) return fail("gqa_attention_decode", status);
        for (int b = 0; b < BATCH; ++b)
            for (int h = 0; h < Q_HEADS; ++h) {
                size_t row = at(b, 0, h, 0, 1, Q_HEADS);
                double err = check_row(q + row, k_cache, v_cache, b, h, decode.cache_len, out + row);
                if (!(err <= worst)) worst = err;
            }
    }

    /* A rejected call reports why, naming the parameter. */
    decode.cache_len = MAX_SEQ;
    status = gqa_attention_decode(out, q, k, v, k_cache, v_cache, &decode, NULL);
    int rejected = status == GQA_STATUS_CACHE_OVERFLOW;

    printf("libgqa %s: prefill %d tokens + %d decode steps, %d:%d heads, d=%d\n",
           gqa_version_string(), PROMPT, STEPS, Q_HEADS, KV_HEADS, HEAD_DIM);
    printf("max |libgqa - float64 reference| = %.3g (tolerance 1e-4)\n", worst);
    printf("decode at cache_len == max_seq_len -> %s: %s\n", gqa_status_string(status),
           gqa_last_error());
    free(k_cache); free(v_cache); free(q); free(k); free(v); free(out);
    if (!(worst <= 1e-4) || !rejected) {
        fprintf(stderr, "FAILED\n");
        return 1;
    }
    printf("OK\n");
    return 0;
}
