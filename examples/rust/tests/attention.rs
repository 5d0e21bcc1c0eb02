//! Prefill (in chunks and without caches) and decode (uniform and per-sequence cache lengths)
//! through the safe bindings, checked against a float64 reference for f32, f16 and bf16 storage.
use gqa::{Bf16, DecodeParams, Element, PrefillParams, F16};

const BATCH: i32 = 2;
const Q_HEADS: i32 = 6;
const KV_HEADS: i32 = 2;
const HEAD_DIM: i32 = 17;
const MAX_SEQ: i32 = 40;

/// Storage type with conversions, so one test body serves every dtype.
trait Storage: Element + PartialEq + std::fmt::Debug {
    fn from(x: f32) -> Self;
    fn to(self) -> f32;
    fn nan() -> Self {
        Self::from(f32::NAN)
    }
    /// Largest allowed |libgqa - float64| on O(1) data (the project's tolerances).
    const TOLERANCE: f64;
}
impl Storage for f32 {
    fn from(x: f32) -> Self { x }
    fn to(self) -> f32 { self }
    const TOLERANCE: f64 = 1e-4;
}
impl Storage for F16 {
    fn from(x: f32) -> Self { F16::from_f32(x) }
    fn to(self) -> f32 { self.to_f32() }
    const TOLERANCE: f64 = 4e-3;
}
impl Storage for Bf16 {
    fn from(x: f32) -> Self { Bf16::from_f32(x) }
    fn to(self) -> f32 { self.to_f32() }
    const TOLERANCE: f64 = 3e-2;
}

/// Deterministic values in [-1, 1).
struct Rng(u64);
impl Rng {
    fn tensor<T: Storage>(&mut self, n: usize) -> Vec<T> {
        (0..n)
            .map(|_| {
                self.0 = self.0.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
                T::from(((self.0 >> 11) as f64 / (1u64 << 53) as f64 * 2.0 - 1.0) as f32)
            })
            .collect()
    }

    /// The tensors of an n-token step of every sequence: q [BATCH, n, Q_HEADS, HEAD_DIM], k and
    /// v [BATCH, n, KV_HEADS, HEAD_DIM], random; out of q's shape, NaN.
    fn step<T: Storage>(&mut self, n: i32) -> (Vec<T>, Vec<T>, Vec<T>, Vec<T>) {
        let q: Vec<T> = self.tensor((BATCH * n * Q_HEADS * HEAD_DIM) as usize);
        let k = self.tensor((BATCH * n * KV_HEADS * HEAD_DIM) as usize);
        let v = self.tensor((BATCH * n * KV_HEADS * HEAD_DIM) as usize);
        let out = vec![T::nan(); q.len()];
        (q, k, v, out)
    }
}

fn idx(b: i32, s: i32, h: i32, seq: i32, heads: i32) -> usize {
    (((b as usize * seq as usize) + s as usize) * heads as usize + h as usize) * HEAD_DIM as usize
}

/// Element-wise equality in which the NaN poison of unwritten positions equals itself.
fn same<T: Storage>(a: &[T], b: &[T]) -> bool {
    a.len() == b.len() && a.iter().zip(b).all(|(x, y)| x == y || (x.to().is_nan() && y.to().is_nan()))
}

/// Copies new k/v rows [batch, n, KV_HEADS, D] into the shadow cache at positions start[b]...
fn write_cache<T: Storage>(cache: &mut [T], new: &[T], n: i32, start: &[i32]) {
    let row = (KV_HEADS * HEAD_DIM) as usize;
    for b in 0..BATCH {
        for s in 0..n {
            let dst = idx(b, start[b as usize] + s, 0, MAX_SEQ, KV_HEADS);
            let src = idx(b, s, 0, n, KV_HEADS);
            cache[dst..dst + row].copy_from_slice(&new[src..src + row]);
        }
    }
}

/// float64 attention: query row s of sequence b (n rows) sees cache positions 0..=last(b, s).
/// Returns the largest |expected - got| (NaN counts as infinitely wrong).
fn worst_error<T: Storage>(q: &[T], out: &[T], kc: &[T], vc: &[T], n: i32, last: impl Fn(i32, i32) -> i32) -> f64 {
    let group = Q_HEADS / KV_HEADS;
    let scale = 1.0 / (HEAD_DIM as f64).sqrt();
    let mut worst = 0.0f64;
    for b in 0..BATCH {
        for s in 0..n {
            for h in 0..Q_HEADS {
                let qrow = &q[idx(b, s, h, n, Q_HEADS)..][..HEAD_DIM as usize];
                let kvh = h / group;
                let positions = last(b, s) + 1;
                let scores: Vec<f64> = (0..positions)
                    .map(|t| {
                        let krow = &kc[idx(b, t, kvh, MAX_SEQ, KV_HEADS)..][..HEAD_DIM as usize];
                        qrow.iter().zip(krow).map(|(a, c)| a.to() as f64 * c.to() as f64).sum::<f64>() * scale
                    })
                    .collect();
                let max = scores.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
                let weights: Vec<f64> = scores.iter().map(|x| (x - max).exp()).collect();
                let total: f64 = weights.iter().sum();
                for d in 0..HEAD_DIM {
                    let expected: f64 = (0..positions)
                        .map(|t| weights[t as usize] / total * vc[idx(b, t, kvh, MAX_SEQ, KV_HEADS) + d as usize].to() as f64)
                        .sum();
                    let got = out[idx(b, s, h, n, Q_HEADS) + d as usize].to() as f64;
                    let err = (expected - got).abs();
                    worst = if err.is_nan() { f64::INFINITY } else { worst.max(err) };
                }
            }
        }
    }
    worst
}

fn prefill_then_decode<T: Storage>() {
    gqa::check_abi().unwrap();
    let mut rng = Rng(7);
    let cache_elems = (BATCH * MAX_SEQ * KV_HEADS * HEAD_DIM) as usize;
    let (mut kc, mut vc) = (vec![T::nan(); cache_elems], vec![T::nan(); cache_elems]);
    let (mut shadow_k, mut shadow_v) = (kc.clone(), vc.clone());

    // Prefill a 13-token prompt in two chunks (8 then 5 tokens at start_pos 8).
    for (start, n) in [(0, 8), (8, 5)] {
        let (q, k, v, mut out) = rng.step::<T>(n);
        let p = PrefillParams {
            batch_size: BATCH, seq_len: n, num_q_heads: Q_HEADS, num_kv_heads: KV_HEADS,
            head_dim: HEAD_DIM, max_seq_len: MAX_SEQ, start_pos: start, ..Default::default()
        };
        gqa::prefill(&mut out, &q, &k, &v, Some((&mut kc, &mut vc)), &p).unwrap();
        write_cache(&mut shadow_k, &k, n, &[start, start]);
        write_cache(&mut shadow_v, &v, n, &[start, start]);
        assert!(same(&kc, &shadow_k) && same(&vc, &shadow_v), "prefill wrote the cache wrongly");
        let err = worst_error(&q, &out, &kc, &vc, n, |_, s| start + s);
        assert!(err <= T::TOLERANCE, "prefill chunk at {start}: error {err}");
    }

    // Decode 3 steps for both sequences, then one with per-sequence lengths (16 and 9).
    for lens in [[13, 13], [14, 14], [15, 15], [16, 9]] {
        let (q, k, v, mut out) = rng.step::<T>(1);
        let per_sequence = lens[0] != lens[1];
        let p = DecodeParams {
            batch_size: BATCH, num_q_heads: Q_HEADS, num_kv_heads: KV_HEADS, head_dim: HEAD_DIM,
            max_seq_len: MAX_SEQ, cache_len: lens[0],
            cache_lens: if per_sequence { Some(&lens) } else { None },
            ..Default::default()
        };
        gqa::decode(&mut out, &q, &k, &v, &mut kc, &mut vc, &p).unwrap();
        write_cache(&mut shadow_k, &k, 1, &lens);
        write_cache(&mut shadow_v, &v, 1, &lens);
        assert!(same(&kc, &shadow_k) && same(&vc, &shadow_v), "decode wrote the cache wrongly");
        let err = worst_error(&q, &out, &kc, &vc, 1, |b, _| lens[b as usize]);
        assert!(err <= T::TOLERANCE, "decode at {lens:?}: error {err}");
    }
}

#[test]
fn f32_prefill_then_decode() {
    prefill_then_decode::<f32>();
}

#[test]
fn f16_prefill_then_decode() {
    prefill_then_decode::<F16>();
}

#[test]
fn bf16_prefill_then_decode() {
    prefill_then_decode::<Bf16>();
}

#[test]
fn prefill_without_cache_attends_over_new_keys_only() {
    let n = 11;
    let mut rng = Rng(3);
    let (q, k, v, poisoned) = rng.step::<f32>(n);
    for causal in [true, false] {
        let mut out = poisoned.clone();
        let p = PrefillParams {
            batch_size: BATCH, seq_len: n, num_q_heads: Q_HEADS, num_kv_heads: KV_HEADS,
            head_dim: HEAD_DIM, causal, ..Default::default()
        };
        gqa::prefill(&mut out, &q, &k, &v, None, &p).unwrap();
        // The reference reads "caches" laid out with MAX_SEQ positions: build them from k and v.
        let cache_elems = (BATCH * MAX_SEQ * KV_HEADS * HEAD_DIM) as usize;
        let (mut kc, mut vc) = (vec![f32::NAN; cache_elems], vec![f32::NAN; cache_elems]);
        write_cache(&mut kc, &k, n, &[0, 0]);
        write_cache(&mut vc, &v, n, &[0, 0]);
        let err = worst_error(&q, &out, &kc, &vc, n, |_, s| if causal { s } else { n - 1 });
        assert!(err <= 1e-4, "causal={causal}: error {err}");
    }
}

#[test]
fn errors_carry_the_status_and_message_and_write_nothing() {
    // One sequence, 6 query heads, `kv` KV heads, every buffer sized for that shape.
    let run = |kv: i32, cache_len: i32, q_len: usize| {
        let (q, k, v) = (vec![0.5f32; q_len], vec![0.25f32; (kv * HEAD_DIM) as usize], vec![1f32; (kv * HEAD_DIM) as usize]);
        let cache_elems = (MAX_SEQ * kv * HEAD_DIM) as usize;
        let (mut kc, mut vc, mut out) = (vec![7f32; cache_elems], vec![7f32; cache_elems], vec![9f32; q_len]);
        let p = DecodeParams {
            batch_size: 1, num_q_heads: Q_HEADS, num_kv_heads: kv, head_dim: HEAD_DIM,
            max_seq_len: MAX_SEQ, cache_len, ..Default::default()
        };
        let err = gqa::decode(&mut out, &q, &k, &v, &mut kc, &mut vc, &p).unwrap_err();
        assert!(out.iter().all(|&x| x == 9.0), "a rejected call wrote out");
        assert!(kc.iter().chain(&vc).all(|&x| x == 7.0), "a rejected call wrote a cache");
        err
    };
    let full = (Q_HEADS * HEAD_DIM) as usize;

    let err = run(KV_HEADS, MAX_SEQ, full); // libgqa: the cache is full
    assert_eq!(err.status, gqa::ffi::GQA_STATUS_CACHE_OVERFLOW, "{err}");
    assert!(err.message.contains("cache_len"), "{err}");

    let err = run(4, 0, full); // libgqa: 6 query heads cannot share 4 KV heads
    assert_eq!(err.status, gqa::ffi::GQA_STATUS_INVALID_ARGUMENT, "{err}");
    assert!(err.message.contains("num_kv_heads"), "{err}");

    let err = run(KV_HEADS, 0, full - 1); // the bindings: q is one element short
    assert_eq!(err.status, gqa::ffi::GQA_STATUS_INVALID_ARGUMENT, "{err}");
    assert!(err.message.starts_with("out has"), "{err}");
}

/// Window (0, -1): each query sees only its own key, so with a sink s its row is
/// v_i * e^x / (e^x + e^s) and its lse log(e^x + e^s): exact, no reference needed.
#[test]
fn window_zero_with_sinks_and_lse() {
    let (seq, heads, dim) = (5usize, 2usize, 8usize);
    let q: Vec<f32> = (0..seq * heads * dim).map(|i| ((i * 7 % 13) as f32 - 6.0) / 7.0).collect();
    let k: Vec<f32> = (0..seq * dim).map(|i| ((i * 5 % 11) as f32 - 5.0) / 6.0).collect();
    let v: Vec<f32> = (0..seq * dim).map(|i| ((i * 3 % 7) as f32 - 3.0) / 4.0).collect();
    let sinks = [0.5f32, -1.0];
    let (mut out, mut lse) = (vec![f32::NAN; seq * heads * dim], vec![f32::NAN; heads * seq]);
    let p = PrefillParams {
        batch_size: 1, seq_len: seq as i32, num_q_heads: heads as i32, num_kv_heads: 1, head_dim: dim as i32,
        variants: gqa::Variants { window: (0, -1), sinks: Some(&sinks), ..Default::default() },
        ..Default::default()
    };
    gqa::prefill_with_lse(&mut out, Some(&mut lse), &q, &k, &v, None, &p).unwrap();
    for i in 0..seq {
        for h in 0..heads {
            let x: f64 = (0..dim).map(|d| q[(i * heads + h) * dim + d] as f64 * k[i * dim + d] as f64).sum::<f64>()
                / (dim as f64).sqrt();
            let denom = x.exp() + (sinks[h] as f64).exp();
            for d in 0..dim {
                let want = v[i * dim + d] as f64 * x.exp() / denom;
                assert!((out[(i * heads + h) * dim + d] as f64 - want).abs() < 1e-5, "row {i} head {h} dim {d}");
            }
            assert!((lse[h * seq + i] as f64 - denom.ln()).abs() < 1e-5, "lse row {i} head {h}");
        }
    }
}

/// Two decodes over the halves of a cache, merged with merge_states, equal the whole decode.
#[test]
fn merge_of_halves_is_the_whole() {
    let (heads, dim, n) = (4usize, 16usize, 30usize);
    let q: Vec<f32> = (0..heads * dim).map(|i| ((i * 7 % 17) as f32 - 8.0) / 9.0).collect();
    let kc: Vec<f32> = (0..n * dim).map(|i| ((i * 11 % 19) as f32 - 9.0) / 10.0).collect();
    let vc: Vec<f32> = (0..n * dim).map(|i| ((i * 13 % 23) as f32 - 11.0) / 12.0).collect();
    let decode_over = |keys: &[f32], values: &[f32], out: &mut [f32], lse: Option<&mut [f32]>| {
        let m = keys.len() / dim; // the last position is the new token
        let p = DecodeParams {
            batch_size: 1, num_q_heads: heads as i32, num_kv_heads: 1, head_dim: dim as i32,
            max_seq_len: m as i32, cache_len: m as i32 - 1, ..Default::default()
        };
        let (mut k_cache, mut v_cache) = (keys.to_vec(), values.to_vec());
        gqa::decode_with_lse(out, lse, &q, &keys[(m - 1) * dim..], &values[(m - 1) * dim..], &mut k_cache, &mut v_cache, &p)
            .unwrap();
    };
    let mut whole = vec![0f32; heads * dim];
    decode_over(&kc, &vc, &mut whole, None);
    let (mut states, mut lses) = (vec![0f32; 2 * heads * dim], vec![0f32; 2 * heads]);
    let (first, second) = states.split_at_mut(heads * dim);
    let (first_lse, second_lse) = lses.split_at_mut(heads);
    decode_over(&kc[..12 * dim], &vc[..12 * dim], first, Some(first_lse));
    decode_over(&kc[12 * dim..], &vc[12 * dim..], second, Some(second_lse));
    let mut merged = vec![0f32; heads * dim];
    let p = gqa::MergeParams { num_states: 2, batch_size: 1, seq_len: 1, num_heads: heads as i32, head_dim: dim as i32,
                               sinks: None };
    gqa::merge_states(&mut merged, None, &states, &lses, &p).unwrap();
    for (a, b) in merged.iter().zip(&whole) {
        assert!((a - b).abs() < 1e-5, "merged {a}, whole {b}");
    }
}

/// Prefill chunks, decode steps and a 2-token verification through `batch_attention` on a cache
/// of scattered 3-token pages, each checked against float64 attention over the dense view of the
/// same cache (and the cache writes slot by slot).
fn paged_batch<T: Storage>() {
    const PAGE: i32 = 3;
    const COLS: i32 = (MAX_SEQ + PAGE - 1) / PAGE;
    let num_pages = BATCH * COLS + 2;
    let table: Vec<i32> = (0..BATCH * COLS).map(|i| (i * 7 + 3) % num_pages).collect();
    let row = (KV_HEADS * HEAD_DIM) as usize;
    let pool = (num_pages * PAGE) as usize * row;
    let (mut kc, mut vc) = (vec![T::nan(); pool], vec![T::nan(); pool]);
    let dense_elems = (BATCH * MAX_SEQ) as usize * row;
    let (mut shadow_k, mut shadow_v) = (vec![T::nan(); dense_elems], vec![T::nan(); dense_elems]);
    let dense = |cache: &[T], length: i32| {
        let mut view = vec![T::nan(); dense_elems];
        for b in 0..BATCH {
            for pos in 0..length {
                let src = ((table[(b * COLS + pos / PAGE) as usize] * PAGE + pos % PAGE) as usize) * row;
                let dst = idx(b, pos, 0, MAX_SEQ, KV_HEADS);
                view[dst..dst + row].copy_from_slice(&cache[src..src + row]);
            }
        }
        view
    };
    let mut rng = Rng(11);
    for (start, n) in [(0, 8), (8, 5), (13, 1), (14, 1), (15, 2)] {
        let (q, k, v, mut out) = rng.step::<T>(n);
        let (indptr, lens) = ([0, n, 2 * n], [start, start]);
        let p = gqa::BatchParams {
            num_q_heads: Q_HEADS, num_kv_heads: KV_HEADS, head_dim: HEAD_DIM, page_size: PAGE,
            num_pages, max_pages_per_seq: COLS, q_indptr: &indptr, kv_lens: &lens, page_table: &table,
            causal: true, scale: 0.0,
        };
        gqa::batch_attention(&mut out, &q, &k, &v, &mut kc, &mut vc, &p).unwrap();
        write_cache(&mut shadow_k, &k, n, &[start, start]);
        write_cache(&mut shadow_v, &v, n, &[start, start]);
        let (dk, dv) = (dense(&kc, start + n), dense(&vc, start + n));
        assert!(same(&dk, &shadow_k) && same(&dv, &shadow_v), "batched step at {start} wrote the paged cache wrongly");
        let err = worst_error(&q, &out, &dk, &dv, n, |_, s| start + s);
        assert!(err <= T::TOLERANCE, "batched step at {start}: error {err}");
    }
    // A page id outside the pool is rejected, naming it, and nothing is written.
    let mut bad = table.clone();
    bad[1] = num_pages;
    let before = kc.clone();
    let (q, k): (Vec<T>, Vec<T>) = (rng.tensor((Q_HEADS * HEAD_DIM) as usize), rng.tensor((KV_HEADS * HEAD_DIM) as usize));
    let mut out = vec![T::nan(); q.len()];
    let p = gqa::BatchParams {
        num_q_heads: Q_HEADS, num_kv_heads: KV_HEADS, head_dim: HEAD_DIM, page_size: PAGE, num_pages,
        max_pages_per_seq: COLS, q_indptr: &[0, 1, 1], kv_lens: &[17, 17], page_table: &bad, causal: true, scale: 0.0,
    };
    let err = gqa::batch_attention(&mut out, &q, &k, &k, &mut kc, &mut vc, &p).unwrap_err();
    assert_eq!(err.status, gqa::ffi::GQA_STATUS_INVALID_ARGUMENT, "{err}");
    assert!(err.message.contains("page_table[0][1]"), "{err}");
    assert!(same(&kc, &before), "a rejected batched call wrote the cache");
}

#[test]
fn f32_paged_batch() {
    paged_batch::<f32>();
}

#[test]
fn f16_paged_batch() {
    paged_batch::<F16>();
}

#[test]
fn bf16_paged_batch() {
    paged_batch::<Bf16>();
}
