"""Which parts of an expert train: all of the backbone, its last N blocks, or none (head only).

The backbone says what its parts are (detector.backbones: stem, blocks, head), so open_clip,
timm and transformers towers are handled alike without reading their parameter names. Training
the last N blocks trains those blocks, the backbone's head part (final norm, pooling,
projection) and the expert's head; the stem and the first blocks are frozen. Whatever is frozen
gets requires_grad False and is kept in eval mode (dropout off, norms fixed) while the rest trains.
"""
from __future__ import annotations

from typing import Union

from torch import nn

from detector.backbones import ParameterGroups
from detector.expert import Expert


def backbone_parts(expert: Expert) -> ParameterGroups:
    """The backbone's parameter names by part (stem, blocks[i], head)."""
    return expert.backbone.parameter_groups()


def trainable_names(expert: Expert, trainable_blocks: Union[str, int]) -> set[str]:
    """Backbone parameter names that train under a `trainable_blocks` setting."""
    if trainable_blocks == "all":
        return {name for name, _ in expert.backbone.named_parameters()}
    parts = backbone_parts(expert)
    n = len(parts.blocks)
    last = 0 if trainable_blocks == "none" else min(int(trainable_blocks), n)
    if last == 0:
        return set()
    names = set(parts.head)
    for block in parts.blocks[n - last:]:
        names.update(block)
    return names


def apply_trainable(expert: Expert, trainable_blocks: Union[str, int]) -> list[nn.Parameter]:
    """Set requires_grad (head always trains) and return the trainable parameters."""
    names = trainable_names(expert, trainable_blocks)
    for name, param in expert.backbone.named_parameters():
        param.requires_grad_(name in names)
    for param in expert.head.parameters():
        param.requires_grad_(True)
    return [p for p in expert.parameters() if p.requires_grad]


def set_train_mode(model: nn.Module) -> None:
    """train() the model, then put every module without a trainable parameter back in eval()."""
    model.train()
    for module in model.modules():
        params = list(module.parameters())
        if params and not any(p.requires_grad for p in params):
            module.eval()


def freeze(model: nn.Module) -> nn.Module:
    """A frozen module (the stage-2 teacher): no gradients, eval mode."""
    for param in model.parameters():
        param.requires_grad_(False)
    return model.eval()
