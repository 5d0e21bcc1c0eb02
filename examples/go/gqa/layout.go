package gqa

/*
#include <gqa.h>
*/
import "C"

import (
	"fmt"
	"strings"
	"unsafe"
)

// LayoutJSON reports the size and field offsets of the config structs as Go (cgo) sees them,
// for tests/python/test_layout.py, which compares them with C, Python (cffi) and Rust.
func LayoutJSON() string {
	var p C.gqa_prefill_config
	var d C.gqa_decode_config
	var st C.gqa_strides
	var m C.gqa_merge_config
	var bc C.gqa_batch_config
	type field struct {
		name   string
		offset uintptr
	}
	object := func(size uintptr, fields []field) string {
		parts := make([]string, len(fields))
		for i, f := range fields {
			parts[i] = fmt.Sprintf("%q: %d", f.name, f.offset)
		}
		return fmt.Sprintf(`{"size": %d, "fields": {%s}}`, size, strings.Join(parts, ", "))
	}
	prefill := object(unsafe.Sizeof(p), []field{
		{"struct_size", unsafe.Offsetof(p.struct_size)}, {"abi_version", unsafe.Offsetof(p.abi_version)},
		{"dtype", unsafe.Offsetof(p.dtype)}, {"device", unsafe.Offsetof(p.device)},
		{"batch_size", unsafe.Offsetof(p.batch_size)}, {"seq_len", unsafe.Offsetof(p.seq_len)},
		{"num_q_heads", unsafe.Offsetof(p.num_q_heads)}, {"num_kv_heads", unsafe.Offsetof(p.num_kv_heads)},
		{"head_dim", unsafe.Offsetof(p.head_dim)}, {"max_seq_len", unsafe.Offsetof(p.max_seq_len)},
		{"start_pos", unsafe.Offsetof(p.start_pos)}, {"causal", unsafe.Offsetof(p.causal)},
		{"scale", unsafe.Offsetof(p.scale)}, {"reserved", unsafe.Offsetof(p.reserved)},
		{"window_left", unsafe.Offsetof(p.window_left)}, {"window_right", unsafe.Offsetof(p.window_right)},
		{"softcap", unsafe.Offsetof(p.softcap)}, {"reserved2", unsafe.Offsetof(p.reserved2)},
		{"sinks", unsafe.Offsetof(p.sinks)}, {"lse", unsafe.Offsetof(p.lse)},
		{"q_strides", unsafe.Offsetof(p.q_strides)}, {"k_strides", unsafe.Offsetof(p.k_strides)},
		{"v_strides", unsafe.Offsetof(p.v_strides)}, {"out_strides", unsafe.Offsetof(p.out_strides)},
	})
	decode := object(unsafe.Sizeof(d), []field{
		{"struct_size", unsafe.Offsetof(d.struct_size)}, {"abi_version", unsafe.Offsetof(d.abi_version)},
		{"dtype", unsafe.Offsetof(d.dtype)}, {"device", unsafe.Offsetof(d.device)},
		{"batch_size", unsafe.Offsetof(d.batch_size)}, {"num_q_heads", unsafe.Offsetof(d.num_q_heads)},
		{"num_kv_heads", unsafe.Offsetof(d.num_kv_heads)}, {"head_dim", unsafe.Offsetof(d.head_dim)},
		{"max_seq_len", unsafe.Offsetof(d.max_seq_len)}, {"cache_len", unsafe.Offsetof(d.cache_len)},
		{"scale", unsafe.Offsetof(d.scale)}, {"num_splits", unsafe.Offsetof(d.num_splits)},
		{"cache_lens", unsafe.Offsetof(d.cache_lens)}, {"workspace", unsafe.Offsetof(d.workspace)},
		{"workspace_bytes", unsafe.Offsetof(d.workspace_bytes)},
		{"window_left", unsafe.Offsetof(d.window_left)}, {"window_right", unsafe.Offsetof(d.window_right)},
		{"softcap", unsafe.Offsetof(d.softcap)}, {"reserved2", unsafe.Offsetof(d.reserved2)},
		{"sinks", unsafe.Offsetof(d.sinks)}, {"lse", unsafe.Offsetof(d.lse)},
		{"q_strides", unsafe.Offsetof(d.q_strides)}, {"k_strides", unsafe.Offsetof(d.k_strides)},
		{"v_strides", unsafe.Offsetof(d.v_strides)}, {"out_strides", unsafe.Offsetof(d.out_strides)},
	})
	strides := object(unsafe.Sizeof(st), []field{
		{"batch", unsafe.Offsetof(st.batch)}, {"token", unsafe.Offsetof(st.token)}, {"head", unsafe.Offsetof(st.head)},
	})
	merge := object(unsafe.Sizeof(m), []field{
		{"struct_size", unsafe.Offsetof(m.struct_size)}, {"abi_version", unsafe.Offsetof(m.abi_version)},
		{"dtype", unsafe.Offsetof(m.dtype)}, {"device", unsafe.Offsetof(m.device)},
		{"num_states", unsafe.Offsetof(m.num_states)}, {"batch_size", unsafe.Offsetof(m.batch_size)},
		{"seq_len", unsafe.Offsetof(m.seq_len)}, {"num_heads", unsafe.Offsetof(m.num_heads)},
		{"head_dim", unsafe.Offsetof(m.head_dim)}, {"reserved", unsafe.Offsetof(m.reserved)},
		{"sinks", unsafe.Offsetof(m.sinks)},
	})
	batch := object(unsafe.Sizeof(bc), []field{
		{"struct_size", unsafe.Offsetof(bc.struct_size)}, {"abi_version", unsafe.Offsetof(bc.abi_version)}, {"dtype", unsafe.Offsetof(bc.dtype)}, {"device", unsafe.Offsetof(bc.device)}, {"batch_size", unsafe.Offsetof(bc.batch_size)}, {"total_q", unsafe.Offsetof(bc.total_q)}, {"max_q_len", unsafe.Offsetof(bc.max_q_len)}, {"num_q_heads", unsafe.Offsetof(bc.num_q_heads)}, {"num_kv_heads", unsafe.Offsetof(bc.num_kv_heads)}, {"head_dim", unsafe.Offsetof(bc.head_dim)}, {"page_size", unsafe.Offsetof(bc.page_size)}, {"num_pages", unsafe.Offsetof(bc.num_pages)}, {"max_pages_per_seq", unsafe.Offsetof(bc.max_pages_per_seq)}, {"causal", unsafe.Offsetof(bc.causal)}, {"scale", unsafe.Offsetof(bc.scale)}, {"num_splits", unsafe.Offsetof(bc.num_splits)}, {"q_indptr", unsafe.Offsetof(bc.q_indptr)}, {"kv_lens", unsafe.Offsetof(bc.kv_lens)}, {"page_table", unsafe.Offsetof(bc.page_table)}, {"window_left", unsafe.Offsetof(bc.window_left)}, {"window_right", unsafe.Offsetof(bc.window_right)}, {"softcap", unsafe.Offsetof(bc.softcap)}, {"reserved", unsafe.Offsetof(bc.reserved)}, {"sinks", unsafe.Offsetof(bc.sinks)}, {"lse", unsafe.Offsetof(bc.lse)}, {"q_strides", unsafe.Offsetof(bc.q_strides)}, {"k_strides", unsafe.Offsetof(bc.k_strides)}, {"v_strides", unsafe.Offsetof(bc.v_strides)}, {"out_strides", unsafe.Offsetof(bc.out_strides)}, {"workspace", unsafe.Offsetof(bc.workspace)}, {"workspace_bytes", unsafe.Offsetof(bc.workspace_bytes)}, {"error_flags", unsafe.Offsetof(bc.error_flags)},
	})
	return fmt.Sprintf(`{"gqa_prefill_config": %s, "gqa_decode_config": %s, "gqa_strides": %s, "gqa_merge_config": %s, "gqa_batch_config": %s}`,
		prefill, decode, strides, merge, batch)
}
