"""What an ensemble is, as data: frozen specs that round-trip through a bundle's manifest.json.

Nothing here touches torch; a spec can be read, printed and compared without loading a model.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Literal

Backend = Literal["open_clip", "transformers"]
# embed: the backbone's projected image embedding (CLIP's CLS token after the projection);
# pooled: the backbone's pooled output (SigLIP's attention-pool head, CLIP's post-LN CLS).
Feature = Literal["embed", "pooled"]
ResizeMode = Literal["shortest", "squash", "longest"]
Interpolation = Literal["bicubic", "bilinear", "nearest"]

CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
HALF = (0.5, 0.5, 0.5)


class SpecError(ValueError):
    """A spec that cannot describe a working model (unknown backend, bad feature, ...)."""


@dataclass(frozen=True)
class BackboneSpec:
    backend: Backend
    # open_clip: a model config name ("ViT-L-14"); transformers: a vision model class name
    # ("SiglipVisionModel", "CLIPVisionModelWithProjection").
    model: str
    # Architecture overrides: for open_clip, keys of the model config (embed_dim, vision_cfg, ...)
    # merged over the named config; for transformers, the full config dict (model_type included).
    # Empty means "the named architecture as published".
    config: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.backend not in ("open_clip", "transformers"):
            raise SpecError(f"unknown backbone backend {self.backend!r}")


@dataclass(frozen=True)
class PreprocessSpec:
    """Per-expert input pipeline; the same object drives training and inference."""

    size: int
    resize_mode: ResizeMode = "shortest"
    crop: bool = True  # centre crop to size x size after the resize
    interpolation: Interpolation = "bicubic"
    mean: tuple[float, float, float] = CLIP_MEAN
    std: tuple[float, float, float] = CLIP_STD


@dataclass(frozen=True)
class HeadSpec:
    """The paper's head: Linear(d, hidden) -> ReLU -> Dropout -> Linear(hidden, classes).

    hidden = 0 makes it a single Linear(d, classes): a linear probe."""

    in_dim: int
    hidden: int = 256
    dropout: float = 0.3
    classes: int = 2


@dataclass(frozen=True)
class ExpertSpec:
    name: str
    backbone: BackboneSpec
    feature: Feature
    preprocess: PreprocessSpec
    head: HeadSpec
    # The first `shared_blocks` backbone blocks are frozen and identical across experts of the
    # same backbone: inference runs them once per image for all of them (0: nothing shared).
    shared_blocks: int = 0

    def __post_init__(self) -> None:
        if self.feature not in ("embed", "pooled"):
            raise SpecError(f"expert {self.name!r}: unknown feature {self.feature!r}")


@dataclass(frozen=True)
class EnsembleSpec:
    experts: tuple[ExpertSpec, ...]
    threshold: float = 0.5
    version: str = "unversioned"

    def __post_init__(self) -> None:
        if not self.experts:
            raise SpecError("an ensemble needs at least one expert")
        names = [e.name for e in self.experts]
        if len(set(names)) != len(names):
            raise SpecError(f"expert names must be unique, got {names}")
        if not 0.0 <= self.threshold <= 1.0:
            raise SpecError(f"threshold must be in [0, 1], got {self.threshold}")


def expert_to_dict(spec: ExpertSpec) -> dict[str, Any]:
    return asdict(spec)


def expert_from_dict(data: dict[str, Any]) -> ExpertSpec:
    try:
        pre = dict(data["preprocess"])
        pre["mean"] = tuple(pre["mean"])
        pre["std"] = tuple(pre["std"])
        return ExpertSpec(
            name=data["name"],
            backbone=BackboneSpec(**data["backbone"]),
            feature=data["feature"],
            preprocess=PreprocessSpec(**pre),
            head=HeadSpec(**data["head"]),
            shared_blocks=int(data.get("shared_blocks", 0)),
        )
    except (KeyError, TypeError) as exc:
        raise SpecError(f"malformed expert spec {data.get('name', '?')!r}: {exc}") from exc
