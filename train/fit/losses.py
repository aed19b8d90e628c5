"""The two training objectives: classification (stage 1) and dense self-distillation (stage 2).

Stage 2's loss is stage 1's cross-entropy on the degraded view plus `weight` times the mean over
the chosen blocks of the MSE between the student's tokens (degraded view) and the frozen
teacher's tokens (reference view). Both views share their geometry, so token i of one and token i
of the other cover the same image area. Losses are computed in float32 even under autocast.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import torch
import torch.nn.functional as F


@dataclass
class LossParts:
    total: torch.Tensor
    ce: torch.Tensor
    distill: torch.Tensor

    def floats(self) -> dict[str, float]:
        return {k: float(getattr(self, k).detach()) for k in ("total", "ce", "distill")}


def classification_loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    return F.cross_entropy(logits.float(), labels)


def distillation_loss(student: Sequence[torch.Tensor], teacher: Sequence[torch.Tensor]) -> torch.Tensor:
    """Mean over blocks of the token-wise L2 (MSE) between student and teacher features (B, N, C)."""
    if len(student) != len(teacher) or not student:
        raise ValueError(f"need matching, non-empty token lists, got {len(student)} and {len(teacher)}")
    losses = []
    for s, t in zip(student, teacher):
        if s.shape != t.shape:
            raise ValueError(f"student tokens {tuple(s.shape)} and teacher tokens "
                             f"{tuple(t.shape)} differ")
        losses.append(F.mse_loss(s.float(), t.detach().float()))
    return torch.stack(losses).mean()


def stage_loss(logits: torch.Tensor, labels: torch.Tensor,
               student_tokens: Sequence[torch.Tensor] = (),
               teacher_tokens: Sequence[torch.Tensor] = (), weight: float = 0.0) -> LossParts:
    ce = classification_loss(logits, labels)
    if weight > 0 and student_tokens:
        distill = distillation_loss(student_tokens, teacher_tokens)
        return LossParts(ce + weight * distill, ce, distill)
    return LossParts(ce, ce, torch.zeros((), device=ce.device))


def resolve_blocks(blocks: Sequence[int], num_blocks: int) -> list[int]:
    """Block indices with negatives counted from the end (-1: the last block), checked."""
    out = []
    for b in blocks:
        i = b + num_blocks if b < 0 else b
        if not 0 <= i < num_blocks:
            raise ValueError(f"block {b} is out of range for a backbone of {num_blocks} blocks")
        out.append(i)
    return sorted(set(out))
