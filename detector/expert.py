"""One expert: a backbone, the feature it reads, and the paper's two-layer head."""
from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Sequence

import torch
from torch import nn

from detector.backbones import Backbone, build_backbone
from detector.spec import ExpertSpec, HeadSpec, SpecError

FAKE_CLASS = 1  # logits index of "AI-generated"; P(fake) = softmax(logits)[FAKE_CLASS]


def build_head(spec: HeadSpec) -> nn.Module:
    if spec.hidden == 0:  # a linear probe (the UnivFD baseline)
        return nn.Sequential(nn.Linear(spec.in_dim, spec.classes))
    return nn.Sequential(
        nn.Linear(spec.in_dim, spec.hidden),
        nn.ReLU(inplace=True),
        nn.Dropout(spec.dropout),
        nn.Linear(spec.hidden, spec.classes),
    )


class Expert(nn.Module):
    def __init__(self, spec: ExpertSpec, backbone: Backbone) -> None:
        super().__init__()
        if spec.feature not in backbone.features:
            raise SpecError(
                f"expert {spec.name!r}: backbone {spec.backbone.model!r} offers features "
                f"{backbone.features}, not {spec.feature!r}"
            )
        dim = backbone.feature_dim(spec.feature)
        if dim != spec.head.in_dim:
            raise SpecError(
                f"expert {spec.name!r}: head expects {spec.head.in_dim} inputs but feature "
                f"{spec.feature!r} of {spec.backbone.model!r} has {dim}"
            )
        self.spec = spec
        self.backbone = backbone
        self.head = build_head(spec.head)

    @classmethod
    def build(cls, spec: ExpertSpec, pretrained: str | Path | None = None) -> "Expert":
        """The expert, its backbone from `pretrained` local weights if given. Where those weights
        define the architecture (a transformers model folder), the spec records it: a bundle or
        adapter made from this expert then rebuilds the same model without the folder."""
        backbone = build_backbone(spec.backbone, pretrained)
        if backbone.config_from_weights is not None:
            spec = replace(spec, backbone=replace(spec.backbone, config=backbone.config_from_weights))
        return cls(spec, backbone)

    def forward(
        self, pixels: torch.Tensor, blocks: Sequence[int] = ()
    ) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """pixels (B, 3, S, S) -> logits (B, classes) and token features of `blocks`."""
        feature, tokens = self.backbone(pixels, self.spec.feature, blocks)
        return self.head(feature), tokens

    def forward_tail(
        self, hidden: torch.Tensor, start: int, blocks: Sequence[int] = ()
    ) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """The same as forward, from the output of the first `start` blocks (a shared trunk's)."""
        feature, tokens = self.backbone.forward_tail(hidden, start, self.spec.feature, blocks)
        return self.head(feature), tokens

    @staticmethod
    def prob_fake(logits: torch.Tensor) -> torch.Tensor:
        return logits.float().softmax(dim=-1)[:, FAKE_CLASS]


def param_bytes(module: nn.Module, dtype: torch.dtype | None = None) -> int:
    """Bytes of the parameters and buffers, as stored or as if cast to `dtype`."""
    total = 0
    for tensor in list(module.parameters()) + list(module.buffers()):
        size = torch.empty((), dtype=dtype).element_size() if dtype else tensor.element_size()
        total += tensor.numel() * size
    return total
