//! Raw declarations mirroring `include/gqa.h` field for field. `tests/python/test_layout.py`
//! compares these structs' sizes and offsets with C, Python (cffi) and Go.
#![allow(non_camel_case_types)]

use std::ffi::{c_char, c_void};

#[macro_use]
mod loader;
pub use loader::library_path;

pub const GQA_ABI_VERSION: u32 = 1;

pub type gqa_status = i32;
pub const GQA_STATUS_OK: gqa_status = 0;
pub const GQA_STATUS_INVALID_ARGUMENT: gqa_status = 1;
pub const GQA_STATUS_CACHE_OVERFLOW: gqa_status = 2;
pub const GQA_STATUS_UNSUPPORTED: gqa_status = 3;
pub const GQA_STATUS_DEVICE_UNAVAILABLE: gqa_status = 4;
pub const GQA_STATUS_CUDA_ERROR: gqa_status = 5;
pub const GQA_STATUS_VERSION_MISMATCH: gqa_status = 6;
pub const GQA_STATUS_OUT_OF_MEMORY: gqa_status = 7;
pub const GQA_STATUS_INTERNAL_ERROR: gqa_status = 8;

pub const GQA_DTYPE_F16: i32 = 1;
pub const GQA_DTYPE_BF16: i32 = 2;
pub const GQA_DTYPE_F32: i32 = 3;

pub const GQA_DEVICE_CPU: i32 = 1;
pub const GQA_DEVICE_CUDA: i32 = 2;

/// Element strides of q/k/v/out (head_dim contiguous); all 0: contiguous.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct gqa_strides {
    pub batch: i64,
    pub token: i64,
    pub head: i64,
}

#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct gqa_prefill_config {
    pub struct_size: u32,
    pub abi_version: u32,
    pub dtype: i32,
    pub device: i32,
    pub batch_size: i32,
    pub seq_len: i32,
    pub num_q_heads: i32,
    pub num_kv_heads: i32,
    pub head_dim: i32,
    pub max_seq_len: i32,
    pub start_pos: i32,
    pub causal: i32,
    pub scale: f32,
    pub reserved: i32,
    // libgqa 0.2: the variants
    pub window_left: i32,
    pub window_right: i32,
    pub softcap: f32,
    pub reserved2: i32,
    pub sinks: *const f32,
    pub lse: *mut f32,
    pub q_strides: gqa_strides,
    pub k_strides: gqa_strides,
    pub v_strides: gqa_strides,
    pub out_strides: gqa_strides,
}

#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct gqa_decode_config {
    pub struct_size: u32,
    pub abi_version: u32,
    pub dtype: i32,
    pub device: i32,
    pub batch_size: i32,
    pub num_q_heads: i32,
    pub num_kv_heads: i32,
    pub head_dim: i32,
    pub max_seq_len: i32,
    pub cache_len: i32,
    pub scale: f32,
    pub num_splits: i32,
    pub cache_lens: *const i32,
    pub workspace: *mut c_void,
    pub workspace_bytes: u64,
    // libgqa 0.2: the variants
    pub window_left: i32,
    pub window_right: i32,
    pub softcap: f32,
    pub reserved2: i32,
    pub sinks: *const f32,
    pub lse: *mut f32,
    pub q_strides: gqa_strides,
    pub k_strides: gqa_strides,
    pub v_strides: gqa_strides,
    pub out_strides: gqa_strides,
}

#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct gqa_merge_config {
    pub struct_size: u32,
    pub abi_version: u32,
    pub dtype: i32,
    pub device: i32,
    pub num_states: i32,
    pub batch_size: i32,
    pub seq_len: i32,
    pub num_heads: i32,
    pub head_dim: i32,
    pub reserved: i32,
    pub sinks: *const f32,
}

pub const GQA_BATCH_FLAG_BAD_INDPTR: i32 = 1;
pub const GQA_BATCH_FLAG_BAD_KV_LEN: i32 = 2;
pub const GQA_BATCH_FLAG_BAD_PAGE: i32 = 4;

#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct gqa_batch_config {
    pub struct_size: u32,
    pub abi_version: u32,
    pub dtype: i32,
    pub device: i32,
    pub batch_size: i32,
    pub total_q: i32,
    pub max_q_len: i32,
    pub num_q_heads: i32,
    pub num_kv_heads: i32,
    pub head_dim: i32,
    pub page_size: i32,
    pub num_pages: i32,
    pub max_pages_per_seq: i32,
    pub causal: i32,
    pub scale: f32,
    pub num_splits: i32,
    pub q_indptr: *const i32,
    pub kv_lens: *const i32,
    pub page_table: *const i32,
    pub window_left: i32,
    pub window_right: i32,
    pub softcap: f32,
    pub reserved: i32,
    pub sinks: *const f32,
    pub lse: *mut f32,
    pub q_strides: gqa_strides,
    pub k_strides: gqa_strides,
    pub v_strides: gqa_strides,
    pub out_strides: gqa_strides,
    pub workspace: *mut c_void,
    pub workspace_bytes: u64,
    pub error_flags: *mut i32,
}

pub type gqa_log_callback =
    Option<unsafe extern "C" fn(level: i32, message: *const c_char, user_data: *mut c_void)>;

// libgqa's entry points. They are resolved from the shared library at the first call
// (dlopen), not linked: the path that build.rs found is compiled in, so every binary that
// depends on this crate, however far downstream, finds libgqa with no rpath or
// LD_LIBRARY_PATH of its own. GQA_LIBRARY (a path to libgqa.so) overrides it at run time, as
// for the Python package. A library that cannot be loaded is a panic naming both paths.
libgqa_functions! {
    fn gqa_prefill_config_init(config: *mut gqa_prefill_config);
    fn gqa_decode_config_init(config: *mut gqa_decode_config);
    fn gqa_prefill_config_init_sized(config: *mut gqa_prefill_config, struct_size: u32) -> gqa_status;
    fn gqa_decode_config_init_sized(config: *mut gqa_decode_config, struct_size: u32) -> gqa_status;
    fn gqa_merge_config_init_sized(config: *mut gqa_merge_config, struct_size: u32) -> gqa_status;
    fn gqa_merge_states(
        out: *mut c_void,
        lse_out: *mut f32,
        states: *const c_void,
        lses: *const f32,
        config: *const gqa_merge_config,
        stream: *mut c_void,
    ) -> gqa_status;
    fn gqa_attention_prefill(
        out: *mut c_void,
        q: *const c_void,
        k: *const c_void,
        v: *const c_void,
        k_cache: *mut c_void,
        v_cache: *mut c_void,
        config: *const gqa_prefill_config,
        stream: *mut c_void,
    ) -> gqa_status;
    fn gqa_attention_decode(
        out: *mut c_void,
        q: *const c_void,
        k: *const c_void,
        v: *const c_void,
        k_cache: *mut c_void,
        v_cache: *mut c_void,
        config: *const gqa_decode_config,
        stream: *mut c_void,
    ) -> gqa_status;
    fn gqa_decode_workspace_size(config: *const gqa_decode_config, bytes: *mut u64) -> gqa_status;
    fn gqa_batch_config_init_sized(config: *mut gqa_batch_config, struct_size: u32) -> gqa_status;
    fn gqa_attention_batch(
        out: *mut c_void,
        q: *const c_void,
        k: *const c_void,
        v: *const c_void,
        k_cache: *mut c_void,
        v_cache: *mut c_void,
        config: *const gqa_batch_config,
        stream: *mut c_void,
    ) -> gqa_status;
    fn gqa_batch_workspace_size(config: *const gqa_batch_config, bytes: *mut u64) -> gqa_status;
    fn gqa_status_string(status: gqa_status) -> *const c_char;
    fn gqa_last_error() -> *const c_char;
    fn gqa_version_string() -> *const c_char;
    fn gqa_version_number() -> u32;
    fn gqa_abi_version() -> u32;
    fn gqa_set_log_level(level: i32) -> gqa_status;
    fn gqa_get_log_level() -> i32;
    fn gqa_set_log_callback(callback: gqa_log_callback, user_data: *mut c_void) -> gqa_status;
    fn gqa_set_num_threads(num_threads: i32) -> gqa_status;
    fn gqa_get_num_threads() -> i32;
    fn gqa_cuda_available() -> gqa_status;
    fn gqa_built_with_cuda() -> i32;
}
