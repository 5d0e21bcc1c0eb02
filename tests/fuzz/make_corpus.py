#!/usr/bin/env python3
"""Writes the seed corpus of fuzz_gqa (tests/fuzz/corpus/): a few hand-made inputs, one per kind
of call (see decode_input() in fuzz_gqa.c for the byte layout), plus deterministic random ones.
Re-run only to change the seeds: python3 tests/fuzz/make_corpus.py"""
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
    "bad_overflow": seed(0, 0, 1, 9, 1, 1, 7, 3, 2, 1),
    "bad_cache_len": seed(1, 0, 1, 0, 1, 1, 7, 3, 3, 0),
    "bad_extreme_batch": bytes([1, 0, 0, 243, 0, 0, 0, 7, 3, 1, 0, 0, 0, 0]) + bytes(12),
    # device byte 250: the next field byte picks from -1..3; 3 -> -1 + 3 = GQA_DEVICE_CUDA (2)
    "bad_device_cuda": bytes([0, 0, 250, 3]) + seed(0, 0, 1, 2, 1, 1, 7, 15, 2, 1)[3:],
}

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
