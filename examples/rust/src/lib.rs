//! Safe Rust bindings of libgqa's C API (`include/gqa.h`) for CPU tensors.
//!
//! Tensors are BSHD row-major slices. Every call checks that each slice is exactly as long as the
//! shape says before libgqa sees a pointer, so a wrong shape is an `Err`, never a wild read;
//! libgqa then validates the rest and answers with a status and a sentence, returned as
//! [`Error`].
//!
//! ```no_run
//! let p = gqa::PrefillParams { batch_size: 1, seq_len: 4, num_q_heads: 6, num_kv_heads: 2,
//!                              head_dim: 16, max_seq_len: 32, ..Default::default() };
//! let (q, k, v) = (vec![0.1f32; 4 * 6 * 16], vec![0.2f32; 4 * 2 * 16], vec![0.3f32; 4 * 2 * 16]);
//! let (mut kc, mut vc) = (vec![0f32; 32 * 2 * 16], vec![0f32; 32 * 2 * 16]);
//! let mut out = vec![0f32; 4 * 6 * 16];
//! gqa::prefill(&mut out, &q, &k, &v, Some((&mut kc, &mut vc)), &p).unwrap();
//! ```

pub mod ffi;
mod half;

pub use half::{Bf16, F16};

use std::ffi::{c_void, CStr};
use std::fmt;
use std::ptr;

/// A storage element type libgqa accepts on the CPU.
pub trait Element: Copy {
    /// The `GQA_DTYPE_*` value of this type.
    const DTYPE: i32;
}
impl Element for f32 {
    const DTYPE: i32 = ffi::GQA_DTYPE_F32;
}
impl Element for F16 {
    const DTYPE: i32 = ffi::GQA_DTYPE_F16;
}
impl Element for Bf16 {
    const DTYPE: i32 = ffi::GQA_DTYPE_BF16;
}

/// A failed call: libgqa's status (or `INVALID_ARGUMENT` for a slice of the wrong length,
/// caught here) and the sentence that names the parameter and its value.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Error {
    pub status: i32,
    pub message: String,
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", status_string(self.status), self.message)
    }
}

impl std::error::Error for Error {}

fn c_text(text: *const std::ffi::c_char) -> String {
    if text.is_null() {
        return String::new();
    }
    // SAFETY: libgqa returns NUL-terminated strings that stay valid until this thread's next call.
    unsafe { CStr::from_ptr(text) }.to_string_lossy().into_owned()
}

/// `gqa_status_string`: the name of a status.
pub fn status_string(status: i32) -> String {
    // SAFETY: takes any value, never returns NULL.
    c_text(unsafe { ffi::gqa_status_string(status) })
}

fn check(status: i32) -> Result<(), Error> {
    if status == ffi::GQA_STATUS_OK {
        return Ok(());
    }
    // SAFETY: read right after the failed call, on the same thread.
    Err(Error { status, message: c_text(unsafe { ffi::gqa_last_error() }) })
}

fn bad_argument(message: String) -> Error {
    Error { status: ffi::GQA_STATUS_INVALID_ARGUMENT, message }
}

/// The library's version string, e.g. "0.2.0".
pub fn version() -> String {
    // SAFETY: no arguments; returns a static string.
    c_text(unsafe { ffi::gqa_version_string() })
}

/// Err when the loaded libgqa speaks another ABI than these bindings were written for.
pub fn check_abi() -> Result<(), Error> {
    // SAFETY: no arguments.
    let abi = unsafe { ffi::gqa_abi_version() };
    if abi == ffi::GQA_ABI_VERSION {
        Ok(())
    } else {
        Err(Error {
            status: ffi::GQA_STATUS_VERSION_MISMATCH,
            message: format!("libgqa ABI version is {abi}, these bindings need {}", ffi::GQA_ABI_VERSION),
        })
    }
}

/// The attention variants of gqa.h (libgqa 0.2), the same for prefill and decode. The default
/// is plain attention.
#[derive(Clone, Copy, Debug)]
pub struct Variants<'a> {
    /// The query at position i sees keys i - window.0 ..= i + window.1 (-1: unbounded on that
    /// side), FlashAttention's meaning; onnxruntime's local_window_size is window.0 + 1.
    pub window: (i32, i32),
    /// > 0: every scaled logit s becomes softcap * tanh(s / softcap).
    pub softcap: f32,
    /// One logit per query head that joins the softmax denominator only.
    pub sinks: Option<&'a [f32]>,
}

impl Default for Variants<'_> {
    fn default() -> Self {
        Variants { window: (-1, -1), softcap: 0.0, sinks: None }
    }
}

/// A config of this binding's size, filled with libgqa's defaults by its sized initializer.
fn sized_config<C>(init: unsafe fn(*mut C, u32) -> ffi::gqa_status) -> Result<C, Error> {
    let mut config = std::mem::MaybeUninit::<C>::uninit();
    // SAFETY: the sized initializer fills all size_of::<C>() bytes of the struct, or fails and
    // fills none (then it is not read).
    unsafe {
        check(init(config.as_mut_ptr(), std::mem::size_of::<C>() as u32))?;
        Ok(config.assume_init())
    }
}

/// gqa.h's attention calls: (out, q, k, v, k_cache, v_cache, config, stream) -> status.
type AttentionFn<C> = unsafe fn(
    *mut c_void,
    *const c_void,
    *const c_void,
    *const c_void,
    *mut c_void,
    *mut c_void,
    *const C,
    *mut c_void,
) -> ffi::gqa_status;

/// Runs an attention call on the CPU (no stream). The callers have checked every slice
/// against the shape in `config` (or the shape has a non-positive dim, which libgqa rejects
/// before it touches memory), and whatever `config` points to outlives the call.
fn attend<T: Element, C>(
    call: AttentionFn<C>,
    out: &mut [T],
    q: &[T],
    k: &[T],
    v: &[T],
    (k_cache, v_cache): (*mut c_void, *mut c_void),
    config: &C,
) -> Result<(), Error> {
    // SAFETY: as said above; libgqa validates the rest before it writes anything.
    check(unsafe {
        call(
            out.as_mut_ptr() as *mut c_void,
            q.as_ptr() as *const c_void,
            k.as_ptr() as *const c_void,
            v.as_ptr() as *const c_void,
            k_cache,
            v_cache,
            config,
            ptr::null_mut(),
        )
    })
}

/// A cache slice as libgqa's pointer.
fn cache_ptr<T>(cache: &mut [T]) -> *mut c_void {
    cache.as_mut_ptr() as *mut c_void
}

/// Fills the variant fields of a prefill or decode config (the same names in both).
macro_rules! set_variants {
    ($config:ident, $v:expr, $lse:expr, $num_q_heads:expr, $lse_len:expr) => {{
        $config.window_left = $v.window.0;
        $config.window_right = $v.window.1;
        $config.softcap = $v.softcap;
        if let Some(sinks) = $v.sinks {
            expect_len("sinks", sinks.len(), elements(&[$num_q_heads]))?;
            $config.sinks = sinks.as_ptr();
        }
        if let Some(lse) = $lse {
            expect_len("lse", lse.len(), $lse_len)?;
            $config.lse = lse.as_mut_ptr();
        }
    }};
}

/// Shape and options of a prefill call (see `gqa_prefill_config` in gqa.h).
#[derive(Clone, Copy, Debug)]
pub struct PrefillParams<'a> {
    pub batch_size: i32,
    pub seq_len: i32,
    pub num_q_heads: i32,
    pub num_kv_heads: i32,
    pub head_dim: i32,
    /// Cache capacity in tokens; ignored without caches.
    pub max_seq_len: i32,
    pub start_pos: i32,
    pub causal: bool,
    /// 0 means 1/sqrt(head_dim).
    pub scale: f32,
    pub variants: Variants<'a>,
}

impl Default for PrefillParams<'_> {
    fn default() -> Self {
        PrefillParams {
            batch_size: 1,
            seq_len: 1,
            num_q_heads: 1,
            num_kv_heads: 1,
            head_dim: 64,
            max_seq_len: 0,
            start_pos: 0,
            causal: true,
            scale: 0.0,
            variants: Variants::default(),
        }
    }
}

/// Shape and options of a decode call (see `gqa_decode_config` in gqa.h).
#[derive(Clone, Copy, Debug)]
pub struct DecodeParams<'a> {
    pub batch_size: i32,
    pub num_q_heads: i32,
    pub num_kv_heads: i32,
    pub head_dim: i32,
    pub max_seq_len: i32,
    /// Tokens already cached, for every sequence ...
    pub cache_len: i32,
    /// ... or one per sequence (`batch_size` values) when given.
    pub cache_lens: Option<&'a [i32]>,
    /// 0 means 1/sqrt(head_dim).
    pub scale: f32,
    pub variants: Variants<'a>,
}

impl Default for DecodeParams<'_> {
    fn default() -> Self {
        DecodeParams {
            batch_size: 1,
            num_q_heads: 1,
            num_kv_heads: 1,
            head_dim: 64,
            max_seq_len: 1,
            cache_len: 0,
            cache_lens: None,
            scale: 0.0,
            variants: Variants::default(),
        }
    }
}

/// Product of the dims as an element count; None when a dim is not positive (libgqa then
/// rejects the call before reading anything) or the product overflows.
fn elements(dims: &[i32]) -> Option<usize> {
    dims.iter().try_fold(1usize, |acc, &d| {
        if d <= 0 {
            None
        } else {
            acc.checked_mul(d as usize)
        }
    })
}

fn expect_len(name: &str, len: usize, want: Option<usize>) -> Result<(), Error> {
    match want {
        Some(w) if w != len => Err(bad_argument(format!("{name} has {len} elements, the shape needs {w}"))),
        _ => Ok(()),
    }
}

/// Prefill on the CPU: `q`, `out` are [batch, seq_len, num_q_heads, head_dim]; `k`, `v` are
/// [batch, seq_len, num_kv_heads, head_dim]; `caches` (k_cache, v_cache), when given, are
/// [batch, max_seq_len, num_kv_heads, head_dim] and receive k, v at [start_pos, start_pos+seq_len).
pub fn prefill<T: Element>(
    out: &mut [T],
    q: &[T],
    k: &[T],
    v: &[T],
    caches: Option<(&mut [T], &mut [T])>,
    p: &PrefillParams<'_>,
) -> Result<(), Error> {
    prefill_with_lse(out, None, q, k, v, caches, p)
}

/// [`prefill`] that also writes each row's log-sum-exp (natural log, sinks included) into
/// `lse` [batch, num_q_heads, seq_len] when given.
pub fn prefill_with_lse<T: Element>(
    out: &mut [T],
    lse: Option<&mut [f32]>,
    q: &[T],
    k: &[T],
    v: &[T],
    caches: Option<(&mut [T], &mut [T])>,
    p: &PrefillParams<'_>,
) -> Result<(), Error> {
    let q_len = elements(&[p.batch_size, p.seq_len, p.num_q_heads, p.head_dim]);
    let kv_len = elements(&[p.batch_size, p.seq_len, p.num_kv_heads, p.head_dim]);
    expect_len("out", out.len(), q_len)?;
    expect_len("q", q.len(), q_len)?;
    expect_len("k", k.len(), kv_len)?;
    expect_len("v", v.len(), kv_len)?;
    let (k_cache, v_cache) = match caches {
        Some((kc, vc)) => {
            let cache_len = elements(&[p.batch_size, p.max_seq_len, p.num_kv_heads, p.head_dim]);
            expect_len("k_cache", kc.len(), cache_len)?;
            expect_len("v_cache", vc.len(), cache_len)?;
            (cache_ptr(kc), cache_ptr(vc))
        }
        None => (ptr::null_mut(), ptr::null_mut()),
    };
    let mut config = sized_config(ffi::gqa_prefill_config_init_sized)?;
    config.dtype = T::DTYPE;
    config.device = ffi::GQA_DEVICE_CPU;
    config.batch_size = p.batch_size;
    config.seq_len = p.seq_len;
    config.num_q_heads = p.num_q_heads;
    config.num_kv_heads = p.num_kv_heads;
    config.head_dim = p.head_dim;
    config.max_seq_len = p.max_seq_len;
    config.start_pos = p.start_pos;
    config.causal = p.causal as i32;
    config.scale = p.scale;
    set_variants!(config, p.variants, lse, p.num_q_heads, elements(&[p.batch_size, p.num_q_heads, p.seq_len]));
    attend(ffi::gqa_attention_prefill, out, q, k, v, (k_cache, v_cache), &config)
}

/// Decode on the CPU: one new token per sequence. `q`, `out` are [batch, 1, num_q_heads,
/// head_dim]; `k`, `v` are [batch, 1, num_kv_heads, head_dim], written at cache position
/// cache_len (or cache_lens[b]); the caches are [batch, max_seq_len, num_kv_heads, head_dim].
pub fn decode<T: Element>(
    out: &mut [T],
    q: &[T],
    k: &[T],
    v: &[T],
    k_cache: &mut [T],
    v_cache: &mut [T],
    p: &DecodeParams<'_>,
) -> Result<(), Error> {
    decode_with_lse(out, None, q, k, v, k_cache, v_cache, p)
}

/// [`decode`] that also writes each row's log-sum-exp into `lse` [batch, num_q_heads].
#[allow(clippy::too_many_arguments)]
pub fn decode_with_lse<T: Element>(
    out: &mut [T],
    lse: Option<&mut [f32]>,
    q: &[T],
    k: &[T],
    v: &[T],
    k_cache: &mut [T],
    v_cache: &mut [T],
    p: &DecodeParams<'_>,
) -> Result<(), Error> {
    let q_len = elements(&[p.batch_size, p.num_q_heads, p.head_dim]);
    let kv_len = elements(&[p.batch_size, p.num_kv_heads, p.head_dim]);
    let cache_len = elements(&[p.batch_size, p.max_seq_len, p.num_kv_heads, p.head_dim]);
    expect_len("out", out.len(), q_len)?;
    expect_len("q", q.len(), q_len)?;
    expect_len("k", k.len(), kv_len)?;
    expect_len("v", v.len(), kv_len)?;
    expect_len("k_cache", k_cache.len(), cache_len)?;
    expect_len("v_cache", v_cache.len(), cache_len)?;
    if let Some(lens) = p.cache_lens {
        expect_len("cache_lens", lens.len(), elements(&[p.batch_size]))?;
    }
    let mut config = sized_config(ffi::gqa_decode_config_init_sized)?;
    config.dtype = T::DTYPE;
    config.device = ffi::GQA_DEVICE_CPU;
    config.batch_size = p.batch_size;
    config.num_q_heads = p.num_q_heads;
    config.num_kv_heads = p.num_kv_heads;
    config.head_dim = p.head_dim;
    config.max_seq_len = p.max_seq_len;
    config.cache_len = p.cache_len;
    config.scale = p.scale;
    config.cache_lens = p.cache_lens.map_or(ptr::null(), |lens| lens.as_ptr());
    set_variants!(config, p.variants, lse, p.num_q_heads, elements(&[p.batch_size, p.num_q_heads]));
    // cache_lens (when given) holds batch_size values (checked above).
    attend(ffi::gqa_attention_decode, out, q, k, v, (cache_ptr(k_cache), cache_ptr(v_cache)), &config)
}

/// Shape of a [`merge_states`] call (see `gqa_merge_config` in gqa.h).
#[derive(Clone, Copy, Debug, Default)]
pub struct MergeParams<'a> {
    pub num_states: i32,
    pub batch_size: i32,
    pub seq_len: i32,
    pub num_heads: i32,
    pub head_dim: i32,
    /// [num_heads] sink logits, added here once (compute the partials without them).
    pub sinks: Option<&'a [f32]>,
}

/// Merges `num_states` partial attentions of the same queries over disjoint key sets into the
/// attention over their union: `states` [states, batch, seq_len, heads, head_dim] with `lses`
/// [states, batch, heads, seq_len] (from [`prefill_with_lse`] / [`decode_with_lse`]); `out`
/// [batch, seq_len, heads, head_dim], `lse_out` [batch, heads, seq_len] when given.
pub fn merge_states<T: Element>(
    out: &mut [T],
    lse_out: Option<&mut [f32]>,
    states: &[T],
    lses: &[f32],
    p: &MergeParams<'_>,
) -> Result<(), Error> {
    let rows = elements(&[p.batch_size, p.seq_len, p.num_heads]);
    let row_elements = elements(&[p.batch_size, p.seq_len, p.num_heads, p.head_dim]);
    expect_len("out", out.len(), row_elements)?;
    expect_len("states", states.len(), row_elements.and_then(|n| n.checked_mul(p.num_states.max(0) as usize)))?;
    expect_len("lses", lses.len(), rows.and_then(|n| n.checked_mul(p.num_states.max(0) as usize)))?;
    let mut config = sized_config(ffi::gqa_merge_config_init_sized)?;
    config.dtype = T::DTYPE;
    config.device = ffi::GQA_DEVICE_CPU;
    config.num_states = p.num_states;
    config.batch_size = p.batch_size;
    config.seq_len = p.seq_len;
    config.num_heads = p.num_heads;
    config.head_dim = p.head_dim;
    if let Some(sinks) = p.sinks {
        expect_len("sinks", sinks.len(), elements(&[p.num_heads]))?;
        config.sinks = sinks.as_ptr();
    }
    let lse_ptr = match lse_out {
        Some(lse) => {
            expect_len("lse_out", lse.len(), rows)?;
            lse.as_mut_ptr()
        }
        None => ptr::null_mut(),
    };
    // SAFETY: every slice has the length its shape needs (checked above), or libgqa rejects the
    // shape before it touches memory.
    check(unsafe {
        ffi::gqa_merge_states(
            out.as_mut_ptr() as *mut c_void,
            lse_ptr,
            states.as_ptr() as *const c_void,
            lses.as_ptr(),
            &config,
            ptr::null_mut(),
        )
    })
}

/// Shape and metadata of a batched call (see `gqa_batch_config` in gqa.h): sequence b owns
/// rows `q_indptr[b]..q_indptr[b+1]` of q, k, v, out and has `kv_lens[b]` tokens cached;
/// position t of sequence b lives in page `page_table[b * max_pages_per_seq + t / page_size]`,
/// slot `t % page_size`.
#[derive(Clone, Copy, Debug)]
pub struct BatchParams<'a> {
    pub num_q_heads: i32,
    pub num_kv_heads: i32,
    pub head_dim: i32,
    pub page_size: i32,
    pub num_pages: i32,
    /// Columns of `page_table`.
    pub max_pages_per_seq: i32,
    pub q_indptr: &'a [i32],
    pub kv_lens: &'a [i32],
    pub page_table: &'a [i32],
    /// Causal, aligned bottom-right (the default).
    pub causal: bool,
    /// 0 means 1/sqrt(head_dim).
    pub scale: f32,
}

/// The batched op on the CPU: `q`, `out` are [total_q, num_q_heads, head_dim]; `k`, `v` are
/// [total_q, num_kv_heads, head_dim], written at positions kv_lens[b].. of their sequence; the
/// caches are [num_pages, page_size, num_kv_heads, head_dim]. total_q is `q_indptr[batch]`.
pub fn batch_attention<T: Element>(
    out: &mut [T],
    q: &[T],
    k: &[T],
    v: &[T],
    k_cache: &mut [T],
    v_cache: &mut [T],
    p: &BatchParams<'_>,
) -> Result<(), Error> {
    let batch = p.kv_lens.len();
    if batch == 0 || p.q_indptr.len() != batch + 1 {
        return Err(bad_argument(format!(
            "q_indptr has {} values and kv_lens {}; want batch + 1 and batch (batch >= 1)",
            p.q_indptr.len(),
            batch
        )));
    }
    let batch_i32 = i32::try_from(batch).map_err(|_| bad_argument(format!("batch ({batch}) does not fit in int32")))?;
    expect_len("page_table", p.page_table.len(), elements(&[batch_i32, p.max_pages_per_seq]))?;
    let total_q = p.q_indptr[batch];
    // total_q 0 is a valid call that reads and writes nothing: no length to check then.
    let q_len = if total_q == 0 { Some(0) } else { elements(&[total_q, p.num_q_heads, p.head_dim]) };
    let kv_len = if total_q == 0 { Some(0) } else { elements(&[total_q, p.num_kv_heads, p.head_dim]) };
    let cache_len = elements(&[p.num_pages, p.page_size, p.num_kv_heads, p.head_dim]);
    expect_len("out", out.len(), q_len)?;
    expect_len("q", q.len(), q_len)?;
    expect_len("k", k.len(), kv_len)?;
    expect_len("v", v.len(), kv_len)?;
    expect_len("k_cache", k_cache.len(), cache_len)?;
    expect_len("v_cache", v_cache.len(), cache_len)?;
    let mut config = sized_config(ffi::gqa_batch_config_init_sized)?;
    config.dtype = T::DTYPE;
    config.device = ffi::GQA_DEVICE_CPU;
    config.batch_size = batch_i32;
    config.total_q = total_q;
    config.num_q_heads = p.num_q_heads;
    config.num_kv_heads = p.num_kv_heads;
    config.head_dim = p.head_dim;
    config.page_size = p.page_size;
    config.num_pages = p.num_pages;
    config.max_pages_per_seq = p.max_pages_per_seq;
    config.causal = p.causal as i32;
    config.scale = p.scale;
    config.q_indptr = p.q_indptr.as_ptr();
    config.kv_lens = p.kv_lens.as_ptr();
    config.page_table = p.page_table.as_ptr();
    // The metadata slices outlive the call; libgqa validates their values before it touches memory.
    attend(ffi::gqa_attention_batch, out, q, k, v, (cache_ptr(k_cache), cache_ptr(v_cache)), &config)
}
