"""Which parts of an expert train: all of the backbone, its last N blocks, or none (head only).

Backbone parameters fall in three parts, read from their names so that the open_clip and
transformers towers are handled alike: `pre` (patch embedding, position and class embeddings, the
pre-norm), `blocks[i]` (transformer block i) and `post` (final norm, projection, attention pool).
Training the last N blocks trains those blocks, `post` and the head. Whatever is frozen gets
requires_grad False and is kept in eval mode (dropout off, norms fixed) while the rest trains.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Union

from torch import nn

from detector.expert import Expert

# transformer block containers: open_clip (.resblocks), timm trunks (.blocks), transformers (.layers)
_BLOCK = re.compile(r"\.(?:resblocks|blocks|layers)\.(\d+)\.")
_PRE = ("conv1", "class_embedding", "positional_embedding", "ln_pre", "patch_embed", "pos_embed",
        "cls_token", "reg_token", "norm_pre", "embeddings", "pre_layrnorm", "patch_dropout")


@dataclass
class BackboneParts:
    pre: list[str] = field(default_factory=list)
    blocks: dict[int, list[str]] = field(default_factory=dict)
    post: list[str] = field(default_factory=list)


def backbone_parts(expert: Expert) -> BackboneParts:
    parts = BackboneParts()
    for name, _ in expert.backbone.named_parameters():
        match = _BLOCK.search("." + name)
        if match:
            parts.blocks.setdefault(int(match.group(1)), []).append(name)
        elif any(f".{p}" in "." + name for p in _PRE):
            parts.pre.append(name)
        else:
            parts.post.append(name)
    n = expert.backbone.num_blocks()
    if sorted(parts.blocks) != list(range(n)):
        raise ValueError(f"found blocks {sorted(parts.blocks)} in {expert.spec.backbone.model}, "
                         f"expected 0..{n - 1}")
    return parts


def trainable_names(expert: Expert, trainable_blocks: Union[str, int]) -> set[str]:
    """Backbone parameter names that train under a `trainable_blocks` setting."""
    parts = backbone_parts(expert)
    n = len(parts.blocks)
    if trainable_blocks == "all":
        return {name for name, _ in expert.backbone.named_parameters()}
    last = 0 if trainable_blocks == "none" else min(int(trainable_blocks), n)
    if last == 0:
        return set()
    names = set(parts.post)
    for i in range(n - last, n):
        names.update(parts.blocks[i])
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
