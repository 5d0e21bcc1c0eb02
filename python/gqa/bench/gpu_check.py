"""Is an output right? A float32 attention reference made of plain torch ops (never SDPA, so it
cannot share a bug with a peer), computed per sequence and in head chunks to bound memory."""
from __future__ import annotations

import math

import torch


def checked_sequences(batch: int) -> list[int]:
    """The first and the last sequence: cheap, and a batch-indexing bug shows in the last."""
    return sorted({0, batch - 1})


def reference(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, q_start: int,
              budget_bytes: int = 1 << 30) -> torch.Tensor:
    """One sequence: q [Sq, Hq, D], k/v [Skv, Hkv, D]; query i is at position q_start + i and sees
    keys 0 .. q_start + i (decode: q_start = Skv - 1 sees them all). Returns float32 [Sq, Hq, D]."""
    sq, hq, d = q.shape
    skv, hkv, _ = k.shape
    group = hq // hkv
    out = torch.empty(sq, hq, d, dtype=torch.float32, device=q.device)
    pos_q = q_start + torch.arange(sq, device=q.device)
    allowed = torch.arange(skv, device=q.device)[None, :] <= pos_q[:, None]  # [Sq, Skv]
    step = max(1, min(hq, budget_bytes // (2 * 4 * sq * skv)))  # scores + probabilities, fp32
    for h0 in range(0, hq, step):
        heads = torch.arange(h0, min(hq, h0 + step), device=q.device)
        qh = q[:, heads].float().transpose(0, 1)                 # [h, Sq, D]
        kh = k[:, heads // group].float().transpose(0, 1)        # [h, Skv, D]
        vh = v[:, heads // group].float().transpose(0, 1)
        scores = (qh @ kh.transpose(1, 2)) / math.sqrt(d)
        scores.masked_fill_(~allowed, float("-inf"))
        out[:, heads] = (scores.softmax(-1) @ vh).transpose(0, 1)
    return out


def max_abs_error(out: torch.Tensor, refs: dict[int, torch.Tensor]) -> float:
    """out [B, Sq, Hq, D] (BSHD, any strides) against {sequence: reference}; NaN stays NaN."""
    errs = [(out[b].float() - ref).abs().max().item() for b, ref in refs.items()]
    return float("nan") if any(e != e for e in errs) else max(errs)
