//! Prints the size and field offsets of the config structs as these Rust bindings lay them out,
//! as JSON. tests/python/test_layout.py compares it with C, Python (cffi) and Go.
use gqa::ffi::{gqa_batch_config, gqa_decode_config, gqa_merge_config, gqa_prefill_config, gqa_strides};
use std::mem::{offset_of, size_of};

macro_rules! layout {
    ($ty:ty, $($field:ident),+) => {{
        let fields: Vec<String> =
            vec![$(format!("\"{}\": {}", stringify!($field), offset_of!($ty, $field))),+];
        format!("{{\"size\": {}, \"fields\": {{{}}}}}", size_of::<$ty>(), fields.join(", "))
    }};
}

fn main() {
    let prefill = layout!(gqa_prefill_config, struct_size, abi_version, dtype, device, batch_size,
        seq_len, num_q_heads, num_kv_heads, head_dim, max_seq_len, start_pos, causal, scale, reserved,
        window_left, window_right, softcap, reserved2, sinks, lse, q_strides, k_strides, v_strides,
        out_strides);
    let decode = layout!(gqa_decode_config, struct_size, abi_version, dtype, device, batch_size,
        num_q_heads, num_kv_heads, head_dim, max_seq_len, cache_len, scale, num_splits, cache_lens,
        workspace, workspace_bytes, window_left, window_right, softcap, reserved2, sinks, lse, q_strides,
        k_strides, v_strides, out_strides);
    let strides = layout!(gqa_strides, batch, token, head);
    let merge = layout!(gqa_merge_config, struct_size, abi_version, dtype, device, num_states, batch_size,
        seq_len, num_heads, head_dim, reserved, sinks);
    let batch = layout!(gqa_batch_config, struct_size, abi_version, dtype, device, batch_size, total_q, max_q_len, num_q_heads, num_kv_heads, head_dim, page_size, num_pages, max_pages_per_seq, causal, scale, num_splits, q_indptr, kv_lens, page_table, window_left, window_right, softcap, reserved, sinks, lse, q_strides, k_strides, v_strides, out_strides, workspace, workspace_bytes, error_flags);
    println!("{{\"gqa_prefill_config\": {prefill}, \"gqa_decode_config\": {decode}, \"gqa_strides\": {strides}, \"gqa_merge_config\": {merge}, \"gqa_batch_config\": {batch}}}");
}
