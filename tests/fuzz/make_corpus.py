#!/usr/bin/env python3
"""Writes the seed corpus of fuzz_gqa (tests/fuzz/corpus/): a few hand-made inputs, one per kind
of call (the byte layouts are read_call() in fuzz_attention.c, fuzz_batch.c and fuzz_merge.c;
the first byte picks the op, see fuzz_gqa.c), plus deterministic random ones. Files already in
corpus/ that are not written here (reproducers) are kept. Re-run only to change the seeds:
python3 tests/fuzz/make_corpus.py"""
import os
import random

HERE = os.path.dirname(os.path.abspath(__file__))
OUT = os.path.join(HERE, "corpus")

# op, dtype, device, batch, seq_len, kv_heads, group, head_dim, max_seq_len, pos, flags, scale,
# num_splits, rare, lens x4, seed x8.  Field bytes < 240 map into the small valid range.
def seed(op, dtype, batch, seq, kv, group, dsize, tmax, pos, flags, scale=0, splits=0, rare=0, lens=(0, 1, 2, 3)):
    return bytes([op, dtype, 0, batch, seq, kv, group, dsize, tmax, pos, flags, scale, splits, rare, *lens,
                  1, 2, 3, 4, 5, 6, 7, 8])

HAND = {
    "prefill_cache_f16": seed(0, 0, 1, 4, 1, 3, 15, 20, 5, 1),
    "prefill_cache_bf16_noncausal": seed(0, 1, 0, 8, 0, 0, 63, 23, 2, 1 | 4, scale=160),
    "prefill_nocache_f32": seed(0, 2, 2, 6, 2, 1, 16, 0, 0, 0),
    "prefill_headdim_256": seed(0, 2, 0, 1, 0, 1, 204, 7, 3, 1),
    "decode_f16": seed(1, 0, 2, 0, 1, 3, 63, 23, 9, 0),
    "decode_lens_bf16": seed(1, 1, 3, 0, 0, 2, 15, 23, 0, 2, splits=3, lens=(22, 0, 7, 13)),
    "decode_f32_splits": seed(1, 2, 0, 0, 2, 0, 202, 20, 19, 0, splits=8),
    "bad_struct_size": seed(0, 0, 1, 2, 1, 1, 7, 15, 2, 1, rare=247)[:14] + b"\x00\x00\x00\x04" + bytes(12),
    "bad_abi": seed(1, 0, 1, 0, 1, 1, 7, 15, 2, 0, rare=246)[:14] + b"\x00\x00\x00\x02" + bytes(12),
    "bad_null_q": seed(0, 0, 1, 2, 1, 1, 7, 15, 2, 1, rare=249),
    "bad_overflow": seed(0, 0, 1, 7, 1, 1, 7, 3, 2, 1),  # 8 tokens at start_pos 2 in a 4-token cache
    "bad_cache_len": seed(1, 0, 1, 0, 1, 1, 7, 3, 4, 0),  # cache_len 4 = max_seq_len: full
    "bad_extreme_batch": bytes([1, 0, 0, 243, 0, 0, 0, 7, 3, 1, 0, 0, 0, 0]) + bytes(12),
    # device byte 250: the next field byte picks from -1..3; 3 -> -1 + 3 = GQA_DEVICE_CUDA (2)
    "bad_device_cuda": bytes([0, 0, 250, 3]) + seed(0, 0, 1, 2, 1, 1, 7, 15, 2, 1)[3:],
    # group bytes 246 / 245: 65536 / 257 query heads over one KV head (tiles of more than 256
    # rows run in chunks; before that, 2^20 heads asked for gigabytes of tile scratch)
    "prefill_group_65536": seed(0, 2, 0, 0, 0, 246, 0, 0, 0, 0),
    "prefill_group_257_cache": seed(0, 0, 0, 3, 0, 245, 15, 20, 5, 1),
}

# The variant options appended to a prefill/decode input (next_variants() in fuzz_common.c): a
# byte of flags (1 window, 2 softcap, 4 sinks, 8 lse, 16 strides; 0xE0 all set: a reserved
# field follows), then each option given. Window fields: byte b -> -1 + b % 14 (< 240).
def variants(window=None, softcap=None, sinks=None, lse=False, strides=None, reserved=None):
    flags = ((window is not None) | (softcap is not None) << 1 | (sinks is not None) << 2 | lse << 3 |
             (strides is not None) << 4 | (0xE0 if reserved is not None else 0))
    out = [flags]
    if window is not None:
        out += [left + 1 if left >= 0 else 0 for left in window]  # -1 .. 12
    if softcap is not None:
        out.append(softcap)  # < 240: 0.25 + b / 8; 240.. : edge values (241 NaN, 243 -1)
    if sinks is not None:
        out.append(sinks)  # < 200 finite; < 240 some -inf; 240.. one NaN, 248.. one +inf
    if strides is not None:
        out += list(strides)  # q, k, v, out: 0 contiguous; bits pad head/token/batch; 0xE0.. negative
    if reserved is not None:
        out += list(reserved.to_bytes(4, "big", signed=True))
    return bytes(out)

PREFILL = seed(0, 0, 1, 6, 1, 3, 15, 20, 5, 1)  # f16, caches, start 5, 7 new tokens, 2:6 heads
PREFILL_F32 = seed(0, 2, 1, 8, 0, 1, 23, 23, 2, 1)
DECODE = seed(1, 1, 3, 0, 0, 2, 15, 23, 0, 2, splits=3, lens=(22, 0, 7, 13))  # bf16, lens per sequence

HAND.update({
    "prefill_window_lse": PREFILL + variants(window=(3, -1), lse=True),
    "prefill_window_right_noncausal": seed(0, 2, 1, 8, 0, 1, 23, 23, 2, 1 | 4) + variants(window=(2, 1)),
    "prefill_softcap_sinks": PREFILL_F32 + variants(softcap=200, sinks=10, lse=True),
    "prefill_strided": PREFILL_F32 + variants(strides=(0x05, 0x06, 0x0B, 0x17)),
    "prefill_everything": PREFILL + variants(window=(4, 0), softcap=100, sinks=210, lse=True,
                                             strides=(0x01, 0x04, 0x10, 0x15)),
    "decode_window_sinks_lse": DECODE + variants(window=(5, -1), sinks=30, lse=True),
    "decode_strided_softcap": DECODE + variants(softcap=60, strides=(0x11, 0x02, 0x03, 0x13)),
    "bad_softcap_nan": PREFILL + variants(softcap=241),
    "bad_sinks_inf": DECODE + variants(sinks=250),
    "bad_stride_negative": PREFILL + variants(strides=(0, 0, 0xE1, 0)),
    "bad_decode_token_stride": DECODE + variants(strides=(0xC1, 0, 0, 0)),
    "bad_reserved2": PREFILL + variants(reserved=5),
})

# The batched op (read_call() in fuzz_batch.c): 0xC0, dtype, device, batch (1 + b % 4), kv heads
# (1 + b % 3), group (1 + b % 4), head_dim, page_size (1 + b % 8), flags (1 non-causal, 2-3
# max_q_len mode, 8 shared prefix page, 16 garbage in unused page-table entries), scale,
# num_splits, rare, q_lens x4 (b % 7), kv_lens x4 (b % 13), extra pages, slack columns, table
# shuffle, seed x8, then the variant options (strides: token and head only).
def batch(dtype=0, seqs=3, kv=1, group=2, dsize=15, page=2, flags=0, scale=0, splits=0, rare=0,
          q_lens=(3, 1, 0, 2), kv_lens=(5, 9, 2, 0), extra=1, slack=1, shuffle=7, tail=b""):
    return bytes([0xC0, dtype, 0, seqs, kv, group, dsize, page, flags, scale, splits, rare, *q_lens, *kv_lens,
                  extra, slack, shuffle, 8, 7, 6, 5, 4, 3, 2, 1]) + tail

HAND.update({
    "batch_mixed_f16": batch(),
    "batch_decode_bf16_page1": batch(dtype=1, page=0, q_lens=(1, 1, 1, 1), kv_lens=(4, 0, 11, 7)),
    "batch_prefix_shared_f32": batch(dtype=2, page=3, flags=8 | 16, kv_lens=(8, 9, 12, 4), q_lens=(2, 3, 1, 1)),
    "batch_noncausal_maxq": batch(dtype=2, flags=1 | 4, splits=4, q_lens=(6, 0, 5, 1)),
    "batch_variants": batch(dtype=0, tail=variants(window=(3, 1), softcap=120, sinks=205, lse=True,
                                                   strides=(0x05, 0x0A, 0x03, 0x0F))),
    "batch_empty": batch(q_lens=(0, 0, 0, 0)),
    "bad_batch_written_page_shared": batch(rare=242, kv_lens=(5, 9, 2, 0), q_lens=(3, 1, 1, 2)),
    # rare 237 reads (after the variant flags byte) a page-table index and a value: -2 + b % ...
    "bad_batch_page_id": batch(rare=237, tail=bytes([0, 0, 1])),  # page_table[0][0] = -1
    "bad_batch_max_q_len": batch(flags=6, q_lens=(3, 1, 0, 2)),
    "bad_batch_null_table": batch(rare=254),
    "bad_batch_stride_batch": batch(tail=variants(strides=(0xC1, 0, 0, 0))),
})

# Merge (read_call() in fuzz_merge.c): 0xE0, dtype, device, states (1 + b % 4), batch (1 + b % 3),
# seq_len (1 + b % 4), heads (1 + b % 4), head_dim, flags (1 lse_out, 2 sinks: mode (b >> 2) % 3),
# rare, lse modes x4 (< 200 finite, < 240 a mix with -inf, 240.. all -inf: that state's rows are
# NaN and must not be read), seed x8.
def merge(dtype=2, states=2, seqs=1, seq=0, heads=3, dsize=15, flags=1, rare=0, modes=(0, 210, 0, 250)):
    return bytes([0xE0, dtype, 0, states, seqs, seq, heads, dsize, flags, rare, *modes, 1, 3, 5, 7, 9, 11, 13, 15])

HAND.update({
    "merge_f32_lse": merge(),
    "merge_bf16_sinks": merge(dtype=1, states=3, seq=2, flags=1 | 2 | 4, modes=(0, 220, 250, 9)),
    "merge_all_empty_with_sink": merge(states=0, flags=1 | 2, modes=(250, 0, 0, 0)),
    "merge_f16_decode_shape": merge(dtype=0, states=1, seqs=2, seq=0, heads=0, dsize=63),
    "bad_merge_overlap": merge(rare=245),
    "bad_merge_null_states": merge(rare=251),
    "bad_merge_sink_nan": merge(flags=2 | 8),
})

def main():
    os.makedirs(OUT, exist_ok=True)
    for name, data in HAND.items():
        with open(os.path.join(OUT, name), "wb") as f:
            f.write(data)
    rng = random.Random(20261124)
    for i in range(10):
        with open(os.path.join(OUT, "random_%02d" % i), "wb") as f:
            f.write(bytes(rng.randrange(256) for _ in range(rng.randrange(20, 64))))

if __name__ == "__main__":
    main()
