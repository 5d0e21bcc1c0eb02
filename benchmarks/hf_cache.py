"""Attention time per generated token in a Hugging Face decode step, SmolLM2-135M shapes:
libgqa over gqa.hf.GqaCache against stock SDPA over transformers' DynamicCache (the default
of generate) and StaticCache, for cache lengths 128..8192, in one run.

One layer's decode step is timed exactly as a transformers decoder layer runs it after RoPE:
``cache.update(key, value, layer)`` then the registered attention function (query [1,Hq,1,D]).
The cache length is held at L (each step's token is rolled back), and the per-token figure is
the layer figure times the model's 30 layers. Calls are interleaved (one burst of each peer in
turn, many rounds); the table gives the median and min-max of the per-call time.

    python benchmarks/hf_cache.py [--threads 1] [--lengths 128,512,...] [--rounds 15]
"""
from __future__ import annotations

import argparse
import os
import platform
import statistics
import time

import torch
import transformers
from transformers.integrations.sdpa_attention import sdpa_attention_forward

import gqa
from gqa import hf

LAYERS, Q_HEADS, KV_HEADS, HEAD_DIM = 30, 9, 3, 64  # SmolLM2-135M
SCALING = HEAD_DIM ** -0.5


class Module(torch.nn.Module):
    """What an attention function reads from its attention module."""

    is_causal = True
    num_key_value_groups = Q_HEADS // KV_HEADS
    layer_idx = 0


def config():
    return transformers.LlamaConfig(num_hidden_layers=1, num_attention_heads=Q_HEADS,
                                    num_key_value_heads=KV_HEADS, head_dim=HEAD_DIM,
                                    hidden_size=Q_HEADS * HEAD_DIM, max_position_embeddings=16384)


def randn(*shape):
    return torch.randn(*shape, dtype=torch.float32)


class Gqa:
    name = "libgqa + GqaCache"

    def __init__(self, length):
        cfg = config()
        cfg._attn_implementation = hf.register_hf_attention()
        self.cache = hf.GqaCache(cfg, max_cache_len=length + 1)
        self.module, self.length = Module(), length
        self.cache.update(randn(1, KV_HEADS, length, HEAD_DIM), randn(1, KV_HEADS, length, HEAD_DIM), 0)
        layer = self.cache.layers[0]
        layer.keys.copy_(randn(*layer.keys.shape))
        layer.values.copy_(randn(*layer.values.shape))
        layer.lens = [length]

    def step(self, q, k, v):
        key, value = self.cache.update(k, v, 0)
        out, _ = hf.attention_forward(self.module, q, key, value, None, scaling=SCALING)
        layer = self.cache.layers[0]  # back to L tokens
        layer.seen -= 1
        layer.lens = [self.length]
        return out


class SdpaDynamic:
    name = "sdpa + DynamicCache"

    def __init__(self, length):
        self.cache = transformers.DynamicCache(config=config())
        self.cache.update(randn(1, KV_HEADS, length, HEAD_DIM), randn(1, KV_HEADS, length, HEAD_DIM), 0)
        self.module, self.length = Module(), length

    def step(self, q, k, v):
        key, value = self.cache.update(k, v, 0)  # torch.cat: the whole cache, every step
        out, _ = sdpa_attention_forward(self.module, q, key, value, None, scaling=SCALING)
        layer = self.cache.layers[0]
        layer.keys, layer.values = layer.keys[:, :, :self.length], layer.values[:, :, :self.length]
        return out


class SdpaStatic:
    name = "sdpa + StaticCache"

    def __init__(self, length):
        self.cache = transformers.StaticCache(config=config(), max_cache_len=length + 1)
        self.cache.update(randn(1, KV_HEADS, length, HEAD_DIM), randn(1, KV_HEADS, length, HEAD_DIM), 0)
        self.module, self.length = Module(), length
        # Decode over a static cache needs the mask of its live positions (what HF builds).
        self.mask = torch.zeros(1, 1, 1, length + 1, dtype=torch.bool)
        self.mask[..., :length + 1] = True

    def step(self, q, k, v):
        key, value = self.cache.update(k, v, 0)  # index_copy_ of the new token
        out, _ = sdpa_attention_forward(self.module, q, key, value, self.mask, scaling=SCALING)
        self.cache.layers[0].cumulative_length.sub_(1)
        return out


PEERS = (Gqa, SdpaDynamic, SdpaStatic)


def check_agreement(length):
    """Every peer gives the same output for the same step (libgqa's check against SDPA)."""
    peers = [peer(length) for peer in PEERS]
    base = peers[0].cache.layers[0]
    keys, values = base.keys[:, :length].transpose(1, 2), base.values[:, :length].transpose(1, 2)
    for other in peers[1:]:
        layer = other.cache.layers[0]
        layer.keys[:, :, :length].copy_(keys)
        layer.values[:, :, :length].copy_(values)
    q, k, v = randn(1, Q_HEADS, 1, HEAD_DIM), randn(1, KV_HEADS, 1, HEAD_DIM), randn(1, KV_HEADS, 1, HEAD_DIM)
    outs = [peer.step(q, k, v) for peer in peers]
    for peer, out in zip(peers[1:], outs[1:]):
        error = (out - outs[0]).abs().max().item()
        assert error < 1e-4, f"{peer.name} differs from libgqa by {error} at L={length}"


def measure(length, rounds, burst):
    peers = [peer(length) for peer in PEERS]
    q, k, v = randn(1, Q_HEADS, 1, HEAD_DIM), randn(1, KV_HEADS, 1, HEAD_DIM), randn(1, KV_HEADS, 1, HEAD_DIM)
    times = {peer.name: [] for peer in peers}
    for peer in peers:  # warm-up
        for _ in range(3):
            peer.step(q, k, v)
    for _ in range(rounds):
        for peer in peers:
            start = time.perf_counter_ns()
            for _ in range(burst):
                peer.step(q, k, v)
            times[peer.name].append((time.perf_counter_ns() - start) / burst / 1e3)
    return times


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--lengths", default="128,256,512,1024,2048,4096,8192")
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--burst", type=int, default=20)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    gqa.set_num_threads(args.threads)
    lengths = [int(x) for x in args.lengths.split(",")]
    print(f"# HF decode step, SmolLM2-135M shapes ({Q_HEADS}:{KV_HEADS}, d{HEAD_DIM}, f32, batch 1), "
          f"{args.threads} thread(s); torch {torch.__version__}, transformers {transformers.__version__}, "
          f"libgqa {gqa.version()}")
    print(f"# CPU: {cpu_model()}; load average {os.getloadavg()[0]:.2f}; {args.rounds} rounds x {args.burst} calls")
    names = [peer.name for peer in PEERS]
    print("| L | " + " | ".join(f"{n} us/layer (min-max)" for n in names) + " | libgqa ms/token (30 layers) "
          "| stock sdpa ms/token | libgqa / stock |")
    print("|---:|" + "---:|" * (len(names) + 3))
    for length in lengths:
        check_agreement(length)
        times = measure(length, args.rounds, args.burst)
        med = {n: statistics.median(t) for n, t in times.items()}
        cells = [f"{med[n]:.1f} ({min(times[n]):.1f}-{max(times[n]):.1f})" for n in names]
        ours, stock = med[names[0]], med[names[1]]
        print(f"| {length} | " + " | ".join(cells) + f" | {ours * LAYERS / 1e3:.2f} | {stock * LAYERS / 1e3:.2f} "
              f"| {ours / stock:.2f} |", flush=True)


def cpu_model():
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip() + f" ({os.cpu_count()} logical CPUs)"
    except OSError:
        pass
    return platform.processor()


if __name__ == "__main__":
    main()
