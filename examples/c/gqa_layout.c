/*
 * gqa_layout.c: prints the size and field offsets of the config structs as C sees them, as
 * JSON on stdout. tests/python/test_layout.py compares this with Python (cffi), Rust and Go.
 */
#include <gqa.h>

#include <stddef.h>
#include <stdio.h>

#define FIELD(type, name) \
    printf("%s\"%s\": %zu", first ? "" : ", ", #name, offsetof(type, name)); first = 0;

int main(void) {
    int first = 1;
    printf("{\"gqa_prefill_config\": {\"size\": %zu, \"fields\": {", sizeof(gqa_prefill_config));
    FIELD(gqa_prefill_config, struct_size)
    FIELD(gqa_prefill_config, abi_version)
    FIELD(gqa_prefill_config, dtype)
    FIELD(gqa_prefill_config, device)
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
    FIELD(gqa_prefill_config, window_left)
    FIELD(gqa_prefill_config, window_right)
    FIELD(gqa_prefill_config, softcap)
    FIELD(gqa_prefill_config, reserved2)
    FIELD(gqa_prefill_config, sinks)
    FIELD(gqa_prefill_config, lse)
    FIELD(gqa_prefill_config, q_strides)
    FIELD(gqa_prefill_config, k_strides)
    FIELD(gqa_prefill_config, v_strides)
    FIELD(gqa_prefill_config, out_strides)
    first = 1;
    printf("}}, \"gqa_decode_config\": {\"size\": %zu, \"fields\": {", sizeof(gqa_decode_config));
    FIELD(gqa_decode_config, struct_size)
    FIELD(gqa_decode_config, abi_version)
    FIELD(gqa_decode_config, dtype)
    FIELD(gqa_decode_config, device)
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
    FIELD(gqa_decode_config, window_left)
    FIELD(gqa_decode_config, window_right)
    FIELD(gqa_decode_config, softcap)
    FIELD(gqa_decode_config, reserved2)
    FIELD(gqa_decode_config, sinks)
    FIELD(gqa_decode_config, lse)
    FIELD(gqa_decode_config, q_strides)
    FIELD(gqa_decode_config, k_strides)
    FIELD(gqa_decode_config, v_strides)
    FIELD(gqa_decode_config, out_strides)
    first = 1;
    printf("}}, \"gqa_strides\": {\"size\": %zu, \"fields\": {", sizeof(gqa_strides));
    FIELD(gqa_strides, batch)
    FIELD(gqa_strides, token)
    FIELD(gqa_strides, head)
    first = 1;
    printf("}}, \"gqa_merge_config\": {\"size\": %zu, \"fields\": {", sizeof(gqa_merge_config));
    FIELD(gqa_merge_config, struct_size)
    FIELD(gqa_merge_config, abi_version)
    FIELD(gqa_merge_config, dtype)
    FIELD(gqa_merge_config, device)
    FIELD(gqa_merge_config, num_states)
    FIELD(gqa_merge_config, batch_size)
    FIELD(gqa_merge_config, seq_len)
    FIELD(gqa_merge_config, num_heads)
    FIELD(gqa_merge_config, head_dim)
    FIELD(gqa_merge_config, reserved)
    FIELD(gqa_merge_config, sinks)
    first = 1;
    printf("}}, \"gqa_batch_config\": {\"size\": %zu, \"fields\": {", sizeof(gqa_batch_config));
    FIELD(gqa_batch_config, struct_size)
    FIELD(gqa_batch_config, abi_version)
    FIELD(gqa_batch_config, dtype)
    FIELD(gqa_batch_config, device)
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
    FIELD(gqa_batch_config, q_strides)
    FIELD(gqa_batch_config, k_strides)
    FIELD(gqa_batch_config, v_strides)
    FIELD(gqa_batch_config, out_strides)
    FIELD(gqa_batch_config, workspace)
    FIELD(gqa_batch_config, workspace_bytes)
    FIELD(gqa_batch_config, error_flags)
    printf("}}}\n");
    return 0;
}
