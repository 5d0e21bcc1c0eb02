package gqa

import (
	"math"
	"strings"
	"testing"
)

const (
	batch    = 2
	qHeads   = 6
	kvHeads  = 2
	headDim  = 17
	maxSeq   = 40
	groupLen = qHeads / kvHeads
)

// storage bundles a dtype's conversions and the project's tolerance against float64.
type storage[T Element] struct {
	from      func(float32) T
	to        func(T) float32
	tolerance float64
}

var (
	f32Storage  = storage[float32]{func(x float32) float32 { return x }, func(x float32) float32 { return x }, 1e-4}
	f16Storage  = storage[F16]{F16FromFloat32, F16.Float32, 4e-3}
	bf16Storage = storage[BF16]{BF16FromFloat32, BF16.Float32, 3e-2}
)

// rng gives deterministic values in [-1, 1).
type rng uint64

func tensor[T Element](r *rng, s storage[T], n int) []T {
	out := make([]T, n)
	for i := range out {
		*r = *r*6364136223846793005 + 1442695040888963407
		out[i] = s.from(float32(float64(uint64(*r)>>11)/(1<<53)*2 - 1))
	}
	return out
}

func filled[T Element](s storage[T], n int, x float32) []T {
	out := make([]T, n)
	for i := range out {
		out[i] = s.from(x)
	}
	return out
}

func idx(b, s, h, seq, heads int) int { return ((b*seq+s)*heads + h) * headDim }

// step gives the tensors of an n-token step of every sequence: random q [batch, n, qHeads,
// headDim], k and v [batch, n, kvHeads, headDim], and out poisoned with NaN.
func step[T Element](r *rng, st storage[T], n int) (q, k, v, out []T) {
	q = tensor(r, st, batch*n*qHeads*headDim)
	k = tensor(r, st, batch*n*kvHeads*headDim)
	v = tensor(r, st, batch*n*kvHeads*headDim)
	return q, k, v, filled(st, len(q), float32(math.NaN()))
}

// writeCache copies new rows [batch, n, kvHeads, headDim] into a shadow cache at start[b].
func writeCache[T Element](cache, rows []T, n int, start []int) {
	row := kvHeads * headDim
	for b := 0; b < batch; b++ {
		for s := 0; s < n; s++ {
			copy(cache[idx(b, start[b]+s, 0, maxSeq, kvHeads):][:row], rows[idx(b, s, 0, n, kvHeads):][:row])
		}
	}
}

// worstError compares out with float64 attention where query row s of sequence b sees cache
// positions 0..last(b, s); NaN counts as infinitely wrong.
func worstError[T Element](st storage[T], q, out, kc, vc []T, n int, last func(b, s int) int) float64 {
	worst := 0.0
	scale := 1 / math.Sqrt(headDim)
	for b := 0; b < batch; b++ {
		for s := 0; s < n; s++ {
			for h := 0; h < qHeads; h++ {
				kvh, positions := h/groupLen, last(b, s)+1
				scores := make([]float64, positions)
				maxScore := math.Inf(-1)
				for t := range scores {
					dot := 0.0
					for d := 0; d < headDim; d++ {
						dot += float64(st.to(q[idx(b, s, h, n, qHeads)+d])) * float64(st.to(kc[idx(b, t, kvh, maxSeq, kvHeads)+d]))
					}
					scores[t] = dot * scale
					maxScore = math.Max(maxScore, scores[t])
				}
				total := 0.0
				for t := range scores {
					scores[t] = math.Exp(scores[t] - maxScore)
					total += scores[t]
				}
				for d := 0; d < headDim; d++ {
					expected := 0.0
					for t := range scores {
						expected += scores[t] / total * float64(st.to(vc[idx(b, t, kvh, maxSeq, kvHeads)+d]))
					}
					err := math.Abs(expected - float64(st.to(out[idx(b, s, h, n, qHeads)+d])))
					if math.IsNaN(err) {
						err = math.Inf(1)
					}
					worst = math.Max(worst, err)
				}
			}
		}
	}
	return worst
}

// equal compares element-wise; the NaN poison of unwritten positions equals itself.
func equal[T Element](a, b []T) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] && !(a[i] != a[i] && b[i] != b[i]) {
			return false
		}
	}
	return true
}

func prefillThenDecode[T Element](t *testing.T, st storage[T]) {
	if err := CheckABI(); err != nil {
		t.Fatal(err)
	}
	r := rng(7)
	cacheElems := batch * maxSeq * kvHeads * headDim
	nan := float32(math.NaN())
	kc, vc := filled(st, cacheElems, nan), filled(st, cacheElems, nan)
	shadowK, shadowV := append([]T(nil), kc...), append([]T(nil), vc...)

	// A 13-token prompt prefilled in two chunks: 8 tokens, then 5 at start_pos 8.
	for _, chunk := range [][2]int{{0, 8}, {8, 5}} {
		start, n := chunk[0], chunk[1]
		q, k, v, out := step(&r, st, n)
		p := PrefillParams{BatchSize: batch, SeqLen: n, NumQHeads: qHeads, NumKVHeads: kvHeads,
			HeadDim: headDim, MaxSeqLen: maxSeq, StartPos: start}
		if err := Prefill(out, q, k, v, kc, vc, p); err != nil {
			t.Fatal(err)
		}
		writeCache(shadowK, k, n, []int{start, start})
		writeCache(shadowV, v, n, []int{start, start})
		if !equal(kc, shadowK) || !equal(vc, shadowV) {
			t.Fatalf("prefill at %d wrote the cache wrongly", start)
		}
		if err := worstError(st, q, out, kc, vc, n, func(_, s int) int { return start + s }); err > st.tolerance {
			t.Fatalf("prefill chunk at %d: error %g > %g", start, err, st.tolerance)
		}
	}

	// Three decode steps for both sequences, then one with per-sequence lengths (16 and 9).
	for _, lens := range [][]int{{13, 13}, {14, 14}, {15, 15}, {16, 9}} {
		q, k, v, out := step(&r, st, 1)
		p := DecodeParams{BatchSize: batch, NumQHeads: qHeads, NumKVHeads: kvHeads, HeadDim: headDim,
			MaxSeqLen: maxSeq, CacheLen: lens[0]}
		if lens[0] != lens[1] {
			p.CacheLens = []int32{int32(lens[0]), int32(lens[1])}
		}
		if err := Decode(out, q, k, v, kc, vc, p); err != nil {
			t.Fatal(err)
		}
		writeCache(shadowK, k, 1, lens)
		writeCache(shadowV, v, 1, lens)
		if !equal(kc, shadowK) || !equal(vc, shadowV) {
			t.Fatalf("decode at %v wrote the cache wrongly", lens)
		}
		if err := worstError(st, q, out, kc, vc, 1, func(b, _ int) int { return lens[b] }); err > st.tolerance {
			t.Fatalf("decode at %v: error %g > %g", lens, err, st.tolerance)
		}
	}
}

func TestF32PrefillThenDecode(t *testing.T)  { prefillThenDecode(t, f32Storage) }
func TestF16PrefillThenDecode(t *testing.T)  { prefillThenDecode(t, f16Storage) }
func TestBF16PrefillThenDecode(t *testing.T) { prefillThenDecode(t, bf16Storage) }

func TestErrorsCarryStatusAndMessageAndWriteNothing(t *testing.T) {
	run := func(kv, cacheLen, qLen int) *Error {
		q, k, v := filled(f32Storage, qLen, 0.5), filled(f32Storage, kv*headDim, 0.25), filled(f32Storage, kv*headDim, 1)
		kc, vc := filled(f32Storage, maxSeq*kv*headDim, 7), filled(f32Storage, maxSeq*kv*headDim, 7)
		out := filled(f32Storage, qLen, 9)
		err := Decode(out, q, k, v, kc, vc, DecodeParams{BatchSize: 1, NumQHeads: qHeads, NumKVHeads: kv,
			HeadDim: headDim, MaxSeqLen: maxSeq, CacheLen: cacheLen})
		seven := filled(f32Storage, len(kc), 7)
		if !equal(out, filled(f32Storage, qLen, 9)) || !equal(kc, seven) || !equal(vc, seven) {
			t.Fatal("a rejected call wrote out or a cache")
		}
		e, ok := err.(*Error)
		if !ok {
			t.Fatalf("want *Error, got %v", err)
		}
		return e
	}
	full := qHeads * headDim
	if e := run(kvHeads, maxSeq, full); e.Status != StatusCacheOverflow || !strings.Contains(e.Message, "cache_len") {
		t.Fatalf("full cache: %v", e)
	}
	if e := run(4, 0, full); e.Status != StatusInvalidArgument || !strings.Contains(e.Message, "num_kv_heads") {
		t.Fatalf("6 query heads over 4 KV heads: %v", e)
	}
	if e := run(kvHeads, 0, full-1); e.Status != StatusInvalidArgument || !strings.HasPrefix(e.Message, "out has") {
		t.Fatalf("short q: %v", e)
	}
}

// Window{0, -1}: each query sees only its own key, so with a sink s_h its row is
// v_i * e^x / (e^x + e^s_h) (x its scaled logit) and its LSE log(e^x + e^s_h): exact, no reference.
func TestWindowZeroWithSinksAndLSE(t *testing.T) {
	const seq, heads, dim = 5, 2, 8
	r := rng(3)
	q, k, v := tensor(&r, f32Storage, seq*heads*dim), tensor(&r, f32Storage, seq*dim), tensor(&r, f32Storage, seq*dim)
	out, lse := make([]float32, seq*heads*dim), make([]float32, heads*seq)
	sinks := []float32{0.5, -1}
	p := PrefillParams{BatchSize: 1, SeqLen: seq, NumQHeads: heads, NumKVHeads: 1, HeadDim: dim,
		Variants: Variants{Window: &Window{0, -1}, Sinks: sinks, LSE: lse}}
	if err := Prefill(out, q, k, v, nil, nil, p); err != nil {
		t.Fatal(err)
	}
	for i := 0; i < seq; i++ {
		for h := 0; h < heads; h++ {
			x := 0.0
			for d := 0; d < dim; d++ {
				x += float64(q[(i*heads+h)*dim+d]) * float64(k[i*dim+d])
			}
			x /= math.Sqrt(dim)
			weight := math.Exp(x) / (math.Exp(x) + math.Exp(float64(sinks[h])))
			for d := 0; d < dim; d++ {
				if got, want := float64(out[(i*heads+h)*dim+d]), float64(v[i*dim+d])*weight; math.Abs(got-want) > 1e-5 {
					t.Fatalf("row %d head %d dim %d: %g, want %g", i, h, d, got, want)
				}
			}
			if got, want := float64(lse[h*seq+i]), math.Log(math.Exp(x)+math.Exp(float64(sinks[h]))); math.Abs(got-want) > 1e-5 {
				t.Fatalf("lse of row %d head %d: %g, want %g", i, h, got, want)
			}
		}
	}
}

// Two decodes over the halves of a cache (each its own cache), merged with MergeStates, equal one
// decode over the whole cache.
func TestMergeOfHalvesIsTheWhole(t *testing.T) {
	const heads, dim, n = 4, 16, 30
	r := rng(5)
	q := tensor(&r, f32Storage, heads*dim)
	kc, vc := tensor(&r, f32Storage, n*dim), tensor(&r, f32Storage, n*dim)
	decodeOver := func(keys, values []float32, out, lse []float32) {
		m := len(keys) / dim // the last position is the new token
		p := DecodeParams{BatchSize: 1, NumQHeads: heads, NumKVHeads: 1, HeadDim: dim, MaxSeqLen: m, CacheLen: m - 1,
			Variants: Variants{LSE: lse}}
		kCache, vCache := append([]float32(nil), keys...), append([]float32(nil), values...)
		if err := Decode(out, q, keys[(m-1)*dim:], values[(m-1)*dim:], kCache, vCache, p); err != nil {
			t.Fatal(err)
		}
	}
	whole := make([]float32, heads*dim)
	decodeOver(kc, vc, whole, nil)
	states, lses := make([]float32, 2*heads*dim), make([]float32, 2*heads)
	decodeOver(kc[:12*dim], vc[:12*dim], states[:heads*dim], lses[:heads])
	decodeOver(kc[12*dim:], vc[12*dim:], states[heads*dim:], lses[heads:])
	merged := make([]float32, heads*dim)
	if err := MergeStates(merged, nil, states, lses, MergeParams{NumStates: 2, BatchSize: 1, SeqLen: 1, NumHeads: heads,
		HeadDim: dim}); err != nil {
		t.Fatal(err)
	}
	for i := range whole {
		if math.Abs(float64(merged[i]-whole[i])) > 1e-5 {
			t.Fatalf("element %d: merged %g, whole %g", i, merged[i], whole[i])
		}
	}
}

// pagedThenDense runs prefill chunks, decode steps and a 2-token verification through
// BatchAttention on a cache of shuffled 3-token pages, and checks each step against float64
// attention over the dense view of the same cache (and the cache writes slot by slot).
func pagedThenDense[T Element](t *testing.T, st storage[T]) {
	const pageSize, cols = 3, (maxSeq + 2) / 3
	numPages := batch*cols + 2
	table := make([]int32, batch*cols)
	for i := range table { // sequence b's column c: a scattered page id
		table[i] = int32((i*7 + 3) % numPages)
	}
	r := rng(11)
	nan := float32(math.NaN())
	cacheElems := numPages * pageSize * kvHeads * headDim
	kc, vc := filled(st, cacheElems, nan), filled(st, cacheElems, nan)
	shadowK := filled(st, batch*maxSeq*kvHeads*headDim, nan)
	shadowV := append([]T(nil), shadowK...)
	// dense is the [batch, maxSeq] view of the paged cache (positions < length).
	dense := func(cache []T, length int) []T {
		view := filled(st, batch*maxSeq*kvHeads*headDim, nan)
		row := kvHeads * headDim
		for b := 0; b < batch; b++ {
			for pos := 0; pos < length; pos++ {
				src := (int(table[b*cols+pos/pageSize])*pageSize + pos%pageSize) * row
				copy(view[idx(b, pos, 0, maxSeq, kvHeads):][:row], cache[src:][:row])
			}
		}
		return view
	}
	for _, span := range [][2]int{{0, 8}, {8, 5}, {13, 1}, {14, 1}, {15, 2}} {
		start, n := span[0], span[1]
		q, k, v, out := step(&r, st, n)
		p := BatchParams{NumQHeads: qHeads, NumKVHeads: kvHeads, HeadDim: headDim, PageSize: pageSize,
			NumPages: numPages, MaxPagesPerSeq: cols, QIndptr: []int32{0, int32(n), int32(2 * n)},
			KVLens: []int32{int32(start), int32(start)}, PageTable: table}
		if err := BatchAttention(out, q, k, v, kc, vc, p); err != nil {
			t.Fatal(err)
		}
		writeCache(shadowK, k, n, []int{start, start})
		writeCache(shadowV, v, n, []int{start, start})
		denseK, denseV := dense(kc, start+n), dense(vc, start+n)
		if !equal(denseK, shadowK) || !equal(denseV, shadowV) {
			t.Fatalf("batched step at %d wrote the paged cache wrongly", start)
		}
		if err := worstError(st, q, out, denseK, denseV, n, func(_, s int) int { return start + s }); err > st.tolerance {
			t.Fatalf("batched step at %d: error %g > %g", start, err, st.tolerance)
		}
	}
	// A page id out of the pool is rejected, naming it, and writes nothing.
	bad := append([]int32(nil), table...)
	bad[1] = int32(numPages)
	before := append([]T(nil), kc...)
	err := BatchAttention(filled(st, qHeads*headDim, nan), tensor(&r, st, qHeads*headDim), tensor(&r, st, kvHeads*headDim),
		tensor(&r, st, kvHeads*headDim), kc, vc, BatchParams{NumQHeads: qHeads, NumKVHeads: kvHeads, HeadDim: headDim,
			PageSize: pageSize, NumPages: numPages, MaxPagesPerSeq: cols, QIndptr: []int32{0, 1, 1},
			KVLens: []int32{17, 17}, PageTable: bad})
	if e, ok := err.(*Error); !ok || e.Status != StatusInvalidArgument || !strings.Contains(e.Message, "page_table[0][1]") {
		t.Fatalf("bad page id: %v", err)
	}
	if !equal(kc, before) {
		t.Fatal("a rejected batched call wrote the cache")
	}
}

func TestF32PagedBatch(t *testing.T)  { pagedThenDense(t, f32Storage) }
func TestF16PagedBatch(t *testing.T)  { pagedThenDense(t, f16Storage) }
func TestBF16PagedBatch(t *testing.T) { pagedThenDense(t, bf16Storage) }

// Every status of gqa.h has its constant, with gqa.h's value and libgqa's name for it.
func TestEveryStatusHasItsConstant(t *testing.T) {
	want := []struct {
		status int
		name   string
	}{
		{StatusOK, "ok"}, {StatusInvalidArgument, "invalid argument"}, {StatusCacheOverflow, "cache overflow"},
		{StatusUnsupported, "unsupported"}, {StatusDeviceUnavailable, "device unavailable"},
		{StatusCUDAError, "CUDA error"}, {StatusVersionMismatch, "version mismatch"},
		{StatusOutOfMemory, "out of memory"}, {StatusInternalError, "internal error"},
	}
	for value, w := range want {
		if w.status != value || StatusString(w.status) != w.name {
			t.Errorf("status %d: constant %d, name %q, want %q", value, w.status, StatusString(w.status), w.name)
		}
	}
}
