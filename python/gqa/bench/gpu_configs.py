"""The GPU benchmark grid and its arithmetic: bytes, FLOPs, rotation copies,
tolerances. Pure Python (no torch, no libgqa calls), so CI tests it without a GPU."""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass

# (name, num_q_heads, num_kv_heads, head_dim)
MODELS = [
    ("Qwen2.5-0.5B", 14, 2, 64),
    ("Phi-3-mini", 32, 32, 96),
    ("Llama-3-8B", 32, 8, 128),
]
DTYPES = ["fp16", "bf16"]
DECODE_BATCHES = [1, 16, 64]
DECODE_CACHE_LENS = [1024, 8192, 32768]
PREFILL_SEQ_LENS = [512, 2048, 8192]
PREFILL_TOKENS = 16384  # batch = PREFILL_TOKENS // seq_len, so every row does the same token count
# Chunked prefill (libgqa only): (model, batch, start_pos, seq_len): the last chunk of a prompt.
CHUNKED = [("Llama-3-8B", 4, 6144, 2048), ("Qwen2.5-0.5B", 16, 1536, 512)]

PEERS = ["flash", "cudnn", "efficient"]  # torch SDPA backends, in table order
PEER_TITLES = {"flash": "SDPA flash (FA2)", "cudnn": "SDPA cuDNN", "efficient": "SDPA mem-efficient"}

# Max |libgqa - float32 reference| on N(0, 1) inputs above which a row is wrong (not timed).
TOLERANCE = {"fp16": 2e-2, "bf16": 5e-2}
ELEMENT_BYTES = {"fp16": 2, "bf16": 2}

# Targets: decode >= 90% of the copy bandwidth once K+V exceed 64 MB, and no slower than the
# best peer; prefill no slower than cuDNN and FA2.
DECODE_BW_TARGET = 0.90
DECODE_BW_MIN_BYTES = 64e6


@dataclass(frozen=True)
class GpuConfig:
    op: str              # "decode", "prefill" or "prefill-chunked"
    model: str
    num_q_heads: int
    num_kv_heads: int
    head_dim: int
    dtype: str
    batch: int
    seq_len: int         # new tokens per sequence (decode: 1)
    past: int            # decode: cache_len; chunked prefill: start_pos; prefill: 0

    @property
    def label(self) -> str:
        if self.op == "decode":
            shape = f"B={self.batch} L={self.past}"
        elif self.op == "prefill":
            shape = f"B={self.batch} S={self.seq_len}"
        else:
            shape = f"B={self.batch} P={self.past} S={self.seq_len}"
        return f"{self.op} {self.model} {shape} {self.dtype}"

    @property
    def shape_name(self) -> str:
        return f"{self.model} {self.num_q_heads}:{self.num_kv_heads} d{self.head_dim}"

    @property
    def elem(self) -> int:
        return ELEMENT_BYTES[self.dtype]

    @property
    def kv_len(self) -> int:
        """Key positions the last query sees: past + seq_len."""
        return self.past + self.seq_len

    def kv_bytes(self) -> float:
        """Decode: K and V bytes read, cache_len + 1 positions of every sequence and KV head."""
        return 2.0 * self.batch * self.kv_len * self.num_kv_heads * self.head_dim * self.elem

    def flops(self) -> float:
        """FlashAttention's convention: 4·B·Hq·D per visible (query, key) pair (Q·Kᵀ and P·V),
        with S²/2 pairs for causal (the diagonal's extra S/2 is ignored). Chunked prefill adds
        S·P pairs for the cached prefix: 4·B·Hq·D·(S·P + S²/2)."""
        s = self.seq_len
        pairs = s * self.past + s * s / 2.0
        return 4.0 * self.batch * self.num_q_heads * self.head_dim * pairs

    def copy_bytes(self) -> int:
        """Device bytes of one input copy (what rotation duplicates): q, k, v, and the caches."""
        b, d, e = self.batch, self.head_dim, self.elem
        q = b * self.seq_len * self.num_q_heads * d * e
        kv = 2 * b * self.seq_len * self.num_kv_heads * d * e
        caches = 2 * b * self.kv_len * self.num_kv_heads * d * e if self.op != "prefill" else 0
        return q + kv + caches

    def as_dict(self) -> dict:
        return {**asdict(self), "label": self.label}


def _model(name: str):
    return next(m for m in MODELS if m[0] == name)


def decode_configs(quick: bool = False) -> list[GpuConfig]:
    batches = DECODE_BATCHES[:2] if quick else DECODE_BATCHES
    lens = DECODE_CACHE_LENS[:2] if quick else DECODE_CACHE_LENS
    dtypes = DTYPES[:1] if quick else DTYPES
    return [GpuConfig("decode", name, hq, hkv, d, dtype, b, 1, length)
            for name, hq, hkv, d in MODELS for dtype in dtypes for b in batches for length in lens]


def prefill_configs(quick: bool = False) -> list[GpuConfig]:
    seqs = PREFILL_SEQ_LENS[:2] if quick else PREFILL_SEQ_LENS
    dtypes = DTYPES[:1] if quick else DTYPES
    rows = [GpuConfig("prefill", name, hq, hkv, d, dtype, PREFILL_TOKENS // s, s, 0)
            for name, hq, hkv, d in MODELS for dtype in dtypes for s in seqs]
    for name, b, start, s in CHUNKED[:1] if quick else CHUNKED:
        _, hq, hkv, d = _model(name)
        rows += [GpuConfig("prefill-chunked", name, hq, hkv, d, dtype, b, s, start) for dtype in dtypes]
    return rows


def select(configs: list[GpuConfig], only: str) -> list[GpuConfig]:
    """--only: keep configs whose label contains any of the comma-separated substrings."""
    words = [w.strip() for w in only.split(",") if w.strip()]
    return [c for c in configs if not words or any(w in c.label for w in words)]


def rotation_copies(copy_bytes: float, l2_bytes: float, budget_bytes: float, *, factor: float = 4.0,
                    max_copies: int = 256) -> int:
    """How many copies of the inputs to cycle through so that consecutive timed calls find
    nothing of theirs in L2: enough for factor x L2 in all (one when a copy alone is larger),
    at most max_copies, and no more than budget_bytes hold. 0: not even one copy fits."""
    want = max(1, math.ceil(factor * l2_bytes / max(copy_bytes, 1.0)))
    fit = int(budget_bytes // max(copy_bytes, 1.0))
    return max(0, min(want, max_copies, fit))


def within_tolerance(err: float, dtype: str) -> bool:
    return err == err and err <= TOLERANCE[dtype]  # err == err: NaN is never within tolerance
