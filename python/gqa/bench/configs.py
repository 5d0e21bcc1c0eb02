"""The CPU benchmark grid: three model shapes, causal prefill and decode, three
dtypes, and the byte and FLOP counts every figure is derived from."""
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
QUICK_PREFILL_SEQ_LENS = [128, 512]
QUICK_DECODE_SHAPES = [(1, 1024), (1, 8192)]

# Targets of issue 18, and what a row needs to be judged against them.
PREFILL_TARGET = 1.5        # libgqa at least this many times faster than the fastest peer
DECODE_TARGET = 1.2
DECODE_COPY_TARGET = 0.6    # of the measured copy bandwidth, when K+V exceed the L2 caches

# The idle-gap experiment (issue 18 item 2): one short decode call after this many ms of idle.
WAKE_GAPS_MS = [0, 1, 10, 50]


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
    def group(self) -> int:
        return self.num_q_heads // self.num_kv_heads

    @property
    def shape(self) -> str:
        return f"S={self.seq_len}" if self.op == "prefill" else f"B={self.batch} L={self.cache_len}"

    @property
    def heads(self) -> str:
        return f"{self.num_q_heads}:{self.num_kv_heads} d{self.head_dim}"

    @property
    def label(self) -> str:
        return f"{self.op} {self.model} {self.shape} {self.dtype}"

    @property
    def elem_bytes(self) -> int:
        return 4 if self.dtype == "f32" else 2

    def flops(self) -> float:
        """Causal prefill: 2*B*Hq*D*S*(S+1) (Q.K^T and P.V, 2*D flops per visible pair, S(S+1)/2 pairs)."""
        s = self.seq_len
        return 2.0 * self.batch * self.num_q_heads * self.head_dim * s * (s + 1)

    def kv_bytes(self) -> float:
        """Decode: bytes of K and V read, cache_len + 1 positions of every sequence and KV head."""
        return 2.0 * self.batch * (self.cache_len + 1) * self.num_kv_heads * self.head_dim * self.elem_bytes


def all_configs(quick: bool = False) -> list[Config]:
    seq_lens = QUICK_PREFILL_SEQ_LENS if quick else PREFILL_SEQ_LENS
    shapes = QUICK_DECODE_SHAPES if quick else DECODE_SHAPES
    configs = []
    for name, hq, hkv, d in MODELS:
        for dtype in DTYPES:
            for s in seq_lens:
                configs.append(Config("prefill", name, hq, hkv, d, dtype, 1, s, 0))
            for b, length in shapes:
                configs.append(Config("decode", name, hq, hkv, d, dtype, b, 1, length))
    return configs


def select(configs: list[Config], only: str) -> list[Config]:
    """Configs whose label contains any of the comma-separated substrings of `only` (all if empty)."""
    wanted = [part.strip() for part in only.split(",") if part.strip()]
    return [c for c in configs if not wanted or any(w in c.label for w in wanted)]


def wake_config() -> Config:
    """A short decode call (~0.1 ms): the case where a pool that sleeps at once costs the most."""
    return Config("decode", "Llama-3-8B", 32, 8, 128, "f32", 1, 1, 1024)
