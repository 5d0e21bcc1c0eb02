//! A downstream binary: one prefill through the gqa crate, found and loaded with no help from
//! the environment at run time.
fn main() {
    let p = gqa::PrefillParams { batch_size: 1, seq_len: 3, num_q_heads: 4, num_kv_heads: 2,
                                 head_dim: 16, ..Default::default() };
    let q: Vec<f32> = (0..3 * 4 * 16).map(|i| (i as f32 * 0.37).sin()).collect();
    let k: Vec<f32> = (0..3 * 2 * 16).map(|i| (i as f32 * 0.11).cos()).collect();
    let mut out = vec![f32::NAN; q.len()];
    gqa::check_abi().expect("ABI");
    gqa::prefill(&mut out, &q, &k, &k, None, &p).expect("prefill");
    assert!(out.iter().all(|x| x.is_finite()));
    println!("downstream: libgqa {} from {}, prefill ok", gqa::version(), gqa::ffi::library_path());
}
