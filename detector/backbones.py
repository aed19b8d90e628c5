"""Vision backbones behind one small interface, built from a BackboneSpec.

Two backends: open_clip (CLIP ViTs, and SigLIP through its timm-trunk configs) and transformers
(SiglipVisionModel, CLIP vision towers, Dinov2Model). Weights come only from explicit local paths; nothing here
can reach a model hub: open_clip is given no pretrained tag and transformers runs with
local_files_only.

Every backbone describes its own parts (timm's `group_matcher`, as names rather than regexes):
the stem (patch embedding, position and class embeddings, pre-norm), the ordered transformer
blocks, and the head (post-norm, pooling, projection), with a forward through each. Freezing,
low-rank deltas, view banks and trunk sharing ask for those parts; nothing outside this module
reads another library's parameter names or calls its private methods.
"""
from __future__ import annotations

import copy
import functools
import inspect
import re
from dataclasses import dataclass
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
    "Dinov2Model": ("pooled",),  # pooled: the final layernorm's class token
}


class WeightsNotFoundError(FileNotFoundError):
    """Pretrained backbone weights were named but are not on disk."""


@dataclass(frozen=True)
class BackboneParts:
    """Where a backbone's parts live: qualified names of its own modules and parameters (as in
    named_modules / named_parameters), in the order the forward pass runs them."""

    stem: tuple[str, ...]  # before block 0: patch embedding, position/class tokens, pre-norm
    blocks: tuple[str, ...]  # the transformer blocks, block i at index i
    head: tuple[str, ...]  # after the last block: post-norm, pooling, projection
    prefix_tokens: int  # tokens before the patch tokens in a block's output (class, registers)


@dataclass(frozen=True)
class ParameterGroups:
    """The backbone's parameter names, by part; every parameter is in exactly one."""

    stem: list[str]
    blocks: list[list[str]]
    head: list[str]


# torch.nn.utils.parametrize (low-rank deltas) renames <owner>.W to
# <owner>.parametrizations.W.original and adds <owner>.parametrizations.W.<i>.*: still W's.
_PARAMETRIZED = re.compile(r"(^|\.)parametrizations\.([^.]+)\..*$")


def _under(name: str, prefixes: Sequence[str]) -> bool:
    name = _PARAMETRIZED.sub(r"\1\2", name)
    return any(name == p or name.startswith(p + ".") for p in prefixes)


class Backbone(nn.Module):
    """One forward pass gives the pooled feature and, on request, token features of chosen blocks.

    Token features are (B, N, C) patch tokens (prefix tokens removed), used by the stage-2 dense
    self-distillation; blocks are 0-based indices into the transformer's block list.

    A kind of backbone implements `forward`, `parts` and the three part hooks (`forward_stem`,
    `run_block`, `forward_head`); trunk sharing and split execution are built on them here.
    """

    features: tuple[Feature, ...] = ()
    # The architecture as read from local weights that define it (a transformers model folder);
    # None when the spec alone defines it.
    config_from_weights: dict[str, Any] | None = None

    def feature_dim(self, feature: Feature) -> int:
        raise NotImplementedError

    def forward(
        self, pixels: torch.Tensor, feature: Feature, blocks: Sequence[int] = ()
    ) -> tuple[torch.Tensor, list[torch.Tensor]]:
        raise NotImplementedError

    def parts(self) -> BackboneParts:
        raise NotImplementedError

    def forward_stem(self, pixels: torch.Tensor) -> torch.Tensor:
        """pixels (B, 3, S, S) -> the tokens block 0 takes (B, N, C)."""
        raise NotImplementedError

    def run_block(self, index: int, tokens: torch.Tensor) -> torch.Tensor:
        """Block `index` on (B, N, C) tokens."""
        raise NotImplementedError

    def forward_head(self, tokens: torch.Tensor, feature: Feature) -> torch.Tensor:
        """The last block's output (B, N, C) -> the feature (B, D)."""
        raise NotImplementedError

    # -- built on the parts -------------------------------------------------------------------
    def num_blocks(self) -> int:
        return len(self.parts().blocks)

    def parameter_groups(self) -> ParameterGroups:
        """Parameter names by part; a parameter in no part (a library that grew one) is an error."""
        parts = self.parts()
        groups = ParameterGroups([], [[] for _ in parts.blocks], [])
        for name, _ in self.named_parameters():
            block = next((i for i, b in enumerate(parts.blocks) if _under(name, [b])), None)
            if block is not None:
                groups.blocks[block].append(name)
            elif _under(name, parts.stem):
                groups.stem.append(name)
            elif _under(name, parts.head):
                groups.head.append(name)
            else:
                raise SpecError(f"{type(self).__name__}: parameter {name!r} is in no part "
                                "(stem, blocks, head); the backbone's parts need updating")
        return groups

    def forward_blocks(self, tokens: torch.Tensor, start: int, stop: int,
                       keep: Sequence[int] = ()) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """Blocks start..stop-1; also the patch tokens of the blocks in `keep`."""
        if any(not start <= b < stop for b in keep):
            raise ValueError(f"blocks {sorted(keep)}: only blocks {start}..{stop - 1} run here")
        prefix, kept = self.parts().prefix_tokens, []
        for i in range(start, stop):
            tokens = self.run_block(i, tokens)
            if i in keep:
                kept.append(tokens[:, prefix:])
        return tokens, kept

    # Split execution, for experts that share their first blocks (one trunk pass for all).
    def forward_trunk(self, pixels: torch.Tensor, upto: int) -> torch.Tensor:
        """The stem and blocks 0..upto-1."""
        return self.forward_blocks(self.forward_stem(pixels), 0, upto)[0]

    def forward_tail(
        self, hidden: torch.Tensor, start: int, feature: Feature, blocks: Sequence[int] = ()
    ) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """Blocks `start`.. on the trunk's output: the feature and the patch tokens of `blocks`
        (indices >= start, as in forward)."""
        if any(b < start for b in blocks):
            raise ValueError(f"blocks {sorted(blocks)}: the tail starts at block {start}")
        tokens, kept = self.forward_blocks(hidden, start, self.num_blocks(), blocks)
        return self.forward_head(tokens, feature), kept

    def trunk_names(self, upto: int) -> tuple[str, ...]:
        parts = self.parts()
        return parts.stem + parts.blocks[:upto]

    def trunk_state(self, upto: int) -> dict[str, torch.Tensor]:
        """Parameters and buffers of the stem and the first `upto` blocks, by name."""
        names = self.trunk_names(upto)
        return {k: v for k, v in self.state_dict().items() if _under(k, names)}

    def share_trunk_with(self, other: "Backbone", upto: int) -> None:
        """Use `other`'s modules for the stem and first `upto` blocks (the same weights, held in
        memory once). `other` must be the same architecture."""
        for name in self.trunk_names(upto):
            owner_name, _, leaf = name.rpartition(".")
            owner = self.get_submodule(owner_name)
            setattr(owner, leaf, _member(other, name))


def _member(module: nn.Module, name: str) -> nn.Module | nn.Parameter:
    owner_name, _, leaf = name.rpartition(".")
    return getattr(module.get_submodule(owner_name), leaf)


def deep_merge(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    out = copy.deepcopy(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = deep_merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def _present(module: nn.Module, prefix: str, names: Sequence[str]) -> tuple[str, ...]:
    """`prefix.name` for each name that module has and that is not None."""
    return tuple(f"{prefix}.{n}" for n in names if getattr(module, n, None) is not None)


class OpenClipBackbone(Backbone):
    """open_clip's vision tower alone: the text tower is never built, so no memory goes to it.

    Two tower kinds: open_clip's own VisionTransformer (CLIP) and a timm trunk (SigLIP configs).
    Private calls, each the exact code the tower's own forward runs, so that a split pass cannot
    drift from it (tests/test_backbone_parts.py fails loudly when a library changes them):
    open_clip's `_build_vision_tower` (the only way to build the vision tower without the text
    tower), `VisionTransformer._embeds` and `._pool` (its stem and head), timm's `_pos_embed`.
    """

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

    def forward(self, pixels, feature, blocks=()):
        if not blocks:
            return self.visual(pixels), []
        out = self.visual.forward_intermediates(pixels, indices=list(blocks), output_fmt="NLC")
        return out["image_features"], list(out["image_intermediates"])

    def parts(self) -> BackboneParts:
        v = self.visual
        if self.is_timm:
            t = v.trunk
            return BackboneParts(
                stem=_present(t, "visual.trunk", ("patch_embed", "cls_token", "reg_token",
                                                  "pos_embed", "patch_drop", "norm_pre")),
                blocks=tuple(f"visual.trunk.blocks.{i}" for i in range(len(t.blocks))),
                head=_present(t, "visual.trunk", ("norm", "attn_pool", "fc_norm", "head"))
                + ("visual.head",),
                prefix_tokens=int(t.num_prefix_tokens))
        return BackboneParts(
            stem=_present(v, "visual", ("conv1", "class_embedding", "positional_embedding",
                                        "patch_dropout", "ln_pre")),
            blocks=tuple(f"visual.transformer.resblocks.{i}"
                         for i in range(len(v.transformer.resblocks))),
            head=_present(v, "visual", ("attn_pool", "attn_pool_contrastive", "ln_post", "proj")),
            prefix_tokens=1)  # open_clip ViTs always lead with one class token

    def forward_stem(self, pixels):
        if self.is_timm:
            t = self.visual.trunk
            return t.norm_pre(t.patch_drop(t._pos_embed(t.patch_embed(pixels))))
        return self.visual._embeds(pixels)

    def run_block(self, index, tokens):
        if self.is_timm:
            return self.visual.trunk.blocks[index](tokens)
        transformer = self.visual.transformer
        block = transformer.resblocks[index]
        return block(tokens) if transformer.batch_first else block(tokens.transpose(0, 1)).transpose(0, 1)

    def forward_head(self, tokens, feature):
        v = self.visual
        if self.is_timm:
            return v.head(v.trunk.forward_head(v.trunk.norm(tokens)))
        pooled, _ = v._pool(tokens)
        return pooled @ v.proj if v.proj is not None else pooled

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
            # The model folder is the authority on its architecture: the spec records it.
            self.config_from_weights = self.model.config.to_dict()
        else:
            if not spec.config:
                raise SpecError(f"transformers backbone {spec.model!r} needs a config dict")
            self.model = cls(cls.config_class.from_dict(spec.config))
        self.features = TRANSFORMERS_CLASSES[spec.model]
        # The tower holding embeddings, encoder and norms: the model itself, or (CLIP with a
        # projection) its vision_model. A name, not an attribute: that would register it twice.
        self.tower_name = "model.vision_model" if hasattr(self.model, "vision_model") else "model"

    @property
    def tower(self) -> nn.Module:
        return self.get_submodule(self.tower_name)

    def feature_dim(self, feature: Feature) -> int:
        cfg = self.model.config
        if feature == "embed":
            return int(cfg.projection_dim)
        return int(cfg.hidden_size)

    def forward(self, pixels, feature, blocks=()):
        out = self.model(pixel_values=pixels, output_hidden_states=bool(blocks))
        tokens = []
        if blocks:
            # hidden_states[0] is the embedding output; block i's output is hidden_states[i + 1].
            prefix = self.parts().prefix_tokens
            tokens = [out.hidden_states[i + 1][:, prefix:] for i in blocks]
        if feature == "embed":
            return out.image_embeds, tokens
        return out.pooler_output, tokens

    # The layouts differ in names only: CLIP/SigLIP `encoder.layers` + `post_layernorm`, DINOv2
    # `encoder.layer` + `layernorm` (its layer scales live inside the blocks).
    @property
    def _blocks_name(self) -> str:
        return "encoder.layers" if hasattr(self.tower.encoder, "layers") else "encoder.layer"

    @property
    def _final_norm(self) -> nn.Module:
        t = self.tower
        return t.post_layernorm if hasattr(t, "post_layernorm") else t.layernorm

    def parts(self) -> BackboneParts:
        t, name = self.tower, self.tower_name
        blocks = t.get_submodule(self._blocks_name)
        emb = t.embeddings
        return BackboneParts(
            stem=_present(t, name, ("embeddings", "pre_layrnorm")),
            blocks=tuple(f"{name}.{self._blocks_name}.{i}" for i in range(len(blocks))),
            head=_present(t, name, ("post_layernorm", "layernorm", "head"))
            + _present(self.model, "model", ("visual_projection",)),
            # CLIP and DINOv2 lead with a class token, SigLIP has none
            prefix_tokens=1 if hasattr(emb, "class_embedding") or hasattr(emb, "cls_token") else 0)

    def forward_stem(self, pixels):
        tokens = self.tower.embeddings(pixels)
        pre_norm = getattr(self.tower, "pre_layrnorm", None)
        return pre_norm(tokens) if pre_norm is not None else tokens

    def run_block(self, index, tokens):
        block = self.tower.get_submodule(self._blocks_name)[index]
        # No mask (all patches). CLIP and SigLIP layers require the argument; DINOv2's layer takes
        # it in newer transformers and not at all in older ones (5.17 on a GPU image here).
        out = block(tokens, None) if _takes_mask(block) else block(tokens)
        return out[0] if isinstance(out, tuple) else out

    def forward_head(self, tokens, feature):
        t = self.tower
        if getattr(t, "use_head", False):  # SigLIP: norm every token, attention-pool them
            pooled = t.head(t.post_layernorm(tokens))
        else:  # CLIP, DINOv2: the class token, normed (a per-token norm: the same as norming all)
            pooled = self._final_norm(tokens[:, 0])
        return self.model.visual_projection(pooled) if feature == "embed" else pooled


@functools.cache
def _takes_mask_of(layer_class: type) -> bool:
    return "attention_mask" in inspect.signature(layer_class.forward).parameters


def _takes_mask(block: nn.Module) -> bool:
    return _takes_mask_of(type(block))


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
