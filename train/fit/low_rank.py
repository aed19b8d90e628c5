"""Low-rank deltas (LoRA) on the matrices of an expert's trainable blocks.

A matrix W of a trainable block is reparametrised as W + (alpha / rank) * B @ A, with A (rank, in)
random and B (out, rank) zero, so training starts from the pretrained weights exactly; W itself is
frozen, the block's biases and norms train in full. Why: an expert then differs from its
pretrained backbone by a few hundred thousand numbers, which makes its adapter file (see
`detector.adapter`) small enough to commit, and stage 1 cannot drift far from the pretrained
features on a few thousand images.

torch's parametrize keeps the state dict keys stable (`...parametrizations.<name>.original`,
`...parametrizations.<name>.0.a`/`.b`), so checkpoints and the stage-2 teacher (a deep copy)
work unchanged; `merge` folds the deltas into plain weights before export.
"""
from __future__ import annotations

import math

import torch
from torch import nn
from torch.nn.utils import parametrize

from detector.expert import Expert
from train.fit.freeze import trainable_names


class LowRankDelta(nn.Module):
    def __init__(self, out_features: int, in_features: int, rank: int, alpha: float) -> None:
        super().__init__()
        self.a = nn.Parameter(torch.empty(rank, in_features))
        self.b = nn.Parameter(torch.zeros(out_features, rank))
        nn.init.kaiming_uniform_(self.a, a=math.sqrt(5))
        self.scale = alpha / rank

    def delta(self) -> torch.Tensor:
        return (self.b @ self.a) * self.scale

    def forward(self, weight: torch.Tensor) -> torch.Tensor:
        return weight + self.delta().to(weight.dtype)


def add_low_rank(expert: Expert, trainable_blocks: int | str, rank: int, alpha: float) -> list[str]:
    """Put a LowRankDelta on every matrix among the backbone's trainable parameters (the last
    `trainable_blocks` blocks and the backbone's head part, as the backbone describes its parts:
    train.fit.freeze); returns the names of those matrices."""
    if rank <= 0:
        raise ValueError(f"rank must be > 0, got {rank}")
    params = dict(expert.backbone.named_parameters())
    names = sorted(n for n in trainable_names(expert, trainable_blocks) if params[n].ndim == 2)
    for name in names:
        owner, _, leaf = name.rpartition(".")
        module = expert.backbone.get_submodule(owner)
        out_features, in_features = params[name].shape
        delta = LowRankDelta(out_features, in_features, rank, alpha).to(params[name].device)
        parametrize.register_parametrization(module, leaf, delta, unsafe=True)
    return names


def low_rank_deltas(expert: Expert) -> dict[str, LowRankDelta]:
    """Backbone parameter name (as after merge) -> its LowRankDelta."""
    out = {}
    for module_name, module in expert.backbone.named_modules():
        if parametrize.is_parametrized(module):
            for leaf, plist in module.parametrizations.items():
                for p in plist:
                    if isinstance(p, LowRankDelta):
                        out[f"{module_name}.{leaf}".lstrip(".")] = p
    return out


def freeze_originals(expert: Expert) -> None:
    """The reparametrised matrices themselves never train: only their deltas do."""
    for module in expert.backbone.modules():
        if parametrize.is_parametrized(module):
            for plist in module.parametrizations.values():
                plist.original.requires_grad_(False)


def merge(expert: Expert) -> Expert:
    """Fold every delta into its weight and drop the parametrisations (in place)."""
    for module in list(expert.backbone.modules()):
        if parametrize.is_parametrized(module):
            for leaf in list(module.parametrizations.keys()):
                parametrize.remove_parametrizations(module, leaf, leave_parametrized=True)
    return expert
