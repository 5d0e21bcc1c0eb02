/*
 * gqa_layout.c: prints the size and field offsets of the config structs as C sees them, as
 * JSON on stdout. tests/python/test_layout.py compares this with Python (cffi), Rust and Go.
 */
#include <gqa.h>

#include <stddef.h>
#include <stdio.h>

static int first_field;

#define STRUCT(type, separator)                                                              \
    printf("%s\"" #type "\": {\"size\": %zu, \"fields\": {", separator, sizeof(type)); \
    first_field = 1;
#define END_STRUCT printf("}}");
#define FIELD(type, name)                                                               \
    printf("%s\"%s\": %zu", first_field ? "" : ", ", #name, offsetof(type, name)); \
    first_field = 0;

/* The fields every config starts with. */
#define HEADER_FIELDS(type) \
    FIELD(type, struct_size) FIELD(type, abi_version) FIELD(type, dtype) FIELD(type, device)
/* The variant fields of libgqa 0.2, appended alike to the prefill and decode configs. */
#define STRIDE_FIELDS(type) \
    FIELD(type, q_strides) FIELD(type, k_strides) FIELD(type, v_strides) FIELD(type, out_strides)
#define VARIANT_FIELDS(type)                                                                  \
    FIELD(type, window_left) FIELD(type, window_right) FIELD(type, softcap) FIELD(type, reserved2) \
    FIELD(type, sinks) FIELD(type, lse) STRIDE_FIELDS(type)

int main(void) {
    STRUCT(gqa_prefill_config, "{")
    HEADER_FIELDS(gqa_prefill_config)
    FIELD(gqa_prefill_config, batch_size)
    FIELD(gqa_prefill_config, seq_len)
    FIELD(gqa_prefill_config, num_q_heads)
    FIELD(gqa_prefill_config, num_kv_heads)
    FIELD(gqa_prefill_config, head_dim)
    FIELD(gqa_prefill_config, max_seq_len)
    FIELD(gqa_prefill_config, start_pos)
    FIELD(gqa_prefill_config, causal)
    FIELD(gqa_prefill_config, scale)
    FIELD(gqa_prefill_config, reserved)
    VARIANT_FIELDS(gqa_prefill_config)
    END_STRUCT

    STRUCT(gqa_decode_config, ", ")
    HEADER_FIELDS(gqa_decode_config)
    FIELD(gqa_decode_config, batch_size)
    FIELD(gqa_decode_config, num_q_heads)
    FIELD(gqa_decode_config, num_kv_heads)
    FIELD(gqa_decode_config, head_dim)
    FIELD(gqa_decode_config, max_seq_len)
    FIELD(gqa_decode_config, cache_len)
    FIELD(gqa_decode_config, scale)
    FIELD(gqa_decode_config, num_splits)
    FIELD(gqa_decode_config, cache_lens)
    FIELD(gqa_decode_config, workspace)
    FIELD(gqa_decode_config, workspace_bytes)
    VARIANT_FIELDS(gqa_decode_config)
    END_STRUCT

    STRUCT(gqa_strides, ", ")
    FIELD(gqa_strides, batch)
    FIELD(gqa_strides, token)
    FIELD(gqa_strides, head)
    END_STRUCT

    STRUCT(gqa_merge_config, ", ")
    HEADER_FIELDS(gqa_merge_config)
    FIELD(gqa_merge_config, num_states)
    FIELD(gqa_merge_config, batch_size)
    FIELD(gqa_merge_config, seq_len)
    FIELD(gqa_merge_config, num_heads)
    FIELD(gqa_merge_config, head_dim)
    FIELD(gqa_merge_config, reserved)
    FIELD(gqa_merge_config, sinks)
    END_STRUCT

    STRUCT(gqa_batch_config, ", ")
    HEADER_FIELDS(gqa_batch_config)
    FIELD(gqa_batch_config, batch_size)
    FIELD(gqa_batch_config, total_q)
    FIELD(gqa_batch_config, max_q_len)
    FIELD(gqa_batch_config, num_q_heads)
    FIELD(gqa_batch_config, num_kv_heads)
    FIELD(gqa_batch_config, head_dim)
    FIELD(gqa_batch_config, page_size)
    FIELD(gqa_batch_config, num_pages)
    FIELD(gqa_batch_config, max_pages_per_seq)
    FIELD(gqa_batch_config, causal)
    FIELD(gqa_batch_config, scale)
    FIELD(gqa_batch_config, num_splits)
    FIELD(gqa_batch_config, q_indptr)
    FIELD(gqa_batch_config, kv_lens)
    FIELD(gqa_batch_config, page_table)
    FIELD(gqa_batch_config, window_left)
    FIELD(gqa_batch_config, window_right)
    FIELD(gqa_batch_config, softcap)
    FIELD(gqa_batch_config, reserved)
    FIELD(gqa_batch_config, sinks)
    FIELD(gqa_batch_config, lse)
    STRIDE_FIELDS(gqa_batch_config)
    FIELD(gqa_batch_config, workspace)
    FIELD(gqa_batch_config, workspace_bytes)
    FIELD(gqa_batch_config, error_flags)
    END_STRUCT
    printf("}\n");
    return 0;
}
