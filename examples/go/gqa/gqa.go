// Package gqa calls libgqa (Grouped-Query Attention) through cgo, against include/gqa.h itself.
//
// Tensors are BSHD row-major slices on the CPU. Each call checks that every slice is exactly as
// long as its shape needs before libgqa sees a pointer; libgqa validates the rest and answers
// with a status and a sentence naming the parameter, returned as *Error.
//
// Build: `#cgo pkg-config: gqa` finds the installed header and library: PKG_CONFIG_PATH=PREFIX/lib/pkgconfig
// after `cmake --install` (then libgqa.so must be on the loader's path at run time, LD_LIBRARY_PATH=PREFIX/lib),
// or PKG_CONFIG_PATH=$(python -m gqa --pkg-config-path) for a pip install, whose gqa.pc adds an rpath.
//
//	import "github.com/libgqa/libgqa/examples/go/gqa"   // module github.com/libgqa/libgqa/examples/go
package gqa

/*
#cgo pkg-config: gqa
#include <stdlib.h>
#include <gqa.h>
*/
import "C"

import (
	"fmt"
	"runtime"
	"unsafe"
)

// Status codes of gqa.h, every one of them.
const (
	StatusOK                = int(C.GQA_STATUS_OK)
	StatusInvalidArgument   = int(C.GQA_STATUS_INVALID_ARGUMENT)
	StatusCacheOverflow     = int(C.GQA_STATUS_CACHE_OVERFLOW)
	StatusUnsupported       = int(C.GQA_STATUS_UNSUPPORTED)
	StatusDeviceUnavailable = int(C.GQA_STATUS_DEVICE_UNAVAILABLE)
	StatusCUDAError         = int(C.GQA_STATUS_CUDA_ERROR)
	StatusVersionMismatch   = int(C.GQA_STATUS_VERSION_MISMATCH)
	StatusOutOfMemory       = int(C.GQA_STATUS_OUT_OF_MEMORY)
	StatusInternalError     = int(C.GQA_STATUS_INTERNAL_ERROR)
)

// ABIVersion is the GQA_ABI_VERSION these bindings were compiled against.
const ABIVersion = int(C.GQA_ABI_VERSION)

// Error is a failed call: the status and the sentence that names the parameter and its value.
type Error struct {
	Status  int
	Message string
}

func (e *Error) Error() string {
	return fmt.Sprintf("%s: %s", StatusString(e.Status), e.Message)
}

// StatusString is gqa_status_string: the name of a status.
func StatusString(status int) string {
	return C.GoString(C.gqa_status_string(C.gqa_status(status)))
}

// Version is the library's version string.
func Version() string { return C.GoString(C.gqa_version_string()) }

// CheckABI fails when the loaded libgqa speaks another ABI than the header compiled in here.
func CheckABI() error {
	if abi := int(C.gqa_abi_version()); abi != ABIVersion {
		return &Error{StatusVersionMismatch, fmt.Sprintf("libgqa ABI version is %d, these bindings need %d", abi, ABIVersion)}
	}
	return nil
}

func check(status C.gqa_status) error {
	if status == C.GQA_STATUS_OK {
		return nil
	}
	// gqa_last_error is thread-local: callers hold runtime.LockOSThread across the call and this.
	return &Error{int(status), C.GoString(C.gqa_last_error())}
}

// Element is a storage type libgqa accepts on the CPU.
type Element interface{ float32 | F16 | BF16 }

func dtypeOf[T Element]() C.int32_t {
	var zero T
	switch any(zero).(type) {
	case F16:
		return C.GQA_DTYPE_F16
	case BF16:
		return C.GQA_DTYPE_BF16
	}
	return C.GQA_DTYPE_F32
}

// elements is the product of dims, or -1 when a dim is not positive (libgqa then rejects the
// call before touching memory) or the product overflows.
func elements(dims ...int) int {
	n := 1
	for _, d := range dims {
		if d <= 0 || n > int(^uint(0)>>1)/d {
			return -1
		}
		n *= d
	}
	return n
}

func expectLen(name string, got, want int) error {
	if want >= 0 && got != want {
		return &Error{StatusInvalidArgument, fmt.Sprintf("%s has %d elements, the shape needs %d", name, got, want)}
	}
	return nil
}

// length is a slice's length and the length its shape needs.
type length struct {
	name      string
	got, want int
}

// expectLens fails naming the first slice whose length is not the one its shape needs.
func expectLens(lengths ...length) error {
	for _, l := range lengths {
		if err := expectLen(l.name, l.got, l.want); err != nil {
			return err
		}
	}
	return nil
}

// tensors are the six tensor arguments of gqa.h's attention calls.
type tensors[T Element] struct{ out, q, k, v, kCache, vCache []T }

// check: out and q hold qLen elements, k and v kvLen, each cache cacheLen.
func (t tensors[T]) check(qLen, kvLen, cacheLen int) error {
	return expectLens(length{"out", len(t.out), qLen}, length{"q", len(t.q), qLen}, length{"k", len(t.k), kvLen},
		length{"v", len(t.v), kvLen}, length{"k_cache", len(t.kCache), cacheLen}, length{"v_cache", len(t.vCache), cacheLen})
}

func pointer[T Element](s []T) unsafe.Pointer {
	if len(s) == 0 {
		return nil // libgqa rejects a NULL tensor with a message naming it
	}
	return unsafe.Pointer(&s[0])
}

// Window limits the keys the query at position i sees to i-Left .. i+Right (-1: unbounded on
// that side), FlashAttention's meaning; onnxruntime's local_window_size is Left+1.
type Window struct{ Left, Right int }

// Variants are the options gqa.h added in libgqa 0.2, the same for Prefill and Decode. The zero
// value is plain attention.
type Variants struct {
	Window  *Window   // nil: every key (causality still applies)
	Softcap float32   // > 0: every scaled logit s becomes Softcap*tanh(s/Softcap)
	Sinks   []float32 // nil, or one logit per query head that joins the softmax denominator only
	// LSE, when not nil, receives each row's log-sum-exp (natural log, sinks included):
	// [batch, num_q_heads, seq_len] for Prefill, [batch, num_q_heads] for Decode.
	LSE []float32
}

// cCopy copies xs to C memory, since cgo forbids handing C a struct that holds a Go pointer;
// nil for a nil slice. The caller frees it.
func cCopy[E float32 | int32](xs []E) unsafe.Pointer {
	if xs == nil {
		return nil
	}
	var zero E
	p := C.malloc(C.size_t(unsafe.Sizeof(zero)) * C.size_t(len(xs)+1)) // +1: never malloc(0)
	copy(unsafe.Slice((*E)(p), len(xs)), xs)
	return p
}

func cFloats(xs []float32) *C.float { return (*C.float)(cCopy(xs)) }
func cInt32s(xs []int32) *C.int32_t { return (*C.int32_t)(cCopy(xs)) }

// apply checks the slices against the shape, fills the variant fields of a config and returns
// what to do after the call (copy the lse back, free the C copies).
func (v Variants) apply(numQHeads, lseLen int, windowLeft, windowRight *C.int32_t, softcap *C.float,
	sinks, lse **C.float) (func(), error) {
	if v.Sinks != nil {
		if err := expectLen("sinks", len(v.Sinks), numQHeads); err != nil {
			return nil, err
		}
	}
	if v.LSE != nil {
		if err := expectLen("lse", len(v.LSE), lseLen); err != nil {
			return nil, err
		}
	}
	if v.Window != nil {
		*windowLeft, *windowRight = C.int32_t(v.Window.Left), C.int32_t(v.Window.Right)
	}
	*softcap = C.float(v.Softcap)
	*sinks = cFloats(v.Sinks)
	*lse = cFloats(v.LSE)
	cSinks, cLSE := *sinks, *lse
	return func() {
		if cLSE != nil {
			copy(v.LSE, unsafe.Slice((*float32)(unsafe.Pointer(cLSE)), len(v.LSE)))
		}
		C.free(unsafe.Pointer(cSinks))
		C.free(unsafe.Pointer(cLSE))
	}, nil
}

// PrefillParams is the shape and options of a prefill call (gqa_prefill_config).
type PrefillParams struct {
	BatchSize, SeqLen, NumQHeads, NumKVHeads, HeadDim int
	MaxSeqLen                                         int // cache capacity in tokens; ignored without caches
	StartPos                                          int
	NonCausal                                         bool    // false: causal attention (the default)
	Scale                                             float32 // 0 means 1/sqrt(HeadDim)
	Variants
}

// Prefill runs prefill on the CPU. q, out: [batch, seq_len, num_q_heads, head_dim]; k, v:
// [batch, seq_len, num_kv_heads, head_dim]; kCache, vCache (both nil for none):
// [batch, max_seq_len, num_kv_heads, head_dim], receiving k, v at [StartPos, StartPos+SeqLen).
func Prefill[T Element](out, q, k, v, kCache, vCache []T, p PrefillParams) error {
	cacheLen := 0 // no caches
	if kCache != nil || vCache != nil {
		cacheLen = elements(p.BatchSize, p.MaxSeqLen, p.NumKVHeads, p.HeadDim)
	}
	if err := (tensors[T]{out, q, k, v, kCache, vCache}).check(elements(p.BatchSize, p.SeqLen, p.NumQHeads, p.HeadDim),
		elements(p.BatchSize, p.SeqLen, p.NumKVHeads, p.HeadDim), cacheLen); err != nil {
		return err
	}
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	var config C.gqa_prefill_config
	if err := check(C.gqa_prefill_config_init_sized(&config, C.uint32_t(unsafe.Sizeof(config)))); err != nil {
		return err
	}
	config.dtype = dtypeOf[T]()
	config.device = C.GQA_DEVICE_CPU
	config.batch_size = C.int32_t(p.BatchSize)
	config.seq_len = C.int32_t(p.SeqLen)
	config.num_q_heads = C.int32_t(p.NumQHeads)
	config.num_kv_heads = C.int32_t(p.NumKVHeads)
	config.head_dim = C.int32_t(p.HeadDim)
	config.max_seq_len = C.int32_t(p.MaxSeqLen)
	config.start_pos = C.int32_t(p.StartPos)
	config.causal = 1
	if p.NonCausal {
		config.causal = 0
	}
	config.scale = C.float(p.Scale)
	done, err := p.Variants.apply(p.NumQHeads, elements(p.BatchSize, p.NumQHeads, p.SeqLen), &config.window_left,
		&config.window_right, &config.softcap, (**C.float)(unsafe.Pointer(&config.sinks)), &config.lse)
	if err != nil {
		return err
	}
	defer done()
	return check(C.gqa_attention_prefill(pointer(out), pointer(q), pointer(k), pointer(v),
		pointer(kCache), pointer(vCache), &config, nil))
}

// DecodeParams is the shape and options of a decode call (gqa_decode_config).
type DecodeParams struct {
	BatchSize, NumQHeads, NumKVHeads, HeadDim int
	MaxSeqLen                                 int
	CacheLen                                  int     // tokens already cached, for every sequence ...
	CacheLens                                 []int32 // ... or one per sequence when not nil
	Scale                                     float32 // 0 means 1/sqrt(HeadDim)
	Variants
}

// Decode runs one decode step on the CPU. q, out: [batch, 1, num_q_heads, head_dim]; k, v:
// [batch, 1, num_kv_heads, head_dim], written at cache position CacheLen (or CacheLens[b]);
// kCache, vCache: [batch, max_seq_len, num_kv_heads, head_dim].
func Decode[T Element](out, q, k, v, kCache, vCache []T, p DecodeParams) error {
	if err := (tensors[T]{out, q, k, v, kCache, vCache}).check(elements(p.BatchSize, p.NumQHeads, p.HeadDim),
		elements(p.BatchSize, p.NumKVHeads, p.HeadDim), elements(p.BatchSize, p.MaxSeqLen, p.NumKVHeads, p.HeadDim)); err != nil {
		return err
	}
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	var config C.gqa_decode_config
	if err := check(C.gqa_decode_config_init_sized(&config, C.uint32_t(unsafe.Sizeof(config)))); err != nil {
		return err
	}
	config.dtype = dtypeOf[T]()
	config.device = C.GQA_DEVICE_CPU
	config.batch_size = C.int32_t(p.BatchSize)
	config.num_q_heads = C.int32_t(p.NumQHeads)
	config.num_kv_heads = C.int32_t(p.NumKVHeads)
	config.head_dim = C.int32_t(p.HeadDim)
	config.max_seq_len = C.int32_t(p.MaxSeqLen)
	config.cache_len = C.int32_t(p.CacheLen)
	config.scale = C.float(p.Scale)
	if p.CacheLens != nil {
		if err := expectLen("cache_lens", len(p.CacheLens), elements(p.BatchSize)); err != nil {
			return err
		}
		config.cache_lens = cInt32s(p.CacheLens)
		defer C.free(unsafe.Pointer(config.cache_lens))
	}
	done, err := p.Variants.apply(p.NumQHeads, elements(p.BatchSize, p.NumQHeads), &config.window_left,
		&config.window_right, &config.softcap, (**C.float)(unsafe.Pointer(&config.sinks)), &config.lse)
	if err != nil {
		return err
	}
	defer done()
	return check(C.gqa_attention_decode(pointer(out), pointer(q), pointer(k), pointer(v),
		pointer(kCache), pointer(vCache), &config, nil))
}

// MergeParams is the shape of a MergeStates call (gqa_merge_config).
type MergeParams struct {
	NumStates, BatchSize, SeqLen, NumHeads, HeadDim int
	Sinks                                           []float32 // nil, or [NumHeads] logits added here once
}

// MergeStates merges NumStates partial attentions of the same queries over disjoint key sets
// (each with its LSE from Prefill or Decode) into the attention over their union. states:
// [states, batch, seq_len, heads, head_dim]; lses: [states, batch, heads, seq_len]; out:
// [batch, seq_len, heads, head_dim]; lseOut (nil for none): [batch, heads, seq_len].
func MergeStates[T Element](out []T, lseOut []float32, states []T, lses []float32, p MergeParams) error {
	rows := elements(p.BatchSize, p.SeqLen, p.NumHeads)
	if err := expectLens(length{"out", len(out), elements(rows, p.HeadDim)},
		length{"states", len(states), elements(p.NumStates, rows, p.HeadDim)},
		length{"lses", len(lses), elements(p.NumStates, rows)}); err != nil {
		return err
	}
	if lseOut != nil {
		if err := expectLen("lse_out", len(lseOut), rows); err != nil {
			return err
		}
	}
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	var config C.gqa_merge_config
	if err := check(C.gqa_merge_config_init_sized(&config, C.uint32_t(unsafe.Sizeof(config)))); err != nil {
		return err
	}
	config.dtype = dtypeOf[T]()
	config.device = C.GQA_DEVICE_CPU
	config.num_states = C.int32_t(p.NumStates)
	config.batch_size = C.int32_t(p.BatchSize)
	config.seq_len = C.int32_t(p.SeqLen)
	config.num_heads = C.int32_t(p.NumHeads)
	config.head_dim = C.int32_t(p.HeadDim)
	if p.Sinks != nil {
		if err := expectLen("sinks", len(p.Sinks), p.NumHeads); err != nil {
			return err
		}
		config.sinks = cFloats(p.Sinks)
		defer C.free(unsafe.Pointer(config.sinks))
	}
	return check(C.gqa_merge_states(pointer(out), (*C.float)(pointer(lseOut)), pointer(states),
		(*C.float)(pointer(lses)), &config, nil))
}

// BatchParams is the shape and metadata of a batched call (gqa_batch_config): sequence b owns
// rows QIndptr[b] .. QIndptr[b+1]-1 of q, k, v, out and has KVLens[b] tokens cached; position t
// of sequence b lives in page PageTable[b*MaxPagesPerSeq + t/PageSize], slot t%PageSize.
type BatchParams struct {
	NumQHeads, NumKVHeads, HeadDim int
	PageSize, NumPages             int
	MaxPagesPerSeq                 int     // columns of PageTable
	QIndptr                        []int32 // [batch + 1]
	KVLens                         []int32 // [batch]
	PageTable                      []int32 // [batch * MaxPagesPerSeq]
	NonCausal                      bool    // false: causal, bottom-right aligned (the default)
	Scale                          float32 // 0 means 1/sqrt(HeadDim)
}

// BatchAttention runs the batched op on the CPU: q, out [total_q, num_q_heads, head_dim]; k, v
// [total_q, num_kv_heads, head_dim], written at positions KVLens[b].. of their sequence; kCache,
// vCache [num_pages, page_size, num_kv_heads, head_dim]. total_q is QIndptr[batch].
func BatchAttention[T Element](out, q, k, v, kCache, vCache []T, p BatchParams) error {
	batch := len(p.KVLens)
	if batch == 0 || len(p.QIndptr) != batch+1 {
		return &Error{StatusInvalidArgument, fmt.Sprintf("QIndptr has %d values and KVLens %d; want batch+1 and batch (batch >= 1)",
			len(p.QIndptr), batch)}
	}
	if err := expectLen("page_table", len(p.PageTable), elements(batch, p.MaxPagesPerSeq)); err != nil {
		return err
	}
	totalQ := int(p.QIndptr[batch])
	if err := (tensors[T]{out, q, k, v, kCache, vCache}).check(elements(totalQ, p.NumQHeads, p.HeadDim),
		elements(totalQ, p.NumKVHeads, p.HeadDim), elements(p.NumPages, p.PageSize, p.NumKVHeads, p.HeadDim)); err != nil {
		return err
	}
	var config C.gqa_batch_config
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	if err := check(C.gqa_batch_config_init_sized(&config, C.uint32_t(unsafe.Sizeof(config)))); err != nil {
		return err
	}
	config.dtype = dtypeOf[T]()
	config.device = C.GQA_DEVICE_CPU
	config.batch_size = C.int32_t(batch)
	config.total_q = C.int32_t(totalQ)
	config.num_q_heads = C.int32_t(p.NumQHeads)
	config.num_kv_heads = C.int32_t(p.NumKVHeads)
	config.head_dim = C.int32_t(p.HeadDim)
	config.page_size = C.int32_t(p.PageSize)
	config.num_pages = C.int32_t(p.NumPages)
	config.max_pages_per_seq = C.int32_t(p.MaxPagesPerSeq)
	if p.NonCausal {
		config.causal = 0
	}
	config.scale = C.float(p.Scale)
	config.q_indptr, config.kv_lens, config.page_table = cInt32s(p.QIndptr), cInt32s(p.KVLens), cInt32s(p.PageTable)
	defer C.free(unsafe.Pointer(config.q_indptr))
	defer C.free(unsafe.Pointer(config.kv_lens))
	defer C.free(unsafe.Pointer(config.page_table))
	return check(C.gqa_attention_batch(pointer(out), pointer(q), pointer(k), pointer(v),
		pointer(kCache), pointer(vCache), &config, nil))
}
