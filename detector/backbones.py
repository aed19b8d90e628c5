"""Vision backbones behind one small interface, built from a BackboneSpec.

Two backends: open_clip (CLIP ViTs, and SigLIP through its timm-trunk configs) and transformers
(SiglipVisionModel, CLIP vision towers). Weights come only from explicit local paths; nothing here
can reach a model hub: open_clip is given no pretrained tag and transformers runs with
local_files_only.
"""
from __future__ import annotations

import copy
from pathlib import Path
from typing import Any, Sequence

import torch
from torch import nn

from detector.spec import BackboneSpec, Feature, SpecError

# transformers vision classes we know how to read features from: class name -> features offered.
TRANSFORMERS_CLASSES: dict[str, tuple[Feature, ...]] = {
    "SiglipVisionModel": ("pooled",),
    "CLIPVisionModel": ("pooled",),
    "CLIPVisionModelWithProjection": ("embed",),
}


class WeightsNotFoundError(FileNotFoundError):
    """Pretrained backbone weights were named but are not on disk."""


class Backbone(nn.Module):
    """One forward pass gives the pooled feature and, on request, token features of chosen blocks.

    Token features are (B, N, C) patch tokens (prefix tokens removed), used by the stage-2 dense
    self-distillation; blocks are 0-based indices into the transformer's block list.
    """

    features: tuple[Feature, ...] = ()

    def feature_dim(self, feature: Feature) -> int:
        raise NotImplementedError

    def num_blocks(self) -> int:
        raise NotImplementedError

    def forward(
        self, pixels: torch.Tensor, feature: Feature, blocks: Sequence[int] = ()
    ) -> tuple[torch.Tensor, list[torch.Tensor]]:
        raise NotImplementedError

    # Split execution, for experts that share their first blocks (one trunk pass for all).
    def trunk_modules(self, upto: int) -> list[nn.Module | nn.Parameter]:
        raise NotImplementedError(f"{type(self).__name__} cannot share a trunk")

    def forward_trunk(self, pixels: torch.Tensor, upto: int) -> torch.Tensor:
        raise NotImplementedError(f"{type(self).__name__} cannot share a trunk")

    def forward_tail(
        self, hidden: torch.Tensor, start: int, feature: Feature, blocks: Sequence[int] = ()
    ) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """Blocks `start`.. on the trunk's output: the feature and the patch tokens of `blocks`
        (indices >= start, as in forward)."""
        raise NotImplementedError(f"{type(self).__name__} cannot share a trunk")


def deep_merge(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    out = copy.deepcopy(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = deep_merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


class OpenClipBackbone(Backbone):
    """open_clip's vision tower alone: the text tower is never built, so no memory goes to it."""

    def __init__(self, spec: BackboneSpec) -> None:
        super().__init__()
        import open_clip
        from open_clip.model import CLIPVisionCfg, _build_vision_tower

        base = open_clip.get_model_config(spec.model)
        if base is None and not spec.config:
            raise SpecError(f"open_clip has no model config named {spec.model!r}")
        cfg = deep_merge(base or {}, spec.config)
        vision_cfg = CLIPVisionCfg(**cfg["vision_cfg"])
        self.embed_dim = int(cfg["embed_dim"])
        self.is_timm = bool(vision_cfg.timm_model_name)
        self.visual = _build_vision_tower(
            self.embed_dim, vision_cfg, quick_gelu=bool(cfg.get("quick_gelu", False))
        )
        self.features = ("embed",)

    def feature_dim(self, feature: Feature) -> int:
        return self.embed_dim

    def num_blocks(self) -> int:
        if self.is_timm:
            return len(self.visual.trunk.blocks)
        return len(self.visual.transformer.resblocks)

    def forward(self, pixels, feature, blocks=()):
        if not blocks:
            return self.visual(pixels), []
        out = self.visual.forward_intermediates(pixels, indices=list(blocks), output_fmt="NLC")
        return out["image_features"], list(out["image_intermediates"])

    def trunk_modules(self, upto: int):
        if self.is_timm:
            return super().trunk_modules(upto)
        v = self.visual
        return [v.conv1, v.class_embedding, v.positional_embedding, v.ln_pre,
                *v.transformer.resblocks[:upto]]

    def forward_trunk(self, pixels, upto):
        if self.is_timm:
            return super().forward_trunk(pixels, upto)
        x = self.visual._embeds(pixels)
        for block in self.visual.transformer.resblocks[:upto]:
            x = block(x) if self.visual.transformer.batch_first else block(x.transpose(0, 1)).transpose(0, 1)
        return x

    def forward_tail(self, hidden, start, feature, blocks=()):
        if any(b < start for b in blocks):
            raise ValueError(f"blocks {sorted(blocks)}: the tail starts at block {start}")
        x, tokens = hidden, []
        prefix = 1  # open_clip ViTs always lead with one class token (as forward_intermediates)
        for i, block in enumerate(self.visual.transformer.resblocks[start:], start=start):
            x = block(x) if self.visual.transformer.batch_first else block(x.transpose(0, 1)).transpose(0, 1)
            if i in blocks:
                tokens.append(x[:, prefix:])
        pooled, _ = self.visual._pool(x)
        return (pooled @ self.visual.proj if self.visual.proj is not None else pooled), tokens

    def share_trunk_with(self, other: "OpenClipBackbone", upto: int) -> None:
        """Use `other`'s modules for the first `upto` blocks (same weights): memory held once."""
        v, o = self.visual, other.visual
        v.conv1, v.class_embedding, v.positional_embedding, v.ln_pre = (
            o.conv1, o.class_embedding, o.positional_embedding, o.ln_pre)
        for i in range(upto):
            v.transformer.resblocks[i] = o.transformer.resblocks[i]

    def load_pretrained(self, path: Path) -> None:
        """Load an open_clip checkpoint (full CLIP or vision-only state dict, .safetensors or torch)."""
        from open_clip.factory import load_state_dict

        self.load_state(load_state_dict(str(path)))

    def load_state(self, state: dict[str, torch.Tensor]) -> None:
        """Load an already-read open_clip state dict (full CLIP or vision-only), strictly."""
        if any(k.startswith("visual.") for k in state):
            state = {k[len("visual."):]: v for k, v in state.items() if k.startswith("visual.")}
        self.visual.load_state_dict(state, strict=True)


class TransformersBackbone(Backbone):
    def __init__(self, spec: BackboneSpec, weights_dir: Path | None = None) -> None:
        super().__init__()
        import transformers

        if spec.model not in TRANSFORMERS_CLASSES:
            raise SpecError(
                f"transformers backbone {spec.model!r} is not supported; "
                f"choose one of {sorted(TRANSFORMERS_CLASSES)}"
            )
        cls = getattr(transformers, spec.model)
        if weights_dir is not None:
            self.model = cls.from_pretrained(str(weights_dir), local_files_only=True)
        else:
            if not spec.config:
                raise SpecError(f"transformers backbone {spec.model!r} needs a config dict")
            self.model = cls(cls.config_class.from_dict(spec.config))
        self.features = TRANSFORMERS_CLASSES[spec.model]
        self.config_dict = self.model.config.to_dict()

    def feature_dim(self, feature: Feature) -> int:
        cfg = self.model.config
        if feature == "embed":
            return int(cfg.projection_dim)
        return int(cfg.hidden_size)

    def num_blocks(self) -> int:
        return int(self.model.config.num_hidden_layers)

    def forward(self, pixels, feature, blocks=()):
        out = self.model(pixel_values=pixels, output_hidden_states=bool(blocks))
        tokens = []
        if blocks:
            # hidden_states[0] is the embedding output; block i's output is hidden_states[i + 1].
            prefix = 1 if "CLIP" in type(self.model).__name__ else 0
            tokens = [out.hidden_states[i + 1][:, prefix:] for i in blocks]
        if feature == "embed":
            return out.image_embeds, tokens
        return out.pooler_output, tokens


def build_backbone(spec: BackboneSpec, pretrained: str | Path | None = None) -> Backbone:
    """Build the architecture, optionally loading pretrained backbone weights from a local path.

    pretrained is an open_clip checkpoint file or a transformers model directory. A path that is
    not there is an error naming it and the spec: we never fall back to downloading.
    """
    path = Path(pretrained) if pretrained is not None else None
    if path is not None and not path.exists():
        raise WeightsNotFoundError(
            f"pretrained weights {str(path)!r} for backbone {spec.backend}:{spec.model} not found"
        )
    if spec.backend == "open_clip":
        backbone = OpenClipBackbone(spec)
        if path is not None:
            backbone.load_pretrained(path)
        return backbone
    return TransformersBackbone(spec, weights_dir=path)
