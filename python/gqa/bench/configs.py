"""The benchmark grid (issue 6): three model shapes, causal prefill and decode, three dtypes."""
from __future__ import annotations

from dataclasses import dataclass

# (name, num_q_heads, num_kv_heads, head_dim)
MODELS = [
    ("Qwen2.5-0.5B", 14, 2, 64),
    ("Phi-3-mini", 32, 32, 96),
    ("Llama-3-8B", 32, 8, 128),
]
PREFILL_SEQ_LENS = [128, 512, 2048]
DECODE_SHAPES = [(1, 1024), (1, 8192), (8, 1024), (8, 8192)]  # (batch, cache_len)
DTYPES = ["f32", "bf16", "f16"]
TORCH_DTYPES = {"f32", "bf16"}  # f16 is measured for libgqa only


@dataclass(frozen=True)
class Config:
    op: str            # "prefill" or "decode"
    model: str
    num_q_heads: int
    num_kv_heads: int
    head_dim: int
    dtype: str
    batch: int
    seq_len: int       # prefill: new tokens; decode: 1
    cache_len: int     # decode: tokens already cached (the query attends over cache_len + 1)

    @property
    def label(self) -> str:
        shape = f"S={self.seq_len}" if self.op == "prefill" else f"B={self.batch} L={self.cache_len}"
        return f"{self.op} {self.model} {shape} {self.dtype}"

    def flops(self) -> float:
        """Causal prefill: 2*B*Hq*D*S*(S+1) (Q.K^T and P.V, 2*D flops per visible pair, S(S+1)/2 pairs)."""
        s = self.seq_len
        return 2.0 * self.batch * self.num_q_heads * self.head_dim * s * (s + 1)

    def kv_bytes(self) -> float:
        """Decode: bytes of K and V read, cache_len + 1 positions of every sequence and KV head."""
        elem = 4 if self.dtype == "f32" else 2
        return 2.0 * self.batch * (self.cache_len + 1) * self.num_kv_heads * self.head_dim * elem


def all_configs(quick: bool = False) -> list[Config]:
    configs = []
    for name, hq, hkv, d in MODELS:
        for dtype in DTYPES:
            for s in PREFILL_SEQ_LENS[:2] if quick else PREFILL_SEQ_LENS:
                configs.append(Config("prefill", name, hq, hkv, d, dtype, 1, s, 0))
            for b, length in DECODE_SHAPES[:2] if quick else DECODE_SHAPES:
                configs.append(Config("decode", name, hq, hkv, d, dtype, b, 1, length))
    return configs
